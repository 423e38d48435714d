"""single_year_skill: without a prior, does the harmonised map beat the coarse majority?

Single-year mode (issue 19, direction 6): one observed map, no previous map to continue,
so the U-Net runs without a prior (``train.prior: false``) and each test year is
harmonised to the LUH-mapped fractions (full allocation, the model's group probabilities
blended with the coarse targets interpolated between cell centres:
``predict.smooth_weight``). On two demo worlds (benchmarks/configs/demo_single_year.yaml:
config/demo.yaml's world with the single observed year 2010, and
demo_single_year_seed1.yaml: the same with seed 1), each trained on the training blocks
of that year with the default inputs, ``ai4land evaluate`` scores the held-out test
blocks. Target, in every world: the harmonised U-Net's OA >= the coarse majority's and
its mIoU >= the coarse majority's + 0.03.

``ours`` is the first world's U-Net mIoU, ``reference`` its coarse majority's; ``params``
hold, per world, both models' OA and mIoU with their block-bootstrap 95 % intervals, the
paired interval of the U-Net minus the best baseline, every other model's scores (the
raw argmax, random allocation, gradient boosting, smoothed coarse fractions) and the
test-set size. Build the models first (from the repository root):

    snakemake --cores 2 --configfile benchmarks/configs/demo_single_year.yaml \\
        results_single_year/model/model.pt results_single_year/split/split.json
    snakemake --cores 2 --configfile benchmarks/configs/demo_single_year_seed1.yaml \\
        results_single_year/seed1/model/model.pt results_single_year/seed1/split/split.json

``AI4LAND_SINGLE_YEAR_CONFIGS`` (comma-separated) names other configs (e.g. a world with
``train.smooth_coarse: true``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from benchmarks.common import trained_run, write_result

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = os.environ.get(
    "AI4LAND_SINGLE_YEAR_CONFIGS",
    "benchmarks/configs/demo_single_year.yaml,benchmarks/configs/demo_single_year_seed1.yaml",
).split(",")
MIOU_MARGIN = 0.03


def main() -> None:
    from ai4land.evaluate import run_evaluate

    worlds = {}
    for config_path in CONFIGS:
        config, model, split = trained_run(
            config_path,
            how=f"run snakemake with --configfile {config_path} first (see this file's "
                "docstring)")
        start = time.perf_counter()
        metrics = run_evaluate(config, model_dir=model, split_path=split,
                               output=ROOT / "benchmarks" / "logs" / "single_year_skill"
                               / Path(config_path).stem / "metrics.json")
        worlds[config_path] = world_summary(metrics, config=config,
                                            wall_s=time.perf_counter() - start)
    record(worlds)


def world_summary(metrics: dict, *, config, wall_s: float) -> dict:
    """One world's checks and scores from its single-year evaluation's ``metrics``."""
    if metrics["split"]["mode"] != "single-year":
        raise SystemExit(f"{config.run_name}: the evaluation ran in {metrics['split']['mode']} "
                         "mode; single_year_skill needs one observed year (no chain, no prior)")
    models = metrics["models"]
    unet, majority = models["unet"], models["coarse_majority"]
    differences = {}
    for metric in ("oa", "miou"):
        # the paired block-bootstrap interval of the U-Net minus the best baseline
        entry = metrics["comparison"].get(metric, {}).get("best_baseline", {})
        differences[metric] = {"against_best_baseline": entry}
    return {
        "seed": config.seed, "smooth_coarse": config.train.smooth_coarse,
        "smooth_weight": config.predict.smooth_weight, "split": metrics["split"],
        "scored_map": metrics["scored_map"],
        "checks": {"oa": unet["oa"] >= majority["oa"],
                   "miou": unet["miou"] >= majority["miou"] + MIOU_MARGIN},
        "models": {name: {"oa": m["oa"], "miou": m["miou"],
                          "oa_interval": m["intervals"].get("oa"),
                          "miou_interval": m["intervals"].get("miou"),
                          "per_class_iou": m.get("per_class_iou")}
                   for name, m in models.items()},
        "differences": differences,
        "wall_s": round(wall_s, 1),
    }


def record(worlds: dict[str, dict]) -> dict:
    """The result JSON of the worlds' summaries (:func:`world_summary`, by config)."""
    first = next(iter(worlds.values()))["models"]
    return write_result(
        "single_year_skill", metric="miou", ours=first["unet"]["miou"],
        reference=first["coarse_majority"]["miou"],
        reference_name="coarse majority (target: +0.03), first world", higher_is_better=True,
        target="single-year mode (no prior), held-out test blocks, every world: harmonised "
               "U-Net OA >= coarse majority OA and mIoU >= coarse majority mIoU + 0.03",
        meets_target=all(all(w["checks"].values()) for w in worlds.values()),
        params={"checks": {f"seed {w['seed']}": _checks_line(w) for w in worlds.values()},
                "worlds": worlds},
    )


def _checks_line(world: dict) -> str:
    unet, majority = world["models"]["unet"], world["models"]["coarse_majority"]
    checks = {name: "met" if ok else "not met" for name, ok in world["checks"].items()}
    return (f"OA {unet['oa']:.3f} vs {majority['oa']:.3f} {checks['oa']}; mIoU "
            f"{unet['miou']:.3f} vs {majority['miou'] + MIOU_MARGIN:.3f} {checks['miou']}")


if __name__ == "__main__":
    sys.exit(main())
