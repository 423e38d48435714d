"""Everything reported for one model: metrics accumulated per (year, test block).

``ModelScores.add`` takes one year's maps as class indices (-1 = not scored);
``report`` turns the sums into the DESIGN ``metrics.json`` entry of the model: totals,
``by_year``, ``by_block`` and, when confidences were given, ``calibration``.
"""

from __future__ import annotations

import numpy as np

from ai4land.evaluate.metrics import (
    Calibration,
    ChangeScores,
    CohenKappa,
    MeanF1,
    MeanIoU,
    OverallAccuracy,
    ReliabilityHistogram,
    confusion_by_label,
    summarise,
)

HEADLINE = ("oa", "miou", "kappa", "f1")
CHANGE_KEYS = ("hits", "wrong_hits", "misses", "false_alarms")


def headline(cm: np.ndarray) -> dict[str, float]:
    """OA, mIoU, kappa and macro F1 of one confusion matrix."""
    metrics = (OverallAccuracy(), MeanIoU(), CohenKappa(), MeanF1())
    return {metric.name: metric.compute(cm) for metric in metrics}


class ModelScores:
    """Accumulates one model's scores over test years and test blocks."""

    def __init__(self, *, classes: list[int], blocks: list[dict], calibration_bins: int):
        self.classes = classes
        self.blocks = blocks  # [{"id", "row", "col"}], label i = blocks[i]
        self.calibration_bins = calibration_bins
        self.confusion: dict[int, np.ndarray] = {}  # year -> (B, K, K)
        self.change: dict[int, np.ndarray] = {}  # year -> (B, 4) CHANGE_KEYS counts
        self.conservation: dict[int, list[float]] = {}
        self.period: np.ndarray | None = None  # (B, 4) start -> end change counts
        self.reliability: ReliabilityHistogram | None = None

    def add(self, *, year: int, target: np.ndarray, prediction: np.ndarray,
            previous: np.ndarray, labels: np.ndarray, conservation_mae: float,
            confidence: np.ndarray | None = None) -> None:
        """Pixels of one year (several calls for one year add up, e.g. one per test
        block): class indices (-1 = ignored) and the block label (-1 = not scored)."""
        target = np.where(labels >= 0, target, -1)
        n_blocks, k = len(self.blocks), len(self.classes)
        self.confusion[year] = self.confusion.get(year, 0) + confusion_by_label(
            target, prediction, labels=labels, n_labels=n_blocks, n_classes=k)
        self.change[year] = self.change.get(year, 0) + change_by_label(
            previous, target, prediction, labels=labels, n_labels=n_blocks)
        self.conservation.setdefault(year, []).append(conservation_mae)
        if confidence is not None:
            if self.reliability is None:
                self.reliability = ReliabilityHistogram(self.calibration_bins)
            scored = (target >= 0) & (prediction >= 0)
            self.reliability.update(confidence[scored], prediction[scored] == target[scored])

    def add_period(self, *, start: np.ndarray, target: np.ndarray, prediction: np.ndarray,
                   labels: np.ndarray) -> None:
        """The change over the whole chain: class indices of the start map (the observed
        map the chain starts from) and of the observed and predicted end maps."""
        counts = change_by_label(start, np.where(labels >= 0, target, -1), prediction,
                                 labels=labels, n_labels=len(self.blocks))
        self.period = counts if self.period is None else self.period + counts

    @classmethod
    def pooled(cls, parts: list[ModelScores]) -> ModelScores:
        """The sums of several ``ModelScores`` of the same blocks (e.g. both chains):
        a year scored in several parts counts once per part."""
        first = parts[0]
        out = cls(classes=first.classes, blocks=first.blocks,
                  calibration_bins=first.calibration_bins)
        for part in parts:
            for year, cm in part.confusion.items():
                out.confusion[year] = out.confusion.get(year, 0) + cm
                out.change[year] = out.change.get(year, 0) + part.change[year]
                out.conservation.setdefault(year, []).extend(part.conservation[year])
            if part.period is not None:
                out.period = part.period if out.period is None else out.period + part.period
            if part.reliability is not None:
                if out.reliability is None:
                    out.reliability = ReliabilityHistogram(first.calibration_bins)
                out.reliability.table += part.reliability.table
        return out

    def year_metrics(self, year: int) -> dict[str, float]:
        change = ChangeScores.from_counts(_change_dict(self.change[year].sum(0)))
        return {
            **headline(self.confusion[year].sum(0)),
            "fom_change": change["fom"],
            "iou_change": change["iou"],
            "conservation_mae": float(np.mean(self.conservation[year])),
        }

    def report(self) -> dict:
        years = sorted(self.confusion)
        total = sum(self.confusion[y] for y in years)
        counts = _change_dict(sum(self.change[y] for y in years).sum(0))
        change = ChangeScores.from_counts(counts)
        result = summarise(total.sum(0), self.classes)
        result.update(
            fom_change=change["fom"],
            iou_change=change["iou"],
            change_counts=counts,
            conservation_mae=float(np.mean([np.mean(self.conservation[y]) for y in years])),
            by_year={str(y): self.year_metrics(y) for y in years},
            by_block={
                str(block["id"]): {"row": block["row"], "col": block["col"], **headline(cm),
                                   "n_pixels": int(cm.sum())}
                for block, cm in zip(self.blocks, total, strict=True)
            },
        )
        if self.period is not None:
            counts = _change_dict(self.period.sum(0))
            result["period"] = {**period_scores(counts), "counts": counts}
        if self.reliability is not None:
            result["calibration"] = Calibration().compute(self.reliability.table)
        return result


def change_by_label(previous: np.ndarray, target: np.ndarray, prediction: np.ndarray, *,
                    labels: np.ndarray, n_labels: int) -> np.ndarray:
    """(n_labels, 4) change counts (:data:`CHANGE_KEYS`) per label (-1: not counted)."""
    out = np.zeros((n_labels, len(CHANGE_KEYS)), dtype="int64")
    labels = np.broadcast_to(labels, np.shape(target))
    for label in np.unique(labels[labels >= 0]):
        where = labels == label
        counts = ChangeScores().counts(previous[where], target[where], prediction[where])
        out[label] = [counts[key] for key in CHANGE_KEYS]
    return out


def _change_dict(row: np.ndarray) -> dict[str, int]:
    return {key: int(v) for key, v in zip(CHANGE_KEYS, row, strict=True)}


def period_scores(counts: dict) -> dict[str, float]:
    """Figure of merit and producer's / user's accuracy of change from change counts."""
    return {"fom": ChangeScores.from_counts(counts)["fom"]}
