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

from ai4land.device import resolve_device
from ai4land.grid import Window
from ai4land.io.cube import Cube
from ai4land.predict.inference import plan_windows, stream_probabilities
from ai4land.samples.features import build_inputs

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


def probability_bands(config, *, cube: Cube, model, scenario: str, year: int,
                      prior: PriorReader | None, direction: int, device=None,
                      progress: bool | None = None, coarse_cells: np.ndarray | None = None,
                      streams: int = 1, skip_nodata: bool = False,
                      demand: np.ndarray | None = None,
                      ) -> tuple[Iterator[tuple[int, np.ndarray]], int, int]:
    """Blended (h, W, C) probability bands of the region, top to bottom; the window count;
    and how many of the windows were skipped.

    C is the number of classes, plus the two spread channels of an ensemble.
    ``coarse_cells``: the year's coarse cells of the whole region, if already read.
    ``demand``: the region's demand channels for a model with them
    (:meth:`~ai4land.predict.finalise.Finaliser.demand`), ``None`` for one without.
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
                            out=out)

    ensemble = config.predict.ensemble
    stream = stream_probabilities(
        model, load_window=load_window, shape=grid.shape, windows=windows,
        batch_size=config.predict.batch_size,
        device=device if device is not None else resolve_device(config.predict.device, key="predict.device"),
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
