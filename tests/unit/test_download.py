"""download: a real HTTP server on 127.0.0.1 with Range support and misbehaviour on demand."""

from __future__ import annotations

import hashlib
import json
import threading
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
        name = self.path.lstrip("/")
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
        if name == "short":  # no Content-Length, the body simply ends early: looks complete
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.close_connection = True
            return
        content_type = "application/octet-stream"
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
        self.wfile.write(chunk)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.requests = []
    httpd.drops_left = 2
    httpd.failures_left = 2
    httpd.files = {"data.bin": PAYLOAD, "drop": PAYLOAD, "flaky": PAYLOAD, "norange": PAYLOAD,
                   "html": HTML, "sniffed": b"  <html><head></head></html>", "short": PAYLOAD}
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
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
    paths = download_sources(config, progress=False, backoff=0.001)
    assert paths == [dest] and dest.read_bytes() == PAYLOAD
    assert not dest.with_name("data.bin.part").exists()
    lock = json.loads((tmp_path / "raw" / "sources.lock.json").read_text())
    assert lock["sources"]["d"] == {"url": f"{server.url}/data.bin", "size": len(PAYLOAD),
                                    "sha256": sha(PAYLOAD)}
    # A present file is verified against the lock, not fetched again.
    count = len(server.requests)
    download_sources(config, progress=False)
    assert len(server.requests) == count
    dest.write_bytes(b"tampered")
    with pytest.raises(DownloadError, match=r"data\.bin: size 8 bytes, expected 1048576.*delete it"):
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
    with pytest.raises(DownloadError, match=r"short\.bin\.part: size 524288 bytes, expected 1048576 from .*/short"):
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


@pytest.mark.parametrize("bad", ["../evil.tif", "dir/../../evil.tif", "/etc/evil.tif", "C:/evil.tif",
                                 "..\\evil.tif"])
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
