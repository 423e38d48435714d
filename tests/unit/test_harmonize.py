"""Largest-remainder re-allocation inside coarse cells, and the delta-method target."""

from __future__ import annotations

import numpy as np
import pytest

from ai4land.config import CoarseSource
from ai4land.predict.harmonize import (
    Groups,
    cell_ids,
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
    pairs = sorted((-scores[i, j], j, i) for i in range(n) for j in range(g))
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
    forest, natural, water = (
        groups.names.index(n) for n in ("forest", "natural_nonforest", "water")
    )
    assert out[forest, 0, 0] == pytest.approx(4 / 6)
    assert out[natural, 0, 0] == pytest.approx(1 / 6)
    assert out[water, 0, 0] == pytest.approx(1 / 6)
    assert (out[:, 0, 1] == 0).all()


def test_offset_weight_decays_linearly_to_zero():
    from ai4land.predict.harmonize import offset_weight

    assert offset_weight(2050, 2019, decay_years=None) == 1.0
    assert offset_weight(2019, 2019, decay_years=10) == 1.0
    assert offset_weight(2024, 2019, decay_years=10) == 0.5
    assert offset_weight(1955, 1960, decay_years=10) == 0.5  # backward chains too
    assert offset_weight(2100, 2019, decay_years=10) == 0.0


def test_deferred_acceptance_equals_the_greedy_with_ties_and_full_groups():
    """Many equal scores (saturated or coarse probabilities), quotas of 0, one pixel
    per cell: the compiled matching still equals the greedy over (pixel, group) pairs
    ranked by score, then group, then pixel."""
    from ai4land.predict.harmonize import _deferred_acceptance

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
    from ai4land.predict.harmonize import _deferred_acceptance

    scores = np.ones((3, 2), dtype="float32")
    with pytest.raises(RuntimeError, match="failed to place"):
        _deferred_acceptance(scores, np.zeros(3, dtype="int64"), np.array([[1, 1]]))



# --- allocation of the net change only (predict.allocation: change) ----------------

CHANGE_GROUPS = Groups(("a", "b", "c"), ((11,), (55, 66), (22,)), (("x",), ("y",), ("z",)))
CHANGE_PREDICTED = [11, 55, 66, 22]  # indices 0, 1, 2, 3


def _allocate(probs, prior, targets, *, factor, margin=1.0, valid=None):
    from ai4land.predict.harmonize import allocate_change

    valid = np.ones(prior.shape, bool) if valid is None else valid
    return allocate_change(probs, CHANGE_PREDICTED, factor=factor, valid=valid,
                           targets=np.asarray(targets, dtype="float64"), groups=CHANGE_GROUPS,
                           prior=prior, margin=margin)


def test_change_converts_exactly_the_net_change_with_the_most_likely_pixels():
    # Two 3x3 cells side by side, all class 11 (index 0) in the prior. Cell 0 must move
    # 3 of its 9 pixels to group c (22); cell 1 keeps its group counts.
    prior = np.zeros((3, 6), dtype="int64")
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(3, 6)).astype("float32")
    probs[:, 3:, 3] = 0.9  # the model would turn cell 1 into 22 everywhere
    probs[:, 3:, 0] = 0.05
    targets = np.zeros((3, 1, 2))
    targets[:, 0, 0] = [6 / 9, 0, 3 / 9]
    targets[:, 0, 1] = [1, 0, 0]
    result = _allocate(probs, prior, targets, factor=3)
    moved = result.index != prior
    assert moved[:, :3].sum() == 3 and (result.index[moved] == 3).all()
    assert not moved[:, 3:].any()  # no net change: every pixel kept
    # the converting pixels are those of the highest p(22) - p(11)
    score = (probs[..., 3] - probs[..., 0])[:, :3].reshape(-1)
    assert set(np.flatnonzero(moved[:, :3].reshape(-1))) == set(np.argsort(-score)[:3])


def test_change_keeps_the_group_proportions_and_every_class_of_the_prior():
    # One 3x3 cell: 6 pixels of 55, 2 of 66, 1 of 11. Group b shrinks from 8 to 4
    # pixels (11 gains 4): 55 and 66 keep their 3:1 proportions although the model
    # prefers 55 everywhere; then b shrinks to 2: 66 keeps a pixel (no coarse evidence
    # that it vanishes).
    prior = np.array([[1, 1, 1], [1, 1, 1], [2, 2, 0]], dtype="int64")
    probs = np.full((3, 3, 4), 0.1, dtype="float32")
    probs[..., 1] = 0.7
    for kept_b, (n55, n66) in ((4, (3, 1)), (2, (1, 1))):
        targets = np.array([(9 - kept_b) / 9, kept_b / 9, 0])[:, None, None]
        index = _allocate(probs, prior, targets, factor=3).index
        assert ((index == 1).sum(), (index == 2).sum()) == (n55, n66)
        assert (index == 0).sum() == 9 - kept_b
        assert index[2, 2] == 0  # the pixel of the gaining class stays
        unchanged = index == prior
        assert unchanged.sum() == 9 - (8 - kept_b)  # only the net change moves


def test_change_fills_a_group_new_to_the_cell_by_the_model_and_places_unknown_pixels():
    # Prior: 8 pixels of 11 and one pixel without a predicted class (-1). Target: 6 of
    # a, 3 of b (new in the cell): the unknown pixel and the two 11 pixels most likely b
    # go to b, taking the class the model finds likelier in the cell (66).
    prior = np.zeros((3, 3), dtype="int64")
    prior[0, 0] = -1
    probs = np.full((3, 3, 4), 0.05, dtype="float32")
    probs[..., 0] = 0.6
    probs[..., 2] = 0.3
    probs[1, 1, 2], probs[1, 1, 0] = 0.8, 0.1
    probs[2, 2, 2], probs[2, 2, 0] = 0.7, 0.2
    targets = np.array([6 / 9, 3 / 9, 0])[:, None, None]
    index = _allocate(probs, prior, targets, factor=3).index
    assert set(zip(*np.nonzero(index == 2), strict=True)) == {(0, 0), (1, 1), (2, 2)}
    assert (index == 0).sum() == 6


def test_change_swaps_only_beyond_the_margin():
    # One 2x2 cell with no net change: pixel (0, 0) of 11 is sure to be 22, pixel
    # (1, 1) of 22 sure to be 11, pixel (0, 1) of 11 only leans to 22.
    prior = np.array([[0, 0], [3, 3]], dtype="int64")
    probs = np.full((2, 2, 4), 0.02, dtype="float32")
    probs[0, 0, 3], probs[0, 0, 0] = 0.9, 0.06
    probs[1, 1, 0], probs[1, 1, 3] = 0.9, 0.06
    probs[0, 1, 3], probs[0, 1, 0] = 0.5, 0.46
    probs[1, 0, 3], probs[1, 0, 0] = 0.9, 0.06
    targets = np.array([0.5, 0, 0.5])[:, None, None]
    assert (_allocate(probs, prior, targets, factor=2, margin=1.0).index == prior).all()
    swapped = _allocate(probs, prior, targets, factor=2, margin=0.5).index
    np.testing.assert_array_equal(swapped, [[3, 0], [3, 0]])


@pytest.mark.parametrize("bonus", [(0.0, 0.0), (0.5, 0.0), (0.5, 1.0)])
@pytest.mark.parametrize("seed", range(4))
def test_change_is_exact_and_minimal_on_random_cells(seed, bonus):
    from ai4land.predict.harmonize import allocate_change

    rng = np.random.default_rng(seed)
    groups = _groups()
    shape, factor = (23, 29), 5  # partial edge cells
    probs = rng.dirichlet(np.ones(7), size=shape).astype("float32")
    prior = rng.integers(0, 7, size=shape)
    prior[rng.random(shape) < 0.05] = -1
    valid = rng.random(shape) > 0.1
    hc, wc = 5, 6
    targets = rng.dirichlet(np.ones(len(groups)), size=(hc, wc)).transpose(2, 0, 1)
    targets[:, 0, 0] = 0  # an unconstrained cell keeps the prior
    result = allocate_change(probs, PREDICTED, factor=factor, valid=valid, targets=targets,
                             groups=groups, prior=prior, margin=1.0, patch_bonus=bonus[0],
                             changed_bonus=bonus[1])
    codes = _codes(result)
    assert (result.index[~valid] == -1).all()
    fractions, n = map_group_fractions(codes, groups, factor=factor, valid=valid)
    counts = largest_remainder_counts(targets, n)
    constrained = counts[0] >= 0
    np.testing.assert_array_equal(np.rint(fractions * n)[:, constrained],
                                  counts[:, constrained])
    corner = (slice(0, factor), slice(0, factor))
    known = valid[corner] & (prior[corner] >= 0)
    np.testing.assert_array_equal(result.index[corner][known], prior[corner][known])
    # minimal: per cell, the pixels moved are the classes' net gains (unknown included)
    ids, _ = cell_ids(shape, factor)
    for cell in np.unique(ids[valid]):
        inside = valid & (ids == cell)
        if not constrained.reshape(-1)[cell]:
            continue
        before = np.bincount(prior[inside & (prior >= 0)], minlength=7)
        after = np.bincount(result.index[inside], minlength=7)
        gains = np.maximum(after - before, 0).sum()
        assert (result.index[inside] != prior[inside]).sum() == gains
    again = allocate_change(probs, PREDICTED, factor=factor, valid=valid, targets=targets,
                            groups=groups, prior=prior, margin=1.0, patch_bonus=bonus[0],
                            changed_bonus=bonus[1])
    np.testing.assert_array_equal(again.index, result.index)
    # a band of whole cell rows (or columns) alone allocates its pixels the same way
    for band, cells in (((slice(10, 23), slice(None)), (slice(2, 5), slice(None))),
                        ((slice(None), slice(0, 15)), (slice(None), slice(0, 3)))):
        part = allocate_change(probs[band], PREDICTED, factor=factor, valid=valid[band],
                               targets=targets[(slice(None), *cells)], groups=groups,
                               prior=prior[band], margin=1.0, patch_bonus=bonus[0],
                               changed_bonus=bonus[1])
        np.testing.assert_array_equal(part.index, result.index[band])


def test_change_smoothing_prefers_a_patch_to_a_lone_pixel():
    # One 4x4 cell of class 11; 2 pixels must become 22. A lone pixel is the single most
    # likely one, two neighbours of a patch of evidence come next: plain scores take the
    # lone pixel, smoothed ones the patch.
    prior = np.zeros((4, 4), dtype="int64")
    probs = np.full((4, 4, 4), 0.01, dtype="float32")
    probs[..., 0] = 0.97
    probs[0, 0, 3], probs[0, 0, 0] = 0.6, 0.38
    for pixel, p in (((2, 2), 0.5), ((2, 3), 0.5), ((3, 2), 0.4), ((3, 3), 0.4)):
        probs[(*pixel, 3)], probs[(*pixel, 0)] = p, 0.98 - p
    targets = np.array([14 / 16, 0, 2 / 16])[:, None, None]
    from ai4land.predict.harmonize import allocate_change

    def moved(smoothing):
        index = allocate_change(probs, CHANGE_PREDICTED, factor=4, valid=np.ones((4, 4), bool),
                                targets=targets, groups=CHANGE_GROUPS, prior=prior, margin=1.0,
                                smoothing=smoothing).index
        return set(zip(*np.nonzero(index == 3), strict=True))

    assert (0, 0) in moved(1)
    assert moved(3) <= {(2, 2), (2, 3), (3, 2), (3, 3)} and len(moved(3)) == 2


def _patch_moved(probs, prior, n_new, bonus):
    from ai4land.predict.harmonize import allocate_change

    size = prior.shape[0]
    targets = np.array([(size * size - n_new) / size**2, 0, n_new / size**2])[:, None, None]
    index = allocate_change(probs, CHANGE_PREDICTED, factor=size, valid=np.ones(prior.shape, bool),
                            targets=targets, groups=CHANGE_GROUPS, prior=prior, margin=1.0,
                            patch_bonus=bonus).index
    return set(zip(*np.nonzero((index == 3) & (prior != 3)), strict=True))


def test_patch_bonus_grows_an_existing_patch():
    # One 4x4 cell of 11 with one pixel of 22 at (0, 0); 3 more pixels must become 22.
    # Every pixel scores the same but (3, 3), 0.05 ahead: by score alone it converts
    # first, then the lowest pixels (0, 1), (0, 2); with the bonus (0.5 / 8 = 0.0625
    # per neighbour of 22) the 22 grows into a 2 x 2 block: (0, 1) (one neighbour, the
    # lowest pixel of three tied), then (1, 0) and (1, 1) (two neighbours, then three).
    prior = np.zeros((4, 4), dtype="int64")
    prior[0, 0] = 3
    probs = np.full((4, 4, 4), 0.1, dtype="float32")
    probs[..., 0], probs[..., 3] = 0.4, 0.4
    probs[3, 3, 3] = 0.45
    assert _patch_moved(probs, prior, 4, 0.0) == {(3, 3), (0, 1), (0, 2)}
    assert _patch_moved(probs, prior, 4, 0.5) == {(0, 1), (1, 0), (1, 1)}


def test_patch_bonus_grows_a_new_patch_from_its_best_pixel():
    # One 4x4 cell of 11, 4 pixels must become 22 (new to the cell). The most likely
    # pixel (1, 1) converts first either way; by score alone the lone runner-up (3, 3)
    # follows, with the bonus the neighbours of (1, 1) do: (0, 0), (0, 1), (1, 0).
    prior = np.zeros((4, 4), dtype="int64")
    probs = np.full((4, 4, 4), 0.1, dtype="float32")
    probs[..., 0], probs[..., 3] = 0.4, 0.4
    probs[1, 1, 3], probs[3, 3, 3] = 0.6, 0.45
    assert _patch_moved(probs, prior, 4, 0.0) == {(1, 1), (3, 3), (0, 0), (0, 1)}
    assert _patch_moved(probs, prior, 4, 0.5) == {(1, 1), (0, 0), (0, 1), (1, 0)}
    # a large score gap outweighs the bonus: a pixel far ahead still converts
    probs[3, 3, 3] = 0.55
    assert (3, 3) in _patch_moved(probs, prior, 4, 0.5)


def test_cluster_bonus_puts_a_cells_changes_of_the_year_together():
    # One 4x4 cell of 11: one pixel goes to 22 (group c), one to 55 (group b, new to
    # the cell; 55 likelier than 66 everywhere). 22 is likeliest at (0, 0); 55 at (3, 3),
    # then at (1, 1) a little less. By score alone 55 takes the lone (3, 3); with the
    # cluster bonus (1 / 8 per neighbour converted this year) it takes (1, 1), next to
    # the new 22.
    from ai4land.predict.harmonize import allocate_change

    prior = np.zeros((4, 4), dtype="int64")
    probs = np.full((4, 4, 4), 0.1, dtype="float32")
    probs[..., 0], probs[..., 1], probs[..., 2], probs[..., 3] = 0.5, 0.2, 0.1, 0.2
    probs[0, 0, 3], probs[0, 0, 0] = 0.6, 0.1
    probs[3, 3, 1], probs[1, 1, 1] = 0.3, 0.25
    targets = np.array([14 / 16, 1 / 16, 1 / 16])[:, None, None]

    def changed(cluster):
        index = allocate_change(probs, CHANGE_PREDICTED, factor=4, valid=np.ones((4, 4), bool),
                                targets=targets, groups=CHANGE_GROUPS, prior=prior, margin=1.0,
                                changed_bonus=cluster).index
        return {pixel: int(index[pixel]) for pixel in zip(*np.nonzero(index != 0), strict=True)}

    assert changed(0.0) == {(0, 0): 3, (3, 3): 1}
    assert changed(1.0) == {(0, 0): 3, (1, 1): 1}


def test_patch_bonus_near_zero_ranks_as_the_scores_alone():
    # The greedy one-pixel-at-a-time transfer with a negligible bonus converts the
    # pixels the sorted pairs of patch_bonus 0 convert (random scores: no ties).
    from ai4land.predict.harmonize import allocate_change

    rng = np.random.default_rng(3)
    groups = _groups()
    shape, factor = (20, 20), 5
    probs = rng.dirichlet(np.ones(7), size=shape).astype("float32")
    prior = rng.integers(0, 7, size=shape)
    targets = rng.dirichlet(np.ones(len(groups)), size=(4, 4)).transpose(2, 0, 1)
    results = [allocate_change(probs, PREDICTED, factor=factor, valid=np.ones(shape, bool),
                               targets=targets, groups=groups, prior=prior, margin=1.0,
                               patch_bonus=bonus, changed_bonus=bonus).index
               for bonus in (0.0, 1e-12)]
    np.testing.assert_array_equal(results[0], results[1])
    assert (results[0] != prior).any()


def test_cell_smoothing_stays_inside_each_cell_and_valid_pixels():
    from ai4land.predict.harmonize import cell_smoothed

    rng = np.random.default_rng(1)
    values = rng.random((10, 13, 3))
    valid = rng.random((10, 13)) > 0.2
    whole = cell_smoothed(values, valid, factor=5, size=3)
    # a band of whole cell rows alone gives the same values (the cut is a cell edge)
    np.testing.assert_allclose(cell_smoothed(values[5:], valid[5:], factor=5, size=3), whole[5:])
    # by hand: pixel (4, 4) is the corner of its cell; its neighbours (3..4, 3..4)
    rows, cols = slice(3, 5), slice(3, 5)
    weights = valid[rows, cols]
    expected = (values[rows, cols] * weights[..., None]).sum((0, 1)) / weights.sum()
    np.testing.assert_allclose(whole[4, 4], expected)
