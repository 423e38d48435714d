"""coarse_storage: disk size of the coarse cube vs the same data upsampled to the fine grid.

``prepare_coarse`` keeps the coarse fractions at coarse resolution (the loader upsamples
on the fly). The reference writes the very same values repeated onto the fine grid
(nearest, as the loader does) into a Zarr store with the same chunks, dtype and default
compressor. Input: 12 LUH2-style fractions x 5 years on 40 x 40 cells of 0.25 degree
(factor 25: 1000 x 1000 fine pixels at 0.01 degree).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

from ai4land.grid import Grid
from ai4land.io.cube import TILE_CHUNK
from ai4land.prepare import prepare_coarse, prepare_target
from benchmarks.bench_target_cube import bench_config, write_coarse_file, write_map
from benchmarks.common import write_result

FINE = Grid(west=0.0, north=50.0, res=0.01, width=1000, height=1000)
FACTOR = 25
YEARS = list(range(2000, 2005))


def fractions(index: int, years: list[int]) -> np.ndarray:
    """Smooth fields in [0, 0.08] per variable and year (12 of them sum to <= 0.96)."""
    coarse = FINE.coarsened(FACTOR)
    lat, lon = np.meshgrid(coarse.lat, coarse.lon, indexing="ij")
    out = [
        0.04 + 0.04 * np.sin(lat * (index + 1) / 3 + lon / 5 + 0.1 * (y - years[0])) for y in years
    ]
    return np.stack(out).astype("float32")


def size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_coarse_storage_") as tmp:
        root = Path(tmp)
        for year in YEARS:
            write_map(root / f"map_{year}.tif", FINE, seed=year)
        coarse_file = write_coarse_file(root / "states.nc", FINE.coarsened(FACTOR), years=YEARS,
                                        values=fractions)
        config = bench_config(root, years=YEARS, archive=None, pattern=str(root / "map_{year}.tif"),
                              coarse=coarse_file)
        prepare_target(config, progress=False)
        store = prepare_coarse(config, scenario="historical", progress=False)

        coarse = xr.open_zarr(store, chunks=None)
        upsampled = xr.Dataset(
            {name: (("year", "lat", "lon"),
                    np.repeat(np.repeat(coarse[name].values, FACTOR, axis=1), FACTOR, axis=2))
             for name in coarse.data_vars},
            coords={"year": coarse["year"].values, "lat": FINE.lat, "lon": FINE.lon},
        )
        fine_store = root / "upsampled.zarr"
        upsampled.to_zarr(fine_store, consolidated=False,
                          encoding={name: {"chunks": (1, TILE_CHUNK, TILE_CHUNK)}
                                    for name in upsampled.data_vars})
        ours, reference = size_mib(store), size_mib(fine_store)
        variables = len(coarse.data_vars)
    return write_result(
        "coarse_storage", metric="mib", ours=ours, reference=reference,
        reference_name="same values upsampled to the fine grid (Zarr, same chunks/compressor)",
        target="report the ratio (smaller is better)", meets_target=None,
        params={"variables": variables, "years": len(YEARS), "coarse_cells": [40, 40],
                "factor": FACTOR, "fine_pixels": list(FINE.shape), "dtype": "float32",
                "chunks": [1, TILE_CHUNK, TILE_CHUNK], "compressor": "zarr default (zstd)"},
    )


if __name__ == "__main__":
    main()
