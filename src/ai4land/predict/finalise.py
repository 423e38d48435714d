"""The one finalising path of predict, evaluate and the emulator.

:class:`Finaliser` turns a band of class probabilities into the published layers:
harmonisation to the delta-method coarse target (change allocation from the prior map or
full allocation), the probability/entropy(/spread) layers, and the report tallies. The
prior map of a chain (:func:`open_prior`) and its direction (:func:`chain_direction`,
:func:`anchor_year`) are defined here too, so every caller continues a chain the same way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import rasterio

from ai4land.encoding import quantise
from ai4land.errors import InputDataError
from ai4land.grid import Grid, Window
from ai4land.io.cube import Cube, upsample_cells
from ai4land.io.rasters import open_class_map, require_class_codes
from ai4land.predict.demand import cell_demand
from ai4land.predict.harmonize import (
    ErrorTally,
    Groups,
    allocate_change,
    delta_target,
    harmonize,
    luh_group_fractions,
    map_group_fractions,
)
from ai4land.predict.layers import map_layers, summarise
from ai4land.predict.probabilities import PriorReader, nodata_cells
from ai4land.samples.features import codes_to_index
from ai4land.samples.smooth import interpolate_fractions

DEMAND_BAND_CELLS = 64  # coarse-cell rows of the prior map read at a time for the demand


def chain_direction(scenario: str) -> int:
    """-1 for the backward ``historical`` chain, +1 for forward scenario chains."""
    return -1 if scenario == "historical" else 1


def anchor_year(cube: Cube, direction: int) -> int:
    """The observed year a chain starts from: the last going forward, the first backward."""
    years = cube.target_years
    if not years:
        raise InputDataError(f"{cube.paths.target}: holds no observed map")
    return max(years) if direction > 0 else min(years)


@contextmanager
def open_prior(path: str | Path, grid: Grid) -> Iterator[PriorReader]:
    """A window reader of a previous job's COG; GridError if it is on another grid."""
    path = Path(path)
    with open_class_map(path, hint=" (run the previous year of the chain)") as (src, found):
        grid.require_same(found, what=f"prior map {path}")
        require_class_codes(src, path)

        def read(window: Window) -> np.ndarray:
            return src.read(1, window=rasterio.windows.Window(
                window.col, window.row, window.width, window.height))

        yield read


class _Tally:
    """What the per-year report counts (conservation errors, class counts, pixels,
    spread), for one band or, merged band by band in row order, for the year: float
    sums then add up in the same order whichever thread finalised which band."""

    def __init__(self, k: int):
        self.errors = {(when, target): ErrorTally() for when in ("before", "after")
                       for target in ("delta_target", "luh")}
        self.class_counts = np.zeros(k, dtype="int64")
        self.pixels = {"land": 0, "valid": 0, "nodata": 0, "kept": 0}
        self.changed = self.reassigned = self.rejections = 0
        self.spread_sums = np.zeros(2, dtype="float64")  # std, disagreement over valid pixels
        # valid-pixel-weighted group fractions of the map, the delta target and LUH over
        # the cells with land and a target: the region's group areas (report
        # group_fractions, the published class-area trajectories)
        self.group_sums: np.ndarray | None = None
        self.group_pixels = 0
        self.seconds = 0.0

    def merge(self, band: _Tally) -> None:
        for key, tally in self.errors.items():
            tally.merge(band.errors[key])
        self.class_counts += band.class_counts
        for key in self.pixels:
            self.pixels[key] += band.pixels[key]
        self.changed += band.changed
        self.reassigned += band.reassigned
        self.rejections += band.rejections
        self.spread_sums += band.spread_sums
        if band.group_sums is not None:
            self.group_sums = (band.group_sums if self.group_sums is None
                               else self.group_sums + band.group_sums)
        self.group_pixels += band.group_pixels
        self.seconds += band.seconds

    def add_groups(self, fractions: np.ndarray, n: np.ndarray, target: np.ndarray,
                   luh: np.ndarray) -> None:
        """Add the (G, hc, wc) group fractions of a band's map, target and LUH cells,
        weighted by the cells' valid pixels ``n`` (cells with land and a target)."""
        use = (n > 0) & (np.nansum(target, axis=0) > 0)
        weight = n[use].astype("float64")
        sums = np.stack([np.nan_to_num(a[:, use]) @ weight for a in (fractions, target, luh)])
        self.group_sums = sums if self.group_sums is None else self.group_sums + sums
        self.group_pixels += int(weight.sum())


class Finaliser:
    """Turns probabilities of whole coarse cells into product layers and the band's
    :class:`_Tally`: harmonisation to the delta-method target of ``anchor`` (when
    ``predict.harmonize``), then the layers. Safe to call from several threads at once
    (bands of different rows). ``predict`` finalises full-width bands; the evaluation
    (:mod:`ai4land.evaluate.chains`) finalises the windows around its test blocks with
    the same code, so it scores what predict publishes.

    ``layers`` are the names of :func:`~ai4land.io.zarr_store.product_layers`, plus ``raw``
    for the class codes of the plain argmax (no data off the valid pixels), which the
    evaluation reports beside the harmonised map. ``prior`` (a window reader of the
    prior map) is the previous map that ``predict.allocation`` "change" continues, and
    lets the report count ``changed_pixels``; without it they read 0.
    """

    def __init__(self, config, *, cube: Cube, anchor: int, classes: list[int], groups: Groups,
                 weight: float, layers: list[str], cells: np.ndarray, anchor_cells: np.ndarray,
                 prior: PriorReader | None = None):
        self.config, self.cube, self.anchor = config, cube, anchor
        self.prior, self._prior_lock = prior, threading.Lock()  # the reader is not shared
        self.cells, self.anchor_cells = cells, anchor_cells  # whole region, coarse
        self.cell_nodata = nodata_cells(cube, cells)
        self.classes, self.groups, self.weight, self.layers = classes, groups, weight, layers
        self.code_of = np.asarray(classes, dtype="uint8")
        self.total = _Tally(len(classes))

    def __call__(self, row: int, band: np.ndarray, col: int = 0,
                 prior: np.ndarray | None = None) -> tuple[int, np.ndarray, _Tally]:
        """The (h, w, layers) layers of the (h, w, C) probabilities ``band`` whose first
        pixel is (``row``, ``col``) of the region: whole coarse cells (a band may end at
        the region's last row or column). ``prior``: the (h, w) class codes of the
        chain's previous map there (default: read by the finaliser's ``prior`` reader);
        with ``predict.allocation`` "change" the map keeps it but for each cell's net
        change (:func:`~ai4land.predict.harmonize.allocate_change`)."""
        start = time.perf_counter()
        cube, config, factor = self.cube, self.config, self.cube.factor
        k = len(self.classes)
        tally = _Tally(k)
        window = Window(row, col, band.shape[0], band.shape[1])
        probs = band[..., :k]
        land = cube.land_mask_window(window)
        valid, kept, anchor_codes = self._masks(window, land=land)

        best, group_p, entropy = summarise(probs, self.groups, self.classes, valid=valid)
        argmax_codes = np.where(valid, self.code_of[best], config.classes.nodata).astype("uint8")
        target, luh_t = self._targets(window, valid=valid, anchor_codes=anchor_codes)

        if prior is None and self.prior is not None:
            with self._prior_lock:
                prior = self.prior(window)
        index = best
        change = prior is not None and config.predict.allocation == "change"
        if config.predict.harmonize and change:
            result = allocate_change(probs, self.classes, factor=factor, valid=valid,
                                     targets=target, groups=self.groups,
                                     prior=codes_to_index(prior, self.classes),
                                     margin=config.predict.swap_margin, argmax=best,
                                     smoothing=config.predict.change_smoothing,
                                     patch_bonus=config.predict.change_patch_bonus,
                                     changed_bonus=config.predict.change_cluster_bonus)
            index = result.index
            tally.reassigned = result.changed
        elif config.predict.harmonize:
            weight = config.predict.smooth_weight
            scores = (group_p if weight == 0 else (1 - weight) * group_p
                      + weight * self.interpolated_targets(window))
            result = harmonize(probs, self.classes, factor=factor, valid=valid, targets=target,
                               groups=self.groups, argmax=best, group_p=scores)
            index = result.index
            tally.reassigned, tally.rejections = result.changed, result.rejections
        codes, probability, entropy, tally.class_counts = map_layers(
            probs, index, entropy=entropy, valid=valid, land=land, codes=self.code_of,
            nodata=config.classes.nodata, ocean=config.classes.ocean)
        codes[kept] = anchor_codes[kept]  # not modelled: probability and entropy no data
        if prior is not None:
            tally.changed = int(np.count_nonzero((codes != prior) & valid))
        for when, mapped in (("before", argmax_codes), ("after", codes)):
            fractions, n = map_group_fractions(mapped, self.groups, factor=factor, valid=valid)
            for name, goal in (("delta_target", target), ("luh", luh_t)):
                tally.errors[when, name].add_fractions(fractions, n, target=goal)
        tally.add_groups(fractions, n, target, luh_t)  # the "after" map's
        n_valid, n_land, n_kept = int(valid.sum()), int(land.sum()), int(kept.sum())
        tally.pixels.update(land=n_land, valid=n_valid, nodata=n_land - n_valid - n_kept,
                            kept=n_kept)

        out = {"lulc": codes, "probability": probability, "entropy": entropy,
               "raw": argmax_codes}
        if band.shape[-1] > k:  # ensemble: member std of the top class, disagreement
            tally.spread_sums += band[valid][:, k : k + 2].sum(axis=0, dtype="float64")
            out["spread"] = quantise(np.where(valid, band[..., k], np.nan))
        tally.seconds = time.perf_counter() - start
        return row, np.stack([out[name] for name in self.layers], axis=-1), tally

    def _masks(self, window: Window, *, land: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``valid``: the pixels of ``window`` harmonised and mapped; ``kept``: those that
        keep the anchor map's class; and the anchor map's codes."""
        rows, cols = window.coarse_slices(self.cube.factor)
        anchor_codes = self.cube.target_window(self.anchor, window)
        no_cell_data = upsample_cells(self.cell_nodata[rows, cols], factor=self.cube.factor,
                                      window=window)
        # The anchor map's no-data pixels stay no data, out of every cell's quotas; land of
        # cells without coarse land-use data (coastlines the coarse data call ocean, all
        # water or ice cells) keeps the anchor map's classes: nothing constrains a change.
        valid = land & ~no_cell_data & (anchor_codes != self.config.classes.nodata)
        kept = land & no_cell_data
        if kept.any():
            kept &= np.isin(anchor_codes, self.code_of)
        return valid, kept, anchor_codes

    def _targets(self, window: Window, *, valid: np.ndarray,
                 anchor_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = window.coarse_slices(self.cube.factor)
        names = self.cube.coarse_channel_names
        luh_t = luh_group_fractions(self.cells[:, rows, cols], names, self.groups)
        luh_anchor = luh_group_fractions(self.anchor_cells[:, rows, cols], names, self.groups)
        anchor_fractions, _ = map_group_fractions(anchor_codes, self.groups,
                                                  factor=self.cube.factor, valid=valid)
        target = delta_target(anchor_fractions, luh_t, luh_anchor, offset_weight=self.weight)
        return target, luh_t

    def interpolated_targets(self, window: Window) -> np.ndarray:
        """(h, w, G) float32: the targets of ``window``'s cells and a ring of cells around
        them (those the region has) interpolated bilinearly between cell centres at the
        pixels of ``window`` (whole cells from a cell boundary;
        :func:`~ai4land.samples.smooth.interpolate_fractions`)."""
        factor = self.cube.factor
        height, width = self.cube.fine_grid.shape
        hc, wc = self.cells.shape[1:]
        top, left = max(window.row // factor - 1, 0), max(window.col // factor - 1, 0)
        bottom = min(-(-(window.row + window.height) // factor) + 1, hc)
        right = min(-(-(window.col + window.width) // factor) + 1, wc)
        ring = Window(top * factor, left * factor, min(bottom * factor, height) - top * factor,
                      min(right * factor, width) - left * factor)
        target, _ = self.targets(ring, land=self.cube.land_mask_window(ring))
        values = interpolate_fractions(target, factor=factor, first_cell=(top, left),
                                       row=window.row, col=window.col, height=window.height,
                                       width=window.width)
        return np.moveaxis(values, 0, -1)

    def window_demand(self, window: Window, prior: np.ndarray) -> np.ndarray:
        """(G, hc, wc) float32: the demand channels of the cells of ``window`` (whole
        cells from a cell boundary): the year's target minus the group fractions of the
        ``prior`` codes (:func:`~ai4land.predict.demand.cell_demand`)."""
        land = self.cube.land_mask_window(window)
        valid, _, anchor_codes = self._masks(window, land=land)
        target, _ = self._targets(window, valid=valid, anchor_codes=anchor_codes)
        return cell_demand(prior, valid=valid, target=target, groups=self.groups,
                           factor=self.cube.factor)

    def demand(self, prior: PriorReader | np.ndarray | None) -> np.ndarray:
        """(G, hc, wc) float32: the demand channels of the region's cells, with the
        ``prior`` map (a window reader or the region's codes) as the chain's previous
        map; zeros without a prior. Computed a band of cell rows at a time."""
        factor = self.cube.factor
        height, width = self.cube.fine_grid.shape
        hc, wc = self.cells.shape[1:]
        out = np.zeros((len(self.groups), hc, wc), dtype="float32")
        if prior is None:
            return out
        for top in range(0, hc, DEMAND_BAND_CELLS):
            window = Window(top * factor, 0,
                            min((top + DEMAND_BAND_CELLS) * factor, height) - top * factor, width)
            codes = prior[window.slices] if isinstance(prior, np.ndarray) else prior(window)
            out[:, top : top + DEMAND_BAND_CELLS] = self.window_demand(window, codes)
        return out

    def valid(self, window: Window, *, land: np.ndarray) -> np.ndarray:
        """(h, w) bool: the pixels of ``window`` that harmonisation allocates."""
        return self._masks(window, land=land)[0]

    def targets(self, window: Window, *, land: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(G, hc, wc) group fractions of the cells of ``window`` (whole cells): the
        delta-method target harmonisation allocates to, and the LUH-mapped fractions."""
        valid, _, anchor_codes = self._masks(window, land=land)
        return self._targets(window, valid=valid, anchor_codes=anchor_codes)

    def collect(self, finalised: tuple[int, np.ndarray, _Tally]) -> tuple[int, np.ndarray]:
        """Add a band's tally to the year's (call in row order); the band's layers."""
        row, block, tally = finalised
        self.total.merge(tally)
        return row, block

    def _group_fractions(self) -> dict:
        """The region's group fractions of the map, the delta target and the LUH-mapped
        coarse fractions, over the cells with land and a target."""
        total, names = self.total, self.groups.names
        sums = total.group_sums if total.group_sums is not None else np.zeros((3, len(names)))
        pixels = max(total.group_pixels, 1)
        return {key: {name: round(float(v) / pixels, 6) for name, v in zip(names, row,
                                                                            strict=True)}
                for key, row in zip(("map", "delta_target", "luh"), sums, strict=True)}

    def report(self) -> dict:
        total = self.total
        valid = max(total.pixels["valid"], 1)
        fractions = {str(c): round(float(n) / valid, 6)
                     for c, n in zip(self.classes, total.class_counts, strict=True)}
        ensemble = self.config.predict.ensemble
        spread = {"kind": ensemble.kind, "members": ensemble.members}
        if ensemble.kind != "none":
            spread.update(mean_std=round(float(total.spread_sums[0]) / valid, 6),
                          mean_disagreement=round(float(total.spread_sums[1]) / valid, 6))
        return {
            "conservation": {when: {name: total.errors[when, name].result()
                                    for name in ("delta_target", "luh")}
                             for when in ("before", "after")},
            "changed_pixels": int(total.changed),  # valid pixels unlike the prior map's
            "harmonize_reassigned_pixels": int(total.reassigned),  # unlike the argmax
            "harmonize_rejections": int(total.rejections),
            "class_fractions": fractions,
            "group_fractions": self._group_fractions(),
            "pixels": dict(total.pixels),
            "ensemble": spread,
        }
