"""Finalising bands with open ocean: the compiled allocation steps, which skip coarse
cells without a valid pixel, publish the same bytes (layers and report) as the code they
replaced, for ocean at a band's start, middle and end, all ocean and none, both
allocation modes and the ensemble spread layer."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import ai4land.predict.harmonize as harmonize
from ai4land.grid import Window
from ai4land.io.cube import Cube
from ai4land.predict.finalise import Finaliser
from ai4land.predict.harmonize import class_groups
from ai4land.samples.features import codes_to_index

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_harmonize_compiled import (  # noqa: E402
    _reference_cell_sums,
    _reference_smoothed_pixels,
    _reference_swap_candidates,
    _reference_transfer_patches,
)
from tiny_cube import tiny_config, write_tiny_cube  # noqa: E402

SIZE, FACTOR = 96, 8
OCEAN_CELL_COLUMNS = [0, 1, 5, 6, 10, 11]  # start, middle and end of cell rows 2..5
BANDS = {  # (row, col, height, width) of whole cells
    "all_ocean": (0, 0, 16, SIZE),
    "ocean_start_middle_end": (16, 0, 32, SIZE),
    "ocean_middle_end_partial_width": (16, 24, 32, 72),
    "no_ocean": (64, 0, 32, SIZE),
    "coast_and_ocean_last_rows": (40, 0, 24, SIZE),
}


def _rewrite(path: Path, ds: xr.Dataset) -> None:
    for var in ds.variables.values():
        var.encoding = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Consolidated metadata")
        ds.to_zarr(path, mode="w", consolidated=True)


@pytest.fixture(scope="module")
def ocean_world(tmp_path_factory):
    """The tiny cube with whole coarse cells of open ocean added: every cell of cell
    rows 0-1, and cell columns 0-1, 5-6 and 10-11 of cell rows 2-5."""
    root = tmp_path_factory.mktemp("ocean") / "cube"
    write_tiny_cube(root, size=SIZE, factor=FACTOR)
    cells = np.zeros((SIZE // FACTOR,) * 2, dtype=bool)
    cells[:2] = True
    cells[2:6, OCEAN_CELL_COLUMNS] = True
    ocean = np.kron(cells, np.ones((FACTOR, FACTOR), dtype=bool))
    target = xr.open_zarr(root / "target.zarr", chunks=None).load()
    target["lulc"].values[:, ocean] = 0
    _rewrite(root / "target.zarr", target)
    static = xr.open_zarr(root / "static.zarr", chunks=None).load()
    static["land_mask"].values[ocean] = 0
    for name in ("elevation", "clay"):
        static[name].values[ocean] = np.nan
    _rewrite(root / "static.zarr", static)
    coarse = xr.open_zarr(root / "coarse" / "historical.zarr", chunks=None).load()
    for name, var in coarse.data_vars.items():
        if name != "icwtr":
            var.values[:, cells] = np.nan
    _rewrite(root / "coarse" / "historical.zarr", coarse)
    return tiny_config(root)


def _finaliser(config, *, layers, **predict):
    config = config.model_copy(update={"predict": config.predict.model_copy(update=predict)})
    cube = Cube.from_config(config)
    classes = list(config.classes.predicted)
    whole = Window(0, 0, *cube.fine_grid.shape)
    return Finaliser(config, cube=cube, anchor=1964, classes=classes, weight=1.0,
                     groups=class_groups(config.datasets.coarse.groups, classes),
                     layers=layers, cells=cube.coarse_cells("historical", 1965, whole),
                     anchor_cells=cube.coarse_cells("historical", 1964, whole)), cube


def _probabilities(cube, classes, window, *, members: bool, seed: int = 0) -> np.ndarray:
    """Probabilities close to the 1965 map (so the allocation has choices to make), with
    the ensemble's two spread channels when ``members``."""
    rng = np.random.default_rng(seed)
    index = codes_to_index(cube.target_window(1965, window), classes)
    logits = rng.normal(size=(window.height, window.width, len(classes)))
    rows, cols = np.nonzero(index >= 0)
    logits[rows, cols, index[rows, cols]] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    if members:
        probs = np.concatenate([probs, rng.random((*probs.shape[:2], 2)) * 0.3], axis=-1)
    return probs.astype("float32")


def _finalise_bands(config, *, members: bool, prior_year: int | None, **predict):
    layers = ["lulc", "probability", "entropy", "raw", *(["spread"] if members else [])]
    finaliser, cube = _finaliser(config, layers=layers, **predict)
    blocks = {}
    for name, (row, col, height, width) in BANDS.items():
        window = Window(row, col, height, width)
        prior = None if prior_year is None else cube.target_window(prior_year, window)
        probs = _probabilities(cube, finaliser.classes, window, members=members)
        blocks[name] = finaliser.collect(finaliser(row, probs, col=col, prior=prior))[1]
    return blocks, finaliser.report()


MODES = {
    "change": {"prior_year": 1964},
    "change_patch_bonus_swaps": {"prior_year": 1964, "change_patch_bonus": 0.5,
                                 "swap_margin": 0.02},
    "full": {"prior_year": 1964, "allocation": "full"},
    "no_prior": {"prior_year": None},
}


@pytest.mark.parametrize("members", [False, True])
@pytest.mark.parametrize("mode", list(MODES))
def test_ocean_bands_finalise_to_the_same_bytes_as_before(ocean_world, monkeypatch, mode,
                                                          members):
    settings = dict(MODES[mode])
    blocks, report = _finalise_bands(ocean_world, members=members, **settings)
    monkeypatch.setattr(harmonize, "_smoothed_pixels", _reference_smoothed_pixels)
    monkeypatch.setattr(harmonize, "_swap_candidates", _reference_swap_candidates)
    monkeypatch.setattr(harmonize, "_cell_sums", _reference_cell_sums)
    monkeypatch.setattr(harmonize, "_transfer_patches", _reference_transfer_patches)
    before, before_report = _finalise_bands(ocean_world, members=members, **settings)
    for name in BANDS:
        assert blocks[name].tobytes() == before[name].tobytes(), name
    assert report == before_report  # counts and conservation errors, float for float
    if settings["prior_year"] is not None and mode != "full":
        assert report["harmonize_reassigned_pixels"] > 0


def test_open_ocean_cells_get_the_constant_layers_whatever_their_probabilities(ocean_world):
    """What the model leaves over open ocean does not reach any layer or count: the
    cells without a valid pixel read ocean (lulc) and no data (the rest)."""
    finaliser, cube = _finaliser(ocean_world, layers=["lulc", "probability", "entropy",
                                                      "raw", "spread"])
    row, col, height, width = BANDS["ocean_start_middle_end"]
    window = Window(row, col, height, width)
    prior = cube.target_window(1964, window)
    probs = _probabilities(cube, finaliser.classes, window, members=True)
    _, block, tally = finaliser(row, probs, col=col, prior=prior)
    open_ocean = np.zeros((height, width), dtype=bool)
    for c in OCEAN_CELL_COLUMNS:
        open_ocean[:, c * FACTOR:(c + 1) * FACTOR] = True
    noisy = probs.copy()
    noisy[open_ocean] = np.random.default_rng(5).random((open_ocean.sum(), probs.shape[-1]))
    noisy[open_ocean.nonzero()[0][::7], open_ocean.nonzero()[1][::7]] = np.nan
    _, again, again_tally = finaliser(row, noisy, col=col, prior=prior)
    assert again.tobytes() == block.tobytes()
    assert (again_tally.class_counts == tally.class_counts).all()
    np.testing.assert_array_equal(block[open_ocean][:, 0], ocean_world.classes.ocean)
    np.testing.assert_array_equal(block[open_ocean][:, 3], ocean_world.classes.nodata)
    np.testing.assert_array_equal(block[open_ocean][:, [1, 2, 4]], 255)
