"""Resumable, verified downloads of ``config.sources`` and safe extraction of zip members.

Each file is fetched into ``<path>.part`` (resumed with an HTTP Range request after a
dropped connection), checked (size, sha256, not an HTML error page) and only then
renamed onto ``<path>``. When the config gives no sha256, the first verified download
records url, size and sha256 in ``<paths.raw>/sources.lock.json`` and every later
download is verified against that record. Standard library only.
"""

from __future__ import annotations

import fnmatch
import hashlib
import http.client
import json
import os
import shutil
import stat
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from ai4land.errors import ConfigError, DownloadError
from ai4land.io.atomic import atomic_path

LOCK_NAME = "sources.lock.json"
CHUNK = 1 << 20
USER_AGENT = "ai4land-downloader/0.1 (+https://github.com/ai4land)"
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
_HTML_STARTS = (b"<!doctype html", b"<html")


class _Retry(Exception):
    """A transient failure: try again, resuming from the bytes already on disk."""


# --- lock file -------------------------------------------------------------------------


def lock_path(config) -> Path:
    return Path(config.paths.raw) / LOCK_NAME


def read_lock(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return dict(data.get("sources", {}))
    except (ValueError, AttributeError):
        raise DownloadError(f"{path}: lock file is not valid JSON; fix or delete it") from None


def write_lock(path: Path, entries: dict) -> None:
    text = json.dumps({"version": 1, "sources": dict(sorted(entries.items()))}, indent=2)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")


# --- verification ----------------------------------------------------------------------


def sha256_of(path: Path, *, progress: bool = False) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh, tqdm(total=path.stat().st_size, unit="B", unit_scale=True,
                                      desc=f"sha256 {path.name}", leave=False,
                                      disable=None if progress else True) as bar:
        while block := fh.read(CHUNK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def _looks_like_html(head: bytes) -> bool:
    return head.lstrip().lower().startswith(_HTML_STARTS)


def _expects_html(url: str) -> bool:
    return url.lower().split("?")[0].endswith((".html", ".htm"))


def verify_file(path: Path, *, url: str, size: int | None, sha256: str | None,
                progress: bool = False) -> tuple[int, str]:
    """Check size, HTML-ness and sha256 of ``path``; return (size, sha256)."""
    actual_size = path.stat().st_size
    if size is not None and actual_size != size:
        raise DownloadError(f"{path}: size {actual_size} bytes, expected {size} from {url}")
    if not _expects_html(url):
        with open(path, "rb") as fh:
            if _looks_like_html(fh.read(512)):
                raise DownloadError(f"{path}: {url} served an HTML page instead of data "
                                    "(login or error page?); check the URL")
    digest = sha256_of(path, progress=progress)
    if sha256 is not None and digest.lower() != sha256.lower():
        raise DownloadError(f"{path}: sha256 {digest} does not match the expected {sha256.lower()} "
                            f"for {url}; the server sent other content, re-check the URL or sha256")
    return actual_size, digest


# --- transfer --------------------------------------------------------------------------


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _transfer(url: str, part: Path, *, size: int | None, timeout: float, bar) -> None:
    """One attempt: append to ``part`` from where it stops. Raises _Retry on transient errors."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            if size is None or offset == size:
                return  # the part file is already complete
            part.unlink()
            raise _Retry(f"range not satisfiable at {offset}") from None
        if exc.code in _RETRY_STATUS:
            raise _Retry(f"HTTP {exc.code}") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; check the URL in config sources") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retry(str(exc)) from None
    with response:
        content_type = response.headers.get("Content-Type", "")
        if "text/html" in content_type.lower() and not _expects_html(url):
            raise DownloadError(f"{url}: served an HTML page (Content-Type {content_type}) instead of "
                                "data (login or error page?); check the URL")
        status = getattr(response, "status", 200)
        if offset and status == 206:
            content_range = response.headers.get("Content-Range", "")
            if not content_range.startswith(f"bytes {offset}-"):
                part.unlink()
                raise _Retry(f"unexpected Content-Range {content_range!r}")
            mode = "ab"
        else:
            offset = 0  # the server ignored the Range request: start again
            mode = "wb"
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        bar.reset(total=size if size is not None else ((offset + expected) if expected else None))
        bar.update(offset)
        received = 0
        try:
            with open(part, mode) as fh:
                while True:
                    block = response.read(CHUNK)
                    if not block:
                        break
                    if offset == 0 and received == 0 and not _expects_html(url) and _looks_like_html(block[:512]):
                        raise DownloadError(f"{url}: served an HTML page instead of data "
                                            "(login or error page?); check the URL")
                    fh.write(block)
                    received += len(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as exc:
            raise _Retry(f"connection lost after {offset + received} bytes ({exc})") from None
        if expected is not None and received < expected:
            raise _Retry(f"connection closed after {offset + received} of {offset + expected} bytes")


def download_file(url: str, dest: str | Path, *, size: int | None = None, sha256: str | None = None,
                  retries: int = 5, backoff: float = 1.0, timeout: float = 60.0,
                  progress: bool = True, desc: str | None = None) -> tuple[int, str]:
    """Fetch ``url`` to ``dest`` via ``dest.part``; verify; rename. Returns (size, sha256).

    On any failure ``dest`` is untouched; a partial ``.part`` is kept for resuming unless
    its content proved wrong (bad checksum, HTML page), in which case it is removed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    failures = 0
    with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=desc or dest.name,
              disable=None if progress else True, leave=False) as bar:
        while True:
            before = part.stat().st_size if part.exists() else 0
            try:
                _transfer(url, part, size=size, timeout=timeout, bar=bar)
                break
            except _Retry as exc:
                after = part.stat().st_size if part.exists() else 0
                failures = 0 if after > before else failures + 1
                if failures > retries:
                    raise DownloadError(f"{url}: download failed after {retries} retries ({exc}); "
                                        f"run again to resume from {part}") from None
                time.sleep(backoff * 2 ** max(failures - 1, 0))
            except DownloadError:
                part.unlink(missing_ok=True)
                raise
    if not part.exists():
        raise DownloadError(f"{url}: server sent no data; check the URL")
    try:
        result = verify_file(part, url=url, size=size, sha256=sha256, progress=progress)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return result


# --- zip members -----------------------------------------------------------------------


def safe_member_path(dest_dir: str | Path, name: str) -> Path:
    """Where member ``name`` goes under ``dest_dir``; refuses absolute and ``..`` paths."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or (pure.parts and ":" in pure.parts[0]) or ".." in pure.parts or not pure.parts:
        raise DownloadError(f"zip member {name!r} has an unsafe path (absolute or '..'); refusing to extract")
    root = Path(dest_dir).resolve()
    target = (root / Path(*pure.parts)).resolve()
    if root != target and root not in target.parents:
        raise DownloadError(f"zip member {name!r} would land outside {root}; refusing to extract")
    return target


def _selected(names: list[str], pattern: str, years: list[int] | None) -> list[str]:
    if "{year}" in pattern:
        wanted = {pattern.replace("{year}", str(y)) for y in (years or [])}
        return [n for n in names if n in wanted]
    return [n for n in names if fnmatch.fnmatchcase(n, pattern) and not n.endswith("/")]


def extract_members(archive: str | Path, dest_dir: str | Path, *, pattern: str = "*",
                    years: list[int] | None = None, progress: bool = True) -> list[Path]:
    """Extract members matching ``pattern`` (glob, or exact names with a ``{year}`` placeholder).

    Every selected member is checked before anything is written; each is written to a
    temporary file and renamed, and members already extracted with the same size are kept.
    """
    archive = Path(archive)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(f"{archive}: not a readable zip file ({exc}); delete it and download again") from None
    with zf:
        infos = {info.filename: info for info in zf.infolist()}
        names = _selected(list(infos), pattern, years)
        if not names:
            raise DownloadError(f"{archive}: no member matches {pattern!r}; check extract_members")
        targets = []
        for name in names:
            info = infos[name]
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DownloadError(f"{archive}: member {name!r} is a symbolic link; refusing to extract")
            targets.append((info, safe_member_path(dest_dir, name)))
        written = []
        bar = tqdm(targets, desc=f"extract {archive.name}", disable=None if progress else True,
                   leave=False)
        for info, target in bar:
            if not (target.is_file() and target.stat().st_size == info.file_size):
                with atomic_path(target) as tmp, zf.open(info) as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, CHUNK)
            written.append(target)
    return written


# --- the stage -------------------------------------------------------------------------


def _describe_size(size: int | None) -> str:
    if size is None:
        return "size unknown"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return ""


def download_sources(config, *, keys: list[str] | None = None, dry_run: bool = False,
                     progress: bool = True, retries: int = 5, backoff: float = 1.0,
                     timeout: float = 60.0, echo=print) -> list[Path]:
    """Download (or, with ``dry_run``, list) ``config.sources``; return the destination paths."""
    sources = config.sources
    keys = list(sources) if keys is None else list(keys)
    unknown = [k for k in keys if k not in sources]
    if unknown:
        raise ConfigError(f"sources {unknown} are not in config sources (known: {', '.join(sources) or 'none'})")
    lock_file = lock_path(config)
    lock = read_lock(lock_file)
    paths: list[Path] = []
    for key in keys:
        source = sources[key]
        dest = Path(source.path)
        paths.append(dest)
        entry = lock.get(key) if lock.get(key, {}).get("url") == source.url else None
        sha256 = source.sha256 or (entry or {}).get("sha256")
        size = source.size if source.size is not None else (entry or {}).get("size")
        if dry_run:
            state = "present" if dest.is_file() else ("partial" if dest.with_name(dest.name + ".part").exists() else "missing")
            echo(f"{key}\t{source.url}\t{_describe_size(size)}\t{dest}\t{state}")
            continue
        if dest.is_file():
            try:
                got_size, got_sha = verify_file(dest, url=source.url, size=size, sha256=sha256,
                                                progress=progress)
            except DownloadError as exc:
                raise DownloadError(f"{exc} (file already present; delete it to download again)") from None
        else:
            got_size, got_sha = download_file(source.url, dest, size=size, sha256=sha256,
                                              retries=retries, backoff=backoff, timeout=timeout,
                                              progress=progress, desc=key)
        record = {"url": source.url, "size": got_size, "sha256": got_sha}
        if lock.get(key) != record:
            lock[key] = record
            write_lock(lock_file, lock)
        if source.extract_members:
            extract_members(dest, dest.parent, pattern=source.extract_members,
                            years=config.observed_years, progress=progress)
    return paths
