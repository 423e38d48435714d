"""target_cube_throughput: ``prepare_target`` vs a plain rasterio-read + Zarr-write loop.

Input: N years of generated 2000 x 2000 uint8 class maps (0.01 degree, DEFLATE GeoTIFFs)
inside one zip, read through ``/vsizip`` like the HILDA+ archive. Ours validates grids
and codes, maps codes and writes ``target.zarr`` (+ grids.json); the reference reads each
band and writes it into a Zarr array of the same shape, chunks and default compressor.

The input writers here are shared by the other prepare benchmarks.
"""

from __future__ import annotations

import itertools
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
import zarr

from ai4land.config import parse_config
from ai4land.grid import Grid
from ai4land.io.cube import TILE_CHUNK
from ai4land.prepare import prepare_target
from benchmarks.common import best_of, write_result

CODES = np.array([0, 11, 22, 33, 44, 55, 66, 77], dtype="uint8")
PATTERN = "maps/lulc_{year}.tif"
BLOCK = 40  # fine pixels per patch of one class


def codes_strip(grid: Grid, row0: int, row1: int, *, seed: int) -> np.ndarray:
    """Rows ``row0:row1`` of a patchy class map (patches of BLOCK pixels, 2 % speckle)."""
    blocks = np.random.default_rng(seed).integers(0, len(CODES), (grid.height // BLOCK + 1,
                                                                  grid.width // BLOCK + 1))
    rows = np.arange(row0, row1) // BLOCK
    cols = np.arange(grid.width) // BLOCK
    codes = CODES[blocks[rows[:, None], cols[None, :]]]
    rng = np.random.default_rng([seed, row0])
    speckle = rng.random(codes.shape) < 0.02
    codes[speckle] = CODES[rng.integers(1, len(CODES), int(speckle.sum()))]
    return codes


def write_map(path: Path, grid: Grid, *, seed: int, strip_rows: int = 1024) -> Path:
    """A uint8 DEFLATE GeoTIFF of ``codes_strip``, written strip by strip (bounded memory)."""
    profile = {"driver": "GTiff", "width": grid.width, "height": grid.height, "count": 1,
               "dtype": "uint8", "crs": "EPSG:4326", "transform": grid.transform, "nodata": 99,
               "compress": "deflate", "zlevel": 1, "tiled": True, "blockxsize": 512,
               "blockysize": 512, "BIGTIFF": "IF_SAFER"}
    with rasterio.open(path, "w", **profile) as dst:
        for row0 in range(0, grid.height, strip_rows):
            row1 = min(row0 + strip_rows, grid.height)
            window = rasterio.windows.Window(0, row0, grid.width, row1 - row0)
            dst.write(codes_strip(grid, row0, row1, seed=seed), 1, window=window)
    return path


def write_coarse_file(path: Path, grid: Grid, *, years: list[int], values=None) -> Path:
    """An LUH-like states file on ``grid``: 12 fractions (year, lat, lon), 1e20 fill."""
    from ai4land.config import LUH2_FRACTIONS

    data = {}
    for index, name in enumerate(LUH2_FRACTIONS):
        field = (np.full((len(years), *grid.shape), 0.08, dtype="float32") if values is None
                 else values(index, years))
        data[name] = (("time", "lat", "lon"), field, {"_Fillvalue": 1e20, "units": "1"})
    ds = xr.Dataset(data, coords={
        "time": ("time", np.asarray(years, "float64") - 850, {"units": "years since 850-01-01"}),
        "lat": ("lat", grid.lat, {"units": "degrees_north"}),
        "lon": ("lon", grid.lon, {"units": "degrees_east"}),
    })
    ds.to_netcdf(path, encoding={name: {"_FillValue": None} for name in data})
    return path


def bench_config(root: Path, *, years: list[int], archive: str | None, pattern: str,
                 coarse: Path, static: list | None = None):
    """A config for the generated inputs: no water variable, one train == test year range."""
    return parse_config(
        {
            "paths": {
                "raw": str(root / "raw"),
                "cube": str(root / "cube"),
                "results": str(root / "results"),
            },
            "datasets": {
                "coarse": {
                    "historical": str(coarse),
                    "water_variable": None,
                    "groups": {"all": {"variables": ["primf"], "classes": [44]}},
                },
                "fine": {"archive": archive, "pattern": pattern, "years": [years[0], years[-1]]},
                "static": static or [],
            },
            "years": {"train": [years[0], years[-1]], "test": [years[0], years[-1]]},
        },
        source="benchmark",
    )


def reference_loop(archive: Path, years: list[int], grid: Grid, out: Path) -> None:
    """The plain loop: read each year's band, write it into a chunked Zarr array."""
    array = zarr.create_array(store=str(out), shape=(len(years), *grid.shape), dtype="uint8",
                              chunks=(1, TILE_CHUNK, TILE_CHUNK), fill_value=0, overwrite=True)
    for index, year in enumerate(years):
        with rasterio.open(f"/vsizip/{archive}/{PATTERN.replace('{year}', str(year))}") as src:
            array[index] = src.read(1)


def main(n_years: int = 20, size: int = 2000) -> dict:
    years = list(range(2000, 2000 + n_years))
    fine = Grid(west=0.0, north=50.0, res=0.01, width=size, height=size)
    with tempfile.TemporaryDirectory(prefix="bench_target_") as tmp:
        root = Path(tmp)
        raw = root / "raw"
        raw.mkdir()
        archive = raw / "maps.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for year in years:
                tif = write_map(root / f"{year}.tif", fine, seed=year)
                zf.write(tif, PATTERN.replace("{year}", str(year)))
                tif.unlink()
        coarse = write_coarse_file(raw / "states.nc", fine.coarsened(25), years=years)
        # Every run writes a fresh store, so neither side pays for deleting the previous one.
        runs = itertools.count()

        def run_ours() -> Path:
            run = root / f"ours{next(runs)}"
            config = bench_config(run, years=years, archive=str(archive), pattern=PATTERN,
                                  coarse=coarse)
            return prepare_target(config, progress=False)

        def run_reference() -> Path:
            out = root / f"reference{next(runs)}.zarr"
            reference_loop(archive, years, fine, out)
            return out

        ours = best_of(run_ours)
        reference = best_of(run_reference)
        written = xr.open_zarr(run_ours(), chunks=None)["lulc"]
        same = bool(np.array_equal(written.isel(year=-1).values,
                                   zarr.open_array(str(run_reference()))[-1]))

    mpix = n_years * size * size / 1e6
    ours_rate, ref_rate = mpix / ours, mpix / reference
    return write_result(
        "target_cube_throughput",
        metric="mpix_per_s",
        ours=ours_rate,
        reference=ref_rate,
        reference_name="rasterio read + zarr write loop",
        target="report the ratio (ours validates and maps codes; the loop does not)",
        meets_target=None,
        higher_is_better=True,
        params={
            "years": n_years,
            "size": [size, size],
            "input": "DEFLATE GeoTIFFs in a zip (/vsizip)",
            "chunks": [1, TILE_CHUNK, TILE_CHUNK],
            "ours_s": round(ours, 3),
            "reference_s": round(reference, 3),
            "identical_output": same,
            "timing": "best of 3",
        },
    )


if __name__ == "__main__":
    main()
