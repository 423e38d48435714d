"""Baselines that a downscaling model has to beat.

Persistence (the previous observed map) needs no code; the others here: every pixel
takes its coarse cell's dominant group (``coarse_majority``), pixels are dealt to
groups in proportion to the coarse fractions at random (``random_allocation``), and a
per-pixel gradient-boosting classifier on the U-Net's own inputs
(``GradientBoostingBaseline``).
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from ai4land.errors import InputDataError
from ai4land.grid import Window
from ai4land.harmonize import Groups, cell_ids, largest_remainder_counts
from ai4land.io.cube import Cube
from ai4land.samples.features import build_inputs, codes_to_index
from ai4land.split import Split


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
                             max_years: int, rng: np.random.Generator, with_prior: bool = True
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Features (N, C) and class indices (N,) of random training-block pixels.

    Up to ``max_years`` training years (each with its previous observed map as prior,
    as in training; without ``with_prior`` the prior channels are 0, as for single-year
    data) and ``max_samples`` pixels in all, spread evenly over those years.
    """
    whole = Window(0, 0, *cube.fine_grid.shape)
    train = split.role_mask("train") & cube.land_mask_window(whole)
    years = [y for y in split.train_years
             if (y - 1 if with_prior else y) in cube.target_years]
    if not years:
        needed = "an observed previous year" if with_prior else "an observed map"
        raise InputDataError(f"{cube.paths.target}: no training year has {needed} to sample "
                             "the gradient-boosting baseline from")
    chosen = sorted(rng.choice(years, size=min(len(years), max_years), replace=False).tolist())
    features, labels = [], []
    for year in chosen:
        target = codes_to_index(cube.target_window(year, whole), classes)
        candidates = np.flatnonzero(train & (target >= 0))
        take = rng.choice(candidates, size=min(max_samples // len(chosen), candidates.size),
                          replace=False)
        where = np.zeros(target.shape, dtype=bool)
        where.flat[take] = True
        inputs = build_inputs(cube, scenario=cube.scenario_for_year(year), year=year,
                              window=whole, predicted=classes,
                              prior=cube.target_window(year - 1, whole) if with_prior else None,
                              direction=1)
        features.append(pixel_features(inputs, where))
        labels.append(target[where])
    return np.concatenate(features), np.concatenate(labels)
