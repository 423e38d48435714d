"""download: a real HTTP server on 127.0.0.1 with Range support and misbehaviour on demand."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import threading
import time
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ai4land.config import parse_config
from ai4land.download import download_file, download_sources, extract_members, safe_member_path
from ai4land.errors import ConfigError, DownloadError

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
HTML = b"<!DOCTYPE html><html><body>Please log in</body></html>"


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802 - http.server API
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        if server.stalling:
            server.seen_while_stalling.append(self.path)
        name = self.path.lstrip("/")
        time.sleep(server.delay)
        if name == "missing":
            self.send_error(404)
            return
        if name == "flaky" and server.failures_left > 0:
            server.failures_left -= 1
            self.send_error(503)
            return
        body = server.files.get(name)
        if body is None:
            self.send_error(404)
            return
        if name in server.truncate:  # a Content-Length smaller than the file: looks complete
            self.send_response(200)
            self.send_header("Content-Length", str(server.truncate[name]))
            self.end_headers()
            self.wfile.write(body[: server.truncate[name]])
            return
        if name == "short":  # no Content-Length, the body simply ends early: looks complete
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        content_type = server.types.get(name, "application/octet-stream")
        if name == "html":
            content_type = "text/html; charset=utf-8"
        start = 0
        header = self.headers.get("Range")
        if header and name != "norange":
            start = int(header.removeprefix("bytes=").split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        chunk = body[start:]
        if name == "drop" and server.drops_left > 0:
            server.drops_left -= 1
            chunk = chunk[: len(chunk) // 3]  # promise everything, send a third, hang up
            self.close_connection = True
        if server.stalls.get(name, 0) > 0:  # send a third, then say nothing for a while
            server.stalls[name] -= 1
            self.wfile.write(chunk[: len(chunk) // 3])
            self.wfile.flush()
            server.stalling += 1
            time.sleep(server.stall_s)
            server.stalling -= 1
            self.close_connection = True
            return
        self.wfile.write(chunk)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.requests = []
    httpd.drops_left = 2
    httpd.failures_left = 2
    httpd.delay = 0.0
    httpd.truncate = {}
    httpd.types = {}
    httpd.stalls = {}
    httpd.stall_s = 2.0
    httpd.stalling = 0
    httpd.seen_while_stalling = []
    httpd.files = {"data.bin": PAYLOAD, "drop": PAYLOAD, "flaky": PAYLOAD, "norange": PAYLOAD,
                   "html": HTML, "sniffed": b"  <html><head></head></html>", "short": PAYLOAD}
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_config(tmp_path: Path, sources: dict):
    return parse_config({
        "paths": {"raw": str(tmp_path / "raw"), "cube": str(tmp_path / "cube")},
        "sources": sources,
        "datasets": {"coarse": {"historical": "states.nc"},
                     "fine": {"pattern": "map_{year}.tif", "years": [2000, 2001]}},
        "years": {"train": [2000, 2000], "test": [2001, 2001]},
    })


def fetch(url, dest, **kw):
    return download_file(url, dest, retries=3, backoff=0.001, timeout=5, progress=False, **kw)


def test_download_verifies_and_records_lock(server, tmp_path):
    dest = tmp_path / "raw" / "data.bin"
    config = make_config(tmp_path, {"d": {"url": f"{server.url}/data.bin", "path": str(dest)}})
    lines = []
    paths = download_sources(config, progress=False, backoff=0.001, echo=lines.append)
    assert paths == [dest] and dest.read_bytes() == PAYLOAD
    assert lines == [
        f"d\t{dest}\t{len(PAYLOAD)} bytes\tsha256 {sha(PAYLOAD)}\tdownloaded, verified"
    ]
    assert not dest.with_name("data.bin.part").exists()
    lock = json.loads((tmp_path / "raw" / "sources.lock.json").read_text())
    assert lock["sources"]["d"] == {"url": f"{server.url}/data.bin", "size": len(PAYLOAD),
                                    "sha256": sha(PAYLOAD)}
    # A present file is verified against the lock, not fetched again.
    count = len(server.requests)
    download_sources(config, progress=False, echo=lines.append)
    assert len(server.requests) == count
    assert lines[1].endswith("\tpresent, verified")
    dest.write_bytes(b"tampered")
    with pytest.raises(
        DownloadError, match=r"data\.bin: size 8 bytes, expected 1048576.*delete it"
    ):
        download_sources(config, progress=False)


def test_dry_run_lists_without_fetching(server, tmp_path):
    dest = tmp_path / "raw" / "data.bin"
    config = make_config(tmp_path, {"d": {"url": f"{server.url}/data.bin", "path": str(dest),
                                          "size": len(PAYLOAD)}})
    lines = []
    assert download_sources(config, dry_run=True, echo=lines.append) == [dest]
    assert lines == [f"d\t{server.url}/data.bin\t1.0 MiB\t{dest}\tmissing"]
    assert server.requests == [] and not dest.exists()
    with pytest.raises(ConfigError, match="nope"):
        download_sources(config, keys=["nope"], dry_run=True)


def test_resume_after_dropped_connection(server, tmp_path):
    dest = tmp_path / "drop.bin"
    size, digest = fetch(f"{server.url}/drop", dest, sha256=sha(PAYLOAD), size=len(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD and digest == sha(PAYLOAD) and size == len(PAYLOAD)
    ranges = [r for path, r in server.requests if path == "/drop"]
    assert ranges[0] is None and ranges[1] is not None and ranges[1].startswith("bytes=")
    assert len(ranges) == 3


def test_resume_from_existing_part_file(server, tmp_path):
    dest = tmp_path / "data.bin"
    dest.with_name("data.bin.part").write_bytes(PAYLOAD[:1000])
    fetch(f"{server.url}/data.bin", dest, sha256=sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert server.requests == [("/data.bin", "bytes=1000-")]


def test_server_ignoring_range_restarts(server, tmp_path):
    dest = tmp_path / "x.bin"
    dest.with_name("x.bin.part").write_bytes(b"garbage")
    fetch(f"{server.url}/norange", dest, sha256=sha(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD


def test_retries_transient_errors(server, tmp_path):
    dest = tmp_path / "flaky.bin"
    fetch(f"{server.url}/flaky", dest)
    assert dest.read_bytes() == PAYLOAD
    server.failures_left = 10
    with pytest.raises(DownloadError, match="after 3 retries"):
        fetch(f"{server.url}/flaky", tmp_path / "again.bin")
    assert not (tmp_path / "again.bin").exists()


def test_checksum_mismatch_leaves_nothing(server, tmp_path):
    dest = tmp_path / "data.bin"
    with pytest.raises(DownloadError, match="sha256 .* does not match"):
        fetch(f"{server.url}/data.bin", dest, sha256="0" * 64)
    assert not dest.exists() and not dest.with_name("data.bin.part").exists()


def test_truncated_download_leaves_nothing(server, tmp_path):
    dest = tmp_path / "short.bin"
    with pytest.raises(
        DownloadError, match=r"short\.bin\.part: size 524288 bytes, expected 1048576 from .*/short"
    ):
        fetch(f"{server.url}/short", dest, size=len(PAYLOAD))
    assert not dest.exists() and not dest.with_name("short.bin.part").exists()


def test_lock_catches_changed_content(server, tmp_path):
    dest = tmp_path / "raw" / "data.bin"
    config = make_config(tmp_path, {"d": {"url": f"{server.url}/data.bin", "path": str(dest)}})
    download_sources(config, progress=False)
    dest.unlink()
    server.files["data.bin"] = PAYLOAD[::-1]  # same size, other bytes
    with pytest.raises(DownloadError, match="does not match"):
        download_sources(config, progress=False, backoff=0.001)
    assert not dest.exists()


@pytest.mark.parametrize("name", ["html", "sniffed"])
def test_html_page_rejected(server, tmp_path, name):
    dest = tmp_path / "page.bin"
    with pytest.raises(DownloadError, match="HTML page"):
        fetch(f"{server.url}/{name}", dest)
    assert not dest.exists() and not dest.with_name("page.bin.part").exists()


def test_http_404_is_not_retried(server, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(f"{server.url}/missing", tmp_path / "m.bin")
    assert len(server.requests) == 1


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_extract_only_needed_members(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {
        "dir/hilda_2000.tif": b"a", "dir/hilda_2001.tif": b"b", "dir/hilda_1999.tif": b"c",
        "dir/readme.txt": b"r",
    })
    out = extract_members(archive, tmp_path / "out", pattern="dir/hilda_{year}.tif",
                          years=[2000, 2001], progress=False)
    assert sorted(p.name for p in out) == ["hilda_2000.tif", "hilda_2001.tif"]
    assert (tmp_path / "out" / "dir" / "hilda_2001.tif").read_bytes() == b"b"
    assert not (tmp_path / "out" / "dir" / "readme.txt").exists()
    globbed = extract_members(archive, tmp_path / "g", pattern="*.txt", progress=False)
    assert [p.name for p in globbed] == ["readme.txt"]


@pytest.mark.parametrize(
    "bad", ["../evil.tif", "dir/../../evil.tif", "/etc/evil.tif", "C:/evil.tif", "..\\evil.tif"]
)
def test_unsafe_member_refused(tmp_path, bad):
    archive = make_zip(tmp_path / "a.zip", {"ok.tif": b"1", bad: b"x"})
    with pytest.raises(DownloadError, match="unsafe path|outside"):
        extract_members(archive, tmp_path / "out", pattern="*", progress=False)
    assert not (tmp_path / "out" / "ok.tif").exists() and not (tmp_path / "evil.tif").exists()
    with pytest.raises(DownloadError):
        safe_member_path(tmp_path, bad)


def test_download_then_extract(server, tmp_path):
    zipped = make_zip(tmp_path / "src.zip", {"maps/map_2000.tif": b"x", "maps/map_2001.tif": b"y",
                                             "maps/other.tif": b"z"})
    server.files["h.zip"] = zipped.read_bytes()
    dest = tmp_path / "raw" / "h.zip"
    config = make_config(tmp_path, {"h": {"url": f"{server.url}/h.zip", "path": str(dest),
                                          "sha256": sha(zipped.read_bytes()),
                                          "extract_members": "maps/map_{year}.tif"}})
    download_sources(config, progress=False)
    assert (tmp_path / "raw" / "maps" / "map_2001.tif").read_bytes() == b"y"
    assert not (tmp_path / "raw" / "maps" / "other.tif").exists()


# --- content checked before pinning (issue 16, item 8) ---------------------------------

YEARS = [2000, 2001]
STATES_VARS = ["primf", "primn", "secdf", "secdn", "urban", "c3ann", "c4ann", "c3per", "c4per",
               "c3nfx", "pastr", "range"]


def netcdf_bytes(tmp_path: Path, variables: list[str], *, times: int | None = 3) -> bytes:
    import netCDF4
    import numpy as np

    path = tmp_path / f"gen_{len(list(tmp_path.glob('gen_*')))}.nc"
    with netCDF4.Dataset(path, "w") as ds:
        dims = ("lat", "lon") if times is None else ("time", "lat", "lon")
        if times is not None:
            ds.createDimension("time", times)
        ds.createDimension("lat", 8)
        ds.createDimension("lon", 8)
        for name in variables:
            var = ds.createVariable(
                name, "f4", dims, zlib=True, chunksizes=(1, 8, 8) if times else (8, 8)
            )
            var[:] = np.random.default_rng(0).random(var.shape)
    return path.read_bytes()


def geotiff_bytes(seed: int = 0) -> bytes:
    import numpy as np
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.transform import from_origin

    data = np.random.default_rng(seed).integers(0, 255, (64, 64), dtype="uint8")
    profile = {"driver": "GTiff", "width": 64, "height": 64, "count": 1, "dtype": "uint8",
               "crs": "EPSG:4326", "transform": from_origin(0, 1, 1 / 64, 1 / 64),
               "compress": "deflate", "tiled": True, "blockxsize": 32, "blockysize": 32}
    with MemoryFile() as memfile:
        with memfile.open(**profile) as dst:
            dst.write(data, 1)
        raw = bytearray(memfile.read())
    with MemoryFile(bytes(raw)) as memfile, memfile.open() as src:
        assert isinstance(src, rasterio.io.DatasetReader)
    return bytes(raw)


def damaged_geotiff(good: bytes) -> bytes:
    """The same GeoTIFF with its last tile's compressed bytes overwritten: header intact."""
    from rasterio.io import MemoryFile

    with MemoryFile(good) as memfile, memfile.open() as src:
        offset = int(src.get_tag_item("BLOCK_OFFSET_1_1", "TIFF", bidx=1))
        length = int(src.get_tag_item("BLOCK_SIZE_1_1", "TIFF", bidx=1))
    raw = bytearray(good)
    raw[offset: offset + length] = b"\xff" * length
    return bytes(raw)


def zip_bytes(members: dict[str, bytes]) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def real_files(tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    tif = geotiff_bytes()
    return {
        "states.nc": netcdf_bytes(gen, STATES_VARS),
        "static.nc": netcdf_bytes(gen, ["icwtr", "carea"], times=None),
        "fine.zip": zip_bytes({f"maps/map_{y}.tif": geotiff_bytes(y) for y in YEARS}),
        "clay.tif": tif,
    }


def real_config(tmp_path: Path, server, **extra):
    raw = tmp_path / "raw"
    names = {"states": "states.nc", "static": "static.nc", "fine": "fine.zip", "clay": "clay.tif"}
    return parse_config(
        {
            "paths": {"raw": str(raw), "cube": str(tmp_path / "cube")},
            "sources": {
                key: {"url": f"{server.url}/{name}", "path": str(raw / name)}
                for key, name in names.items()
            },
            "datasets": {
                "coarse": {"historical": str(raw / "states.nc"), "static": str(raw / "static.nc")},
                "fine": {
                    "archive": str(raw / "fine.zip"),
                    "pattern": "maps/map_{year}.tif",
                    "years": YEARS,
                },
                "static": [{"name": "clay", "path": str(raw / "clay.tif")}],
            },
            "years": {"train": [2000, 2000], "test": [2001, 2001]},
            **extra,
        }
    )


def lock_entries(tmp_path: Path) -> dict:
    path = tmp_path / "raw" / "sources.lock.json"
    return json.loads(path.read_text())["sources"] if path.exists() else {}


def break_source(server, files, case: str, gen: Path) -> tuple[str, str]:
    """Make the server send a wrong file for one source; return (key, expected message)."""
    if case == "truncated zip":
        server.truncate["fine.zip"] = len(files["fine.zip"]) // 2
        return "fine", r"fine\.zip.* is not a readable zip archive"
    if case == "swapped zip":
        server.files["fine.zip"] = zip_bytes({"maps/map_1999.tif": geotiff_bytes(1)})
        return "fine", r"fine\.zip.* lacks the member 'maps/map_2000\.tif' and 1 more"
    if case == "short body":
        server.truncate["states.nc"] = len(files["states.nc"]) - 200
        return "states", r"states\.nc.* is not a readable NetCDF file"
    if case == "other variables":
        server.files["states.nc"] = netcdf_bytes(gen, ["primf", "urban"])
        return "states", r"states\.nc.* lacks the variables \['primn'"
    if case == "static without icwtr":
        server.files["static.nc"] = netcdf_bytes(gen, ["carea"], times=None)
        return "static", r"static\.nc.* lacks the variables \['icwtr'\]"
    if case == "undecodable tif":
        server.files["clay.tif"] = damaged_geotiff(files["clay.tif"])
        return "clay", r"clay\.tif.* does not decode as a GeoTIFF"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["truncated zip", "swapped zip", "short body", "other variables",
                                  "static without icwtr", "undecodable tif"])
def test_wrong_content_is_not_pinned(server, tmp_path, real_files, case):
    server.files.update(real_files)
    key, message = break_source(server, real_files, case, tmp_path / "gen")
    config = real_config(tmp_path, server)
    dest = Path(config.sources[key].path)
    with pytest.raises(DownloadError, match=message):
        download_sources(config, keys=[key], progress=False, backoff=0.001)
    assert key not in lock_entries(tmp_path)
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()
    # The server is fixed: the right file is accepted and pinned.
    server.truncate.clear()
    server.files.update(real_files)
    download_sources(config, keys=[key], progress=False, backoff=0.001)
    assert lock_entries(tmp_path)[key]["sha256"] == sha(real_files[dest.name])
    assert dest.read_bytes() == real_files[dest.name]


def test_present_unpinned_file_is_checked_before_pinning(server, tmp_path, real_files):
    config = real_config(tmp_path, server)
    dest = Path(config.sources["states"].path)
    dest.parent.mkdir(parents=True)
    dest.write_bytes(real_files["states.nc"][:-300])
    with pytest.raises(DownloadError, match=r"states\.nc.*NetCDF.*--repin states"):
        download_sources(config, keys=["states"], progress=False)
    assert lock_entries(tmp_path) == {}


@pytest.mark.parametrize("key,body,message", [
    ("states", b"<head><title>502 Bad Gateway</title></head><body>nginx</body>",
     r"states\.nc\.part: .* served an HTML page .* instead of a NetCDF file"),
    ("fine", b"", r"fine\.zip.* served an empty file instead of a zip archive"),
    ("fine", b"\n\n<!-- maintenance -->\n<HTML><body>down</body></HTML>",
     r"fine\.zip.* served an HTML page .* instead of a zip archive"),
])
def test_html_or_empty_file_is_named(server, tmp_path, real_files, key, body, message):
    server.files.update(real_files)
    config = real_config(tmp_path, server)
    name = Path(config.sources[key].path).name
    server.files[name] = body
    server.types[name] = "application/x-netcdf"
    with pytest.raises(DownloadError, match=message) as info:
        download_sources(config, keys=[key], progress=False, backoff=0.001)
    assert "\n" not in str(info.value)
    assert lock_entries(tmp_path) == {}


def test_config_pin_wins_over_a_stale_lock_entry(server, tmp_path):
    dest = tmp_path / "raw" / "data.bin"
    url = f"{server.url}/data.bin"
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "sources.lock.json").write_text(json.dumps(
        {"version": 1, "sources": {"d": {"url": url, "size": 5, "sha256": "0" * 64}}}))
    config = make_config(tmp_path, {"d": {"url": url, "path": str(dest), "sha256": sha(PAYLOAD)}})
    download_sources(config, progress=False, backoff=0.001)
    assert dest.read_bytes() == PAYLOAD
    assert lock_entries(tmp_path)["d"] == {"url": url, "size": len(PAYLOAD), "sha256": sha(PAYLOAD)}


def test_repin_replaces_a_pinned_file(server, tmp_path):
    from ai4land.cli import main

    dest = tmp_path / "raw" / "data.bin"
    sources = {"d": {"url": f"{server.url}/data.bin", "path": str(dest)},
               "e": {"url": f"{server.url}/flaky", "path": str(tmp_path / "raw" / "e.bin")}}
    config = make_config(tmp_path, sources)
    download_sources(config, keys=["d"], progress=False)
    server.files["data.bin"] = PAYLOAD[::-1]  # the publisher replaced the file
    dest.unlink()
    with pytest.raises(DownloadError, match=r"does not match.*--repin d"):
        download_sources(config, keys=["d"], progress=False, backoff=0.001)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(json.dumps(config.model_dump(mode="json")))
    dest.write_bytes(PAYLOAD)  # a present, pinned old file is replaced too
    count = len(server.requests)
    assert main(["download", "-c", str(config_file), "--repin", "d"]) == 0
    assert dest.read_bytes() == PAYLOAD[::-1]
    assert lock_entries(tmp_path)["d"]["sha256"] == sha(PAYLOAD[::-1])
    assert [p for p, _ in server.requests[count:]] == ["/data.bin"]  # only the re-pinned source


# --- parallel jobs share the lock file (item 9) -----------------------------------------


def test_parallel_downloads_keep_every_lock_entry(server, tmp_path):
    keys = [f"k{i}" for i in range(4)]
    for key in keys:
        server.files[key] = key.encode() * 1000
    server.delay = 1.5  # every job reads the lock before any of them writes it
    config = make_config(
        tmp_path, {k: {"url": f"{server.url}/{k}", "path": str(tmp_path / "raw" / k)} for k in keys}
    )
    config_file = tmp_path / "config.yaml"
    config_file.write_text(json.dumps(config.model_dump(mode="json")))
    jobs = [subprocess.Popen([sys.executable, "-m", "ai4land", "download", "-c", str(config_file),
                              "--only", key], stderr=subprocess.PIPE, text=True) for key in keys]
    errors = [job.communicate(timeout=120)[1] for job in jobs]
    assert [job.returncode for job in jobs] == [0] * 4, errors
    entries = lock_entries(tmp_path)
    assert sorted(entries) == keys
    assert all(entries[k]["sha256"] == sha(k.encode() * 1000) for k in keys)


# --- stalls, timeouts and messages (item 10) ---------------------------------------------


def test_stall_resumes_from_the_bytes_received(server, tmp_path):
    server.stalls["data.bin"] = 1
    server.stall_s = 3.0
    dest = tmp_path / "data.bin"
    download_file(f"{server.url}/data.bin", dest, sha256=sha(PAYLOAD), retries=3, backoff=0.001,
                  timeout=1.0, progress=False)
    assert dest.read_bytes() == PAYLOAD
    # the retry asks for the rest while the first connection still stalls
    assert [r for _, r in server.requests][:2] == [None, f"bytes={len(PAYLOAD) // 3}-"]
    assert server.seen_while_stalling[:1] == ["/data.bin"]


def test_stall_timeout_from_config(server, tmp_path):
    server.stalls["data.bin"] = 1
    server.stall_s = 5.0
    dest = tmp_path / "raw" / "data.bin"
    config = make_config(tmp_path, {"d": {"url": f"{server.url}/data.bin", "path": str(dest)}})
    config = parse_config({**config.model_dump(mode="json"),
                           "download": {"timeout": 1.0, "retries": 2, "backoff": 0.01}})
    download_sources(config, progress=False)
    assert dest.read_bytes() == PAYLOAD
    # the retry came while the server still stalled: the configured timeout was used
    assert server.seen_while_stalling[:1] == ["/data.bin"]


def test_failure_message_offers_resume_only_with_a_part_file(server, tmp_path):
    server.failures_left = 10
    with pytest.raises(DownloadError, match="after 3 retries") as info:
        fetch(f"{server.url}/flaky", tmp_path / "f.bin")
    assert "resume" not in str(info.value) and "nothing was received" in str(info.value)
    server.failures_left = 10
    (tmp_path / "d.bin.part").write_bytes(PAYLOAD[:1000])
    with pytest.raises(DownloadError, match=r"resume from .*d\.bin\.part \(1000 bytes\)"):
        fetch(f"{server.url}/flaky", tmp_path / "d.bin")


def test_extraction_replaces_a_member_of_the_same_size(tmp_path):
    archive = make_zip(tmp_path / "a.zip", {"m.tif": b"new!"})
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "m.tif").write_bytes(b"old!")
    extract_members(archive, tmp_path / "out", pattern="*.tif", progress=False)
    assert (tmp_path / "out" / "m.tif").read_bytes() == b"new!"
