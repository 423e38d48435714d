"""Locks that die with their process (``flock``), so that a killed run leaves nothing
behind that blocks or litters the next one.

- :func:`claim_workdir`: the Snakemake process of a run holds a shared lock on
  ``.snakemake/ai4land-run.lock`` for its whole life. Snakemake's own locks
  (``.snakemake/locks/``) are plain files that a killed Snakemake leaves behind, and
  every later run then stops with a LockException until ``--unlock``; when no live
  Snakemake holds the run lock, they are a killed run's and are removed.
- :func:`held_staging_dir`: a job's hidden staging directory, locked while the job
  uses it (its ``.lock`` file); those no live job holds (killed jobs') are removed by
  the next job that stages an output in the same directory (the next prediction of that
  scenario).

Locks are taken on files opened for writing: NFS emulates ``flock`` with byte-range
locks, which need that for an exclusive lock.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RUN_LOCK = "ai4land-run.lock"
# `.<output name>.<8 characters>`: tempfile's names for held_staging_dir's directories
STAGING = re.compile(r"\..+\.[a-z0-9_]{8}")
STAGING_LOCK = ".lock"  # inside a staging directory: held by its job
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


def _open_lock(path: Path, *, create: bool) -> int | None:
    """A descriptor to flock ``path`` with, opened for writing (NFS emulates flock with
    byte-range locks, and an exclusive one needs a file open for writing)."""
    try:
        return os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    except FileNotFoundError:
        return None


def remove_stale_staging(path: str | Path) -> list[Path]:
    """Remove the staging directories beside ``path`` (``.<output name>.<8 characters>``,
    of any output with ``path``'s suffix) that no live job holds."""
    path = Path(path)
    removed = []
    for candidate in sorted(path.parent.glob(f".*{path.suffix}.*")):
        if (candidate.is_symlink() or not candidate.is_dir()
                or not STAGING.fullmatch(candidate.name)):
            continue
        # without a lock file it is an older version's (a directory appears under this
        # name only once its job holds the lock)
        fd = _open_lock(candidate / STAGING_LOCK, create=False)
        try:
            if fd is None or _try_exclusive(fd):
                shutil.rmtree(candidate, ignore_errors=True)
                removed.append(candidate)
        finally:
            if fd is not None:
                os.close(fd)
    return removed


@contextmanager
def held_staging_dir(path: str | Path) -> Iterator[Path]:
    """A hidden temporary directory beside ``path`` (same file system), locked while in
    use and removed on exit; stale ones beside it left by killed jobs go first.

    It is made as ``<name>.new``, which no clean-up touches, locked, then renamed: a
    clean-up never sees a staging directory that its job has not locked yet.
    """
    path = Path(path)
    remove_stale_staging(path)
    new = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new"))
    fd = _open_lock(new / STAGING_LOCK, create=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        tmp = new.with_name(new.name.removesuffix(".new"))
        os.rename(new, tmp)
    except BaseException:
        os.close(fd)
        shutil.rmtree(new, ignore_errors=True)
        raise
    try:
        yield tmp
    finally:
        os.close(fd)
        shutil.rmtree(tmp, ignore_errors=True)
