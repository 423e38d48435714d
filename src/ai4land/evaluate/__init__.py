"""Evaluation: metrics, baselines, and the metrics.json report.

``run_evaluate`` and ``score_files`` are imported on first use, so the light modules
(:mod:`ai4land.evaluate.models`, read by the workflow) do not load torch.
"""

__all__ = ["run_evaluate", "score_files"]


def __getattr__(name: str):
    if name in __all__:
        from ai4land.evaluate import run

        return getattr(run, name)
    raise AttributeError(f"module 'ai4land.evaluate' has no attribute {name!r}")
