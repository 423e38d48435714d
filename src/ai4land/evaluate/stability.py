"""Stability of a map chain from one year to the next, against what the coarse data asks.

For one chain year, ``previous`` is the chain's map of the year before (the last
observed map for the first predicted year) and ``current`` the year's map. Over the
valid pixels (``valid``: land in both maps), per coarse cell ``c`` with ``n_k(c)`` pixels
of class ``k``:

- ``changed``: pixels whose class differs from ``previous``; ``changed_share`` =
  changed / valid. For the first predicted year this is the *continuity* break: the
  share of the last observed map that the chain re-draws.
- ``minimal``: the fewest changed pixels that produce the cells' new class counts,
  ``Σ_c ½ Σ_k |n_k,t(c) − n_k,t−1(c)|``; ``swap_ratio`` = (changed − minimal) / changed,
  the share of changed pixels that are swaps beyond each cell's net change (0 when every
  change is needed, near 1 when pixels trade places).
- ``isolated``: changed pixels none of whose 8 neighbours changed (neighbours outside
  the window or not valid count as unchanged); ``isolated_share`` = isolated / changed.
- class areas: the map's pixels per class group and the target's,
  ``Σ_c target_g(c) · n(c)``; ``area_share`` / ``target_share`` are their shares of the
  total and ``area_mae`` the mean over groups of |area_share − target_share|.
- vanished classes: (cell, class) pairs present in ``previous`` and absent from
  ``current`` although the target still holds at least ``min_pixels`` pixels of the
  class's group in the cell (``target_g(c) · n(c) ≥ min_pixels``), i.e. without coarse
  evidence; ``vanish_rate`` = vanished / present (pairs present in ``previous``). Pairs
  whose group's target fell below ``min_pixels`` are counted in ``vanished_forced``.

Only constrained cells count (cells whose target fractions sum to more than 0: cells
without coarse data are left out of every count). ``target`` is the (G, cells) group
fractions the year's map was held to (the harmonisation target), for the cells under the
window. All counts add up over windows (blocks) and years, so ``StabilityCounts`` of test
blocks are summed or block-bootstrapped; a cell cut by a window edge is scored as the
part inside the window.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields

import numpy as np

from ai4land.evaluate.interface import CHAIN, TOTAL, YEAR, BlockMetric, Chunk
from ai4land.predict.harmonize import Groups

SCALARS = ("valid", "changed", "minimal", "isolated", "present", "vanished", "vanished_forced")


@dataclass
class StabilityCounts:
    """Additive stability statistics of one chain year over some pixels."""

    valid: int
    changed: int
    minimal: int
    isolated: int
    present: int
    vanished: int
    vanished_forced: int
    map_groups: np.ndarray  # (G,) pixels per group in ``current``
    target_groups: np.ndarray  # (G,) Σ_cells target fraction × valid pixels

    def __add__(self, other: StabilityCounts) -> StabilityCounts:
        return StabilityCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name)
                                  for f in fields(self)})

    def as_dict(self) -> dict[str, np.ndarray | int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def stack(counts: list[StabilityCounts]) -> dict[str, np.ndarray]:
        """Per-block counts as arrays with the block on the first axis (for the bootstrap)."""
        return {f.name: np.stack([np.asarray(getattr(c, f.name)) for c in counts])
                for f in fields(StabilityCounts)}


def _cell_index(shape: tuple[int, int], factor: int, origin: tuple[int, int]
                ) -> tuple[np.ndarray, tuple[int, int]]:
    """Each pixel's cell among the cells under a window at ``origin`` (row, col)."""
    (h, w), (r0, c0) = shape, origin
    rows = (r0 + np.arange(h)) // factor - r0 // factor
    cols = (c0 + np.arange(w)) // factor - c0 // factor
    n_rows = (r0 + h - 1) // factor - r0 // factor + 1 if h else 0
    n_cols = (c0 + w - 1) // factor - c0 // factor + 1 if w else 0
    return rows[:, None] * n_cols + cols[None, :], (n_rows, n_cols)


def _changed_neighbours(changed: np.ndarray) -> np.ndarray:
    padded = np.pad(changed, 1).astype("uint8")
    h, w = changed.shape
    total = np.zeros((h, w), dtype="uint8")
    for dr in (0, 1, 2):
        for dc in (0, 1, 2):
            if dr != 1 or dc != 1:
                total += padded[dr:dr + h, dc:dc + w]
    return total


def stability_counts(previous: np.ndarray, current: np.ndarray, *, valid: np.ndarray,
                     groups: Groups, factor: int, target: np.ndarray,
                     origin: tuple[int, int] = (0, 0), min_pixels: float = 1.0
                     ) -> StabilityCounts:
    """Stability statistics of ``current`` against ``previous`` (uint8 class codes).

    ``valid`` (bool, same shape) marks the pixels scored (land in both maps);
    ``target`` (G, cell rows, cell cols) holds the group fractions of the coarse cells
    under the window, whose top-left pixel sits at ``origin`` (row, col) of the fine
    grid (cells of ``factor`` × ``factor`` pixels from the grid's corner, as
    :meth:`ai4land.grid.Window.coarse_slices` selects them).
    """
    previous, current = np.asarray(previous), np.asarray(current)
    valid = np.asarray(valid, dtype=bool)
    if previous.dtype != np.uint8 or current.dtype != np.uint8:
        raise ValueError(f"stability maps must be uint8 class codes, got {previous.dtype} "
                         f"and {current.dtype}")
    if not previous.shape == current.shape == valid.shape:
        raise ValueError(f"stability maps differ in shape: previous {previous.shape}, current "
                         f"{current.shape}, valid {valid.shape}")
    cell, (n_rows, n_cols) = _cell_index(valid.shape, factor, origin)
    target = np.asarray(target, dtype="float64")
    if target.shape != (len(groups), n_rows, n_cols):
        raise ValueError(f"stability target has shape {target.shape}, the window's cells need "
                         f"{(len(groups), n_rows, n_cols)}")
    n_cells = n_rows * n_cols
    target = target.reshape(len(groups), n_cells)
    constrained = target.sum(axis=0) > 0
    scored = valid & constrained[cell]

    # classes as compact indices over the codes present in either map
    codes = np.flatnonzero(np.bincount(previous[scored], minlength=256)
                           + np.bincount(current[scored], minlength=256))
    compact = np.zeros(256, dtype="int64")
    compact[codes] = np.arange(len(codes))
    k = len(codes)
    pixel_cell = cell[scored]
    before = np.bincount(pixel_cell * k + compact[previous[scored]],
                         minlength=n_cells * k).reshape(n_cells, k)
    after = np.bincount(pixel_cell * k + compact[current[scored]],
                        minlength=n_cells * k).reshape(n_cells, k)

    changed = scored & (previous != current)
    n_changed = int(changed.sum())
    isolated = int((changed & (_changed_neighbours(changed) == 0)).sum())
    minimal = int(np.abs(after - before).sum()) // 2  # each cell's L1 distance is even

    n = before.sum(axis=1)  # valid pixels per cell
    group_of_class = groups.code_table()[codes]  # (k,), -1 outside every group
    member = group_of_class[None, :] >= 0
    target_pixels = np.where(member, target[np.maximum(group_of_class, 0)].T * n[:, None], np.inf)
    gone = (before > 0) & (after == 0)
    forced = gone & (target_pixels < min_pixels)

    map_groups = np.zeros(len(groups), dtype="int64")
    np.add.at(map_groups, group_of_class[member[0]], after.sum(axis=0)[member[0]])
    return StabilityCounts(
        valid=int(scored.sum()), changed=n_changed, minimal=minimal, isolated=isolated,
        present=int((before > 0).sum()), vanished=int((gone & ~forced).sum()),
        vanished_forced=int(forced.sum()), map_groups=map_groups,
        target_groups=(target * n[None]).sum(axis=1),
    )


def _ratio(num, den) -> float:
    return float(num) / float(den) if den else float("nan")


def stability_scores(counts: StabilityCounts | Mapping) -> dict:
    """Ratios of :class:`StabilityCounts` (or of a mapping with its field names)."""
    c = counts.as_dict() if isinstance(counts, StabilityCounts) else counts
    area = np.asarray(c["map_groups"], dtype="float64")
    target = np.asarray(c["target_groups"], dtype="float64")
    area_share = area / area.sum() if area.sum() else np.full(area.shape, np.nan)
    target_share = target / target.sum() if target.sum() else np.full(target.shape, np.nan)
    return {
        "changed_share": _ratio(c["changed"], c["valid"]),
        "swap_ratio": _ratio(c["changed"] - c["minimal"], c["changed"]),
        "isolated_share": _ratio(c["isolated"], c["changed"]),
        "vanish_rate": _ratio(c["vanished"], c["present"]),
        "vanished": int(c["vanished"]),
        "vanished_forced": int(c["vanished_forced"]),
        "area_share": area_share,
        "target_share": target_share,
        "area_mae": float(np.mean(np.abs(area_share - target_share))),
    }


def summarise_stability(counts: StabilityCounts, group_names: tuple[str, ...]) -> dict:
    """JSON-ready stability scores (NaN → None; group shares keyed by group name)."""
    scores = stability_scores(counts)

    def number(value):
        return None if not np.isfinite(value) else round(float(value), 6)

    out = {key: number(value) if isinstance(value, float) else value
           for key, value in scores.items() if key not in ("area_share", "target_share")}
    for key in ("area_share", "target_share"):
        out[key] = {g: number(v) for g, v in zip(group_names, scores[key], strict=True)}
    out["counts"] = {key: int(getattr(counts, key)) for key in SCALARS}
    return out


class Stability(BlockMetric):
    """The chain's stability (:func:`summarise_stability` of the counts summed over test
    blocks and years), reported when every test block has counts; intervals of the swap
    ratio and the isolated share (lower is better). The per-block state is a list of
    :class:`StabilityCounts` (None: none added for the block yet)."""

    name = "stability"
    scopes = frozenset({TOTAL, YEAR, CHAIN})
    lower_is_better = True
    INTERVALS = ("swap_ratio", "isolated_share")

    def __init__(self, context=None):
        super().__init__(context)
        self.blocks: list[StabilityCounts | None] = [None] * self.context.n_blocks

    def accumulate(self, chunk: Chunk) -> None:
        if chunk.stability is not None:
            self._add(chunk.block, chunk.stability)

    def _add(self, block: int, counts: StabilityCounts) -> None:
        held = self.blocks[block]
        self.blocks[block] = counts if held is None else held + counts

    def merge(self, other: Stability) -> None:
        for block, counts in enumerate(other.blocks):
            if counts is not None:
                self._add(block, counts)

    def result(self) -> dict | None:
        if any(counts is None for counts in self.blocks):
            return None
        total = sum(self.blocks[1:], self.blocks[0])
        names = self.context.group_names or tuple(str(g) for g in range(len(total.map_groups)))
        return summarise_stability(total, names)

    def statistics(self) -> dict[str, np.ndarray] | None:
        if any(counts is None for counts in self.blocks):
            return None
        return StabilityCounts.stack(self.blocks)

    def compute(self, counts: StabilityCounts | Mapping) -> dict:
        """The raw scores (shares as arrays, NaN where undefined) of summed counts."""
        return stability_scores(counts)

    def interval_scores(self) -> dict:
        return {key: (lambda counts, key=key: stability_scores(counts)[key])
                for key in self.INTERVALS}
