"""A user's own dataset, prepared through the CLI with nothing but the documented config.

The config is read verbatim from the "An example" section of docs/own-data.md, so the
documented example is the tested one. The generated files differ from LUH2/HILDA+ in
every way the config allows: coarse variables crops/forest/grass/urb on a 0.5 degree
grid stored south-up with longitude 0..360 and time in "days since 1850-01-01" (one
mid-year stamp), plain per-year GeoTIFFs with codes 1..6 and 255, a single observed
year, an elevation raster in EPSG:3035 and a categorical soil raster; coarse/fine
ratios 5 and 20.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
import yaml
from affine import Affine
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

from ai4land.config import load_config
from ai4land.grid import Grid, Window
from ai4land.io.cube import Cube

REPO = Path(__file__).resolve().parents[2]
YEAR = 2010
COARSE_RES = 0.5
# The coarse file is global in longitude and spans 45..55 N; the fine maps cover a
# region across the prime meridian, so 0..360 longitudes must be re-ordered.
COARSE = Grid(west=-180.0, north=55.0, res=COARSE_RES, width=720, height=20)
REGION = (-2.0, 50.0, 2.0, 52.0)  # west, south, east, north: 8 x 4 coarse cells
MAPPING = {1: 22, 2: 44, 3: 55, 4: 11, 5: 66, 6: 0, 255: 99}
SOIL_RES = 0.05


def documented_config() -> dict:
    text = (REPO / "docs" / "own-data.md").read_text()
    section = text.split("## An example", 1)[1]
    block = re.search(r"```yaml\n(.*?)```", section, re.DOTALL)
    assert block, "docs/own-data.md: no yaml block under 'An example'"
    return yaml.safe_load(block.group(1))


def fine_grid(factor: int) -> Grid:
    west, south, east, north = REGION
    res = COARSE_RES / factor
    return Grid(west=west, north=north, res=res, width=round((east - west) / res),
                height=round((north - south) / res))


def user_codes(grid: Grid) -> np.ndarray:
    """Codes 1..5 on land, 6 (sea) in the westernmost coarse column, one 255 (no data)."""
    rng = np.random.default_rng(grid.width)
    codes = rng.integers(1, 6, grid.shape).astype("uint8")
    codes[:, grid.lon < REGION[0] + COARSE_RES] = 6
    codes[3, grid.width // 2] = 255
    return codes


def elevation_field(lon, lat):
    return 100.0 * (lon + 3.0) + 40.0 * (lat - 49.0)


def soil_code(lon, lat):
    col = np.floor((lon + 3.0) / SOIL_RES).astype(int)
    row = np.floor((53.0 - lat) / SOIL_RES).astype(int)
    return (1 + (col // 3 + row // 2) % 3).astype("uint8")


def write_tif(path: Path, data: np.ndarray, *, transform: Affine, crs: str, nodata=None) -> None:
    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
               "dtype": data.dtype.name, "transform": transform, "crs": crs, "nodata": nodata}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def fractions(codes: np.ndarray, factor: int) -> dict[str, np.ndarray]:
    """Coarse fractions of the fine map (north-up region cells), NaN on all-sea cells."""
    h, w = codes.shape[0] // factor, codes.shape[1] // factor
    blocks = codes.reshape(h, factor, w, factor)
    share = {name: np.isin(blocks, values).mean(axis=(1, 3)).astype("float32")
             for name, values in {"crops": [1], "forest": [2], "grass": [3, 5], "urb": [4]}.items()}
    sea = (blocks == 6).all(axis=(1, 3))
    for values in share.values():
        values[sea] = np.nan
    return share


def write_user_data(root: Path, factor: int) -> dict[str, np.ndarray]:
    data = root / "mydata"
    data.mkdir(parents=True)
    fine = fine_grid(factor)
    codes = user_codes(fine)
    write_tif(data / f"landcover_{YEAR}.tif", codes, transform=fine.transform, crs="EPSG:4326",
              nodata=255)

    # Coarse: north-up values first, then stored south-up with longitude 0..360.
    share = fractions(codes, factor)
    row0 = round((COARSE.north - REGION[3]) / COARSE_RES)
    col0 = round((REGION[0] - COARSE.west) / COARSE_RES)
    order = np.argsort(COARSE.lon % 360)
    data_vars = {}
    for name, values in share.items():
        full = np.full(COARSE.shape, 0.2, dtype="float32")
        full[row0 : row0 + values.shape[0], col0 : col0 + values.shape[1]] = values
        stored = full[::-1][:, order][None]
        data_vars[name] = (("time", "lat", "lon"), stored, {"long_name": f"{name} fraction"})
    days = (dt.date(YEAR, 7, 1) - dt.date(1850, 1, 1)).days
    ds = xr.Dataset(data_vars, coords={
        "time": ("time", [float(days)], {"units": "days since 1850-01-01", "calendar": "standard"}),
        "lat": ("lat", COARSE.lat[::-1], {"units": "degrees_north"}),
        "lon": ("lon", (COARSE.lon % 360)[order], {"units": "degrees_east"}),
    })
    ds.to_netcdf(data / "fractions.nc",
                 encoding={name: {"_FillValue": np.float32(-9999.0)} for name in data_vars})

    # Elevation at 1 km in EPSG:3035 (LAEA Europe), covering the region with a margin.
    left, bottom, right, top = transform_bounds("EPSG:4326", "EPSG:3035", -2.6, 49.6, 2.6, 52.4,
                                                densify_pts=21)
    res = 1000.0
    width, height = int((right - left) // res) + 1, int((top - bottom) // res) + 1
    transform = Affine(res, 0, left, 0, -res, top)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    xs, ys = transform @ (cols.ravel(), rows.ravel())
    lon, lat = (np.asarray(v).reshape(height, width)
                for v in warp_transform("EPSG:3035", "EPSG:4326", xs, ys))
    write_tif(data / "dem_epsg3035.tif", elevation_field(lon, lat).astype("float32"),
              transform=transform, crs="EPSG:3035", nodata=-9999.0)

    # Soil types (categorical) at 0.05 degree over -3..3 E, 49..53 N.
    soil = Grid(west=-3.0, north=53.0, res=SOIL_RES, width=120, height=80)
    lon, lat = np.meshgrid(soil.lon, soil.lat)
    write_tif(data / "soil_types.tif", soil_code(lon, lat), transform=soil.transform,
              crs="EPSG:4326", nodata=0)
    return {"codes": codes, **share}


def ai4land(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run([sys.executable, "-m", "ai4land", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


@pytest.mark.parametrize("factor", [5, 20])
def test_own_dataset_through_the_cli(tmp_path, monkeypatch, factor):
    expected = write_user_data(tmp_path, factor)
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(documented_config()))

    for args in (["config", "check", "my.yaml"],
                 ["prepare", "target", "-c", "my.yaml"],
                 ["prepare", "static", "-c", "my.yaml"],
                 ["prepare", "coarse", "--scenario", "historical", "-c", "my.yaml"]):
        result = ai4land(tmp_path, *args)
        assert result.returncode == 0, f"ai4land {' '.join(args)}:\n{result.stderr[-3000:]}"

    monkeypatch.chdir(tmp_path)  # the config's paths are relative to where the CLI ran
    config = load_config("my.yaml")
    cube = Cube.from_config(config)
    fine = fine_grid(factor)
    assert cube.factor == factor
    assert cube.fine_grid.same_as(fine)
    assert cube.coarse_grid.same_as(fine.coarsened(factor))
    assert cube.coarse_grid.shape == (4, 8)

    # Target: the user's codes mapped to classes, one year.
    assert cube.target_years == [YEAR]
    whole = Window(0, 0, fine.height, fine.width)
    table = np.zeros(256, dtype="uint8")
    for source, target in MAPPING.items():
        table[source] = target
    np.testing.assert_array_equal(cube.target_window(YEAR, whole), table[expected["codes"]])

    # Coarse: re-ordered north-up and -180..180, cut to the region, fill masked.
    assert cube.coarse_channel_names == ["crops", "forest", "grass", "urb"]
    assert cube.coarse_years("historical") == [YEAR]
    cells = cube.coarse_cells("historical", YEAR, whole)
    for index, name in enumerate(cube.coarse_channel_names):
        np.testing.assert_allclose(cells[index], expected[name], rtol=1e-6)
    assert np.isnan(cells[:, :, 0]).all() and np.isfinite(cells[:, :, 1:]).all()
    upsampled = cube.coarse_window("historical", YEAR, Window(factor, factor, factor, 2 * factor))
    row = np.repeat(expected["crops"][1, 1:3], factor)  # two cells side by side
    np.testing.assert_allclose(upsampled[0], np.broadcast_to(row, (factor, 2 * factor)), rtol=1e-6)

    # Static: the EPSG:3035 elevation lands on the fine grid, with slope; soil stays categorical.
    static = xr.open_zarr(tmp_path / "mycube" / "static.zarr", chunks=None)
    assert set(cube.static_names) == {"elevation", "slope", "soil"}
    lon, lat = np.meshgrid(fine.lon, fine.lat)
    np.testing.assert_allclose(static["elevation"].values, elevation_field(lon, lat), atol=2.0)
    assert static["elevation"].attrs["resampling"] == "average"  # 1 km source is finer
    assert (static["slope"].values[1:-1, 1:-1] < 1.0).all()  # ~100 m per degree: gentle
    soil = static["soil"].values
    if factor == 20:  # 0.025 degree target, 0.05 degree source: nearest neighbour
        assert static["soil"].attrs["resampling"] == "nearest"
        np.testing.assert_array_equal(soil, soil_code(lon, lat))
    else:  # 0.1 degree target: the most common of the 2 x 2 source pixels
        assert static["soil"].attrs["resampling"] == "mode"
        assert set(np.unique(soil)) <= {1.0, 2.0, 3.0}
    land = static["land_mask"].values.astype(bool)
    np.testing.assert_array_equal(land, table[expected["codes"]] != 0)


# Sizes for a region this small (80 x 160 pixels); everything else is the documented config.
SMALL_REGION = {
    "split": {"block_size": 20, "n_test_blocks": 2, "n_val_blocks": 2, "buffer_blocks": 0},
    "train": {"epochs": 1, "steps_per_epoch": 3, "batch_size": 4, "tile_size": 32,
              "base_channels": 4, "depth": 2, "val_batches": 1},
    "predict": {"tile_size": 64, "overlap": 16, "batch_size": 2},
}


def test_own_single_year_config_trains_and_is_evaluated(tmp_path):
    """The documented config (one observed year, `train.prior: false`) goes on through
    split, training and evaluation: a model without a prior, scored in single-year mode
    on its harmonised map."""
    write_user_data(tmp_path, 20)
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(documented_config()))
    (tmp_path / "small.yaml").write_text(yaml.safe_dump(SMALL_REGION))
    configs = ["-c", "my.yaml", "-c", "small.yaml"]
    for args in (["prepare", "target", *configs],
                 ["prepare", "static", *configs],
                 ["prepare", "coarse", "--scenario", "historical", *configs],
                 ["split", *configs, "--output", "myresults/split/split.json",
                  "--figure", "myresults/split/split.png"],
                 ["train", *configs, "--output", "myresults/model"],
                 ["evaluate", *configs, "--model", "myresults/model",
                  "--split", "myresults/split/split.json",
                  "--output", "myresults/eval/metrics.json"]):
        result = ai4land(tmp_path, *args)
        assert result.returncode == 0, f"ai4land {' '.join(args)}:\n{result.stderr[-3000:]}"
    card = json.loads((tmp_path / "myresults" / "model" / "model_card.json").read_text())
    assert "prior" in card["dropped_inputs"]
    metrics = json.loads((tmp_path / "myresults" / "eval" / "metrics.json").read_text())
    assert metrics["split"]["mode"] == "single-year"
    assert metrics["scored_map"] == "harmonised"
    assert {"unet", "coarse_majority", "smooth_coarse"} <= set(metrics["models"])
