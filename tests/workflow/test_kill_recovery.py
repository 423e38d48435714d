"""A run whose Snakemake process group is SIGKILLed resumes when the same command is run
again (profiles/default: rerun-incomplete; the workflow removes a killed run's locks),
and the staging directories of killed predict jobs are removed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = [REPO / "config/demo.yaml", REPO / "tests/integration/tiny.yaml"]


def _command(workdir: Path) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(workdir), "--cores", "2", "--configfile", *map(str, CONFIG)]


def _staging(workdir: Path) -> list[Path]:
    return sorted((workdir / "results/maps").glob("*/.ai4land_*.tif.*"))


def _run_until(workdir: Path, reached, what: str, timeout: float = 600) -> None:
    """Start the command in its own process group; SIGKILL the group once ``reached()``."""
    run = subprocess.Popen(_command(workdir), cwd=workdir.parent, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not reached():
            assert run.poll() is None, f"ended before {what}:\n{run.stdout.read()[-4000:]}"
            assert time.monotonic() < deadline, f"{what} not reached in {timeout} s"
            time.sleep(0.02)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        run.stdout.close()


@pytest.mark.slow
def test_sigkill_at_any_stage_then_the_same_command_resumes(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    # killed while the cube is prepared (the lock files of the killed run stay)
    _run_until(workdir, lambda: (workdir / "logs/prepare/static.log").exists(), "prepare_static")
    assert list((workdir / ".snakemake/locks").glob("*.lock")), "the kill left no lock behind"
    # the same command again; killed while the U-Net trains (after its first checkpoint)
    checkpoint = workdir / "results/model/checkpoints/last.pt"
    _run_until(workdir, checkpoint.exists, "a training checkpoint")
    # again; killed while a prediction job stages its COGs
    _run_until(workdir, lambda: bool(_staging(workdir)), "a predict job staging")
    assert _staging(workdir), "the kill left no staging directory behind"
    # and again: it finishes, the killed job's staging directory is gone
    result = subprocess.run(_command(workdir), cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-5000:]
    assert not _staging(workdir)
    assert (workdir / "results/publish/catalog.json").is_file()
    again = subprocess.run([*_command(workdir), "-n"], cwd=tmp_path, capture_output=True,
                           text=True)
    assert "Nothing to be done" in again.stdout + again.stderr
