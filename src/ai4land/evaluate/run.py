"""Score the U-Net and the baselines on held-out blocks and years.

Every model predicts the whole region for each test year; only pixels of test blocks
are scored. The U-Net is teacher-forced: its prior is the observed map of the previous
year, exactly what persistence gets.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ai4land.errors import GridError, InputDataError
from ai4land.evaluate.baselines import coarse_majority
from ai4land.evaluate.metrics import ChangeScores, ConfusionMatrix, summarise
from ai4land.grid import Window
from ai4land.harmonize import class_groups, conservation_error, luh_group_fractions
from ai4land.io.atomic import atomic_path
from ai4land.io.cube import Cube
from ai4land.samples.features import codes_to_index, input_channel_names
from ai4land.split import load_split

log = logging.getLogger(__name__)


class ModelScores:
    """Accumulates everything reported for one model over test years."""

    def __init__(self, classes: list[int]):
        self.classes = classes
        self.total = ConfusionMatrix(len(classes))
        self.by_year: dict[int, ConfusionMatrix] = {}
        self.change: dict[str, int] = {"hits": 0, "wrong_hits": 0, "misses": 0, "false_alarms": 0}
        self.change_union = 0
        self.conservation: list[float] = []

    def add(self, *, year, target, prediction, previous, conservation_error) -> None:
        cm = ConfusionMatrix(len(self.classes)).update(target, prediction)
        self.by_year[year] = cm
        self.total += cm
        change = ChangeScores().compute(previous, target, prediction)
        for key in self.change:
            self.change[key] += change[key]
        valid = (previous >= 0) & (target >= 0) & (prediction >= 0)
        self.change_union += int((valid & ((target != previous) | (prediction != previous))).sum())
        self.conservation.append(conservation_error)

    def report(self) -> dict:
        result = summarise(self.total.matrix, self.classes)
        denominator = sum(self.change.values())
        result["fom_change"] = self.change["hits"] / denominator if denominator else None
        result["iou_change"] = self.change["hits"] / self.change_union if self.change_union else None
        result["change_counts"] = dict(self.change)
        result["conservation_mae"] = float(np.mean(self.conservation))
        result["by_year"] = {
            str(year): {
                k: v for k, v in summarise(cm.matrix, self.classes).items()
                if k in ("oa", "miou", "kappa")
            }
            for year, cm in sorted(self.by_year.items())
        }
        return result


def run_evaluate(config, *, model_dir: Path, split_path: Path, output: Path) -> dict:
    from ai4land.models.card import check_inputs, load_model
    from ai4land.predict import predict_map

    cube = Cube.from_config(config)
    split = load_split(split_path)
    classes = config.classes.predicted
    groups = class_groups(config.datasets.coarse.groups, classes)
    variables = cube.coarse_channel_names
    whole = Window(0, 0, *cube.fine_grid.shape)
    if (split.height, split.width) != cube.fine_grid.shape:
        raise GridError(f"{split_path}: split is for a {split.height}x{split.width} grid, "
                        f"cube is {cube.fine_grid.shape}; rerun `ai4land split`")
    test_mask = split.role_mask("test")
    factor = cube.factor
    scored = test_mask & cube.land_mask_window(whole)
    model, card = load_model(model_dir)
    check_inputs(card, input_channel_names(cube, classes))

    scores = {name: ModelScores(classes) for name in ("unet", "persistence", "coarse_majority")}
    years = [y for y in split.test_years if y - 1 in cube.target_years]
    if not years:
        raise InputDataError(f"{config.paths.cube}: no test year has an observed previous year")
    for year in tqdm(years, desc="evaluate", unit="year"):
        scenario = cube.scenario_for_year(year)
        observed = cube.target_window(year, whole)
        previous_codes = cube.target_window(year - 1, whole)
        cells = cube.coarse_cells(scenario, year, whole)
        fractions = luh_group_fractions(cells, variables, groups)
        predictions = {
            "unet": predict_map(config, cube=cube, model=model, scenario=scenario,
                                year=year, prior=previous_codes, direction=1),
            "persistence": previous_codes,
            "coarse_majority": coarse_majority(fractions, groups=groups, factor=factor,
                                               ocean_mask=observed == config.classes.ocean),
        }
        target = np.where(test_mask, codes_to_index(observed, classes), -1)
        previous = codes_to_index(previous_codes, classes)
        for name, codes in predictions.items():
            scores[name].add(
                year=year, target=target, prediction=codes_to_index(codes, classes),
                previous=previous,
                conservation_error=conservation_error(codes, groups, factor=factor, valid=scored,
                                                      target=fractions)["mae"],
            )

    metrics = {
        "split": {
            "test_blocks": sum(b.role == "test" for b in split.blocks),
            "block_size": split.block_size,
            "test_years": years,
            "test_pixels": int(scored.sum()),
            "seed": split.seed,
        },
        "classes": classes,
        "models": {name: s.report() for name, s in scores.items()},
    }
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps(_finite(metrics), indent=1, allow_nan=False))
    return metrics


def _finite(value):
    """NaN (a metric undefined for lack of pixels) becomes JSON null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def score_maps(prediction: np.ndarray, target: np.ndarray, *, classes: list[int]) -> dict:
    cm = ConfusionMatrix(len(classes)).update(codes_to_index(target, classes),
                                              codes_to_index(prediction, classes))
    return summarise(cm.matrix, classes)


def score_files(prediction: Path, target: Path) -> dict:
    """Score two single-band class rasters that share one grid."""
    import rasterio

    from ai4land.config import ClassesConfig

    arrays, grids = [], []
    for path in (prediction, target):
        if not path.is_file():
            raise InputDataError(f"{path}: file not found")
        with rasterio.open(path) as src:
            arrays.append(src.read(1))
            grids.append((src.crs, src.transform, src.shape))
    if grids[0] != grids[1]:
        raise GridError(
            f"{prediction} and {target} are on different grids "
            f"({grids[0][2]} {tuple(grids[0][1])[:6]} vs {grids[1][2]} {tuple(grids[1][1])[:6]}); "
            "resample one onto the other first"
        )
    return score_maps(arrays[0], arrays[1], classes=ClassesConfig().predicted)
