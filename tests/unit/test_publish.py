"""Publishing: STAC catalog, manifest, provenance and README from small fake products."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pystac
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
import publish_products  # noqa: E402
from publish_products import _config, make_products  # noqa: E402

from ai4land.errors import OutputError  # noqa: E402
from ai4land.grid import Grid  # noqa: E402
from ai4land.publish.run import (  # noqa: E402
    MANIFEST,
    input_datasets,
    map_path,
    resolution_label,
    run_publish,
    title,
    validate_catalog,
    verify_manifest,
)

GRID = publish_products.GRID


@pytest.fixture
def products(tmp_path):
    return make_products(tmp_path)


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
    assert set(item.assets) == {"lulc", "probability", "entropy", "report", "thumbnail",
                                "overview"}
    assert item.assets["thumbnail"].roles == ["thumbnail"]
    assert item.assets["overview"].roles == ["overview"]
    for key in ("thumbnail", "overview"):
        png = Path(item.assets[key].get_absolute_href())
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", key
    lulc = item.assets["lulc"]
    # The assets are the products, inside the publish tree.
    published = Path(lulc.get_absolute_href())
    assert published.resolve() == (out / "maps/ssp126/ai4land_ssp126_1966.tif").resolve()
    assert published.read_bytes() == map_path(results / "maps", "ssp126", 1966).read_bytes()
    assert lulc.extra_fields["file:checksum"].startswith("1220")
    assert not Path(lulc.href).is_absolute()
    # Every link is relative (self-contained catalog).
    for path in out.rglob("*.json"):
        data = json.loads(path.read_text())
        for link in data.get("links", []):
            assert not link["href"].startswith("/"), (path, link)
    collection = next(iter(catalog.get_children()))
    assert collection.license == "CC-BY-4.0"
    assert collection.extent.temporal.intervals[0][0].year == 1959
    zarr_asset = collection.assets["zarr"]
    assert (
        Path(zarr_asset.get_absolute_href()).resolve() == (out / "product/ai4land.zarr").resolve()
    )


def test_catalog_validates_against_the_stac_schemas_offline(products, monkeypatch):
    config, results, store, model, metrics = products

    def no_network(*args, **kwargs):
        raise AssertionError(f"network access: {args[:1]}")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    _publish(config, results, store, model, metrics)  # validates before keeping it
    out = results / "publish"
    assert validate_catalog(out / "catalog.json") == 5  # catalog, collection, 3 items
    item_path = next(p for p in out.rglob("ai4land_ssp126_1966.json") if "maps" not in p.parts)
    item = json.loads(item_path.read_text())
    assert any("/projection/" in uri for uri in item["stac_extensions"])
    assert any("/classification/" in uri for uri in item["stac_extensions"])
    # The extension schemas are really applied: a wrong proj:shape, a bad colour hint
    # and a wrong file:size are each refused.
    for field, bad in ((("properties", "proj:shape"), "32x40"),
                       (("assets", "lulc", "classification:classes"), [{"value": "x"}]),
                       (("assets", "lulc", "file:size"), -1)):
        broken = json.loads(json.dumps(item))
        node = broken
        for key in field[:-1]:
            node = node[key]
        node[field[-1]] = bad
        item_path.write_text(json.dumps(broken))
        with pytest.raises(OutputError, match="not valid STAC") as info:
            validate_catalog(out / "catalog.json")
        assert "\n" not in str(info.value)
    item["stac_extensions"].append("https://stac-extensions.github.io/eo/v1.1.0/schema.json")
    item_path.write_text(json.dumps(item))
    with pytest.raises(OutputError, match="eo/v1.1.0.*not kept"):
        validate_catalog(out / "catalog.json")


def test_published_tree_is_relocatable(products, tmp_path):
    import rioxarray  # noqa: F401  (the .rio accessor)
    import xarray as xr

    config, results, store, model, metrics = products
    _publish(config, results, store, model, metrics)
    moved = tmp_path / "elsewhere" / "dataset"
    moved.parent.mkdir()
    shutil.move(results / "publish", moved)
    shutil.rmtree(results)  # nothing outside the moved tree is left to point to
    catalog = pystac.Catalog.from_file(str(moved / "catalog.json"))
    assets = [a for item in catalog.get_items(recursive=True) for a in item.assets.values()]
    assets += list(next(iter(catalog.get_children())).assets.values())
    # per item: 3 layers, report, thumbnail, overview; the collection: the store, the
    # viewer, the trajectories, an animation and a change figure per scenario
    assert len(assets) == 3 * 6 + 3 + 2 * 2
    for asset in assets:
        path = Path(asset.get_absolute_href())
        assert path.resolve().is_relative_to(moved.resolve()), asset.href
        assert path.exists(), asset.href
        if path.is_file():
            assert asset.extra_fields["file:checksum"] == "1220" + hashlib.sha256(
                path.read_bytes()).hexdigest()
    zarr = next(a for a in assets if a.media_type == "application/vnd+zarr")
    ds = xr.open_zarr(zarr.get_absolute_href())
    assert ds.rio.crs.to_epsg() == 4326
    check = subprocess.run(["sha256sum", "--quiet", "-c", MANIFEST], cwd=moved,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


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
    # the per-map reports are published products too
    assert [p for p in paths if p.endswith(".json") and p.startswith("maps/")] == [
        "maps/historical/ai4land_historical_1959.json", "maps/ssp126/ai4land_ssp126_1966.json",
        "maps/ssp126/ai4land_ssp126_1967.json"]
    assert verify_manifest(out / MANIFEST, results) == []
    assert verify_manifest(out / MANIFEST, out) == []
    check = subprocess.run(["sha256sum", "--quiet", "-c", f"publish/{MANIFEST}"],
                           cwd=results, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr

    prov = json.loads((out / "provenance.json").read_text())
    assert prov["config_hash"] == config.hash()
    assert prov["inputs_sha256"] == {"input.nc": hashlib.sha256(b"raw bytes").hexdigest()}
    assert len(prov["model"]["model_pt_sha256"]) == 64
    assert {"torch", "rasterio", "gdal", "zarr", "pystac"} <= set(prov["software"])
    readme = (out / "README.md").read_text()
    assert "CC-BY-4.0" in readme and "| 44 | forest |" in readme

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


def test_titles_state_the_grid_resolution():
    assert resolution_label(GRID) == "0.01° (~1.1 km at the equator)"
    coarse = Grid(west=0.0, north=10.0, res=0.05, width=4, height=4)
    assert resolution_label(coarse) == "0.05° (~5.6 km at the equator)"
    assert resolution_label(Grid(west=0.0, north=0.0, res=250.0, width=4, height=4,
                                 crs="EPSG:3035")) == "250 m"
    assert resolution_label(Grid(west=0.0, north=0.0, res=1000.0, width=4, height=4,
                                 crs="EPSG:3035")) == "1 km"
    config = _config(Path("/nowhere"))
    assert "1 km" not in title(config, coarse) and "0.05°" in title(config, coarse)
    named = _config(Path("/nowhere"), publish={"title": "My maps"})
    assert title(named, coarse) == "My maps"


def test_readme_lists_the_inputs_actually_used(products, tmp_path):
    config, results, store, model, metrics = products
    _publish(config, results, store, model, metrics)
    readme = (results / "publish" / "README.md").read_text()
    assert not re.search(r"(?<![\d.])1 km", readme) and "0.01°" in readme.splitlines()[0]
    for absent in ("ETOPO", "SoilGrids", "HILDA+ v1.0", "LUH2 v2h"):
        assert absent not in readme, absent
    assert "| `h.nc` | not stated" in readme and "| `f_{year}.tif` |" in readme

    sources = {
        "states": {"url": "https://example.org/states.nc", "path": "h.nc",
                   "license": "CC-BY-4.0 (LUH2)"},
        "ssp585": {"url": "https://example.org/ssp585.nc", "path": "s585.nc",
                   "license": "CC-BY-4.0 (LUH2)"},
        "fine": {"url": "https://example.org/fine.zip", "path": "f_1960.tif"},
        "clay": {"url": "https://example.org/clay.tif", "path": "clay.tif",
                 "license": "CC-BY-4.0 (SoilGrids)"},
        "elevation": {"url": "https://example.org/z.nc", "path": "z.nc",
                      "license": "public domain (ETOPO)"},
    }
    used = _config(tmp_path, sources=sources,
                   datasets={"static": [{"name": "clay", "path": "clay.tif"}]})
    rows = input_datasets(used)
    assert rows == [("`states`", "CC-BY-4.0 (LUH2)", "https://example.org/states.nc"),
                    ("`s.nc`", "not stated (no `sources` entry downloads it)", "local file"),
                    ("`fine`", "not stated (sources.fine.license)", "https://example.org/fine.zip"),
                    ("`clay`", "CC-BY-4.0 (SoilGrids)", "https://example.org/clay.tif")]
    demo = _config(tmp_path, demo_world=True)
    assert "synthetic demo world" in input_datasets(demo)[0][0]


def test_a_config_without_maps_has_nothing_to_publish(tmp_path):
    config = _config(tmp_path)
    config = config.model_copy(update={"years": config.years.model_copy(
        update={"backward": None, "forward": None})})
    assert not config.product_scenarios or not any(
        config.chain_years(s) for s in config.product_scenarios)
    with pytest.raises(OutputError, match="nothing to publish: the config asks for no maps"):
        run_publish(config, maps_dir=tmp_path / "maps", store=tmp_path / "missing.zarr",
                    model_dir=tmp_path, metrics_path=None, output_dir=tmp_path / "publish")
    assert not (tmp_path / "publish").exists()


def test_a_publish_failing_midway_leaves_the_earlier_tree_as_it_was(products, monkeypatch):
    """The tree is staged beside `publish/` and renamed onto it whole, so a picture that
    fails half-written (or a kill) never shows in the published tree."""
    import matplotlib.figure

    config, results, store, model, metrics = products
    _publish(config, results, store, model, metrics)
    out = results / "publish"
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert any(p.suffix == ".png" for p in before)

    def half_written(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG half")
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_written)
    with pytest.raises(RuntimeError, match="renderer failed"):
        _publish(config, results, store, model, metrics)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in results.iterdir() if p.name.startswith(".publish")) == []
