"""The synthetic demo world: formats, quirks, determinism and an honest coarse <-> fine link."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import rasterio
from rasterio.warp import transform as warp_transform

from ai4land.config import LUH2_FRACTIONS, parse_config, read_config_files
from ai4land.demo_world import write_demo_world
from ai4land.errors import ConfigError

DEMO_YAML = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"
BBOX = (4.0, 42.0, 6.0, 44.0)  # 200 x 200 fine pixels, 8 x 8 coarse cells
FACTOR = 25
HIST = (1955, 1965)
FUTURE = (1965, 1980)
OBSERVED = (1960, 1968)
GROUPS = {
    11: ["urban"],
    22: ["c3ann", "c4ann", "c3per", "c4per", "c3nfx"],
    33: ["pastr", "range"],
    44: ["primf", "secdf"],
    (55, 66): ["primn", "secdn"],
}
LEGEND = {0, 11, 22, 33, 44, 55, 66, 77, 99}


def small_config(root: Path, *, seed: int = 42, **demo):
    data = read_config_files([DEMO_YAML])
    raw = root / "raw"
    data["seed"] = seed
    data["demo"] = {"bbox": list(BBOX), "historical_years": list(HIST),
                    "future_years": list(FUTURE), **demo}
    data["paths"] = {"raw": str(raw), "cube": str(root / "cube"), "results": str(root / "results")}
    coarse = data["datasets"]["coarse"]
    coarse["historical"] = str(raw / "luh2" / "states.nc")
    coarse["static"] = str(raw / "luh2" / "staticData_quarterdeg.nc")
    coarse["scenarios"] = {name: str(raw / "luh2" / Path(path).name)
                           for name, path in coarse["scenarios"].items()}
    fine = data["datasets"]["fine"]
    fine["archive"] = str(raw / "hildaplus" / "hildap_vGLOB-1.0_geotiff.zip")
    fine["years"] = list(OBSERVED)
    for layer in data["datasets"]["static"]:
        layer["path"] = str(raw / "static" / Path(layer["path"]).name)
    data["years"] = {"train": [1960, 1963], "test": [1964, 1966], "backward": [1956, 1959],
                     "forward": [1969, 1970]}
    return parse_config(data)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    config = small_config(root)
    paths = write_demo_world(config, progress=False)
    return config, paths


def read_map(config, year: int) -> np.ndarray:
    member = config.datasets.fine.pattern.format(year=year)
    with rasterio.open(f"zip://{config.datasets.fine.archive}!{member}") as src:
        return src.read(1)


def aggregate(codes: np.ndarray, classes) -> np.ndarray:
    """Fraction of ``classes`` over each cell's non-ocean pixels (NaN on all-ocean cells)."""
    classes = np.atleast_1d(classes)
    ny, nx = codes.shape[0] // FACTOR, codes.shape[1] // FACTOR

    def block(mask):
        return mask.reshape(ny, FACTOR, nx, FACTOR).sum(axis=(1, 3))

    land = block(codes != 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(land > 0, block(np.isin(codes, classes)) / land, np.nan)


def read_nc(path, name) -> np.ndarray:
    with netCDF4.Dataset(path) as ds:
        ds.set_auto_mask(False)
        return np.asarray(ds[name][:])


def group_sum(path, year_index: int, variables) -> np.ndarray:
    return sum(read_nc(path, v)[year_index].astype("float64") for v in variables)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- determinism ------------------------------------------------------------------------


def test_writes_every_configured_file(world):
    config, paths = world
    expected = {config.datasets.coarse.historical, config.datasets.coarse.static,
                config.datasets.fine.archive, *config.datasets.coarse.scenarios.values(),
                *(layer.path for layer in config.datasets.static)}
    assert {str(p) for p in paths} == expected
    assert all(Path(p).is_file() for p in paths)
    assert not list(Path(config.paths.raw).rglob("*.tmp"))


def test_same_seed_same_bytes_other_seed_other_bytes(world, tmp_path):
    config, paths = world
    again = write_demo_world(small_config(tmp_path / "again"), progress=False)
    assert [sha256(p) for p in paths] == [sha256(p) for p in again]
    other = write_demo_world(small_config(tmp_path / "other", seed=7), progress=False)
    assert sha256(paths[0]) != sha256(other[0])


# --- LUH2-style coarse files ----------------------------------------------------------------


def test_states_have_luh2_quirks(world):
    config, _ = world
    with netCDF4.Dataset(config.datasets.coarse.historical) as ds:
        assert tuple(ds.dimensions) == ("time", "lat", "lon")
        time = ds["time"]
        assert time.units == "years since 850-01-01"
        assert time.calendar == "365_day"
        np.testing.assert_array_equal(time[:], np.arange(HIST[0], HIST[1] + 1) - 850)
        lat, lon = ds["lat"][:], ds["lon"][:]
        assert lat[0] > lat[-1] and np.all(np.diff(lat) < 0), "lat must run north to south"
        assert np.all(np.diff(lon) > 0)
        np.testing.assert_allclose(lat, 43.875 - 0.25 * np.arange(8))
        np.testing.assert_allclose(lon, 4.125 + 0.25 * np.arange(8))
        for name in [*LUH2_FRACTIONS, "secma", "secmb"]:
            var = ds[name]
            assert var.dimensions == ("time", "lat", "lon")
            assert var.dtype == np.float32
            assert "_FillValue" not in var.ncattrs()
            assert var.getncattr("_Fillvalue") == np.float32(1e20)


def test_ocean_cells_hold_fill_and_land_cells_sum_to_one(world):
    config, _ = world
    states = config.datasets.coarse.historical
    icwtr = read_nc(config.datasets.coarse.static, "icwtr").astype("float64")
    codes = read_map(config, 1962)
    ocean_cells = np.isnan(aggregate(codes, 11))
    assert ocean_cells.any() and not ocean_cells.all(), "the small world must have sea and land"
    for name in [*LUH2_FRACTIONS, "secma", "secmb"]:
        values = read_nc(states, name)
        assert np.all(values[:, ocean_cells] == np.float32(1e20)), name
        land = values[:, ~ocean_cells]
        assert np.all(land >= 0) and np.all(land < 1e19), name
        if name in LUH2_FRACTIONS:
            assert np.all(land <= 1.0), name
    assert np.all(icwtr[ocean_cells] == np.float32(1e20))
    total = sum(read_nc(states, name).astype("float64") for name in LUH2_FRACTIONS) + icwtr
    np.testing.assert_allclose(total[:, ~ocean_cells], 1.0, atol=1e-5)
    assert np.all(read_nc(states, "secma")[:, ~ocean_cells] > 0)
    assert np.all(read_nc(states, "secmb")[:, ~ocean_cells] > 0)


@pytest.mark.parametrize("year", [1960, 1962, 1965])
def test_coarse_fractions_are_the_aggregated_fine_map(world, year):
    config, _ = world
    codes = read_map(config, year)
    index = year - HIST[0]
    for classes, variables in GROUPS.items():
        expected = aggregate(codes, classes)
        got = group_sum(config.datasets.coarse.historical, index, variables)
        land = ~np.isnan(expected)
        np.testing.assert_allclose(got[land], expected[land], atol=1e-5, err_msg=str(classes))
    water = read_nc(config.datasets.coarse.static, "icwtr")
    land = ~np.isnan(aggregate(codes, 77))
    np.testing.assert_allclose(water[land], aggregate(codes, 77)[land], atol=1e-6)


def test_static_file(world):
    config, _ = world
    path = config.datasets.coarse.static
    with netCDF4.Dataset(path) as ds:
        assert {"icwtr", "carea", "fstnf"} <= set(ds.variables)
        assert ds["lat"][0] > ds["lat"][-1]
        for name in ("icwtr", "carea", "fstnf"):
            assert "_FillValue" not in ds[name].ncattrs()
            assert ds[name].getncattr("_Fillvalue") == np.float32(1e20)
    carea = read_nc(path, "carea")
    # A quarter-degree cell at 43 N is about 27.8 km x 20.3 km.
    assert np.all((carea > 450) & (carea < 650))
    assert carea[0, 0] < carea[-1, 0], "cells shrink towards the pole"


def test_futures_continue_the_observed_maps_then_diverge(world):
    config, _ = world
    states = config.datasets.coarse.historical
    files = config.datasets.coarse.scenarios
    icwtr = read_nc(config.datasets.coarse.static, "icwtr").astype("float64")
    ocean = np.isnan(aggregate(read_map(config, 1960), 11))
    for path in files.values():
        with netCDF4.Dataset(path) as ds:
            assert ds["time"].units == f"years since {FUTURE[0]}-01-01"
            np.testing.assert_array_equal(ds["time"][:], np.arange(FUTURE[1] - FUTURE[0] + 1))
            assert ds["primf"].getncattr("_Fillvalue") == np.float32(1e20)
        for name in [*LUH2_FRACTIONS, "secma", "secmb"]:  # first future year == last historical
            np.testing.assert_array_equal(read_nc(path, name)[0], read_nc(states, name)[-1])
        total = sum(read_nc(path, name).astype("float64") for name in LUH2_FRACTIONS) + icwtr
        np.testing.assert_allclose(total[:, ~ocean], 1.0, atol=1e-5)
        for year in range(FUTURE[0], OBSERVED[1] + 1):  # observed years: the aggregated maps
            codes = read_map(config, year)
            for classes, variables in GROUPS.items():
                expected = aggregate(codes, classes)
                got = group_sum(path, year - FUTURE[0], variables)
                np.testing.assert_allclose(got[~ocean], expected[~ocean], atol=1e-5)
    low, high = files["ssp126"], files["ssp585"]
    last = FUTURE[1] - FUTURE[0]
    crop = GROUPS[22]
    forest = GROUPS[44]
    assert group_sum(high, last, crop)[~ocean].sum() > group_sum(low, last, crop)[~ocean].sum()
    assert group_sum(high, last, forest)[~ocean].sum() < group_sum(low, last, forest)[~ocean].sum()


# --- fine maps ------------------------------------------------------------------------------


def test_geotiffs_look_like_hilda(world):
    config, _ = world
    with zipfile.ZipFile(config.datasets.fine.archive) as zf:
        names = zf.namelist()
        assert all(info.date_time == (1980, 1, 1, 0, 0, 0) for info in zf.infolist())
    assert names == [config.datasets.fine.pattern.format(year=y)
                     for y in range(OBSERVED[0], OBSERVED[1] + 1)]
    member = config.datasets.fine.pattern.format(year=1963)
    with rasterio.open(f"zip://{config.datasets.fine.archive}!{member}") as src:
        assert src.crs.to_epsg() == 4326
        assert src.shape == (200, 200)
        assert src.dtypes == ("uint8",)
        assert src.nodata == 99
        assert src.transform.almost_equals(rasterio.Affine(0.01, 0, 4.0, 0, -0.01, 44.0))
        assert src.profile["compress"].lower() == "deflate"
        assert src.profile["tiled"]
        codes = src.read(1)
    assert set(np.unique(codes)) <= LEGEND
    shares = {c: float((codes == c).mean()) for c in LEGEND}
    assert 0.05 < shares[0] < 0.25, "the sea covers a corner"
    for code in (11, 22, 44):
        assert shares[code] > 0.005, f"class {code} is missing"


def test_yearly_change_is_small_coherent_and_not_zero(world):
    config, _ = world
    rates, near = [], []
    previous = read_map(config, OBSERVED[0])
    land = previous != 0
    from scipy import ndimage

    for year in range(OBSERVED[0] + 1, OBSERVED[1] + 1):
        codes = read_map(config, year)
        assert np.array_equal(codes == 0, previous == 0), "the sea is static"
        assert np.array_equal(codes == 77, previous == 77), "lakes are static"
        changed = codes != previous
        rates.append(changed[land].mean())
        # New class was already present within 3 pixels: changes grow from patches.
        for code in np.unique(codes[changed]):
            around = ndimage.maximum_filter(previous == code, size=7)
            hit = changed & (codes == code)
            near.append(around[hit].mean())
        assert np.all((codes == 11) >= (previous == 11)), "urban is irreversible"
        previous = codes
    assert 0.001 < np.mean(rates) < 0.05, rates
    assert min(rates) > 0
    assert np.mean(near) > 0.8


# --- static rasters -----------------------------------------------------------------------


def test_static_rasters_use_their_own_grids(world):
    config, _ = world
    layers = {layer.name: layer for layer in config.datasets.static}
    west, south, east, north = BBOX
    with netCDF4.Dataset(layers["elevation"].path) as ds:
        lat, lon = ds["lat"][:], ds["lon"][:]
        z = ds[layers["elevation"].variable][:]
        assert ds[layers["elevation"].variable].units == "m"
        assert ds["lat"].units == "degrees_north" and ds["lon"].units == "degrees_east"
    assert np.all(np.diff(lat) > 0), "ETOPO runs south to north"
    np.testing.assert_allclose(np.diff(lon), 1 / 120, rtol=1e-6)
    assert lat.min() < south - 0.05 and lat.max() > north + 0.05
    assert lon.min() < west - 0.05 and lon.max() > east + 0.05
    assert z.min() < 0 < 1000 < z.max() < 3000

    with rasterio.open(layers["clay"].path) as src:
        assert not src.crs.is_geographic
        assert "Goode" in src.crs.to_wkt() or "igh" in src.crs.to_proj4()
        assert src.res == (1000.0, 1000.0)
        assert src.nodata is not None
        xs, ys = warp_transform("EPSG:4326", src.crs, [west, east, east, west],
                                [south, south, north, north])
        left, bottom, right, top = src.bounds
        assert left < min(xs) and right > max(xs) and bottom < min(ys) and top > max(ys)
        clay = src.read(1, masked=True)
    assert 0 < clay.mask.mean() < 0.5, "sea is nodata, land is not"
    assert clay.min() >= 30 and clay.max() <= 700


def test_bbox_must_hold_whole_coarse_cells(tmp_path):
    config = small_config(tmp_path, bbox=[4.0, 42.0, 6.1, 44.0])
    with pytest.raises(ConfigError, match="whole coarse cells"):
        write_demo_world(config, progress=False)
