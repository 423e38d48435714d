"""The U-Net's plain argmax for one year of the whole region, held in memory.

Only for small regions (the ablation benchmark's prior-hidden scores): ``ai4land
evaluate`` streams the test blocks and scores the harmonised chains instead
(:mod:`ai4land.evaluate.chains`).
"""

from __future__ import annotations

import numpy as np

from ai4land.grid import Window
from ai4land.io.cube import Cube
from ai4land.predict.probabilities import year_probabilities


def unet_year(config, *, cube: Cube, model, scenario: str, year: int,
              prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward-direction class codes (H, W) (ocean kept) and their probability (H, W)."""
    probs, _ = year_probabilities(config, cube=cube, model=model, scenario=scenario, year=year,
                                  prior=prior, direction=1, progress=False)
    code_of = np.asarray(config.classes.predicted, dtype="uint8")
    land = cube.land_mask_window(Window(0, 0, *cube.fine_grid.shape))
    codes = np.where(land, code_of[probs.argmax(axis=-1)], config.classes.ocean)
    return codes.astype("uint8"), probs.max(axis=-1)
