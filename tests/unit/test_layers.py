"""The compiled per-pixel passes of a predict job against plain numpy."""

from __future__ import annotations

import numpy as np
import pytest

from ai4land.config import CoarseSource
from ai4land.encoding import quantise
from ai4land.predict.harmonize import _group_probabilities, class_groups
from ai4land.predict.layers import _x_log_x, map_layers, summarise

PREDICTED = [11, 22, 33, 44, 55, 66, 77]


def _probs(seed=0, shape=(20, 30)):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.full(7, 0.3), size=shape).astype("float32")
    probs[rng.random(probs.shape) < 0.2] = 0.0  # zeros (and exact ties) included
    return probs


def test_summarise_equals_argmax_group_sums_and_entropy():
    groups = class_groups(CoarseSource(historical="x").groups, PREDICTED)
    probs = _probs()
    best, group_p, entropy = summarise(probs, groups, PREDICTED)
    np.testing.assert_array_equal(best, probs.argmax(axis=-1))
    member = groups.membership(PREDICTED)
    # the very float32 sums harmonisation ranks pixels by
    np.testing.assert_array_equal(group_p.reshape(-1, len(groups)),
                                  _group_probabilities(probs.reshape(-1, 7), member))
    x = probs.astype("float64")
    with np.errstate(divide="ignore", invalid="ignore"):
        expected = -np.where(x > 0, x * np.log(x), 0.0).sum(axis=-1) / np.log(7)
    np.testing.assert_allclose(entropy, np.clip(expected, 0, 1), rtol=1e-6, atol=1e-7)
    _, _, certain = summarise(np.eye(7, dtype="float32")[None], groups, PREDICTED)
    assert (certain == 0).all()
    _, _, uniform = summarise(np.full((1, 1, 7), 1 / 7, "float32"), groups, PREDICTED)
    assert uniform[0, 0] == pytest.approx(1.0)


def test_summarise_skips_runs_without_valid_pixels():
    from ai4land.predict.layers import _ENTROPY_BLOCK

    groups = class_groups(CoarseSource(historical="x").groups, PREDICTED)
    probs = _probs(seed=5, shape=(40, 64))  # 10 runs of 256 pixels
    valid = np.zeros((40, 64), dtype=bool)
    valid[4:8] = True  # run 1 only
    valid[30, 5] = True  # one pixel of run 7
    full = summarise(probs, groups, PREDICTED)
    part = summarise(probs, groups, PREDICTED, valid=valid)
    runs = np.zeros(40 * 64, dtype=bool)
    for run in np.unique(np.flatnonzero(valid) // _ENTROPY_BLOCK):
        runs[run * _ENTROPY_BLOCK : (run + 1) * _ENTROPY_BLOCK] = True
    runs = runs.reshape(40, 64)
    for a, b in zip(full, part, strict=True):
        np.testing.assert_array_equal(b[runs], a[runs])  # every pixel of a needed run
        assert not b[~runs].any()
    with pytest.raises(ValueError, match="valid has shape"):
        summarise(probs, groups, PREDICTED, valid=valid[:5])


def test_x_log_x_matches_numpy_log_over_the_float32_range():
    rng = np.random.default_rng(2)
    x = np.concatenate([
        rng.random(100_000), 10.0 ** rng.uniform(-38, 0, 100_000),  # all exponents
        [1.0, 0.5, 2**-126, 1e-45, np.sqrt(0.5), np.sqrt(2), 1 - 2**-24, 3.0],
    ]).astype("float32")
    out = np.empty(x.size)
    _x_log_x(x, x.view("int32"), out)
    v = x.astype("float64")
    expected = v * np.log(v)
    normal = x >= 2.0**-126
    np.testing.assert_allclose(out[normal], expected[normal], rtol=1e-11)
    # subnormal floats (< 1.2e-38) get a rough logarithm: their terms are below 1e-35
    np.testing.assert_allclose(out[~normal], expected[~normal], rtol=0, atol=1e-35)
    skipped = np.array([0.0, -0.5, np.nan, -np.inf], dtype="float32")  # not > 0: no term
    out = np.ones(skipped.size)
    _x_log_x(skipped, skipped.view("int32"), out)
    assert (out == 0).all()


def test_map_layers_equal_the_numpy_layers():
    groups = class_groups(CoarseSource(historical="x").groups, PREDICTED)
    probs = _probs(1)
    rng = np.random.default_rng(1)
    land = rng.random(probs.shape[:2]) > 0.2
    valid = land & (rng.random(probs.shape[:2]) > 0.1)
    index = np.where(valid, rng.integers(0, 7, size=valid.shape), -1)
    _, _, entropy = summarise(probs, groups, PREDICTED)
    codes = np.asarray(PREDICTED, dtype="uint8")
    lulc, probability, quantised_entropy, counts = map_layers(
        probs, index, entropy=entropy, valid=valid, land=land, codes=codes, nodata=99,
        ocean=0)
    expected = np.where(valid, codes[np.maximum(index, 0)], 99)
    np.testing.assert_array_equal(lulc, np.where(land, expected, 0))
    chosen = np.take_along_axis(probs, np.maximum(index, 0)[..., None], axis=-1)[..., 0]
    np.testing.assert_array_equal(probability, quantise(np.where(valid, chosen, np.nan)))
    np.testing.assert_array_equal(quantised_entropy, quantise(np.where(valid, entropy, np.nan)))
    np.testing.assert_array_equal(counts, np.bincount(index[valid], minlength=7))
    with pytest.raises(ValueError, match="index has shape"):
        map_layers(probs, index[:1], entropy=entropy, valid=valid, land=land, codes=codes,
                   nodata=99, ocean=0)
