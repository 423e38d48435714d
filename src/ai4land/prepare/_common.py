"""Helpers shared by the prepare steps: grids.json, Zarr store creation, land per coarse cell."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path

import dask.array as da
import numpy as np
import rasterio
import xarray as xr
import zarr
from tqdm.auto import tqdm

from ai4land.errors import InputDataError
from ai4land.grid import Grid
from ai4land.io.atomic import atomic_path
from ai4land.io.cube import TARGET_VARIABLE, TILE_CHUNK, CubePaths

# Rows processed at once: a multiple of the tile chunk, so each write fills whole chunks.
STRIP_ROWS = 4 * TILE_CHUNK
# GDAL's block cache (default 5 % of RAM) would otherwise hold every block read in a
# pass over a global raster; strips are read once, so a small cache loses nothing.
GDAL_CACHE_MB = 256


def cube_paths(config) -> CubePaths:
    return CubePaths(config.paths.cube)


def gdal_env() -> rasterio.Env:
    """The GDAL settings of the prepare steps (bounded block cache)."""
    return rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB)


def progress_bar(iterable: Iterable, *, desc: str, total: int | None = None, enabled: bool = True):
    """A tqdm bar on a terminal; silent when disabled or when stderr is not a TTY (logs, CI)."""
    return tqdm(iterable, desc=desc, total=total, disable=None if enabled else True, unit="step",
                leave=False)


def read_grids(config) -> tuple[Grid, Grid, int]:
    path = cube_paths(config).grids
    if not path.is_file():
        raise InputDataError(f"{path}: not found; run `ai4land prepare target` first")
    try:
        data = json.loads(path.read_text())
        return Grid.from_dict(data["fine"]), Grid.from_dict(data["coarse"]), int(data["factor"])
    except (ValueError, KeyError, TypeError) as exc:
        raise InputDataError(
            f"{path}: is not a valid grids file ({exc}); rerun `ai4land prepare target`"
        ) from None


def write_grids(path: Path, *, fine: Grid, coarse: Grid, factor: int) -> None:
    text = json.dumps(
        {"fine": fine.to_dict(), "coarse": coarse.to_dict(), "factor": factor}, indent=2
    )
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


def latlon_coords(grid: Grid) -> dict:
    return {
        "lat": ("lat", grid.lat, {"standard_name": "latitude", "long_name": "latitude",
                                  "units": "degrees_north", "axis": "Y"}),
        "lon": ("lon", grid.lon, {"standard_name": "longitude", "long_name": "longitude",
                                  "units": "degrees_east", "axis": "X"}),
    }


def create_store(
    path: Path, variables: dict, *, coords: dict, attrs: dict | None = None
) -> zarr.Group:
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


def land_share(config, grid: Grid, factor: int, *, ignore: Iterable[int],
               progress: bool = True) -> np.ndarray:
    """Share of land-use pixels in each coarse cell (float64, coarse shape): pixels whose
    code is not in ``ignore`` (ocean, water, no data: codes that need no land-use data)
    in some observed year of target.zarr.

    The maps are read a strip of whole coarse rows at a time, so memory stays at one
    strip however large the fine grid is.
    """
    lulc = open_store(cube_paths(config).target)[TARGET_VARIABLE]
    if (lulc.sizes["lat"], lulc.sizes["lon"]) != grid.shape:
        raise InputDataError(f"{cube_paths(config).target}: shape does not match grids.json; "
                             "rerun `ai4land prepare target`")
    ignore = np.asarray(sorted(set(ignore)), dtype="uint8")
    height, width = grid.height // factor, grid.width // factor
    share = np.zeros((height, width), dtype="float64")
    cells_per_strip = max(1, STRIP_ROWS // factor)
    strips = range(0, height, cells_per_strip)
    for cell0 in progress_bar(strips, desc="land share", enabled=progress):
        cell1 = min(cell0 + cells_per_strip, height)
        rows = slice(cell0 * factor, cell1 * factor)
        land = np.zeros((rows.stop - rows.start, grid.width), dtype=bool)
        for index in range(lulc.sizes["year"]):
            land |= ~np.isin(np.asarray(lulc.isel(year=index, lat=rows).values), ignore)
        share[cell0:cell1] = land.reshape(cell1 - cell0, factor, width, factor).mean(axis=(1, 3))
    return share
