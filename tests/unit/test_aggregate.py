"""Fine maps to fractions on a target grid: area weights, nesting, PFTs, LUH-layout NetCDF."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import xarray as xr

from ai4land.config import AggregateConfig, ClassesConfig
from ai4land.emulator.aggregate import TargetGrid, aggregate_maps, write_fractions
from ai4land.errors import ConfigError, InputDataError

CLASSES = ClassesConfig()
AGG = AggregateConfig()
CODES = [0, 11, 22, 33, 44, 55, 66, 77, 99]


def _maps(codes: np.ndarray, *, west: float, north: float, res: float, years=(2020,)):
    h, w = codes.shape[-2:]
    data = np.broadcast_to(codes, (len(years), h, w)).copy()
    return xr.DataArray(data, dims=("year", "lat", "lon"), coords={
        "year": list(years), "lat": north - (np.arange(h) + 0.5) * res,
        "lon": west + (np.arange(w) + 0.5) * res})


def _pixel_areas(maps: xr.DataArray, res: float) -> np.ndarray:
    top = np.radians(maps["lat"].values + res / 2)
    bottom = np.radians(maps["lat"].values - res / 2)
    return np.outer(np.sin(top) - np.sin(bottom), np.full(maps.sizes["lon"], math.radians(res)))


def test_nested_cells_are_exact_area_weighted_sums():
    rng = np.random.default_rng(0)
    codes = rng.choice(CODES, size=(60, 40)).astype("uint8")
    maps = _maps(codes, west=10.0, north=70.0, res=0.05)  # high latitude: areas vary
    ds = aggregate_maps(maps, {"res": 0.5, "bbox": [10, 67, 12, 70]}, classes=CLASSES,
                        aggregate=AGG)
    assert ds.sizes == {"time": 1, "lat": 6, "lon": 4, "bnds": 2}
    area = _pixel_areas(maps, 0.05)
    cells = lambda a: a.reshape(6, 10, 4, 10).sum(axis=(1, 3))  # noqa: E731
    for code, name in AGG.class_names.items():
        expected = cells(area * (codes == code)) / cells(area)
        np.testing.assert_allclose(ds[name].values[0], expected, rtol=1e-5, atol=1e-7)
        # a plain pixel count differs at this latitude: the weights matter
    counts = cells((codes == 22).astype(float)) / 100
    assert np.abs(ds["cropland"].values[0] - counts).max() > 1e-4
    total = sum(ds[n] for n in AGG.class_names.values()) + ds["ocean"] + ds["nodata"]
    np.testing.assert_allclose(total.values, 1.0, atol=1e-6)
    np.testing.assert_allclose(ds["coverage"].values, 1.0, atol=1e-6)
    # PFTs share out each class's area: they sum to the classes' total
    pfts = sum(ds[f"pft_{p}"] for p in AGG.pfts)
    classes = sum(ds[n] for n in AGG.class_names.values())
    np.testing.assert_allclose(pfts.values, classes.values, atol=1e-6)
    crop_share = np.asarray([AGG.crosswalk[c].get("grass", 0) for c in AGG.class_names])
    grass = sum(ds[n] * s for n, s in zip(AGG.class_names.values(), crop_share, strict=True))
    np.testing.assert_allclose(ds["pft_grass"].values, grass.values, atol=1e-6)


def test_cells_that_do_not_nest_are_split_by_area():
    # west half cropland, east half forest (0.2 degree wide map, 0.01 degree pixels)
    codes = np.where(np.arange(20)[None, :] < 10, 22, 44).repeat(20, axis=0).astype("uint8")
    maps = _maps(codes, west=0.0, north=0.2, res=0.01)
    grid = TargetGrid(lat_edges=np.array([0.3, 0.05, -0.1]),
                      lon_edges=np.array([-0.1, 0.07, 0.15, 0.3, 0.5]))
    ds = aggregate_maps(maps, grid, classes=CLASSES, aggregate=AGG)
    crop, forest = ds["cropland"].values[0], ds["forest"].values[0]
    # column 0 covers lon 0..0.07 of the map (all cropland); column 1 covers 0.07..0.15:
    # 0.03 of cropland and 0.05 of forest (whole pixel columns split by longitude)
    np.testing.assert_allclose(crop[:, 0], 1.0, atol=1e-9)
    np.testing.assert_allclose(crop[:, 1], 0.03 / 0.08, atol=1e-9)
    np.testing.assert_allclose(forest[:, 1], 0.05 / 0.08, atol=1e-9)
    # covered share of cell (0, 1): lat 0.05..0.2 of 0.05..0.3 (on the sphere), lon full
    covered = (math.sin(math.radians(0.2)) - math.sin(math.radians(0.05))) / (
        math.sin(math.radians(0.3)) - math.sin(math.radians(0.05)))
    assert ds["coverage"].values[0, 0, 1] == pytest.approx(covered, rel=1e-5)
    assert ds["coverage"].values[0, 0, 0] == pytest.approx(covered * 0.07 / 0.17, rel=1e-5)
    # the total area of each class is conserved
    cell_area = np.outer(np.abs(np.diff(np.sin(np.radians(grid.lat_edges)))),
                         np.radians(np.diff(grid.lon_edges)))
    pixel = _pixel_areas(maps, 0.01)
    for code, name in ((22, "cropland"), (44, "forest")):
        got = np.nansum(ds[name].values[0] * ds["coverage"].values[0] * cell_area)
        assert got == pytest.approx((pixel * (codes == code)).sum(), rel=1e-5)
    # heterogeneity: one class in columns 0 and 2, two in column 1, no map in column 3
    assert ds["n_classes"].values[0, 0, :3].tolist() == [1, 2, 1]
    assert ds["class_entropy"].values[0, 0, 0] == 0
    assert ds["class_entropy"].values[0, 0, 1] == pytest.approx(
        -(0.375 * math.log(0.375) + 0.625 * math.log(0.625)) / math.log(7), rel=1e-5)
    assert np.isnan(ds["cropland"].values[0, :, 3]).all()  # no map there: fill value
    assert (ds["coverage"].values[0, :, 3] == 0).all()


def test_written_as_luh_layout_netcdf(tmp_path):
    codes = np.full((20, 30), 44, dtype="uint8")
    codes[:, :10] = 0
    maps = _maps(codes, west=4.0, north=48.0, res=0.1, years=(2020, 2021))
    ds = aggregate_maps(maps, 1.0, classes=CLASSES, aggregate=AGG)
    path = write_fractions(ds, tmp_path / "fractions.nc")
    raw = xr.open_dataset(path, decode_times=False, mask_and_scale=False)
    assert raw["forest"].dims == ("time", "lat", "lon") and raw["forest"].dtype == np.float32
    assert raw["forest"].attrs["_FillValue"] == np.float32(1e20)
    assert raw["time"].attrs["units"] == "days since 1850-01-01 00:00:00"
    assert raw["lat"].attrs["bounds"] == "lat_bnds"
    decoded = xr.open_dataset(path, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))
    assert [t.year for t in decoded["time"].values] == [2020, 2021]
    assert [t.month * 100 + t.day for t in decoded["time"].values] == [101, 101]
    assert decoded["forest"].values[0].tolist() == [[0.0, 1.0, 1.0], [0.0, 1.0, 1.0]]
    assert decoded["ocean"].values[0, 0, 0] == pytest.approx(1.0)
    assert json.loads(decoded.attrs["class_types"])["44"] == "forest"
    with pytest.raises(InputDataError, match="name the output"):
        write_fractions(ds, tmp_path / "fractions.zarr")


def test_grid_file_with_irregular_latitudes(tmp_path):
    lat = np.array([47.9, 47.5, 46.8])  # uneven (as a Gaussian grid)
    lon = np.array([4.5, 5.5, 6.5])
    xr.Dataset(coords={"lat": lat, "lon": lon}).to_netcdf(tmp_path / "grid.nc")
    grid = TargetGrid.from_file(tmp_path / "grid.nc")
    np.testing.assert_allclose(grid.lat_edges, [48.1, 47.7, 47.15, 46.45])
    np.testing.assert_allclose(grid.lon_edges, [4.0, 5.0, 6.0, 7.0])


def test_crosswalk_must_share_out_whole_classes():
    with pytest.raises(ConfigError, match="crosswalk of class 22 sums to 0.9"):
        from ai4land.config import parse_config

        parse_config({"datasets": {"coarse": {"historical": "x.nc"},
                                   "fine": {"pattern": "{year}.tif", "years": [2000, 2001]}},
                      "years": {"train": [2000, 2000], "test": [2001, 2001]},
                      "aggregate": {"crosswalk": {22: {"crop": 0.9}}}})


def test_aggregate_command(tmp_path, capsys):
    from ai4land.cli import main

    codes = np.full((20, 30), 22, dtype="uint8")
    codes[10:] = 44
    maps = _maps(codes, west=4.0, north=48.0, res=0.1, years=(2020,)).to_dataset(name="lulc")
    maps.to_netcdf(tmp_path / "maps.nc")
    out = tmp_path / "fractions.nc"
    assert main(["aggregate", str(tmp_path / "maps.nc"), "--res", "1", "--extent", "4", "46",
                 "7", "48", "--out", str(out)]) == 0
    ds = xr.open_dataset(out)
    assert ds["cropland"].values[0].tolist() == [[1, 1, 1], [0, 0, 0]]
    assert ds["pft_crop"].values[0].tolist() == [[1, 1, 1], [0, 0, 0]]
    assert main(["aggregate", str(tmp_path / "missing.nc"), "--res", "1", "--out",
                 str(tmp_path / "x.nc")]) == 2
    assert "missing.nc: maps not found" in capsys.readouterr().err
