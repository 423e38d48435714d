"""Demand channels: the change each coarse cell must make, as the model sees it.

The demand of a cell is the harmonisation target of the year minus the prior map's
group fractions there (``train.demand``; one channel per coarse group, ``demand:<group>``,
upsampled like the coarse channels). In a chain (predict, evaluate, emulator) the target
is the :class:`~ai4land.predict.finalise.Finaliser`'s delta-method target of the year
and the prior is the previous map of the chain, so the demand is exactly what the
allocation will convert; in training the chain is one step long: the anchor is the
observed prior map itself (target = prior + LUH(t) - LUH(prior), clipped and
renormalised, the offset weighted as ``predict.harmonize_decay_years`` weighs it one
year from the anchor). Both go through :func:`cell_demand`. Cells without a target
(no land, no coarse data) or without valid prior pixels have no demand (0), as does a
sample or a year without a prior.
"""

from __future__ import annotations

import numpy as np

from ai4land.grid import Window
from ai4land.io.cube import upsample_cells
from ai4land.predict.harmonize import (
    Groups,
    delta_target,
    luh_group_fractions,
    map_group_fractions,
    offset_weight,
)

BAND_CELLS = 64  # coarse-cell rows computed at a time over a whole training map


def cell_demand(prior_codes: np.ndarray, *, valid: np.ndarray, target: np.ndarray,
                groups: Groups, factor: int) -> np.ndarray:
    """(G, hc, wc) float32: ``target`` (G, hc, wc group fractions of whole cells) minus
    the group fractions of ``prior_codes`` over ``valid`` pixels; 0 in cells with an
    all-zero target or no valid prior pixel. The window of ``prior_codes`` starts on a
    cell boundary."""
    fractions, n = map_group_fractions(prior_codes, groups, factor=factor, valid=valid)
    has = (n > 0) & (np.asarray(target).sum(axis=0) > 0)
    return np.where(has[None], target - fractions, 0.0).astype("float32")


def training_demand(maps: np.ndarray, cells: np.ndarray, years: list[int], *, land: np.ndarray,
                    groups: Groups, channel_names: list[str], n_variables: int, factor: int,
                    nodata: int, decay_years: int | None) -> np.ndarray:
    """(len(years), 2, G, hc, wc) float32: the demand of each year with the observed map
    of the year before (index 0, forward) or after (1, backward) as prior and anchor;
    0 where that year is not among ``years``. ``maps`` (len(years), H, W) class codes,
    ``cells`` (len(years), V, hc, wc) coarse cells as stored, ``land`` (H, W) bool."""
    height, width = maps.shape[1:]
    hc, wc = cells.shape[2:]
    out = np.zeros((len(years), 2, len(groups), hc, wc), dtype="float32")
    index = {y: i for i, y in enumerate(years)}
    luh = [luh_group_fractions(c, channel_names, groups) for c in cells]
    for i, year in enumerate(years):
        no_data = np.isnan(cells[i, :n_variables]).all(axis=0)
        for slot, direction in enumerate((1, -1)):
            p = index.get(year - direction)
            if p is None:
                continue
            weight = offset_weight(year, year - direction, decay_years=decay_years)
            for top in range(0, hc, BAND_CELLS):
                rows = slice(top, min(top + BAND_CELLS, hc))
                window = Window(top * factor, 0, min(rows.stop * factor, height) - top * factor,
                                width)
                prior = np.asarray(maps[(p, *window.slices)])
                valid = (land[window.slices] & (prior != nodata)
                         & ~upsample_cells(no_data[rows], factor=factor,
                                           window=Window(0, 0, window.height, width)))
                fractions, _ = map_group_fractions(prior, groups, factor=factor, valid=valid)
                target = delta_target(fractions, luh[i][:, rows], luh[p][:, rows],
                                      offset_weight=weight)
                out[i, slot, :, rows] = cell_demand(prior, valid=valid, target=target,
                                                    groups=groups, factor=factor)
    return out
