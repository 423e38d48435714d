"""Change between two dates scored pixel by pixel (Pontius et al. 2008, 2011).

Three maps of the same pixels: the observed map at the start of a period, the observed
map at its end and the predicted map at its end. Each scored pixel falls in one of five
categories (:data:`CATEGORIES`):

=====================  =====================  ======================================
observed               predicted              category
=====================  =====================  ======================================
no change              no change              correct rejection
change                 change, right class    hit
change                 no change              miss
no change              change                 false alarm
change                 change, wrong class    wrong hit
=====================  =====================  ======================================

"change" means the end map differs from the start map. From the counts:

- figure of merit ``FoM = hits / (hits + misses + wrong hits + false alarms)``,
- producer's accuracy of change ``PA = hits / (hits + misses + wrong hits)`` (share of
  the observed change predicted right),
- user's accuracy of change ``UA = hits / (hits + wrong hits + false alarms)`` (share of
  the predicted change that is right).

Counts are int64 arrays whose last axis follows :data:`CATEGORIES`; counts of several
chunks, blocks or years add up, and the ratio functions score any array of counts
(``(..., 5)``), so block-bootstrap replicates are scored in one call. The metrics of
``metrics.json`` built on them (``fom_change``, ``period``, ...) are in
:mod:`ai4land.evaluate.metrics`.
"""

from __future__ import annotations

import numpy as np

CATEGORIES = ("correct_rejection", "hit", "miss", "false_alarm", "wrong_hit")
CORRECT_REJECTION, HIT, MISS, FALSE_ALARM, WRONG_HIT = range(len(CATEGORIES))
NOT_SCORED = -1

# category by (observed change, predicted change, predicted == observed) as a 3-bit index;
# the impossible combinations (e.g. no change anywhere but a wrong class) never occur
_BY_BITS = np.array([NOT_SCORED, CORRECT_REJECTION, FALSE_ALARM, NOT_SCORED,
                     MISS, NOT_SCORED, WRONG_HIT, HIT], dtype="int8")


def _scored(start: np.ndarray, observed: np.ndarray, predicted: np.ndarray,
            valid: np.ndarray | None) -> np.ndarray:
    """Pixels scored: inside ``valid`` and not negative (-1 = no class) in any map."""
    scored = np.ones(np.shape(start), dtype=bool) if valid is None else np.array(valid, dtype=bool)
    for array in (start, observed, predicted):
        if np.issubdtype(np.asarray(array).dtype, np.signedinteger):
            scored &= np.asarray(array) >= 0
    return scored


def change_categories(start: np.ndarray, observed: np.ndarray, predicted: np.ndarray,
                      valid: np.ndarray | None = None) -> np.ndarray:
    """int8 map of each pixel's category index in :data:`CATEGORIES`, -1 where not scored.

    ``start``, ``observed`` (both observed) and ``predicted`` are class maps of one
    shape (codes or indices; negative values of signed arrays are not scored);
    ``valid`` (bool, optional) limits the scored pixels further. For figures: the
    hit / miss / false-alarm / wrong-hit / correct-rejection map of a tile.
    """
    start, observed, predicted = (np.asarray(a) for a in (start, observed, predicted))
    if not start.shape == observed.shape == predicted.shape:
        raise ValueError(f"change maps differ in shape: start {start.shape}, observed "
                         f"{observed.shape}, predicted {predicted.shape}")
    bits = ((observed != start).astype("int8") << 2) | ((predicted != start).astype("int8") << 1)
    bits |= (predicted == observed).astype("int8")
    categories = _BY_BITS[bits]
    categories[~_scored(start, observed, predicted, valid)] = NOT_SCORED
    return categories


def change_counts(start: np.ndarray, observed: np.ndarray, predicted: np.ndarray,
                  valid: np.ndarray | None = None, *, labels: np.ndarray | None = None,
                  n_labels: int | None = None) -> np.ndarray:
    """Pixel counts per category: ``(5,)``, or ``(n_labels, 5)`` with ``labels``.

    ``labels`` (int, same shape, -1 = not scored) splits the counts by test block so
    that a block bootstrap can resample them; ``n_labels`` is then required.
    """
    categories = change_categories(start, observed, predicted, valid)
    n = len(CATEGORIES)
    if labels is None:
        return np.bincount(categories[categories >= 0].ravel(), minlength=n).astype("int64")
    if n_labels is None:
        raise ValueError("change_counts: labels need n_labels")
    labels = np.broadcast_to(np.asarray(labels), categories.shape)
    keep = (categories >= 0) & (labels >= 0)
    index = labels[keep].astype("int64") * n + categories[keep]
    return np.bincount(index, minlength=n_labels * n).reshape(n_labels, n).astype("int64")


def _ratio(counts: np.ndarray, numerator: tuple[int, ...], denominator: tuple[int, ...]):
    counts = np.asarray(counts, dtype="float64")
    if counts.shape[-1] != len(CATEGORIES):
        raise ValueError(f"change counts need a last axis of {len(CATEGORIES)} "
                         f"({', '.join(CATEGORIES)}), got shape {counts.shape}")
    num = counts[..., list(numerator)].sum(-1)
    den = counts[..., list(denominator)].sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return float(out) if out.ndim == 0 else out


def figure_of_merit(counts: np.ndarray) -> float | np.ndarray:
    """hits / (hits + misses + wrong hits + false alarms); NaN without any change."""
    return _ratio(counts, (HIT,), (HIT, MISS, WRONG_HIT, FALSE_ALARM))


def producers_accuracy(counts: np.ndarray) -> float | np.ndarray:
    """hits / (hits + misses + wrong hits): observed change predicted right."""
    return _ratio(counts, (HIT,), (HIT, MISS, WRONG_HIT))


def users_accuracy(counts: np.ndarray) -> float | np.ndarray:
    """hits / (hits + wrong hits + false alarms): predicted change that is right."""
    return _ratio(counts, (HIT,), (HIT, WRONG_HIT, FALSE_ALARM))


def iou_of_change(counts: np.ndarray) -> float | np.ndarray:
    """IoU of the observed and predicted change masks (where change happens, whatever the
    new class): (hits + wrong hits) / (hits + misses + wrong hits + false alarms)."""
    return _ratio(counts, (HIT, WRONG_HIT), (HIT, MISS, WRONG_HIT, FALSE_ALARM))


# the ratios of the whole-period change (``change_summary``)
RATIOS = {"fom": figure_of_merit, "producers_accuracy": producers_accuracy,
          "users_accuracy": users_accuracy}


def change_summary(counts: np.ndarray) -> dict:
    """``{"fom", "producers_accuracy", "users_accuracy", "counts": {category: n}}``.

    Undefined ratios (no observed or no predicted change) are ``None`` (JSON null).
    """
    counts = np.asarray(counts, dtype="int64")
    scores = {name: ratio(counts) for name, ratio in RATIOS.items()}
    return {**{k: (None if not np.isfinite(v) else float(v)) for k, v in scores.items()},
            "counts": {name: int(n) for name, n in zip(CATEGORIES, counts, strict=True)}}
