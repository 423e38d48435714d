"""The analysis-ready cube under ``paths.cube`` (written by ``ai4land prepare``).

Layout::

    grids.json              {"fine": Grid, "coarse": Grid, "factor": int}
    target.zarr             lulc (year, lat, lon) uint8, chunks (1, 256, 256)
    static.zarr             one float32 (lat, lon) variable per static feature, with
                            attrs mean/std; land_mask (lat, lon) uint8 (1 = not ocean)
    coarse/{scenario}.zarr  coarse fractions (year, lat, lon) float32 at coarse
                            resolution, NaN where the source holds its fill value;
                            the water fraction (lat, lon) float32

Coarse data stay at coarse resolution on disk; ``Cube.coarse_window`` upsamples the
cells under a window on the fly.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np
import xarray as xr

from ai4land.errors import InputDataError
from ai4land.grid import Grid, Window
from ai4land.io.chunks import ChunkReader

TARGET_VARIABLE = "lulc"
LAND_MASK = "land_mask"
TILE_CHUNK = 256


class CubePaths:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def grids(self) -> Path:
        return self.root / "grids.json"

    @property
    def target(self) -> Path:
        return self.root / "target.zarr"

    @property
    def static(self) -> Path:
        return self.root / "static.zarr"

    def coarse(self, scenario: str) -> Path:
        return self.root / "coarse" / f"{scenario}.zarr"


def _open_zarr(path: Path) -> xr.Dataset:
    if not path.exists():
        raise InputDataError(f"{path}: not found; run `ai4land prepare` first")
    return xr.open_zarr(path, chunks=None)


def _direct_array(path: Path, variable: xr.DataArray):
    """The zarr array behind ``variable`` for windowed reads without xarray's indexing
    layers (3-4x faster for a band, and less time holding the GIL), when xarray's
    decoding would not change a value: no scale or offset, no fill value other than
    NaN turned into NaN; read from its chunk files where :class:`ChunkReader` can (2x
    less CPU again). None otherwise (read through xarray then)."""
    import zarr

    encoding = variable.encoding
    fill = encoding.get("_FillValue", variable.attrs.get("_FillValue"))
    nan_fill = isinstance(fill, float | np.floating) and np.isnan(fill)
    if ({"scale_factor", "add_offset", "missing_value"} & (set(encoding) | set(variable.attrs))
            or (fill is not None and not (nan_fill and variable.dtype.kind == "f"))):
        return None
    array = zarr.open_group(str(path), mode="r")[variable.name]
    if array.dtype != variable.dtype or array.shape != variable.shape:
        return None
    return ChunkReader.of(array) or array


class Cube:
    """Read access to the cube, window by window."""

    def __init__(
        self, root: str | Path, *, coarse_variables: list[str], water_variable: str | None
    ):
        self.paths = CubePaths(root)
        self.coarse_variables = list(coarse_variables)
        self.water_variable = water_variable
        if not self.paths.grids.exists():
            raise InputDataError(f"{self.paths.grids}: not found; run `ai4land prepare` first")
        grids = json.loads(self.paths.grids.read_text())
        self.fine_grid = Grid.from_dict(grids["fine"])
        self.coarse_grid = Grid.from_dict(grids["coarse"])
        self.factor = int(grids["factor"])
        self._coarse: dict[str, xr.Dataset] = {}

    @classmethod
    def from_config(cls, config) -> Cube:
        coarse = config.datasets.coarse
        return cls(config.paths.cube, coarse_variables=coarse.variables,
                   water_variable=coarse.water_variable)

    # --- target maps ---------------------------------------------------------------

    @cached_property
    def target(self) -> xr.DataArray:
        return _open_zarr(self.paths.target)[TARGET_VARIABLE]

    @cached_property
    def target_years(self) -> list[int]:
        return [int(y) for y in self.target["year"].values]

    def target_window(self, year: int, window: Window) -> np.ndarray:
        years = self.target_years
        if year not in years:
            raise InputDataError(f"{self.paths.target}: no map for year {year}")
        rows, cols = window.slices
        index = years.index(year)
        if self._target_array is not None:
            return self._target_array[index, rows, cols]
        return np.asarray(self.target.isel(year=index, lat=rows, lon=cols).values)

    @cached_property
    def _target_array(self):
        return _direct_array(self.paths.target, self.target)

    # --- static features -----------------------------------------------------------

    @cached_property
    def static(self) -> xr.Dataset:
        return _open_zarr(self.paths.static)

    @property
    def static_names(self) -> list[str]:
        return [name for name in self.static.data_vars if name != LAND_MASK]

    def static_window(self, window: Window) -> np.ndarray:
        """Normalised static features, (S, h, w) float32, NaN replaced by 0 (the mean)."""
        layers = []
        for name in self.static_names:
            var = self.static[name]
            values = np.asarray(self._static_window(name, window), dtype="float32")
            values = (values - float(var.attrs["mean"])) / float(var.attrs["std"])
            layers.append(np.nan_to_num(values, nan=0.0))
        if not layers:
            return np.zeros((0, window.height, window.width), dtype="float32")
        return np.stack(layers)

    def land_mask_window(self, window: Window) -> np.ndarray:
        return np.asarray(self._static_window(LAND_MASK, window)).astype(bool)

    def static_values(self, name: str, window: Window) -> np.ndarray:
        """One static layer's values as stored (not normalised, NaN kept)."""
        return np.asarray(self._static_window(name, window))

    @cached_property
    def _static_arrays(self) -> dict:
        return {name: _direct_array(self.paths.static, self.static[name])
                for name in self.static.data_vars}

    def _static_window(self, name: str, window: Window) -> np.ndarray:
        rows, cols = window.slices
        array = self._static_arrays[name]
        if array is not None:
            return array[rows, cols]
        return self.static[name].isel(lat=rows, lon=cols).values

    # --- coarse fractions ----------------------------------------------------------

    def coarse(self, scenario: str) -> xr.Dataset:
        if scenario not in self._coarse:
            self._coarse[scenario] = _open_zarr(self.paths.coarse(scenario))
        return self._coarse[scenario]

    def coarse_years(self, scenario: str) -> list[int]:
        return [int(y) for y in self.coarse(scenario)["year"].values]

    def scenario_for_year(self, year: int, *, preferred: str = "historical") -> str:
        """The scenario whose coarse file holds ``year``: ``preferred`` if it can."""
        if year in self.coarse_years(preferred):
            return preferred
        for path in sorted((self.paths.root / "coarse").glob("*.zarr")):
            if year in self.coarse_years(path.stem):
                return path.stem
        raise InputDataError(f"{self.paths.root / 'coarse'}: no coarse scenario holds year {year}")

    @property
    def coarse_channel_names(self) -> list[str]:
        return self.coarse_variables + ([self.water_variable] if self.water_variable else [])

    def coarse_cells(self, scenario: str, year: int, window: Window) -> np.ndarray:
        """Coarse values of the cells under ``window``: (V, cells_y, cells_x), NaN kept."""
        ds = self.coarse(scenario)
        years = self.coarse_years(scenario)
        if year not in years:
            raise InputDataError(
                f"{self.paths.coarse(scenario)}: year {year} missing "
                f"(holds {years[0]}-{years[-1]})"
            )
        rows, cols = window.coarse_slices(self.factor)
        index = years.index(year)
        layers = [
            np.asarray(ds[name].isel(year=index, lat=rows, lon=cols).values, dtype="float32")
            for name in self.coarse_variables
        ]
        if self.water_variable:
            layers.append(
                np.asarray(ds[self.water_variable].isel(lat=rows, lon=cols).values, dtype="float32")
            )
        return np.stack(layers)

    def coarse_window(self, scenario: str, year: int, window: Window) -> np.ndarray:
        """Coarse values upsampled (nearest) to the window's fine pixels: (V, h, w)."""
        cells = self.coarse_cells(scenario, year, window)
        return upsample_cells(cells, factor=self.factor, window=window)


def upsample_cells(cells: np.ndarray, *, factor: int, window: Window) -> np.ndarray:
    """Repeat coarse cells to fine pixels and crop to the window: (..., h, w).

    ``cells`` start at the cell holding the window's first pixel.
    """
    rows, cols = cell_indices(window, factor)
    return np.take(np.take(cells, rows, axis=-2), cols, axis=-1)


def cell_indices(window: Window, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """The coarse-cell row of each pixel row and column of each pixel column of
    ``window``, counted from the cell holding its first pixel."""
    rows = (window.row + np.arange(window.height)) // factor - window.row // factor
    cols = (window.col + np.arange(window.width)) // factor - window.col // factor
    return rows, cols
