"""predict.smooth_weight: without a prior map, the full allocation ranks a cell's pixels
by the model's group probabilities blended with the cell targets interpolated between
cell centres (issue 19, direction 6)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from ai4land.grid import Window
from ai4land.predict.finalise import Finaliser
from ai4land.predict.harmonize import map_group_fractions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_finalise_ocean import _finaliser as finaliser_of  # noqa: E402
from tiny_cube import tiny_config, write_tiny_cube  # noqa: E402

SIZE, FACTOR = 64, 8


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("smooth_weight") / "cube"
    write_tiny_cube(root, size=SIZE, factor=FACTOR)
    return tiny_config(root)


def _finaliser(config, **predict) -> Finaliser:
    return finaliser_of(config, layers=["lulc"], **predict)[0]


def _probabilities(k: int, seed: int = 0) -> np.ndarray:
    """Uninformative probabilities (noise around uniform): only the blend can say where
    inside a cell a group lies."""
    rng = np.random.default_rng(seed)
    probs = 1 + 0.05 * rng.random((SIZE, SIZE, k))
    return (probs / probs.sum(-1, keepdims=True)).astype("float32")


def test_interpolated_targets_are_the_same_in_a_band_as_in_the_whole_region(config):
    finaliser = _finaliser(config)
    whole = finaliser.interpolated_targets(Window(0, 0, SIZE, SIZE))
    assert whole.shape == (SIZE, SIZE, len(finaliser.groups))
    assert whole.min() >= 0 and whole.max() <= 1
    band = Window(2 * FACTOR, 3 * FACTOR, 3 * FACTOR, 2 * FACTOR)
    np.testing.assert_array_equal(finaliser.interpolated_targets(band), whole[band.slices])
    # a convex combination of cell fractions (a neighbour without data counts as the
    # cell itself): they sum to 1 wherever the pixel's cell has a target
    land = finaliser.cube.land_mask_window(Window(0, 0, SIZE, SIZE)).astype(bool)
    valid = finaliser.valid(Window(0, 0, SIZE, SIZE), land=land)
    np.testing.assert_allclose(whole[valid].sum(-1), 1, atol=1e-5)

def test_smooth_weight_places_groups_where_the_neighbouring_cells_say(config):
    window = Window(0, 0, SIZE, SIZE)
    maps = {}
    for weight in (0.0, 0.5, 1.0):
        finaliser = _finaliser(config, smooth_weight=weight)
        probs = _probabilities(len(finaliser.classes))
        _, block, _ = finaliser(0, probs)
        maps[weight] = block[..., 0]
    land = finaliser.cube.land_mask_window(window).astype(bool)
    valid = finaliser.valid(window, land=land)
    target, _ = finaliser.targets(window, land=land)
    interpolated = finaliser.interpolated_targets(window)
    table = finaliser.groups.code_table()
    agreement, counts = {}, {}
    for weight, codes in maps.items():
        fractions, n = map_group_fractions(codes, finaliser.groups, factor=FACTOR, valid=valid)
        counts[weight] = np.rint(fractions * n)
        group = table[codes[valid]]
        agreement[weight] = interpolated[valid][np.arange(valid.sum()), group].mean()
    # every weight allocates the same whole-pixel counts, those of the targets
    np.testing.assert_array_equal(counts[0.5], counts[0.0])
    np.testing.assert_array_equal(counts[1.0], counts[0.0])
    assert np.abs(counts[0.0] / np.maximum(n, 1) - target).max() <= 1 / FACTOR ** 2
    assert not np.array_equal(maps[0.0], maps[1.0])
    # the blend puts a group's pixels where the interpolated targets are high
    assert agreement[1.0] > agreement[0.5] > agreement[0.0]
