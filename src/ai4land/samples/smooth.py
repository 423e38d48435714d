"""Smooth coarse channels: coarse group fractions interpolated between cell centres.

Without a prior (single-year data) the coarse channels say how much of each class group a
cell holds, not where inside the cell it lies; the neighbouring cells do: a class whose
share rises towards the east cell lies more likely in the cell's eastern part. A model
trained with ``train.smooth_coarse`` sees, per coarse group with coarse variables, the
group fractions (:func:`~ai4land.predict.harmonize.luh_group_fractions`) interpolated
bilinearly between the centres of the pixel's cell and its neighbours (channels
``smooth:<group>``, in the ``coarse`` input group): equal to the cell's fraction at the
cell centre, the mean of two cells on their shared edge. Past the grid's edge the
nearest cell repeats (the channel is flat there); a neighbour without coarse data
(ocean) takes the cell's own value, so coasts do not pull the fractions to 0.

Per coarse cell the interpolation needs its 3 x 3 neighbourhood of fractions, the
*knots* (:func:`fraction_knots`, numpy for prediction; :func:`knots_torch` for training
batches); a pixel at offset ``(u, v)`` from its cell centre (in cells, each in
(-0.5, 0.5)) blends the knots of the quadrant it lies in (:func:`interpolate`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ai4land.predict.harmonize import Groups, luh_group_fractions

SMOOTH_PREFIX = "smooth:"


def smooth_groups(groups: Groups) -> list[str]:
    """The groups that get a smooth channel: those with coarse variables."""
    return [name for name, variables in zip(groups.names, groups.variables, strict=True)
            if variables]


def smooth_groups_of(channel_names: Sequence[str]) -> list[str]:
    """The groups of the smooth channels among ``channel_names`` (a model card's)."""
    return [n[len(SMOOTH_PREFIX):] for n in channel_names if n.startswith(SMOOTH_PREFIX)]


def group_matrix(groups: Groups, channel_names: Sequence[str], names: Sequence[str]
                 ) -> np.ndarray:
    """(len(names), V) 0/1: group ``names[i]`` sums coarse variable ``j``."""
    index = {name: i for i, name in enumerate(channel_names)}
    out = np.zeros((len(names), len(channel_names)), dtype="float32")
    for i, name in enumerate(names):
        for variable in groups.variables[groups.names.index(name)]:
            if variable not in index:
                raise KeyError(f"coarse variable {variable!r} of group {name!r} is not in the "
                               f"coarse data ({list(channel_names)})")
            out[i, index[variable]] = 1.0
    return out


def _fractions(cells: np.ndarray, channel_names: Sequence[str], groups: Groups,
               names: Sequence[str]) -> np.ndarray:
    """(len(names), h, w) group fractions of ``cells`` (V, h, w) renormalised over every
    group; all 0 where a cell has no coarse data."""
    fractions = luh_group_fractions(cells, channel_names, groups)
    return fractions[[groups.names.index(n) for n in names]]


def fraction_knots(fractions: np.ndarray, *, inner: tuple[slice, slice]) -> np.ndarray:
    """(3, 3, G, m, n) float32: for the cells ``inner`` of the block of (G, h, w) cell
    ``fractions`` (all 0: no data), each cell's 3 x 3 neighbourhood in the block: past
    the block the nearest cell of the block (the block ends at the grid's edge), a
    neighbour without data the cell's own."""
    has = fractions.sum(axis=0) > 0
    rows, cols = inner
    own = fractions[:, rows, cols]
    m, n = own.shape[1:]
    padded = np.pad(fractions, ((0, 0), (1, 1), (1, 1)), mode="edge")
    padded_has = np.pad(has, 1, mode="edge")
    out = np.empty((3, 3, len(fractions), m, n), dtype="float32")
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            r = slice(rows.start + 1 + dr, rows.start + 1 + dr + m)
            c = slice(cols.start + 1 + dc, cols.start + 1 + dc + n)
            out[dr + 1, dc + 1] = np.where(padded_has[r, c][None], padded[:, r, c], own)
    return out


def offsets(first: int, size: int, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """For pixels ``first .. first + size - 1`` of the grid along one axis: each one's
    cell relative to the first pixel's cell, and its offset from the cell centre in
    cells, in (-0.5, 0.5)."""
    pixel = first + np.arange(size)
    cell = pixel // factor - first // factor
    return cell, (pixel % factor + 0.5) / factor - 0.5


def interpolate(knot: np.ndarray, cell_rows: np.ndarray, cell_cols: np.ndarray,
                u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """(G, h, w) float32 bilinear fractions from ``knot`` (3, 3, G, m, n) of the pixels'
    cells (``cell_rows`` (h,), ``cell_cols`` (w,)) at offsets ``u`` (h,), ``v`` (w,)."""
    dr = np.where(u > 0, 2, 0)[:, None]
    dc = np.where(v > 0, 2, 0)[None, :]
    wu, wv = np.abs(u)[:, None].astype("float32"), np.abs(v)[None, :].astype("float32")
    r, c = cell_rows[:, None], cell_cols[None, :]
    own = knot[1, 1][:, r, c]
    vertical = knot[dr, 1, :, r, c].transpose(2, 0, 1)
    horizontal = knot[1, dc, :, r, c].transpose(2, 0, 1)
    diagonal = knot[dr, dc, :, r, c].transpose(2, 0, 1)
    out = ((1 - wu) * (1 - wv) * own + wu * (1 - wv) * vertical
           + (1 - wu) * wv * horizontal + wu * wv * diagonal)
    return out.astype("float32", copy=False)


def window_channels(cells: np.ndarray, *, channel_names: Sequence[str], groups: Groups,
                    names: Sequence[str], factor: int, first_cell: tuple[int, int],
                    row: int, col: int, height: int, width: int) -> np.ndarray:
    """(G, height, width) smooth channels of the pixels from (``row``, ``col``) of the
    grid; ``cells`` (V, h, w) a block of the grid's cells whose first cell is
    ``first_cell`` and which holds the window's cells with their neighbours (those the
    grid has)."""
    return interpolate_fractions(_fractions(cells, channel_names, groups, names),
                                 factor=factor, first_cell=first_cell, row=row, col=col,
                                 height=height, width=width)


def interpolate_fractions(fractions: np.ndarray, *, factor: int, first_cell: tuple[int, int],
                          row: int, col: int, height: int, width: int) -> np.ndarray:
    """(G, height, width) float32: (G, h, w) cell ``fractions`` (all 0: no data)
    interpolated bilinearly between cell centres at the pixels from (``row``, ``col``)
    of the grid (:func:`fraction_knots`); the block's first cell is ``first_cell`` and it
    holds the window's cells with their neighbours (those the grid has)."""
    rows, u = offsets(row, height, factor)
    cols, v = offsets(col, width, factor)
    top, left = row // factor - first_cell[0], col // factor - first_cell[1]
    inner = (slice(top, top + rows[-1] + 1), slice(left, left + cols[-1] + 1))
    return interpolate(fraction_knots(fractions, inner=inner), rows, cols, u, v)


# --- training batches -------------------------------------------------------------


def knots_torch(cells: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3, G, m, n) knots of the inner cells of ``cells`` (B, V, m + 2, n + 2), a
    batch of cell blocks with a one-cell ring (past the grid: its nearest cell);
    ``matrix`` (G_all, V) sums variables into every group (the first G are the smooth
    ones), as :func:`group_matrix`."""
    values = torch.nan_to_num(cells, nan=0.0).clamp(0.0, 1.0)
    sums = torch.einsum("gv,bvhw->bghw", matrix, values)
    total = sums.sum(1, keepdim=True)
    fractions = torch.where(total > 0, sums / torch.where(total > 0, total, 1.0), 0.0)
    has = total > 0
    m, n = cells.shape[-2] - 2, cells.shape[-1] - 2
    own = fractions[..., 1:-1, 1:-1]
    rows = []
    for dr in (0, 1, 2):
        row = []
        for dc in (0, 1, 2):
            nb = fractions[..., dr:dr + m, dc:dc + n]
            row.append(torch.where(has[..., dr:dr + m, dc:dc + n], nb, own))
        rows.append(torch.stack(row, 1))
    return torch.stack(rows, 1)
