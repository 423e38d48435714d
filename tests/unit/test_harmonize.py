"""Largest-remainder re-allocation inside coarse cells, and the delta-method target."""

from __future__ import annotations

import numpy as np
import pytest

from ai4land.config import CoarseSource
from ai4land.harmonize import (
    Groups,
    class_groups,
    conservation_error,
    delta_target,
    harmonize,
    largest_remainder_counts,
    luh_group_fractions,
    map_group_fractions,
)

PREDICTED = [11, 22, 33, 44, 55, 66, 77]


def _groups():
    return class_groups(CoarseSource(historical="x").groups, PREDICTED)


def _codes(result, predicted=PREDICTED, fill=99):
    return np.where(result.index >= 0, np.asarray(predicted)[np.maximum(result.index, 0)],
                    fill).astype("uint8")


def _greedy(probs, member, quota):
    """Reference: highest (pixel, group) score first while the group has room."""
    n, g = probs.shape[0], member.shape[1]
    scores = probs @ member
    pairs = sorted(((-scores[i, j], j, i) for i in range(n) for j in range(g)))
    left = list(quota)
    out = [-1] * n
    for _, j, i in pairs:
        if out[i] < 0 and left[j] > 0:
            out[i] = j
            left[j] -= 1
    return out


def test_largest_remainder_counts_hand_computed():
    fractions = np.array([0.5, 0.3, 0.2, 0.0])[:, None, None]
    assert largest_remainder_counts(fractions, np.array([[10]]))[:, 0, 0].tolist() == [5, 3, 2, 0]
    # 7 × (0.5, 0.3, 0.2) = 3.5, 2.1, 1.4 → floors 3, 2, 1 and the 7th pixel to 3.5
    assert largest_remainder_counts(fractions, np.array([[7]]))[:, 0, 0].tolist() == [4, 2, 1, 0]
    # Un-normalised fractions are renormalised; all-zero cells are unconstrained (-1).
    frac = np.array([[[1.0, 0.0]], [[1.0, 0.0]]])
    counts = largest_remainder_counts(frac, np.array([[3, 4]]))
    assert counts[:, 0, 0].sum() == 3 and (counts[:, 0, 1] == -1).all()


def test_exact_cell_with_a_two_class_group():
    # One 4x4 cell, 3 groups: A = {11}, B = {55, 66}, C = {22}.
    groups = Groups(("a", "b", "c"), ((11,), (55, 66), (22,)), (("x",), ("y",), ("z",)))
    predicted = [11, 55, 66, 22]
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(4), size=(4, 4)).astype("float32")
    valid = np.ones((4, 4), bool)
    targets = np.array([0.25, 0.5, 0.25])[:, None, None]  # 4, 8, 4 pixels: exact
    result = harmonize(probs, predicted, factor=4, valid=valid, targets=targets, groups=groups)
    codes = _codes(result, predicted)
    assert (codes == 11).sum() == 4 and (codes == 22).sum() == 4
    assert np.isin(codes, [55, 66]).sum() == 8
    # Inside group B each pixel takes the more probable of 55 and 66.
    b = np.isin(codes, [55, 66])
    better = np.where(probs[..., 1] >= probs[..., 2], 55, 66)
    np.testing.assert_array_equal(codes[b], better[b])
    # Same allocation as the plain greedy over (pixel, group) scores.
    member = groups.membership(predicted).astype("float32")
    ref = _greedy(probs.reshape(-1, 4), member, [4, 8, 4])
    got = [[0, 1, 1, 2][i] for i in result.index.reshape(-1)]
    assert got == ref
    err = conservation_error(codes, groups, factor=4, valid=valid, target=targets)
    assert err["max"] == pytest.approx(0.0)


def test_random_cells_match_targets_and_reduce_error():
    groups = _groups()
    rng = np.random.default_rng(0)
    h, w, f = 60, 45, 15  # 4 x 3 cells
    probs = rng.dirichlet(np.ones(7) * 0.5, size=(h, w)).astype("float32")
    valid = rng.random((h, w)) > 0.1
    valid[:15, :15] = False  # one cell with no land: unconstrained, untouched
    targets = np.moveaxis(rng.dirichlet(np.ones(len(groups)), size=(4, 3)), -1, 0)
    before_codes = np.where(valid, np.asarray(PREDICTED)[probs.argmax(-1)], 99).astype("uint8")
    result = harmonize(probs, PREDICTED, factor=f, valid=valid, targets=targets, groups=groups)
    codes = _codes(result)
    assert (codes[~valid] == 99).all() and (result.index[~valid] == -1).all()
    fractions, n = map_group_fractions(codes, groups, factor=f, valid=valid)
    counts = np.rint(fractions * n).astype(int)
    expected = result.counts
    land = n > 0
    np.testing.assert_array_equal(counts[:, land], expected[:, land])  # exact counts
    # Whole-pixel rounding: each group within 1 pixel of fraction × n.
    assert (np.abs(counts - targets * n)[:, land] < 1).all()
    before = conservation_error(before_codes, groups, factor=f, valid=valid, target=targets)
    after = conservation_error(codes, groups, factor=f, valid=valid, target=targets)
    assert after["mae"] <= before["mae"] and after["max"] <= before["max"]
    assert after["max"] < 1 / n[land].min()
    # Deterministic.
    again = harmonize(probs, PREDICTED, factor=f, valid=valid, targets=targets, groups=groups)
    np.testing.assert_array_equal(again.index, result.index)


def test_matches_reference_greedy_on_random_cell():
    groups = _groups()
    rng = np.random.default_rng(7)
    probs = rng.dirichlet(np.ones(7), size=(6, 6)).astype("float32")
    valid = np.ones((6, 6), bool)
    targets = np.moveaxis(rng.dirichlet(np.ones(len(groups)), size=(1, 1)), -1, 0)
    result = harmonize(probs, PREDICTED, factor=6, valid=valid, targets=targets, groups=groups)
    member = groups.membership(PREDICTED)
    ref = _greedy(probs.reshape(-1, 7), member.astype("float32"), result.counts[:, 0, 0])
    got = member.argmax(1)[result.index.reshape(-1)].tolist()
    assert got == ref



@pytest.mark.parametrize("tied", [False, True])
def test_matches_reference_greedy_in_every_cell_of_a_band(tied):
    """Many cells at once (the vectorised path), some pixels invalid, one cell free;
    with ``tied``, probabilities in steps of 1/4, so most scores tie and a cell's
    pixels must win ties in raster order."""
    groups = _groups()
    member = groups.membership(PREDICTED)
    rng = np.random.default_rng(3)
    f, h, w = 5, 15, 20
    probs = rng.dirichlet(np.full(7, 0.3), size=(h, w)).astype("float32")
    if tied:
        probs = (np.round(probs * 4) / 4).astype("float32")
    valid = rng.random((h, w)) > 0.2
    targets = np.moveaxis(rng.dirichlet(np.ones(len(groups)), size=(h // f, w // f)), -1, 0)
    targets[:, 1, 2] = 0  # unconstrained: keeps the argmax
    result = harmonize(probs, PREDICTED, factor=f, valid=valid, targets=targets, groups=groups)
    group_of = member.argmax(1)
    for r in range(h // f):
        for c in range(w // f):
            block = (slice(r * f, (r + 1) * f), slice(c * f, (c + 1) * f))
            ok = valid[block]
            got = group_of[result.index[block][ok]].tolist()
            if (r, c) == (1, 2):
                assert got == group_of[probs[block][ok].argmax(-1)].tolist()
                continue
            ref = _greedy(probs[block][ok], member.astype("float32"), result.counts[:, r, c])
            assert got == ref, (r, c)
    assert (result.index[~valid] == -1).all()

def test_unconstrained_cells_keep_argmax():
    groups = _groups()
    probs = np.random.default_rng(1).dirichlet(np.ones(7), size=(8, 8)).astype("float32")
    valid = np.ones((8, 8), bool)
    targets = np.zeros((len(groups), 1, 1))
    result = harmonize(probs, PREDICTED, factor=8, valid=valid, targets=targets, groups=groups)
    np.testing.assert_array_equal(result.index, probs.argmax(-1))
    assert result.changed == 0


def test_delta_target_arithmetic():
    anchor = np.array([0.5, 0.3, 0.2])[:, None, None]
    luh_anchor = np.array([0.4, 0.4, 0.2])[:, None, None]
    luh_t = np.array([0.3, 0.5, 0.2])[:, None, None]
    # 0.5 + (0.3 - 0.4) = 0.4; 0.3 + 0.1 = 0.4; 0.2 + 0 = 0.2
    np.testing.assert_allclose(delta_target(anchor, luh_t, luh_anchor)[:, 0, 0], [0.4, 0.4, 0.2])
    # LUH(t) = (-0.2, 1.0, 0.2) with no anchor offset: clipped to (0, 1, 0.2), / 1.2
    out = delta_target(np.array([0.1, 0.7, 0.2])[:, None, None],
                       np.array([0.1, 0.7, 0.2])[:, None, None] - [[[0.3]], [[-0.3]], [[0]]],
                       np.array([0.1, 0.7, 0.2])[:, None, None])
    np.testing.assert_allclose(out[:, 0, 0], [0.0, 1.0, 0.2] / np.array(1.2))
    # offset_weight 0 gives the LUH fractions; no anchor land gives no target.
    np.testing.assert_allclose(
        delta_target(anchor, luh_t, luh_anchor, offset_weight=0.0)[:, 0, 0], [0.3, 0.5, 0.2])
    assert (delta_target(np.zeros((3, 1, 1)), luh_t, luh_anchor) == 0).all()


def test_luh_group_fractions_sum_variables_and_renormalise():
    groups = _groups()
    names = ["primf", "primn", "secdf", "secdn", "urban", "c3ann", "c4ann", "c3per", "c4per",
             "c3nfx", "pastr", "range", "icwtr"]
    cells = np.zeros((len(names), 1, 2), dtype="float32")
    cells[names.index("primf"), 0, 0] = 0.2
    cells[names.index("secdf"), 0, 0] = 0.2
    cells[names.index("primn"), 0, 0] = 0.1
    cells[names.index("icwtr"), 0, 0] = 0.1  # sums to 0.6: the rest is ocean
    cells[:, 0, 1] = np.nan
    out = luh_group_fractions(cells, names, groups)
    forest, natural, water = (groups.names.index(n) for n in ("forest", "natural_nonforest", "water"))
    assert out[forest, 0, 0] == pytest.approx(4 / 6)
    assert out[natural, 0, 0] == pytest.approx(1 / 6)
    assert out[water, 0, 0] == pytest.approx(1 / 6)
    assert (out[:, 0, 1] == 0).all()


def test_offset_weight_decays_linearly_to_zero():
    from ai4land.harmonize import offset_weight

    assert offset_weight(2050, 2019, decay_years=None) == 1.0
    assert offset_weight(2019, 2019, decay_years=10) == 1.0
    assert offset_weight(2024, 2019, decay_years=10) == 0.5
    assert offset_weight(1955, 1960, decay_years=10) == 0.5  # backward chains too
    assert offset_weight(2100, 2019, decay_years=10) == 0.0


def test_deferred_acceptance_equals_the_greedy_with_ties_and_full_groups():
    """Many equal scores (saturated or coarse probabilities), quotas of 0, one pixel
    per cell: the compiled matching still equals the greedy over (pixel, group) pairs
    ranked by score, then group, then pixel."""
    from ai4land.harmonize import _deferred_acceptance

    rng = np.random.default_rng(5)
    for trial in range(200):
        n_groups = int(rng.integers(1, 6))
        n_cells, per_cell = int(rng.integers(1, 5)), int(rng.integers(1, 25))
        cell = np.repeat(np.arange(n_cells), per_cell)
        scores = (rng.integers(0, 3, size=(cell.size, n_groups)) / 2).astype("float32")
        if trial % 4 == 0:
            scores = rng.random((cell.size, n_groups)).astype("float32")
        quota = np.stack([rng.multinomial(per_cell, rng.dirichlet(np.ones(n_groups)))
                          for _ in range(n_cells)])
        held, _ = _deferred_acceptance(scores, cell, quota)
        for c in range(n_cells):
            mine = cell == c
            ref = _greedy(scores[mine], np.eye(n_groups, dtype="float32"), quota[c])
            assert held[mine].tolist() == ref, trial


def test_deferred_acceptance_refuses_quotas_that_do_not_sum_to_the_pixels():
    from ai4land.harmonize import _deferred_acceptance

    scores = np.ones((3, 2), dtype="float32")
    with pytest.raises(RuntimeError, match="failed to place"):
        _deferred_acceptance(scores, np.zeros(3, dtype="int64"), np.array([[1, 1]]))

