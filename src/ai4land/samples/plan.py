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

Change-balanced sampling (``change_share`` > 0) draws that share of an epoch's samples
in proportion to the number of changed pixels between the two years of a sample
(prior and target) inside the tile-sized block holding the window's centre
(``ChangeCounts``, counted on allowed pixels only), so years and places with more
change are seen more often; the rest stay uniform.
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
        land = window_sums(
            summed_area_table(np.asarray(land_mask, dtype=bool)), tile_size, tile_size
        )
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


@dataclass(frozen=True)
class ChangeCounts:
    """Changed pixels between consecutive years, per square block of the grid.

    ``counts[i]`` is (ceil(H / block_size), ceil(W / block_size)) for the year pair
    (``first_years[i]``, ``first_years[i] + 1``).
    """

    block_size: int
    first_years: tuple[int, ...]
    counts: np.ndarray


def change_counts(
    read_classes: Callable[[int], np.ndarray],
    years: Sequence[int],
    *,
    block_size: int,
    allowed: np.ndarray,
) -> ChangeCounts:
    """Count class changes between each pair of consecutive ``years`` per block.

    ``read_classes(year)`` gives the (H, W) class indices of a year (-1 = ignored);
    only ``allowed`` pixels valid in both years count, so held-out blocks never
    influence the sampling.
    """
    allowed = np.asarray(allowed, dtype=bool)
    height, width = allowed.shape
    rows, cols = -(-height // block_size), -(-width // block_size)
    firsts = [y for y in sorted(set(years)) if y + 1 in set(years)]
    counts = np.zeros((len(firsts), rows, cols), dtype="int64")
    padded = np.zeros((rows * block_size, cols * block_size), dtype=bool)
    previous_year, previous = None, None
    for i, year in enumerate(firsts):
        before = previous if previous_year == year else read_classes(year)
        after = read_classes(year + 1)
        padded[:height, :width] = allowed & (before >= 0) & (after >= 0) & (before != after)
        counts[i] = padded.reshape(rows, block_size, cols, block_size).sum(axis=(1, 3))
        previous_year, previous = year + 1, after
    return ChangeCounts(block_size=int(block_size), first_years=tuple(firsts), counts=counts)


class SamplePlanner:
    """Deterministic plans of ``SampleSpec`` over the allowed pixels of a split role.

    ``allowed``: boolean (H, W) mask (``Split.role_mask('train')``); ``years``: the
    years that may be predicted; ``prior_years``: the years whose maps may serve as a
    prior (defaults to ``years``, so a prior never comes from a held-out year);
    ``scenario_for_year``: mapping or callable giving the coarse scenario of a year.
    ``with_prior=False`` plans samples without a prior (single-year data): every year
    is a target, the direction is +1 and no adjacent year is needed.
    ``change`` and ``change_share``: change-balanced sampling (see the module notes).
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
        with_prior: bool = True,
        change: ChangeCounts | None = None,
        change_share: float = 0.0,
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
        if with_prior:
            self.years_by_direction = {
                d: years_with_prior(years, prior_years, d) for d in directions
            }
        else:
            self.years_by_direction = {FORWARD: sorted(set(years))}
            directions = (FORWARD,)
        self.directions = [d for d in directions if self.years_by_direction[d]]
        if not self.directions:
            raise InputDataError(
                f"no {role} year has an observed prior year (years {sorted(set(years))}, "
                f"prior years {sorted(set(prior_years))}); the prior needs two adjacent "
                "years (set train.prior: false for single-year data)"
            )
        all_years = sorted({y for d in self.directions for y in self.years_by_direction[d]})
        if scenario_for_year is None:
            self.scenarios = {y: "historical" for y in all_years}
        elif callable(scenario_for_year):
            self.scenarios = {y: scenario_for_year(y) for y in all_years}
        else:
            self.scenarios = {y: scenario_for_year[y] for y in all_years}
        self.change_share = float(change_share) if change is not None else 0.0
        if self.change_share > 0:
            self._init_change(change)

    def _init_change(self, change: ChangeCounts) -> None:
        """Group corners by the block of their window's centre; weight (pair, block)."""
        n_rows, n_cols = change.counts.shape[1:]
        centre = self.corners + self.tile_size // 2
        block = (np.minimum(centre[:, 0] // change.block_size, n_rows - 1) * n_cols
                 + np.minimum(centre[:, 1] // change.block_size, n_cols - 1))
        self._corner_order = np.argsort(block, kind="stable")
        per_block = np.bincount(block, minlength=n_rows * n_cols)
        self._block_start = np.concatenate([[0], np.cumsum(per_block)[:-1]])
        self._corners_in_block = per_block
        # A pair (y, y + 1) serves forward (target y + 1) and backward (target y).
        self._pair_directions = []
        weights = []
        for first, counts in zip(change.first_years, change.counts, strict=True):
            options = [d for d in self.directions
                       if (first + 1 if d == FORWARD else first) in self.years_by_direction[d]]
            self._pair_directions.append((first, options))
            weights.append(counts.ravel() * (per_block > 0) * bool(options))
        weights = np.asarray(weights, dtype="float64").ravel()
        total = weights.sum()
        self._change_p = weights / total if total > 0 else None
        self._n_blocks = n_rows * n_cols

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
        if self.change_share > 0 and self._change_p is not None:
            self._balance(plan, rng)
        return plan

    def _balance(self, plan: list[SampleSpec], rng: np.random.Generator) -> None:
        """Redraw ``change_share`` of ``plan`` in proportion to the change (in place)."""
        chosen = np.flatnonzero(rng.random(len(plan)) < self.change_share)
        picks = rng.choice(len(self._change_p), size=len(chosen), p=self._change_p)
        offsets = rng.random(len(chosen))
        direction_draw = rng.random(len(chosen))
        for i, pick, offset, draw in zip(chosen, picks, offsets, direction_draw, strict=True):
            pair, block = divmod(int(pick), self._n_blocks)
            first, options = self._pair_directions[pair]
            d = options[min(int(draw * len(options)), len(options) - 1)]
            year = first + 1 if d == FORWARD else first
            k = self._block_start[block] + min(int(offset * self._corners_in_block[block]),
                                               self._corners_in_block[block] - 1)
            row, col = (int(v) for v in self.corners[self._corner_order[k]])
            plan[i] = SampleSpec(
                window=Window(row=row, col=col, height=self.tile_size, width=self.tile_size),
                year=year, direction=d, scenario=self.scenarios[year],
                epoch=plan[i].epoch, index=plan[i].index,
            )


def shard(plan: Sequence[SampleSpec], rank: int, world_size: int) -> list[SampleSpec]:
    """This rank's share of a plan: every ``world_size``-th spec starting at ``rank``."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    return list(plan[rank::world_size])
