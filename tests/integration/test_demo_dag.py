"""The whole DAG on a tiny demo world, in a temporary directory, through Snakemake."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
import xarray as xr

from ai4land.evaluate.models import ALLOCATION_BASELINES, MODELS

HERE = Path(__file__).parent
LEGEND = {0, 11, 22, 33, 44, 55, 66, 77, 99}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_dag):
    repo = HERE.parents[1]
    workdir = tmp_path_factory.mktemp("tiny")
    tiny_dag(workdir)
    return repo, workdir


def _maps(workdir: Path) -> list[Path]:
    return sorted(p for p in (workdir / "results/maps").rglob("ai4land_*.tif")
                  if not p.stem.endswith(("_probability", "_entropy")))


@pytest.mark.slow
def test_every_stage_produced_its_outputs(tiny_run):
    _, workdir = tiny_run
    for path in (
        "resources/cube/grids.json",
        "resources/cube/target.zarr",
        "resources/cube/static.zarr",
        "resources/cube/coarse/historical.zarr",
        "resources/cube/coarse/ssp585.zarr",
        "results/split/split.json",
        "results/split/split.png",
        "results/model/model.pt",
        "results/model/model_card.json",
        "results/model/metrics.csv",
        "results/eval/metrics.json",
        "results/publish/catalog.json",
        "results/publish/SHA256SUMS",
        "results/publish/provenance.json",
        "results/publish/viewer/index.html",
        "results/publish/viewer/data/index.json",
        "results/publish/quicklooks/class_area_trajectories.png",
    ):
        assert (workdir / path).exists(), path
    # 2 backward years + 2 SSPs x 2 forward years
    assert len(_maps(workdir)) == 6
    # every CLI call saw the merged config (tiny.yaml over demo.yaml)
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
    info = subprocess.run(
        [gdalinfo, str(_maps(workdir)[0])], capture_output=True, text=True, check=True
    )
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
    assert list(metrics["models"]) == list(MODELS)
    # tiny.yaml: test years 2001-2004 inside the observed 1960-2019: both chains
    assert set(metrics["split"]["chains"]) == {"forward", "backward"}
    assert metrics["scored_map"] == "harmonised"
    for model, values in metrics["models"].items():
        for key in ("oa", "miou", "kappa", "f1", "fom_change", "iou_change", "per_class_iou",
                    "conservation_mae", "by_year", "by_block", "stability", "intervals",
                    "chains"):
            assert key in values, (model, key)
        assert ("period" in values) == (model != "unet_teacher_forced"), model
    assert set(metrics["drift"]) == set(metrics["models"]["unet"]["by_year"])
    assert metrics["comparison"]["period_fom"]["best_allocation_baseline"]["baseline"] in (
        ALLOCATION_BASELINES)
    catalog = json.loads((workdir / "results/publish/catalog.json").read_text())
    assert catalog["type"] == "Catalog"
    lines = (workdir / "results/publish/SHA256SUMS").read_text().splitlines()
    assert any(line.endswith(".tif") for line in lines)
    for line in lines:
        digest, name = line.split(maxsplit=1)
        path = workdir / "results" / name.lstrip("*")
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, name


@pytest.mark.slow
def test_published_dataset_is_self_contained(tiny_run):
    import pystac

    from ai4land.publish.run import validate_catalog

    _, workdir = tiny_run
    out = workdir / "results/publish"
    assert validate_catalog(out / "catalog.json") == 2 + len(_maps(workdir))
    catalog = pystac.Catalog.from_file(str(out / "catalog.json"))
    hrefs = [a.get_absolute_href() for item in catalog.get_items(recursive=True)
             for a in item.assets.values()]
    assert hrefs and all(Path(h).resolve().is_relative_to(out.resolve()) for h in hrefs)
    assert all(Path(h).is_file() for h in hrefs)
    check = subprocess.run(["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=out,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    readme = (out / "README.md").read_text()
    assert "synthetic demo world" in readme and "ETOPO" not in readme


@pytest.mark.slow
def test_rerun_with_nothing_changed_does_nothing(tiny_run, snakemake):
    _, workdir = tiny_run
    result = snakemake(workdir, "--cores", "2")
    assert result.returncode == 0, result.stderr
    assert "Nothing to be done" in result.stdout + result.stderr


@pytest.mark.slow
def test_snakemake_report_shows_the_evaluation_figures(tiny_run, snakemake, tmp_path):
    _, workdir = tiny_run
    figures = sorted((workdir / "results/eval/figures").glob("*.png"))
    assert [p.stem for p in figures] == sorted(["confusion_matrix", "per_class_iou", "by_year",
                                                "tiles", "class_area", "calibration",
                                                "change_fom"])
    report = tmp_path / "report.zip"
    result = snakemake(workdir, "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    with zipfile.ZipFile(report) as archive:
        names = archive.namelist()
        html = archive.read("report/report.html").decode()
    for figure in figures:
        assert any(name.endswith(f"/{figure.name}") for name in names), figure
    assert "Confusion matrix of the published U-Net map" in html  # a caption
    assert "neighbourhood_density" in html  # captions name the models that were run
