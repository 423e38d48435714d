import json

import numpy as np
import pytest

from ai4land.errors import InputDataError
from ai4land.split import Split, farthest_point_sampling, make_split, plot_split


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
