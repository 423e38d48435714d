"""The evaluate stage end to end on a tiny cube with a tiny random U-Net, and `ai4land score`."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ai4land.cli import main
from ai4land.config import EvaluateConfig, PredictConfig, parse_config
from ai4land.errors import InputDataError
from ai4land.evaluate import registry, run_evaluate
from ai4land.evaluate.chains import plan_sites, site_probabilities
from ai4land.evaluate.metrics import EVERYWHERE, ConfusionMetric
from ai4land.evaluate.models import ALLOCATION_BASELINES, MODELS, SINGLE_YEAR_MODELS
from ai4land.evaluate.report import FIGURES
from ai4land.evaluate.tables import TABLES, summary
from ai4land.grid import Grid, Window
from ai4land.io.cog import write_cog
from ai4land.io.cube import Cube
from ai4land.models import ModelCard, UNet, load_model, save_model
from ai4land.predict.finalise import Finaliser
from ai4land.predict.harmonize import class_groups
from ai4land.predict.probabilities import year_probabilities
from ai4land.samples.features import codes_to_index, group_channels, input_channel_names
from ai4land.samples.split import load_split, run_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from tiny_cube import tiny_config, write_tiny_cube  # noqa: E402

YEARS = range(1960, 1968)


def _model_and_split(root: Path, config, *, dropped=(), **gbm):
    """Small predict/evaluate settings, the split and a random tiny U-Net under ``root``."""
    config = config.model_copy(update={
        "predict": PredictConfig(tile_size=32, overlap=8, batch_size=4, device="cpu"),
        "evaluate": EvaluateConfig(**gbm, figure_tiles=2, bootstrap_replicates=200),
    })
    run_split(config, output=root / "split.json", figure=root / "split.png")
    names = input_channel_names(Cube.from_config(config), list(config.classes.predicted))
    torch.manual_seed(0)
    model = UNet(len(names), len(config.classes.predicted), base_channels=4, depth=2,
                 zero_channels=group_channels(names, dropped))
    save_model(root / "model", model, ModelCard(
        input_channels=names, classes=list(config.classes.predicted), architecture=model.config,
        tile_size=32, dropped_inputs=list(dropped)))
    return config


def _record_reads(patch: pytest.MonkeyPatch) -> list[int]:
    """Patch the cube's fine-grid readers to record the pixels of every window read."""
    sizes: list[int] = []
    for name in ("target_window", "static_window", "land_mask_window"):
        original = getattr(Cube, name)

        def read(self, *args, _original=original):
            window = args[-1]
            sizes.append(window.height * window.width)
            return _original(self, *args)

        patch.setattr(Cube, name, read)
    return sizes


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    # observed 1960-1968, test years 1965-1966: a forward chain from 1964 and a backward
    # chain from 1967
    write_tiny_cube(root / "cube", size=64, factor=8, years=YEARS)
    config = tiny_config(root / "cube", years=YEARS,
                         split={"block_size": 16, "n_test_blocks": 2, "n_val_blocks": 1,
                                "buffer_blocks": 0})
    data = config.model_dump(mode="json")
    data["years"] = {"train": [1960, 1963], "test": [1965, 1966]}
    config = _model_and_split(root, parse_config(data), gbm_samples=4000, gbm_years=3,
                              gbm_max_iter=15)
    output = root / "eval" / "metrics.json"
    with pytest.MonkeyPatch.context() as patch:
        reads = _record_reads(patch)
        metrics = run_evaluate(config, model_dir=root / "model", split_path=root / "split.json",
                               output=output)
    return root, config, metrics, reads


def test_metrics_json_holds_every_model_with_the_design_keys(evaluated):
    root, _, metrics, _ = evaluated
    assert json.loads((root / "eval" / "metrics.json").read_text()) == metrics
    assert list(metrics["models"]) == list(MODELS)
    assert metrics["scored_map"] == "harmonised"
    assert metrics["split"]["chains"] == {
        "forward": {"direction": 1, "start": 1964, "years": [1965, 1966]},
        "backward": {"direction": -1, "start": 1967, "years": [1966, 1965]}}
    years = [str(y) for y in metrics["split"]["test_years"]]
    for name, values in metrics["models"].items():
        for key in ("oa", "miou", "kappa", "f1", "fom_change", "iou_change", "conservation_mae",
                    "per_class_iou", "per_class_f1", "confusion_matrix", "by_year", "by_block",
                    "stability", "intervals", "chains"):
            assert key in values, (name, key)
        if name == "unet_teacher_forced":  # fed the observed change: no period score
            assert "period" not in values and "period_fom" not in values["intervals"]
            continue
        assert list(values["by_year"]) == years
        assert set(values["by_year"][years[0]]) >= {"oa", "miou", "kappa", "fom_change",
                                                    "stability"}
        assert sorted(values["by_block"]) == sorted(map(str, metrics["split"]["test_block_ids"]))
        # blocks and years partition the scored pixels (each year once per chain)
        assert sum(b["n_pixels"] for b in values["by_block"].values()) == values["n_pixels"]
        # test_pixels: land of the test blocks, a few of them no data (not scored)
        assert 0.98 < values["n_pixels"] / (2 * len(years) * metrics["split"]["test_pixels"]) <= 1
        assert set(values["chains"]) == {"forward", "backward"}
        assert values["chains"]["forward"]["n_pixels"] == values["n_pixels"] // 2
        period = values["period"]
        assert set(period) == {"fom", "producers_accuracy", "users_accuracy", "counts"}
        # the whole-period change: every scored pixel once per chain
        assert sum(period["counts"].values()) == values["n_pixels"] // len(years)
        for key in ("oa", "miou", "kappa", "period_fom", "swap_ratio"):
            interval = values["intervals"][key]
            if interval["estimate"] is not None and interval["low"] is not None:
                assert interval["low"] - 1e-9 <= interval["estimate"] <= interval["high"] + 1e-9
        assert values["intervals"]["oa"]["estimate"] == pytest.approx(values["oa"], abs=1e-6)
    models = metrics["models"]
    assert models["persistence"]["oa"] > 0.5
    assert models["persistence"]["period"]["counts"]["false_alarm"] == 0  # never changes
    assert models["gradient_boosting"]["kappa"] > 0.5
    for name in ("unet", "unet_raw", "unet_teacher_forced", "gradient_boosting"):
        assert sum(models[name]["calibration"]["count"]) == models[name]["n_pixels"]
    for name in ("random_change", "neighbourhood_density", "smooth_coarse"):
        assert "calibration" not in models[name]  # scores, not probabilities


def test_chains_start_as_teacher_forced_and_drift_is_reported(evaluated):
    _, _, metrics, _ = evaluated
    unet, forced = metrics["models"]["unet"], metrics["models"]["unet_teacher_forced"]
    # each chain's first year has the observed prior too: forward 1965, backward 1966
    for chain, year in (("forward", "1965"), ("backward", "1966")):
        assert (unet["chains"][chain]["by_year"][year]
                == forced["chains"][chain]["by_year"][year])
    years = [str(y) for y in metrics["split"]["test_years"]]
    assert list(metrics["drift"]) == years
    for year in years:
        for key in ("oa", "miou", "kappa"):
            assert metrics["drift"][year][key] == pytest.approx(
                unet["by_year"][year][key] - forced["by_year"][year][key])


def test_harmonised_maps_match_the_target_exactly_and_raw_does_not(evaluated):
    _, _, metrics, _ = evaluated
    models = metrics["models"]
    # whole-pixel allocation in each cell of 64 pixels: only rounding (< 1/64 per group)
    # separates a finalised map from the delta-method target
    for name in ("unet", "unet_teacher_forced", *ALLOCATION_BASELINES):
        assert models[name]["conservation_mae"] < 1 / 64, name
    assert models["unet_raw"]["conservation_mae"] > 5 * models["unet"]["conservation_mae"]
    assert models["random_allocation"]["conservation_mae"] < 0.05
    assert (models["random_allocation"]["conservation_mae"]
            <= models["coarse_majority"]["conservation_mae"])
    # persistence-preferring allocation changes no more pixels than the coarse change needs
    for name in ("random_change", "neighbourhood_density"):
        stability = models[name]["stability"]
        assert stability["swap_ratio"] == 0.0, name
    comparison = metrics["comparison"]
    assert comparison["period_fom"]["best_allocation_baseline"]["baseline"] in ALLOCATION_BASELINES
    for entry in comparison["oa"].values():
        assert isinstance(entry["significant"], bool)
        assert entry["low"] <= entry["estimate"] <= entry["high"]


def test_evaluation_streams_test_blocks_and_scores_predicts_maps(evaluated):
    root, config, metrics, reads = evaluated
    cube = Cube.from_config(config)
    region = cube.fine_grid.height * cube.fine_grid.width
    # never a whole-region read: only the windows around the test blocks (and training
    # blocks for the gradient-boosting sample)
    assert reads and max(reads) < region
    split = load_split(root / "split.json")
    model, _ = load_model(root / "model")
    classes = list(config.classes.predicted)
    whole = Window(0, 0, *cube.fine_grid.shape)
    cells = cube.coarse_cells("historical", 1965, whole)
    prior = cube.target_window(1964, whole)
    # predict's own path over the whole region: blended probabilities, then finalised
    probs, _ = year_probabilities(config, cube=cube, model=model, scenario="historical",
                                  year=1965, prior=prior, direction=1)
    finaliser = Finaliser(config, cube=cube, anchor=1964, classes=classes,
                          groups=class_groups(config.datasets.coarse.groups, classes),
                          weight=1.0, layers=["lulc", "raw"], cells=cells,
                          anchor_cells=cube.coarse_cells("historical", 1964, whole))
    _, region_layers, _ = finaliser(0, probs, prior=prior)
    hits = total = 0
    for site in plan_sites(config, shape=cube.fine_grid.shape, factor=cube.factor, split=split):
        assert site.outer.height * site.outer.width < region
        site_probs = site_probabilities(config, cube=cube, model=model, site=site,
                                        scenario="historical", year=1965,
                                        prior=prior[site.outer.slices], direction=1,
                                        coarse_cells=cells, device=torch.device("cpu"), seed=0)
        np.testing.assert_allclose(site_probs[site.inside(site.cells)], probs[site.cells.slices],
                                   atol=1e-6)
        _, layers, _ = finaliser(site.area.row, site_probs[site.inside(site.area)],
                                 col=site.area.col, prior=prior[site.area.slices])
        np.testing.assert_array_equal(layers[site.inside(site.cells, site.area)],
                                      region_layers[site.cells.slices])
        land = cube.land_mask_window(site.scored)
        target = codes_to_index(cube.target_window(1965, site.scored), classes)
        mapped = codes_to_index(region_layers[site.scored.slices][..., 0], classes)
        scored = land & (target >= 0) & (mapped >= 0)
        hits += int((mapped[scored] == target[scored]).sum())
        total += int(scored.sum())
    # the first forward-chain year scored by evaluate is predict's harmonised map
    assert metrics["models"]["unet"]["chains"]["forward"]["by_year"]["1965"]["oa"] == (
        pytest.approx(hits / total))


def test_tables_and_figures_are_written(evaluated):
    root, _, metrics, _ = evaluated
    for name in TABLES:
        rows = list(csv.DictReader((root / "eval" / name).open()))
        assert {row["model"] for row in rows} == set(MODELS), name
    by_model = {r["model"]: r for r in csv.DictReader((root / "eval" / TABLES[0]).open())}
    assert float(by_model["unet"]["oa"]) == pytest.approx(metrics["models"]["unet"]["oa"])
    for name in FIGURES:
        data = (root / "eval" / "figures" / name).read_bytes()
        assert data.startswith(b"\x89PNG"), name
    for chain, area in metrics["class_area"].items():
        assert set(area["series"]) == {"coarse", "target", "observed", *MODELS}, chain
        for series in area["series"].values():
            assert pytest.approx(sum(v[0] for v in series.values()), abs=1e-4) == 1.0
        # harmonised maps hold the target's areas (up to whole-pixel rounding)
        for group, values in area["series"]["unet"].items():
            assert values == pytest.approx(area["series"]["target"][group], abs=0.02)


def _single_year(root: Path) -> tuple:
    """A one-year tiny cube, its model and split under ``root``: (config, config data)."""
    write_tiny_cube(root / "cube", size=64, factor=8, years=[1970])
    data = tiny_config(root / "cube", years=[1970, 1971],
                       split={"block_size": 16, "n_test_blocks": 2, "n_val_blocks": 1,
                              "buffer_blocks": 0}).model_dump(mode="json")
    data["datasets"]["fine"]["years"] = [1970, 1970]
    data["years"] = {"train": [1970, 1970], "test": [1970, 1970]}
    data["train"]["prior"] = False
    config = _model_and_split(root, parse_config(data), gbm_samples=2000, gbm_years=1,
                              gbm_max_iter=10, dropped=["prior"])  # as train.prior: false
    return config, data


def test_single_year_data_is_scored_without_prior_persistence_or_rollout(tmp_path):
    config, data = _single_year(tmp_path)
    metrics = run_evaluate(config, model_dir=tmp_path / "model", split_path=tmp_path / "split.json",
                           output=tmp_path / "eval" / "metrics.json")
    assert metrics["split"]["mode"] == "single-year" and metrics["split"]["test_years"] == [1970]
    assert list(metrics["models"]) == list(SINGLE_YEAR_MODELS)
    assert metrics["drift"] == {} and set(metrics["class_area"]["single-year"]["series"]) == {
        "coarse", "target", "observed", *SINGLE_YEAR_MODELS}
    for model_metrics in metrics["models"].values():
        assert 0.0 <= model_metrics["oa"] <= 1.0 and model_metrics["n_pixels"] > 0
        assert model_metrics["fom_change"] is None  # no previous map: undefined, not 0
        assert "period" not in model_metrics and "chains" not in model_metrics
    # harmonised to the LUH-mapped fractions (no other year to anchor the delta method)
    assert metrics["models"]["unet"]["conservation_mae"] < 1 / 64
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == metrics
    for name in FIGURES:
        assert (tmp_path / "eval" / "figures" / name).read_bytes().startswith(b"\x89PNG")
    # A cube that lacks the test years (prepared for other years) is refused clearly.
    empty = parse_config({**data, "datasets": {**data["datasets"], "fine": {
        **data["datasets"]["fine"], "years": [1970, 1980]}},
        "years": {"train": [1970, 1970], "test": [1980, 1980]}})
    empty = empty.model_copy(update={"predict": config.predict, "evaluate": config.evaluate})
    run_split(empty, output=tmp_path / "split2.json", figure=tmp_path / "split2.png")
    with pytest.raises(InputDataError, match=r"no observed map of the test years \[1980\]"):
        run_evaluate(empty, model_dir=tmp_path / "model", split_path=tmp_path / "split2.json",
                     output=tmp_path / "eval2" / "metrics.json")


def test_val_blocks_can_be_scored_to_choose_settings_without_the_test_blocks(tmp_path):
    config, _ = _single_year(tmp_path)
    split = json.loads((tmp_path / "split.json").read_text())
    ids = {role: [b["id"] for b in split["blocks"] if b["role"] == role]
           for role in ("test", "val")}
    assert ids["val"] and not set(ids["val"]) & set(ids["test"])
    test = run_evaluate(config, model_dir=tmp_path / "model", split_path=tmp_path / "split.json",
                        output=tmp_path / "test" / "metrics.json")
    val = run_evaluate(config, model_dir=tmp_path / "model", split_path=tmp_path / "split.json",
                       output=tmp_path / "val" / "metrics.json", blocks="val")
    assert test["split"]["scored_role"] == "test" and val["split"]["scored_role"] == "val"
    assert test["split"]["test_block_ids"] == ids["test"]
    assert val["split"]["test_block_ids"] == ids["val"]
    assert list(val["models"]["unet"]["by_block"]) == [str(i) for i in ids["val"]]
    with pytest.raises(ValueError, match="blocks must be one of"):
        run_evaluate(config, model_dir=tmp_path / "model", split_path=tmp_path / "split.json",
                     output=tmp_path / "x" / "metrics.json", blocks="train")


class WrongPixels(ConfusionMetric):
    """A toy metric: pixels of the wrong class (a function of the confusion matrix)."""

    name = "wrong_pixels"  # its metrics.json key
    scopes = EVERYWHERE  # totals, by_year, by_block, chains
    table = True  # a column of the CSV tables
    label = "wrong"  # a column of the CLI summary
    title = "wrong pixels"  # a panel of the by-year figure
    interval = True  # a block-bootstrap interval and the comparison with the baselines
    drift = True
    lower_is_better = True

    def compute(self, cm: np.ndarray) -> int:
        return int(cm.sum() - np.trace(cm))


def test_a_metric_is_one_class_plus_one_registry_entry(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "METRICS", list(registry.METRICS))
    registry.register(WrongPixels)  # the one entry; nothing else knows the metric
    config, _ = _single_year(tmp_path)
    output = tmp_path / "eval" / "metrics.json"
    metrics = run_evaluate(config, model_dir=tmp_path / "model",
                           split_path=tmp_path / "split.json", output=output)
    assert json.loads(output.read_text()) == metrics
    for name, values in metrics["models"].items():
        wrong = values["n_pixels"] - np.trace(np.asarray(values["confusion_matrix"]))
        assert values["wrong_pixels"] == wrong > 0, name
        assert values["wrong_pixels"] == pytest.approx(values["n_pixels"] * (1 - values["oa"]))
        assert set(values["by_year"]["1970"]) >= {"oa", "wrong_pixels"}
        assert sum(b["wrong_pixels"] for b in values["by_block"].values()) == wrong
        assert values["intervals"]["wrong_pixels"]["estimate"] == wrong
    # the comparison picks the baseline with the fewest wrong pixels (lower is better)
    best = metrics["comparison"]["wrong_pixels"]["best_baseline"]
    assert best["baseline"] == min(
        (n for n in metrics["models"] if n not in ("unet", "unet_raw")),
        key=lambda n: metrics["models"][n]["wrong_pixels"])
    for table in TABLES[:3]:
        rows = list(csv.DictReader((output.parent / table).open()))
        assert rows and all(int(float(row["wrong_pixels"])) > 0 for row in rows), table
    by_model = {r["model"]: r for r in csv.DictReader((output.parent / TABLES[0]).open())}
    assert int(by_model["unet"]["wrong_pixels"]) == metrics["models"]["unet"]["wrong_pixels"]
    lines = summary(metrics).splitlines()
    assert lines[0].split()[-1] == "wrong"
    assert lines[1].split()[0] == "unet"
    assert float(lines[1].split()[-1]) == metrics["models"]["unet"]["wrong_pixels"]


def test_single_year_figures_have_a_one_year_axis():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ai4land.evaluate.figures import _integer_years

    fig, ax = plt.subplots()
    ax.plot([1970], [0.5], marker="o")
    _integer_years(ax, [1970])
    assert ax.get_xlim() == (1969, 1971)
    assert list(ax.get_xticks()) == [1970]
    ax.plot([1960, 1990], [0.1, 0.2])
    _integer_years(ax, [1960, 1990])  # several years: matplotlib's integer ticks
    assert all(float(t).is_integer() for t in ax.get_xticks())
    plt.close(fig)


@pytest.mark.parametrize("mode", ["multi-year", "single-year"])
def test_report_captions_name_only_the_models_that_were_run(mode):
    import jinja2

    from ai4land.evaluate.models import evaluated_models

    models = list(MODELS if mode == "multi-year" else SINGLE_YEAR_MODELS)
    config = parse_config({"datasets": {"coarse": {"historical": "x.nc"}, "fine": {
        "pattern": "{year}.tif", "years": [1970, 1980 if mode == "multi-year" else 1970]}},
        "years": {"train": [1970, 1970], "test": [1975, 1976] if mode == "multi-year"
                  else [1970, 1970]}})
    assert evaluated_models(config) == models

    class Params:
        pass

    snakemake = Params()
    snakemake.params = Params()
    snakemake.params.models = models
    captions = Path(__file__).resolve().parents[2] / "workflow" / "report"
    not_run = set(MODELS) - set(models)
    for path in sorted(captions.glob("evaluate_*.rst")):
        text = jinja2.Environment().from_string(path.read_text()).render(snakemake=snakemake)
        words = set(text.replace(",", " ").replace("`", " ").replace(":", " ").split())
        assert not words & not_run, (path.name, words & not_run)
        if mode == "single-year":
            for word in ("rollout", "teacher-forced", "persistence", "chained"):
                assert word not in text, (path.name, word)


def _write_map(path: Path, codes: np.ndarray, *, west: float = 4.0) -> Path:
    grid = Grid(west=west, north=48.0, res=0.01, width=codes.shape[1], height=codes.shape[0])
    legend = {0: "ocean", 11: "urban", 22: "cropland", 44: "forest", 99: "no data"}
    write_cog(path, codes.astype("uint8"), grid=grid, legend=legend)
    return path


def test_score_cli_prints_the_metrics_json_keys(tmp_path, capsys):
    target = np.array([[22, 22, 44, 44], [22, 22, 44, 44], [11, 11, 0, 0], [11, 11, 0, 0]] * 16)
    target = np.tile(target, (1, 16))
    prediction = target.copy()
    prediction[0, :2] = 44  # two pixels wrong ...
    previous = target.copy()
    previous[0, :2] = 44  # ... which changed 44 -> 22 and were predicted not to change
    paths = [_write_map(tmp_path / f"{n}.tif", a)
             for n, a in (("pred", prediction), ("target", target), ("prev", previous))]
    assert main(["score", str(paths[0]), str(paths[1]), "--previous", str(paths[2])]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("oa", "miou", "kappa", "f1", "per_class_iou", "per_class_f1", "confusion_matrix",
                "fom_change", "iou_change"):
        assert key in result, key
    land = int((target != 0).sum())
    assert result["oa"] == pytest.approx((land - 2) / land)
    assert result["change_counts"] == {"hits": 0, "wrong_hits": 0, "misses": 2, "false_alarms": 0}
    assert result["fom_change"] == 0.0


def test_score_cli_refuses_maps_on_different_grids(tmp_path, capsys):
    codes = np.full((64, 64), 22)
    a = _write_map(tmp_path / "a.tif", codes)
    b = _write_map(tmp_path / "b.tif", codes, west=5.0)
    assert main(["score", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ai4land: error:") and "different grids" in err
    assert len(err.splitlines()) == 1
