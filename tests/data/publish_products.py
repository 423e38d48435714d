"""A tiny publish input for tests: the products of a few (scenario, year), their Zarr
store, the cube parts publish reads (grids.json, the observed anchor maps), a fake model
and metrics. ``make_products(root)`` returns (config, results, store, model, metrics)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from ai4land.config import parse_config
from ai4land.grid import Grid
from ai4land.io.cog import write_cog, write_probability_cogs
from ai4land.io.zarr_store import init_store, write_year
from ai4land.publish.run import map_path

GRID = Grid(west=4.0, north=48.0, res=0.01, width=40, height=32)
FACTOR = 8  # fine pixels a coarse cell
ANCHORS = {"historical": 1960, "ssp126": 1965}  # the observed maps the chains start from
GROUP_FRACTIONS = {key: {"cropland": 0.2, "forest": 0.5} for key in ("map", "delta_target",
                                                                      "luh")}


def write_cube(root: Path, grid: Grid, years, seed: int = 1, factor: int = FACTOR) -> None:
    """The cube parts publish reads: grids.json and the observed maps of ``years``."""
    import xarray as xr

    warnings.filterwarnings("ignore", message="Consolidated metadata")
    root.mkdir(parents=True, exist_ok=True)
    (root / "grids.json").write_text(json.dumps({
        "fine": grid.to_dict(), "coarse": grid.coarsened(factor).to_dict(), "factor": factor}))
    rng = np.random.default_rng(seed)
    maps = rng.choice([0, 22, 44, 55], size=(len(years), *grid.shape)).astype("uint8")
    xr.Dataset({"lulc": (("year", "lat", "lon"), maps)},
               coords={"year": np.asarray(years, dtype="int64"),
                       "lat": grid.lat.astype("float64"), "lon": grid.lon.astype("float64")},
               ).to_zarr(root / "target.zarr", mode="w", consolidated=True)


def report(scenario: str, direction: int = 1) -> dict:
    return {"direction": direction, "harmonized": True, "anchor_year": ANCHORS[scenario],
            "conservation": {"after": {"delta_target": {"mae": 0.001}}},
            "group_fractions": GROUP_FRACTIONS}


def _config(root: Path, forward=(1966, 1967), **extra):
    return parse_config({
        **extra,
        "run_name": "pub",
        "paths": {"raw": str(root / "raw"), "cube": str(root / "cube"),
                  "results": str(root / "results")},
        "datasets": {
            "coarse": {"historical": "h.nc", "scenarios": {"ssp126": "s.nc"}},
            "fine": {"pattern": "f_{year}.tif", "years": [1960, 1965]},
            **extra.get("datasets", {}),
        },
        "years": {"train": [1960, 1963], "test": [1964, 1965], "backward": [1959, 1959],
                  "forward": list(forward)},
        "scenarios": ["ssp126"],
    }, source="test")


def random_maps(rng, shape, scenario: str, year: int):
    """Class codes and probability (also used as entropy) of one map: white noise."""
    return rng.choice([0, 22, 44, 55], size=shape).astype("uint8"), rng.random(shape)


def make_products(tmp_path: Path, *, grid: Grid = GRID, forward=(1966, 1967),
                  factor: int = FACTOR, maps=random_maps, **extra):
    """The products of ``_config`` on ``grid`` (``maps(rng, shape, scenario, year)`` gives
    each map's codes and probability) and a cube with ``factor``-pixel coarse cells."""
    config = _config(tmp_path, forward=list(forward), **extra)
    results = tmp_path / "results"
    store = results / "product" / "ai4land.zarr"
    init_store(store, grid=grid, scenarios=config.product_scenarios,
               years=config.product_years, tile=16, legend=config.classes.legend)
    rng = np.random.default_rng(0)
    for scenario in config.product_scenarios:
        for year in config.chain_years(scenario):
            codes, prob = maps(rng, grid.shape, scenario, year)
            path = map_path(results / "maps", scenario, year)
            write_probability_cogs(path, prob, prob, grid)
            write_cog(path, codes, grid, legend=config.classes.legend)
            path.with_suffix(".json").write_text(json.dumps(report(scenario)))
            write_year(store, scenario=scenario, year=year, codes=codes, probability=prob,
                       entropy=prob)
    write_cube(tmp_path / "cube", grid, [1960, 1965], factor=factor)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "input.nc").write_bytes(b"raw bytes")
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.pt").write_bytes(b"weights")
    (model / "model_card.json").write_text(json.dumps({"classes": [22]}))
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"models": {"unet": {"oa": 0.9}}}))
    return config, results, store, model, metrics
