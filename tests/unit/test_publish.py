"""Publishing: STAC catalog, manifest, provenance and README from small fake products."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import numpy as np
import pystac
import pytest

from ai4land.config import parse_config
from ai4land.errors import OutputError
from ai4land.grid import Grid
from ai4land.products import init_store, write_cog, write_probability_cogs, write_year
from ai4land.publish import MANIFEST, map_path, run_publish, verify_manifest

GRID = Grid(west=4.0, north=48.0, res=0.01, width=40, height=32)


def _config(root: Path):
    return parse_config({
        "run_name": "pub",
        "paths": {"raw": str(root / "raw"), "cube": str(root / "cube"),
                  "results": str(root / "results")},
        "datasets": {
            "coarse": {"historical": "h.nc", "scenarios": {"ssp126": "s.nc"}},
            "fine": {"pattern": "f_{year}.tif", "years": [1960, 1965]},
        },
        "years": {"train": [1960, 1963], "test": [1964, 1965], "backward": [1959, 1959],
                  "forward": [1966, 1967]},
        "scenarios": ["ssp126"],
    }, source="test")


@pytest.fixture
def products(tmp_path):
    config = _config(tmp_path)
    results = tmp_path / "results"
    store = results / "product" / "ai4land.zarr"
    init_store(store, grid=GRID, scenarios=config.product_scenarios,
               years=config.product_years, tile=16, legend=config.classes.legend)
    rng = np.random.default_rng(0)
    for scenario in config.product_scenarios:
        for year in config.chain_years(scenario):
            codes = rng.choice([0, 22, 44, 55], size=GRID.shape).astype("uint8")
            prob = rng.random(GRID.shape)
            path = map_path(results / "maps", scenario, year)
            write_probability_cogs(path, prob, prob, GRID)
            write_cog(path, codes, GRID, legend=config.classes.legend)
            path.with_suffix(".json").write_text(json.dumps(
                {"direction": 1, "harmonized": True,
                 "conservation": {"after": {"delta_target": {"mae": 0.001}}}}))
            write_year(store, scenario=scenario, year=year, codes=codes, probability=prob,
                       entropy=prob)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "input.nc").write_bytes(b"raw bytes")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.pt").write_bytes(b"weights")
    (model / "model_card.json").write_text(json.dumps({"classes": [22]}))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"models": {"unet": {"oa": 0.9}}}))
    return config, results, store, model, metrics


def _publish(config, results, store, model, metrics):
    return run_publish(config, maps_dir=results / "maps", store=store, model_dir=model,
                       metrics_path=metrics, output_dir=results / "publish")


def test_publish_writes_a_self_contained_catalog(products):
    config, results, store, model, metrics = products
    summary = _publish(config, results, store, model, metrics)
    out = results / "publish"
    assert summary["items"] == 3
    catalog = pystac.Catalog.from_file(str(out / "catalog.json"))
    items = list(catalog.get_items(recursive=True))
    assert sorted(i.id for i in items) == [
        "ai4land_historical_1959", "ai4land_ssp126_1966", "ai4land_ssp126_1967"]
    item = next(i for i in items if i.id == "ai4land_ssp126_1966")
    assert item.datetime.year == 1966
    assert item.properties["proj:shape"] == [32, 40]
    assert set(item.assets) == {"lulc", "probability", "entropy", "report"}
    lulc = item.assets["lulc"]
    assert Path(lulc.get_absolute_href()).resolve() == map_path(
        results / "maps", "ssp126", 1966).resolve()
    assert lulc.extra_fields["file:checksum"].startswith("1220")
    assert not Path(lulc.href).is_absolute()
    # Every link is relative (self-contained catalog).
    for path in out.rglob("*.json"):
        data = json.loads(path.read_text())
        for link in data.get("links", []):
            assert not link["href"].startswith("/"), (path, link)
    # Schema validation (pystac.validate) fetches the extension schemas over the network,
    # which tests never use: check the required structure instead.
    for path in out.rglob("*.json"):
        if path.name == "provenance.json":
            continue
        data = json.loads(path.read_text())
        assert data["stac_version"] and data["id"] and data["links"]
        if data["type"] == "Feature":
            assert {"geometry", "bbox", "properties", "assets"} <= set(data)
            assert data["properties"]["datetime"].endswith("-07-01T00:00:00Z")
            assert all("href" in a for a in data["assets"].values())
        else:
            assert data["type"] in ("Catalog", "Collection") and data["description"]
    collection = next(iter(catalog.get_children()))
    assert collection.license == "CC-BY-4.0"
    assert collection.extent.temporal.intervals[0][0].year == 1959
    zarr_asset = collection.assets["zarr"]
    assert Path(zarr_asset.get_absolute_href()).resolve() == store.resolve()


def test_manifest_verifies_and_publishing_is_deterministic(products):
    config, results, store, model, metrics = products
    _publish(config, results, store, model, metrics)
    out = results / "publish"
    manifest = (out / MANIFEST).read_text().splitlines()
    paths = [line.split("  ", 1)[1] for line in manifest]
    assert paths == sorted(paths)
    assert any(p.startswith("maps/ssp126/") and p.endswith(".tif") for p in paths)
    assert any(p.startswith("product/ai4land.zarr/lulc/") for p in paths)
    assert "product/ai4land.zarr/.zmetadata" in paths
    assert verify_manifest(out / MANIFEST, results) == []
    check = subprocess.run(["sha256sum", "--quiet", "-c", f"publish/{MANIFEST}"],
                           cwd=results, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config_hash"] == config.hash()
    assert prov["inputs_sha256"] == {"input.nc": hashlib.sha256(b"raw bytes").hexdigest()}
    assert len(prov["model"]["model_pt_sha256"]) == 64
    assert {"torch", "rasterio", "gdal", "zarr", "pystac"} <= set(prov["software"])
    readme = (out / "README.md").read_text()
    assert "CC-BY-4.0" in readme and "ETOPO 2022" in readme and "| 44 | forest |" in readme

    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _publish(config, results, store, model, metrics)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert before == after

    # A tampered chunk is caught.
    chunk = next((store / "lulc").glob("0.*"))
    chunk.write_bytes(chunk.read_bytes() + b"x")
    assert verify_manifest(out / MANIFEST, results) == [chunk.relative_to(results).as_posix()]


def test_missing_product_is_an_error(products):
    config, results, store, model, metrics = products
    map_path(results / "maps", "ssp126", 1967).with_suffix(".json").unlink()
    with pytest.raises(OutputError, match="ai4land_ssp126_1967.json"):
        _publish(config, results, store, model, metrics)
    assert not (results / "publish").exists()
