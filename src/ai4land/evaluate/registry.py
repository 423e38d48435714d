"""The metrics every evaluation reports, in the order of a model's ``metrics.json`` entry.

:class:`~ai4land.evaluate.scores.ModelScores` makes one instance of each per test year
and scope; ``metrics.json``, the CSV tables, the by-year figure, the drift and the CLI
summary read this list. Adding a metric is one class (:mod:`ai4land.evaluate.interface`)
plus one entry here (or :func:`register` for a metric defined elsewhere).
"""

from __future__ import annotations

from ai4land.evaluate.interface import Metric
from ai4land.evaluate.metrics import (
    Calibration,
    ChangeCounts,
    ChangeFigureOfMerit,
    ChangeIoU,
    CohenKappa,
    Confusion,
    ConservationError,
    MeanF1,
    MeanIoU,
    OverallAccuracy,
    PerClassF1,
    PerClassIoU,
    PeriodChange,
    PixelCount,
)
from ai4land.evaluate.stability import Stability

METRICS: list[type[Metric]] = [
    OverallAccuracy,
    MeanIoU,
    CohenKappa,
    MeanF1,
    PerClassIoU,
    PerClassF1,
    Confusion,
    PixelCount,
    ChangeFigureOfMerit,
    ChangeIoU,
    ChangeCounts,
    ConservationError,
    PeriodChange,
    Stability,
    Calibration,
]


def register(metric: type[Metric]) -> type[Metric]:
    """Add ``metric`` to the report (after the others); usable as a class decorator."""
    if any(m.name == metric.name for m in METRICS):
        raise ValueError(f"a metric named {metric.name!r} is registered already")
    METRICS.append(metric)
    return metric


def metrics(scope: str | None = None) -> list[type[Metric]]:
    """The registered metrics, those reported in ``scope`` when given."""
    return [m for m in METRICS if scope is None or scope in m.scopes]
