"""The whole DAG on a tiny demo world, in a temporary directory, through Snakemake."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr

HERE = Path(__file__).parent
LEGEND = {0, 11, 22, 33, 44, 55, 66, 77, 99}


def _snakemake(repo: Path, workdir: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"),
         "--directory", str(workdir), "--configfile", str(HERE / "tiny.yaml"), *args],
        capture_output=True, text=True, env=env,
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    repo = HERE.parents[1]
    workdir = tmp_path_factory.mktemp("tiny")
    result = _snakemake(repo, workdir, "--cores", "2")
    if result.returncode != 0:
        logs = "\n".join(f"== {p}\n{p.read_text()[-3000:]}" for p in (workdir / "logs").rglob("*.log"))
        pytest.fail(f"snakemake failed:\n{result.stderr[-5000:]}\n{logs}")
    return repo, workdir


def _maps(workdir: Path) -> list[Path]:
    return sorted(p for p in (workdir / "results/maps").rglob("ai4land_*.tif")
                  if not p.stem.endswith(("_probability", "_entropy")))


@pytest.mark.slow
def test_every_stage_produced_its_outputs(tiny_run):
    _, workdir = tiny_run
    for path in ("resources/cube/grids.json", "resources/cube/target.zarr", "resources/cube/static.zarr",
                 "resources/cube/coarse/historical.zarr", "resources/cube/coarse/ssp585.zarr",
                 "results/split/split.json", "results/split/split.png", "results/model/model.pt",
                 "results/model/model_card.json", "results/model/metrics.csv",
                 "results/eval/metrics.json", "results/publish/catalog.json",
                 "results/publish/SHA256SUMS", "results/publish/provenance.json"):
        assert (workdir / path).exists(), path
    # 2 backward years + 2 SSPs x 2 forward years
    assert len(_maps(workdir)) == 6
    # every CLI call saw the merged config (tiny.yaml over the default demo config)
    card = json.loads((workdir / "results/model/model_card.json").read_text())
    assert card["tile_size"] == 32


@pytest.mark.slow
def test_cogs_hold_class_codes_and_open_with_gdal(tiny_run):
    _, workdir = tiny_run
    for path in _maps(workdir):
        with rasterio.open(path) as src:
            assert src.dtypes[0] == "uint8" and src.nodata == 99
            assert src.crs.to_epsg() == 4326
            assert src.overviews(1), f"{path} has no overviews"
            assert src.colormap(1)[44][:3] != (0, 0, 0)
            codes = src.read(1)
        assert set(np.unique(codes)) <= LEGEND
        assert len(set(np.unique(codes)) - {0, 99}) >= 3, "a map with almost one class"
    gdalinfo = shutil.which("gdalinfo")
    assert gdalinfo, "gdalinfo missing: run scripts/install-system-deps.sh"
    info = subprocess.run([gdalinfo, str(_maps(workdir)[0])], capture_output=True, text=True, check=True)
    assert "LAYOUT=COG" in info.stdout and "Color Table" in info.stdout


@pytest.mark.slow
def test_zarr_store_equals_the_cogs(tiny_run):
    _, workdir = tiny_run
    store = xr.open_zarr(workdir / "results/product/ai4land.zarr", mask_and_scale=False)
    assert store["lulc"].dims == ("scenario", "year", "lat", "lon")
    assert store["lulc"].dtype == np.uint8
    assert list(store["scenario"].values) == ["historical", "ssp126", "ssp585"]
    assert list(store["year"].values) == [1958, 1959, 2020, 2021]
    for path in _maps(workdir):
        scenario, year = path.stem.split("_")[1:3]
        with rasterio.open(path) as src:
            np.testing.assert_array_equal(
                store["lulc"].sel(scenario=scenario, year=int(year)).values, src.read(1))
    # combinations outside a chain stay no data
    assert (store["lulc"].sel(scenario="historical", year=2020).values == 99).all()


@pytest.mark.slow
def test_evaluation_and_publication(tiny_run):
    _, workdir = tiny_run
    metrics = json.loads((workdir / "results/eval/metrics.json").read_text())
    for model in ("unet", "persistence", "coarse_majority"):
        for key in ("oa", "miou", "kappa", "per_class_iou", "conservation_mae"):
            assert key in metrics["models"][model], (model, key)
    catalog = json.loads((workdir / "results/publish/catalog.json").read_text())
    assert catalog["type"] == "Catalog"
    lines = (workdir / "results/publish/SHA256SUMS").read_text().splitlines()
    assert any(line.endswith(".tif") for line in lines)
    for line in lines:
        digest, name = line.split(maxsplit=1)
        path = workdir / "results" / name.lstrip("*")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, name


@pytest.mark.slow
def test_rerun_with_nothing_changed_does_nothing(tiny_run):
    repo, workdir = tiny_run
    result = _snakemake(repo, workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr
