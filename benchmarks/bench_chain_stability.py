"""chain_stability: are the U-Net's published chains stable and conserving on the demo?

``ai4land evaluate`` on each demo world (config/demo.yaml, and the configs listed in
``AI4LAND_QUALITY_CONFIGS``, comma-separated, e.g. a demo world of another seed; each
run from the repository root with its model and split of ``make demo`` under its
results/) scores the U-Net's harmonised chains (forward and backward over the test
years, on the held-out test blocks). Targets (issue 19), every one in every world:

- swap ratio (changes beyond each cell's net change / changes) <= 0.2;
- isolated single-pixel changes <= 10 % of the changes;
- first predicted year: the share of the observed map re-drawn <= 2x the observed mean
  annual change of the test blocks (land pixels whose class differs from the year
  before, mean over the test years);
- no class vanishes from a cell without coarse evidence;
- conservation MAE against the delta-method target <= 1e-3 in every chain year;
- final-year OA and mIoU of each chain >= those of ``random_change`` (persistence plus
  random allocation of each cell's net change).

``ours`` is the worst isolated share over the worlds (the target most often missed),
``reference`` its target 0.1; ``params`` hold every number per world and chain.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import trained_run, write_result

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["config/demo.yaml"] + [c for c in os.environ.get("AI4LAND_QUALITY_CONFIGS",
                                                             "").split(",") if c]
LIMITS = {"swap_ratio": 0.2, "isolated_share": 0.1, "first_year_factor": 2.0,
          "conservation_mae": 1e-3}


def observed_annual_change(config, split_path: Path) -> float:
    """Mean over the test years of the share of test-block land pixels whose observed
    class differs from the year before."""
    from ai4land.io.cube import Cube
    from ai4land.samples.split import load_split

    cube = Cube.from_config(config)
    split = load_split(split_path)
    observed = cube.target_years
    years = [y for y in split.test_years if y in observed and y - 1 in observed]
    shares = []
    for year in years:
        changed = land = 0
        for block in (b for b in split.blocks if b.role == "test"):
            window = split.block_window(block)
            mask = cube.land_mask_window(window)
            now, before = cube.target_window(year, window), cube.target_window(year - 1, window)
            changed += int(((now != before) & mask).sum())
            land += int(mask.sum())
        shares.append(changed / max(land, 1))
    return float(np.mean(shares))


def world_summary(config, metrics: dict, split_path: Path) -> dict:
    """The targets' numbers of one world's ``metrics.json``."""
    unet = metrics["models"]["unet"]
    stability = unet["stability"]
    annual = observed_annual_change(config, split_path)
    chains = {}
    for name, chain in unet["chains"].items():
        years = [str(y) for y in metrics["split"]["chains"][name]["years"]]  # chain order
        first, last = chain["by_year"][years[0]], chain["by_year"][years[-1]]
        reference = metrics["models"]["random_change"]["chains"][name]["by_year"][years[-1]]
        chains[name] = {
            "first_year": years[0],
            "first_year_changed_share": first["stability"]["changed_share"],
            "final_year": years[-1],
            "final_oa": last["oa"], "final_miou": last["miou"],
            "random_change_final_oa": reference["oa"],
            "random_change_final_miou": reference["miou"],
            "max_conservation_mae": max(y["conservation_mae"] for y in chain["by_year"].values()),
        }
    checks = {
        "swap_ratio": stability["swap_ratio"] <= LIMITS["swap_ratio"],
        "isolated_share": stability["isolated_share"] <= LIMITS["isolated_share"],
        "first_year": all(c["first_year_changed_share"] <= LIMITS["first_year_factor"] * annual
                          for c in chains.values()),
        "no_vanished_class": stability["vanished"] == 0,
        "conservation": all(c["max_conservation_mae"] <= LIMITS["conservation_mae"]
                            for c in chains.values()),
        "final_year_vs_random_change": all(
            c["final_oa"] >= c["random_change_final_oa"]
            and c["final_miou"] >= c["random_change_final_miou"] for c in chains.values()),
    }
    return {
        "seed": config.seed, "test_pixels": metrics["split"]["test_pixels"],
        "test_blocks": metrics["split"]["test_blocks"],
        "swap_ratio": stability["swap_ratio"], "isolated_share": stability["isolated_share"],
        "vanished": stability["vanished"], "observed_annual_change": round(annual, 6),
        "chains": chains, "checks": checks,
    }


def write(summaries: dict, wall_s: float | None = None) -> dict:
    worst = max(s["isolated_share"] for s in summaries.values())
    return write_result(
        "chain_stability", metric="isolated_share", ours=worst,
        reference=LIMITS["isolated_share"], reference_name="target (at most)",
        target="swap ratio <= 0.2, isolated changes <= 10 %, first-year re-draw <= 2x the "
               "observed mean annual change, no class vanishes, conservation MAE <= 1e-3 "
               "every year, final-year OA/mIoU >= random_change; in every world",
        meets_target=all(all(s["checks"].values()) for s in summaries.values()),
        params={"worlds": summaries, "limits": LIMITS, "wall_s": wall_s},
    )


def main() -> None:
    from ai4land.evaluate import run_evaluate

    summaries, start = {}, time.perf_counter()
    for path in CONFIGS:
        config, model, split = trained_run(
            path, how=f"run `make demo` (with --configfile {path}) first")
        metrics = run_evaluate(config, model_dir=model, split_path=split,
                               output=ROOT / "benchmarks" / "logs" / "chain_stability"
                               / Path(path).stem / "metrics.json")
        summaries[path] = world_summary(config, metrics, split)
    write(summaries, round(time.perf_counter() - start, 1))


if __name__ == "__main__":
    sys.exit(main())
