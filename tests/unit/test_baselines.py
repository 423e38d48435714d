"""Baselines: random allocation inside coarse cells, and gradient boosting on the U-Net's inputs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ai4land.config import CoarseGroup
from ai4land.evaluate.baselines import (
    GradientBoostingBaseline,
    gradient_boosting_sample,
    pixel_features,
    random_allocation,
)
from ai4land.evaluate.metrics import CohenKappa, ConfusionMatrix
from ai4land.grid import Window
from ai4land.harmonize import class_groups, largest_remainder_counts, map_group_fractions
from ai4land.io.cube import Cube
from ai4land.samples.features import build_inputs, codes_to_index
from ai4land.split import make_split

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
    cm = ConfusionMatrix(len(classes)).update(target, codes_to_index(codes, classes)).matrix
    assert CohenKappa().compute(cm) > 0.5
    assert ((confidence > 0) & (confidence <= 1)).all()
