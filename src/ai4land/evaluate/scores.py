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
        self.change: dict[int, dict[str, int]] = {}
        self.conservation: dict[int, float] = {}
        self.reliability: ReliabilityHistogram | None = None

    def add(self, *, year: int, target: np.ndarray, prediction: np.ndarray,
            previous: np.ndarray, labels: np.ndarray, conservation_mae: float,
            confidence: np.ndarray | None = None) -> None:
        """One year: class indices (-1 = ignored) and the block label (-1 = not scored)."""
        target = np.where(labels >= 0, target, -1)
        self.confusion[year] = confusion_by_label(target, prediction, labels=labels,
                                                  n_labels=len(self.blocks),
                                                  n_classes=len(self.classes))
        self.change[year] = ChangeScores().counts(previous, target, prediction)
        self.conservation[year] = conservation_mae
        if confidence is not None:
            if self.reliability is None:
                self.reliability = ReliabilityHistogram(self.calibration_bins)
            scored = (target >= 0) & (prediction >= 0)
            self.reliability.update(confidence[scored], prediction[scored] == target[scored])

    def year_metrics(self, year: int) -> dict[str, float]:
        change = ChangeScores.from_counts(self.change[year])
        return {
            **headline(self.confusion[year].sum(0)),
            "fom_change": change["fom"],
            "iou_change": change["iou"],
            "conservation_mae": self.conservation[year],
        }

    def report(self) -> dict:
        years = sorted(self.confusion)
        total = sum(self.confusion[y] for y in years)
        counts = {key: sum(self.change[y][key] for y in years) for key in self.change[years[0]]}
        change = ChangeScores.from_counts(counts)
        result = summarise(total.sum(0), self.classes)
        result.update(
            fom_change=change["fom"],
            iou_change=change["iou"],
            change_counts=counts,
            conservation_mae=float(np.mean([self.conservation[y] for y in years])),
            by_year={str(y): self.year_metrics(y) for y in years},
            by_block={
                str(block["id"]): {"row": block["row"], "col": block["col"], **headline(cm),
                                   "n_pixels": int(cm.sum())}
                for block, cm in zip(self.blocks, total, strict=True)
            },
        )
        if self.reliability is not None:
            result["calibration"] = Calibration().compute(self.reliability.table)
        return result
