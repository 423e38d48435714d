"""Baselines: random allocation inside coarse cells, and gradient boosting on the U-Net's inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from ai4land.config import CoarseGroup
from ai4land.evaluate.baselines import (
    TIE,
    GradientBoostingBaseline,
    class_density,
    density_scores,
    gradient_boosting_sample,
    pixel_features,
    random_allocation,
    random_change_scores,
    smooth_scores,
)
from ai4land.evaluate.metrics import CohenKappa, confusion_matrix
from ai4land.grid import Window
from ai4land.io.cube import Cube
from ai4land.predict.harmonize import (
    class_groups,
    harmonize,
    largest_remainder_counts,
    map_group_fractions,
)
from ai4land.samples.features import build_inputs, codes_to_index
from ai4land.samples.smooth import interpolate_fractions
from ai4land.samples.split import make_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from tiny_cube import tiny_config, write_tiny_cube  # noqa: E402

GROUPS = class_groups({"crop": CoarseGroup(variables=["a"], classes=[22]),
                       "forest": CoarseGroup(variables=["b"], classes=[44]),
                       "natural": CoarseGroup(variables=["c"], classes=[55, 66])}, [22, 44, 55, 66])


def test_random_allocation_counts_are_exact_per_cell():
    rng = np.random.default_rng(1)
    fractions = rng.random((3, 3, 4))
    fractions[:, 2, 3] = 0.0  # a cell without coarse data
    fractions /= np.maximum(fractions.sum(0), 1e-12)
    valid = rng.random((15, 20)) > 0.2
    codes = random_allocation(fractions, groups=GROUPS, factor=5, valid=valid, rng=rng)
    got, n = map_group_fractions(codes, GROUPS, factor=5, valid=valid)
    expected = largest_remainder_counts(fractions, n)
    constrained = expected[0] >= 0
    np.testing.assert_array_equal(np.rint(got * n)[:, constrained], expected[:, constrained])
    assert (codes[~valid] == 0).all()
    assert (codes[10:, 15:] == 0).all()  # the cell without data stays unallocated
    # both classes of the natural group occur; the same seed gives the same map
    assert {55, 66} <= set(np.unique(codes))
    np.testing.assert_array_equal(
        random_allocation(fractions, groups=GROUPS, factor=5, valid=valid,
                          rng=np.random.default_rng(7)),
        random_allocation(fractions, groups=GROUPS, factor=5, valid=valid,
                          rng=np.random.default_rng(7)))


def test_gradient_boosting_beats_chance_on_a_tiny_cube(tmp_path):
    years = range(1960, 1966)
    write_tiny_cube(tmp_path / "cube", size=64, factor=8, years=years)
    config = tiny_config(tmp_path / "cube", years=years)
    cube = Cube.from_config(config)
    classes = list(config.classes.predicted)
    whole = Window(0, 0, 64, 64)
    split = make_split(cube.land_mask_window(whole), block_size=16, n_test=2, n_val=1, buffer=0,
                       train_years=(1960, 1963), test_years=(1964, 1965), seed=0)
    features, labels = gradient_boosting_sample(cube, split=split, classes=classes,
                                                max_samples=3000, max_years=2,
                                                rng=np.random.default_rng(0))
    assert len(features) == len(labels) <= 3000 and features.shape[1] == len(
        build_inputs(cube, scenario="historical", year=1964, window=whole, predicted=classes,
                     prior=None, direction=1))
    model = GradientBoostingBaseline(classes=classes, max_iter=10, seed=0).fit(features, labels)
    test = split.role_mask("test") & cube.land_mask_window(whole)
    inputs = build_inputs(cube, scenario="historical", year=1965, window=whole, predicted=classes,
                          prior=cube.target_window(1964, whole), direction=1)
    codes, confidence = model.predict(pixel_features(inputs, test))
    target = codes_to_index(cube.target_window(1965, whole), classes)[test]
    cm = confusion_matrix(target, codes_to_index(codes, classes), n_classes=len(classes))
    assert CohenKappa().compute(cm) > 0.5
    assert ((confidence > 0) & (confidence <= 1)).all()
    # the probabilities over every class (for harmonisation): rows sum to 1, their argmax
    # is the predicted class
    probs = model.probabilities(pixel_features(inputs, test))
    assert probs.shape == (int(test.sum()), len(classes))
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(classes)[probs.argmax(axis=1)], codes)


def _minimal_changes(before: np.ndarray, after: np.ndarray, factor: int) -> int:
    """The fewest pixel changes giving each cell its new group counts."""
    _, n = map_group_fractions(before, GROUPS, factor=factor, valid=np.ones(before.shape, bool))
    a, _ = map_group_fractions(before, GROUPS, factor=factor, valid=np.ones(before.shape, bool))
    b, _ = map_group_fractions(after, GROUPS, factor=factor, valid=np.ones(before.shape, bool))
    return int(np.rint(np.abs(a - b) * n).sum()) // 2


def _allocate(scores: np.ndarray, targets: np.ndarray, factor: int) -> np.ndarray:
    result = harmonize(scores, CLASSES, factor=factor, valid=np.ones(scores.shape[:2], bool),
                       targets=targets, groups=GROUPS)
    return np.asarray(CLASSES, dtype="uint8")[result.index]


CLASSES = [22, 44, 55, 66]


def test_random_change_allocates_exactly_the_net_change_at_random():
    rng = np.random.default_rng(3)
    previous = rng.choice(np.array(CLASSES, dtype="uint8"), size=(12, 12))
    targets = rng.dirichlet(np.ones(3), size=(3, 3)).transpose(2, 0, 1)  # (G, 3, 3)
    maps = [_allocate(random_change_scores(codes_to_index(previous, CLASSES), 4,
                                           rng=np.random.default_rng(seed)), targets, 4)
            for seed in (0, 1)]
    for codes in maps:
        got, n = map_group_fractions(codes, GROUPS, factor=4, valid=np.ones((12, 12), bool))
        # exact conservation: every cell holds the target's whole-pixel counts
        np.testing.assert_array_equal(np.rint(got * n), largest_remainder_counts(targets, n))
        # persistence: no pixel changes beyond the net change of its cell, and a pixel
        # staying in its group keeps its class
        assert int((codes != previous).sum()) == _minimal_changes(previous, codes, 4)
        same_group = GROUPS.code_table()[codes] == GROUPS.code_table()[previous]
        assert (codes[same_group] == previous[same_group]).all()
    assert (maps[0] != maps[1]).any()  # the changing pixels are drawn at random


def test_density_allocation_converts_the_pixels_nearest_the_new_class():
    # one cell of 5 x 5: forest (44) on the left two columns, crop (22) elsewhere; the
    # target asks for 3 more forest pixels, so the crop pixels with the most forest
    # around them convert: those of the column next to the forest
    previous = np.full((5, 5), 22, dtype="uint8")
    previous[:, :2] = 44
    targets = np.zeros((3, 1, 1))
    targets[0], targets[1] = 12 / 25, 13 / 25
    scores = density_scores(codes_to_index(previous, CLASSES), 4, kernel=3,
                            rng=np.random.default_rng(0))
    codes = _allocate(scores, targets, 5)
    converted = np.argwhere(codes != previous)
    assert len(converted) == 3 and (converted[:, 1] == 2).all()
    assert ((codes == 44).sum(), (codes == 22).sum()) == (13, 12)
    # the class density itself, hand-counted at the corner (4 known pixels, 2 of them forest)
    density = class_density(codes_to_index(previous, CLASSES), 4, kernel=3)
    assert density[0, 1].tolist() == pytest.approx([1 / 3, 2 / 3, 0, 0])
    assert density[0, 0].tolist() == pytest.approx([0, 1, 0, 0])
    assert density[2, 2].tolist() == pytest.approx([2 / 3, 1 / 3, 0, 0])


def test_smooth_scores_interpolate_the_cell_fractions_bilinearly():
    fractions = np.array([[[0.0, 1.0]], [[1.0, 0.0]]])  # (G=2, 1 row, 2 cells)
    def bilinear_cells(fractions, *, factor, window, first_cell):
        return np.moveaxis(interpolate_fractions(
            fractions, factor=factor, first_cell=first_cell, row=window.row, col=window.col,
            height=window.height, width=window.width), 0, -1)

    values = bilinear_cells(fractions, factor=2, window=Window(0, 0, 2, 4), first_cell=(0, 0))
    # pixel centres at cell coordinates -0.25, 0.25, 0.75, 1.25: clamped at the ends
    np.testing.assert_allclose(values[0, :, 0], [0, 0.25, 0.75, 1])
    np.testing.assert_allclose(values[..., 0] + values[..., 1], 1)
    # a window that starts inside the cells, and cells that start one cell to the left
    inner = bilinear_cells(fractions, factor=2, window=Window(0, 1, 1, 2), first_cell=(0, 0))
    np.testing.assert_allclose(inner[0, :, 0], [0.25, 0.75])
    shifted = bilinear_cells(fractions, factor=2, window=Window(0, 3, 1, 2), first_cell=(0, 1))
    np.testing.assert_allclose(shifted[0, :, 0], [0.25, 0.75])
    groups = class_groups({"crop": CoarseGroup(variables=["a"], classes=[22]),
                           "natural": CoarseGroup(variables=["c"], classes=[55, 66])},
                          [22, 55, 66])
    previous = np.array([[0, 2]])
    scores = smooth_scores(np.array([[[0.2, 0.8], [0.6, 0.4]]]), previous, groups=groups,
                           classes=[22, 55, 66])
    # a group's value shared by its classes; the previous class breaks the tie
    np.testing.assert_allclose(scores[0, 0], [0.2 * (1 - TIE) + TIE, 0.4 * (1 - TIE),
                                              0.4 * (1 - TIE)])
    assert scores[0, 1, 2] > scores[0, 1, 1]
