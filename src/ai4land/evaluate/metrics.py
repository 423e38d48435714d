"""Categorical map metrics as small classes with a ``compute`` (weatherbench2 style).

Metrics are computed from a confusion matrix accumulated chunk by chunk, so any number
of windows and years can be scored in bounded memory. Rows are the target class, columns
the predicted class; pixels with index -1 (ocean, no data) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class ConfusionMatrix:
    def __init__(self, n_classes: int):
        self.n_classes = n_classes
        self.matrix = np.zeros((n_classes, n_classes), dtype="int64")

    def update(self, target: np.ndarray, prediction: np.ndarray) -> ConfusionMatrix:
        valid = (target >= 0) & (prediction >= 0)
        index = target[valid].astype("int64") * self.n_classes + prediction[valid]
        self.matrix += np.bincount(index, minlength=self.n_classes**2).reshape(
            self.n_classes, self.n_classes
        )
        return self

    def __iadd__(self, other: ConfusionMatrix) -> ConfusionMatrix:
        self.matrix += other.matrix
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


@dataclass(frozen=True)
class MeanIoU:
    """Mean IoU over classes present in the target or the prediction."""

    name: str = "miou"

    def compute(self, cm: np.ndarray) -> float:
        iou = PerClassIoU().compute(cm)
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


@dataclass(frozen=True)
class PerClassF1:
    name: str = "per_class_f1"

    def compute(self, cm: np.ndarray) -> np.ndarray:
        tp = np.diag(cm).astype("float64")
        return _safe_divide(2 * tp, cm.sum(0) + cm.sum(1))


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
    """Figure of merit and IoU on change relative to the previous year's map.

    FoM = hits / (hits + misses + wrong hits + false alarms) (Pontius et al. 2008):
    a hit is a pixel that changed and was predicted to change to the right class.
    """

    name: str = "change"

    def compute(self, previous: np.ndarray, target: np.ndarray, prediction: np.ndarray) -> dict:
        valid = (previous >= 0) & (target >= 0) & (prediction >= 0)
        observed = valid & (target != previous)
        predicted = valid & (prediction != previous)
        hits = int((observed & predicted & (prediction == target)).sum())
        wrong_hits = int((observed & predicted & (prediction != target)).sum())
        misses = int((observed & ~predicted).sum())
        false_alarms = int((~observed & predicted).sum())
        denominator = hits + wrong_hits + misses + false_alarms
        union = int((observed | predicted).sum())
        return {
            "hits": hits,
            "wrong_hits": wrong_hits,
            "misses": misses,
            "false_alarms": false_alarms,
            "fom": hits / denominator if denominator else float("nan"),
            "iou": hits / union if union else float("nan"),
        }


def summarise(cm: np.ndarray, classes: list[int]) -> dict:
    """The standard metric set of one confusion matrix, JSON-ready."""
    per_class = PerClassIoU().compute(cm)
    f1 = PerClassF1().compute(cm)
    return {
        "oa": OverallAccuracy().compute(cm),
        "miou": MeanIoU().compute(cm),
        "kappa": CohenKappa().compute(cm),
        "per_class_iou": {str(c): _json_number(v) for c, v in zip(classes, per_class, strict=True)},
        "per_class_f1": {str(c): _json_number(v) for c, v in zip(classes, f1, strict=True)},
        "confusion_matrix": cm.tolist(),
        "n_pixels": int(cm.sum()),
    }


def _json_number(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 6)
