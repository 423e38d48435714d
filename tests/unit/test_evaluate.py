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
from ai4land.evaluate import run_evaluate
from ai4land.evaluate.run import FIGURES, MODELS, SINGLE_YEAR_MODELS
from ai4land.evaluate.tables import TABLES
from ai4land.grid import Grid
from ai4land.io.cube import Cube
from ai4land.models import ModelCard, UNet, save_model
from ai4land.products import write_cog
from ai4land.samples.features import group_channels, input_channel_names
from ai4land.split import run_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from tiny_cube import tiny_config, write_tiny_cube  # noqa: E402

YEARS = range(1960, 1968)


def _model_and_split(root: Path, config, *, dropped=(), **gbm):
    """Small predict/evaluate settings, the split and a random tiny U-Net under ``root``."""
    config = config.model_copy(update={
        "predict": PredictConfig(tile_size=32, overlap=8, batch_size=4, device="cpu"),
        "evaluate": EvaluateConfig(**gbm, figure_tiles=2),
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


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    write_tiny_cube(root / "cube", size=64, factor=8, years=YEARS)
    config = tiny_config(root / "cube", years=YEARS,
                         split={"block_size": 16, "n_test_blocks": 2, "n_val_blocks": 1,
                                "buffer_blocks": 0})
    config = _model_and_split(root, config, gbm_samples=4000, gbm_years=3, gbm_max_iter=15)
    output = root / "eval" / "metrics.json"
    metrics = run_evaluate(config, model_dir=root / "model", split_path=root / "split.json",
                           output=output)
    return root, config, metrics


def test_metrics_json_holds_every_model_with_the_design_keys(evaluated):
    root, _, metrics = evaluated
    assert json.loads((root / "eval" / "metrics.json").read_text()) == metrics
    assert list(metrics["models"]) == list(MODELS)
    years = [str(y) for y in metrics["split"]["test_years"]]
    for name, values in metrics["models"].items():
        for key in ("oa", "miou", "kappa", "f1", "fom_change", "iou_change", "conservation_mae",
                    "per_class_iou", "per_class_f1", "confusion_matrix", "by_year", "by_block"):
            assert key in values, (name, key)
        assert list(values["by_year"]) == years
        assert set(values["by_year"][years[0]]) >= {"oa", "miou", "kappa", "fom_change"}
        assert sorted(values["by_block"]) == sorted(map(str, metrics["split"]["test_block_ids"]))
        # blocks and years partition the scored pixels
        assert sum(b["n_pixels"] for b in values["by_block"].values()) == values["n_pixels"]
    assert metrics["models"]["persistence"]["oa"] > 0.5
    assert metrics["models"]["gradient_boosting"]["kappa"] > 0.5
    for name in ("unet", "unet_rollout", "gradient_boosting"):
        assert sum(metrics["models"][name]["calibration"]["count"]) == metrics["models"][name]["n_pixels"]


def test_rollout_starts_as_teacher_forced_and_drift_is_reported(evaluated):
    _, _, metrics = evaluated
    years = [str(y) for y in metrics["split"]["test_years"]]
    unet, rolled = metrics["models"]["unet"], metrics["models"]["unet_rollout"]
    # the first rollout year has the observed prior too
    assert rolled["by_year"][years[0]] == unet["by_year"][years[0]]
    assert list(metrics["drift"]) == years
    for year in years:
        for key in ("oa", "miou", "kappa"):
            assert metrics["drift"][year][key] == pytest.approx(
                rolled["by_year"][year][key] - unet["by_year"][year][key])
    assert all(v == 0 for v in metrics["drift"][years[0]].values() if v is not None)


def test_random_allocation_matches_the_coarse_scenario(evaluated):
    _, _, metrics = evaluated
    # whole-pixel allocation inside each cell: only rounding separates it from the fractions
    random = metrics["models"]["random_allocation"]["conservation_mae"]
    assert random < 0.05
    assert random <= metrics["models"]["coarse_majority"]["conservation_mae"]


def test_tables_and_figures_are_written(evaluated):
    root, _, metrics = evaluated
    for name in TABLES:
        rows = list(csv.DictReader((root / "eval" / name).open()))
        assert {row["model"] for row in rows} == set(MODELS), name
    by_model = {r["model"]: r for r in csv.DictReader((root / "eval" / TABLES[0]).open())}
    assert float(by_model["unet"]["oa"]) == pytest.approx(metrics["models"]["unet"]["oa"])
    for name in FIGURES:
        data = (root / "eval" / "figures" / name).read_bytes()
        assert data.startswith(b"\x89PNG"), name
    area = metrics["class_area"]
    assert set(area["series"]) == {"coarse", "observed", "unet", "unet_rollout"}
    for series in area["series"].values():
        assert pytest.approx(sum(v[0] for v in series.values()), abs=1e-4) == 1.0


def test_single_year_data_is_scored_without_prior_persistence_or_rollout(tmp_path):
    write_tiny_cube(tmp_path / "cube", size=64, factor=8, years=[1970])
    data = tiny_config(tmp_path / "cube", years=[1970, 1971],
                       split={"block_size": 16, "n_test_blocks": 2, "n_val_blocks": 1,
                              "buffer_blocks": 0}).model_dump(mode="json")
    data["datasets"]["fine"]["years"] = [1970, 1970]
    data["years"] = {"train": [1970, 1970], "test": [1970, 1970]}
    data["train"]["prior"] = False
    config = parse_config(data)
    config = _model_and_split(tmp_path, config, gbm_samples=2000, gbm_years=1, gbm_max_iter=10,
                              dropped=["prior"])  # as train.prior: false
    metrics = run_evaluate(config, model_dir=tmp_path / "model", split_path=tmp_path / "split.json",
                           output=tmp_path / "eval" / "metrics.json")
    assert metrics["split"]["mode"] == "single-year" and metrics["split"]["test_years"] == [1970]
    assert list(metrics["models"]) == list(SINGLE_YEAR_MODELS)
    assert metrics["drift"] == {} and set(metrics["class_area"]["series"]) == {
        "coarse", "observed", "unet"}
    for model_metrics in metrics["models"].values():
        assert 0.0 <= model_metrics["oa"] <= 1.0 and model_metrics["n_pixels"] > 0
        assert model_metrics["fom_change"] is None  # no previous map: undefined, not 0
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
