"""COG writing and validation, and the product Zarr store (concurrent region writes)."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest
import rasterio
import rioxarray
import xarray as xr

from ai4land.config import ClassesConfig
from ai4land.encoding import dequantise, quantise
from ai4land.errors import OutputError
from ai4land.grid import Grid
from ai4land.io.cog import codes_present, validate_cog, write_cog, write_probability_cogs
from ai4land.io.zarr_store import init_store, read_year, write_year

LEGEND = ClassesConfig().legend
GRID = Grid(west=4.0, north=48.0, res=0.01, width=300, height=280)


def _codes(seed=0, shape=GRID.shape):
    rng = np.random.default_rng(seed)
    codes = rng.choice([0, 11, 22, 33, 44, 55, 66, 77], size=shape).astype("uint8")
    codes[:10, :10] = 99
    return codes


def test_cog_layout_codes_and_metadata(tmp_path):
    codes = _codes()
    tags = {"AI4LAND_SCENARIO": "ssp126", "AI4LAND_YEAR": 2020, "AI4LAND_CONFIG_HASH": "abc"}
    path = write_cog(tmp_path / "map.tif", codes, GRID, legend=LEGEND, tags=tags)
    assert validate_cog(path) == []
    with rasterio.open(path) as src:
        assert src.dtypes == ("uint8",) and src.nodata == 99
        assert src.block_shapes[0] == (256, 256)
        assert src.overviews(1)  # 300 px > one 256 block
        np.testing.assert_array_equal(src.read(1), codes)
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert src.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] in ("DEFLATE", "ZSTD")
        assert src.compression is not None
        colormap = src.colormap(1)
        assert colormap[44] == (34, 139, 34, 255) and colormap[99][3] == 0
        all_tags = src.tags()
        assert all_tags["CLASS_44"] == "forest" and all_tags["AI4LAND_YEAR"] == "2020"
        assert "TIFFTAG_DATETIME" not in all_tags
        assert src.descriptions == ("lulc",)
        assert src.crs.to_epsg() == 4326 and src.transform == GRID.transform
        # Mode overviews keep class codes (no averaged, unknown codes).
        overview = src.read(1, out_shape=(GRID.height // 2, GRID.width // 2))
        assert set(np.unique(overview)) <= set(LEGEND)
    # No leftovers from the temp-then-rename write.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.tif"]


def test_cog_bytes_are_deterministic(tmp_path):
    codes = _codes(1)
    a = write_cog(tmp_path / "a.tif", codes, GRID, legend=LEGEND, tags={"x": 1})
    b = write_cog(tmp_path / "b.tif", codes, GRID, legend=LEGEND, tags={"x": 1})
    assert a.read_bytes() == b.read_bytes()


def test_cog_rejects_unknown_codes(tmp_path):
    codes = _codes()
    codes[0, 0] = 42
    with pytest.raises(ValueError, match="42"):
        write_cog(tmp_path / "bad.tif", codes, GRID, legend=LEGEND)
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="300"):  # not uint8: named as it is
        write_cog(tmp_path / "bad.tif", codes.astype("int64") + 258, GRID, legend=LEGEND)


def test_codes_present_marks_each_code_that_occurs():
    codes = np.array([[0, 11, 11], [99, 255, 11]], dtype="uint8")[:, ::2]  # a strided view
    assert np.flatnonzero(codes_present(codes)).tolist() == [0, 11, 99]


def test_validate_cog_flags_plain_geotiff(tmp_path):
    path = tmp_path / "plain.tif"
    with rasterio.open(path, "w", driver="GTiff", width=300, height=280, count=1,
                       dtype="uint8", crs="EPSG:4326", transform=GRID.transform) as dst:
        dst.write(_codes(), 1)
    problems = validate_cog(path)
    assert any("LAYOUT=COG" in p for p in problems)
    assert any("tiled" in p for p in problems)
    assert any("overviews" in p for p in problems)


def test_probability_cogs(tmp_path):
    rng = np.random.default_rng(2)
    prob = rng.random(GRID.shape).astype("float32")
    prob[0, 0] = np.nan
    ent = rng.random(GRID.shape).astype("float32")
    p_path, e_path = write_probability_cogs(tmp_path / "m.tif", prob, ent, GRID)
    assert p_path.name == "m_probability.tif" and e_path.name == "m_entropy.tif"
    for path, values in ((p_path, prob), (e_path, ent)):
        assert validate_cog(path) == []
        with rasterio.open(path) as src:
            stored = src.read(1)
            assert src.nodata == 255
            # GDAL's own scale/offset (not only tags), through the streamed-overview path
            assert src.scales == (1 / 254,) and src.offsets == (0.0,)
            assert src.overviews(1)
        assert stored[0, 0] == 255 or path == e_path
        np.testing.assert_allclose(dequantise(stored), values, atol=0.5 / 254 + 1e-6)
        # a reader that applies GDAL scaling (rioxarray, as QGIS does) sees [0, 1]
        with rioxarray.open_rasterio(path, mask_and_scale=True) as scaled:
            np.testing.assert_allclose(scaled.values[0], values, atol=0.5 / 254 + 1e-6)
    assert quantise(np.array([0.0, 1.0, np.nan])).tolist() == [0, 254, 255]


SCENARIOS = ["historical", "ssp126"]
YEARS = [1958, 1959, 2020, 2021]
SMALL = Grid(west=4.0, north=48.0, res=0.01, width=40, height=36)


def _write_job(args):
    path, scenario, year = args
    codes = _codes(year, SMALL.shape)
    prob = (codes / 100.0).astype("float32")
    write_year(path, scenario=scenario, year=year, codes=codes, probability=prob, entropy=prob)
    return year


def _init_and_write_job(args):
    # Every job creates the store if it is missing (racing the others), then writes.
    init_store(args[0], grid=SMALL, scenarios=SCENARIOS, years=YEARS, tile=16, legend=LEGEND)
    return _write_job(args)


def test_store_concurrent_init_and_region_writes(tmp_path):
    path = tmp_path / "product.zarr"
    jobs = [(path, "historical", 1958), (path, "historical", 1959),
            (path, "ssp126", 2020), (path, "ssp126", 2021)]
    with mp.get_context("spawn").Pool(4) as pool:
        assert sorted(pool.map(_init_and_write_job, jobs)) == [1958, 1959, 2020, 2021]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    for _, scenario, year in jobs:
        np.testing.assert_array_equal(read_year(path, scenario=scenario, year=year),
                                      _codes(year, SMALL.shape))
    # Slots never written read as no data.
    assert (read_year(path, scenario="ssp126", year=1958) == 99).all()
    ds = xr.open_zarr(path, mask_and_scale=False)
    assert ds["lulc"].dims == ("scenario", "year", "lat", "lon")
    assert ds["lulc"].dtype == np.uint8
    assert ds["lulc"].encoding["chunks"] == (1, 1, 16, 16)
    assert list(ds["lulc"].attrs["flag_values"]) == sorted(LEGEND)
    assert "forest" in ds["lulc"].attrs["flag_meanings"]
    assert ds["spatial_ref"].attrs["epsg"] == 4326
    np.testing.assert_allclose(ds["lat"].values, SMALL.lat)
    decoded = xr.open_zarr(path)  # CF decoding: probability as floats in [0, 1]
    # the CRS is visible on a default open (CF grid_mapping -> spatial_ref coordinate)
    assert decoded.rio.crs.to_epsg() == 4326
    assert decoded["lulc"].rio.crs.to_epsg() == 4326
    assert decoded["probability"].rio.transform().a == pytest.approx(SMALL.res)
    assert decoded["probability"].rio.bounds() == pytest.approx(SMALL.bounds)
    p = decoded["probability"].sel(scenario="ssp126", year=2020).values
    np.testing.assert_allclose(p, np.round(_codes(2020, SMALL.shape) / 100 * 254) / 254,
                               atol=1e-6)


def test_store_is_deterministic_and_idempotent(tmp_path):
    def build(path):
        init_store(path, grid=SMALL, scenarios=SCENARIOS, years=YEARS, tile=16, legend=LEGEND)
        _write_job((path, "ssp126", 2020))
        return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*"))
                if p.is_file()}

    a = build(tmp_path / "a.zarr")
    b = build(tmp_path / "b.zarr")
    assert a == b
    init_store(tmp_path / "a.zarr", grid=SMALL, scenarios=SCENARIOS, years=YEARS, tile=16,
               legend=LEGEND)  # again: keeps the data
    assert build(tmp_path / "a.zarr") == a
    with pytest.raises(OutputError, match="year"):
        init_store(tmp_path / "a.zarr", grid=SMALL, scenarios=SCENARIOS, years=[1, 2],
                   legend=LEGEND)
    with pytest.raises(OutputError, match="year 1999"):
        write_year(tmp_path / "a.zarr", scenario="ssp126", year=1999,
                   codes=np.zeros(SMALL.shape, "uint8"))


def test_init_store_appends_a_new_scenario_and_keeps_written_years(tmp_path):
    grid = Grid(west=0.0, north=10.0, res=0.5, width=20, height=20)
    legend = LEGEND
    store = tmp_path / "p.zarr"
    init_store(store, grid=grid, scenarios=["historical", "ssp126"], years=[1959, 2020],
               tile=8, legend=legend)
    write_year(store, scenario="ssp126", year=2020, codes=np.full((20, 20), 22, np.uint8))
    with pytest.raises(OutputError, match=r"lacks scenarios \['ssp585'\]"):
        init_store(store, grid=grid, scenarios=["historical", "ssp126", "ssp585"],
                   years=[1959, 2020], tile=8, legend=legend)
    init_store(store, grid=grid, scenarios=["historical", "ssp126", "ssp585"],
               years=[1959, 2020], tile=8, legend=legend, grow=True)
    assert list(xr.open_zarr(store)["scenario"].values) == ["historical", "ssp126", "ssp585"]
    assert (read_year(store, scenario="ssp126", year=2020) == 22).all()
    assert (read_year(store, scenario="ssp585", year=2020) == 99).all()
    write_year(store, scenario="ssp585", year=2020, codes=np.full((20, 20), 33, np.uint8))
    assert (read_year(store, scenario="ssp585", year=2020) == 33).all()


def test_chunk_files_written_directly_equal_zarrs_own(tmp_path, monkeypatch):
    """The writer's direct chunk files are the bytes zarr writes itself: interior and
    edge chunks, all-fill chunks left out (and removed when overwritten), band by band
    on chunk rows and, for a band off the chunk grid, through zarr."""
    from ai4land.io.zarr_store import StoreWriter

    written = []
    write_chunks = StoreWriter._write_chunks

    def build(path, direct):
        if direct:  # record which writes took the direct path
            monkeypatch.setattr(StoreWriter, "_write_chunks",
                                lambda *args: written.append(write_chunks(*args)) or written[-1])
        else:
            monkeypatch.setattr(StoreWriter, "_write_chunks", lambda *args: False)
        init_store(path, grid=SMALL, scenarios=SCENARIOS, years=YEARS, tile=16, legend=LEGEND)
        writer = StoreWriter(path, scenario="ssp126", year=2020)
        codes = _codes(2020, SMALL.shape)
        codes[:16, :16] = 99  # one chunk of fill only
        for row in (0, 16, 32):  # the last band is the 4 rows at the bottom edge
            writer.write(row, {"lulc": codes[row : row + 16]})
        writer.write(0, {"lulc": np.full((16, 40), 99, "uint8")})  # rewritten as fill
        writer.write(5, {"lulc": codes[5:9]})  # off the chunk grid: zarr merges it
        monkeypatch.undo()
        return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*"))
                if p.is_file()}

    direct, zarrs = build(tmp_path / "direct.zarr", True), build(tmp_path / "zarr.zarr", False)
    assert written == [True, True, True, True, False]
    assert direct == zarrs
    assert not [p for p in direct if p.name.endswith(".tmp")]
    expected = _codes(2020, SMALL.shape)
    expected[:16] = 99
    expected[5:9] = _codes(2020, SMALL.shape)[5:9]
    expected[:16, :16][5:9] = 99
    np.testing.assert_array_equal(read_year(tmp_path / "direct.zarr", scenario="ssp126",
                                            year=2020), expected)
