"""Block-bootstrap confidence intervals of metrics and of differences between models.

Pixels of one test block are not independent, so the block is the unit that is
resampled: each replicate draws ``B`` of the ``B`` test blocks with replacement
(seeded), sums the drawn blocks' statistics (confusion matrices, change counts,
stability counts: anything additive, with the block on the first axis) and scores the
sum with the metric. The interval is the percentile interval of the replicates
(default 95 %: the 2.5th and 97.5th percentiles). A paired difference (model A minus
model B) scores both models on the same drawn blocks in every replicate; it is
*significant* when its interval excludes 0.

Replicates whose metric is undefined (NaN, e.g. a figure of merit over blocks without
change) are left out of the percentiles and counted in ``undefined``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

Stats = np.ndarray | Mapping[str, np.ndarray]


@dataclass(frozen=True)
class Interval:
    """A metric on all test blocks and its bootstrap percentile interval."""

    estimate: float
    low: float
    high: float
    level: float
    replicates: int
    undefined: int

    def to_json(self) -> dict:
        return {key: _json_number(value) if isinstance(value, float) else value
                for key, value in asdict(self).items()}


@dataclass(frozen=True)
class Difference(Interval):
    """Model A minus model B; ``significant`` when [low, high] excludes 0."""

    significant: bool = False


class BlockBootstrap:
    """Seeded resampling of ``n_blocks`` test blocks, shared by every metric and model.

    ``weights`` (n_replicates, n_blocks) holds how often each block is drawn in each
    replicate; every call of :meth:`interval` and :meth:`difference` uses the same
    draws, so intervals of several models are paired by construction.
    """

    def __init__(self, n_blocks: int, *, n_replicates: int = 1000, seed: int = 0,
                 level: float = 0.95):
        if n_blocks < 1:
            raise ValueError("block bootstrap needs at least one test block")
        if n_replicates < 1:
            raise ValueError("block bootstrap needs at least one replicate")
        if not 0 < level < 1:
            raise ValueError(f"confidence level must be between 0 and 1, got {level}")
        self.n_blocks = n_blocks
        self.level = level
        rng = np.random.default_rng(seed)
        draws = rng.integers(0, n_blocks, size=(n_replicates, n_blocks))
        offsets = np.arange(n_replicates)[:, None] * n_blocks
        self.weights = np.bincount((draws + offsets).ravel(),
                                   minlength=n_replicates * n_blocks).reshape(n_replicates,
                                                                              n_blocks)

    @property
    def n_replicates(self) -> int:
        return len(self.weights)

    def _sums(self, stats: Stats) -> list:
        """Per replicate: the drawn blocks' statistics summed (same structure as ``stats``)."""
        if isinstance(stats, Mapping):
            summed = {key: self._summed(value) for key, value in stats.items()}
            return [{key: value[r] for key, value in summed.items()}
                    for r in range(self.n_replicates)]
        return list(self._summed(stats))

    def _summed(self, array: np.ndarray) -> np.ndarray:
        array = np.asarray(array)
        if array.shape[:1] != (self.n_blocks,):
            raise ValueError(f"block statistics need the {self.n_blocks} test blocks on their "
                             f"first axis, got shape {array.shape}")
        return np.tensordot(self.weights, array, axes=(1, 0))

    def replicates(self, stats: Stats, metric: Callable) -> np.ndarray:
        """The metric of every replicate, float64 (n_replicates,)."""
        return np.array([metric(s) for s in self._sums(stats)], dtype="float64")

    def interval(self, stats: Stats, metric: Callable) -> Interval:
        """``metric`` of the summed ``stats`` (blocks on the first axis) and its interval.

        ``stats`` is an array (B, ...) or a mapping of such arrays; ``metric`` takes the
        sum over blocks (the same structure without the first axis) to a number.
        """
        estimate = float(metric(_total(stats)))
        return Interval(estimate, *self._percentiles(self.replicates(stats, metric)))

    def difference(self, stats_a: Stats, stats_b: Stats, metric: Callable) -> Difference:
        """``metric`` of model A minus model B on the same resampled blocks."""
        estimate = float(metric(_total(stats_a))) - float(metric(_total(stats_b)))
        diffs = self.replicates(stats_a, metric) - self.replicates(stats_b, metric)
        low, high, *rest = self._percentiles(diffs)
        significant = bool(low > 0 or high < 0)  # False when NaN (undefined)
        return Difference(estimate, low, high, *rest, significant=significant)

    def _percentiles(self, values: np.ndarray) -> tuple[float, float, float, int, int]:
        defined = values[np.isfinite(values)]
        tail = (1 - self.level) / 2 * 100
        if defined.size:
            low, high = np.percentile(defined, [tail, 100 - tail])
        else:
            low = high = float("nan")
        return float(low), float(high), self.level, len(values), int(len(values) - defined.size)


def _total(stats: Stats):
    if isinstance(stats, Mapping):
        return {key: np.asarray(value).sum(axis=0) for key, value in stats.items()}
    return np.asarray(stats).sum(axis=0)


def _json_number(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 6)


def compare_to_baselines(bootstrap: BlockBootstrap, stats: Mapping[str, Stats], metric: Callable,
                         *, model: str, baselines: Sequence[str],
                         higher_is_better: bool = True) -> dict:
    """Intervals of every model, and ``model`` minus the best baseline (paired).

    ``stats`` maps model names to their per-block statistics. The best baseline is the
    one with the best estimate (ties: the first in ``baselines``; undefined estimates
    never win). Returns ``{"intervals": {name: Interval}, "best_baseline": name or
    None, "difference": Difference or None}``; the difference is None when no
    baseline has a defined estimate.
    """
    intervals = {name: bootstrap.interval(stats[name], metric) for name in (model, *baselines)}
    sign = 1.0 if higher_is_better else -1.0
    defined = [b for b in baselines if np.isfinite(intervals[b].estimate)]
    best = max(defined, key=lambda b: sign * intervals[b].estimate) if defined else None
    difference = (bootstrap.difference(stats[model], stats[best], metric)
                  if best is not None else None)
    return {"intervals": intervals, "best_baseline": best, "difference": difference}
