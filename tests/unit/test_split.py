import json

import numpy as np
import pytest

from ai4land.errors import InputDataError
from ai4land.samples.split import (
    Split,
    block_composition,
    farthest_point_sampling,
    make_split,
    plot_split,
    stratified_sampling,
)


def _split(seed=42, buffer=1):
    land = np.ones((600, 600), dtype=bool)
    land[:120, :200] = False
    return make_split(land, block_size=50, n_test=4, n_val=3, buffer=buffer,
                      train_years=(1960, 2000), test_years=(2001, 2015), seed=seed)


def test_split_is_deterministic_and_roundtrips():
    a, b = _split(), _split()
    assert a == b
    assert Split.from_json(json.loads(json.dumps(a.to_json()))) == a
    assert _split(seed=1) != a


def test_roles_counts_and_buffer_separates_test_from_train():
    split = _split()
    roles = [b.role for b in split.blocks]
    assert roles.count("test") == 4 and roles.count("val") == 3
    by_position = {(b.row, b.col): b.role for b in split.blocks}
    for block in split.blocks:
        if block.role != "test":
            continue
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                neighbour = by_position.get((block.row + dr, block.col + dc))
                assert neighbour != "train", "a training block touches a test block"
    train, test = split.role_mask("train"), split.role_mask("test")
    assert not (train & test).any()
    assert test.sum() == 4 * 50 * 50


def test_farthest_point_sampling_spreads_points():
    points = np.array([[0, 0], [0, 1], [10, 10], [0, 2], [10, 0]], dtype=float)
    chosen = farthest_point_sampling(points, 3, rng=np.random.default_rng(0))
    assert len(set(chosen)) == 3
    picked = points[chosen]
    distances = [np.hypot(*(p - q)) for i, p in enumerate(picked) for q in picked[i + 1 :]]
    assert min(distances) >= 10
    with pytest.raises(InputDataError):
        farthest_point_sampling(points, 6, rng=np.random.default_rng(0))


def test_split_refuses_when_no_training_block_remains():
    with pytest.raises(InputDataError, match="no training block"):
        make_split(np.ones((100, 100), bool), block_size=50, n_test=4, n_val=0, buffer=0,
                   train_years=(1, 2), test_years=(3, 4), seed=0)


def test_split_figure(tmp_path):
    path = tmp_path / "split.png"
    plot_split(_split(), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _landscape():
    """12 x 12 blocks of 50 px: forest, pasture in the west, cropland only in the centre
    (no cropland within 4 blocks of an edge), coastal strips with little land."""
    codes = np.full((600, 600), 44, dtype="uint8")
    codes[:, :200] = 33
    codes[250:350, 250:350] = 22
    land = np.ones((600, 600), dtype=bool)
    land[:, 590:] = False  # the eastern blocks hold 80 % land
    land[560:, :] = False  # the southern blocks hold 20 % land
    return codes, land


def test_stratified_test_blocks_hold_every_landscape_and_are_mostly_land():
    codes, land = _landscape()
    classes = [11, 22, 33, 44]
    composition = block_composition(codes, land, block_size=50, classes=classes)
    assert composition.shape == (12, 12, 4)
    assert composition[5, 5].tolist() == [0, 2500, 0, 0]
    for seed in range(10):
        split = make_split(land, block_size=50, n_test=4, n_val=2, buffer=1,
                           train_years=(1960, 2000), test_years=(2001, 2015), seed=seed,
                           composition=composition, classes=classes, reference_year=2000)
        test = [b for b in split.blocks if b.role == "test"]
        assert len(test) == 4
        assert {b.dominant_class for b in test} == {22, 33, 44}, seed
        assert all(b.land_fraction >= 0.5 for b in test)
    # unstratified, the central cropland is mostly missed
    crop = composition[..., 1] >= 1250
    unstratified = [make_split(land, block_size=50, n_test=4, n_val=2, buffer=1,
                               train_years=(1960, 2000), test_years=(2001, 2015), seed=seed)
                    for seed in range(10)]
    assert all(b.dominant_class is None for s in unstratified for b in s.blocks)
    with_crop = [any(crop[b.row, b.col] for b in s.blocks if b.role == "test")
                 for s in unstratified]
    assert sum(with_crop) < 5


def test_stratified_sampling_quota_and_spread():
    points = np.argwhere(np.ones((12, 12))).astype(float)
    strata = np.where(points[:, 1] < 3, 1, 0)  # stratum 1: 36 points, stratum 0: 108
    strata[0] = 2  # a stratum of one point
    for seed in range(5):
        chosen = stratified_sampling(points, strata, 6, rng=np.random.default_rng(seed))
        assert len(set(chosen)) == 6
        # one each, then the 3 left in proportion to 107 : 36 -> 2 : 1
        assert np.bincount(strata[chosen], minlength=3).tolist() == [3, 2, 1]
    # fewer picks than strata: the largest strata first
    chosen = stratified_sampling(points, strata, 2, rng=np.random.default_rng(0))
    assert sorted(strata[chosen].tolist()) == [0, 1]
    # far from the map's edges unlike farthest point sampling (which takes corners)
    edge = (points == 0) | (points == 11)
    on_edge = [edge[stratified_sampling(points, np.zeros(144), 4,
                                        rng=np.random.default_rng(s))].any(1).mean()
               for s in range(50)]
    fps = [edge[farthest_point_sampling(points, 4, rng=np.random.default_rng(s))].any(1).mean()
           for s in range(50)]
    assert np.mean(on_edge) < 0.5 < np.mean(fps)
    with pytest.raises(InputDataError, match="cannot pick"):
        stratified_sampling(points, strata, 145, rng=np.random.default_rng(0))


def test_too_few_land_blocks_for_the_test_set():
    land = np.zeros((100, 100), dtype=bool)
    land[:, :20] = True
    with pytest.raises(InputDataError, match="min_test_land_fraction"):
        make_split(land, block_size=50, n_test=1, n_val=0, buffer=0,
                   train_years=(1, 2), test_years=(3, 4), seed=0)


def test_split_files_without_strata_still_load():
    data = _split().to_json()
    data.pop("reference_year")
    for block in data["blocks"]:
        block.pop("dominant_class")
    old = Split.from_json(data)
    assert old.reference_year is None and old.blocks[0].dominant_class is None
    assert old.windows("test") == _split().windows("test")
