"""Raw copies of the cube for training: what a training window reads, as plain arrays.

Training reads thousands of small windows a second; through the Zarr stores each one
costs chunk decoding and Python overhead (about 9 ms a 64-pixel sample on one core).
:class:`TrainingArrays` holds, for the years a run trains on, the class maps as stored
(uint8), the static features as stored (float32, not normalised) and the coarse cells
at coarse resolution (float32, NaN kept), either in memory or as memory-mapped ``.npy``
files (``train.cache_dir``: written once, reused while the cube is unchanged, shared by
the ranks of a node through the page cache). A window is then a few array slices; the
one-hot encoding, upsampling and normalisation happen batched on the training device
(:class:`ai4land.samples.features.BatchInputs`).
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ai4land.errors import InputDataError, OutputError
from ai4land.grid import Window
from ai4land.io.atomic import atomic_path
from ai4land.io.cube import Cube

CACHE_FORMAT = 1
BAND_ROWS = 1024  # rows copied at a time into a memory-mapped file


def cells_per_window(size: int, factor: int) -> int:
    """The most coarse cells a ``size``-pixel span can touch, whatever its offset."""
    return (size + factor - 2) // factor + 1


@dataclass
class TrainingArrays:
    """The cube's training data as arrays (see the module notes).

    ``target`` (len(years), H, W) uint8; ``static`` (S, H, W) float32 as stored, with
    ``static_mean`` / ``static_std`` (S,); ``cells`` (len(years), V, H / factor,
    W / factor) float32, the coarse cells of each year under its scenario
    (``scenarios[i]``)."""

    years: list[int]
    scenarios: list[str]
    factor: int
    target: np.ndarray
    static: np.ndarray
    static_mean: np.ndarray
    static_std: np.ndarray
    cells: np.ndarray
    # (len(years), 2, G, H / factor, W / factor) float32: the demand channels of each
    # year with the prior of the year before (0) or after (1), when the model has them
    # (:func:`ai4land.predict.demand.training_demand`; set by the training loop)
    demand: np.ndarray | None = None

    def __post_init__(self):
        self._year_index = {y: i for i, y in enumerate(self.years)}

    @property
    def n_demand(self) -> int:
        """How many demand channels follow the coarse channels (0: none)."""
        return 0 if self.demand is None else self.demand.shape[2]

    def year_index(self, year: int) -> int:
        try:
            return self._year_index[year]
        except KeyError:
            raise InputDataError(f"training arrays hold years {self.years}, not {year}") from None

    def target_window(self, year: int, window: Window) -> np.ndarray:
        return self.target[(self.year_index(year), *window.slices)]

    def static_window(self, window: Window) -> np.ndarray:
        return self.static[(slice(None), *window.slices)]

    def ring_window(self, year: int, window: Window, out: np.ndarray) -> None:
        """Fill ``out`` (V, m + 2, n + 2) with the coarse variables of the cells of
        :meth:`cells_window` and a ring of their neighbours (past the grid: its nearest
        cell), for the smooth coarse channels."""
        rows, cols = window.coarse_slices(self.factor)
        cells = self.cells[self.year_index(year)]
        r = np.clip(np.arange(rows.start - 1, rows.start - 1 + out.shape[1]), 0,
                    cells.shape[1] - 1)
        c = np.clip(np.arange(cols.start - 1, cols.start - 1 + out.shape[2]), 0,
                    cells.shape[2] - 1)
        out[...] = cells[:, r[:, None], c[None, :]]

    def cells_window(self, year: int, window: Window, out: np.ndarray,
                     direction: int | None = None) -> tuple[int, int]:
        """Fill ``out`` (V [+ G], m, n) with the cells under ``window`` from the one
        holding its first pixel (0 past the grid's last cell), then the demand channels
        of ``direction`` when the arrays have them (0 for ``None``: no prior); returns
        the window's pixel offset (row, col) inside that first cell."""
        rows, cols = window.coarse_slices(self.factor)
        i = self.year_index(year)
        cells = self.cells[i, :, rows, cols]
        if self.demand is not None:
            demand = (np.zeros_like(self.demand[i, 0, :, rows, cols]) if direction is None
                      else self.demand[i, 0 if direction > 0 else 1, :, rows, cols])
            cells = np.concatenate([cells, demand])
        out[:, : cells.shape[1], : cells.shape[2]] = cells
        out[:, cells.shape[1]:] = 0.0
        out[:, :, cells.shape[2]:] = 0.0
        return window.row % self.factor, window.col % self.factor

    @classmethod
    def from_cube(cls, cube: Cube, years: list[int], *, directory: str | Path | None = None,
                  write: bool = True) -> TrainingArrays:
        """The arrays of ``years`` (each under ``cube.scenario_for_year``): in memory, or
        memory-mapped from ``directory`` (written first when missing or when the cube
        changed; ``write=False`` only opens them, for ranks waiting on the writer)."""
        years = sorted(set(int(y) for y in years))
        scenarios = [cube.scenario_for_year(y) for y in years]
        names = cube.static_names
        mean = np.asarray([float(cube.static[n].attrs["mean"]) for n in names], dtype="float64")
        std = np.asarray([float(cube.static[n].attrs["std"]) for n in names], dtype="float64")
        height, width = cube.fine_grid.shape
        coarse_shape = (len(cube.coarse_channel_names), -(-height // cube.factor),
                        -(-width // cube.factor))
        shapes = {"target": ((len(years), height, width), "uint8"),
                  "static": ((len(names), height, width), "float32"),
                  "cells": ((len(years), *coarse_shape), "float32")}
        if directory is None:
            arrays = {key: np.empty(shape, dtype=dtype) for key, (shape, dtype) in shapes.items()}
            _fill(cube, arrays, years, scenarios, names)
        else:
            arrays = _cached(cube, Path(directory), shapes, years, scenarios, names, write=write)
        return cls(years=years, scenarios=scenarios, factor=cube.factor, static_mean=mean,
                   static_std=std, **arrays)


def _fill(cube: Cube, arrays: dict, years, scenarios, names) -> None:
    """Copy the cube into ``arrays`` band by band (memory maps stay paged)."""
    height, width = cube.fine_grid.shape
    whole = Window(0, 0, height, width)
    for i, (year, scenario) in enumerate(zip(years, scenarios, strict=True)):
        arrays["cells"][i] = cube.coarse_cells(scenario, year, whole)
    for start in range(0, height, BAND_ROWS):
        band = Window(start, 0, min(BAND_ROWS, height - start), width)
        rows = slice(start, start + band.height)
        for i, year in enumerate(years):
            arrays["target"][i, rows] = cube.target_window(year, band)
        for s, name in enumerate(names):
            arrays["static"][s, rows] = cube.static_values(name, band)


def _stamp(path: Path) -> list:
    """What identifies a store's version: its directory and metadata file's times."""
    stamp = []
    for p in (path, path / "zarr.json"):
        try:
            st = p.stat()
            stamp.append([str(p), st.st_mtime_ns, st.st_size, st.st_ino])
        except FileNotFoundError:
            stamp.append([str(p), None])
    return stamp


def _cached(cube: Cube, directory: Path, shapes: dict, years, scenarios, names, *,
            write: bool) -> dict:
    sources = [cube.paths.target, cube.paths.static,
               *sorted({cube.paths.coarse(s) for s in scenarios})]
    meta = {"format": CACHE_FORMAT, "years": years, "scenarios": scenarios, "static": names,
            "shapes": {k: [list(shape), dtype] for k, (shape, dtype) in shapes.items()},
            "sources": [_stamp(Path(p)) for p in sources]}
    meta_path = directory / "meta.json"
    current = meta_path.exists() and json.loads(meta_path.read_text()) == meta
    if not current:
        if not write:
            raise InputDataError(f"{directory}: no training arrays of this cube; the writing "
                                 "rank did not write them")
        # unique names: writers of several nodes may share the directory
        temporary = {key: directory / f".{key}.{uuid.uuid4().hex}.npy" for key in shapes}
        try:
            directory.mkdir(parents=True, exist_ok=True)
            meta_path.unlink(missing_ok=True)  # stale from here until the new files are in
            arrays = {key: np.lib.format.open_memmap(temporary[key], mode="w+", dtype=dtype,
                                                     shape=shape)
                      for key, (shape, dtype) in shapes.items()}
            _fill(cube, arrays, years, scenarios, names)
            for key, array in arrays.items():
                array.flush()
                os.replace(temporary[key], directory / f"{key}.npy")
        except OSError as exc:
            raise OutputError(f"{directory}: cannot write the training arrays ({exc.strerror}); "
                              "free space there or set train.cache_dir elsewhere") from None
        finally:
            for path in temporary.values():
                with contextlib.suppress(OSError):
                    path.unlink()
        with atomic_path(meta_path) as tmp:
            tmp.write_text(json.dumps(meta))
    return {key: np.load(directory / f"{key}.npy", mmap_mode="r") for key in shapes}
