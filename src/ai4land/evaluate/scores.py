"""Everything reported for one model: the registered metrics per test year.

``ModelScores.add`` takes one site-year of a model (one call per test block and year, or
several blocks at once) as a :class:`~ai4land.evaluate.interface.Chunk`; every metric of
:mod:`ai4land.evaluate.registry` accumulates it in the year's instances. ``report``
turns them into the model's ``metrics.json`` entry (docs/design.md "Evaluation
output"): each metric's total over the years, ``by_year``, ``by_block`` and, with a
:class:`~ai4land.evaluate.bootstrap.BlockBootstrap`, the 95 % block-bootstrap
``intervals`` of the block metrics that have one. Block metrics keep their statistic
per test block, so the bootstrap resamples blocks.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ai4land.evaluate import registry
from ai4land.evaluate.bootstrap import BlockBootstrap
from ai4land.evaluate.interface import (
    BLOCK,
    CHAIN,
    TOTAL,
    YEAR,
    BlockMetric,
    Chunk,
    Context,
    Metric,
)
from ai4land.evaluate.stability import StabilityCounts


class ModelScores:
    """Accumulates one model's metrics over test years and test blocks."""

    def __init__(self, *, classes: list[int], blocks: list[dict], calibration_bins: int,
                 group_names: tuple[str, ...] = (),
                 metrics: list[type[Metric]] | None = None):
        self.classes = classes
        self.blocks = blocks  # [{"id", "row", "col"}], label i = blocks[i]
        self.calibration_bins = calibration_bins
        self.group_names = tuple(group_names)
        self.context = Context(classes=tuple(classes), n_blocks=len(blocks),
                               calibration_bins=calibration_bins, group_names=self.group_names)
        self.metrics = list(registry.metrics() if metrics is None else metrics)
        self.years: dict[int, list[Metric]] = {}  # year -> an instance of every metric

    def _instances(self) -> list[Metric]:
        return [metric(self.context) for metric in self.metrics]

    def add(self, *, year: int, target: np.ndarray, prediction: np.ndarray,
            labels: np.ndarray, previous: np.ndarray | None = None,
            confidence: np.ndarray | None = None, conservation_mae: float | None = None,
            start: np.ndarray | None = None, stability: StabilityCounts | None = None,
            block: int | None = None) -> None:
        """Pixels of one year (calls for one year add up): class indices (-1 = ignored)
        and the test block of each pixel (-1 = not scored); the optional parts of a
        :class:`~ai4land.evaluate.interface.Chunk` (``stability``: the counts of test
        block ``block``)."""
        chunk = Chunk(year=year, target=target, prediction=prediction, labels=labels,
                      n_blocks=len(self.blocks), n_classes=len(self.classes),
                      previous=previous, confidence=confidence,
                      conservation_mae=conservation_mae, start=start, block=block,
                      stability=stability)
        for metric in self.years.setdefault(year, self._instances()):
            metric.accumulate(chunk)

    @classmethod
    def pooled(cls, parts: list[ModelScores]) -> ModelScores:
        """The sums of several ``ModelScores`` of the same blocks (e.g. both chains): a
        year scored in several parts counts once per part."""
        first = parts[0]
        out = cls(classes=first.classes, blocks=first.blocks,
                  calibration_bins=first.calibration_bins, group_names=first.group_names,
                  metrics=first.metrics)
        for part in parts:
            for year, metrics in part.years.items():
                held = out.years.setdefault(year, out._instances())
                for mine, theirs in zip(held, metrics, strict=True):
                    mine.merge(theirs)
        return out

    def merged(self) -> list[Metric]:
        """Every metric over all years (merged in year order)."""
        total = self._instances()
        for year in sorted(self.years):
            for mine, theirs in zip(total, self.years[year], strict=True):
                mine.merge(theirs)
        return total

    @staticmethod
    def results(metrics: list[Metric], scope: str) -> dict:
        """The values of ``metrics`` reported in ``scope`` (metrics without one left out)."""
        out = {}
        for metric in metrics:
            if scope in metric.scopes:
                value = metric.result()
                if value is not None:
                    out[metric.name] = value
        return out

    def totals(self) -> dict:
        """Each metric over all years and blocks (``ai4land score``'s keys)."""
        return self.results(self.merged(), TOTAL)

    def interval_inputs(self, total: list[Metric] | None = None
                        ) -> dict[str, tuple[object, Callable, bool]]:
        """Interval name -> (per-block statistic, its score, lower is better) of the
        block metrics with intervals that have a statistic."""
        out = {}
        for metric in total or self.merged():
            if not isinstance(metric, BlockMetric):
                continue
            stats = metric.statistics()
            if stats is None:
                continue
            for name, score in metric.interval_scores().items():
                out[name] = (stats, score, metric.lower_is_better)
        return out

    def report(self, *, bootstrap: BlockBootstrap | None = None, scope: str = TOTAL) -> dict:
        """The model's ``metrics.json`` entry (``scope`` :data:`CHAIN`: a chain's entry,
        without ``by_block`` and intervals)."""
        total = self.merged()
        result = self.results(total, scope)
        result["by_year"] = {str(y): self.results(self.years[y], YEAR) for y in sorted(self.years)}
        if scope == CHAIN:
            return result
        block_metrics = [m for m in total if BLOCK in m.scopes and isinstance(m, BlockMetric)
                         and m.blocks is not None]
        values = {m.name: m.block_results() for m in block_metrics}
        result["by_block"] = {
            str(block["id"]): {"row": block["row"], "col": block["col"],
                               **{name: v[i] for name, v in values.items()}}
            for i, block in enumerate(self.blocks)}
        if bootstrap is not None:
            result["intervals"] = {
                name: bootstrap.interval(stats, score).to_json()
                for name, (stats, score, _) in self.interval_inputs(total).items()}
        return result
