"""DDP scaling on this machine: ``torchrun --nproc_per_node=2`` (gloo) vs one process,
same config, same global batch, training samples/s from the model card.

torchrun gives each of the 2 ranks one thread (OMP_NUM_THREADS=1) where the single
process runs 2 threads: on a 2-core machine both use the same hardware, so any
difference is how well each uses it, not scaling onto more hardware.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from benchmarks.common import write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from data.demo_cube import demo_workspace, split_path  # noqa: E402

STEPS = 16
REPEATS = 3


def _samples_per_s(command: list[str], output: Path) -> float:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run([*command, "--output", str(output), "--no-resume"],
                            capture_output=True, text=True, env=env, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"{command[:4]} failed:\n{result.stderr[-2000:]}")
    return json.loads((output / "model_card.json").read_text())["metrics"]["samples_per_s"]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="ai4land-bench-") as tmp:
        tmp = Path(tmp)
        config = demo_workspace(tmp, overrides={
            "train": {"epochs": 1, "steps_per_epoch": STEPS, "val_batches": 1},
        })
        config_file = tmp / "config.yaml"
        config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
        args = ["-m", "ai4land.train", "--config", str(config_file), "--split",
                str(split_path(config))]
        single = [sys.executable, *args]
        double = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node=2", *args]
        ours = max(_samples_per_s(double, tmp / f"ddp{i}") for i in range(REPEATS))
        reference = max(_samples_per_s(single, tmp / f"one{i}") for i in range(REPEATS))
    write_result(
        "ddp_scaling", metric="samples_per_s", ours=ours, reference=reference,
        reference_name="1 process (all cores)",
        target="report only: 2 ranks on 2 cores have no extra hardware to scale onto",
        meets_target=None,
        params={"ranks": 2, "backend": "gloo", "steps": STEPS,
                "global_batch": config.train.batch_size, "cores": os.cpu_count(),
                "best_of": REPEATS},
        higher_is_better=True,
    )


if __name__ == "__main__":
    main()
