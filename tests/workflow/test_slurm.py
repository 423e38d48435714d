"""The tiny demo DAG through `snakemake --profile profiles/slurm` on a real (local) Slurm.

Slurm comes from scripts/slurm/start.sh (.ci/run starts it; the fixture starts it too
when it is not up). Training runs DDP with 2 gloo processes under torchrun inside a
Slurm job; the run is killed mid-DAG and restarted; a failing job is reported.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TINY = [REPO / "config/demo.yaml", REPO / "tests/integration/tiny.yaml"]
CI_CONFIG = REPO / "tests/workflow/slurm-ci.yaml"
MAPS = [
    f"results/maps/{s}/ai4land_{s}_{y}.tif"
    for s, years in (
        ("historical", (1958, 1959)),
        ("ssp126", (2020, 2021)),
        ("ssp585", (2020, 2021)),
    )
    for y in years
]


def _command(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
            "--directory", str(workdir), "--profile", str(REPO / "profiles/slurm"),
            "--workflow-profile", str(REPO / "profiles/slurm-ci"), *args,
            "--configfile", *map(str, TINY), str(CI_CONFIG)]  # last: --configfile takes several


def _env() -> dict:
    return dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


def _ran(output: str) -> set[str]:
    """Rules Snakemake started in a run (from its `rule NAME:` / `localrule` lines)."""
    return {line.split()[-1].rstrip(":") for line in output.splitlines()
            if line.startswith(("rule ", "localrule "))}


def _jobs(output: str) -> dict[str, tuple[str, str]]:
    """Snakemake's jobs in a run's output: jobid -> (rule, wildcards), from its job blocks
    (``rule NAME:`` then indented ``key: value`` lines, ``jobid`` and ``wildcards`` among them)."""
    jobs, block = {}, None
    for line in [*output.splitlines(), ""]:
        if line.startswith(("rule ", "localrule ")):
            block = {"rule": line.split()[-1].rstrip(":")}
        elif block is not None and line.startswith("    ") and ":" in line:
            key, value = line.strip().split(":", 1)
            block[key] = value.strip()
        elif block is not None:
            if "jobid" in block:
                jobs[block["jobid"]] = (block["rule"], block.get("wildcards", ""))
            block = None
    return jobs


def _finished(output: str) -> set[tuple[str, str]]:
    """(rule, wildcards) of the jobs Snakemake reported finished (`Finished jobid: N`)."""
    jobs = _jobs(output)
    ids = [line.split("Finished jobid:", 1)[1].split()[0]
           for line in output.splitlines() if "Finished jobid:" in line]
    return {jobs[jobid] for jobid in ids if jobid in jobs}


@pytest.fixture(scope="module")
def slurm():
    # idempotent: installs and starts the local Slurm only where it is not up
    subprocess.run(["bash", str(REPO / "scripts/slurm/start.sh")], check=True)


@pytest.fixture(scope="module")
def killed_and_restarted(slurm, tmp_path_factory):
    """Run until the split exists, SIGTERM Snakemake, then run again to the maps."""
    workdir = tmp_path_factory.mktemp("slurm")
    first = subprocess.Popen(_command(workdir, *MAPS), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env=_env(), cwd=workdir)
    deadline = time.monotonic() + 300
    while not (workdir / "results/split/split.json").exists():
        assert first.poll() is None, first.stdout.read()[-5000:]
        assert time.monotonic() < deadline, "split did not appear within 5 minutes"
        time.sleep(1)
    first.send_signal(signal.SIGTERM)
    first_out = first.communicate(timeout=120)[0]
    start = time.monotonic()
    second = subprocess.run(
        _command(workdir, *MAPS), capture_output=True, text=True, env=_env(), cwd=workdir
    )
    elapsed = time.monotonic() - start
    if second.returncode != 0:
        logs = "\n".join(
            f"== {p}\n{p.read_text()[-3000:]}" for p in (workdir / "logs").rglob("*.log")
        )
        pytest.fail(
            f"restarted run failed:\n{second.stdout[-5000:]}\n{second.stderr[-5000:]}\n{logs}"
        )
    return workdir, first.returncode, first_out, second.stdout + second.stderr, elapsed


@pytest.mark.slow
def test_restart_finishes_only_what_is_missing(killed_and_restarted):
    workdir, first_rc, first_out, second_out, elapsed = killed_and_restarted
    assert first_rc != 0, "the killed run reported success"
    # a job still running at the kill (under load, often a prepare_coarse of another
    # scenario) is rerun: only the jobs that had finished must not be
    finished_before = _finished(first_out)
    assert {"demo_world", "prepare_target"} <= {rule for rule, _ in finished_before}, (
        first_out[-3000:])
    started_again = set(_jobs(second_out).values())
    assert not started_again & finished_before, (started_again, finished_before)
    ran_again = _ran(second_out)
    assert "train" in ran_again  # predict runs as group jobs
    for path in MAPS:
        assert (workdir / path).is_file(), path
    print(f"restarted Slurm run (train + predict) took {elapsed:.0f} s")


@pytest.mark.slow
def test_training_ran_ddp_inside_a_slurm_job(killed_and_restarted):
    workdir, *_ = killed_and_restarted
    log = (workdir / "logs/train.log").read_text()
    assert "--nproc_per_node=2" in log and "cpu x2" in log, log[-2000:]
    slurm_logs = list((workdir / "logs/slurm/rule_train").rglob("*.log"))
    assert slurm_logs, "train did not run as a Slurm job"


@pytest.mark.slow
def test_a_failing_job_is_reported(killed_and_restarted):
    workdir, *_ = killed_and_restarted
    (workdir / "resources/cube/grids.json").write_text("{ not json")
    result = subprocess.run(_command(workdir, "--forcerun", "init_store", "--until", "init_store",
                                     "--rerun-triggers", "params"),
                            capture_output=True, text=True, env=_env(), cwd=workdir)
    out = result.stdout + result.stderr
    assert result.returncode != 0, out[-3000:]
    assert "Error in rule init_store" in out and "FAILED" in out, out[-3000:]
