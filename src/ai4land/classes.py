"""Class groups: how coarse fraction variables correspond to fine class codes.

A group (``datasets.coarse.groups``) sums some coarse variables and corresponds to one
or more fine classes (LUH2 primn+secdn hold both 55 and 66). Comparisons between a
fine map and the coarse scenario happen at group level.
"""

from __future__ import annotations

import numpy as np


def group_of_code(groups: dict, *, n_codes: int = 256) -> np.ndarray:
    """Lookup table: uint8 code -> group index (-1 for codes in no group)."""
    table = np.full(n_codes, -1, dtype="int64")
    for index, group in enumerate(groups.values()):
        table[np.asarray(group.classes)] = index
    return table


def coarse_group_fractions(cells: np.ndarray, *, variables: list[str], groups: dict) -> np.ndarray:
    """Sum coarse variables (V, cy, cx) into group fractions (G, cy, cx); NaN stays NaN."""
    position = {name: i for i, name in enumerate(variables)}
    missing = sorted({v for g in groups.values() for v in g.variables} - set(position))
    if missing:
        raise KeyError(f"coarse variables {missing} are not among {variables}")
    return np.stack([cells[[position[v] for v in g.variables]].sum(0) for g in groups.values()])


def map_group_fractions(codes: np.ndarray, *, groups: dict, factor: int) -> np.ndarray:
    """Fractions of each group among a fine map's grouped pixels per coarse cell.

    Returns (G, cy, cx); cells without any grouped pixel (ocean) are NaN.
    """
    height, width = codes.shape
    cy, cx = height // factor, width // factor
    group = group_of_code(groups)[codes[: cy * factor, : cx * factor]]
    cells = group.reshape(cy, factor, cx, factor).transpose(0, 2, 1, 3).reshape(cy, cx, -1)
    counts = np.stack([(cells == g).sum(-1) for g in range(len(groups))]).astype("float64")
    total = counts.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, counts / np.where(total > 0, total, 1), np.nan)
