"""Sample plans: *where* and *when* to read, decided before anything is loaded.

A plan is a list of ``SampleSpec`` (window, year, direction, scenario). It is a pure
function of (seed, stream, epoch): the same on every rank, every worker and after a
resume, so the data order of a run never depends on how it was launched. Each DDP rank
reads its own shard ``plan[rank::world_size]``; with a per-rank batch of
``batch_size // world_size`` the global batch of step ``s`` is then always
``plan[s * batch_size:(s + 1) * batch_size]``, whatever the number of ranks.

Windows are drawn uniformly among the top-left corners whose *whole* window lies inside
the allowed pixels (a summed-area table over the mask finds them), so a training window
never touches a validation, test or buffer block.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ai4land.errors import InputDataError
from ai4land.grid import Window

FORWARD = 1
BACKWARD = -1


@dataclass(frozen=True)
class SampleSpec:
    """One training sample: a window, the year to predict, the chain direction.

    ``direction`` +1 means forward (the prior is the map of ``year - 1``), -1 backward
    (the prior is ``year + 1``). ``epoch`` and ``index`` (position in the epoch's plan)
    seed the per-sample randomness of loading (prior masking).
    """

    window: Window
    year: int
    direction: int
    scenario: str
    epoch: int = 0
    index: int = 0

    @property
    def prior_year(self) -> int:
        return self.year - self.direction


def stream_id(name: str) -> int:
    """A stable integer for a named random stream ('train', 'val', ...)."""
    return zlib.crc32(name.encode())


def summed_area_table(mask: np.ndarray) -> np.ndarray:
    """Integral image with a zero first row and column: (H + 1, W + 1), int32 when it fits."""
    dtype = "int32" if mask.size < 2**31 else "int64"
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=dtype)
    np.cumsum(np.cumsum(mask, axis=0, dtype=dtype), axis=1, out=table[1:, 1:])
    return table


def window_sums(table: np.ndarray, height: int, width: int) -> np.ndarray:
    """Sum of the mask over every ``height`` x ``width`` window, indexed by top-left corner."""
    return (
        table[height:, width:] - table[:-height, width:] - table[height:, :-width]
        + table[:-height, :-width]
    )


def valid_corners(
    allowed: np.ndarray,
    tile_size: int,
    *,
    land_mask: np.ndarray | None = None,
    min_land_fraction: float = 0.0,
) -> np.ndarray:
    """(N, 2) row, col of the top-left corners whose whole tile lies in ``allowed``.

    With ``land_mask``, tiles also need more than ``min_land_fraction`` of land (at
    least one land pixel when it is 0), so all-ocean tiles are never drawn.
    """
    allowed = np.asarray(allowed, dtype=bool)
    height, width = allowed.shape
    if tile_size > height or tile_size > width:
        return np.zeros((0, 2), dtype="int64")
    area = tile_size * tile_size
    ok = window_sums(summed_area_table(allowed), tile_size, tile_size) == area
    if land_mask is not None:
        land = window_sums(summed_area_table(np.asarray(land_mask, dtype=bool)), tile_size, tile_size)
        ok &= land > max(min_land_fraction * area, 0)
    return np.argwhere(ok).astype("int64")


def largest_tile(
    allowed: np.ndarray,
    *,
    multiple: int,
    at_most: int,
    land_mask: np.ndarray | None = None,
    min_land_fraction: float = 0.0,
) -> int:
    """The largest tile size <= ``at_most``, a multiple of ``multiple``, that fits; 0 if none."""
    size = (at_most // multiple) * multiple
    while size > 0:
        if len(valid_corners(allowed, size, land_mask=land_mask,
                             min_land_fraction=min_land_fraction)):
            return size
        size -= multiple
    return 0


def years_with_prior(years: Iterable[int], prior_years: Iterable[int], direction: int) -> list[int]:
    """The years whose prior (``year - direction``) is among ``prior_years``."""
    prior = set(prior_years)
    return [y for y in sorted(set(years)) if y - direction in prior]


class SamplePlanner:
    """Deterministic plans of ``SampleSpec`` over the allowed pixels of a split role.

    ``allowed``: boolean (H, W) mask (``Split.role_mask('train')``); ``years``: the
    years that may be predicted; ``prior_years``: the years whose maps may serve as a
    prior (defaults to ``years``, so a prior never comes from a held-out year);
    ``scenario_for_year``: mapping or callable giving the coarse scenario of a year.
    """

    def __init__(
        self,
        allowed: np.ndarray,
        *,
        tile_size: int,
        years: Sequence[int],
        seed: int,
        prior_years: Sequence[int] | None = None,
        scenario_for_year: Mapping[int, str] | Callable[[int], str] | None = None,
        directions: Sequence[int] = (FORWARD, BACKWARD),
        land_mask: np.ndarray | None = None,
        min_land_fraction: float = 0.0,
        stream: str = "train",
        role: str = "train",
    ):
        self.tile_size = int(tile_size)
        self.seed = int(seed)
        self.stream = stream
        self.corners = valid_corners(allowed, self.tile_size, land_mask=land_mask,
                                     min_land_fraction=min_land_fraction)
        if len(self.corners) == 0:
            shape = np.asarray(allowed).shape
            raise InputDataError(
                f"no {self.tile_size}x{self.tile_size} window fits inside the {role} blocks "
                f"(mask {shape[0]}x{shape[1]}, {int(np.asarray(allowed).sum())} allowed pixels"
                + (f", min land fraction {min_land_fraction}" if land_mask is not None else "")
                + "); lower train.tile_size or raise split.block_size"
            )
        prior_years = list(years) if prior_years is None else list(prior_years)
        self.years_by_direction = {
            d: years_with_prior(years, prior_years, d) for d in directions
        }
        self.directions = [d for d in directions if self.years_by_direction[d]]
        if not self.directions:
            raise InputDataError(
                f"no {role} year has an observed prior year (years {sorted(set(years))}, "
                f"prior years {sorted(set(prior_years))}); the prior needs two adjacent years"
            )
        all_years = sorted({y for d in self.directions for y in self.years_by_direction[d]})
        if scenario_for_year is None:
            self.scenarios = {y: "historical" for y in all_years}
        elif callable(scenario_for_year):
            self.scenarios = {y: scenario_for_year(y) for y in all_years}
        else:
            self.scenarios = {y: scenario_for_year[y] for y in all_years}

    def rng(self, epoch: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream_id(self.stream), int(epoch)])

    def epoch(self, epoch: int, n_samples: int) -> list[SampleSpec]:
        """The plan of ``epoch``: ``n_samples`` specs, a pure function of (seed, stream, epoch)."""
        rng = self.rng(epoch)
        corner_index = rng.integers(len(self.corners), size=n_samples)
        direction = np.asarray(self.directions)[rng.integers(len(self.directions), size=n_samples)]
        pick = rng.random(n_samples)
        plan = []
        for i in range(n_samples):
            d = int(direction[i])
            candidates = self.years_by_direction[d]
            year = candidates[min(int(pick[i] * len(candidates)), len(candidates) - 1)]
            row, col = (int(v) for v in self.corners[corner_index[i]])
            plan.append(SampleSpec(
                window=Window(row=row, col=col, height=self.tile_size, width=self.tile_size),
                year=year, direction=d, scenario=self.scenarios[year],
                epoch=int(epoch), index=i,
            ))
        return plan


def shard(plan: Sequence[SampleSpec], rank: int, world_size: int) -> list[SampleSpec]:
    """This rank's share of a plan: every ``world_size``-th spec starting at ``rank``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    return list(plan[rank::world_size])
