"""The ``metrics.json`` report of an evaluation and what is written beside it.

Each model's entry comes from its pooled :class:`~ai4land.evaluate.scores.ModelScores`
(both chains) and, in multi-year evaluations, one entry per chain; ``comparison`` is the
U-Net minus the best baseline on every interval metric (paired block bootstrap);
``drift`` the chain minus teacher forcing per year. Keys: docs/design.md "Evaluation
output". Tables (:mod:`ai4land.evaluate.tables`) and figures
(:mod:`ai4land.evaluate.figures`) are drawn from the same dictionary.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ai4land.evaluate import figures, registry
from ai4land.evaluate.bootstrap import BlockBootstrap
from ai4land.evaluate.interface import CHAIN, YEAR
from ai4land.evaluate.models import ALLOCATION_BASELINES, BASELINES, Chain
from ai4land.evaluate.scores import ModelScores
from ai4land.evaluate.tables import write_tables
from ai4land.io.atomic import atomic_path

FIGURES = ("confusion_matrix.png", "per_class_iou.png", "by_year.png", "tiles.png",
           "class_area.png", "calibration.png", "change_fom.png")


def model_reports(names, chains: list[Chain], bootstrap: BlockBootstrap, *,
                  single_year: bool) -> tuple[dict, dict[str, ModelScores]]:
    """Every model's ``metrics.json`` entry, and its scores pooled over the chains."""
    models, pooled = {}, {}
    for name in names:
        pooled[name] = ModelScores.pooled([chain.scores[name] for chain in chains])
        models[name] = pooled[name].report(bootstrap=bootstrap)
        if not single_year:
            models[name]["chains"] = {chain.name: chain.scores[name].report(scope=CHAIN)
                                      for chain in chains}
    return models, pooled


def compare(pooled: dict[str, ModelScores], models: dict, bootstrap: BlockBootstrap) -> dict:
    """Per interval metric: the U-Net minus the best baseline (best by its estimate over
    every baseline, and over the allocation baselines), paired block bootstrap, with
    ``significant`` when the interval excludes 0."""
    inputs = {name: scores.interval_inputs() for name, scores in pooled.items()}
    out = {}
    for metric, (stats, compute, lower_is_better) in inputs["unet"].items():
        entry = {}
        for scope, candidates in (("best_baseline", BASELINES),
                                  ("best_allocation_baseline", ALLOCATION_BASELINES)):
            estimates = {name: models[name]["intervals"][metric]["estimate"]
                         for name in candidates if name in models
                         and metric in models[name].get("intervals", {})
                         and models[name]["intervals"][metric]["estimate"] is not None}
            if not estimates:
                continue
            pick = min if lower_is_better else max
            best = pick(estimates, key=estimates.get)
            difference = bootstrap.difference(stats, inputs[best][metric][0], compute)
            entry[scope] = {"baseline": best, **difference.to_json()}
        if entry:
            out[metric] = entry
    return out


def drift(chained: dict, forced: dict) -> dict:
    """Per year: the chain minus teacher-forced for the registered metrics with ``drift``
    (NaN if undefined)."""
    keys = [m.name for m in registry.metrics(YEAR) if m.drift]
    return {
        year: {key: _minus(values.get(key), forced["by_year"][year].get(key)) for key in keys}
        for year, values in chained["by_year"].items()
    }


def _minus(a, b):
    return float("nan") if a is None or b is None else a - b


def _draw(metrics: dict, tiles: list[dict], directory: Path, *, legend: dict) -> list[Path]:
    models = metrics["models"]
    classes = metrics["classes"]
    directory = Path(directory)
    return [
        figures.confusion_matrix_figure(
            np.asarray(models["unet"]["confusion_matrix"]), classes=classes, legend=legend,
            title=("U-Net (no prior, harmonised), test blocks"
                   if metrics["split"]["mode"] == "single-year"
                   else "U-Net harmonised chains, test blocks and years"),
            path=directory / FIGURES[0]),
        figures.per_class_iou_figure(models, classes=classes, legend=legend,
                                     path=directory / FIGURES[1]),
        figures.by_year_figure(models, path=directory / FIGURES[2]),
        figures.tiles_figure(tiles, legend=legend, path=directory / FIGURES[3]),
        figures.class_area_figure(metrics["class_area"], path=directory / FIGURES[4]),
        figures.calibration_figure(
            {name: m["calibration"] for name, m in models.items() if "calibration" in m},
            path=directory / FIGURES[5]),
        figures.change_fom_figure(models, metrics["comparison"], path=directory / FIGURES[6]),
    ]


def finite(value):
    """NaN (a metric undefined for lack of pixels) becomes JSON null."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_report(metrics: dict, tiles: list[dict], output: Path, *,
                 figures_dir: Path | None, legend: dict) -> None:
    """``output`` (metrics.json), the tables beside it and the figures."""
    output = Path(output)
    write_tables(metrics, output.parent)
    _draw(metrics, tiles, figures_dir or output.parent / "figures", legend=legend)
    with atomic_path(output) as tmp:
        tmp.write_text(json.dumps(metrics, indent=1, allow_nan=False))
