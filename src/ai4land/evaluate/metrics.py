"""Categorical map metrics as small classes with a ``compute`` (weatherbench2 style).

Metrics are computed from a confusion matrix accumulated chunk by chunk, so any number
of windows and years can be scored in bounded memory. Rows are the target class, columns
the predicted class; pixels with index -1 (ocean, no data) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ai4land.evaluate.change import FALSE_ALARM, HIT, MISS, WRONG_HIT, change_counts


def confusion_by_label(target: np.ndarray, prediction: np.ndarray, *, labels: np.ndarray,
                       n_labels: int, n_classes: int) -> np.ndarray:
    """(n_labels, K, K) confusion matrices, one per label (a test block, say).

    Pixels whose target, prediction or label is -1 are ignored.
    """
    labels = np.broadcast_to(labels, np.shape(target))
    valid = (target >= 0) & (prediction >= 0) & (labels >= 0)
    index = (labels[valid].astype("int64") * n_classes + target[valid]) * n_classes + prediction[valid]
    return np.bincount(index, minlength=n_labels * n_classes**2).reshape(
        n_labels, n_classes, n_classes
    )


class ConfusionMatrix:
    def __init__(self, n_classes: int):
        self.n_classes = n_classes
        self.matrix = np.zeros((n_classes, n_classes), dtype="int64")

    def update(self, target: np.ndarray, prediction: np.ndarray) -> ConfusionMatrix:
        self.matrix += confusion_by_label(target, prediction, labels=np.zeros((), dtype="int64"),
                                          n_labels=1, n_classes=self.n_classes)[0]
        return self

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self.matrix += other.matrix
        return self


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


@dataclass(frozen=True)
class OverallAccuracy:
    name: str = "oa"

    def compute(self, cm: np.ndarray) -> float:
        total = cm.sum()
        return float(np.trace(cm) / total) if total else float("nan")


@dataclass(frozen=True)
class PerClassIoU:
    name: str = "per_class_iou"

    def compute(self, cm: np.ndarray) -> np.ndarray:
        tp = np.diag(cm).astype("float64")
        return _safe_divide(tp, cm.sum(0) + cm.sum(1) - tp)


def _mean_over_present(per_class: np.ndarray) -> float:
    """Mean over the classes with a defined value (NaN: class absent from both maps)."""
    return float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan")


@dataclass(frozen=True)
class MeanIoU:
    """Mean IoU over classes present in the target or the prediction."""

    name: str = "miou"

    def compute(self, cm: np.ndarray) -> float:
        return _mean_over_present(PerClassIoU().compute(cm))


@dataclass(frozen=True)
class PerClassF1:
    name: str = "per_class_f1"

    def compute(self, cm: np.ndarray) -> np.ndarray:
        tp = np.diag(cm).astype("float64")
        return _safe_divide(2 * tp, cm.sum(0) + cm.sum(1))


@dataclass(frozen=True)
class MeanF1:
    """Macro F1: mean F1 over classes present in the target or the prediction."""

    name: str = "f1"

    def compute(self, cm: np.ndarray) -> float:
        return _mean_over_present(PerClassF1().compute(cm))


@dataclass(frozen=True)
class CohenKappa:
    name: str = "kappa"

    def compute(self, cm: np.ndarray) -> float:
        total = cm.sum()
        if not total:
            return float("nan")
        observed = np.trace(cm) / total
        expected = float((cm.sum(0) * cm.sum(1)).sum()) / total**2
        return float((observed - expected) / (1 - expected)) if expected < 1 else 1.0


@dataclass(frozen=True)
class ChangeScores:
    """Figure of merit, producer's/user's accuracy and IoU on change from the previous map.

    The categories and ratios are those of :mod:`ai4land.evaluate.change`:
    FoM = hits / (hits + misses + wrong hits + false alarms) (Pontius et al. 2008), a hit
    being a pixel that changed and was predicted to change to the right class;
    PA = hits / (hits + misses + wrong hits), UA = hits / (hits + wrong hits + false alarms).
    IoU on change is the IoU of the two change masks (where change happens, whatever
    the new class): (hits + wrong hits) / (observed change ∪ predicted change).
    Counts from several chunks add up; ``from_counts`` scores their sum.
    """

    name: str = "change"

    def counts(self, previous: np.ndarray, target: np.ndarray, prediction: np.ndarray) -> dict:
        counts = change_counts(previous, target, prediction)
        return {"hits": int(counts[HIT]), "wrong_hits": int(counts[WRONG_HIT]),
                "misses": int(counts[MISS]), "false_alarms": int(counts[FALSE_ALARM])}

    @staticmethod
    def from_counts(counts: dict) -> dict:
        hits, wrong, misses, alarms = (counts[k] for k in ("hits", "wrong_hits", "misses",
                                                           "false_alarms"))
        union = hits + wrong + misses + alarms
        observed, predicted = hits + wrong + misses, hits + wrong + alarms
        return {
            "fom": hits / union if union else float("nan"),
            "iou": (hits + wrong) / union if union else float("nan"),
            "producers_accuracy": hits / observed if observed else float("nan"),
            "users_accuracy": hits / predicted if predicted else float("nan"),
        }

    def compute(self, previous: np.ndarray, target: np.ndarray, prediction: np.ndarray) -> dict:
        counts = self.counts(previous, target, prediction)
        return {**counts, **self.from_counts(counts)}


@dataclass(frozen=True)
class Calibration:
    """Reliability of the confidence (max class probability) from a ``ReliabilityHistogram``.

    Per bin: pixels, mean confidence, accuracy; ECE = pixel-weighted mean |accuracy −
    confidence| over bins.
    """

    name: str = "calibration"

    def compute(self, table: np.ndarray) -> dict:
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


def summarise(cm: np.ndarray, classes: list[int]) -> dict:
    """The standard metric set of one confusion matrix, JSON-ready."""
    per_class = PerClassIoU().compute(cm)
    f1 = PerClassF1().compute(cm)
    return {
        "oa": OverallAccuracy().compute(cm),
        "miou": MeanIoU().compute(cm),
        "kappa": CohenKappa().compute(cm),
        "f1": MeanF1().compute(cm),
        "per_class_iou": {str(c): _json_number(v) for c, v in zip(classes, per_class, strict=True)},
        "per_class_f1": {str(c): _json_number(v) for c, v in zip(classes, f1, strict=True)},
        "confusion_matrix": cm.tolist(),
        "n_pixels": int(cm.sum()),
    }


def _json_number(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 6)
