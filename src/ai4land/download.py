"""Resumable, verified downloads of ``config.sources`` and safe extraction of zip members.

Each file is fetched into ``<path>.part`` (resumed with an HTTP Range request after a
dropped connection or a stall), checked and only then renamed onto ``<path>``. The
checks: not empty, not an HTML page, the size and sha256 the config gives (or the lock
file recorded), and the content the config uses (a NetCDF opens and holds the
variables read from it, a zip lists the members read from it, a GeoTIFF decodes). Only
a file that passes is recorded (url, size, sha256) in ``<paths.raw>/sources.lock.json``,
which is updated under a file lock, so parallel jobs keep each other's entries. Every
later download is verified against that record until the source is re-pinned
(``download_sources(repin=...)``, ``ai4land download --repin KEY``).
"""

from __future__ import annotations

import fcntl
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
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from ai4land.config import stage_config
from ai4land.errors import ConfigError, DownloadError
from ai4land.io.atomic import atomic_path
from ai4land.io.rasters import NETCDF_SUFFIXES

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


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``<path>.lock`` (released when the block ends)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def update_lock(path: Path, key: str, record: dict | None) -> None:
    """Set (or, with ``None``, remove) one entry: read, change, write under the file lock."""
    with _exclusive(path):
        entries = read_lock(path)
        if entries.get(key) == record:
            return
        if record is None:
            entries.pop(key, None)
        else:
            entries[key] = record
        write_lock(path, entries)


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


@dataclass(frozen=True)
class Content:
    """What a source must hold before it is pinned: its format and what the config reads."""

    kind: str = "any"  # "netcdf", "zip", "geotiff" or "any" (no format check)
    variables: tuple[str, ...] = ()
    members: tuple[str, ...] = ()

    @property
    def what(self) -> str:
        return {"netcdf": "a NetCDF file", "zip": "a zip archive",
                "geotiff": "a GeoTIFF"}.get(self.kind, "data")


_MAGIC = {
    "netcdf": (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n"),
    "zip": (b"PK\x03\x04", b"PK\x05\x06"),
    "geotiff": (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"),
}
_HTML_MARKS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<title")


def expected_content(config, source) -> Content:
    """The content ``source`` must have: what the datasets read from its path, else its suffix."""
    path = Path(source.path)
    datasets = config.datasets
    coarse, fine = datasets.coarse, datasets.fine

    def same(other: str | None) -> bool:
        return other is not None and Path(other) == path

    water = (coarse.water_variable,) if coarse.water_variable else ()
    if same(coarse.historical):  # the water fraction is read from it when there is no static file
        return Content("netcdf", variables=(*coarse.variables, *(() if coarse.static else water)))
    if any(same(f) for f in coarse.scenarios.values()):
        return Content("netcdf", variables=tuple(coarse.variables))
    if same(coarse.static):
        return Content("netcdf", variables=water)
    for layer in datasets.static:
        if same(layer.path):
            if path.suffix.lower() in NETCDF_SUFFIXES:
                return Content("netcdf", variables=(layer.variable,) if layer.variable else ())
            return Content("geotiff")
    pattern = fine.pattern if same(fine.archive) else source.extract_members
    if pattern and "{year}" in pattern:
        return Content("zip", members=tuple(pattern.replace("{year}", str(y))
                                            for y in config.observed_years))
    suffix = path.suffix.lower()
    if suffix in NETCDF_SUFFIXES:
        return Content("netcdf")
    if suffix == ".zip":
        return Content("zip")
    if suffix in (".tif", ".tiff"):
        return Content("geotiff")
    return Content()


def _served(head: bytes) -> str:
    """Name what a file that is not the expected format looks like."""
    if not head:
        return "an empty file"
    if any(mark in head[:1024].lower() for mark in _HTML_MARKS):
        return "an HTML page (login or error page?)"
    return f"a file starting with {head[:16]!r}"


def _check_netcdf(path: Path, content: Content) -> str | None:
    import netCDF4

    try:
        with netCDF4.Dataset(path) as ds:
            missing = [v for v in content.variables if v not in ds.variables]
            if missing:
                return (f"lacks the variables {missing} the config reads "
                        f"(it has {sorted(ds.variables)}); check the URL or datasets.coarse")
            for name in content.variables:  # the last chunk of each: a cut-off file fails here
                var = ds.variables[name]
                var.set_auto_maskandscale(False)
                var[tuple(slice(-1, None) for _ in var.shape)]
    except (OSError, RuntimeError, IndexError) as exc:
        return f"is not a readable NetCDF file ({exc}); it is probably truncated"
    return None


def _check_zip(path: Path, content: Content) -> str | None:
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
            missing = [m for m in content.members if m not in names]
            if missing:
                more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
                return (f"lacks the member {missing[0]!r}{more} the config reads "
                        f"({len(names)} members); check the URL or datasets.fine.pattern")
            for name in content.members:  # decompress and CRC-check what will be read
                with zf.open(name) as member:
                    while member.read(CHUNK):
                        pass
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
        return f"is not a readable zip archive ({exc}); it is probably truncated"
    return None


def _check_geotiff(path: Path) -> str | None:
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path) as src:
            for band in src.indexes:
                for _, window in src.block_windows(band):
                    src.read(band, window=window)
    except RasterioError as exc:
        return (
            f"does not decode as a GeoTIFF ({str(exc).splitlines()[0]}); it is probably truncated"
        )
    return None


def check_content(path: Path, content: Content, *, url: str) -> None:
    """Raise DownloadError unless ``path`` is ``content`` (format, variables, members)."""
    with open(path, "rb") as fh:
        head = fh.read(1024)
    magic = _MAGIC.get(content.kind)
    if not head or (magic and not head.startswith(magic)):
        raise DownloadError(f"{path}: {url} served {_served(head)} instead of {content.what}; "
                            "check the URL")
    problem = None
    if content.kind == "netcdf":
        problem = _check_netcdf(path, content)
    elif content.kind == "zip":
        problem = _check_zip(path, content)
    elif content.kind == "geotiff":
        problem = _check_geotiff(path)
    if problem:
        raise DownloadError(f"{path}: the file from {url} {problem}")


def verify_file(path: Path, *, url: str, size: int | None, sha256: str | None,
                content: Content | None = None, pin_hint: str = "",
                progress: bool = False) -> tuple[int, str]:
    """Check size, HTML-ness, ``content`` (if given) and sha256 of ``path``; return
    (size, sha256)."""
    actual_size = path.stat().st_size
    if not _expects_html(url):
        with open(path, "rb") as fh:
            head = fh.read(1024)
        if _looks_like_html(head) or not head:
            raise DownloadError(f"{path}: {url} served {_served(head)} instead of "
                                f"{(content or Content()).what}; check the URL")
    if size is not None and actual_size != size:
        raise DownloadError(f"{path}: size {actual_size} bytes, expected {size} from {url}")
    if content is not None:
        check_content(path, content, url=url)
    digest = sha256_of(path, progress=progress)
    if sha256 is not None and digest.lower() != sha256.lower():
        raise DownloadError(f"{path}: sha256 {digest} does not match the expected {sha256.lower()} "
                            f"for {url}; the server sent other content, re-check the URL or sha256"
                            f"{pin_hint}")
    return actual_size, digest


# --- transfer --------------------------------------------------------------------------


def _open(url: str, offset: int, timeout: float):
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _transfer(url: str, part: Path, *, size: int | None, timeout: float, what: str, bar) -> None:
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
        raise DownloadError(
            f"{url}: HTTP {exc.code} {exc.reason}; check the URL in config sources"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Retry(str(exc)) from None
    with response:
        content_type = response.headers.get("Content-Type", "")
        if "text/html" in content_type.lower() and not _expects_html(url):
            raise DownloadError(
                f"{url}: served an HTML page (Content-Type {content_type}) instead of "
                f"{what} (login or error page?); check the URL"
            )
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
                    # read1: what has arrived, at most one recv; a stall loses no bytes
                    block = response.read1(CHUNK)
                    if not block:
                        break
                    if (
                        offset == 0
                        and received == 0
                        and not _expects_html(url)
                        and _looks_like_html(block[:512])
                    ):
                        raise DownloadError(f"{url}: served an HTML page instead of {what} "
                                            "(login or error page?); check the URL")
                    fh.write(block)
                    received += len(block)
                    bar.update(len(block))
        except (OSError, http.client.HTTPException) as exc:
            raise _Retry(f"connection lost after {offset + received} bytes ({exc})") from None
        if expected is not None and received < expected:
            raise _Retry(
                f"connection closed after {offset + received} of {offset + expected} bytes"
            )


def download_file(url: str, dest: str | Path, *, size: int | None = None, sha256: str | None = None,
                  content: Content | None = None, pin_hint: str = "", retries: int = 5,
                  backoff: float = 1.0,
                  timeout: float = 60.0, progress: bool = True,
                  desc: str | None = None) -> tuple[int, str]:
    """Fetch ``url`` to ``dest`` via ``dest.part``; verify; rename. Returns (size, sha256).

    ``timeout`` is the stall timeout in seconds: a connection silent that long is dropped
    and the download resumed from the bytes received. On any failure ``dest`` is
    untouched; a partial ``.part`` is kept for resuming unless its content proved wrong
    (bad checksum, HTML page, wrong format), in which case it is removed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    what = (content or Content()).what
    failures = 0
    with tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=desc or dest.name,
              disable=None if progress else True, leave=False) as bar:
        while True:
            before = part.stat().st_size if part.exists() else 0
            try:
                _transfer(url, part, size=size, timeout=timeout, what=what, bar=bar)
                break
            except _Retry as exc:
                after = part.stat().st_size if part.exists() else 0
                failures = 0 if after > before else failures + 1
                if failures > retries:
                    then = (
                        f"run again to resume from {part} ({after} bytes)"
                        if after
                        else "nothing was received; check the URL and the network, then run again"
                    )
                    raise DownloadError(f"{url}: download failed after {retries} retries ({exc}); "
                                        f"{then}") from None
                time.sleep(backoff * 2 ** max(failures - 1, 0))
            except DownloadError:
                part.unlink(missing_ok=True)
                raise
    if not part.exists():
        raise DownloadError(f"{url}: the server sent no data instead of {what}; check the URL")
    try:
        result = verify_file(part, url=url, size=size, sha256=sha256, content=content,
                             pin_hint=pin_hint, progress=progress)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return result


# --- zip members -----------------------------------------------------------------------


def safe_member_path(dest_dir: str | Path, name: str) -> Path:
    """Where member ``name`` goes under ``dest_dir``; refuses absolute and ``..`` paths."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if (
        pure.is_absolute()
        or (pure.parts and ":" in pure.parts[0])
        or ".." in pure.parts
        or not pure.parts
    ):
        raise DownloadError(
            f"zip member {name!r} has an unsafe path (absolute or '..'); refusing to extract"
        )
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


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            crc = zlib.crc32(block, crc)
    return crc


def extract_members(archive: str | Path, dest_dir: str | Path, *, pattern: str = "*",
                    years: list[int] | None = None, progress: bool = True) -> list[Path]:
    """Extract members matching ``pattern`` (glob, or exact names with a ``{year}`` placeholder).

    Every selected member is checked before anything is written; each is written to a
    temporary file and renamed, and members already extracted with the same size and CRC
    are kept.
    """
    archive = Path(archive)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DownloadError(
            f"{archive}: not a readable zip file ({exc}); delete it and download again"
        ) from None
    with zf:
        infos = {info.filename: info for info in zf.infolist()}
        names = _selected(list(infos), pattern, years)
        if not names:
            raise DownloadError(f"{archive}: no member matches {pattern!r}; check extract_members")
        targets = []
        for name in names:
            info = infos[name]
            if stat.S_ISLNK(info.external_attr >> 16):
                raise DownloadError(
                    f"{archive}: member {name!r} is a symbolic link; refusing to extract"
                )
            targets.append((info, safe_member_path(dest_dir, name)))
        written = []
        bar = tqdm(targets, desc=f"extract {archive.name}", disable=None if progress else True,
                   leave=False)
        for info, target in bar:
            if not (target.is_file() and target.stat().st_size == info.file_size
                    and _crc32(target) == info.CRC):
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


def download_sources(config, *, keys: list[str] | None = None, repin: list[str] | None = None,
                     dry_run: bool = False, progress: bool = True, retries: int | None = None,
                     backoff: float | None = None, timeout: float | None = None,
                     echo=print) -> list[Path]:
    """Download (or, with ``dry_run``, list) ``config.sources``; return the destination paths.

    One line per source goes to ``echo``: key, path, size, sha256 and whether it was
    downloaded or already present.

    ``repin``: sources whose lock entry, file and ``.part`` are discarded first, so they are
    downloaded, checked and recorded anew (only these unless ``keys`` is given).
    ``retries``, ``backoff`` and ``timeout`` default to ``config.download``.
    """
    config = stage_config(config, "download")  # reads only its slice
    sources = config.sources
    repin = list(repin or [])
    keys = (
        list(sources)
        if keys is None and not repin
        else list(dict.fromkeys([*(keys or []), *repin]))
    )
    unknown = [k for k in keys if k not in sources]
    if unknown:
        raise ConfigError(
            f"sources {unknown} are not in config sources (known: {', '.join(sources) or 'none'})"
        )
    settings = config.download
    retries = settings.retries if retries is None else retries
    backoff = settings.backoff if backoff is None else backoff
    timeout = settings.timeout if timeout is None else timeout
    lock_file = lock_path(config)
    paths: list[Path] = []
    for key in keys:
        source = sources[key]
        dest = Path(source.path)
        part = dest.with_name(dest.name + ".part")
        paths.append(dest)
        if key in repin and not dry_run:
            dest.unlink(missing_ok=True)
            part.unlink(missing_ok=True)
            update_lock(lock_file, key, None)
        entry = read_lock(lock_file).get(key)
        entry = entry if (entry or {}).get("url") == source.url else None
        if source.sha256 is not None or source.size is not None:  # the config's pin wins
            sha256, size = source.sha256, source.size
        else:
            sha256, size = (entry or {}).get("sha256"), (entry or {}).get("size")
        if dry_run:
            state = "present" if dest.is_file() else ("partial" if part.exists() else "missing")
            echo(f"{key}\t{source.url}\t{_describe_size(size)}\t{dest}\t{state}")
            continue
        content = expected_content(config, source)
        hint = ("" if source.sha256 is not None or entry is None else
                f" (pinned in {lock_file}; `ai4land download --repin {key}` accepts the new file)")
        if dest.is_file():
            # a file verified against a record was checked when it was recorded
            pinned = entry is not None and sha256 == entry.get("sha256")
            try:
                got_size, got_sha = verify_file(dest, url=source.url, size=size, sha256=sha256,
                                                content=None if pinned else content,
                                                pin_hint=hint, progress=progress)
            except DownloadError as exc:
                raise DownloadError(
                    f"{exc} (file already present; delete it or run "
                    f"`ai4land download --repin {key}` to download again)"
                ) from None
            state = "present"
        else:
            got_size, got_sha = download_file(source.url, dest, size=size, sha256=sha256,
                                              content=content, pin_hint=hint, retries=retries,
                                              backoff=backoff,
                                              timeout=timeout, progress=progress, desc=key)
            state = "downloaded"
        update_lock(lock_file, key, {"url": source.url, "size": got_size, "sha256": got_sha})
        echo(f"{key}\t{dest}\t{got_size} bytes\tsha256 {got_sha}\t{state}, verified")
        if source.extract_members:
            extract_members(dest, dest.parent, pattern=source.extract_members,
                            years=config.observed_years, progress=progress)
    return paths
