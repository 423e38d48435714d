"""Stability of chain years against small cases counted by hand."""

import numpy as np
import pytest

from ai4land.evaluate.bootstrap import BlockBootstrap
from ai4land.evaluate.stability import (
    StabilityCounts,
    stability_counts,
    stability_scores,
    summarise_stability,
)
from ai4land.predict.harmonize import class_groups

GROUPS = class_groups({"crop": {"variables": ["c"], "classes": [22]},
                       "pasture": {"variables": ["p"], "classes": [33]},
                       "forest": {"variables": ["f"], "classes": [44]}}, [22, 33, 44])


def _target(*cells):
    """(G, 1, n) fractions, one (crop, pasture, forest) triple per cell."""
    return np.array(cells, dtype="float64").T[:, None, :]


def test_swap_ratio_of_one_cell_counted_by_hand():
    previous = np.array([[22, 22, 22, 22],
                         [22, 22, 22, 22],
                         [33, 33, 33, 33],
                         [33, 33, 33, 33]], dtype="uint8")
    current = previous.copy()
    current[0, 0] = current[0, 3] = current[1, 1] = 33  # three crop pixels to pasture
    current[3, 0] = current[3, 3] = 22  # two pasture pixels to crop
    counts = stability_counts(previous, current, valid=np.ones((4, 4), bool), groups=GROUPS,
                              factor=4, target=_target((7 / 16, 9 / 16, 0)))
    # 5 pixels changed; the cell's net change is crop 8 -> 7, pasture 8 -> 9: 1 pixel
    assert (counts.changed, counts.minimal, counts.valid) == (5, 1, 16)
    scores = stability_scores(counts)
    assert scores["swap_ratio"] == pytest.approx(4 / 5)
    assert scores["changed_share"] == pytest.approx(5 / 16)
    # (0,0)-(1,1) touch diagonally; (0,3), (3,0), (3,3) are alone
    assert counts.isolated == 3
    assert scores["isolated_share"] == pytest.approx(3 / 5)
    np.testing.assert_array_equal(counts.map_groups, [7, 9, 0])
    np.testing.assert_allclose(counts.target_groups, [7, 9, 0])
    assert scores["area_mae"] == pytest.approx(0.0)


def test_net_change_only_has_zero_swap_ratio_and_a_lone_pixel_is_isolated():
    previous = np.full((5, 5), 22, dtype="uint8")
    current = previous.copy()
    current[2, 2] = 33
    counts = stability_counts(previous, current, valid=np.ones((5, 5), bool), groups=GROUPS,
                              factor=5, target=_target((0.96, 0.04, 0)))
    scores = stability_scores(counts)
    assert scores["swap_ratio"] == 0.0 and scores["isolated_share"] == 1.0
    current[2, 3] = 33  # a neighbour changes too: no longer isolated
    counts = stability_counts(previous, current, valid=np.ones((5, 5), bool), groups=GROUPS,
                              factor=5, target=_target((0.92, 0.08, 0)))
    assert counts.isolated == 0
    # a changed neighbour outside ``valid`` does not count
    valid = np.ones((5, 5), bool)
    valid[2, 3] = False
    counts = stability_counts(previous, current, valid=valid, groups=GROUPS, factor=5,
                              target=_target((0.92, 0.08, 0)))
    assert (counts.changed, counts.isolated) == (1, 1)


def test_vanishing_class_with_and_without_coarse_evidence():
    # two cells of 2x2 pixels; forest (44) leaves both
    previous = np.array([[44, 22, 44, 22],
                         [22, 22, 33, 33]], dtype="uint8")
    current = np.array([[22, 22, 33, 22],
                        [22, 22, 33, 33]], dtype="uint8")
    # cell 0: the target keeps half a cell of forest (2 pixels): vanished without evidence;
    # cell 1: the target's forest is 0: the coarse data asks for it to go
    target = _target((0.5, 0.0, 0.5), (0.25, 0.75, 0.0))
    counts = stability_counts(previous, current, valid=np.ones((2, 4), bool), groups=GROUPS,
                              factor=2, target=target)
    # present pairs: cell 0 {44, 22}, cell 1 {44, 22, 33}
    assert (counts.present, counts.vanished, counts.vanished_forced) == (5, 1, 1)
    assert stability_scores(counts)["vanish_rate"] == pytest.approx(1 / 5)
    # below min_pixels the group counts as gone: 0.5 x 4 = 2 pixels < 3
    strict = stability_counts(previous, current, valid=np.ones((2, 4), bool), groups=GROUPS,
                              factor=2, target=target, min_pixels=3)
    assert (strict.vanished, strict.vanished_forced) == (0, 2)


def test_cells_without_target_are_not_scored_and_shapes_are_checked():
    previous = np.full((2, 4), 22, dtype="uint8")
    current = np.full((2, 4), 33, dtype="uint8")
    counts = stability_counts(previous, current, valid=np.ones((2, 4), bool), groups=GROUPS,
                              factor=2, target=_target((0, 1, 0), (0, 0, 0)))
    assert (counts.valid, counts.changed) == (4, 4)
    with pytest.raises(ValueError, match="uint8 class codes"):
        stability_counts(previous.astype("int64"), current, valid=np.ones((2, 4), bool),
                         groups=GROUPS, factor=2, target=_target((0, 1, 0), (0, 0, 0)))
    with pytest.raises(ValueError, match="cells need"):
        stability_counts(previous, current, valid=np.ones((2, 4), bool), groups=GROUPS,
                         factor=2, target=_target((0, 1, 0)))


def test_windows_add_up_to_the_whole_map_and_bootstrap():
    rng = np.random.default_rng(0)
    codes = np.array([22, 33, 44], dtype="uint8")
    previous = codes[rng.integers(0, 3, size=(12, 12))]
    current = np.where(rng.random((12, 12)) < 0.3, codes[rng.integers(0, 3, size=(12, 12))],
                       previous)
    valid = rng.random((12, 12)) < 0.9
    fractions = rng.random((3, 4, 4)) + 0.01
    fractions /= fractions.sum(0)
    whole = stability_counts(previous, current, valid=valid, groups=GROUPS, factor=3,
                             target=fractions)
    parts = []
    for r0, r1 in ((0, 6), (6, 12)):
        for c0, c1 in ((0, 3), (3, 12)):
            parts.append(stability_counts(
                previous[r0:r1, c0:c1], current[r0:r1, c0:c1], valid=valid[r0:r1, c0:c1],
                groups=GROUPS, factor=3, target=fractions[:, r0 // 3:r1 // 3, c0 // 3:c1 // 3],
                origin=(r0, c0)))
    total = sum(parts[1:], parts[0])
    for key in ("valid", "changed", "minimal", "present", "vanished", "vanished_forced"):
        assert getattr(total, key) == getattr(whole, key), key
    np.testing.assert_array_equal(total.map_groups, whole.map_groups)
    np.testing.assert_allclose(total.target_groups, whole.target_groups)
    # isolation is judged inside each window: never fewer isolated pixels than in the whole
    assert total.isolated >= whole.isolated
    # a window starting mid-cell: its cells are the parts of the cells it covers
    mid = stability_counts(previous[1:7, 2:11], current[1:7, 2:11], valid=valid[1:7, 2:11],
                           groups=GROUPS, factor=3, target=fractions[:, 0:3, 0:4], origin=(1, 2))
    assert mid.valid == valid[1:7, 2:11].sum()
    by_hand = 0
    for cell in {(r // 3, c // 3) for r in range(1, 7) for c in range(2, 11)}:
        pixels = [(r, c) for r in range(1, 7) for c in range(2, 11)
                  if (r // 3, c // 3) == cell and valid[r, c]]
        for code in codes:
            by_hand += abs(sum(previous[p] == code for p in pixels)
                           - sum(current[p] == code for p in pixels))
    assert mid.minimal == by_hand // 2
    interval = BlockBootstrap(4, n_replicates=100, seed=0).interval(
        StabilityCounts.stack(parts), lambda c: stability_scores(c)["swap_ratio"])
    assert interval.estimate == pytest.approx(stability_scores(total)["swap_ratio"])
    assert 0 <= interval.low <= interval.high <= 1
    summary = summarise_stability(whole, GROUPS.names)
    assert set(summary["area_share"]) == {"crop", "pasture", "forest"}
    assert summary["counts"]["changed"] == whole.changed
