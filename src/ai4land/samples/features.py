"""Assemble the network input of one window: the single place that defines it.

Channel order (recorded in the model card, checked at predict time):

1. coarse variables, then the coarse water fraction, upsampled from their cells
   (NaN, i.e. ocean or missing, read as 0);
2. static features, normalised;
3. the prior: one-hot over the predicted classes, then a "prior known" channel;
4. the chain direction: +1 forward (prior from the previous year), -1 backward.

Channels form three input groups (``input_groups``): ``coarse``, ``static`` and
``prior`` (the prior channels and the direction). A model trained without a group
zeroes its channels itself (``UNet(zero_channels=...)``), so the layout never changes.
"""

from __future__ import annotations

import numba
import numpy as np

from ai4land.grid import Window
from ai4land.io.cube import Cube, cell_indices, upsample_cells

IGNORE_INDEX = -1
INPUT_GROUPS = ("coarse", "static", "prior")


def class_lookup(predicted: list[int]) -> np.ndarray:
    """A 256-entry table from uint8 class code to class index (-1 for unpredicted codes)."""
    table = np.full(256, IGNORE_INDEX, dtype="int64")
    table[np.asarray(predicted)] = np.arange(len(predicted))
    return table


def codes_to_index(codes: np.ndarray, predicted: list[int]) -> np.ndarray:
    return class_lookup(predicted)[codes]


def input_channel_names(cube: Cube, predicted: list[int]) -> list[str]:
    return (
        [f"coarse:{name}" for name in cube.coarse_channel_names]
        + [f"static:{name}" for name in cube.static_names]
        + [f"prior:{code}" for code in predicted]
        + ["prior:known", "direction"]
    )


def input_normalisation(cube: Cube) -> dict:
    """How each input group is scaled, with the static mean/std (for the model card)."""
    return {
        "coarse": "fractions as stored in the cube, upsampled (nearest); NaN -> 0",
        "static": {
            name: {"mean": float(cube.static[name].attrs["mean"]),
                   "std": float(cube.static[name].attrs["std"])}
            for name in cube.static_names
        },
        "static_formula": "(value - mean) / std; NaN -> 0",
        "prior": "one-hot over the predicted classes, 0 where hidden or unpredicted; "
                 "prior:known 1 where shown",
        "direction": "+1 forward (prior = previous year), -1 backward (prior = next year)",
    }


def channel_group(name: str) -> str:
    """The input group of a channel name from ``input_channel_names``."""
    return "prior" if name == "direction" else name.split(":", 1)[0]


def group_channels(channel_names: list[str], groups) -> list[int]:
    """Indices of the channels that belong to ``groups`` (names from ``INPUT_GROUPS``)."""
    unknown = sorted(set(groups) - set(INPUT_GROUPS))
    if unknown:
        raise ValueError(f"unknown input group(s) {unknown}; use {list(INPUT_GROUPS)}")
    return [i for i, name in enumerate(channel_names) if channel_group(name) in set(groups)]


def prior_channels(
    prior: np.ndarray | None, *, predicted: list[int], keep: np.ndarray | None = None,
    shape: tuple[int, int], out: np.ndarray | None = None,
) -> np.ndarray:
    """One-hot prior plus a 'known' channel; pixels outside ``keep`` count as unknown.

    ``out``: a (K + 1, h, w) float32 array to fill instead of a new one.
    """
    if out is None:
        out = np.empty((len(predicted) + 1, *shape), dtype="float32")
    if prior is None:
        out[...] = 0.0
        return out
    index = _prior_index(prior, predicted, keep)
    np.equal(index[None], np.arange(len(predicted))[:, None, None], out=out[:-1], casting="unsafe")
    np.greater_equal(index, 0, out=out[-1], casting="unsafe")
    return out


def build_inputs(
    cube: Cube,
    *,
    scenario: str,
    year: int,
    window: Window,
    predicted: list[int],
    prior: np.ndarray | None,
    direction: int,
    prior_keep: np.ndarray | None = None,
    coarse_cells: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The (C, h, w) float32 input of ``window`` for ``year`` under ``scenario``.

    ``coarse_cells``: the cube's coarse cells of the *whole* region for (scenario, year)
    (``cube.coarse_cells(scenario, year, whole)``) when the caller holds them; saves
    reading the coarse store for every window. ``out``: a (C, h, w) float32 array to
    fill (e.g. a slot of a batch buffer) instead of a new one; a channels-last view (a
    slot of a channels_last batch tensor) is filled pixel by pixel in one compiled pass.
    """
    if coarse_cells is None:
        cells = cube.coarse_cells(scenario, year, window)
    else:
        rows, cols = window.coarse_slices(cube.factor)
        cells = coarse_cells[:, rows, cols]
    static = cube.static_window(window)
    n_coarse, n_static = len(cells), len(static)
    shape = (n_coarse + n_static + len(predicted) + 2, window.height, window.width)
    if out is None:
        out = np.empty(shape, dtype="float32")
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out is {out.dtype} {out.shape}, expected float32 {shape}")
    # NaN (ocean, missing) → 0 on the cells, before they are repeated to fine pixels
    cells = np.nan_to_num(cells, nan=0.0)
    if out.transpose(1, 2, 0).flags.c_contiguous:  # channels last: one compiled pass
        index = (np.full((0, 0), IGNORE_INDEX, dtype="int64") if prior is None
                 else _prior_index(prior, predicted, prior_keep))
        _fill_channels_last(
            out.transpose(1, 2, 0), np.ascontiguousarray(cells, dtype="float32"),
            *cell_indices(window, cube.factor), np.ascontiguousarray(static, dtype="float32"),
            index, len(predicted), float(direction))
        return out
    out[:n_coarse] = upsample_cells(cells, factor=cube.factor, window=window)
    out[n_coarse : n_coarse + n_static] = static
    prior_channels(prior, predicted=predicted, keep=prior_keep,
                   shape=(window.height, window.width), out=out[n_coarse + n_static : -1])
    out[-1] = float(direction)
    return out


def _prior_index(prior: np.ndarray, predicted: list[int], keep: np.ndarray | None) -> np.ndarray:
    index = codes_to_index(prior, predicted)
    return index if keep is None else np.where(keep, index, IGNORE_INDEX)


@numba.njit(cache=True, nogil=True)
def _fill_channels_last(out, cells, cell_rows, cell_cols, static, prior_index, n_classes,
                        direction):  # pragma: no cover - compiled
    """The channels of :func:`build_inputs`, written pixel by pixel into an (h, w, C)
    array (a channels_last batch slot): the same values as the planar path, without a
    planar copy to transpose. ``prior_index`` is (0, 0) when there is no prior."""
    height, width, channels = out.shape
    n_coarse, n_static = cells.shape[0], static.shape[0]
    first_prior = n_coarse + n_static
    has_prior = prior_index.shape[0] > 0
    for i in range(height):
        r = cell_rows[i]
        for j in range(width):
            c = cell_cols[j]
            for v in range(n_coarse):
                out[i, j, v] = cells[v, r, c]
            for s in range(n_static):
                out[i, j, n_coarse + s] = static[s, i, j]
            k = prior_index[i, j] if has_prior else -1
            for m in range(n_classes):
                out[i, j, first_prior + m] = 1.0 if m == k else 0.0
            out[i, j, first_prior + n_classes] = 1.0 if k >= 0 else 0.0
            out[i, j, channels - 1] = direction
