"""Where the model runs and what it sees: the window plan over a region and the class
probabilities streamed band by band.

Windows over open ocean (only no-data coarse cells) are skipped (:func:`plan_prediction`).
Inputs (cube, prior map) are read a row of windows at a time; :func:`probability_bands`
yields blended probability bands, :func:`rebands` cuts them into whole coarse-cell rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from ai4land.device import resolve_device
from ai4land.grid import Window
from ai4land.io.cube import Cube
from ai4land.predict.inference import plan_windows, stream_probabilities
from ai4land.samples.arrays import cells_per_window
from ai4land.samples.features import BatchInputs, build_inputs

PriorReader = Callable[[Window], np.ndarray]


def ensemble_seed(config, scenario: str, year: int) -> int:
    """MC dropout seed: a pure function of (config seed, scenario, year)."""
    text = f"{config.seed}:{scenario}:{year}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def _banded(read: Callable[[Window], np.ndarray], width: int) -> Callable[[Window], np.ndarray]:
    """``read`` (a window → (..., h, w) array), one full-width band of rows at a time:
    windows run row by row, so one read serves a whole row of windows; a read per window
    re-reads their overlaps and costs more than the model's forward pass on a CPU."""
    held: dict[str, object] = {"rows": None, "band": None}

    def read_window(window: Window) -> np.ndarray:
        rows = (window.row, window.height)
        if held["rows"] != rows:
            held["band"] = read(Window(window.row, 0, window.height, width))
            held["rows"] = rows
        return held["band"][..., window.col : window.col + window.width]

    return read_window


class _StaticBands:
    """The cube, with the static features of the current band of window rows in memory
    (a static band of a global row of 512-pixel tiles is ~220 MB for three features).
    The year's coarse cells go to ``build_inputs`` as ``coarse_cells``."""

    def __init__(self, cube: Cube):
        self._cube = cube
        self.static_window = _banded(cube.static_window, cube.fine_grid.width)

    def __getattr__(self, name: str):
        return getattr(self._cube, name)


class DeviceInputs:
    """The inputs of a group of same-shaped windows, built on ``device`` from raw arrays
    by the training batch builder (:class:`~ai4land.samples.features.BatchInputs`, no
    prior mask, no input dropout, no augmentation): the same channels as
    :func:`~ai4land.samples.features.build_inputs`. For a GPU: per 512² window the prior's
    uint8 codes, the static layers as stored and a few coarse cells cross to the device
    (~2.3 MB) instead of its float32 input (~26 MB), and the one-hot, upsampling and
    normalisation run there, batched, instead of on the host's cores.

    ``cells``: the year's coarse cells of the whole region; ``prior``: a (banded)
    window reader of the prior map, or None."""

    def __init__(self, cube: Cube, *, cells: np.ndarray, predicted: list[int],
                 prior: PriorReader | None, direction: int, device):
        from ai4land.config import PriorMaskConfig

        names = cube.static_names
        self.builder = BatchInputs(
            predicted=predicted, factor=cube.factor,
            static_mean=[float(cube.static[n].attrs["mean"]) for n in names],
            static_std=[float(cube.static[n].attrs["std"]) for n in names],
            n_coarse=cells.shape[0], prior_mask=PriorMaskConfig())
        self.factor, self.cells, self.prior = cube.factor, cells, prior
        self.direction, self.device = float(direction), torch.device(device)

        def raw_static(window: Window) -> np.ndarray:
            return np.stack([np.asarray(cube.static_values(n, window), dtype="float32")
                             for n in names]
                            or [np.zeros((window.height, window.width), dtype="float32")]
                            )[: len(names)]

        self.static = _banded(raw_static, cube.fine_grid.width)

    def __call__(self, windows) -> torch.Tensor:
        """(B, C, h, w) channels_last float32 input of ``windows`` on the device."""
        n, factor = len(windows), self.factor
        height, width = windows[0].height, windows[0].width
        cells = np.zeros((n, self.cells.shape[0], cells_per_window(height, factor),
                          cells_per_window(width, factor)), dtype="float32")
        offsets = np.empty((n, 2), dtype="int64")
        for i, window in enumerate(windows):
            rows, cols = window.coarse_slices(factor)
            part = self.cells[:, rows, cols]
            cells[i, :, : part.shape[1], : part.shape[2]] = part
            offsets[i] = (window.row % factor, window.col % factor)
        prior = (np.zeros((n, height, width), dtype="uint8") if self.prior is None
                 else np.stack([self.prior(window) for window in windows]).astype("uint8"))
        batch = {
            "cells": torch.from_numpy(cells), "cell_offset": torch.from_numpy(offsets),
            "static": torch.from_numpy(np.stack([self.static(w) for w in windows])),
            "prior": torch.from_numpy(prior), "target": torch.from_numpy(prior),
            "has_prior": torch.full((n,), self.prior is not None),
            "prior_hidden": torch.full((n,), -1, dtype=torch.int64),  # none hidden
            "mask_blocks": torch.full((n, 1, 2), -1, dtype=torch.int64),
            "mask_key": torch.zeros(n, dtype=torch.int64),
            "inputs_zeroed": torch.zeros((n, 3), dtype=torch.bool),
            "direction": torch.full((n,), self.direction),
            **{key: None for key in ("year", "row", "col", "index")},
        }
        return self.builder(batch, self.device, channels_last=True)["inputs"]


def nodata_cells(cube: Cube, cells: np.ndarray) -> np.ndarray:
    """(h, w) bool: the coarse cells of ``cells`` (C, h, w) where every coarse variable is
    no-data (no land in the scenario: its pixels are not valid in the products)."""
    return np.isnan(cells[: len(cube.coarse_variables)]).all(axis=0)


def plan_prediction(config, *, cube: Cube,
                    cells: np.ndarray | None = None) -> tuple[list[Window], frozenset[Window]]:
    """The windows of the region (:func:`~ai4land.predict.inference.plan_windows`), and those of
    them to skip: with ``cells`` (the year's coarse cells of the region), the windows
    that touch only no-data cells (open ocean), whose pixels no product uses; none if
    that is every window."""
    windows = plan_windows(cube.fine_grid.shape, tile_size=config.predict.tile_size,
                           overlap=config.predict.overlap)
    if cells is None:
        return windows, frozenset()
    empty = nodata_cells(cube, cells)
    skip = frozenset(w for w in windows if empty[w.coarse_slices(cube.factor)].all())
    return windows, skip if len(skip) < len(windows) else frozenset()


def builds_inputs_on_device(device, *, demand=None, smooth=None) -> bool:
    """Whether a batch's inputs are built on ``device`` (:class:`DeviceInputs`): on a GPU,
    for a model whose channels it builds. A CPU builds each window straight into its batch
    slot in one compiled pass (faster there); the demand and smooth coarse channels are
    built on the host only (:func:`~ai4land.samples.features.build_inputs`)."""
    return torch.device(device).type != "cpu" and demand is None and smooth is None


def probability_bands(config, *, cube: Cube, model, scenario: str, year: int,
                      prior: PriorReader | None, direction: int, device=None,
                      progress: bool | None = None, coarse_cells: np.ndarray | None = None,
                      streams: int = 1, skip_nodata: bool = False,
                      demand: np.ndarray | None = None, smooth=None,
                      ) -> tuple[Iterator[tuple[int, np.ndarray]], int, int]:
    """Blended (h, W, C) probability bands of the region, top to bottom; the window count;
    and how many of the windows were skipped.

    C is the number of classes, plus the two spread channels of an ensemble.
    ``coarse_cells``: the year's coarse cells of the whole region, if already read.
    ``demand``: the region's demand channels for a model with them
    (:meth:`~ai4land.predict.finalise.Finaliser.demand`), ``None`` for one without.
    ``smooth``: the coarse groups for a model with smooth coarse channels (``build_inputs``;
    their inputs are built on the host, also on a GPU).
    ``skip_nodata``: windows that touch only no-data coarse cells are not run (see
    :func:`plan_prediction`); their pixels' probabilities are then meaningless, which
    is fine for products that mask them out (:func:`run_predict`).
    """
    grid = cube.fine_grid
    predicted = list(config.classes.predicted)
    inputs_cube = _StaticBands(cube)
    # a global year of coarse cells is ~50 MB: read once, not once per window
    cells = (cube.coarse_cells(scenario, year, Window(0, 0, *grid.shape))
             if coarse_cells is None else coarse_cells)
    windows, skip = plan_prediction(config, cube=cube, cells=cells if skip_nodata else None)

    prior_band = None if prior is None else _banded(prior, grid.width)

    def load_window(window: Window, out: np.ndarray | None = None) -> np.ndarray:
        return build_inputs(inputs_cube, scenario=scenario, year=year, window=window,
                            predicted=predicted,
                            prior=None if prior_band is None else prior_band(window),
                            direction=direction, coarse_cells=cells, demand=demand,
                            smooth=smooth, out=out)

    device = resolve_device(device if device is not None else config.predict.device,
                            key="predict.device")
    load_batch = (DeviceInputs(cube, cells=cells, predicted=predicted, prior=prior_band,
                               direction=direction, device=device)
                  if builds_inputs_on_device(device, demand=demand, smooth=smooth) else None)
    ensemble = config.predict.ensemble
    stream = stream_probabilities(
        model, load_window=load_window, shape=grid.shape, windows=windows,
        batch_size=config.predict.batch_size, device=device, load_batch=load_batch,
        ensemble=ensemble.kind, members=ensemble.members,
        seed=ensemble_seed(config, scenario, year),
        progress=progress, description=f"{scenario} {year}", streams=streams, skip=skip,
    )
    return stream, len(windows), len(skip)


def year_probabilities(config, *, cube: Cube, model, scenario: str, year: int,
                       prior: np.ndarray | None, direction: int, device=None,
                       progress: bool | None = None,
                       demand: np.ndarray | None = None) -> tuple[np.ndarray, int]:
    """Blended class probabilities (H, W, K) of the whole region for one year (in memory)."""
    stream, n_windows, _ = probability_bands(
        config, cube=cube, model=model, scenario=scenario, year=year,
        prior=None if prior is None else (lambda window: prior[window.slices]),
        direction=direction, device=device, progress=progress, demand=demand)
    k = len(config.classes.predicted)
    return np.concatenate([band[..., :k] for _, band in stream]), n_windows


def rebands(bands: Iterable[tuple[int, np.ndarray]], *, multiple: int, height: int,
            max_rows: int | None = None, parts: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Regroup consecutive row bands into bands that start on a multiple of ``multiple``
    rows and end on one (the last one ends at ``height``), as soon as the rows are there.

    The rows each input band completes are cut into at least ``parts`` nearly equal
    bands (so that many workers can take them) of at most ``max_rows`` rows (default:
    ``multiple``, i.e. bands of exactly ``multiple`` rows). Bands inside an input band
    are views of it; only a band straddling two input bands is copied, and the rows held
    back for the next one (fewer than ``multiple``) are copied out of theirs.
    """
    units_max = max(1, (max_rows or multiple) // multiple)
    top, pending = 0, []
    for row, band in bands:
        if row != top + sum(len(b) for b in pending):
            raise RuntimeError(f"row band starting at {row} is out of order")
        end = row + len(band)
        cut = end if end == height else end // multiple * multiple
        if cut <= top:
            pending.append(band)
            continue
        head = np.concatenate(pending) if len(pending) > 1 else (pending[0] if pending else None)
        units = -(-(cut - top) // multiple)
        n = min(units, max(parts, -(-units // units_max)))
        start = top
        for i in range(n):
            stop = min(start + (units // n + (i < units % n)) * multiple, cut)
            if start >= row:
                yield start, band[start - row : stop - row]
            else:  # rows held back from earlier bands, then the first rows of this one
                yield start, np.concatenate([head[start - top : stop - top],
                                             band[: max(stop - row, 0)]])
            start = stop
        rest = band[cut - row :]
        pending = [rest.copy()] if len(rest) else []
        top = cut
