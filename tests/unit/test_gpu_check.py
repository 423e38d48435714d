"""The GPU check script runs where no GPU is lent: a dry run on the CPU with gloo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_dry_run_writes_its_result(tmp_path):
    out = tmp_path / "gpu_check.json"
    done = subprocess.run([str(ROOT / "benchmarks" / "gpu_check.sh"), "--dry-run", "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHON": sys.executable})
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    params = result["params"]
    assert result["name"] == "gpu_check" and result["dry_run"] is True
    assert result["meets_target"] is None  # a dry run measures nothing
    assert params["backend"] == "gloo" and params["device"] == "cpu"
    assert params["ddp"] == {"world_size": 1, "all_reduce_ok": True,
                             "init_s": params["ddp"]["init_s"]}
    assert params["training"]["steps_per_s"] > 0 and params["training"]["steps_timed"] >= 1
    assert params["inference"]["mpix_per_s"] > 0
    assert params["predict_inputs"]["mpix_per_s"] > 0 and params["predict_inputs"]["batch"] == 1
    assert params["pipeline"]["samples_per_s"] > 0 and params["pipeline"]["workers"] == 1
    assert result["ours"] == round(params["pipeline"]["samples_per_s"], 2)
    assert result["reference"] == round(params["training"]["samples_per_s"], 2)
    assert params["peak_gpu_mib"] is None and params["wall_s"] > 0
    assert set(result) >= {"metric", "ratio", "target", "machine", "date"}
    assert not (ROOT / "benchmarks" / "results" / "gpu_check.json").exists() or \
        json.loads((ROOT / "benchmarks" / "results" / "gpu_check.json").read_text())["dry_run"] \
        is False  # a dry run never lands among the results
