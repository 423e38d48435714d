"""Helpers shared by the prepare steps: grids.json, Zarr store creation, the land mask."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
import zarr
from tqdm.auto import tqdm

from ai4land.errors import InputDataError
from ai4land.grid import Grid
from ai4land.io.atomic import atomic_path
from ai4land.io.cube import TARGET_VARIABLE, TILE_CHUNK, CubePaths

# Rows processed at once: a multiple of the tile chunk, so each write fills whole chunks.
STRIP_ROWS = 4 * TILE_CHUNK


def cube_paths(config) -> CubePaths:
    return CubePaths(config.paths.cube)


def progress_bar(iterable: Iterable, *, desc: str, total: int | None = None, enabled: bool = True):
    return tqdm(iterable, desc=desc, total=total, disable=not enabled, unit="step", leave=False)


def read_grids(config) -> tuple[Grid, Grid, int]:
    path = cube_paths(config).grids
    if not path.is_file():
        raise InputDataError(f"{path}: not found; run `ai4land prepare target` first")
    try:
        data = json.loads(path.read_text())
        return Grid.from_dict(data["fine"]), Grid.from_dict(data["coarse"]), int(data["factor"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputDataError(f"{path}: is not a valid grids file ({exc}); rerun `ai4land prepare target`") from None


def write_grids(path: Path, *, fine: Grid, coarse: Grid, factor: int) -> None:
    text = json.dumps({"fine": fine.to_dict(), "coarse": coarse.to_dict(), "factor": factor}, indent=2)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def latlon_coords(grid: Grid) -> dict:
    return {
        "lat": ("lat", grid.lat, {"standard_name": "latitude", "long_name": "latitude",
                                  "units": "degrees_north", "axis": "Y"}),
        "lon": ("lon", grid.lon, {"standard_name": "longitude", "long_name": "longitude",
                                  "units": "degrees_east", "axis": "X"}),
    }


def create_store(path: Path, variables: dict, *, coords: dict, attrs: dict | None = None) -> zarr.Group:
    """Write the metadata of a Zarr store whose arrays are filled later, chunk-aligned.

    ``variables`` maps name -> (dims, shape, dtype, chunks, attrs). Integer variables get
    no fill value (0 is a valid class code); float variables use NaN.
    """
    data_vars = {}
    encoding = {}
    for name, (dims, shape, dtype, chunks, var_attrs) in variables.items():
        data_vars[name] = (dims, da.zeros(shape, dtype=dtype, chunks=chunks), var_attrs)
        fill = np.nan if np.dtype(dtype).kind == "f" else None
        encoding[name] = {"chunks": chunks, "_FillValue": fill}
    template = xr.Dataset(data_vars, coords=coords, attrs=attrs or {})
    template.to_zarr(path, mode="w", compute=False, consolidated=False, encoding=encoding)
    return zarr.open_group(path, mode="r+")


def finish_store(path: Path) -> None:
    """Consolidate metadata (after all attrs are final) so readers open the store quickly."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        zarr.consolidate_metadata(path)


def open_store(path: Path) -> xr.Dataset:
    if not path.exists():
        raise InputDataError(f"{path}: not found; run the earlier `ai4land prepare` steps first")
    return xr.open_zarr(path, chunks=None)


def land_mask_from_target(config, grid: Grid, *, progress: bool = True) -> np.ndarray:
    """1 where a pixel is not ocean in any observed year of target.zarr (bool, fine grid)."""
    paths = cube_paths(config)
    lulc = open_store(paths.target)[TARGET_VARIABLE]
    if (lulc.sizes["lat"], lulc.sizes["lon"]) != grid.shape:
        raise InputDataError(f"{paths.target}: shape does not match grids.json; rerun `ai4land prepare target`")
    ocean = config.classes.ocean
    land = np.zeros(grid.shape, dtype=bool)
    strips = range(0, grid.height, STRIP_ROWS)
    for row0 in progress_bar(strips, desc="land mask", enabled=progress):
        rows = slice(row0, min(row0 + STRIP_ROWS, grid.height))
        for index in range(lulc.sizes["year"]):
            land[rows] |= np.asarray(lulc.isel(year=index, lat=rows).values) != ocean
    return land


def land_mask(config, grid: Grid, *, progress: bool = True) -> np.ndarray:
    """The land mask from static.zarr if written, else computed from target.zarr."""
    paths = cube_paths(config)
    if paths.static.exists():
        ds = open_store(paths.static)
        if "land_mask" in ds and ds["land_mask"].shape == grid.shape:
            return np.asarray(ds["land_mask"].values).astype(bool)
    return land_mask_from_target(config, grid, progress=progress)
