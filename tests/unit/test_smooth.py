"""Smooth coarse channels (ai4land.samples.smooth): group fractions interpolated
bilinearly between cell centres, the same in prediction's and training's paths."""

import numpy as np
import pytest
import torch

from ai4land.predict.harmonize import Groups
from ai4land.samples.smooth import (
    group_matrix,
    knots_torch,
    offsets,
    smooth_groups,
    smooth_groups_of,
    window_channels,
)

# two groups with coarse variables (a = x, b = y + z) and one without
GROUPS = Groups(("a", "b", "other"), ((11,), (22, 33), (44,)), (("x",), ("y", "z"), ()))
NAMES = ["x", "y", "z"]


def _cells(a: np.ndarray) -> np.ndarray:
    """(3, h, w) coarse values with group a's fraction ``a`` (b the rest, split in y, z)."""
    return np.stack([a, (1 - a) / 2, (1 - a) / 2]).astype("float32")


def test_groups_with_variables_get_a_channel():
    assert smooth_groups(GROUPS) == ["a", "b"]
    assert smooth_groups_of(["coarse:x", "smooth:a", "smooth:b", "static:e"]) == ["a", "b"]
    np.testing.assert_array_equal(group_matrix(GROUPS, NAMES, ["a", "b"]),
                                  [[1, 0, 0], [0, 1, 1]])


def test_a_ramp_across_cells_is_interpolated_linearly_and_flat_past_the_edge():
    # 2 x 4 cells of 4 x 4 pixels; a's fraction rises by 0.2 per cell column. Between
    # cell centres the channel is the straight line through them; past the first and
    # last centres (the grid's edge: the edge cell repeats) it stays at its value.
    factor = 4
    a = np.tile(0.1 + 0.2 * np.arange(4), (2, 1))
    out = window_channels(_cells(a), channel_names=NAMES, groups=GROUPS, names=["a", "b"],
                          factor=factor, first_cell=(0, 0), row=0, col=0, height=8, width=16)
    centre = (np.arange(16) + 0.5) / factor - 0.5  # pixel column in cell units
    expected = np.clip(0.1 + 0.2 * centre, 0.1, 0.7)
    np.testing.assert_allclose(out[0], np.tile(expected, (8, 1)), atol=1e-6)
    np.testing.assert_allclose(out[0] + out[1], 1.0, atol=1e-6)


def test_an_ocean_neighbour_takes_the_cells_own_value():
    # cell (0, 1) has no coarse data: the channel of cell (0, 0) stays flat towards it
    a = np.array([[0.2, np.nan], [0.6, 0.6]])
    cells = _cells(a)
    cells[:, 0, 1] = np.nan
    out = window_channels(cells, channel_names=NAMES, groups=GROUPS, names=["a"], factor=2,
                          first_cell=(0, 0), row=0, col=0, height=4, width=4)
    # pixel (0, 1): a quarter cell right of and above the cell centre; the ocean to the
    # right counts as 0.2, the grid edge above too: 0.2
    assert out[0, 0, 1] == pytest.approx(0.2)
    # pixel (1, 0): a quarter cell below the centre: 0.75 * 0.2 + 0.25 * 0.6
    assert out[0, 1, 0] == pytest.approx(0.3)


def test_a_window_sees_the_same_channels_as_the_whole_grid():
    rng = np.random.default_rng(0)
    a = rng.random((5, 6))
    factor = 5
    whole = window_channels(_cells(a), channel_names=NAMES, groups=GROUPS, names=["a", "b"],
                            factor=factor, first_cell=(0, 0), row=0, col=0, height=25,
                            width=30)
    # a window from pixel (7, 12), 11 x 9: its cells 1..3 x 2..4 and their ring 0..4 x 1..5
    block = _cells(a)[:, 0:5, 1:6]
    part = window_channels(block, channel_names=NAMES, groups=GROUPS, names=["a", "b"],
                           factor=factor, first_cell=(0, 1), row=7, col=12, height=11, width=9)
    np.testing.assert_allclose(part, whole[:, 7:18, 12:21], atol=1e-6)


def test_the_torch_knots_equal_the_numpy_path():
    rng = np.random.default_rng(1)
    a = rng.random((4, 5))
    cells = _cells(a)
    cells[:, 1, 2] = np.nan
    ring = np.pad(cells, ((0, 0), (1, 1), (1, 1)), mode="edge")  # as ring_window fills it
    matrix = torch.as_tensor(group_matrix(GROUPS, NAMES, ["a", "b"]))
    knot = knots_torch(torch.as_tensor(ring)[None], matrix)[0].numpy()
    from ai4land.samples.smooth import _fractions, fraction_knots

    expected = fraction_knots(_fractions(cells, NAMES, GROUPS, ["a", "b"]),
                              inner=(slice(0, 4), slice(0, 5)))
    np.testing.assert_allclose(knot, expected, atol=1e-6)
    rows, u = offsets(3, 6, 4)
    np.testing.assert_array_equal(rows, [0, 1, 1, 1, 1, 2])
    np.testing.assert_allclose(u, [0.375, -0.375, -0.125, 0.125, 0.375, -0.375])
