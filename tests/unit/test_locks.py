"""Locks that die with their process: a killed job's staging directory and a killed
Snakemake's lock files are removed, those of live processes are not."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from ai4land.io.cog import staging_dir
from ai4land.io.locks import held_staging_dir, remove_stale_staging

HOLD = """
import sys, time
from pathlib import Path
from ai4land.io.locks import {what}
{call}
print("ready", flush=True)
time.sleep(600)
"""


def _holder(what: str, call: str) -> subprocess.Popen:
    """A process that takes a lock and waits (to be killed); returns once it holds it."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(what=what, call=call)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def test_a_killed_jobs_staging_directory_is_removed_by_the_next_job(tmp_path):
    output = tmp_path / "ai4land_ssp126_2020.tif"
    killed = _holder("held_staging_dir",
                     f"stage = held_staging_dir(Path({str(output)!r})); stage.__enter__()")
    _kill(killed)
    left = list(tmp_path.glob(".ai4land_ssp126_2020.tif.*"))
    assert len(left) == 1 and left[0].is_dir()
    (left[0] / "ai4land_ssp126_2020.tif.rows").write_bytes(b"x" * 1000)
    other = tmp_path / ".ai4land_ssp126_2021.tif.abcdefgh"  # another killed job's: goes
    other.mkdir()
    kept = [tmp_path / ".ai4land_ssp126_2021.tif.json.tmp", tmp_path / ".zarr.abcdefgh"]
    for path in kept:  # not a staging directory of a map
        path.mkdir()
    with staging_dir(output) as mine:
        assert mine.is_dir()
        assert not left[0].exists() and not other.exists()
    assert not mine.exists()
    assert all(path.is_dir() for path in kept)


def test_a_live_jobs_staging_directory_is_kept(tmp_path):
    output, other = tmp_path / "map_2020.tif", tmp_path / "map_2021.tif"
    live = _holder("held_staging_dir",
                   f"stage = held_staging_dir(Path({str(other)!r})); stage.__enter__()")
    try:
        assert remove_stale_staging(output) == []
        with held_staging_dir(output):
            assert len(list(tmp_path.glob(".map_*.tif.*"))) == 2
    finally:
        _kill(live)
    left = list(tmp_path.glob(".map_2021.tif.*"))
    assert len(left) == 1 and remove_stale_staging(output) == left
    assert not list(tmp_path.glob(".map_*.tif.*"))


def _claim(workdir: Path) -> int:
    """Locks removed by claim_workdir in a fresh process (as a new Snakemake would)."""
    code = (
        f"from ai4land.io.locks import claim_workdir; print(len(claim_workdir({str(workdir)!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout)


def test_snakemake_locks_of_a_killed_run_are_removed_not_those_of_a_live_one(tmp_path):
    workdir = tmp_path / ".snakemake"
    (workdir / "locks").mkdir(parents=True)
    live = _holder("claim_workdir", f"claim_workdir({str(workdir)!r})")
    try:
        (workdir / "locks/0.input.lock").write_text("a\n")
        (workdir / "locks/0.output.lock").write_text("b\n")
        assert _claim(workdir) == 0  # a live Snakemake runs here: its locks are real
        assert len(list((workdir / "locks").glob("*.lock"))) == 2
    finally:
        _kill(live)
    assert _claim(workdir) == 2  # it was killed: they are stale
    assert not list((workdir / "locks").glob("*.lock"))
