"""Baselines that a downscaling model has to beat."""

from __future__ import annotations

import numpy as np

from ai4land.harmonize import Groups


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
