"""The metric interface: a metric is a small class that accumulates chunks, merges and
gives its result.

A :class:`Chunk` is what one model scored on one site-year (one test block, one year):
class indices of the observed and predicted maps (-1 = not scored), the test block of
each pixel, and what else was measured there (the previous year's observed map, the
confidence, the conservation error, the chain's start map, the stability counts).
Statistics shared by several metrics (the confusion matrix per block, the change counts)
are computed once per chunk.

A metric (:class:`Metric`) keeps its own state: ``accumulate(chunk)`` adds a chunk,
``merge(other)`` adds another instance's state (another chain, another year) and
``result()`` gives the JSON-ready value of ``metrics.json`` (``None``: nothing to report,
the key is left out). Class attributes say where the value is reported: ``scopes``
(:data:`TOTAL`, :data:`YEAR`, :data:`BLOCK`, :data:`CHAIN`), ``table`` (a column of the
CSV tables), ``label`` (the CLI summary), ``title`` (the by-year figure), ``drift``
(``unet`` minus ``unet_teacher_forced`` per year), ``per_class`` (a column of
``per_class_iou.csv``).

A :class:`BlockMetric` keeps an additive statistic with the test block on its first
axis and scores a sum of blocks with ``compute(statistic)``; that gives its ``by_block``
values and its block-bootstrap intervals (``interval_scores``).

:mod:`ai4land.evaluate.registry` lists the metrics; :class:`~ai4land.evaluate.scores.
ModelScores`, the tables, the figures and the CLI read that list.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ai4land.evaluate.change import change_counts

if TYPE_CHECKING:
    from ai4land.evaluate.stability import StabilityCounts

TOTAL, YEAR, BLOCK, CHAIN = "total", "year", "block", "chain"
SCOPES = (TOTAL, YEAR, BLOCK, CHAIN)


@dataclass(frozen=True)
class Context:
    """What metrics need to know beyond the chunks: the predicted class codes, the number
    of test blocks, the calibration bins and the class-group names (stability)."""

    classes: tuple[int, ...] = ()
    n_blocks: int = 1
    calibration_bins: int = 10
    group_names: tuple[str, ...] = ()


def confusion_by_label(target: np.ndarray, prediction: np.ndarray, *, labels: np.ndarray,
                       n_labels: int, n_classes: int) -> np.ndarray:
    """(n_labels, K, K) confusion matrices (rows: target, columns: prediction), one per
    label (a test block, say). Pixels whose target, prediction or label is -1 are ignored.
    """
    labels = np.broadcast_to(labels, np.shape(target))
    valid = (target >= 0) & (prediction >= 0) & (labels >= 0)
    index = ((labels[valid].astype("int64") * n_classes + target[valid]) * n_classes
             + prediction[valid])
    return np.bincount(index, minlength=n_labels * n_classes**2).reshape(
        n_labels, n_classes, n_classes
    )


@dataclass
class Chunk:
    """One model's pixels of one site-year: class indices (-1 = not scored).

    ``labels`` holds each pixel's test block (-1 = not scored; the target is not scored
    there). Optional: ``previous`` the observed map of the year before (year-to-year
    change), ``confidence`` the probability of the predicted class (calibration),
    ``conservation_mae`` the site-year's conservation error, ``start`` the chain's start
    map (whole-period change, given in the chain's last year), and ``stability`` the
    site-year's :class:`~ai4land.evaluate.stability.StabilityCounts` of test block
    ``block``.
    """

    year: int
    target: np.ndarray
    prediction: np.ndarray
    labels: np.ndarray
    n_blocks: int
    n_classes: int
    previous: np.ndarray | None = None
    confidence: np.ndarray | None = None
    conservation_mae: float | None = None
    start: np.ndarray | None = None
    block: int | None = None
    stability: StabilityCounts | None = None

    def __post_init__(self):
        self.target = np.where(self.labels >= 0, self.target, -1)

    @cached_property
    def confusion(self) -> np.ndarray:
        """(B, K, K) confusion matrices per test block."""
        return confusion_by_label(self.target, self.prediction, labels=self.labels,
                                  n_labels=self.n_blocks, n_classes=self.n_classes)

    @cached_property
    def change(self) -> np.ndarray | None:
        """(B, 5) change counts against ``previous`` per test block (None: no previous)."""
        if self.previous is None:
            return None
        return change_counts(self.previous, self.target, self.prediction, labels=self.labels,
                             n_labels=self.n_blocks)

    @cached_property
    def period(self) -> np.ndarray | None:
        """(B, 5) change counts against the chain's ``start`` map (None: no start)."""
        if self.start is None:
            return None
        return change_counts(self.start, self.target, self.prediction, labels=self.labels,
                             n_labels=self.n_blocks)


class Metric:
    """One key of a model's ``metrics.json`` entry, accumulated over chunks."""

    name: ClassVar[str]
    scopes: ClassVar[frozenset[str]] = frozenset({TOTAL})
    table: ClassVar[bool] = False  # a number: a column of the CSV tables of its scopes
    label: ClassVar[str | None] = None  # column title of the CLI summary
    title: ClassVar[str | None] = None  # panel title of the by-year figure
    drift: ClassVar[bool] = False  # reported as unet minus unet_teacher_forced per year
    per_class: ClassVar[str | None] = None  # {class code: value}: column of per_class_iou.csv

    def __init__(self, context: Context | None = None):
        self.context = context or Context()

    def accumulate(self, chunk: Chunk) -> None:
        raise NotImplementedError

    def merge(self, other: Metric) -> None:
        raise NotImplementedError

    def result(self) -> Any:
        """The JSON-ready value (NaN allowed: written as null); None: nothing to report."""
        raise NotImplementedError

    @classmethod
    def columns(cls, entry: Mapping) -> dict[str, Any]:
        """This metric's columns of ``metrics_by_model.csv`` from a model's entry."""
        return {cls.name: entry.get(cls.name)} if cls.table else {}


class BlockMetric(Metric):
    """A metric of an additive statistic kept per test block (block on the first axis).

    Subclasses give ``statistic(chunk)`` (the chunk's (B, ...) array, None: nothing to
    add) and ``compute(statistic)`` (the metric of a statistic summed over blocks). With
    ``interval`` its ``compute`` gets a block-bootstrap interval under its own name;
    ``lower_is_better`` orders the baselines in the comparison.
    """

    interval: ClassVar[bool] = False
    lower_is_better: ClassVar[bool] = False

    def __init__(self, context: Context | None = None):
        super().__init__(context)
        self.blocks = None

    def statistic(self, chunk: Chunk):
        raise NotImplementedError

    def compute(self, statistic):
        raise NotImplementedError

    def accumulate(self, chunk: Chunk) -> None:
        value = self.statistic(chunk)
        if value is not None:
            self.blocks = value if self.blocks is None else self.blocks + value

    def merge(self, other: BlockMetric) -> None:
        if other.blocks is not None:
            self.blocks = other.blocks if self.blocks is None else self.blocks + other.blocks

    def result(self) -> Any:
        return None if self.blocks is None else self.compute(self.blocks.sum(axis=0))

    def block_results(self) -> list:
        """The value of every test block alone."""
        return [self.compute(block) for block in self.blocks]

    def statistics(self):
        """The per-block statistic the bootstrap resamples (None: nothing accumulated)."""
        return self.blocks

    def interval_scores(self) -> dict[str, Callable]:
        """Interval name -> the function of a summed statistic it is the interval of."""
        return {self.name: self.compute} if self.interval else {}
