"""A tiny analysis-ready cube for tests, written in the layout of ``ai4land.io.cube``.

``write_tiny_cube(root)`` writes::

    grids.json              {"fine": Grid, "coarse": Grid, "factor": int}
    target.zarr             lulc (year, lat, lon) uint8, chunks (1, 256, 256)
    static.zarr             elevation, clay float32 (lat, lon) with attrs mean/std;
                            land_mask uint8 (1 = not ocean)
    coarse/{scenario}.zarr  the LUH2 fraction variables (year, lat, lon) float32 at
                            coarse resolution (NaN where a cell holds no land) and the
                            water fraction ``icwtr`` (lat, lon)

The fine map is spatially smooth (classes thresholded from smooth random fields) and
changes a little every year (cropland and urban expand), so a small U-Net can learn it.
Coarse fractions are the aggregation of the fine map per coarse cell, split over the
LUH2 variables by the default ``datasets.coarse.groups`` of the config. Everything is a
pure function of the arguments.

``tiny_config(root, ...)`` returns a validated ``Config`` that points at such a cube.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from ai4land.config import LUH2_FRACTIONS, parse_config
from ai4land.grid import Grid

WEST, NORTH, RES = 4.0, 48.0, 0.01
STATIC_NAMES = ("elevation", "clay")

# Where each class's coarse fraction goes (one LUH2 variable per class).
CLASS_VARIABLE = {11: "urban", 22: "c3ann", 33: "pastr", 44: "primf", 55: "primn", 66: "secdn"}


def _smooth_field(rng: np.random.Generator, size: int, scale: int) -> np.ndarray:
    """A smooth random field in [0, 1]: coarse noise, bilinearly upsampled."""
    n = max(2, size // scale + 2)
    coarse = rng.random((n, n))
    pos = np.linspace(0, n - 1.001, size)
    i = pos.astype(int)
    f = pos - i
    rows = coarse[i] * (1 - f)[:, None] + coarse[i + 1] * f[:, None]
    field = rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]
    field -= field.min()
    return field / max(field.max(), 1e-9)


def _fine_maps(size: int, years: list[int], seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[0:size, 0:size] / size
    elevation = _smooth_field(rng, size, 16) * 0.7 + 0.3 * rr  # higher to the south
    clay = _smooth_field(rng, size, 24)
    wet = _smooth_field(rng, size, 12)
    growth = _smooth_field(rng, size, 10)
    # Ocean in the north-west corner (a diagonal coast), so some blocks are all ocean.
    ocean = (rr + cc + 0.15 * (wet - 0.5)) < 0.45
    land_mask = ~ocean

    maps = np.zeros((len(years), size, size), dtype="uint8")
    for t, _year in enumerate(years):
        progress = t / max(len(years) - 1, 1)
        codes = np.full((size, size), 55, dtype="uint8")
        codes[elevation > 0.75] = 66
        codes[(elevation <= 0.75) & (wet > 0.55)] = 44
        codes[(elevation <= 0.6) & (clay > 0.6)] = 33
        crop = (elevation < 0.55) & (clay < 0.45) & (growth < 0.45 + 0.2 * progress)
        codes[crop] = 22
        codes[(growth < 0.08 + 0.06 * progress) & (elevation < 0.7)] = 11
        codes[(wet > 0.93)] = 77
        codes[ocean] = 0
        maps[t] = codes
    # A few no-data pixels on land in every year.
    nodata = rng.random((size, size)) < 0.002
    maps[:, nodata & land_mask] = 99
    return maps, land_mask, {"elevation": elevation, "clay": clay}


def _coords(grid: Grid) -> dict:
    return {"lat": grid.lat.astype("float64"), "lon": grid.lon.astype("float64")}


def write_tiny_cube(
    root: Path,
    *,
    size: int = 96,
    factor: int = 8,
    years=range(1960, 1966),
    scenarios=("historical",),
    seed: int = 0,
) -> None:
    """Write a ``size`` x ``size`` cube with ``factor``-pixel coarse cells under ``root``."""
    with warnings.catch_warnings():
        # Consolidated metadata is not (yet) part of the Zarr v3 spec; xarray still uses it.
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        _write(Path(root), size=size, factor=factor, years=years, scenarios=scenarios, seed=seed)


def _write(root: Path, *, size: int, factor: int, years, scenarios, seed: int) -> None:
    if size % factor:
        raise ValueError(f"size {size} must be a multiple of factor {factor}")
    years = [int(y) for y in years]
    root.mkdir(parents=True, exist_ok=True)
    fine = Grid(west=WEST, north=NORTH, res=RES, width=size, height=size)
    coarse = fine.coarsened(factor)
    (root / "grids.json").write_text(
        json.dumps({"fine": fine.to_dict(), "coarse": coarse.to_dict(), "factor": factor})
    )

    maps, land_mask, static = _fine_maps(size, years, seed)

    target = xr.Dataset(
        {"lulc": (("year", "lat", "lon"), maps)},
        coords={"year": np.asarray(years, dtype="int64"), **_coords(fine)},
    )
    target["lulc"].encoding["chunks"] = (1, 256, 256)
    target.to_zarr(root / "target.zarr", mode="w", consolidated=True)

    static_vars = {}
    for name in STATIC_NAMES:
        values = static[name].astype("float32") * 100.0
        values[~land_mask] = np.nan
        static_vars[name] = xr.DataArray(
            values, dims=("lat", "lon"),
            attrs={"mean": float(np.nanmean(values)), "std": float(np.nanstd(values))},
        )
    static_vars["land_mask"] = xr.DataArray(land_mask.astype("uint8"), dims=("lat", "lon"))
    xr.Dataset(static_vars, coords=_coords(fine)).to_zarr(
        root / "static.zarr", mode="w", consolidated=True
    )

    cells = size // factor
    blocks = maps.reshape(len(years), cells, factor, cells, factor)
    area = float(factor * factor)
    land_cells = land_mask.reshape(cells, factor, cells, factor).any(axis=(1, 3))
    fractions = {
        name: np.zeros((len(years), cells, cells), dtype="float32") for name in LUH2_FRACTIONS
    }
    for code, name in CLASS_VARIABLE.items():
        fractions[name] += (blocks == code).sum(axis=(2, 4)) / area
    for values in fractions.values():
        values[:, ~land_cells] = np.nan
    water = ((blocks[0] == 77).sum(axis=(1, 3)) / area).astype("float32")
    for scenario in scenarios:
        data = {name: (("year", "lat", "lon"), values) for name, values in fractions.items()}
        data["icwtr"] = (("lat", "lon"), water)
        path = root / "coarse" / f"{scenario}.zarr"
        path.parent.mkdir(parents=True, exist_ok=True)
        xr.Dataset(
            data, coords={"year": np.asarray(years, dtype="int64"), **_coords(coarse)}
        ).to_zarr(path, mode="w", consolidated=True)


def rewrite_coarse_years(root: Path, scenario: str, years: list[int]) -> None:
    """Give ``scenario`` of the cube at ``root`` the coarse years ``years`` (values copied
    from the nearest year it holds)."""
    path = root / "coarse" / f"{scenario}.zarr"
    ds = xr.open_zarr(path, chunks=None).load()
    have = [int(y) for y in ds["year"].values]
    pick = [have.index(min(max(y, have[0]), have[-1])) for y in years]
    new = ds.isel(year=pick).assign_coords(year=np.asarray(years, dtype="int64"))
    for var in new.variables.values():
        var.encoding = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        new.to_zarr(path, mode="w", consolidated=True)


def tiny_config(
    cube_root: Path,
    *,
    results: Path | None = None,
    years=range(1960, 1966),
    train: dict | None = None,
    split: dict | None = None,
    seed: int = 0,
):
    """A validated ``Config`` for a cube written by ``write_tiny_cube`` at ``cube_root``."""
    years = [int(y) for y in years]
    first, last = years[0], years[-1]
    n_test = max(1, len(years) // 3)
    data = {
        "run_name": "tiny",
        "seed": seed,
        "paths": {
            "raw": str(Path(cube_root).parent / "raw"),
            "cube": str(cube_root),
            "results": str(results or Path(cube_root).parent / "results"),
        },
        "datasets": {
            "coarse": {"historical": "unused.nc"},
            "fine": {"pattern": "unused_{year}.tif", "years": [first, last]},
        },
        "years": {"train": [first, last - n_test], "test": [last - n_test + 1, last]},
        "split": {"block_size": 16, "n_test_blocks": 2, "n_val_blocks": 2, "buffer_blocks": 1,
                  **(split or {})},
        "train": {"epochs": 2, "steps_per_epoch": 4, "batch_size": 4, "tile_size": 32,
                  "base_channels": 8, "depth": 2, "checkpoint_every": 2, "val_batches": 2,
                  **(train or {})},
    }
    return parse_config(data, source="tiny_config")
