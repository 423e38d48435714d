"""The Snakemake workflow itself: lint-clean, and the production DAG resolves offline."""

import os
import subprocess
import sys
from pathlib import Path

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _run(args, cwd):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(SNAKEMAKE + args, cwd=cwd, capture_output=True, text=True, env=env)


def test_lint_is_clean(repo):
    result = _run(["--lint"], repo)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr


def test_production_dry_run_has_every_stage(repo):
    result = _run(["-n", "--configfile", "config/config.yaml", "--quiet", "rules"], repo)
    assert result.returncode == 0, result.stderr
    out = result.stdout + result.stderr
    for rule in ("download_luh2_states", "download_hildaplus", "download_luh2_ssp585",
                 "prepare_target", "prepare_static", "prepare_coarse", "split", "train",
                 "evaluate", "init_store", "predict", "publish"):
        assert rule in out, f"{rule} missing from the production DAG"
    # 110 backward years (1959..1850) + 8 SSPs x 81 forward years (2020..2100)
    predict_line = next(line for line in out.splitlines() if line.strip().startswith("predict "))
    assert int(predict_line.split()[-1]) == 110 + 8 * 81


def test_demo_dry_run(repo, tmp_path):
    result = _run(["-n", "--quiet", "rules", "--directory", str(tmp_path)], repo)
    assert result.returncode == 0, result.stderr
    assert "demo_world" in result.stdout + result.stderr


def test_bad_config_gives_one_line(repo, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  batch_size: -1\n")
    result = _run(["-n", "--configfile", "config/demo.yaml", str(bad)], repo)
    assert result.returncode != 0
    errors = [
        line for line in (result.stdout + result.stderr).splitlines() if "ai4land: error" in line
    ]
    assert errors and "train.batch_size" in errors[0]
