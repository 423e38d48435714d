"""prepare: target maps, static layers and coarse fractions from tiny generated inputs.

The inputs carry the same quirks as the real ones: GeoTIFFs inside a zip, LUH2-style
NetCDF with the fill value under `_Fillvalue`, time in "years since 850-01-01", an
elevation NetCDF with latitude ascending, a clay GeoTIFF in Interrupted Goode Homolosine.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr
import yaml
from affine import Affine
from rasterio.warp import transform as warp_transform
from rasterio.warp import transform_bounds

from ai4land.config import LUH2_FRACTIONS, parse_config
from ai4land.errors import ConfigError, GridError, InputDataError
from ai4land.grid import Grid, Window
from ai4land.io.cube import Cube
from ai4land.io.rasters import decode_years
from ai4land.prepare import prepare_coarse, prepare_static, prepare_target, validate_inputs
from ai4land.prepare.static import _wgs84_metres_per_degree, slope_degrees

PATTERN = "hildap_vGLOB-1.0_geotiff_wgs84/states/hilda_plus_{year}_states_GLOB-v1-0_wgs84-nn.tif"
FINE = Grid(west=4.0, north=44.0, res=0.05, width=40, height=40)  # 8 x 8 coarse cells
CODES = np.array([11, 22, 33, 44, 55, 66, 77], dtype="uint8")
YEARS = [2000, 2001, 2002, 2003]
IGH = "+proj=igh +lon_0=0 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"


# --- synthetic inputs --------------------------------------------------------------------


def fine_map(year: int, grid: Grid = FINE) -> np.ndarray:
    rng = np.random.default_rng(year)
    codes = CODES[rng.integers(0, len(CODES), grid.shape)]
    codes[:, :5] = 0  # the first coarse column is ocean
    codes[0, 6] = 99  # a no-data pixel
    return codes


def write_tif(path: Path, data: np.ndarray, *, transform: Affine, crs: str | None, nodata=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": data.shape[1], "height": data.shape[0], "count": 1,
               "dtype": data.dtype.name, "transform": transform}
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data, 1)


def write_fine_zip(root: Path, *, years=YEARS, grid: Grid = FINE, maps: dict | None = None) -> Path:
    archive = root / "hildaplus" / "hildap_vGLOB-1.0_geotiff.zip"
    archive.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for year in years:
            tif = root / "tmp" / f"{year}.tif"
            data = (maps or {}).get(year, fine_map(year, grid))
            write_tif(tif, data, transform=grid.transform, crs="EPSG:4326", nodata=99)
            zf.write(tif, PATTERN.replace("{year}", str(year)))
    return archive


def coarse_values(year: int, shape) -> np.ndarray:
    return np.full(shape, 0.07 + 0.0005 * (year - 2000), dtype="float32")


COARSE = Grid(west=2.0, north=46.0, res=0.25, width=24, height=24)  # 2..8 E, 40..46 N


def write_coarse(path: Path, *, years=range(1998, 2006), since: int = 850, lat_ascending=False,
                 lon_360: bool = False, grid: Grid = COARSE, tweak=None) -> Path:
    """An LUH2-like states file: 1e20 on ocean, declared only under `_Fillvalue`."""
    years = list(years)
    lat = grid.lat[::-1] if lat_ascending else grid.lat
    lon = grid.lon % 360 if lon_360 else grid.lon
    ocean = np.broadcast_to(grid.lon < FINE.west + 0.25, grid.shape)
    data_vars = {}
    for name in [*LUH2_FRACTIONS, "secma"]:
        values = np.stack([coarse_values(y, grid.shape) for y in years])
        if name == "secma":
            values[:] = 55.0  # not a fraction; must be ignored
        values[:, ocean] = 1e20
        if tweak:
            tweak(name, values, years)
        if lat_ascending:
            values = values[:, ::-1]
        if lon_360:
            order = np.argsort(lon)
            values = values[:, :, order]
        data_vars[name] = (("time", "lat", "lon"), values,
                           {"_Fillvalue": 1e20, "long_name": f"{name} fraction", "units": "1"})
    if lon_360:
        lon = np.sort(lon)
    ds = xr.Dataset(data_vars, coords={
        "time": ("time", np.array([y - since for y in years], dtype="float64"),
                 {"units": f"years since {since}-01-01", "calendar": "noleap"}),
        "lat": ("lat", lat, {"units": "degrees_north"}),
        "lon": ("lon", lon, {"units": "degrees_east"}),
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    encoding = {name: {"_FillValue": None} for name in [*data_vars, "time", "lat", "lon"]}
    ds.to_netcdf(path, encoding=encoding)
    return path


def write_coarse_static(path: Path, grid: Grid = COARSE) -> Path:
    icwtr = np.full(grid.shape, 0.03, dtype="float32")
    icwtr[:, grid.lon < FINE.west + 0.25] = 1e20
    ds = xr.Dataset(
        {
            "icwtr": (("lat", "lon"), icwtr, {"_Fillvalue": 1e20, "long_name": "ice/water"}),
            "carea": (("lat", "lon"), np.ones(grid.shape, "float32")),
        },
        coords={"lat": grid.lat, "lon": grid.lon},
    )
    ds.to_netcdf(path, encoding={"icwtr": {"_FillValue": None}})
    return path


def elevation_field(lon, lat):
    return 100.0 * lon + 50.0 * lat


def clay_field(lon, lat):
    return 10.0 * lon + 5.0 * lat


def write_elevation(path: Path, *, west=3.0, east=7.0, south=41.0, north=45.0, res=0.02) -> Path:
    """ETOPO-like: variable z, latitude ascending, no CRS (implied lat/lon)."""
    lat = np.arange(south + res / 2, north, res)
    lon = np.arange(west + res / 2, east, res)
    z = elevation_field(lon[None, :], lat[:, None]).astype("float32")
    ds = xr.Dataset({"z": (("lat", "lon"), z, {"units": "m"})}, coords={"lat": lat, "lon": lon})
    ds.to_netcdf(path)
    return path


def write_clay_igh(path: Path, *, bounds=(3.5, 41.5, 6.5, 44.5), res=1000.0, crs=IGH,
                   hole=None) -> Path:
    left, bottom, right, top = transform_bounds("EPSG:4326", IGH, *bounds, densify_pts=21)
    width, height = int((right - left) // res) + 1, int((top - bottom) // res) + 1
    transform = Affine(res, 0, left, 0, -res, top)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    xs, ys = transform @ (cols.ravel(), rows.ravel())
    lon, lat = warp_transform(IGH, "EPSG:4326", xs, ys)
    lon, lat = np.asarray(lon).reshape(height, width), np.asarray(lat).reshape(height, width)
    values = clay_field(lon, lat).astype("float32")
    if hole is not None:  # no data inside (west, south, east, north), like lakes in SoilGrids
        west, south, east, north = hole
        values[(lon > west) & (lon < east) & (lat > south) & (lat < north)] = -9999.0
    write_tif(path, values, transform=transform, crs=crs, nodata=-9999.0)
    return path


def make_config(root: Path, **over):
    raw = root / "raw"
    data = {
        "paths": {"raw": str(raw), "cube": str(root / "cube"), "results": str(root / "results")},
        "datasets": {
            "coarse": {"historical": str(raw / "luh2" / "states.nc"),
                       "scenarios": {"ssp126": str(raw / "luh2" / "ssp126.nc")},
                       "static": str(raw / "luh2" / "staticData_quarterdeg.nc")},
            "fine": {"archive": str(raw / "hildaplus" / "hildap_vGLOB-1.0_geotiff.zip"),
                     "pattern": PATTERN, "years": [YEARS[0], YEARS[-1]]},
            "static": [
                {"name": "elevation", "path": str(raw / "static" / "elev.nc"), "variable": "z",
                 "derive_slope": True},
                {"name": "clay", "path": str(raw / "static" / "clay.tif")},
            ],
        },
        "years": {"train": [2000, 2001], "test": [2002, 2003]},
    }
    for key, value in over.items():
        section = data
        *parents, last = key.split(".")
        for part in parents:
            section = section.setdefault(part, {})
        section[last] = value
    return parse_config(data)


@pytest.fixture
def world(tmp_path):
    raw = tmp_path / "raw"
    write_fine_zip(raw)
    write_coarse(raw / "luh2" / "states.nc")
    write_coarse(raw / "luh2" / "ssp126.nc", years=range(2015, 2021), since=2015)
    write_coarse_static(raw / "luh2" / "staticData_quarterdeg.nc")
    (raw / "static").mkdir(parents=True)
    write_elevation(raw / "static" / "elev.nc")
    write_clay_igh(raw / "static" / "clay.tif")
    return tmp_path


def cube_of(config) -> Cube:
    return Cube.from_config(config)


# --- target --------------------------------------------------------------------------------


def test_target_round_trip(world):
    config = make_config(world)
    out = prepare_target(config, progress=False)
    assert out == Path(config.paths.cube) / "target.zarr"
    grids = json.loads((Path(config.paths.cube) / "grids.json").read_text())
    assert grids["factor"] == 5
    assert Grid.from_dict(grids["fine"]).same_as(FINE)
    assert Grid.from_dict(grids["coarse"]).same_as(FINE.coarsened(5))

    ds = xr.open_zarr(out, chunks=None)
    lulc = ds["lulc"]
    assert lulc.dims == ("year", "lat", "lon") and lulc.dtype == np.uint8
    assert lulc.encoding["chunks"] == (1, 256, 256)
    assert list(ds["year"].values) == YEARS
    assert np.allclose(ds["lat"].values, FINE.lat) and ds["lat"].values[0] > ds["lat"].values[-1]
    assert np.allclose(ds["lon"].values, FINE.lon)
    assert lulc.attrs["flag_values"] == sorted(config.classes.legend)
    assert len(lulc.attrs["flag_meanings"].split()) == len(config.classes.legend)
    assert lulc.attrs["crs"] == "EPSG:4326"

    cube = cube_of(config)
    assert cube.factor == 5 and cube.target_years == YEARS
    window = Window(3, 2, 20, 30)
    np.testing.assert_array_equal(cube.target_window(2002, window), fine_map(2002)[window.slices])


def test_target_code_mapping_applied_and_unknown_code_named(world):
    mapping = {0: 0, 11: 11, 22: 22, 33: 33, 44: 44, 55: 55, 66: 66, 77: 66, 99: 99}
    config = make_config(world, **{"datasets.fine.code_mapping": mapping})
    prepare_target(config, progress=False)
    values = cube_of(config).target_window(2000, Window(0, 0, 40, 40))
    expected = fine_map(2000)
    expected[expected == 77] = 66
    np.testing.assert_array_equal(values, expected)

    maps = {2001: fine_map(2001)}
    maps[2001][7, 9] = 12
    write_fine_zip(world / "raw", maps=maps)
    with pytest.raises(
        InputDataError, match=r"hilda_plus_2001.*code 12 .*row 7, col 9.*code_mapping"
    ):
        prepare_target(config, progress=False)


def test_target_missing_years_listed(world):
    config = make_config(world, **{"datasets.fine.years": [1998, 2005]})
    with pytest.raises(InputDataError, match=r"1998-1999, 2004-2005"):
        prepare_target(config, progress=False)
    assert not (Path(config.paths.cube) / "target.zarr").exists()


def plain_maps(world: Path, *, without_crs: int | None = None) -> dict:
    """Per-year GeoTIFFs (no zip) under ``world``; the config entries that read them."""
    plain = world / "plain"
    for year in YEARS:
        write_tif(plain / f"map_{year}.tif", fine_map(year), transform=FINE.transform,
                  crs=None if year == without_crs else "EPSG:4326", nodata=99)
    return {"datasets.fine.archive": None, "datasets.fine.pattern": str(plain / "map_{year}.tif")}


def test_target_plain_files_and_bbox(world):
    config = make_config(world, **{**plain_maps(world), "region.bbox": [4.3, 42.3, 5.6, 43.6]})
    prepare_target(config, progress=False)
    cube = cube_of(config)
    # Snapped outward to coarse cells: 4.25..5.75 E, 42.25..43.75 N.
    assert cube.fine_grid.same_as(Grid(west=4.25, north=43.75, res=0.05, width=30, height=30))
    assert cube.coarse_grid.shape == (6, 6)
    np.testing.assert_array_equal(cube.target_window(2003, Window(0, 0, 30, 30)),
                                  fine_map(2003)[5:35, 5:35])


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (Grid(west=4.0, north=44.0, res=0.03, width=40, height=40), "does not divide"),
        (Grid(west=4.05, north=44.0, res=0.05, width=40, height=40), "west edge"),
        (Grid(west=4.0, north=44.0, res=0.05, width=42, height=40), "whole number"),
    ],
)
def test_target_grids_that_do_not_nest(world, grid, message):
    write_fine_zip(world / "raw", grid=grid)
    config = make_config(world)
    with pytest.raises(GridError, match=message):
        prepare_target(config, progress=False)
    assert not (Path(config.paths.cube) / "grids.json").exists()


def test_target_map_without_crs(world):
    config = make_config(world, **plain_maps(world, without_crs=YEARS[0]))
    with pytest.raises(
        InputDataError, match=r"map_2000\.tif: has no CRS; fine maps must be in EPSG:4326"
    ):
        prepare_target(config, progress=False)
    assert not (Path(config.paths.cube) / "target.zarr").exists()


def test_cli_bad_input_exit_code_one_line_and_earlier_output_kept(world):
    """A bad input through `ai4land prepare`: exit 2, one stderr line, the old cube intact."""
    config = make_config(world)
    path = world / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")

    def prepare_target_cli():
        return subprocess.run(
            [sys.executable, "-m", "ai4land", "prepare", "target", "-c", str(path)],
            capture_output=True,
            text=True,
            env=env,
        )

    assert prepare_target_cli().returncode == 0
    store = Path(config.paths.cube) / "target.zarr"
    before = xr.open_zarr(store, chunks=None)["lulc"].values

    maps = {2002: fine_map(2002)}
    maps[2002][11, 23] = 123
    write_fine_zip(world / "raw", maps=maps)
    result = prepare_target_cli()
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ai4land: error: ")
    assert re.search(r"hilda_plus_2002_states.*\.tif: year 2002 holds class code 123 "
                     r"\(first at row 11, col 23\).*code_mapping", lines[0])
    np.testing.assert_array_equal(xr.open_zarr(store, chunks=None)["lulc"].values, before)
    assert sorted(p.name for p in Path(config.paths.cube).iterdir()) == [
        "grids.json",
        "target.zarr",
    ]


def write_fine_zip_damaged(root: Path, damage) -> Path:
    """The fine zip with the 2002 map as a tiled DEFLATE GeoTIFF (16 px tiles, header and
    directory first, like HILDA+), its bytes passed through ``damage``."""
    archive = write_fine_zip(root)
    tif = root / "tmp" / "tiled_2002.tif"
    with rasterio.open(tif, "w", driver="GTiff", width=FINE.width, height=FINE.height, count=1,
                       dtype="uint8", crs="EPSG:4326", transform=FINE.transform, nodata=99,
                       tiled=True, blockxsize=16, blockysize=16, compress="deflate") as dst:
        dst.write(fine_map(2002), 1)
    damaged = PATTERN.replace("{year}", "2002")
    with zipfile.ZipFile(archive) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    members[damaged] = damage(tif.read_bytes())
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return archive


def run_prepare_cli(config, world: Path, step: str = "target") -> subprocess.CompletedProcess:
    path = world / "config.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run([sys.executable, "-m", "ai4land", "prepare", step, "-c", str(path)],
                          capture_output=True, text=True, env=env)


@pytest.mark.parametrize("bbox", [None, [4.0, 43.5, 4.5, 44.0]])
def test_target_truncated_map_refused_in_one_line(world, bbox):
    """A fine map cut short (header intact): refused in one line, also when region.bbox
    lies in the intact part (its first tiles), where every block used would decode."""
    write_fine_zip_damaged(world / "raw", lambda data: data[: len(data) * 2 // 3])
    config = make_config(world, **{"region.bbox": bbox})
    result = run_prepare_cli(config, world)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.fullmatch(r"ai4land: error: /vsizip/.*hilda_plus_2002_states.*\.tif: fine map is "
                        r"truncated: its TIFF directory lists data up to byte \d+, the file holds "
                        r"\d+ bytes; delete it and download it again", lines[0])
    assert not (Path(config.paths.cube) / "target.zarr").exists()
    with pytest.raises(InputDataError, match="truncated"):
        validate_inputs(config)


def test_target_damaged_block_in_used_window_one_line(world):
    """A block inside the file that does not decode (a corrupt DEFLATE stream)."""
    def damage(data: bytes) -> bytes:
        middle = len(data) * 3 // 4
        return data[:middle] + b"\xff" * 64 + data[middle + 64 :]

    write_fine_zip_damaged(world / "raw", damage)
    config = make_config(world)
    result = run_prepare_cli(config, world)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert re.match(r"ai4land: error: /vsizip/.*hilda_plus_2002_states.*\.tif: band 1 rows "
                    r"0-39 cannot be decoded \(.*\); the file is damaged", lines[0])
    assert not (Path(config.paths.cube) / "target.zarr").exists()


def test_static_truncated_geotiff_one_line(world):
    clay = world / "raw" / "static" / "clay.tif"
    clay.write_bytes(clay.read_bytes()[:-200])
    config = make_config(world)
    prepare_target(config, progress=False)
    with pytest.raises(InputDataError, match=r"clay\.tif: static layer 'clay' is truncated: .* "
                                             r"delete it and download it again$"):
        prepare_static(config, progress=False)
    assert not (Path(config.paths.cube) / "static.zarr").exists()


# --- static --------------------------------------------------------------------------------


def test_static_reprojection_and_slope(world):
    config = make_config(world)
    prepare_target(config, progress=False)
    out = prepare_static(config, progress=False)
    ds = xr.open_zarr(out, chunks=None)
    assert set(ds.data_vars) == {"elevation", "slope", "clay", "land_mask"}
    lon, lat = np.meshgrid(FINE.lon, FINE.lat)

    elevation = ds["elevation"].values
    assert elevation.dtype == np.float32 and elevation.shape == FINE.shape
    # Source (0.02 deg, lat ascending) is finer than the target: averaged, so a linear
    # field keeps its value at pixel centres.
    np.testing.assert_allclose(elevation, elevation_field(lon, lat), atol=1.0)
    assert ds["elevation"].attrs["resampling"] == "average"

    clay = ds["clay"].values  # from Interrupted Goode Homolosine at 1000 m
    np.testing.assert_allclose(clay, clay_field(lon, lat), atol=0.3)

    land = ds["land_mask"].values
    assert land.dtype == np.uint8
    np.testing.assert_array_equal(land, (fine_map(2000) != 0).astype("uint8"))
    for name in ("elevation", "clay", "slope"):
        values = ds[name].values[land == 1].astype("float64")
        assert ds[name].attrs["mean"] == pytest.approx(values.mean(), rel=1e-5)
        assert ds[name].attrs["std"] == pytest.approx(values.std(), rel=1e-4)

    cube = cube_of(config)
    assert sorted(cube.static_names) == ["clay", "elevation", "slope"]
    features = cube.static_window(Window(0, 0, 16, 16))
    assert features.shape == (3, 16, 16) and np.isfinite(features).all()
    assert cube.land_mask_window(Window(0, 0, 4, 8))[:, :5].sum() == 0


def test_slope_of_planes():
    lat = FINE.lat
    lon = FINE.lon
    per_lat, per_lon = _wgs84_metres_per_degree(lat)
    # East-west plane rising at tan(10 deg) (metres per degree shrink northwards: ~1e-3 deg).
    east = np.tan(np.radians(10.0)) * (lon[None, :] - lon[0]) * per_lon[:, None]
    np.testing.assert_allclose(slope_degrees(east, lat=lat, res=FINE.res), 10.0, atol=0.01)
    # North-south plane rising northwards at tan(25 deg); rows run south.
    step = FINE.res * (per_lat[:-1] + per_lat[1:]) / 2
    northing = -np.concatenate([[0.0], np.cumsum(step)])
    north = np.repeat((np.tan(np.radians(25.0)) * northing)[:, None], lon.size, axis=1)
    np.testing.assert_allclose(slope_degrees(north, lat=lat, res=FINE.res)[1:-1], 25.0, atol=0.01)
    assert slope_degrees(np.full((5, 5), 300.0), lat=lat[:5], res=0.01).max() == 0.0


def test_static_layer_not_covering_region(world):
    write_clay_igh(world / "raw" / "static" / "clay.tif", bounds=(3.5, 41.5, 5.0, 44.5))
    config = make_config(world)
    prepare_target(config, progress=False)
    with pytest.raises(InputDataError, match=r"clay\.tif: band 1 has no data on .* land pixels"):
        prepare_static(config, progress=False)
    assert not (Path(config.paths.cube) / "static.zarr").exists()


def test_static_layer_may_lack_data_on_permanent_water(world):
    maps = {}
    for year in YEARS:
        maps[year] = fine_map(year)
        maps[year][20:30, 20:30] = 77  # a lake at 5.0..5.5 E, 42.5..43.0 N
    write_fine_zip(world / "raw", maps=maps)
    write_clay_igh(world / "raw" / "static" / "clay.tif", hole=(5.02, 42.52, 5.48, 42.98))
    config = make_config(world)
    prepare_target(config, progress=False)
    clay = xr.open_zarr(prepare_static(config, progress=False), chunks=None)["clay"].values
    assert np.isnan(clay[22:28, 22:28]).all()
    assert np.isfinite(clay[:20]).all() and np.isfinite(clay[30:]).all()


def test_static_geotiff_without_crs(world):
    write_tif(world / "raw" / "static" / "clay.tif", np.ones((10, 10), "float32"),
              transform=Affine(0.5, 0, 3, 0, -0.5, 45), crs=None)
    config = make_config(world)
    prepare_target(config, progress=False)
    with pytest.raises(InputDataError, match=r"clay\.tif: band 1 has no CRS"):
        prepare_static(config, progress=False)


# --- coarse --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lat_ascending", "lon_360"), [(False, False), (True, False), (False, True)]
)
def test_coarse_fill_orientation_and_years(world, lat_ascending, lon_360):
    # With lon 0..360 the file also holds cells west of 0 (356..360), so it must be re-ordered.
    grid = Grid(west=-4.0, north=46.0, res=0.25, width=48, height=24) if lon_360 else COARSE
    write_coarse(world / "raw" / "luh2" / "states.nc", lat_ascending=lat_ascending,
                 lon_360=lon_360, grid=grid)
    config = make_config(world)
    prepare_target(config, progress=False)
    out = prepare_coarse(config, scenario="historical", progress=False)
    ds = xr.open_zarr(out, chunks=None)
    assert list(ds["year"].values) == YEARS  # trimmed to the years the config uses
    assert set(ds.data_vars) == {*LUH2_FRACTIONS, "icwtr"}
    assert ds["primf"].dims == ("year", "lat", "lon") and ds["primf"].dtype == np.float32
    assert ds["icwtr"].dims == ("lat", "lon")
    assert ds["primf"].attrs["units"] == "1" and ds["lat"].attrs["units"] == "degrees_north"
    assert np.allclose(ds["lat"].values, FINE.coarsened(5).lat)
    assert np.allclose(ds["lon"].values, FINE.coarsened(5).lon)
    primf = ds["primf"].values
    assert np.isnan(primf[:, :, 0]).all()  # ocean column: the `_Fillvalue` fill is masked
    np.testing.assert_allclose(primf[2, :, 1:], 0.071, rtol=1e-6)

    cube = cube_of(config)
    window = Window(0, 0, 10, 10)
    values = cube.coarse_window("historical", 2001, window)
    assert values.shape == (len(LUH2_FRACTIONS) + 1, 10, 10)
    assert np.isnan(values[0, :, :5]).all()
    np.testing.assert_allclose(values[0, :, 5:], 0.0705, rtol=1e-6)
    np.testing.assert_allclose(values[-1, :, 5:], 0.03, rtol=1e-6)


def test_coarse_scenario_years_since_2015(world):
    config = make_config(world, **{"years.forward": [2016, 2018], "scenarios": ["ssp126"]})
    prepare_target(config, progress=False)
    ds = xr.open_zarr(prepare_coarse(config, scenario="ssp126", progress=False), chunks=None)
    assert list(ds["year"].values) == [2015, 2016, 2017, 2018]
    np.testing.assert_allclose(ds["urban"].values[1, 0, 1], 0.078, rtol=1e-6)
    with pytest.raises(ConfigError, match="ssp999"):
        prepare_coarse(config, scenario="ssp999", progress=False)


def _bad(name, index, value):
    def tweak(var, values, years):
        if var == name:
            values[index] = value
    return tweak


@pytest.mark.parametrize(
    ("tweak", "message"),
    [
        (
            _bad("c3ann", (3, 9, 10), 1.2),
            r"states\.nc: variable 'c3ann' is 1\.2 at year 2001, lat 43\.6250, lon 4\.6250, "
            r"outside \[0, 1\]",
        ),
        (
            _bad("pastr", (4, 10, 12), 1e20),
            r"variable 'pastr' is missing .* year 2002, lat 43\.3750, lon 5\.1250",
        ),
        (
            _bad("range", (2, 9, 11), 0.5),
            r"fractions primf\+.*\+icwtr sum to 1\.3.* year 2000, lat 43\.6250, lon 4\.8750",
        ),
        (
            _bad("secdf", (5, 12, 10), -0.3),
            r"variable 'secdf' is -0\.3 at year 2003, lat 42\.8750, lon 4\.6250, outside \[0, 1\]",
        ),
        (
            _bad("urban", (3, 8, 14), np.nan),
            r"variable 'urban' is missing \(fill value or NaN\) at year 2001, "
            r"lat 43\.8750, lon 5\.6250",
        ),
    ],
)
def test_coarse_bad_fractions(world, tweak, message):
    path = write_coarse(world / "raw" / "luh2" / "states.nc", tweak=tweak)
    config = make_config(world)
    prepare_target(config, progress=False)
    with pytest.raises(InputDataError, match=message) as info:
        prepare_coarse(config, scenario="historical", progress=False)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    assert not (Path(config.paths.cube) / "coarse" / "historical.zarr").exists()


LAKE_CELL = (2, 3)  # coarse (row, col) of the fine region: all water in the fine maps
ICE_CELL = (4, 5)  # no data (ice sheet) with some water: no land-use pixel either
COAST_CELL = (6, 6)  # 2 of 25 pixels of a land-use class, the rest ocean
SPARSE_ICE_CELL = (5, 2)  # an ice sheet mapped as sparse vegetation (66): icwtr 1 says ice


def _no_land_use_maps() -> dict:
    maps = {}
    for year in YEARS:
        codes = fine_map(year)
        codes[10:15, 15:20] = 77
        codes[20:25, 25:30] = 99
        codes[20:22, 25:27] = 77
        codes[30:35, 30:35] = 0
        codes[30, 30:32] = 22
        codes[25:30, 10:15] = 66
        maps[year] = codes
    return maps


def _fill_cells(cells, *, icwtr: float | None = 1.0):
    """LUH2 fill (1e20) in every state of the fine region's coarse ``cells``; ``icwtr``
    there (None: fill too)."""
    offset = (8, 8)  # the fine region starts 8 coarse cells into COARSE

    def tweak(name, values, years):
        for row, col in cells:
            values[:, offset[0] + row, offset[1] + col] = 1e20

    def static(path):
        write_coarse_static(path)
        with xr.open_dataset(path) as ds:
            ds = ds.load()
        for row, col in cells:
            ds["icwtr"][offset[0] + row, offset[1] + col] = 1e20 if icwtr is None else icwtr
        path.unlink()
        ds.to_netcdf(path, encoding={"icwtr": {"_FillValue": None}})

    return tweak, static


def test_coarse_all_water_or_ice_cells_need_no_land_use_data(world):
    """LUH2 gives a cell that is all water or ice (icwtr 1) no state values (fill): fine
    pixels of water (77), no data (99) or ocean (0) need none, and a cell with only a
    few land-use pixels (a coastline) may lack them too; a cell of mostly land-use
    pixels may not."""
    raw = world / "raw"
    write_fine_zip(raw, maps=_no_land_use_maps())
    tweak, static = _fill_cells([LAKE_CELL, ICE_CELL, COAST_CELL, SPARSE_ICE_CELL])
    write_coarse(raw / "luh2" / "states.nc", tweak=tweak)
    static(raw / "luh2" / "staticData_quarterdeg.nc")
    config = make_config(world)
    prepare_target(config, progress=False)
    ds = xr.open_zarr(prepare_coarse(config, scenario="historical", progress=False), chunks=None)
    for row, col in (LAKE_CELL, ICE_CELL, COAST_CELL, SPARSE_ICE_CELL):
        assert np.isnan(ds["primf"].values[:, row, col]).all()
        assert ds["icwtr"].values[row, col] == 1.0
    assert np.isfinite(ds["primf"].values[:, 1, 1]).all()

    # A cell of mostly land-use pixels (cell (1, 1)) without state values is refused,
    # unless the water fraction fills it.
    tweak, static = _fill_cells([LAKE_CELL, (1, 1)], icwtr=0.03)
    write_coarse(raw / "luh2" / "states.nc", tweak=tweak)
    static(raw / "luh2" / "staticData_quarterdeg.nc")
    with pytest.raises(
        InputDataError,
        match=r"states\.nc: variable 'primf' is missing \(fill value "
        r"or NaN\) at year 2000, lat 43\.6250, lon 4\.3750, "
        r"a cell whose fine pixels are mostly land-use classes",
    ):
        prepare_coarse(config, scenario="historical", progress=False)


def test_static_layer_may_lack_data_on_no_data_pixels(world):
    """An ice sheet (no data in the fine maps) where the soil map has no data either."""
    maps = {}
    for year in YEARS:
        maps[year] = fine_map(year)
        maps[year][20:30, 20:30] = 99
    write_fine_zip(world / "raw", maps=maps)
    write_clay_igh(world / "raw" / "static" / "clay.tif", hole=(5.02, 42.52, 5.48, 42.98))
    config = make_config(world)
    prepare_target(config, progress=False)
    clay = xr.open_zarr(prepare_static(config, progress=False), chunks=None)["clay"].values
    assert np.isnan(clay[22:28, 22:28]).all()


def test_coarse_missing_backward_years(world):
    config = make_config(world, **{"years.backward": [1990, 1999]})
    prepare_target(config, progress=False)
    with pytest.raises(InputDataError, match=r"lacks year\(s\) 1990\.\.1997"):
        prepare_coarse(config, scenario="historical", progress=False)


def test_decode_years_units(tmp_path):
    def ds(values, units):
        attrs = {"units": units} if units is not None else {}
        return xr.Dataset(coords={"time": ("time", np.asarray(values, dtype="float64"), attrs)})

    assert decode_years(ds([0, 1, 1165], "years since 850-01-01"), path="x")[1].tolist() == [
        850,
        851,
        2015,
    ]
    assert decode_years(ds([0, 85], "years since 2015-01-01 0:0:0"), path="x")[1].tolist() == [
        2015,
        2100,
    ]
    assert decode_years(ds([1960, 1961], "year"), path="x")[1].tolist() == [1960, 1961]
    assert decode_years(ds([1960, 1961], None), path="x", units="year")[1].tolist() == [1960, 1961]
    assert decode_years(ds([0, 5], None), path="x",
                        units="years since 2015-01-01")[1].tolist() == [2015, 2020]
    # units in the file win over the configured ones
    assert decode_years(ds([0, 5], "years since 850-01-01"), path="x",
                        units="year")[1].tolist() == [850, 855]
    assert decode_years(ds([0, 366], "days since 2000-01-01"), path="x")[1].tolist() == [2000, 2001]
    with pytest.raises(InputDataError, match="whole years"):
        decode_years(ds([0.5], "years since 850-01-01"), path="x")
    with pytest.raises(InputDataError, match="01-01"):
        decode_years(ds([0], "years since 850-07-01"), path="x")


def test_time_axis_without_units_rejected_unless_configured(world):
    """A time axis without `units` could count years since anything: one line naming the
    file and the variable, unless datasets.coarse.time_units says how to read it."""
    path = world / "raw" / "luh2" / "states.nc"
    with xr.open_dataset(path, decode_times=False) as ds:
        ds = ds.load()
    ds["time"] = ("time", ds["time"].values + 850.0, {})  # calendar years, units dropped
    path.unlink()
    ds.to_netcdf(path, encoding={name: {"_FillValue": None} for name in ds.variables})

    config = make_config(world)
    prepare_target(config, progress=False)
    for step in (lambda: validate_inputs(config),
                 lambda: prepare_coarse(config, scenario="historical", progress=False)):
        with pytest.raises(InputDataError) as info:
            step()
        message = str(info.value)
        assert "\n" not in message
        assert message.startswith(f"{path}: variable 'time' has no 'units' attribute")
        assert "datasets.coarse.time_units" in message
    assert not (Path(config.paths.cube) / "coarse" / "historical.zarr").exists()

    for units in ("year", {"historical": "year", "ssp126": "years since 2015-01-01"}):
        config = make_config(world, **{"datasets.coarse.time_units": units})
        validate_inputs(config)
        prepare_coarse(config, scenario="historical", progress=False)
        assert cube_of(config).coarse_years("historical") == YEARS
    # another reading of the same numbers gives other years (no silent default)
    config = make_config(world, **{"datasets.coarse.time_units": "years since 850-01-01"})
    with pytest.raises(
        InputDataError, match=r"holds no year in 2000-2003 \(file holds 2848-2855\)"
    ):
        prepare_coarse(config, scenario="historical", progress=False)


def test_validate_inputs(world):
    config = make_config(world, **{"years.forward": [2016, 2018], "scenarios": ["ssp126"]})
    summary = validate_inputs(config)
    assert summary["factor"] == 5 and summary["coarse_years"]["ssp126"] == [2015, 2020]
    config = make_config(world, **{"years.forward": [2016, 2030], "scenarios": ["ssp126"]})
    with pytest.raises(InputDataError, match=r"ssp126\.nc: lacks year\(s\) 2021\.\.2030"):
        validate_inputs(config)


def test_coarse_groups_must_sum_known_variables(world):
    groups = {"cropland": {"variables": ["crops", "c3ann"], "classes": [22]}}
    with pytest.raises(
        ConfigError, match=r"datasets\.coarse: groups\.cropland sums \['crops'\], which are neither"
    ):
        make_config(world, **{"datasets.coarse.groups": groups})
