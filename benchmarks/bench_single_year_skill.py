"""single_year_skill: without a prior, does the harmonised map beat the coarse majority?

Single-year mode (issue 19, direction 6): one observed map, no previous map to continue,
so the U-Net runs without a prior (``train.prior: false``) and each test year is
harmonised to the LUH-mapped fractions (full allocation). On the demo world
(benchmarks/configs/demo_single_year.yaml: config/demo.yaml's world with the single
observed year 2010, trained on the training blocks of that year with the default
inputs), ``ai4land evaluate`` scores the held-out test blocks. Target: the harmonised
U-Net's OA >= the coarse majority's and its mIoU >= the coarse majority's + 0.03.

``ours`` is the U-Net's mIoU, ``reference`` the coarse majority's; ``params`` hold both
models' OA and mIoU with their block-bootstrap 95 % intervals, the paired interval of
the U-Net minus the best baseline, every other model's scores (the raw argmax, random allocation,
gradient boosting, smoothed coarse fractions) and the test-set size. Build the model
first (from the repository root):

    snakemake --cores 2 --configfile benchmarks/configs/demo_single_year.yaml \\
        results_single_year/model/model.pt results_single_year/split/split.json

``AI4LAND_SINGLE_YEAR_CONFIG`` names another config (e.g. the same world with
``train.smooth_coarse: true``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from benchmarks.common import trained_run, write_result

ROOT = Path(__file__).resolve().parents[1]
CONFIG = os.environ.get("AI4LAND_SINGLE_YEAR_CONFIG", "benchmarks/configs/demo_single_year.yaml")
MIOU_MARGIN = 0.03


def main() -> None:
    from ai4land.evaluate import run_evaluate

    config, model, split = trained_run(
        CONFIG, how=f"run snakemake with --configfile {CONFIG} first (see this file's docstring)")
    start = time.perf_counter()
    metrics = run_evaluate(config, model_dir=model, split_path=split,
                           output=ROOT / "benchmarks" / "logs" / "single_year_skill"
                           / "metrics.json")
    record(metrics, config=CONFIG, smooth=config.train.smooth_coarse,
           wall_s=time.perf_counter() - start)


def record(metrics: dict, *, config: str, smooth: bool, wall_s: float) -> dict:
    """The result JSON of one single-year evaluation's ``metrics``."""
    if metrics["split"]["mode"] != "single-year":
        raise SystemExit(f"{config}: the evaluation ran in {metrics['split']['mode']} mode; "
                         "single_year_skill needs one observed year (no chain, no prior)")
    models = metrics["models"]
    unet, majority = models["unet"], models["coarse_majority"]
    oa_ok = unet["oa"] >= majority["oa"]
    miou_ok = unet["miou"] >= majority["miou"] + MIOU_MARGIN
    differences = {}
    for metric in ("oa", "miou"):
        # the paired block-bootstrap interval of the U-Net minus the best baseline
        entry = metrics["comparison"].get(metric, {}).get("best_baseline", {})
        differences[metric] = {"against_best_baseline": entry}
    return write_result(
        "single_year_skill", metric="miou", ours=unet["miou"], reference=majority["miou"],
        reference_name="coarse majority (target: +0.03)", higher_is_better=True,
        target="single-year mode (no prior), held-out test blocks: harmonised U-Net OA >= "
               "coarse majority OA and mIoU >= coarse majority mIoU + 0.03",
        meets_target=bool(oa_ok and miou_ok),
        params={
            "config": config, "smooth_coarse": smooth, "split": metrics["split"],
            "scored_map": metrics["scored_map"],
            "checks": {"oa": oa_ok, "miou": miou_ok},
            "models": {name: {"oa": m["oa"], "miou": m["miou"],
                              "oa_interval": m["intervals"].get("oa"),
                              "miou_interval": m["intervals"].get("miou"),
                              "per_class_iou": m.get("per_class_iou")}
                       for name, m in models.items()},
            "differences": differences,
            "wall_s": round(wall_s, 1),
        },
    )


if __name__ == "__main__":
    sys.exit(main())
