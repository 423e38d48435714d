"""chain_quality: figure of merit of the U-Net's harmonised chains against the best
allocation baseline on the demo's whole test period.

``ai4land evaluate`` on the demo (config/demo.yaml, run from the repository root; the
model and split of ``make demo`` under results/) runs the U-Net and every allocation
baseline side by side on the same chains, test blocks and delta-method target. ``ours``
is the U-Net's figure of merit of the whole-period change (start map -> last chain year,
forward and backward chains pooled), ``reference`` that of the best allocation baseline
(``random_change``, ``neighbourhood_density``, ``gradient_boosting``,
``smooth_coarse``); ``params`` hold the block-bootstrap 95 % interval of the difference
(paired over the same resampled test blocks) and every model's figure of merit with its
interval. The target: the U-Net better, with the difference's interval excluding 0.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from benchmarks.common import trained_run, write_result

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "demo.yaml"
OUTPUT = ROOT / "benchmarks" / "logs" / "chain_quality" / "metrics.json"


def main() -> None:
    from ai4land.evaluate import run_evaluate

    config, model, split = trained_run(CONFIG, how="run `make demo` first (this benchmark "
                                                   "scores the demo's trained model)")
    start = time.perf_counter()
    metrics = run_evaluate(config, model_dir=model, split_path=split, output=OUTPUT)
    record(metrics, wall_s=time.perf_counter() - start)


def record(metrics: dict, *, wall_s: float) -> dict:
    """The result JSON of one evaluation's ``metrics``."""
    models = metrics["models"]
    comparison = metrics["comparison"]["period_fom"]["best_allocation_baseline"]
    best = comparison["baseline"]
    ours, reference = (models[name]["period"]["fom"] for name in ("unet", best))
    return write_result(
        "chain_quality", metric="figure_of_merit", ours=ours, reference=reference,
        reference_name=f"{best} (best allocation baseline)", higher_is_better=True,
        target="U-Net FoM above the best allocation baseline's, the 95 % interval of the "
               "difference excluding 0",
        meets_target=bool(comparison["significant"] and comparison["estimate"] > 0),
        params={
            "config": "config/demo.yaml", "split": metrics["split"],
            "difference": comparison,
            "fom": {name: m["intervals"]["period_fom"] for name, m in models.items()
                    if "period_fom" in m["intervals"]},
            "wall_s": round(wall_s, 1),
        },
    )

if __name__ == "__main__":
    sys.exit(main())
