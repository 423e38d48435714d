"""The emulator's Python API on a tiny world: the product's maps, any region, clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr

from ai4land.emulator.core import Emulator
from ai4land.errors import GridError, InputDataError, ModelCardError
from ai4land.io.cog import write_cog
from ai4land.predict.run import run_predict

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from emulator_world import world_config, write_luh_file, write_model, write_world  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("emulator")
    config = write_world(root)
    return root, config, Emulator.from_model(root / "model")


def _cube_scenario(root: Path, scenario: str = "ssp126") -> xr.Dataset:
    return xr.open_zarr(root / "cube" / "coarse" / f"{scenario}.zarr", chunks=None)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def test_whole_extent_equals_the_product_chain(world):
    root, config, emulator = world
    ds = emulator.predict(_cube_scenario(root), years=(1966, 1967))
    assert list(ds["year"].values) == [1966, 1967]
    assert ds["lulc"].dtype == np.uint8 and ds["probability"].dtype == np.float32
    store = root / "results" / "product" / "ai4land.zarr"
    prior = None
    for year in (1966, 1967):
        out = root / "results" / "maps" / f"ai4land_ssp126_{year}.tif"
        run_predict(config, scenario="ssp126", year=year, model_dir=root / "model",
                    prior_path=prior, output=out, store=store)
        prior = out
        np.testing.assert_array_equal(ds["lulc"].sel(year=year).values, _read(out))
        for layer in ("probability", "entropy"):
            quantised = _read(out.with_name(f"{out.stem}_{layer}.tif"))
            emulated = ds[layer].sel(year=year).values
            np.testing.assert_array_equal(np.isnan(emulated), quantised == 255)
            np.testing.assert_array_equal(np.rint(np.nan_to_num(emulated) * 254)[quantised < 255],
                                          quantised[quantised < 255])
    reports = json.loads(ds.attrs["reports"])
    assert [r["year"] for r in reports] == [1966, 1967]
    after = reports[0]["conservation"]["after"]["delta_target"]
    assert after["mae"] <= reports[0]["conservation"]["before"]["delta_target"]["mae"]


def test_region_is_cut_to_the_bbox_and_harmonised(world):
    root, config, emulator = world
    bbox = (4.13, 47.52, 4.41, 47.85)  # not on coarse-cell edges
    ds = emulator.predict(_cube_scenario(root), bbox=bbox, years=1966)
    assert ds.sizes == {"year": 1, "lat": 33, "lon": 28}
    assert ds["lon"].values[0] == pytest.approx(4.135) and ds["lat"].values[0] == pytest.approx(
        47.845
    )
    codes = ds["lulc"].values[0]
    assert set(np.unique(codes)) <= set(config.classes.predicted) | {0, 99}
    report = json.loads(ds.attrs["reports"])[0]
    assert report["conservation"]["after"]["delta_target"]["mae"] < 0.03
    # the region is the whole coarse cells around the bbox: the same maps as a run on them
    cells = emulator.predict(_cube_scenario(root), bbox=(4.08, 47.52, 4.48, 47.92), years=1966)
    np.testing.assert_array_equal(
        cells["lulc"].sel(lat=ds["lat"], lon=ds["lon"], method="nearest").values, ds["lulc"].values
    )


def test_luh_format_file_gives_the_same_maps(world, tmp_path):
    root, config, emulator = world
    path = write_luh_file(root / "cube", "ssp126", tmp_path / "states.nc")
    from_file = emulator.predict(path, years=(1966, 1967), bbox=(4.0, 47.5, 4.4, 48.0))
    in_memory = emulator.predict(_cube_scenario(root), years=(1966, 1967),
                                 bbox=(4.0, 47.5, 4.4, 48.0))
    xr.testing.assert_equal(from_file, in_memory.assign_attrs(from_file.attrs))


def test_backward_chain_and_prior(world, tmp_path):
    root, config, emulator = world
    scenario = _cube_scenario(root, "historical")
    ds = emulator.predict(scenario, years=(1957, 1959), bbox=(4.0, 47.6, 4.32, 48.0))
    reports = json.loads(ds.attrs["reports"])
    assert [r["year"] for r in reports] == [1959, 1958, 1957]  # chain order
    assert {r["direction"] for r in reports} == {-1} and reports[0]["anchor_year"] == 1960
    assert list(ds["year"].values) == [1957, 1958, 1959]
    # an explicit prior equal to the observed anchor map changes nothing; another one does
    observed = xr.open_zarr(root / "cube" / "target.zarr", chunks=None)["lulc"].sel(year=1960)
    region = observed.sel(lat=ds["lat"], lon=ds["lon"], method="nearest").values
    same = emulator.predict(scenario, years=1959, bbox=(4.0, 47.6, 4.32, 48.0), prior=region)
    np.testing.assert_array_equal(same["lulc"].values[0], ds["lulc"].sel(year=1959).values)
    as_map = emulator.predict(scenario, years=1959, bbox=(4.0, 47.6, 4.32, 48.0),
                              prior=observed.transpose("lon", "lat"))  # lat/lon, any extent
    np.testing.assert_array_equal(as_map["lulc"].values, same["lulc"].values)
    cog = write_cog(tmp_path / "prior.tif", observed.values, emulator.cube.fine_grid,
                    legend=config.classes.legend)  # a GeoTIFF of the whole cube
    from_file = emulator.predict(scenario, years=1959, bbox=(4.0, 47.6, 4.32, 48.0), prior=cog)
    np.testing.assert_array_equal(from_file["lulc"].values, same["lulc"].values)
    other = emulator.predict(scenario, years=1959, bbox=(4.0, 47.6, 4.32, 48.0),
                             prior=np.where(region == 0, 0, 22).astype("uint8"))
    assert (other["probability"].values != same["probability"].values).any()


def test_model_without_prior_runs_single_years(world, tmp_path):
    root, config, emulator = world
    write_model(tmp_path / "single", config, dropped_inputs=["prior"])
    single = Emulator.from_model(tmp_path / "single")
    ds = single.predict(_cube_scenario(root, "historical"), years=[1957, 1962],
                        bbox=(4.0, 47.6, 4.32, 48.0))
    reports = json.loads(ds.attrs["reports"])
    assert [(r["year"], r["anchor_year"], r["direction"]) for r in reports] == [
        (1957, 1960, -1), (1962, 1962, 1)]
    # an observed year is harmonised to its own map's fractions (delta: LUH(t) - LUH(t) = 0)
    assert reports[1]["conservation"]["after"]["delta_target"]["mae"] < 0.03
    with pytest.raises(InputDataError, match="trained without the prior"):
        single.predict(_cube_scenario(root), years=1966, prior=np.zeros((64, 64), "uint8"))


def test_cube_is_found_beside_the_model_and_config_from_the_card(world, tmp_path, monkeypatch):
    root, config, emulator = world
    monkeypatch.chdir(tmp_path)  # a checkout's own resources/cube (after `make demo`) wins first
    run = tmp_path / "run"
    (run / "resources").mkdir(parents=True)
    (run / "resources" / "cube").symlink_to(root / "cube")
    relative = world_config(run, cube="resources/cube")
    write_model(run / "results" / "model", config,
                card_config=relative.model_dump(mode="json"))
    found = Emulator.from_model(run / "results" / "model")
    assert found.cube.paths.root == run / "resources" / "cube"  # via the model's parents
    assert found.describe()["observed_years"] == list(range(1960, 1966))
    write_model(tmp_path / "old", config, card_config={})
    with pytest.raises(ModelCardError, match="holds no config.*pass config="):
        Emulator.from_model(tmp_path / "old")
    assert Emulator.from_model(tmp_path / "old", config=config).config.hash() == config.hash()


@pytest.mark.parametrize("case, error, message", [
    ("bbox", GridError, r"bbox \[3.5, 47, 4.2, 47.5\] reaches outside the model's static data"),
    ("years", InputDataError, r"no data for year\(s\) 1971-1972 \(holds 1964-1970\)"),
    ("observed", InputDataError, r"start at or before the first observed year 1960"),
    ("variable", InputDataError, r"variable\(s\) c3ann, pastr missing"),
    ("resolution", GridError, r"0.16 degree cells, the model's coarse grid 0.08"),
    ("offset", GridError, r"west edges are offset by 0.500 cells"),
    ("range", InputDataError, r"variable 'urban' is 1.5 in year 1966 .* outside \[0, 1\]"),
])
def test_bad_requests_are_one_line_errors(world, case, error, message):
    root, config, emulator = world
    scenario = _cube_scenario(root).load()
    kwargs = {"bbox": (4.0, 47.6, 4.3, 48.0), "years": 1966}
    if case == "bbox":
        kwargs["bbox"] = (3.5, 47.0, 4.2, 47.5)
    elif case == "years":
        kwargs["years"] = (1969, 1972)
    elif case == "observed":
        kwargs["years"] = (1960, 1961)
    elif case == "variable":
        scenario = scenario.drop_vars(["c3ann", "pastr"])
    elif case == "resolution":
        scenario = scenario.coarsen(lat=2, lon=2).mean()
    elif case == "offset":
        scenario = scenario.assign_coords(lon=scenario["lon"] + 0.04)
    elif case == "range":
        scenario["urban"][2, 0, 0] = 1.5
    with pytest.raises(error, match=message) as info:
        emulator.predict(scenario, **kwargs)
    assert "\n" not in str(info.value)


def test_package_exports_the_emulator_lazily():
    import subprocess

    code = ("import sys, ai4land; heavy = {'torch', 'xarray'} & set(sys.modules); "
            "assert not heavy, heavy; from ai4land.emulator import Emulator; "
            "assert ai4land.Emulator is Emulator")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("suffix", [".nc", ".zarr", ".tif"])
def test_emulate_command_writes_each_format(world, tmp_path, capsys, suffix):
    from ai4land.cli import main
    from ai4land.emulator.core import cog_paths

    root, config, emulator = world
    scenario = write_luh_file(root / "cube", "ssp126", tmp_path / "ssp126.nc")
    bbox = (4.05, 47.55, 4.45, 47.95)
    out = tmp_path / f"maps{suffix}"
    assert main(["emulate", "--model", str(root / "model"), "--scenario", str(scenario),
                 "--bbox", *map(str, bbox), "--years", "1966", "1967", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["year"] for line in lines[:2]] == [1966, 1967]
    expected = emulator.predict(scenario, bbox=bbox, years=(1966, 1967))
    if suffix == ".tif":
        for year in (1966, 1967):
            path = cog_paths(out, year)
            np.testing.assert_array_equal(_read(path), expected["lulc"].sel(year=year).values)
            quantised = _read(path.with_name(f"{path.stem}_entropy.tif"))
            np.testing.assert_array_equal(quantised == 255,
                                          np.isnan(expected["entropy"].sel(year=year).values))
        return
    written = (xr.open_dataset(out) if suffix == ".nc" else xr.open_zarr(out, chunks=None)).load()
    assert written["lulc"].dtype == np.uint8
    for name in ("lulc", "probability", "entropy"):
        np.testing.assert_allclose(written[name].values, expected[name].values, atol=1e-6)
    assert [r["year"] for r in json.loads(written.attrs["reports"])] == [1966, 1967]


def test_emulate_command_errors_are_one_line(world, tmp_path, capsys):
    from ai4land.cli import main

    root, config, emulator = world
    scenario = write_luh_file(root / "cube", "ssp126", tmp_path / "ssp126.nc")
    base = ["emulate", "--model", str(root / "model"), "--scenario", str(scenario),
            "--years", "1966"]
    assert main([*base, "--out", str(tmp_path / "maps.png")]) == 2
    assert main([*base, "--bbox", "10", "40", "11", "41", "--out", str(tmp_path / "m.nc")]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(e.startswith("ai4land: error: ") for e in errors)
    assert "unknown output format '.png'" in errors[0]
    assert "outside the model's static data" in errors[1]
    assert not (tmp_path / "m.nc").exists()
