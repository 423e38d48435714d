"""The dataset: what a planned sample holds (inputs, target, prior mask).

Inputs come from ``ai4land.samples.features.build_inputs``, the one definition of the
network input. The prior is the observed map of the adjacent year (``year - 1`` going
forward, ``year + 1`` going backward), partially hidden as configured by
``train.prior_mask``. Training samples may also have whole input groups zeroed
(``train.input_dropout``, e.g. ``{static: 0.5}``: the static channels of about half the
samples are 0), so the model learns not to lean on one group alone. All randomness of
loading comes from generators seeded with (seed, stream, epoch, index in the epoch's
plan), so a sample is the same whatever worker, rank or resumed run loads it.

The coarse cells of the whole region are read once per (scenario, year) and kept in a
:class:`CoarseCellCache` (1 GiB, least recently used first out) that a training run
shares across its epochs' datasets; each window upsamples its own cells from them.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from ai4land.config import PriorMaskConfig
from ai4land.grid import Window
from ai4land.io.cube import Cube
from ai4land.samples.features import (
    INPUT_GROUPS,
    build_inputs,
    codes_to_index,
    group_channels,
    input_channel_names,
)
from ai4land.samples.plan import SampleSpec, stream_id


def prior_keep_mask(
    rng: np.random.Generator, shape: tuple[int, int], config: PriorMaskConfig
) -> np.ndarray | None:
    """Which prior pixels the network may see; ``None`` means no prior at all.

    With probability ``p_none`` there is no prior. Otherwise a fraction drawn uniformly
    from [0, max_fraction] of the pixels is hidden: about half of it (at random) by
    square blocks of ``block_size`` pixels, the rest by single random pixels, so the
    hidden count matches the drawn fraction exactly.
    """
    height, width = shape
    if rng.random() < config.p_none:
        return None
    n_pixels = height * width
    target = int(round(rng.uniform(0.0, config.max_fraction) * n_pixels))
    hidden = np.zeros(shape, dtype=bool)
    block_budget = int(target * rng.uniform(0.0, 1.0))
    size = min(config.block_size, height, width)
    covered = 0
    # Blocks first; stop before one would overshoot the budget (blocks may overlap).
    for _ in range(1000):
        if covered + size * size > block_budget:
            break
        r = int(rng.integers(0, height - size + 1))
        c = int(rng.integers(0, width - size + 1))
        hidden[r : r + size, c : c + size] = True
        covered = int(hidden.sum())
    remaining = target - covered
    if remaining > 0:
        free = np.flatnonzero(~hidden)
        hidden.flat[rng.choice(free, size=remaining, replace=False)] = True
    return ~hidden


def input_dropout_draw(rng: np.random.Generator, probabilities: Mapping[str, float]) -> list[str]:
    """The input groups to zero in one sample: each with its own probability.

    One uniform number is drawn per group of ``INPUT_GROUPS`` (in that order) whatever
    the probabilities, so a group's draws do not depend on which others are listed.
    """
    draws = rng.random(len(INPUT_GROUPS))
    return [group for group, u in zip(INPUT_GROUPS, draws, strict=True)
            if u < probabilities.get(group, 0.0)]


class CoarseCellCache:
    """The coarse cells of the whole region per (scenario, year), least recently used
    out beyond ``max_bytes``. One cache serves every epoch's dataset of a run, so each
    year is read from the store once per run, not once per epoch."""

    def __init__(self, cube: Cube, *, max_bytes: int = 1 << 30):
        self.cube, self.max_bytes = cube, max_bytes
        self._cells: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()

    def __call__(self, scenario: str, year: int) -> np.ndarray:
        key = (scenario, year)
        if key in self._cells:
            self._cells.move_to_end(key)
        else:
            whole = Window(0, 0, *self.cube.fine_grid.shape)
            self._cells[key] = self.cube.coarse_cells(scenario, year, whole)
            while (len(self._cells) > 1
                   and sum(a.nbytes for a in self._cells.values()) > self.max_bytes):
                self._cells.popitem(last=False)
        return self._cells[key]


class WindowDataset(Dataset):
    """Samples of a plan as dicts of arrays.

    Each item: ``inputs`` float32 (C, h, w); ``target`` int64 (h, w) class indices,
    -1 for ocean/no data/unpredicted codes (ignored by the loss); ``prior_keep_fraction``
    (share of the window's pixels whose prior is shown, 0 without a prior);
    ``inputs_zeroed`` bool (len(INPUT_GROUPS),), the groups zeroed by ``input_dropout``;
    ``year``, ``direction``, ``row``, ``col``, ``index``.

    ``mask_prior=False`` shows the whole prior (evaluation of the unmasked task);
    ``with_prior=False`` gives no sample a prior (all-zero prior channels);
    ``input_dropout`` (group -> probability, training only) zeroes a group's channels
    (for 'prior': the prior and the direction) in about that share of the samples.
    ``augment`` (training only) turns each square sample by one of the 8 symmetries of
    the square (rotations by 90 degrees, with or without a flip), drawn per sample.
    """

    def __init__(
        self,
        cube: Cube,
        plan: Sequence[SampleSpec],
        *,
        predicted: list[int],
        prior_mask: PriorMaskConfig,
        seed: int,
        stream: str = "load",
        mask_prior: bool = True,
        with_prior: bool = True,
        input_dropout: Mapping[str, float] | None = None,
        coarse_cache: CoarseCellCache | None = None,
        augment: bool = False,
    ):
        self.cube = cube
        self.plan = list(plan)
        self.predicted = list(predicted)
        self.prior_mask = prior_mask
        self.seed = int(seed)
        self.stream = stream
        self.mask_prior = mask_prior
        self.with_prior = with_prior
        self.input_dropout = dict(input_dropout or {})
        bad = {g: p for g, p in self.input_dropout.items() if not 0.0 <= p < 1.0}
        if bad:
            raise ValueError(f"input_dropout probabilities must be in [0, 1), got {bad}")
        names = input_channel_names(cube, self.predicted)
        # validates the group names too
        self._group_channels = {g: group_channels(names, [g]) for g in self.input_dropout}
        self.coarse_cells = coarse_cache if coarse_cache is not None else CoarseCellCache(cube)
        self.augment = augment

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
        rng = self.rng(spec)
        if not self.with_prior:
            keep = None
        elif self.mask_prior:
            keep = prior_keep_mask(rng, shape, self.prior_mask)
        else:
            keep = np.ones(shape, dtype=bool)
        prior = None if keep is None else self.cube.target_window(spec.prior_year, window)
        inputs = build_inputs(
            self.cube,
            scenario=spec.scenario,
            year=spec.year,
            window=window,
            predicted=self.predicted,
            prior=prior,
            direction=spec.direction,
            prior_keep=keep,
            coarse_cells=self.coarse_cells(spec.scenario, spec.year),
        )
        zeroed = self.zeroed_groups(spec)
        for group in zeroed:
            inputs[self._group_channels[group]] = 0.0
        if "prior" in zeroed:
            keep = None
        target = codes_to_index(self.cube.target_window(spec.year, window), self.predicted)
        turns, flip = self.symmetry(spec)
        if turns or flip:
            inputs, target = (_transform(inputs, turns, flip), _transform(target, turns, flip))
        return {
            "inputs": torch.from_numpy(inputs),
            "target": torch.from_numpy(np.ascontiguousarray(target, dtype="int64")),
            "prior_keep_fraction": 0.0 if keep is None else float(keep.mean()),
            "inputs_zeroed": torch.tensor([g in zeroed for g in INPUT_GROUPS]),
            "year": spec.year,
            "direction": spec.direction,
            "row": window.row,
            "col": window.col,
            "index": spec.index,
        }


def _transform(array: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    """``array`` (..., h, w) turned by ``turns`` quarter turns, then mirrored left-right."""
    out = np.rot90(array, turns, axes=(-2, -1))
    if flip:
        out = out[..., ::-1]
    return np.ascontiguousarray(out)
