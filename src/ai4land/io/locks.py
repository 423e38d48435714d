"""Locks that die with their process (``flock``), so that a killed run leaves nothing
behind that blocks or litters the next one.

- :func:`claim_workdir`: the Snakemake process of a run holds a shared lock on
  ``.snakemake/ai4land-run.lock`` for its whole life. Snakemake's own locks
  (``.snakemake/locks/``) are plain files that a killed Snakemake leaves behind, and
  every later run then stops with a LockException until ``--unlock``; when no live
  Snakemake holds the run lock, they are a killed run's and are removed.
- :func:`held_staging_dir`: a job's hidden staging directory, locked while the job
  uses it; those no live job holds (a killed job's) are removed by the next job that
  stages the same output.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RUN_LOCK = "ai4land-run.lock"
_held: list[int] = []  # descriptors of run locks held until the process ends


def _try_exclusive(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def claim_workdir(snakemake_dir: str | Path = ".snakemake") -> list[Path]:
    """Hold the run lock of ``snakemake_dir`` until this process ends; return the
    Snakemake lock files of killed runs that were removed (none while another live
    Snakemake holds the run lock: its locks are real)."""
    snakemake_dir = Path(snakemake_dir)
    snakemake_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(snakemake_dir / RUN_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    removed = []
    if _try_exclusive(fd):  # no other Snakemake runs here
        for lock in sorted((snakemake_dir / "locks").glob("*.lock")):
            lock.unlink(missing_ok=True)
            removed.append(lock)
    fcntl.flock(fd, fcntl.LOCK_SH)
    _held.append(fd)
    return removed


def remove_stale_staging(path: str | Path) -> list[Path]:
    """Remove the staging directories of ``path`` (``.<name>.*``) that no live job holds."""
    path = Path(path)
    removed = []
    for candidate in sorted(path.parent.glob(f".{path.name}.*")):
        if candidate.is_symlink() or not candidate.is_dir():
            continue
        try:
            fd = os.open(candidate, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            if _try_exclusive(fd):
                shutil.rmtree(candidate, ignore_errors=True)
                removed.append(candidate)
        finally:
            os.close(fd)
    return removed


@contextmanager
def held_staging_dir(path: str | Path) -> Iterator[Path]:
    """A hidden temporary directory beside ``path`` (same file system), locked while in
    use and removed on exit; stale ones of ``path`` left by killed jobs go first."""
    path = Path(path)
    remove_stale_staging(path)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield Path(tmp)
        finally:
            os.close(fd)
