"""Score the U-Net, its rollout and the baselines on held-out blocks and years.

Every model predicts the whole region (the gradient-boosting baseline: the test
blocks) for each test year; only land pixels of test blocks are scored. The U-Net is
teacher-forced: its prior is the observed map of the previous year, exactly what
persistence gets. ``unet_rollout`` starts from the observed map before the first test
year and then takes its own predictions as prior; ``drift`` is rollout minus
teacher-forced per year. Writes ``metrics.json``, the CSV tables beside it and the
figures.

Single-year data (no test year has an observed previous year, e.g. one observed map):
the split is spatial only, so the U-Net predicts without a prior and is scored against
the coarse majority, random allocation and gradient boosting; there is no persistence,
rollout or drift, and the change scores are undefined (null).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ai4land.errors import GridError, InputDataError
from ai4land.evaluate import figures
from ai4land.evaluate.baselines import (
    GradientBoostingBaseline,
    coarse_majority,
    gradient_boosting_sample,
    pixel_features,
    random_allocation,
)
from ai4land.evaluate.metrics import ChangeScores, ConfusionMatrix, summarise
from ai4land.evaluate.rollout import rollout, unet_year
from ai4land.evaluate.scores import ModelScores
from ai4land.evaluate.tables import write_tables
from ai4land.grid import Window
from ai4land.harmonize import (
    class_groups,
    conservation_error,
    luh_group_fractions,
    map_group_fractions,
)
from ai4land.io.atomic import atomic_path
from ai4land.io.cube import Cube
from ai4land.samples.features import build_inputs, codes_to_index, input_channel_names
from ai4land.split import load_split

log = logging.getLogger(__name__)

MODELS = ("unet", "unet_rollout", "persistence", "coarse_majority", "random_allocation",
          "gradient_boosting")
SINGLE_YEAR_MODELS = ("unet", "coarse_majority", "random_allocation", "gradient_boosting")
DRIFT_KEYS = ("oa", "miou", "kappa", "fom_change")
FIGURES = ("confusion_matrix.png", "per_class_iou.png", "by_year.png", "tiles.png",
           "class_area.png", "calibration.png")
TILE_PANELS = ("unet", "unet_rollout", "gradient_boosting", "persistence")


def run_evaluate(config, *, model_dir: Path, split_path: Path, output: Path,
                 figures_dir: Path | None = None) -> dict:
    """Score every model; write ``output`` (metrics.json), tables beside it, figures."""
    from ai4land.models.card import check_inputs, load_model

    cube = Cube.from_config(config)
    split = load_split(split_path)
    classes = list(config.classes.predicted)
    groups = class_groups(config.datasets.coarse.groups, classes)
    variables = cube.coarse_channel_names
    whole = Window(0, 0, *cube.fine_grid.shape)
    if (split.height, split.width) != cube.fine_grid.shape:
        raise GridError(f"{split_path}: split is for a {split.height}x{split.width} grid, "
                        f"cube is {cube.fine_grid.shape}; rerun `ai4land split`")
    factor = cube.factor
    land = cube.land_mask_window(whole)
    test_blocks = [b for b in split.blocks if b.role == "test"]
    labels = np.full(cube.fine_grid.shape, -1, dtype="int64")
    for i, block in enumerate(test_blocks):
        labels[split.block_window(block).slices] = i
    labels[~land] = -1
    scored = labels >= 0
    model, card = load_model(model_dir)
    check_inputs(card, input_channel_names(cube, classes))
    years = [y for y in split.test_years if y - 1 in cube.target_years]
    single_year = not years
    if single_year:
        years = [y for y in split.test_years if y in cube.target_years]
        if not years:
            raise InputDataError(f"{config.paths.cube}: holds no observed map of the test "
                                 f"years {list(split.test_years)}; check years.test")
        log.info("no test year has an observed previous year: single-year evaluation "
                 "(U-Net without prior; no persistence, rollout or change scores)")
    names = SINGLE_YEAR_MODELS if single_year else MODELS

    settings = config.evaluate
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    features, targets = gradient_boosting_sample(
        cube, split=split, classes=classes, max_samples=settings.gbm_samples,
        max_years=settings.gbm_years, rng=rng, with_prior=not single_year)
    gbm = GradientBoostingBaseline(classes=classes, max_iter=settings.gbm_max_iter,
                                   seed=config.seed).fit(features, targets)
    log.info("gradient boosting: %d pixels, %.1f s", len(targets), time.perf_counter() - started)

    blocks = [{"id": b.id, "row": b.row, "col": b.col} for b in test_blocks]
    scores = {name: ModelScores(classes=classes, blocks=blocks,
                                calibration_bins=settings.calibration_bins) for name in names}
    mapped = ("observed", "unet") if single_year else ("observed", "unet", "unet_rollout")
    area = {"groups": list(groups.names), "years": years,
            "series": {s: {g: [] for g in groups.names} for s in ("coarse", *mapped)}}
    tiles = []
    chain = ([(None, None, None)] * len(years) if single_year else
             rollout(config, cube=cube, model=model, years=years,
                     start=cube.target_window(years[0] - 1, whole)))
    for year, (_, rollout_codes, rollout_confidence) in tqdm(
            zip(years, chain, strict=True), total=len(years), desc="evaluate", unit="year",
            disable=None):
        scenario = cube.scenario_for_year(year)
        observed = cube.target_window(year, whole)
        previous_codes = None if single_year else cube.target_window(year - 1, whole)
        fractions = luh_group_fractions(cube.coarse_cells(scenario, year, whole), variables, groups)
        unet_codes, unet_confidence = unet_year(config, cube=cube, model=model,
                                                scenario=scenario, year=year, prior=previous_codes)
        inputs = build_inputs(cube, scenario=scenario, year=year, window=whole, predicted=classes,
                              prior=previous_codes, direction=1)
        gbm_codes = np.full(observed.shape, config.classes.ocean, dtype="uint8")
        gbm_confidence = np.zeros(observed.shape, dtype="float32")
        gbm_codes[scored], gbm_confidence[scored] = gbm.predict(pixel_features(inputs, scored))
        predictions = {
            "unet": (unet_codes, unet_confidence),
            "unet_rollout": (rollout_codes, rollout_confidence),
            "persistence": (previous_codes, None),
            "coarse_majority": (coarse_majority(fractions, groups=groups, factor=factor,
                                                ocean_mask=~land, ocean_code=config.classes.ocean),
                                None),
            "random_allocation": (random_allocation(fractions, groups=groups, factor=factor,
                                                    valid=land, rng=rng,
                                                    ocean_code=config.classes.ocean), None),
            "gradient_boosting": (gbm_codes, gbm_confidence),
        }
        predictions = {name: predictions[name] for name in names}
        target = codes_to_index(observed, classes)
        # without a previous map no pixel counts for the change scores (they come out null)
        previous = (np.full(target.shape, -1) if single_year
                    else codes_to_index(previous_codes, classes))
        for name, (codes, confidence) in predictions.items():
            scores[name].add(
                year=year, target=target, prediction=codes_to_index(codes, classes),
                previous=previous, labels=labels, confidence=confidence,
                conservation_mae=conservation_error(codes, groups, factor=factor, valid=scored,
                                                    target=fractions)["mae"],
            )
        all_maps = {"observed": observed, "unet": unet_codes, "unet_rollout": rollout_codes}
        _add_class_area(area, groups=groups, factor=factor, land=land, fractions=fractions,
                        maps={name: all_maps[name] for name in mapped})
        if year == years[-1]:
            tiles = _sample_tiles(split, test_blocks, year=year, observed=observed,
                                  scored=scored & (target >= 0), predictions=predictions,
                                  count=settings.figure_tiles)

    models = {name: s.report() for name, s in scores.items()}
    metrics = _finite({
        "split": {
            "test_blocks": len(test_blocks),
            "test_block_ids": [b.id for b in test_blocks],
            "block_size": split.block_size,
            "test_years": years,
            "test_pixels": int(scored.sum()),
            "seed": split.seed,
            "mode": "single-year" if single_year else "multi-year",
        },
        "classes": classes,
        "legend": {str(c): config.classes.legend[c] for c in classes},
        "models": models,
        "drift": {} if single_year else _drift(models["unet_rollout"], models["unet"]),
        "class_area": area,
        "gradient_boosting": {"train_pixels": int(len(targets)),
                              "max_iter": settings.gbm_max_iter},
    })
    output = Path(output)
    write_tables(metrics, output.parent)
    _draw(metrics, tiles, figures_dir or output.parent / "figures", legend=config.classes.legend)
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, allow_nan=False))
    return metrics


def _add_class_area(area: dict, *, groups, factor: int, land: np.ndarray, fractions: np.ndarray,
                    maps: dict[str, np.ndarray]) -> None:
    """Append one year's group shares of the region's land: coarse scenario and maps."""
    whole = max(land.shape)
    _, n = map_group_fractions(maps["observed"], groups, factor=factor, valid=land)
    coarse = (fractions * n).sum(axis=(1, 2)) / max(int(n.sum()), 1)
    shares = {"coarse": coarse}
    for name, codes in maps.items():
        shares[name] = map_group_fractions(codes, groups, factor=whole, valid=land)[0][:, 0, 0]
    for name, values in shares.items():
        for group, value in zip(groups.names, values, strict=True):
            area["series"][name][group].append(round(float(value), 6))


def _sample_tiles(split, test_blocks, *, year: int, observed: np.ndarray, scored: np.ndarray,
                  predictions: dict, count: int) -> list[dict]:
    """The test blocks with the most land, as map panels for the tiles figure."""
    chosen = sorted(test_blocks, key=lambda b: (-b.land_fraction, b.id))[:count]
    tiles = []
    for block in chosen:
        window = split.block_window(block).slices
        tiles.append({"title": f"block {block.id}, {year}", "target": observed[window],
                      "scored": scored[window],
                      "panels": {name: predictions[name][0][window] for name in TILE_PANELS
                                 if name in predictions}})
    return tiles


def _drift(rolled: dict, forced: dict) -> dict:
    """Per year: rollout minus teacher-forced for ``DRIFT_KEYS`` (NaN if undefined)."""
    return {
        year: {key: values[key] - forced["by_year"][year][key] for key in DRIFT_KEYS}
        for year, values in rolled["by_year"].items()
    }


def _draw(metrics: dict, tiles: list[dict], directory: Path, *, legend: dict) -> list[Path]:
    models = metrics["models"]
    classes = metrics["classes"]
    directory = Path(directory)
    return [
        figures.confusion_matrix_figure(
            np.asarray(models["unet"]["confusion_matrix"]), classes=classes, legend=legend,
            title=("U-Net (no prior), test blocks" if metrics["split"]["mode"] == "single-year"
                   else "U-Net (teacher-forced), test blocks and years"),
            path=directory / FIGURES[0]),
        figures.per_class_iou_figure(models, classes=classes, legend=legend,
                                     path=directory / FIGURES[1]),
        figures.by_year_figure(models, path=directory / FIGURES[2]),
        figures.tiles_figure(tiles, legend=legend, path=directory / FIGURES[3]),
        figures.class_area_figure(metrics["class_area"], path=directory / FIGURES[4]),
        figures.calibration_figure(
            {name: m["calibration"] for name, m in models.items() if "calibration" in m},
            path=directory / FIGURES[5]),
    ]


def _finite(value):
    """NaN (a metric undefined for lack of pixels) becomes JSON null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def score_maps(prediction: np.ndarray, target: np.ndarray, *, classes: list[int],
               previous: np.ndarray | None = None) -> dict:
    """The metrics.json keys of one model for two maps (change scores need ``previous``)."""
    target_index = codes_to_index(target, classes)
    prediction_index = codes_to_index(prediction, classes)
    cm = ConfusionMatrix(len(classes)).update(target_index, prediction_index)
    result = summarise(cm.matrix, classes)
    if previous is not None:
        counts = ChangeScores().counts(codes_to_index(previous, classes), target_index,
                                       prediction_index)
        change = ChangeScores.from_counts(counts)
        result.update(fom_change=change["fom"], iou_change=change["iou"], change_counts=counts)
    return _finite(result)


def score_files(prediction: Path, target: Path, *, previous: Path | None = None) -> dict:
    """Score two single-band class rasters that share one grid (and a previous map)."""
    import rasterio

    from ai4land.config import ClassesConfig

    paths = [prediction, target] + ([previous] if previous is not None else [])
    arrays, grids = [], []
    for path in paths:
        if not path.is_file():
            raise InputDataError(f"{path}: file not found")
        with rasterio.open(path) as src:
            arrays.append(src.read(1))
            grids.append((src.crs, src.transform, src.shape))
    for path, grid in zip(paths[1:], grids[1:], strict=True):
        if grid != grids[0]:
            raise GridError(
                f"{prediction} and {path} are on different grids "
                f"({grids[0][2]} {tuple(grids[0][1])[:6]} vs {grid[2]} {tuple(grid[1])[:6]}); "
                "resample one onto the other first"
            )
    return score_maps(arrays[0], arrays[1], classes=ClassesConfig().predicted,
                      previous=arrays[2] if previous is not None else None)
