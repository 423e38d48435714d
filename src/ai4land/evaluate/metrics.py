"""The categorical map metrics of ``metrics.json`` (interface: :mod:`ai4land.evaluate.interface`).

Confusion-matrix metrics (OA, IoU, kappa, F1) and the year-to-year change scores are
:class:`~ai4land.evaluate.interface.BlockMetric`: their statistic is kept per test block
(confusion matrices: rows the target class, columns the predicted class; change counts
in the categories of :mod:`ai4land.evaluate.change`), so any number of windows and years
is scored in bounded memory and the block bootstrap rescores sums of blocks.
Conservation and calibration accumulate their own state. Definitions:
docs/evaluation.md.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ai4land.evaluate.change import (
    CATEGORIES,
    RATIOS,
    change_summary,
    figure_of_merit,
    iou_of_change,
)
from ai4land.evaluate.interface import (
    BLOCK,
    CHAIN,
    TOTAL,
    YEAR,
    BlockMetric,
    Chunk,
    Metric,
    confusion_by_label,
)

# the scopes of the headline numbers: totals, each year, each block, each chain
EVERYWHERE = frozenset({TOTAL, YEAR, BLOCK, CHAIN})
OVER_TIME = frozenset({TOTAL, YEAR, CHAIN})


def confusion_matrix(target: np.ndarray, prediction: np.ndarray, *, n_classes: int
                     ) -> np.ndarray:
    """(K, K) confusion matrix of class indices (-1: ignored)."""
    return confusion_by_label(target, prediction, labels=np.zeros((), dtype="int64"),
                              n_labels=1, n_classes=n_classes)[0]


class ReliabilityHistogram:
    """Pixel counts, summed confidence and summed correctness per confidence bin."""

    def __init__(self, n_bins: int):
        self.n_bins = n_bins
        self.table = np.zeros((3, n_bins), dtype="float64")

    def update(self, confidence: np.ndarray, correct: np.ndarray) -> ReliabilityHistogram:
        bins = np.clip((confidence * self.n_bins).astype("int64"), 0, self.n_bins - 1)
        for row, weights in enumerate((None, confidence, correct)):
            self.table[row] += np.bincount(bins, weights=weights, minlength=self.n_bins)
        return self


def _safe_divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def _json_number(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 6)


def _mean_over_present(per_class: np.ndarray) -> float:
    """Mean over the classes with a defined value (NaN: class absent from both maps)."""
    return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")


def _iou(cm: np.ndarray) -> np.ndarray:
    tp = np.diag(cm).astype("float64")
    return _safe_divide(tp, cm.sum(0) + cm.sum(1) - tp)


def _f1(cm: np.ndarray) -> np.ndarray:
    tp = np.diag(cm).astype("float64")
    return _safe_divide(2 * tp, cm.sum(0) + cm.sum(1))


class ConfusionMetric(BlockMetric):
    """A metric of the (K, K) confusion matrix; ``compute(cm)``."""

    def statistic(self, chunk: Chunk) -> np.ndarray:
        return chunk.confusion


class OverallAccuracy(ConfusionMetric):
    name = "oa"
    scopes = EVERYWHERE
    table = True
    label = "OA"
    title = "overall accuracy"
    interval = True
    drift = True

    def compute(self, cm: np.ndarray) -> float:
        total = cm.sum()
        return float(np.trace(cm) / total) if total else float("nan")


class MeanIoU(ConfusionMetric):
    """Mean IoU over classes present in the target or the prediction."""

    name = "miou"
    scopes = EVERYWHERE
    table = True
    label = "mIoU"
    title = "mIoU"
    interval = True
    drift = True

    def compute(self, cm: np.ndarray) -> float:
        return _mean_over_present(_iou(cm))


class CohenKappa(ConfusionMetric):
    name = "kappa"
    scopes = EVERYWHERE
    table = True
    label = "kappa"
    interval = True
    drift = True

    def compute(self, cm: np.ndarray) -> float:
        total = cm.sum()
        if not total:
            return float("nan")
        observed = np.trace(cm) / total
        expected = float((cm.sum(0) * cm.sum(1)).sum()) / total**2
        return float((observed - expected) / (1 - expected)) if expected < 1 else 1.0


class MeanF1(ConfusionMetric):
    """Macro F1: mean F1 over classes present in the target or the prediction."""

    name = "f1"
    scopes = EVERYWHERE
    table = True
    label = "F1"

    def compute(self, cm: np.ndarray) -> float:
        return _mean_over_present(_f1(cm))


class PerClassIoU(ConfusionMetric):
    """IoU per class: ``{class code: IoU}`` (null: class absent from both maps)."""

    name = "per_class_iou"
    per_class = "iou"

    def values(self, cm: np.ndarray) -> np.ndarray:
        return _iou(cm)

    def compute(self, cm: np.ndarray) -> dict[str, float | None]:
        return {str(c): _json_number(v)
                for c, v in zip(self.context.classes, self.values(cm), strict=True)}


class PerClassF1(PerClassIoU):
    name = "per_class_f1"
    per_class = "f1"

    def values(self, cm: np.ndarray) -> np.ndarray:
        return _f1(cm)


class Confusion(ConfusionMetric):
    """The confusion matrix itself (rows: target class, columns: predicted class)."""

    name = "confusion_matrix"

    def compute(self, cm: np.ndarray) -> list[list[int]]:
        return cm.tolist()


class PixelCount(ConfusionMetric):
    """Scored pixels."""

    name = "n_pixels"
    scopes = frozenset({TOTAL, BLOCK, CHAIN})
    table = True

    def compute(self, cm: np.ndarray) -> int:
        return int(cm.sum())


class ChangeMetric(BlockMetric):
    """A metric of the year-to-year change counts ((5,) :data:`CATEGORIES` against the
    observed map of the chain's previous year); ``compute(counts)``."""

    def statistic(self, chunk: Chunk) -> np.ndarray | None:
        return chunk.change


class ChangeFigureOfMerit(ChangeMetric):
    name = "fom_change"
    scopes = OVER_TIME
    table = True
    label = "FoM"
    title = "figure of merit (change)"
    interval = True
    drift = True

    def compute(self, counts: np.ndarray) -> float:
        return figure_of_merit(counts)


class ChangeIoU(ChangeMetric):
    name = "iou_change"
    scopes = OVER_TIME
    table = True

    def compute(self, counts: np.ndarray) -> float:
        return iou_of_change(counts)


class ChangeCounts(ChangeMetric):
    """``{"hits", "wrong_hits", "misses", "false_alarms"}`` pixel counts."""

    name = "change_counts"

    def compute(self, counts: np.ndarray) -> dict[str, int]:
        named = dict(zip(CATEGORIES, np.asarray(counts).tolist(), strict=True))
        return {"hits": named["hit"], "wrong_hits": named["wrong_hit"],
                "misses": named["miss"], "false_alarms": named["false_alarm"]}


class PeriodChange(BlockMetric):
    """The change over a chain's whole period (start map -> last chain year):
    :func:`~ai4land.evaluate.change.change_summary`, with intervals of its ratios."""

    name = "period"
    scopes = frozenset({TOTAL, CHAIN})
    INTERVALS = {f"period_{key}": ratio for key, ratio in RATIOS.items()}
    TABLE_INTERVAL = "period_fom"

    def statistic(self, chunk: Chunk) -> np.ndarray | None:
        return chunk.period

    def compute(self, counts: np.ndarray) -> dict:
        return change_summary(counts)

    def interval_scores(self) -> dict:
        return dict(self.INTERVALS)

    @classmethod
    def columns(cls, entry: Mapping) -> dict:
        period = entry.get("period", {})
        interval = entry.get("intervals", {}).get(cls.TABLE_INTERVAL, {})
        return {**{f"period_{key}": period.get(key) for key in RATIOS},
                **{f"{cls.TABLE_INTERVAL}_{key}": interval.get(key) for key in ("low", "high")}}


class ConservationError(Metric):
    """Mean |map − target| group fraction per coarse cell: the mean over years of each
    year's mean over its site-years."""

    name = "conservation_mae"
    scopes = OVER_TIME
    table = True

    def __init__(self, context=None):
        super().__init__(context)
        self.values: dict[int, list[float]] = {}  # year -> per site-year

    def accumulate(self, chunk: Chunk) -> None:
        if chunk.conservation_mae is not None:
            self.values.setdefault(chunk.year, []).append(chunk.conservation_mae)

    def merge(self, other: ConservationError) -> None:
        for year, values in other.values.items():
            self.values.setdefault(year, []).extend(values)

    def result(self) -> float | None:
        if not self.values:
            return None
        return float(np.mean([np.mean(self.values[year]) for year in sorted(self.values)]))


class Calibration(Metric):
    """Reliability of the confidence (max class probability): per bin pixels, mean
    confidence, accuracy; ECE = pixel-weighted mean |accuracy − confidence| over bins.
    Only for chunks with a confidence."""

    name = "calibration"

    def __init__(self, context=None):
        super().__init__(context)
        self.histogram: ReliabilityHistogram | None = None

    def accumulate(self, chunk: Chunk) -> None:
        if chunk.confidence is None:
            return
        if self.histogram is None:
            self.histogram = ReliabilityHistogram(self.context.calibration_bins)
        scored = (chunk.target >= 0) & (chunk.prediction >= 0)
        self.histogram.update(chunk.confidence[scored],
                              chunk.prediction[scored] == chunk.target[scored])

    def merge(self, other: Calibration) -> None:
        if other.histogram is None:
            return
        if self.histogram is None:
            self.histogram = ReliabilityHistogram(other.histogram.n_bins)
        self.histogram.table = self.histogram.table + other.histogram.table

    def result(self) -> dict | None:
        return None if self.histogram is None else self.compute(self.histogram.table)

    def compute(self, table: np.ndarray) -> dict:
        """The calibration of a :class:`ReliabilityHistogram` table."""
        count, confidence, correct = table
        mean_confidence = _safe_divide(confidence, count)
        accuracy = _safe_divide(correct, count)
        total = count.sum()
        gap = np.nan_to_num(np.abs(accuracy - mean_confidence))
        return {
            "bin_edges": np.linspace(0, 1, len(count) + 1).round(6).tolist(),
            "count": count.astype("int64").tolist(),
            "confidence": [_json_number(v) for v in mean_confidence],
            "accuracy": [_json_number(v) for v in accuracy],
            "ece": float((count * gap).sum() / total) if total else float("nan"),
        }
