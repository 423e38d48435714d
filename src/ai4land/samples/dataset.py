"""The dataset: what a planned sample reads (raw windows) and draws (its randomness).

An item holds a window's raw arrays from :class:`~ai4land.samples.arrays.TrainingArrays`
(class codes of the target and prior years as stored, static features as stored, the
coarse cells under the window at coarse resolution) and the draws that shape it: how
the prior is hidden (``train.prior_mask``), which input groups are zeroed
(``train.input_dropout``, e.g. ``{static: 0.5}``: the static channels of about half the
samples are 0, so the model learns not to lean on one group alone) and which symmetry
of the square turns it (``train.augment``). The network input is built from a collated
batch of items on the training device by :class:`ai4land.samples.features.BatchInputs`
(one-hot, upsampling, normalisation, masking, zeroing, turning: batched tensor
operations), so loader processes only slice arrays.

The prior is the observed map of the adjacent year (``year - 1`` going forward,
``year + 1`` going backward). All randomness of loading comes from generators seeded
with (seed, stream, epoch, index in the epoch's plan), and the pixels hidden from the
prior from a counter-based hash of a key drawn there, so a sample is the same whatever
worker, rank, device or resumed run loads it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from torch.utils.data import Dataset

from ai4land.config import PriorMaskConfig
from ai4land.samples.arrays import TrainingArrays, cells_per_window
from ai4land.samples.features import INPUT_GROUPS
from ai4land.samples.plan import SampleSpec, stream_id

NO_MASK = -1  # ``prior_hidden`` of a sample whose prior is shown whole


def max_hidden(n_pixels: int, config: PriorMaskConfig) -> int:
    """The most prior pixels a sample of ``n_pixels`` can hide under ``config``."""
    return int(round(config.max_fraction * n_pixels))


def max_mask_blocks(shape: tuple[int, int], config: PriorMaskConfig) -> int:
    """How many hidden blocks a sample of ``shape`` can draw (the padded block list)."""
    size = min(config.block_size, *shape)
    return min(1000, max_hidden(shape[0] * shape[1], config) // (size * size))


def prior_mask_draw(rng: np.random.Generator, shape: tuple[int, int],
                    config: PriorMaskConfig) -> tuple[int, np.ndarray, int] | None:
    """How the prior of one sample is hidden; ``None`` means no prior at all.

    With probability ``p_none`` there is no prior. Otherwise a fraction drawn uniformly
    from [0, max_fraction] of the pixels is hidden: about half of it (at random) by
    square blocks of ``block_size`` pixels (as many as fit the block share without
    overlaps; they may overlap), the rest by single random pixels, so the hidden count
    matches the drawn fraction exactly. Returns (hidden pixel count, (n, 2) block
    corners, key of the single pixels' hash); :func:`ai4land.samples.features.prior_keep`
    makes the mask.
    """
    height, width = shape
    if rng.random() < config.p_none:
        return None
    hidden = int(round(rng.uniform(0.0, config.max_fraction) * height * width))
    block_budget = int(hidden * rng.uniform(0.0, 1.0))
    size = min(config.block_size, height, width)
    n_blocks = min(block_budget // (size * size), max_mask_blocks(shape, config))
    corners = np.stack([rng.integers(0, height - size + 1, n_blocks),
                        rng.integers(0, width - size + 1, n_blocks)], axis=1)
    return hidden, corners, int(rng.integers(2**32))


def input_dropout_draw(rng: np.random.Generator, probabilities: Mapping[str, float]) -> list[str]:
    """The input groups to zero in one sample: each with its own probability.

    One uniform number is drawn per group of ``INPUT_GROUPS`` (in that order) whatever
    the probabilities, so a group's draws do not depend on which others are listed.
    """
    draws = rng.random(len(INPUT_GROUPS))
    return [group for group, u in zip(INPUT_GROUPS, draws, strict=True)
            if u < probabilities.get(group, 0.0)]


class WindowDataset(Dataset):
    """Samples of a plan as dicts of raw arrays (collated, then built into the network
    input on the training device by :class:`ai4land.samples.features.BatchInputs`).

    Each item: ``target`` and ``prior`` uint8 (h, w) class codes (the prior all 0 when
    the sample has none); ``static`` float32 (S, h, w) as stored; ``cells`` float32
    (V, m, n) the coarse cells from the one holding the window's first pixel (0 past
    the last; then the demand channels when the arrays have them, 0 without a prior),
    ``cell_offset`` int64 (2,) the window's offset in that cell;
    ``has_prior`` bool; ``prior_hidden`` (pixels hidden from the prior, ``NO_MASK`` to
    show it whole), ``mask_blocks`` int64 (K, 2) hidden blocks' corners (-1 past the
    drawn ones), ``mask_key``; ``inputs_zeroed`` bool (len(INPUT_GROUPS),) the groups
    zeroed by ``input_dropout``; ``symmetry`` (quarter turns + 4 if mirrored);
    ``year``, ``direction``, ``row``, ``col``, ``index``.

    ``mask_prior=False`` shows the whole prior (evaluation of the unmasked task);
    ``with_prior=False`` gives no sample a prior (all-zero prior channels);
    ``input_dropout`` (group -> probability, training only) zeroes a group's channels
    (for 'prior': the prior and the direction) in about that share of the samples.
    ``augment`` (training only) turns each square sample by one of the 8 symmetries of
    the square (rotations by 90 degrees, with or without a flip), drawn per sample.
    ``smooth``: items also hold ``ring`` float32 (V, m + 2, n + 2), ``cells`` with a
    ring of neighbouring cells (past the grid: its nearest cell), for the smooth coarse
    channels.
    """

    def __init__(
        self,
        arrays: TrainingArrays,
        plan: Sequence[SampleSpec],
        *,
        prior_mask: PriorMaskConfig,
        seed: int,
        stream: str = "load",
        mask_prior: bool = True,
        with_prior: bool = True,
        input_dropout: Mapping[str, float] | None = None,
        augment: bool = False,
        smooth: bool = False,
    ):
        self.arrays = arrays
        self.plan = list(plan)
        self.prior_mask = prior_mask
        self.seed = int(seed)
        self.stream = stream
        self.mask_prior = mask_prior
        self.with_prior = with_prior
        self.input_dropout = dict(input_dropout or {})
        unknown = sorted(set(self.input_dropout) - set(INPUT_GROUPS))
        if unknown:
            raise ValueError(f"unknown input group(s) {unknown}; use {list(INPUT_GROUPS)}")
        bad = {g: p for g, p in self.input_dropout.items() if not 0.0 <= p < 1.0}
        if bad:
            raise ValueError(f"input_dropout probabilities must be in [0, 1), got {bad}")
        self.augment = augment
        self.smooth = smooth

    def __len__(self) -> int:
        return len(self.plan)

    def rng(self, spec: SampleSpec) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream_id(self.stream), spec.epoch, spec.index])

    def zeroed_groups(self, spec: SampleSpec) -> list[str]:
        """The input groups ``input_dropout`` zeroes in this sample (a pure function of
        seed, stream, epoch and index; its own generator, so the prior mask is unchanged)."""
        if not self.input_dropout:
            return []
        rng = np.random.default_rng(
            [self.seed, stream_id(f"{self.stream}:input-dropout"), spec.epoch, spec.index])
        return input_dropout_draw(rng, self.input_dropout)

    def symmetry(self, spec: SampleSpec) -> tuple[int, bool]:
        """(quarter turns, flip) of this sample under ``augment`` ((0, False) without):
        a pure function of seed, stream, epoch and index, on its own generator."""
        if not self.augment:
            return 0, False
        rng = np.random.default_rng(
            [self.seed, stream_id(f"{self.stream}:augment"), spec.epoch, spec.index])
        draw = int(rng.integers(8))
        return draw % 4, draw >= 4

    def __getitem__(self, i: int) -> dict:
        spec = self.plan[i]
        window = spec.window
        shape = (window.height, window.width)
        n_blocks = max_mask_blocks(shape, self.prior_mask)
        blocks = np.full((n_blocks, 2), -1, dtype="int64")
        hidden, key = NO_MASK, 0
        draw = (None if not self.with_prior
                else prior_mask_draw(self.rng(spec), shape, self.prior_mask) if self.mask_prior
                else (NO_MASK, blocks[:0], 0))
        zeroed = self.zeroed_groups(spec)
        has_prior = draw is not None and "prior" not in zeroed
        if has_prior:
            hidden, corners, key = draw
            blocks[: len(corners)] = corners
            prior = self.arrays.target_window(spec.prior_year, window)
        else:
            prior = np.zeros(shape, dtype="uint8")
        factor = self.arrays.factor
        cells = np.empty((self.arrays.cells.shape[1] + self.arrays.n_demand,
                          cells_per_window(shape[0], factor),
                          cells_per_window(shape[1], factor)), dtype="float32")
        offset = self.arrays.cells_window(spec.year, window, cells,
                                          direction=spec.direction if has_prior else None)
        turns, flip = self.symmetry(spec)
        extra = {}
        if self.smooth:  # the cells with a ring of neighbours (smooth coarse channels)
            ring = np.empty((self.arrays.cells.shape[1], cells.shape[1] + 2, cells.shape[2] + 2),
                            dtype="float32")
            self.arrays.ring_window(spec.year, window, ring)
            extra["ring"] = ring
        return {
            **extra,
            "target": np.ascontiguousarray(self.arrays.target_window(spec.year, window)),
            "prior": np.ascontiguousarray(prior),
            "static": np.ascontiguousarray(self.arrays.static_window(window)),
            "cells": cells,
            "cell_offset": np.asarray(offset, dtype="int64"),
            "has_prior": has_prior,
            "prior_hidden": hidden,
            "mask_blocks": blocks,
            "mask_key": key,
            "inputs_zeroed": np.asarray([g in zeroed for g in INPUT_GROUPS]),
            "symmetry": turns + 4 * flip,
            "year": spec.year,
            "direction": spec.direction,
            "row": window.row,
            "col": window.col,
            "index": spec.index,
        }
