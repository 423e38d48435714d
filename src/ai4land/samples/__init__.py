"""Samples: which windows to read (plans) and what a window holds (inputs, target)."""
