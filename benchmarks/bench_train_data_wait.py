"""Share of training time spent waiting for data, from ``ai4land train``'s own
``data_wait`` metric, with the background prefetch thread (``train.prefetch: 2``, the
default) vs loading in the training loop (``train.prefetch: 0``), side by side on the
demo cube with the default demo model.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from benchmarks.common import write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from data.demo_cube import demo_workspace, split_path  # noqa: E402

STEPS = 30
REPEATS = 3


def _wait(config, directory: Path) -> tuple[float, float]:
    """Lowest data-wait share of ``REPEATS`` runs, and that run's samples/s."""
    from ai4land.train.loop import run_training

    runs = []
    for i in range(REPEATS):
        summary = run_training(config, output_dir=directory / str(i), split_path=split_path(config),
                               resume=False)
        runs.append((summary["metrics"]["data_wait"], summary["metrics"]["samples_per_s"]))
    return min(runs)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ai4land-bench-") as tmp:
        tmp = Path(tmp)
        config = demo_workspace(tmp, overrides={
            "train": {"epochs": 1, "steps_per_epoch": STEPS, "val_batches": 1},
        })
        ours, ours_speed = _wait(config, tmp / "prefetch")
        reference, reference_speed = _wait(
            config.model_copy(update={"train": config.train.model_copy(update={"prefetch": 0})}),
            tmp / "inline")
    write_result(
        "train_data_wait", metric="data_wait_fraction", ours=ours, reference=reference,
        reference_name="loading inside the training loop (prefetch 0)", target="< 0.10",
        meets_target=ours < 0.10,
        params={"steps": STEPS, "batch_size": config.train.batch_size,
                "prefetch": config.train.prefetch, "samples_per_s": round(ours_speed, 2),
                "reference_samples_per_s": round(reference_speed, 2), "repeats": REPEATS},
    )


if __name__ == "__main__":
    main()
