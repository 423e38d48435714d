"""Running the workflow on the tiny demo world (tiny.yaml) through Snakemake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
REPO = HERE.parents[1]


# The tiny world's config: demo.yaml with tiny.yaml over it (--configfile merges in order).
TINY_CONFIG = [str(REPO / "config/demo.yaml"), str(HERE / "tiny.yaml")]


def run_snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    """``snakemake`` on the repository's Snakefile in ``workdir`` with the tiny config."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(workdir), *args, "--configfile", *TINY_CONFIG],
        capture_output=True, text=True, env=env,
    )


def run_tiny_dag(workdir: Path) -> None:
    """The whole DAG in ``workdir`` on 2 cores; fails the test with the logs if it fails."""
    result = run_snakemake(workdir, "--cores", "2")
    if result.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}"
                         for p in (workdir / "logs").rglob("*.log"))
        pytest.fail(f"snakemake failed:\n{result.stderr[-5000:]}\n{logs}")


@pytest.fixture(scope="session")
def snakemake():
    return run_snakemake


@pytest.fixture(scope="session")
def tiny_dag():
    return run_tiny_dag
