"""End-to-end prediction jobs on a tiny cube with a tiny random U-Net."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from ai4land.config import parse_config
from ai4land.errors import GridError, InputDataError, ModelCardError, OutputError
from ai4land.grid import Grid, Window
from ai4land.io.cog import validate_cog, write_cog
from ai4land.io.cube import Cube
from ai4land.io.zarr_store import read_year
from ai4land.models import ModelCard, UNet, save_model
from ai4land.predict.run import run_predict
from ai4land.samples.features import input_channel_names

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from tiny_cube import rewrite_coarse_years, write_tiny_cube  # noqa: E402

OBSERVED = range(1960, 1966)


def _config(root: Path, years=None, **predict):
    data = {
        "run_name": "tiny",
        "paths": {"raw": str(root / "raw"), "cube": str(root / "cube"),
                  "results": str(root / "results")},
        "datasets": {
            "coarse": {"historical": "unused.nc", "scenarios": {"ssp126": "unused2.nc"}},
            "fine": {"pattern": "unused_{year}.tif", "years": [OBSERVED[0], OBSERVED[-1]]},
        },
        "years": {"train": [1960, 1963], "test": [1964, 1965], "backward": [1958, 1959],
                  "forward": [1966, 1967]},
        "scenarios": ["ssp126"],
        "predict": {"tile_size": 32, "overlap": 8, "batch_size": 4, "device": "cpu",
                    **predict},
    }
    data["years"].update(years or {})
    return parse_config(data, source="test")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    write_tiny_cube(root / "cube", size=48, factor=8, years=OBSERVED,
                    scenarios=("historical", "ssp126"))
    rewrite_coarse_years(root / "cube", "historical", list(range(1958, 1966)))
    rewrite_coarse_years(root / "cube", "ssp126", list(range(1964, 1968)))
    config = _config(root)
    cube = Cube.from_config(config)
    names = input_channel_names(cube, list(config.classes.predicted))
    torch.manual_seed(0)
    model = UNet(len(names), len(config.classes.predicted), base_channels=4, depth=2)
    card = ModelCard(input_channels=names, classes=list(config.classes.predicted),
                     architecture=model.config, tile_size=32)
    save_model(root / "model", model, card)
    return root, config


def _job(root, config, scenario, year, prior=None, **kwargs):
    out = root / "results" / "maps" / scenario / f"ai4land_{scenario}_{year}.tif"
    return out, run_predict(config, scenario=scenario, year=year, model_dir=root / "model",
                            prior_path=prior, output=out,
                            store=root / "results" / "product" / "ai4land.zarr", **kwargs)


def test_forward_chain_writes_products(world):
    root, config = world
    out, report = _job(root, config, "ssp126", 1966)
    assert validate_cog(out) == []
    for suffix in ("_probability.tif", "_entropy.tif"):
        assert validate_cog(out.with_name(out.stem + suffix)) == []
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["direction"] == 1 and saved["prior"] == "observed 1965"
    after = saved["conservation"]["after"]["delta_target"]
    before = saved["conservation"]["before"]["delta_target"]
    assert after["mae"] <= before["mae"] + 1e-12
    assert after["max"] <= before["max"] + 1e-12
    assert after["mae"] < 0.02  # only whole-pixel rounding is left
    # the region's group fractions (the published trajectories): the harmonised map
    # keeps the target up to rounding; every group of each, summing to at most 1
    groups = saved["group_fractions"]
    assert set(groups) == {"map", "delta_target", "luh"}
    assert groups["map"].keys() == groups["delta_target"].keys() == groups["luh"].keys()
    assert 0.5 < sum(groups["map"].values()) <= 1 + 1e-6
    for name, value in groups["map"].items():
        assert value == pytest.approx(groups["delta_target"][name], abs=0.02), name
    with rasterio.open(out) as src:
        codes = src.read(1)
    cube = Cube.from_config(config)
    land = cube.land_mask_window(Window(0, 0, 48, 48))
    assert (codes[~land] == 0).all()
    assert set(np.unique(codes[land])) <= set(config.classes.predicted) | {99}
    stored = read_year(root / "results" / "product" / "ai4land.zarr", scenario="ssp126",
                       year=1966)
    np.testing.assert_array_equal(stored, codes)

    # changed_pixels: valid pixels whose class differs from the prior (here the observed
    # map of 1965), not from the network's argmax (harmonize_reassigned_pixels)
    valid = ~np.isin(codes, [0, 99])
    observed = cube.target_window(1965, Window(0, 0, 48, 48))
    assert saved["changed_pixels"] == int(((codes != observed) & valid).sum())
    assert saved["harmonize_reassigned_pixels"] == report["harmonize_reassigned_pixels"]
    # allocation "change": the tiny cube's coarse data ask no net change 1965 -> 1966, so
    # the first year keeps the observed map where the random network's argmax differs
    assert saved["changed_pixels"] == 0 < saved["harmonize_reassigned_pixels"]
    assert "timings_s" in report and "timings_s" not in saved  # the file is reproducible

    # Next year uses this map as prior; deterministic re-run gives identical bytes.
    out2, report2 = _job(root, config, "ssp126", 1967, prior=out)
    assert report2["prior"] == out.name
    with rasterio.open(out2) as src:
        codes2 = src.read(1)
    assert report2["changed_pixels"] == int(((codes2 != codes) & ~np.isin(codes2, [0, 99])).sum())
    first = out2.read_bytes()
    first_report = out2.with_suffix(".json").read_bytes()
    _job(root, config, "ssp126", 1967, prior=out)
    assert out2.read_bytes() == first
    assert out2.with_suffix(".json").read_bytes() == first_report


def test_backward_chain_and_no_harmonisation(world):
    root, config = world
    out, report = _job(root, config, "historical", 1959)
    assert report["direction"] == -1 and report["prior"] == "observed 1960"
    plain = _config(root, harmonize=False)
    _, report = _job(root, plain, "historical", 1958, prior=out)
    assert report["harmonize_reassigned_pixels"] == report["harmonize_rejections"] == 0
    assert report["conservation"]["before"] == report["conservation"]["after"]


def test_prior_on_another_grid_is_refused(world, tmp_path):
    root, config = world
    other = Grid(west=5.0, north=48.0, res=0.01, width=48, height=48)
    bad = write_cog(tmp_path / "bad.tif", np.full((48, 48), 22, "uint8"), other,
                    legend=config.classes.legend)
    with pytest.raises(GridError, match="prior map .*bad.tif is on grid") as info:
        _job(root, config, "ssp126", 1967, prior=bad)
    assert "\n" not in str(info.value)


def test_missing_year_is_a_clear_error(world):
    root, config = world
    with pytest.raises(InputDataError, match="ssp126.zarr: scenario 'ssp126' has no coarse "
                       "data for year 1970 .holds 1964-1967.") as info:
        _job(root, config, "ssp126", 1970)
    assert "\n" not in str(info.value)
    assert not (root / "results" / "maps" / "ssp126" / "ai4land_ssp126_1970.json").exists()


def test_observed_years_are_predicted_harmonised_to_their_own_map(world, tmp_path):
    from ai4land.predict.harmonize import class_groups, map_group_fractions

    root, _ = world
    config = _config(root, years={"observed": [1960, 1962]})
    assert config.product_years == [1958, 1959, 1960, 1961, 1962, 1966, 1967]
    cube = Cube.from_config(config)
    groups = class_groups(config.datasets.coarse.groups, list(config.classes.predicted))
    land = cube.land_mask_window(Window(0, 0, 48, 48))
    for year, prior in ((1962, "observed 1961"), (1960, "none")):
        out = tmp_path / "maps" / f"ai4land_historical_{year}.tif"
        report = run_predict(config, scenario="historical", year=year,
                             model_dir=root / "model", prior_path=None, output=out,
                             store=tmp_path / "ai4land.zarr")
        assert report["prior"] == prior and report["direction"] == 1
        assert report["anchor_year"] == year and report["anchor_scenario"] == "historical"
        with rasterio.open(out) as src:
            codes = src.read(1)
        np.testing.assert_array_equal(
            read_year(tmp_path / "ai4land.zarr", scenario="historical", year=year), codes)
        # each cell's class shares are those of the year's observed map (whole pixels)
        observed = cube.target_window(year, Window(0, 0, 48, 48))
        mapped, n = map_group_fractions(codes, groups, factor=cube.factor, valid=land)
        target, _ = map_group_fractions(observed, groups, factor=cube.factor, valid=land)
        assert np.abs(mapped - target)[:, n > 0].max() <= 1 / cube.factor**2 + 1e-9
        assert report["conservation"]["after"]["delta_target"]["mae"] < 0.02


def test_a_year_outside_the_product_is_one_line(world, tmp_path):
    root, config = world
    with pytest.raises(InputDataError, match="1962 is an observed year: add it to "
                       "years.observed") as info:
        run_predict(config, scenario="historical", year=1962, model_dir=root / "model",
                    prior_path=None, output=tmp_path / "x.tif", store=tmp_path / "s.zarr")
    assert "\n" not in str(info.value)
    # a config without any map to predict (one observed year's data, say)
    nothing = _config(root, years={"backward": None, "forward": None})
    assert nothing.product_years == []
    with pytest.raises(InputDataError, match="not in the config's product") as info:
        run_predict(nothing, scenario="historical", year=1962, model_dir=root / "model",
                    prior_path=None, output=tmp_path / "x.tif", store=tmp_path / "s.zarr")
    assert "\n" not in str(info.value)
    assert not (tmp_path / "s.zarr").exists()


def test_model_with_other_inputs_is_refused(world, tmp_path):
    root, config = world
    model = UNet(3, 7, base_channels=4, depth=2)
    card = ModelCard(input_channels=["a", "b", "c"], classes=list(config.classes.predicted),
                     architecture=model.config, tile_size=32)
    save_model(tmp_path / "m", model, card)
    with pytest.raises(ModelCardError, match=r"m/model_card.json: input channel 0") as info:
        run_predict(config, scenario="ssp126", year=1966, model_dir=tmp_path / "m",
                    prior_path=None, output=tmp_path / "x.tif", store=tmp_path / "s.zarr")
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_model_with_demand_channels_sees_the_years_demand(world, tmp_path, monkeypatch):
    """A model trained with train.demand gets, in a chain year, the finaliser's demand
    against the chain's previous map (here the observed anchor map); one without gets
    none; a demand model on a config whose groups differ is refused by name."""
    import ai4land.predict.run as predict_run
    from ai4land.predict.finalise import Finaliser
    from ai4land.predict.harmonize import class_groups, offset_weight

    root, config = world
    cube = Cube.from_config(config)
    predicted = list(config.classes.predicted)
    groups = class_groups(config.datasets.coarse.groups, predicted)
    names = input_channel_names(cube, predicted, demand=groups.names)
    model = UNet(len(names), len(predicted), base_channels=4, depth=2)
    save_model(tmp_path / "m", model, ModelCard(input_channels=names, classes=predicted,
                                                architecture=model.config, tile_size=32))
    seen = []
    original = predict_run.probability_bands

    def spy(*args, **kwargs):
        seen.append(kwargs.get("demand"))
        return original(*args, **kwargs)

    monkeypatch.setattr(predict_run, "probability_bands", spy)
    run_predict(config, scenario="ssp126", year=1966, model_dir=tmp_path / "m",
                prior_path=None, output=tmp_path / "a" / "x.tif", store=tmp_path / "s.zarr")
    whole = Window(0, 0, *cube.fine_grid.shape)
    finaliser = Finaliser(
        config, cube=cube, anchor=1965, classes=predicted, groups=groups, layers=["lulc"],
        weight=offset_weight(1966, 1965, decay_years=config.predict.harmonize_decay_years),
        cells=cube.coarse_cells("ssp126", 1966, whole),
        anchor_cells=cube.coarse_cells("historical", 1965, whole))
    np.testing.assert_array_equal(seen[0], finaliser.demand(cube.target_window(1965, whole)))
    _job(root, config, "ssp126", 1966)
    assert seen[1] is None  # the plain model
    other = config.model_copy(update={"datasets": config.datasets.model_copy(update={
        "coarse": config.datasets.coarse.model_copy(update={
            "groups": dict(list(config.datasets.coarse.groups.items())[1:])})})})
    with pytest.raises(ModelCardError, match="input channel"):
        run_predict(other, scenario="ssp126", year=1966, model_dir=tmp_path / "m",
                    prior_path=None, output=tmp_path / "b" / "x.tif",
                    store=tmp_path / "s2.zarr")


def _outputs(out: Path) -> list[Path]:
    return sorted(p for p in out.parent.iterdir() if p.name.startswith(out.stem))


@pytest.mark.parametrize("workers", [1, 3])
def test_streamed_bands_give_the_same_products(world, tmp_path, monkeypatch, workers):
    root, config = world
    monkeypatch.setattr("ai4land.predict.run.job_threads", lambda: 1)
    whole_out, whole = _job(root, config, "ssp126", 1966)
    # Harmonise one coarse-cell row (8 pixel rows) at a time, in several threads.
    monkeypatch.setattr("ai4land.predict.run.BAND_PIXELS", 8 * 48)
    monkeypatch.setattr("ai4land.predict.run.job_threads", lambda: workers)
    out = tmp_path / "maps" / "ai4land_ssp126_1966.tif"
    banded = run_predict(config, scenario="ssp126", year=1966, model_dir=root / "model",
                         prior_path=None, output=out, store=tmp_path / "s.zarr")
    assert out.read_bytes() == whole_out.read_bytes()
    for layer in ("probability", "entropy"):
        assert (out.with_name(f"{out.stem}_{layer}.tif").read_bytes()
                == whole_out.with_name(f"{whole_out.stem}_{layer}.tif").read_bytes())
    for when in ("before", "after"):
        for target in ("delta_target", "luh"):
            a, b = whole["conservation"][when][target], banded["conservation"][when][target]
            assert a["cells"] == b["cells"] and a["max"] == b["max"]
            assert a["mae"] == pytest.approx(b["mae"], abs=1e-12)
    assert banded["class_fractions"] == whole["class_fractions"]
    for key, fractions in whole["group_fractions"].items():
        assert banded["group_fractions"][key] == pytest.approx(fractions, abs=1e-6)


def test_windows_over_nodata_cells_are_skipped_without_changing_products(world, tmp_path,
                                                                          monkeypatch):
    import ai4land.predict.probabilities as predict

    root, _ = world
    # windows of one coarse cell: those over the ocean's two no-data cells are skipped
    config = _config(root, tile_size=8, overlap=2)
    runs = {}
    for name in ("skipped", "all"):
        if name == "all":
            def every_window(config, *, cube, cells=None, plan=predict.plan_prediction):
                return plan(config, cube=cube)

            monkeypatch.setattr(predict, "plan_prediction", every_window)
        out = tmp_path / name / "ai4land_ssp126_1966.tif"
        report = run_predict(config, scenario="ssp126", year=1966, model_dir=root / "model",
                             prior_path=None, output=out, store=tmp_path / name / "s.zarr")
        runs[name] = out, report
    (out, report), (all_out, all_report) = runs["skipped"], runs["all"]
    assert report["windows"] == all_report["windows"] == 64
    assert report["windows_skipped"] == 2 and all_report["windows_skipped"] == 0
    for a, b in zip(_outputs(out), _outputs(all_out), strict=True):
        if a.suffix == ".tif":
            assert a.read_bytes() == b.read_bytes(), a.name
    ignore = {"timings_s", "windows_skipped", "outputs"}
    assert ({k: v for k, v in report.items() if k not in ignore}
            == {k: v for k, v in all_report.items() if k not in ignore})
    for layer in ("lulc", "probability", "entropy"):
        np.testing.assert_array_equal(
            read_year(out.parent / "s.zarr", scenario="ssp126", year=1966, layer=layer),
            read_year(all_out.parent / "s.zarr", scenario="ssp126", year=1966, layer=layer))


def _holed_cube(world, root: Path, *, nodata_block, empty_cell) -> None:
    """A copy of the world's cube under ``root``: no data (99) on the land of
    ``nodata_block`` (row and column slices) in every observed year, and coarse cell
    ``empty_cell`` without land-use data (every state NaN, icwtr 1: LUH2's all water or
    ice) in every scenario."""
    import shutil

    import zarr

    shutil.copytree(world[0] / "cube", root / "cube")
    lulc = zarr.open_group(str(root / "cube" / "target.zarr"), mode="r+")["lulc"]
    values = lulc[:]
    block = values[(slice(None), *nodata_block)]
    block[block != 0] = 99
    values[(slice(None), *nodata_block)] = block
    lulc[:] = values
    for scenario in ("historical", "ssp126"):
        group = zarr.open_group(str(root / "cube" / "coarse" / f"{scenario}.zarr"), mode="r+")
        for name in group.array_keys():
            if name == "icwtr":
                group[name][empty_cell] = 1.0
            elif group[name].ndim == 3:
                group[name][(slice(None), *empty_cell)] = np.nan


def test_nodata_pixels_stay_nodata_and_out_of_quotas(world, tmp_path):
    """No-data pixels of the anchor map stay 99 and are not counted in their cells'
    quotas; land of a cell without coarse land-use data keeps the anchor map's classes."""
    from ai4land.predict.harmonize import (
        class_groups,
        delta_target,
        largest_remainder_counts,
        luh_group_fractions,
        map_group_fractions,
    )

    _holed_cube(world, tmp_path, nodata_block=(slice(16, 30), slice(20, 35)),
                empty_cell=(4, 1))
    config = _config(tmp_path)
    cube = Cube.from_config(config)
    factor, whole = cube.factor, Window(0, 0, 48, 48)
    land = cube.land_mask_window(whole)
    anchor = cube.target_window(1965, whole)
    observed = land & (anchor != 99)
    assert (land & (anchor == 99)).sum() > 150  # the block, partly filling its cells

    out = tmp_path / "maps" / "ai4land_ssp126_1966.tif"
    report = run_predict(config, scenario="ssp126", year=1966, model_dir=world[0] / "model",
                         prior_path=None, output=out, store=tmp_path / "s.zarr")
    with rasterio.open(out) as src:
        codes = src.read(1)
    with rasterio.open(out.with_name(out.stem + "_probability.tif")) as src:
        probability = src.read(1)
    np.testing.assert_array_equal(codes == 99, land & (anchor == 99))

    empty = (slice(32, 40), slice(8, 16))  # the cell without land-use data: kept as observed
    assert land[empty].all()
    np.testing.assert_array_equal(codes[empty], anchor[empty])
    modelled = observed.copy()
    modelled[empty] = False
    assert (probability[empty] == 255).all() and (probability[modelled] < 255).all()
    assert report["pixels"]["kept"] == int((land[empty] & (anchor[empty] != 99)).sum()) == 64
    assert report["pixels"]["nodata"] == int((land & (anchor == 99)).sum())

    # Each cell's group counts over its observed pixels are the quotas of the delta target
    # computed over those pixels alone.
    groups = class_groups(config.datasets.coarse.groups, list(config.classes.predicted))
    names = cube.coarse_channel_names
    cells = cube.coarse_cells("ssp126", 1966, whole)
    luh_t = luh_group_fractions(cells, names, groups)
    luh_anchor = luh_group_fractions(cube.coarse_cells("ssp126", 1965, whole), names, groups)
    anchor_fractions, n = map_group_fractions(anchor, groups, factor=factor, valid=observed)
    quotas = largest_remainder_counts(delta_target(anchor_fractions, luh_t, luh_anchor), n)
    fractions, n_map = map_group_fractions(codes, groups, factor=factor, valid=observed)
    has_data = ~np.isnan(cells[: len(cube.coarse_variables)]).all(axis=0) & (n > 0)
    assert has_data.sum() >= 30 and not has_data[4, 1]
    np.testing.assert_array_equal(n_map, n)
    np.testing.assert_array_equal(np.rint(fractions * n_map)[:, has_data], quotas[:, has_data])


def test_tta_ensemble_reports_spread_and_writes_its_layer(world, tmp_path):
    root, _ = world
    config = _config(root, ensemble={"kind": "tta", "members": 4, "write_layer": True})
    out = tmp_path / "ai4land_ssp126_1966.tif"
    report = run_predict(config, scenario="ssp126", year=1966, model_dir=root / "model",
                         prior_path=None, output=out, store=tmp_path / "s.zarr")
    spread = report["ensemble"]
    assert spread["kind"] == "tta" and spread["members"] == 4
    assert 0 < spread["mean_std"] < 0.5 and 0 <= spread["mean_disagreement"] <= 1
    layer = out.with_name(f"{out.stem}_spread.tif")
    assert validate_cog(layer) == [] and report["outputs"]["spread"] == layer.name
    with rasterio.open(layer) as src:
        stored = src.read(1)
    np.testing.assert_array_equal(
        read_year(tmp_path / "s.zarr", scenario="ssp126", year=1966, layer="spread"), stored)
    assert (stored[stored != 255] <= 127).all()  # a std of probabilities is at most 0.5


def test_mc_dropout_is_seeded_and_needs_dropout(world, tmp_path):
    root, _ = world
    config = _config(root, ensemble={"kind": "mc_dropout", "members": 3})
    with pytest.raises(ModelCardError, match="model_card.json.*dropout"):
        run_predict(config, scenario="ssp126", year=1966, model_dir=root / "model",
                    prior_path=None, output=tmp_path / "x.tif", store=tmp_path / "s.zarr")
    cube = Cube.from_config(config)
    names = input_channel_names(cube, list(config.classes.predicted))
    torch.manual_seed(1)
    model = UNet(len(names), 7, base_channels=4, depth=2, dropout=0.3)
    save_model(tmp_path / "m", model, ModelCard(input_channels=names, tile_size=32,
                                                classes=list(config.classes.predicted),
                                                architecture=model.config))
    reports = []
    for run in ("a", "b"):
        out = tmp_path / run / "ai4land_ssp126_1966.tif"
        reports.append(run_predict(config, scenario="ssp126", year=1966,
                                   model_dir=tmp_path / "m", prior_path=None, output=out,
                                   store=tmp_path / run / "s.zarr"))
    assert (tmp_path / "a" / out.name).read_bytes() == (tmp_path / "b" / out.name).read_bytes()
    assert reports[0]["ensemble"] == reports[1]["ensemble"]
    assert reports[0]["ensemble"]["mean_std"] > 0


def test_anchor_offset_decays_to_raw_luh(world, tmp_path):
    root, _ = world
    config = _config(root, harmonize_decay_years=2)
    half = run_predict(config, scenario="ssp126", year=1966, model_dir=root / "model",
                       prior_path=None, output=tmp_path / "a.tif", store=tmp_path / "s.zarr")
    assert half["harmonize_offset_weight"] == 0.5 and half["harmonize_decay_years"] == 2
    gone = run_predict(config, scenario="ssp126", year=1967, model_dir=root / "model",
                       prior_path=tmp_path / "a.tif", output=tmp_path / "b.tif",
                       store=tmp_path / "s.zarr")
    assert gone["harmonize_offset_weight"] == 0.0
    # With no offset left the target is the raw LUH mapping: only pixel rounding remains.
    after = gone["conservation"]["after"]
    assert after["luh"]["mae"] == pytest.approx(after["delta_target"]["mae"])
    assert after["luh"]["mae"] < 0.02


@pytest.mark.parametrize(("scenario", "year", "anchor"),
                         [("ssp126", 1966, 1965), ("historical", 1959, 1960)])
def test_first_year_continues_the_observed_map(world, tmp_path, scenario, year, anchor):
    # allocation "change": the first year of a chain (both directions) keeps the
    # observed map but for each coarse cell's net change per class; "full" lets the
    # (random) model re-draw the map
    root, _ = world
    cube = Cube.from_config(_config(root))
    observed = cube.target_window(anchor, Window(0, 0, 48, 48))
    mapped = np.isin(observed, list(_config(root).classes.predicted))
    differs = {}
    for allocation in ("change", "full"):
        config = _config(root, allocation=allocation)
        out = tmp_path / allocation / f"ai4land_{scenario}_{year}.tif"
        report = run_predict(config, scenario=scenario, year=year, model_dir=root / "model",
                             prior_path=None, output=out, store=tmp_path / allocation / "s.zarr")
        assert report["conservation"]["after"]["delta_target"]["max"] <= 1 / 64 + 1e-9
        with rasterio.open(out) as src:
            codes = src.read(1)
        differs[allocation] = int((codes != observed)[mapped].sum())
        if allocation == "change":
            for top in range(0, 48, 8):  # per cell: moved pixels = the classes' net gains
                for left in range(0, 48, 8):
                    cell = (slice(top, top + 8), slice(left, left + 8))
                    inside = mapped[cell]
                    before = np.bincount(observed[cell][inside], minlength=256)
                    after = np.bincount(codes[cell][inside], minlength=256)
                    moved = (codes[cell] != observed[cell])[inside].sum()
                    assert moved == np.maximum(after - before, 0).sum()
    assert differs["change"] < differs["full"] / 4


def test_unwritable_output_is_refused_before_any_work(world, tmp_path):
    root, config = world
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputError, match="a_file.*not writable") as info:
        run_predict(config, scenario="ssp126", year=1966, model_dir=root / "model",
                    prior_path=None, output=blocker / "maps" / "x.tif",
                    store=tmp_path / "s.zarr")
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


@pytest.mark.parametrize("where", ["writer", "store", "model", "finaliser", "convert"])
def test_killed_job_leaves_no_product_looking_complete(world, tmp_path, monkeypatch, where):
    """A failure in this thread (writing), in the model's background thread, in a
    worker (finalising, writing the Zarr region) or while converting one layer while the
    others convert stops the job with that error, leaves no product, no temporary file
    and no thread behind."""
    import threading

    import ai4land.predict.inference
    from ai4land.io.cog import CogLayer

    root, config = world
    monkeypatch.setattr("ai4land.predict.run.job_threads", lambda: 2)

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("killed")

    if where == "writer":
        monkeypatch.setattr(CogLayer, "write", crash)
    elif where == "store":
        monkeypatch.setattr("ai4land.io.zarr_store.StoreWriter.write", crash)
    elif where == "model":
        monkeypatch.setattr(ai4land.predict.inference, "_softmax", crash)
    elif where == "finaliser":
        monkeypatch.setattr("ai4land.predict.finalise.harmonize", crash)
        monkeypatch.setattr("ai4land.predict.finalise.allocate_change", crash)
    else:
        convert = CogLayer.convert

        def convert_but_entropy(self):
            if "entropy" in self.path.name:
                raise KeyboardInterrupt("killed")
            return convert(self)

        monkeypatch.setattr(CogLayer, "convert", convert_but_entropy)
    out = tmp_path / "maps" / "ai4land_ssp126_1966.tif"
    with pytest.raises(KeyboardInterrupt):
        run_predict(config, scenario="ssp126", year=1966, model_dir=root / "model",
                    prior_path=None, output=out, store=tmp_path / "s.zarr")
    assert list(out.parent.iterdir()) == []  # no COG, no report, no staging left over
    assert not [t for t in threading.enumerate() if t.name.startswith("ai4land-")]


def test_rebands_regroups_rows_on_multiples():
    from ai4land.predict.probabilities import rebands

    rows = np.arange(23)[:, None]
    bands = [(0, rows[:7]), (7, rows[7:9]), (9, rows[9:23])]
    out = list(rebands(bands, multiple=5, height=23))
    assert [(row, len(band)) for row, band in out] == [(0, 5), (5, 5), (10, 5), (15, 5), (20, 3)]
    np.testing.assert_array_equal(np.concatenate([b for _, b in out]), rows)
    with pytest.raises(RuntimeError, match="out of order"):
        list(rebands([(0, rows[:5]), (7, rows[7:9])], multiple=5, height=23))
    rng = np.random.default_rng(0)
    for _ in range(50):  # any input band sizes, any multiple
        height, multiple = int(rng.integers(1, 60)), int(rng.integers(1, 12))
        cuts = np.unique(np.r_[0, rng.integers(1, height + 1, size=rng.integers(0, 6)), height])
        grid = np.arange(height * 2).reshape(height, 2)
        bands = [(int(a), grid[a:b].copy()) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        out = list(rebands(iter(bands), multiple=multiple, height=height))
        starts = [row for row, _ in out]
        assert starts == list(range(0, height, multiple))
        np.testing.assert_array_equal(np.concatenate([b for _, b in out]), grid)
        # a band lying inside one input band is a view of it, not a copy
        for row, band in out:
            owner = [b for a, b in bands if a <= row and row + len(band) <= a + len(b)]
            if owner:
                assert np.shares_memory(band, owner[0])


def test_rebands_cuts_available_rows_into_parts_for_workers():
    from ai4land.predict.probabilities import rebands

    rng = np.random.default_rng(1)
    for _ in range(50):
        height, multiple = int(rng.integers(1, 80)), int(rng.integers(1, 9))
        parts, max_rows = int(rng.integers(1, 4)), int(rng.integers(1, 30))
        cuts = np.unique(np.r_[0, rng.integers(1, height + 1, size=rng.integers(0, 6)), height])
        grid = np.arange(height * 2).reshape(height, 2)
        bands = [(int(a), grid[a:b].copy()) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
        taken = []

        def source(bands=bands, taken=taken):
            for row, band in bands:
                taken.append(row + len(band))
                yield row, band

        out = []
        for row, band in rebands(source(), multiple=multiple, height=height,
                                 max_rows=max_rows, parts=parts):
            # each band starts and ends on a multiple (or the bottom), within max_rows
            # (at least one multiple), and only holds rows the input has given so far
            assert row % multiple == 0
            assert (row + len(band)) % multiple == 0 or row + len(band) == height
            assert len(band) <= max(max_rows, multiple)
            assert row + len(band) <= taken[-1]
            out.append((row, band, taken[-1]))
        np.testing.assert_array_equal(np.concatenate([b for _, b, _ in out]), grid)
        # every whole multiple given is handed on before the next input band is read,
        # cut into `parts` bands when it holds that many multiples
        for end in taken:
            given = [(r, b) for r, b, seen in out if seen == end]
            ready = end if end == height else end // multiple * multiple
            if given:
                assert given[-1][0] + len(given[-1][1]) == ready
                units = -(-(ready - given[0][0]) // multiple)
                assert len(given) >= min(parts, units)
