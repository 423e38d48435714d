"""The HTTP service as clients see it: a real uvicorn process on a loopback port, httpx."""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import xarray as xr

from ai4land.emulator.core import Emulator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from emulator_world import write_luh_file, write_world  # noqa: E402

BBOX = "4.0,47.6,4.32,48.0"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("service")
    write_world(root)
    scenarios = root / "scenarios"
    scenarios.mkdir()
    write_luh_file(root / "cube", "ssp126", scenarios / "ssp126.nc")
    port = _free_port()
    log = root / "server.log"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with log.open("w") as output:  # a file, not a pipe nobody reads: never blocks the server
        process = subprocess.Popen(
            [sys.executable, "-m", "ai4land", "serve", "--model", str(root / "model"),
             "--port", str(port), "--scenario-dir", str(scenarios), "--max-concurrent", "1",
             "--max-queue", "1", "--max-upload-mb", "0.5", "--async-pixel-years", "20000"],
            stdout=output, stderr=subprocess.STDOUT, env=env)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield client, root, scenarios
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _form(**fields) -> dict:
    return {"years": "1966", "bbox": BBOX, **fields}


def test_openapi_and_model_description(server):
    client, root, _ = server
    api = client.get("/openapi.json").json()
    assert {"/emulate", "/jobs/{job_id}", "/jobs/{job_id}/result", "/model"} <= set(api["paths"])
    assert "503" in api["paths"]["/emulate"]["post"]["responses"]
    model = client.get("/model").json()
    assert model["observed_years"] == list(range(1960, 1966))
    assert model["extent"] == pytest.approx([4.0, 47.36, 4.64, 48.0])


def test_maps_from_a_server_file_and_fractions_from_an_upload(server):
    client, root, scenarios = server
    response = client.post("/emulate", data=_form(scenario_path=str(scenarios / "ssp126.nc"),
                                                  years="1966,1967"))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-netcdf"
    maps = xr.open_dataset(io.BytesIO(response.content)).load()
    expected = Emulator.from_model(root / "model").predict(
        scenarios / "ssp126.nc", bbox=tuple(map(float, BBOX.split(","))), years=(1966, 1967))
    np.testing.assert_array_equal(maps["lulc"].values, expected["lulc"].values)

    upload = (scenarios / "ssp126.nc").read_bytes()
    response = client.post("/emulate", data=_form(output="fractions", grid_res="0.16"),
                           files={"scenario": ("ssp126.nc", upload, "application/x-netcdf")})
    assert response.status_code == 200, response.text
    fractions = xr.open_dataset(io.BytesIO(response.content))
    assert fractions["cropland"].dims == ("time", "lat", "lon")
    assert {"pft_crop", "class_entropy", "n_classes"} <= set(fractions.data_vars)

    response = client.post("/emulate", data=_form(format="geotiff",
                                                  scenario_path=str(scenarios / "ssp126.nc")))
    assert response.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert sorted(names) == ["maps_1966.tif", "maps_1966_entropy.tif",
                             "maps_1966_probability.tif"]


def test_long_request_becomes_a_job(server):
    client, root, scenarios = server
    response = client.post("/emulate", data=_form(scenario_path=str(scenarios / "ssp126.nc"),
                                                  bbox="", years="1966,1970"))
    assert response.status_code == 202, response.text  # 64 x 64 pixels x 5 years > 20000
    job = response.json()
    deadline = time.monotonic() + 120
    while (status := client.get(job["status_url"]).json())["status"] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert status["status"] == "done", status
    result = client.get(job["result_url"])
    assert result.status_code == 200
    assert list(xr.open_dataset(io.BytesIO(result.content))["year"].values) == list(
        range(1966, 1971)
    )
    assert client.get("/jobs/nope").status_code == 404


@pytest.mark.parametrize("fields, status, detail", [
    ({"bbox": "10,40,11,41"}, 400, "reaches outside the model's static data"),
    ({"years": "1999"}, 400, "no data for year(s) 1999"),
    ({"years": "soon"}, 422, "years must be one year or 'first,last'"),
    ({"bbox": "1,2,3"}, 422, "bbox must be 4 numbers"),
    ({"scenario_path": "/etc/passwd"}, 403, "not under a scenario directory"),
    ({"scenario_path": None}, 422, "give exactly one of scenario_path"),
    ({"output": "fractions"}, 422, "needs grid_res"),
])
def test_bad_requests_get_a_clear_4xx(server, fields, status, detail):
    client, root, scenarios = server
    data = _form(scenario_path=str(scenarios / "ssp126.nc"))
    data.update(fields)
    data = {k: v for k, v in data.items() if v is not None}
    response = client.post("/emulate", data=data)
    assert response.status_code == status, response.text
    assert detail in response.json()["detail"]


def test_upload_size_and_concurrency_are_bounded(server):
    client, root, scenarios = server
    big = b"\0" * (600 * 1024)  # above --max-upload-mb 0.5
    response = client.post("/emulate", data=_form(),
                           files={"scenario": ("big.nc", big, "application/x-netcdf")})
    assert response.status_code == 413 and "larger than" in response.json()["detail"]

    # 1 running + 1 waiting are admitted; the others are told to come back
    barrier, codes = threading.Barrier(5), []

    def call():
        with httpx.Client(base_url=client.base_url, timeout=120) as own:
            barrier.wait()
            codes.append(own.post("/emulate", data=_form(
                scenario_path=str(scenarios / "ssp126.nc"), years="1966,1967")).status_code)

    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(set(codes)) == [200, 503] and codes.count(200) >= 2, codes
    assert client.get("/health").status_code == 200
