"""Baselines that a downscaling model has to beat."""

from __future__ import annotations

import numpy as np


def coarse_majority(fractions: np.ndarray, *, groups: dict, factor: int,
                    ocean_mask: np.ndarray | None = None, ocean_code: int = 0) -> np.ndarray:
    """Every fine pixel takes the dominant group of its coarse cell (its first class).

    ``fractions`` is (G, cy, cx); cells without data (all NaN) become ``ocean_code``.
    """
    first_class = np.array([group.classes[0] for group in groups.values()], dtype="uint8")
    filled = np.nan_to_num(fractions, nan=-1.0)
    cells = first_class[filled.argmax(0)]
    cells[~np.isfinite(fractions).any(0)] = ocean_code
    codes = np.repeat(np.repeat(cells, factor, axis=0), factor, axis=1)
    if ocean_mask is not None:
        codes = codes[: ocean_mask.shape[0], : ocean_mask.shape[1]]
        codes = np.where(ocean_mask, np.uint8(ocean_code), codes)
    return codes.astype("uint8")
