"""The U-Net over consecutive years: teacher-forced (observed prior) or rolled out.

A rollout starts from the observed map of the year before the first test year and
then feeds the network its own previous prediction as prior, as a prediction chain
does; its drift from teacher-forced prediction shows how errors compound.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ai4land.grid import Window
from ai4land.io.cube import Cube
from ai4land.predict import year_probabilities


def unet_year(config, *, cube: Cube, model, scenario: str, year: int,
              prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward-direction class codes (H, W) (ocean kept) and their probability (H, W)."""
    probs, _ = year_probabilities(config, cube=cube, model=model, scenario=scenario, year=year,
                                  prior=prior, direction=1, progress=False)
    code_of = np.asarray(config.classes.predicted, dtype="uint8")
    land = cube.land_mask_window(Window(0, 0, *cube.fine_grid.shape))
    codes = np.where(land, code_of[probs.argmax(axis=-1)], config.classes.ocean)
    return codes.astype("uint8"), probs.max(axis=-1)


def rollout(config, *, cube: Cube, model, years: Sequence[int],
            start: np.ndarray) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(year, codes, probability) for ``years`` in order; ``start`` is the first prior."""
    prior = start
    for year in years:
        codes, confidence = unet_year(config, cube=cube, model=model,
                                      scenario=cube.scenario_for_year(year), year=year,
                                      prior=prior)
        yield year, codes, confidence
        prior = codes
