"""Everything reported for one model: metrics accumulated per (year, test block).

``ModelScores.add`` takes one year's maps as class indices (-1 = not scored), one call
per test block or several blocks at once; ``add_period`` the whole-period change,
``add_stability`` a chain year's stability counts of a block. ``report`` turns the sums
into the model's ``metrics.json`` entry (docs/design.md "Evaluation output"): totals,
``by_year``, ``by_block``, ``period``, ``stability`` and, when confidences were given,
``calibration``; with a :class:`~ai4land.evaluate.bootstrap.BlockBootstrap`, the 95 %
block-bootstrap ``intervals`` of the headline metrics. Every statistic is kept per test
block, so the bootstrap resamples blocks.
"""

from __future__ import annotations

import numpy as np

from ai4land.evaluate.bootstrap import BlockBootstrap
from ai4land.evaluate.change import (
    CATEGORIES,
    FigureOfMerit,
    ProducersAccuracyOfChange,
    UsersAccuracyOfChange,
    change_counts,
    change_summary,
)
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
from ai4land.evaluate.stability import StabilityCounts, StabilityScores, summarise_stability

HEADLINE = ("oa", "miou", "kappa", "f1")
# metrics with block-bootstrap intervals: name -> (statistic, metric of its block sum)
INTERVALS = {
    "oa": ("confusion", OverallAccuracy().compute),
    "miou": ("confusion", MeanIoU().compute),
    "kappa": ("confusion", CohenKappa().compute),
    "fom_change": ("change", FigureOfMerit().compute),
    "period_fom": ("period", FigureOfMerit().compute),
    "period_producers_accuracy": ("period", ProducersAccuracyOfChange().compute),
    "period_users_accuracy": ("period", UsersAccuracyOfChange().compute),
    "swap_ratio": ("stability", lambda c: StabilityScores().compute(c)["swap_ratio"]),
    "isolated_share": ("stability", lambda c: StabilityScores().compute(c)["isolated_share"]),
}


def headline(cm: np.ndarray) -> dict[str, float]:
    """OA, mIoU, kappa and macro F1 of one confusion matrix."""
    metrics = (OverallAccuracy(), MeanIoU(), CohenKappa(), MeanF1())
    return {metric.name: metric.compute(cm) for metric in metrics}


def _summarise_stability(blocks: list[StabilityCounts], group_names: tuple[str, ...]) -> dict:
    """JSON-ready stability of the blocks' summed counts (groups named by index when
    ``group_names`` is empty)."""
    total = sum(blocks[1:], blocks[0])
    names = group_names or tuple(str(g) for g in range(len(total.map_groups)))
    return summarise_stability(total, names)


def _change_dict(counts: np.ndarray) -> dict[str, int]:
    """The ``ChangeScores`` counts of a (5,) :data:`CATEGORIES` count array."""
    named = dict(zip(CATEGORIES, counts.tolist(), strict=True))
    return {"hits": named["hit"], "wrong_hits": named["wrong_hit"],
            "misses": named["miss"], "false_alarms": named["false_alarm"]}


class ModelScores:
    """Accumulates one model's scores over test years and test blocks."""

    def __init__(self, *, classes: list[int], blocks: list[dict], calibration_bins: int):
        self.classes = classes
        self.blocks = blocks  # [{"id", "row", "col"}], label i = blocks[i]
        self.calibration_bins = calibration_bins
        self.confusion: dict[int, np.ndarray] = {}  # year -> (B, K, K)
        self.change: dict[int, np.ndarray] = {}  # year -> (B, 5) counts vs the previous map
        self.conservation: dict[int, list[float]] = {}
        self.stability: dict[int, list[StabilityCounts | None]] = {}  # year -> per block
        self.period: np.ndarray | None = None  # (B, 5) counts start map -> last year
        self.reliability: ReliabilityHistogram | None = None

    def add(self, *, year: int, target: np.ndarray, prediction: np.ndarray,
            previous: np.ndarray, labels: np.ndarray, conservation_mae: float,
            confidence: np.ndarray | None = None) -> None:
        """Pixels of one year (calls for one year add up): class indices (-1 = ignored),
        ``previous`` the observed map of the year before, and the block label (-1 = not
        scored)."""
        target = np.where(labels >= 0, target, -1)
        n_blocks = len(self.blocks)
        self.confusion[year] = self.confusion.get(year, 0) + confusion_by_label(
            target, prediction, labels=labels, n_labels=n_blocks, n_classes=len(self.classes))
        self.change[year] = self.change.get(year, 0) + change_counts(
            previous, target, prediction, labels=labels, n_labels=n_blocks)
        self.conservation.setdefault(year, []).append(conservation_mae)
        if confidence is not None:
            if self.reliability is None:
                self.reliability = ReliabilityHistogram(self.calibration_bins)
            scored = (target >= 0) & (prediction >= 0)
            self.reliability.update(confidence[scored], prediction[scored] == target[scored])

    def add_period(self, *, start: np.ndarray, target: np.ndarray, prediction: np.ndarray,
                   labels: np.ndarray) -> None:
        """The change over a chain's whole period: class indices of its start map (the
        observed map it starts from) and of the observed and predicted last-year maps."""
        counts = change_counts(start, np.where(labels >= 0, target, -1), prediction,
                               labels=labels, n_labels=len(self.blocks))
        self.period = counts if self.period is None else self.period + counts

    def add_stability(self, *, year: int, label: int, counts: StabilityCounts) -> None:
        """A chain year's stability counts of test block ``label``."""
        held = self.stability.setdefault(year, [None] * len(self.blocks))
        held[label] = counts if held[label] is None else held[label] + counts

    @classmethod
    def pooled(cls, parts: list[ModelScores]) -> ModelScores:
        """The sums of several ``ModelScores`` of the same blocks (e.g. both chains): a
        year scored in several parts counts once per part."""
        first = parts[0]
        out = cls(classes=first.classes, blocks=first.blocks,
                  calibration_bins=first.calibration_bins)
        for part in parts:
            for year, cm in part.confusion.items():
                out.confusion[year] = out.confusion.get(year, 0) + cm
                out.change[year] = out.change.get(year, 0) + part.change[year]
                out.conservation.setdefault(year, []).extend(part.conservation[year])
            for year, counts in part.stability.items():
                for label, c in enumerate(counts):
                    if c is not None:
                        out.add_stability(year=year, label=label, counts=c)
            if part.period is not None:
                out.period = part.period if out.period is None else out.period + part.period
            if part.reliability is not None:
                if out.reliability is None:
                    out.reliability = ReliabilityHistogram(first.calibration_bins)
                out.reliability.table += part.reliability.table
        return out

    def _stability_blocks(self, years: list[int]) -> list[StabilityCounts] | None:
        """Per block, the stability counts summed over ``years`` (None: none added)."""
        per_year = [self.stability[y] for y in years if y in self.stability]
        if not per_year:
            return None
        blocks = []
        for label in range(len(self.blocks)):
            counts = [c[label] for c in per_year if c[label] is not None]
            blocks.append(sum(counts[1:], counts[0]) if counts else None)
        return blocks if all(b is not None for b in blocks) else None

    def block_statistics(self) -> dict:
        """The additive per-block statistics (block on the first axis) that
        :data:`INTERVALS` score: ``confusion``, ``change``, ``period``, ``stability``."""
        years = sorted(self.confusion)
        stats = {"confusion": sum(self.confusion[y] for y in years),
                 "change": sum(self.change[y] for y in years)}
        if self.period is not None:
            stats["period"] = self.period
        blocks = self._stability_blocks(years)
        if blocks is not None:
            stats["stability"] = StabilityCounts.stack(blocks)
        return stats

    def year_metrics(self, year: int, group_names: tuple[str, ...] = ()) -> dict:
        change = ChangeScores.from_counts(_change_dict(self.change[year].sum(0)))
        out = {
            **headline(self.confusion[year].sum(0)),
            "fom_change": change["fom"],
            "iou_change": change["iou"],
            "conservation_mae": float(np.mean(self.conservation[year])),
        }
        blocks = self._stability_blocks([year])
        if blocks is not None:
            out["stability"] = _summarise_stability(blocks, group_names)
        return out

    def report(self, *, bootstrap: BlockBootstrap | None = None,
               group_names: tuple[str, ...] = ()) -> dict:
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
            by_year={str(y): self.year_metrics(y, group_names) for y in years},
            by_block={
                str(block["id"]): {"row": block["row"], "col": block["col"], **headline(cm),
                                   "n_pixels": int(cm.sum())}
                for block, cm in zip(self.blocks, total, strict=True)
            },
        )
        if self.period is not None:
            result["period"] = change_summary(self.period.sum(0))
        blocks = self._stability_blocks(years)
        if blocks is not None:
            result["stability"] = _summarise_stability(blocks, group_names)
        if self.reliability is not None:
            result["calibration"] = Calibration().compute(self.reliability.table)
        if bootstrap is not None:
            stats = self.block_statistics()
            result["intervals"] = {
                name: bootstrap.interval(stats[key], metric).to_json()
                for name, (key, metric) in INTERVALS.items() if key in stats}
        return result
