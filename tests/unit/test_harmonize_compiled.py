"""The compiled kernels of the change allocation give the same bits as the numpy/scipy
code they replaced (kept here as references): cell smoothing, the swap candidates, the
cell means and the patch-aware transfer (one heap per cell, pushed pair by pair, popped
to the end)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import uniform_filter1d

import ai4land.predict.harmonize as harmonize
from ai4land.config import CoarseSource
from ai4land.predict.harmonize import allocate_change, cell_smoothed, class_groups

PREDICTED = [11, 22, 33, 44, 55, 66, 77]


def _reference_cell_smoothed(values, valid, *, factor, size):
    """cell_smoothed as it was: scipy's box filter over a padded (cells, factor) view."""
    height, width, k = values.shape
    hc, wc = -(-height // factor), -(-width // factor)
    padded = np.zeros((hc * factor, wc * factor, k + 1), dtype="float64")
    weight = np.asarray(valid, dtype="float64")
    padded[:height, :width, :k] = values * weight[..., None]
    padded[:height, :width, k] = weight
    cells = padded.reshape(hc, factor, wc, factor, k + 1)
    for axis in (1, 3):
        cells = uniform_filter1d(cells, size, axis=axis, mode="constant")
    sums = cells.reshape(hc * factor, wc * factor, k + 1)[:height, :width]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums[..., k:] > 0, sums[..., :k] / sums[..., k:], values)


def _reference_swap_candidates(p, before, eligible, margin):
    """_swap's first half as it was (numpy over every eligible pixel)."""
    candidates = np.flatnonzero(eligible)
    old = before[candidates]
    rows = np.arange(len(candidates))
    gain = p[candidates] - p[candidates, old][:, None]
    gain[rows, old] = -np.inf
    new = gain.argmax(axis=1)
    score = gain[rows, new]
    keep = score > margin
    return candidates[keep], new[keep], score[keep]


def _reference_transfer_patches(pool, starts, p, pixels, position, current, cell, source,
                                known, supply, demand, index, moved, width, factor, bonus):
    """_transfer_patches as it was (run as Python over the compiled heap helpers): a
    heap per cell, every pair pushed one by one, popped until empty."""
    push, pop, near_of, pair = (harmonize._push, harmonize._pop, harmonize._cell_neighbours,
                                harmonize._pair_score)
    n_classes, height = demand.shape[1], position.size // width
    near = np.empty(8, dtype=np.int64)
    for block in range(starts.size - 1):
        local = pool[starts[block]:starts[block + 1]]
        n, c = local.size, cell[local[0]]
        capacity = n * n_classes * 9 + 1
        score, pix, cls = (np.empty(capacity), np.empty(capacity, dtype=np.int64),
                           np.empty(capacity, dtype=np.int64))
        count, changed = np.zeros((n, n_classes), dtype=np.int64), np.zeros(n, dtype=np.int64)
        size = 0
        for m in range(n):
            x = local[m]
            for j in range(near_of(pixels[x], width, height, factor, near)):
                y = position[near[j]]
                if y >= 0 and current[y] >= 0:
                    count[m, current[y]] += 1
            for h in range(n_classes):
                if demand[c, h] > 0:
                    size = push(score, pix, cls, size,
                                pair(p, x, h, source, known, bonus, count[m, h], 0), x, h)
        while size > 0:
            x, h, s = pix[0], cls[0], score[0]
            size = pop(score, pix, cls, size)
            if moved[x] or demand[c, h] == 0 or supply[c, source[x]] == 0:
                continue
            m = np.searchsorted(local, x)
            if s != pair(p, x, h, source, known, bonus, count[m, h], changed[m]):
                continue
            supply[c, source[x]] -= 1
            demand[c, h] -= 1
            index[x] = current[x] = h
            moved[x] = True
            for j in range(near_of(pixels[x], width, height, factor, near)):
                y = position[near[j]]
                at = np.searchsorted(local, y)
                if y < 0 or at >= n or local[at] != y or moved[y]:
                    continue
                count[at, h] += 1
                changed[at] += 1
                if supply[c, source[y]] == 0:
                    continue
                for g in range(n_classes):
                    if demand[c, g] > 0 and (g == h or bonus[1] > 0):
                        size = push(score, pix, cls, size,
                                    pair(p, y, g, source, known, bonus, count[at, g],
                                         changed[at]), y, g)


def _reference_smoothed_pixels(values, valid, factor, size, position, out):
    """allocate_change's smoothed scores as they were: the whole band filtered, then the
    valid pixels' rows taken."""
    smoothed = _reference_cell_smoothed(values, valid, factor=factor, size=size)
    out[:] = smoothed.reshape(-1, values.shape[-1])[np.flatnonzero(position >= 0)]


def _reference_cell_sums(cell, values, n_cells):
    return np.stack([np.bincount(cell, weights=values[:, c], minlength=n_cells)
                     for c in range(values.shape[1])], axis=1)


@pytest.mark.parametrize("seed", range(6))
def test_cell_smoothing_is_the_box_filter_to_the_bit(seed):
    rng = np.random.default_rng(seed)
    for trial in range(40):
        factor, size = int(rng.integers(1, 12)), int(rng.integers(1, 8))
        shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
        values = rng.random((*shape, int(rng.integers(1, 8)))).astype(
            "float32" if trial % 2 else "float64")
        if trial % 3 == 0:
            values = np.round(values * 8) / 8  # exact values and ties
        valid = rng.random(shape) > rng.random()
        if trial % 5 == 0:
            valid[:, : shape[1] // 2] = False  # cells without a valid pixel (ocean)
        expected = _reference_cell_smoothed(values, valid, factor=factor, size=size)
        got = cell_smoothed(values, valid, factor=factor, size=size)
        assert got.dtype == np.float64
        assert got.tobytes() == expected.tobytes()


@pytest.mark.parametrize("seed", range(4))
def test_swap_candidates_and_cell_sums_are_numpys(seed):
    rng = np.random.default_rng(seed)
    n, k = 500, 7
    p = rng.random((n, k))
    p[: n // 4] = np.round(p[: n // 4] * 4) / 4  # tied gains: the first maximum wins
    p[7, 3] = np.nan
    before = rng.integers(0, k, n)
    eligible = rng.random(n) > 0.3
    for margin in (0.0, 0.2, 0.5):
        got = harmonize._swap_candidates(p, before, eligible, margin)
        for a, b in zip(got, _reference_swap_candidates(p, before, eligible, margin),
                        strict=True):
            assert a.tobytes() == b.astype(a.dtype).tobytes()
    cell = rng.integers(0, 37, n)
    assert (harmonize._cell_sums(cell, p, 40).tobytes()
            == _reference_cell_sums(cell, p, 40).tobytes())


@pytest.mark.parametrize("bonus", [(0.0, 1.0), (0.5, 0.0), (0.5, 1.0), (0.0, 3.0)])
@pytest.mark.parametrize("seed", range(3))
def test_change_allocation_is_the_reference_one(monkeypatch, seed, bonus):
    """allocate_change with the compiled kernels against the one made of the references
    (smoothing, swaps beyond a margin, patch bonuses, cells without valid pixels)."""
    rng = np.random.default_rng(seed)
    groups = class_groups(CoarseSource(historical="x").groups, PREDICTED)
    shape, factor = (37, 53), 6  # partial edge cells
    prior = rng.integers(0, 7, size=shape)
    probs = rng.dirichlet(np.ones(7), size=shape).astype("float32")
    probs[np.arange(shape[0])[:, None], np.arange(shape[1]), prior] += 1.5  # near the prior
    probs /= probs.sum(-1, keepdims=True)
    prior[rng.random(shape) < 0.05] = -1
    valid = rng.random(shape) > 0.1
    valid[:, 12:24] = False  # two columns of cells over ocean
    targets = rng.dirichlet(np.ones(len(groups)), size=(7, 9)).transpose(2, 0, 1)
    targets[:, 0, 0] = 0

    def run():
        return allocate_change(probs, PREDICTED, factor=factor, valid=valid, targets=targets,
                               groups=groups, prior=prior, margin=0.3, smoothing=3,
                               patch_bonus=bonus[0], changed_bonus=bonus[1])

    new = run()
    monkeypatch.setattr(harmonize, "_smoothed_pixels", _reference_smoothed_pixels)
    monkeypatch.setattr(harmonize, "_swap_candidates", _reference_swap_candidates)
    monkeypatch.setattr(harmonize, "_cell_sums", _reference_cell_sums)
    monkeypatch.setattr(harmonize, "_transfer_patches", _reference_transfer_patches)
    old = run()
    assert new.index.tobytes() == old.index.tobytes()
    assert new.changed == old.changed and (new.counts == old.counts).all()
    assert (new.index != np.where(valid, prior, -1)).sum() > 20  # it did move pixels
