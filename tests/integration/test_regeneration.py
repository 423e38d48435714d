"""Regenerating the product from scratch with the same config gives the same bytes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import rasterio


def _digests(results: Path) -> dict[str, str]:
    """sha256 of every COG, per-map report and file of the Zarr store, by path under
    results/."""
    store = results / "product" / "ai4land.zarr"
    files = [*results.glob("maps/*/*.tif"), *results.glob("maps/*/*.json"),
             *(p for p in store.rglob("*") if p.is_file())]
    return {p.relative_to(results).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(files)}


def _tag_diff(a: Path, b: Path) -> dict:
    if a.suffix != ".tif":
        return {}
    with rasterio.open(a) as src_a, rasterio.open(b) as src_b:
        tags_a, tags_b = src_a.tags(), src_b.tags()
    return {k: (tags_a.get(k), tags_b.get(k)) for k in sorted({*tags_a, *tags_b})
            if tags_a.get(k) != tags_b.get(k)}


@pytest.mark.slow
def test_two_runs_from_scratch_give_identical_products(tmp_path, tiny_dag):
    runs = [tmp_path / "a", tmp_path / "b"]
    for workdir in runs:
        workdir.mkdir()
        tiny_dag(workdir)
    manifests = [(w / "results/publish/SHA256SUMS").read_text() for w in runs]
    digests = [_digests(w / "results") for w in runs]
    assert any(name.endswith(".tif") for name in digests[0])
    assert any(name.endswith(".json") for name in digests[0])  # the per-map reports
    assert any("/lulc/" in name for name in digests[0])  # Zarr chunks are compared too
    differ = sorted(k for k in digests[0] if digests[0][k] != digests[1].get(k))
    assert not differ, (
        f"{len(differ)} files differ between runs, e.g. {differ[:3]}; "
        f"tags that differ: {_tag_diff(*(w / 'results' / differ[0] for w in runs))}"
    )
    assert digests[0].keys() == digests[1].keys()
    assert manifests[0] == manifests[1]
    # The manifest covers exactly these files and verifies against them.
    listed = dict(reversed(line.split("  ", 1)) for line in manifests[0].splitlines())
    assert listed == digests[0]
