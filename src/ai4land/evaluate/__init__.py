"""Evaluation: metrics, baselines, and the metrics.json report."""

from ai4land.evaluate.run import run_evaluate, score_files

__all__ = ["run_evaluate", "score_files"]
