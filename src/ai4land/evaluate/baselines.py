"""Baselines that a downscaling model has to beat.

Persistence (the last observed map) needs no code. Maps without harmonisation: every
pixel takes its coarse cell's dominant group (``coarse_majority``); pixels are dealt to
groups in proportion to the coarse fractions at random (``random_allocation``).

Allocation baselines give per-pixel class *scores* (in [0, 1], summing to at most 1
per pixel, like probabilities) that go through the same finalising as the U-Net's
probabilities (:class:`ai4land.predict.finalise.Finaliser`: harmonisation to the delta-method
target, exact whole-pixel counts per coarse cell), so a comparison isolates what the
network adds:

* ``random_change_scores``: persistence, and each cell's net change allocated to random
  pixels (the previous class weighs :data:`KEEP` and outweighs every other score);
* ``density_scores``: persistence, and a converting pixel chosen by the density of its
  new class in a k x k neighbourhood of the previous map (as LandScaleR allocates);
  the pixels a shrinking class gives up are those where it is least dense;
* ``GradientBoostingBaseline.probabilities``: a per-pixel gradient-boosting classifier
  on the U-Net's own inputs;
* ``smooth_scores``: the cells' target fractions interpolated bilinearly to the pixel
  centres (no learning; ``Finaliser.interpolated_targets``, which predict's
  ``smooth_weight`` blends in too), the previous class only breaking ties.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from ai4land.errors import InputDataError
from ai4land.io.cube import Cube
from ai4land.predict.harmonize import Groups, cell_ids, largest_remainder_counts
from ai4land.samples.features import build_inputs, codes_to_index
from ai4land.samples.split import Split

# Weight of the previous class in the persistence-preferring scores: above the 1 - KEEP
# that all other classes share, so a pixel leaves its class only when its cell's count
# of that class has to fall.
KEEP = 0.6
# Weight of the previous class in ``smooth_scores``: a tie-breaker only.
TIE = 1e-3


def coarse_majority(fractions: np.ndarray, *, groups: Groups, factor: int,
                    ocean_mask: np.ndarray | None = None, ocean_code: int = 0) -> np.ndarray:
    """Every fine pixel takes the dominant group of its coarse cell (the group's first class).

    ``fractions`` is (G, cy, cx); cells without any fraction become ``ocean_code``.
    """
    first_class = np.array([classes[0] if classes else ocean_code for classes in groups.classes],
                           dtype="uint8")
    filled = np.nan_to_num(fractions, nan=0.0)
    cells = first_class[filled.argmax(0)]
    cells[filled.sum(0) <= 0] = ocean_code
    codes = np.repeat(np.repeat(cells, factor, axis=0), factor, axis=1)
    if ocean_mask is not None:
        codes = codes[: ocean_mask.shape[0], : ocean_mask.shape[1]]
        codes = np.where(ocean_mask, np.uint8(ocean_code), codes)
    return codes.astype("uint8")


def random_allocation(fractions: np.ndarray, *, groups: Groups, factor: int, valid: np.ndarray,
                      rng: np.random.Generator, ocean_code: int = 0) -> np.ndarray:
    """Each coarse cell's valid pixels split over groups in proportion to ``fractions``.

    Counts per cell and group are the largest-remainder counts of ``fractions`` (G, cy, cx)
    over the cell's valid pixels, placed at random; inside a group of several classes a
    pixel takes one of them uniformly at random. Pixels outside ``valid`` and in cells
    without fractions become ``ocean_code``.
    """
    valid = np.asarray(valid, dtype=bool)
    cell, (cy, cx) = cell_ids(valid.shape, factor)
    flat = np.flatnonzero(valid)
    pixel_cell = cell.reshape(-1)[flat]
    per_cell = np.bincount(pixel_cell, minlength=cy * cx).reshape(cy, cx)
    counts = largest_remainder_counts(fractions, per_cell)  # (G, cy, cx), -1 unconstrained
    quota = np.moveaxis(counts, 0, -1).reshape(-1, len(groups))
    # A random order inside each cell; the pixel ranked r goes to the group whose
    # cumulative quota first exceeds r.
    order = np.lexsort((rng.random(flat.size), pixel_cell))
    sorted_cell = pixel_cell[order]
    rank = np.arange(flat.size) - np.searchsorted(sorted_cell, sorted_cell, side="left")
    group = (rank[:, None] >= np.cumsum(quota[sorted_cell], axis=1)).sum(axis=1)
    size = np.array([len(classes) for classes in groups.classes])
    table = np.full((len(groups), size.max()), ocean_code, dtype="uint8")
    for g, classes in enumerate(groups.classes):
        table[g, : len(classes)] = classes
    constrained = quota[sorted_cell, 0] >= 0
    pick = (rng.random(flat.size) * size[np.minimum(group, len(groups) - 1)]).astype("int64")
    codes = np.full(valid.size, ocean_code, dtype="uint8")
    codes[flat[order[constrained]]] = table[group[constrained], pick[constrained]]
    return codes.reshape(valid.shape)


class GradientBoostingBaseline:
    """A per-pixel HistGradientBoosting classifier on the U-Net's input channels.

    Features of a pixel are the ``build_inputs`` channels at that pixel (coarse
    fractions, static layers, the one-hot prior, direction): the U-Net's information
    without its spatial context. It runs on one thread: the sample is capped, and
    OpenMP threads competing with other jobs for the cores slow it down many times.
    """

    def __init__(self, *, classes: list[int], max_iter: int, seed: int):
        from sklearn.ensemble import HistGradientBoostingClassifier

        self.classes = np.asarray(classes, dtype="uint8")
        self.model = HistGradientBoostingClassifier(max_iter=max_iter, early_stopping=False,
                                                    random_state=seed)

    def fit(self, features: np.ndarray, labels: np.ndarray) -> GradientBoostingBaseline:
        """``features`` (N, C), ``labels`` (N,) class indices."""
        with threadpool_limits(1):
            self.model.fit(features, labels)
        return self

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, K) float32 probabilities over all ``classes`` (0 for classes unseen in
        training)."""
        with threadpool_limits(1):
            probs = self.model.predict_proba(features)
        out = np.zeros((len(features), len(self.classes)), dtype="float32")
        out[:, self.model.classes_] = probs
        return out

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class codes (N,) uint8 and their probability (N,) float32."""
        with threadpool_limits(1):
            probs = self.model.predict_proba(features)
        best = probs.argmax(axis=1)
        return self.classes[self.model.classes_[best]], probs.max(axis=1).astype("float32")


def pixel_features(inputs: np.ndarray, where: np.ndarray) -> np.ndarray:
    """The (C, H, W) input channels at the pixels ``where`` (H, W) selects: (N, C)."""
    return np.ascontiguousarray(inputs[:, where].T)


def gradient_boosting_sample(cube: Cube, *, split: Split, classes: list[int], max_samples: int,
                             max_years: int, rng: np.random.Generator, with_prior: bool = True,
                             max_blocks: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, C) and class indices (N,) of random training-block pixels.

    Up to ``max_years`` training years (each with its previous observed map as prior,
    as in training; without ``with_prior`` the prior channels are 0, as for single-year
    data) and ``max_samples`` pixels in all, spread evenly over those years, each
    year's drawn from the land of up to ``max_blocks`` random training blocks (read one
    block at a time: memory does not grow with the region).
    """
    blocks = [split.block_window(b) for b in split.blocks if b.role == "train"]
    years = [y for y in split.train_years
             if (y - 1 if with_prior else y) in cube.target_years]
    if not years or not blocks:
        needed = "an observed previous year" if with_prior else "an observed map"
        raise InputDataError(f"{cube.paths.target}: no training year has {needed} to sample "
                             "the gradient-boosting baseline from")
    chosen = sorted(rng.choice(years, size=min(len(years), max_years), replace=False).tolist())
    features, labels = [], []
    for year in chosen:
        picked = rng.choice(len(blocks), size=min(len(blocks), max_blocks), replace=False)
        year_features, year_labels = [], []
        for b in sorted(picked.tolist()):
            window = blocks[b]
            target = codes_to_index(cube.target_window(year, window), classes)
            where = cube.land_mask_window(window) & (target >= 0)
            if not where.any():
                continue
            inputs = build_inputs(cube, scenario=cube.scenario_for_year(year), year=year,
                                  window=window, predicted=classes,
                                  prior=(cube.target_window(year - 1, window) if with_prior
                                         else None), direction=1)
            year_features.append(pixel_features(inputs, where))
            year_labels.append(target[where])
        if not year_features:
            continue
        pool, pool_labels = np.concatenate(year_features), np.concatenate(year_labels)
        take = rng.choice(len(pool), size=min(max_samples // len(chosen), len(pool)),
                          replace=False)
        features.append(pool[np.sort(take)])
        labels.append(pool_labels[np.sort(take)])
    if not features:
        raise InputDataError(f"{cube.paths.target}: the training blocks hold no land pixel of "
                             "a predicted class to fit the gradient-boosting baseline on")
    return np.concatenate(features), np.concatenate(labels)


def _one_hot(index: np.ndarray, k: int) -> np.ndarray:
    """(h, w, k) float32 one-hot of class indices (h, w); -1 gives a row of zeros."""
    out = np.zeros((*index.shape, k), dtype="float32")
    known = index >= 0
    out[known, index[known]] = 1.0
    return out


def random_change_scores(previous: np.ndarray, k: int, *,
                         rng: np.random.Generator) -> np.ndarray:
    """(h, w, k) scores: ``KEEP`` on the previous class (index, -1 unknown) plus uniform
    noise spread over the k classes, so the pixels that change are random."""
    noise = rng.random((*previous.shape, k), dtype="float32") * np.float32((1 - KEEP) / k)
    return KEEP * _one_hot(previous, k) + noise


def class_density(previous: np.ndarray, k: int, *, kernel: int) -> np.ndarray:
    """(h, w, k) share of each class among the known pixels (index >= 0) of the
    ``kernel`` x ``kernel`` neighbourhood of each pixel in ``previous`` (the kernel is
    cut at the array's edges; 0 where it holds no known pixel)."""
    from scipy.ndimage import uniform_filter

    one_hot = _one_hot(previous, k)
    counts = uniform_filter(one_hot, size=(kernel, kernel, 1), mode="constant")
    known = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, known, out=np.zeros_like(counts), where=known > 1e-6)


def density_scores(previous: np.ndarray, k: int, *, kernel: int,
                   rng: np.random.Generator) -> np.ndarray:
    """(h, w, k) scores: ``KEEP`` on the previous class plus the class's neighbourhood
    density (:func:`class_density`) scaled into the remaining 1 - KEEP; a little noise
    (below a kernel's density step) breaks ties at random, not in raster order."""
    density = class_density(previous, k, kernel=kernel)
    step = 1.0 / (kernel * kernel)
    noise = rng.random(density.shape, dtype="float32") * np.float32(0.5 * step)
    tail = (density * np.float32(1 - 0.5 * step) + noise / k) * np.float32(1 - KEEP)
    return KEEP * _one_hot(previous, k) + tail


def smooth_scores(group_values: np.ndarray, previous: np.ndarray, *, groups: Groups,
                  classes: list[int]) -> np.ndarray:
    """(h, w, k) scores from (h, w, G) interpolated group fractions: a group's value
    shared equally by its classes, ``TIE`` on the previous class (index, -1 unknown)."""
    member = groups.membership(classes).astype("float32")  # (K, G)
    share = member / np.maximum(member.sum(axis=0, keepdims=True), 1)
    scores = np.clip(group_values, 0, 1).astype("float32") @ share.T
    return (1 - TIE) * scores + TIE * _one_hot(previous, len(classes))
