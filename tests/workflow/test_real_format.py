"""The production config's structure end to end, its sources served over HTTP.

``config/config.yaml`` as a new user would run it, with only its URLs pointed at a local
HTTP server process (``python -m http.server``) and the run sized down (years, one SSP,
the tiny model of tests/integration/tiny.yaml). The server holds small generated files in
the exact LUH2 v2h (``states.nc``, ``staticData_quarterdeg.nc``), v2f (one file per SSP,
chunked along time) and HILDA+ zip layouts (tests/data/real_format.py), with a large lake
of all-water LUH2 cells (``icwtr`` 1, states at the fill value, fine pixels 77) and an ice
cell (``icwtr`` 1, states at the fill value, fine pixels 99 with a strip of 77). Snakemake
runs download -> prepare -> split -> train -> evaluate -> predict -> publish for ssp245;
only that SSP's file is downloaded and prepared.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import yaml
from data.real_format import FACTOR, read_map, served_path, source_url, write_server_tree

REPO = Path(__file__).resolve().parents[2]
BBOX = (4.0, 42.0, 6.0, 44.0)  # 200 x 200 fine pixels, 8 x 8 LUH2 cells
SCENARIO = "ssp245"
FORWARD = [2020, 2021]


def production() -> dict:
    return yaml.safe_load((REPO / "config/config.yaml").read_text())


def run_config(prod: dict, base: str) -> dict:
    """The production config with local URLs, one SSP, few years and the tiny model."""
    config = copy.deepcopy(prod)
    for key, source in config["sources"].items():
        source["url"] = source_url(prod, key, base)
    tiny = yaml.safe_load((REPO / "tests/integration/tiny.yaml").read_text())
    for section in ("split", "train", "predict", "evaluate"):
        config[section] = {**config.get(section, {}), **tiny[section]}
    config["run_name"] = "real-format"
    # evaluation over 4 test years, not 15 (its cost grows with them)
    config["years"] = {
        **config["years"],
        "test": [2001, 2004],
        "backward": None,
        "forward": FORWARD,
    }
    config["scenarios"] = [SCENARIO]
    return config


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    # World seed 7: the generated clay raster's no-data along the coast covers 0.07 % of
    # the region's land-use pixels (seed 42: 0.104 %, over prepare's 0.1 % tolerance once
    # the lake's pixels no longer count as land use).
    carved = write_server_tree(root, production(), bbox=BBOX, seed=7)
    log = root.parent / "server.log"
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
             "--directory", str(root)],
            stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            port = re.search(r"port (\d+)", proc.stdout.readline())[1]
            yield {"root": root, "base": f"http://127.0.0.1:{port}", "log": log, **carved}
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def finished(server, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("real-format")
    config_file = workdir / "my.yaml"
    config_file.write_text(yaml.safe_dump(run_config(production(), server["base"])))
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(workdir), "--configfile", str(config_file), "--cores", "2"],
        capture_output=True, text=True, env=env)
    if result.returncode != 0:
        logs = "\n".join(
            f"== {p}\n{p.read_text()[-3000:]}" for p in (workdir / "logs").rglob("*.log")
        )
        pytest.fail(f"snakemake failed:\n{result.stderr[-5000:]}\n{logs}")
    return workdir


def requests(server) -> list[tuple[str, int]]:
    """(path, status) of every GET the server answered."""
    text = Path(server["log"]).read_text()
    return [(m[1], int(m[2])) for m in re.finditer(r'"GET (\S+) HTTP/1\.[01]" (\d{3})', text)]


@pytest.mark.slow
def test_sources_downloaded_once_and_pinned(server, finished):
    prod = production()
    got = requests(server)
    assert all(status == 200 for _, status in got), got
    paths = [p for p, _ in got]
    assert len(paths) == len(set(paths)), "a source was downloaded twice"
    # only the SSP asked for: the other 7 v2f files are neither downloaded nor prepared
    needed = {key for key in prod["sources"]
              if not key.startswith("luh2_ssp") or key == f"luh2_{SCENARIO}"}
    served = {"/" + served_path(prod["sources"][key]["url"]): key for key in prod["sources"]}
    assert {served[p] for p in paths} == needed
    assert sorted(p.name for p in (finished / "resources/cube/coarse").glob("*.zarr")) == [
        "historical.zarr", f"{SCENARIO}.zarr"]
    lock = json.loads((finished / "resources/raw/sources.lock.json").read_text())["sources"]
    assert set(lock) == {served[p] for p in paths}
    for key, entry in lock.items():
        data = (server["root"] / served_path(prod["sources"][key]["url"])).read_bytes()
        assert entry == {"url": source_url(prod, key, server["base"]), "size": len(data),
                         "sha256": hashlib.sha256(data).hexdigest()}
        log = (finished / "logs/download" / f"{key}.log").read_text()
        assert f"{len(data)} bytes\tsha256 {entry['sha256']}\tdownloaded, verified" in log


@pytest.mark.slow
def test_products_keep_water_and_no_data(server, finished):
    maps = finished / "results/maps" / SCENARIO
    for year in FORWARD:
        codes = read_map(maps / f"ai4land_{SCENARIO}_{year}.tif")
        assert codes.shape == (200, 200)
        for i, j in server["lake"]:
            assert (codes[i * FACTOR:(i + 1) * FACTOR, j * FACTOR:(j + 1) * FACTOR] == 77).all()
        if server["ice"] is not None:
            a, b = server["ice"]
            cell = codes[a * FACTOR:(a + 1) * FACTOR, b * FACTOR:(b + 1) * FACTOR]
            assert (cell[:, :3] == 77).all() and (cell[:, 3:] == 99).all()
        assert np.isin(codes, [0, 11, 22, 33, 44, 55, 66, 77, 99]).all()
    catalog = json.loads((finished / "results/publish/catalog.json").read_text())
    assert catalog["type"] == "Catalog"


@pytest.mark.slow
def test_served_files_have_the_real_layouts(server):
    prod = production()

    def served(key: str) -> Path:
        return server["root"] / served_path(prod["sources"][key]["url"])

    for key, units in (("luh2_states", "years since 850-01-01"),
                       (f"luh2_{SCENARIO}", "years since 2015-01-01")):
        with netCDF4.Dataset(served(key)) as ds:
            assert ds["time"].units == units
            assert ds["lat"][0] > ds["lat"][-1]  # north first
            primf = ds["primf"]
            assert primf.dimensions == ("time", "lat", "lon")
            assert primf.chunking() == [1, ds.dimensions["lat"].size, ds.dimensions["lon"].size]
            assert "_Fillvalue" in primf.ncattrs() and "_FillValue" not in primf.ncattrs()
    with netCDF4.Dataset(served("luh2_static")) as ds:
        assert {"icwtr", "carea", "fstnf"} <= set(ds.variables)
        assert ds["icwtr"].dimensions == ("lat", "lon")
        for i, j in [*server["lake"], *([server["ice"]] if server["ice"] else [])]:
            assert ds["icwtr"][i, j] == 1
    with netCDF4.Dataset(served("luh2_states")) as ds:
        ds.set_auto_maskandscale(False)
        for i, j in [*server["lake"], *([server["ice"]] if server["ice"] else [])]:
            assert (ds["primf"][:, i, j] == np.float32(1e20)).all()
    pattern = prod["datasets"]["fine"]["pattern"]
    first, last = prod["datasets"]["fine"]["years"]
    with zipfile.ZipFile(served("hildaplus")) as zf:
        assert sorted(zf.namelist()) == [
            pattern.replace("{year}", str(y)) for y in range(first, last + 1)
        ]
