"""Assemble the network input of one window: the single place that defines it.

Channel order (recorded in the model card, checked at predict time):

1. coarse variables, then the coarse water fraction, upsampled from their cells
   (NaN, i.e. ocean or missing, read as 0); then, for a model trained with
   ``train.demand``, one demand channel per coarse group (``demand:<group>``: the
   harmonisation target minus the prior's group fractions of the cell,
   :mod:`ai4land.predict.demand`), upsampled the same way; then, for a model trained
   with ``train.smooth_coarse``, one channel per coarse group with variables
   (``smooth:<group>``: the group fractions interpolated bilinearly between the centres
   of the pixel's cell and its neighbours, :mod:`ai4land.samples.smooth`);
2. static features, normalised;
3. the prior: one-hot over the predicted classes, then a "prior known" channel;
4. the chain direction: +1 forward (prior from the previous year), -1 backward.

``build_inputs`` builds one window from the cube (prediction, evaluation);
:class:`BatchInputs` builds a training batch of raw windows (``WindowDataset`` items)
on the training device, the same channels batched as tensor operations.

Channels form three input groups (``input_groups``): ``coarse``, ``static`` and
``prior`` (the prior channels and the direction). A model trained without a group
zeroes its channels itself (``UNet(zero_channels=...)``), so the layout never changes.
The smooth channels count as ``coarse``. The demand channels count as ``coarse`` and
are zeroed with ``prior`` too (the demand
is defined against the prior).
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
import torch

from ai4land.config import PriorMaskConfig
from ai4land.grid import Window
from ai4land.io.cube import Cube, cell_indices, upsample_cells
from ai4land.predict.harmonize import Groups
from ai4land.samples import smooth as smooth_coarse

IGNORE_INDEX = -1
INPUT_GROUPS = ("coarse", "static", "prior")
DEMAND_PREFIX = "demand:"


def class_lookup(predicted: list[int]) -> np.ndarray:
    """A 256-entry table from uint8 class code to class index (-1 for unpredicted codes)."""
    table = np.full(256, IGNORE_INDEX, dtype="int64")
    table[np.asarray(predicted)] = np.arange(len(predicted))
    return table


def codes_to_index(codes: np.ndarray, predicted: list[int]) -> np.ndarray:
    return class_lookup(predicted)[codes]


def input_channel_names(cube: Cube, predicted: list[int], demand: Sequence[str] = (), *,
                        smooth: Groups | None = None) -> list[str]:
    """The input channels' names; ``demand``: the coarse groups of the demand channels
    (none for a model without them); ``smooth``: the coarse groups of a model with smooth
    coarse channels (None: a model without them)."""
    return (
        [f"coarse:{name}" for name in cube.coarse_channel_names]
        + [f"{DEMAND_PREFIX}{name}" for name in demand]
        + ([] if smooth is None else [f"{smooth_coarse.SMOOTH_PREFIX}{name}"
                                      for name in smooth_coarse.smooth_groups(smooth)])
        + [f"static:{name}" for name in cube.static_names]
        + [f"prior:{code}" for code in predicted]
        + ["prior:known", "direction"]
    )


def input_normalisation(cube: Cube) -> dict:
    """How each input group is scaled, with the static mean/std (for the model card)."""
    return {
        "coarse": "fractions as stored in the cube, upsampled (nearest); NaN -> 0",
        "static": {
            name: {"mean": float(cube.static[name].attrs["mean"]),
                   "std": float(cube.static[name].attrs["std"])}
            for name in cube.static_names
        },
        "static_formula": "(value - mean) / std; NaN -> 0",
        "prior": "one-hot over the predicted classes, 0 where hidden or unpredicted; "
                 "prior:known 1 where shown",
        "direction": "+1 forward (prior = previous year), -1 backward (prior = next year)",
    }


def smooth_of(channel_names, groups: Groups) -> Groups | None:
    """``groups`` if ``channel_names`` (a model card's) have smooth coarse channels."""
    return groups if smooth_coarse.smooth_groups_of(channel_names) else None


def channel_group(name: str) -> str:
    """The input group of a channel name from ``input_channel_names`` (demand channels:
    ``coarse``; :func:`group_channels` zeroes them with ``prior`` too)."""
    if name.startswith((DEMAND_PREFIX, smooth_coarse.SMOOTH_PREFIX)):
        return "coarse"
    return "prior" if name == "direction" else name.split(":", 1)[0]


def demand_groups_of(channel_names: Sequence[str]) -> list[str]:
    """The coarse groups of the demand channels among ``channel_names`` (a model card's)."""
    return [n[len(DEMAND_PREFIX):] for n in channel_names if n.startswith(DEMAND_PREFIX)]


def group_channels(channel_names: list[str], groups) -> list[int]:
    """Indices of the channels that belong to ``groups`` (names from ``INPUT_GROUPS``);
    the demand channels belong to ``coarse`` and to ``prior``."""
    unknown = sorted(set(groups) - set(INPUT_GROUPS))
    if unknown:
        raise ValueError(f"unknown input group(s) {unknown}; use {list(INPUT_GROUPS)}")
    groups = set(groups)
    return [i for i, name in enumerate(channel_names)
            if channel_group(name) in groups
            or (name.startswith(DEMAND_PREFIX) and "prior" in groups)]


def prior_channels(
    prior: np.ndarray | None, *, predicted: list[int], keep: np.ndarray | None = None,
    shape: tuple[int, int], out: np.ndarray | None = None,
) -> np.ndarray:
    """One-hot prior plus a 'known' channel; pixels outside ``keep`` count as unknown.

    ``out``: a (K + 1, h, w) float32 array to fill instead of a new one.
    """
    if out is None:
        out = np.empty((len(predicted) + 1, *shape), dtype="float32")
    if prior is None:
        out[...] = 0.0
        return out
    index = _prior_index(prior, predicted, keep)
    np.equal(index[None], np.arange(len(predicted))[:, None, None], out=out[:-1], casting="unsafe")
    np.greater_equal(index, 0, out=out[-1], casting="unsafe")
    return out


def build_inputs(
    cube: Cube,
    *,
    scenario: str,
    year: int,
    window: Window,
    predicted: list[int],
    prior: np.ndarray | None,
    direction: int,
    prior_keep: np.ndarray | None = None,
    coarse_cells: np.ndarray | None = None,
    demand: np.ndarray | None = None,
    smooth: Groups | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The (C, h, w) float32 input of ``window`` for ``year`` under ``scenario``.

    ``smooth``: the coarse groups, for a model with smooth coarse channels (None: without).

    ``demand``: (G, cells_y, cells_x) the demand of the *whole* region's cells
    (:mod:`ai4land.predict.demand`; zeros without a prior) for a model with demand
    channels, ``None`` for a model without them.

    ``coarse_cells``: the cube's coarse cells of the *whole* region for (scenario, year)
    (``cube.coarse_cells(scenario, year, whole)``) when the caller holds them; saves
    reading the coarse store for every window. ``out``: a (C, h, w) float32 array to
    fill (e.g. a slot of a batch buffer) instead of a new one; a channels-last view (a
    slot of a channels_last batch tensor) is filled pixel by pixel in one compiled pass.
    """
    if coarse_cells is None:
        cells = cube.coarse_cells(scenario, year, window)
    else:
        rows, cols = window.coarse_slices(cube.factor)
        cells = coarse_cells[:, rows, cols]
    if demand is not None:
        rows, cols = window.coarse_slices(cube.factor)
        cells = np.concatenate([cells, demand[:, rows, cols].astype("float32", copy=False)])
    static = cube.static_window(window)
    if smooth is not None:  # per-pixel channels, written with the static ones
        static = np.concatenate([_smooth_window(cube, scenario, year, window, coarse_cells,
                                                smooth), static])
    n_coarse, n_static = len(cells), len(static)
    shape = (n_coarse + n_static + len(predicted) + 2, window.height, window.width)
    if out is None:
        out = np.empty(shape, dtype="float32")
    elif out.shape != shape or out.dtype != np.float32:
        raise ValueError(f"out is {out.dtype} {out.shape}, expected float32 {shape}")
    # NaN (ocean, missing) → 0 on the cells, before they are repeated to fine pixels
    cells = np.nan_to_num(cells, nan=0.0)
    if out.transpose(1, 2, 0).flags.c_contiguous:  # channels last: one compiled pass
        index = (np.full((0, 0), IGNORE_INDEX, dtype="int64") if prior is None
                 else _prior_index(prior, predicted, prior_keep))
        _fill_channels_last(
            out.transpose(1, 2, 0), np.ascontiguousarray(cells, dtype="float32"),
            *cell_indices(window, cube.factor), np.ascontiguousarray(static, dtype="float32"),
            index, len(predicted), float(direction))
        return out
    out[:n_coarse] = upsample_cells(cells, factor=cube.factor, window=window)
    out[n_coarse : n_coarse + n_static] = static
    prior_channels(prior, predicted=predicted, keep=prior_keep,
                   shape=(window.height, window.width), out=out[n_coarse + n_static : -1])
    out[-1] = float(direction)
    return out


def _smooth_window(cube: Cube, scenario: str, year: int, window: Window,
                   coarse_cells: np.ndarray | None, groups: Groups) -> np.ndarray:
    """The (G, h, w) smooth coarse channels of ``window``, from its cells and a ring of
    neighbours (those the grid has)."""
    factor = cube.factor
    height, width = cube.fine_grid.shape
    rows, cols = window.coarse_slices(factor)
    r0, c0 = max(rows.start - 1, 0), max(cols.start - 1, 0)
    r1, c1 = min(rows.stop + 1, -(-height // factor)), min(cols.stop + 1, -(-width // factor))
    if coarse_cells is None:
        block = cube.coarse_cells(scenario, year, Window(
            r0 * factor, c0 * factor, min(r1 * factor, height) - r0 * factor,
            min(c1 * factor, width) - c0 * factor))
    else:
        block = coarse_cells[:, r0:r1, c0:c1]
    return smooth_coarse.window_channels(
        block, channel_names=cube.coarse_channel_names, groups=groups,
        names=smooth_coarse.smooth_groups(groups), factor=factor, first_cell=(r0, c0),
        row=window.row, col=window.col, height=window.height, width=window.width)


def _prior_index(prior: np.ndarray, predicted: list[int], keep: np.ndarray | None) -> np.ndarray:
    index = codes_to_index(prior, predicted)
    return index if keep is None else np.where(keep, index, IGNORE_INDEX)


@numba.njit(cache=True, nogil=True)
def _fill_channels_last(out, cells, cell_rows, cell_cols, static, prior_index, n_classes,
                        direction):  # pragma: no cover - compiled
    """The channels of :func:`build_inputs`, written pixel by pixel into an (h, w, C)
    array (a channels_last batch slot): the same values as the planar path, without a
    planar copy to transpose. ``prior_index`` is (0, 0) when there is no prior."""
    height, width, channels = out.shape
    n_coarse, n_static = cells.shape[0], static.shape[0]
    first_prior = n_coarse + n_static
    has_prior = prior_index.shape[0] > 0
    for i in range(height):
        r = cell_rows[i]
        for j in range(width):
            c = cell_cols[j]
            for v in range(n_coarse):
                out[i, j, v] = cells[v, r, c]
            for s in range(n_static):
                out[i, j, n_coarse + s] = static[s, i, j]
            k = prior_index[i, j] if has_prior else -1
            for m in range(n_classes):
                out[i, j, first_prior + m] = 1.0 if m == k else 0.0
            out[i, j, first_prior + n_classes] = 1.0 if k >= 0 else 0.0
            out[i, j, channels - 1] = direction


# --- training batches on the device ---------------------------------------------------

PIXEL_ORDER_SEED = 2026  # the fixed random order of a window's pixels (prior_keep)


def _pixel_order(n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random permutation of ``n`` pixels and its inverse (the same everywhere),
    each written twice in a row (read at ``i + shift`` without a modulo)."""
    order = np.random.default_rng(PIXEL_ORDER_SEED).permutation(n)
    return (torch.as_tensor(np.tile(order, 2), device=device),
            torch.as_tensor(np.tile(np.argsort(order), 2), device=device))


def prior_keep(hidden: torch.Tensor, blocks: torch.Tensor, key: torch.Tensor, *,
               shape: tuple[int, int], block_size: int, order=None) -> torch.Tensor:
    """(B, h, w) bool: the prior pixels each sample shows, from its collated draws
    (:func:`ai4land.samples.dataset.prior_mask_draw`): ``hidden`` (B,) pixels to hide
    (negative: none), ``blocks`` (B, K, 2) corners of hidden squares (-1: none), ``key``
    (B,) choosing the single pixels. The squares are hidden first; the rest of the count
    goes to the first visible pixels in the sample's own order of the pixels (a fixed
    random permutation, shifted over the pixels and through the order by the key), so
    exactly ``hidden`` pixels are hidden whatever the overlaps. ``order``: the
    permutation and its inverse from ``_pixel_order`` when the caller keeps them."""
    height, width = shape
    n = height * width
    n_samples, device = len(hidden), hidden.device
    size = min(block_size, height, width)
    # Squares: +1/-1 at their corners, then 2-D running sums (counts overlaps).
    corners = torch.zeros((n_samples, height + 1, width + 1), dtype=torch.int32, device=device)
    valid = (blocks[..., 0] >= 0).to(torch.int32)
    sample = torch.arange(n_samples, device=device)[:, None].expand(valid.shape)
    row, col = blocks[..., 0].clamp(min=0), blocks[..., 1].clamp(min=0)
    for dr, dc, sign in ((0, 0, 1), (0, size, -1), (size, 0, -1), (size, size, 1)):
        corners.index_put_((sample, row + dr, col + dc), sign * valid, accumulate=True)
    covered = (corners.cumsum(1).cumsum(2)[:, :height, :width] > 0).flatten(1)
    remaining = hidden - covered.sum(1)
    # Position of pixel p in the sample's order: (order[(p + shift) % n] + offset) % n.
    permutation, inverse = order if order is not None else _pixel_order(n, device)
    shift, offset = (key % n)[:, None], (key // n % n)[:, None]
    pixel = torch.arange(n, device=device)
    position = permutation[pixel + shift] + offset
    position -= n * (position >= n)
    at_position = inverse[pixel + (n - offset)] - shift  # the pixel at each position
    at_position += n * (at_position < 0)
    free = (~covered).gather(1, at_position)
    before = free.cumsum(1) - free.to(torch.int64)  # visible pixels earlier in the order
    chosen = free & (before < remaining[:, None])
    return ~(covered | chosen.gather(1, position)).view(-1, height, width)


def _symmetry_sources(size: int, device) -> torch.Tensor:
    """(8, size * size): for each symmetry (quarter turns + 4 if then mirrored
    left-right, as ``np.rot90`` and ``np.fliplr``) the source pixel of each pixel."""
    i = torch.arange(size, device=device)[:, None].expand(size, size)
    j = torch.arange(size, device=device)[None, :].expand(size, size)
    last = size - 1
    out = []
    for flip in (False, True):
        jj = last - j if flip else j
        for r, c in ((i, jj), (jj, last - i), (last - i, last - jj), (last - jj, i)):
            out.append((r * size + c).flatten())
    return torch.stack(out)


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x`` (B, ..., h, w) with its pixels taken at ``index`` (B, h * w) per sample."""
    flat = x.flatten(-2)
    if flat.dim() == 2:
        return flat.gather(1, index).view(x.shape)
    expanded = index.view(index.shape[0], *[1] * (flat.dim() - 2), -1).expand(flat.shape)
    return flat.gather(-1, expanded).view(x.shape)


class BatchInputs:
    """The network input of a collated batch of ``WindowDataset`` items, built on the
    batch's device: the channels of :func:`build_inputs` (coarse cells upsampled, NaN
    read as 0; static features normalised; the prior one-hot with hidden pixels
    unknown; the direction), then the drawn input groups zeroed and each sample turned
    by its drawn symmetry (``augment``). Returns ``inputs`` float32 (B, C, h, w),
    ``target`` int64 (B, h, w) class indices (-1 ignored), ``changed`` bool (B, h, w)
    where the target's class differs from the prior's, ``prior_keep_fraction`` (B,)
    (0 without a prior), ``inputs_zeroed`` (B, len(INPUT_GROUPS)) and the items'
    ``year``, ``direction``, ``row``, ``col``, ``index``.

    ``smooth_matrix`` (G, V): a model with smooth coarse channels (the batch then holds
    ``ring``, each window's cells with a ring of neighbours); row g sums the coarse
    variables of smooth group g (:func:`ai4land.samples.smooth.group_matrix`).
    """

    def __init__(self, *, predicted: list[int], factor: int, static_mean, static_std,
                 n_coarse: int, prior_mask: PriorMaskConfig, augment: bool = False,
                 smooth_matrix: np.ndarray | None = None):
        self.predicted = list(predicted)
        self.factor = int(factor)
        self.mean = torch.as_tensor(np.asarray(static_mean, dtype="float32"))
        self.std = torch.as_tensor(np.asarray(static_std, dtype="float32"))
        self.n_coarse = int(n_coarse)
        self.prior_mask = prior_mask
        self.augment = augment
        self.smooth_matrix = (None if smooth_matrix is None
                              else torch.as_tensor(np.asarray(smooth_matrix, dtype="float32")))
        self._constants: dict = {}
        self._sources: dict = {}
        self._orders: dict = {}

    @classmethod
    def of(cls, arrays, *, predicted: list[int], prior_mask: PriorMaskConfig,
           augment: bool = False, smooth_matrix: np.ndarray | None = None) -> BatchInputs:
        """For batches of :class:`~ai4land.samples.arrays.TrainingArrays` windows."""
        return cls(predicted=predicted, factor=arrays.factor, static_mean=arrays.static_mean,
                   static_std=arrays.static_std,
                   n_coarse=arrays.cells.shape[1] + arrays.n_demand,
                   prior_mask=prior_mask, augment=augment, smooth_matrix=smooth_matrix)

    def _on(self, device) -> dict:
        device = torch.device(device)
        if device not in self._constants:
            self._constants[device] = {
                "lookup": torch.as_tensor(class_lookup(self.predicted), device=device),
                "classes": torch.arange(len(self.predicted), device=device)[None, :, None, None],
                "mean": self.mean.to(device)[:, None, None],
                "std": self.std.to(device)[:, None, None],
                "smooth": (None if self.smooth_matrix is None
                           else self.smooth_matrix.to(device)),
            }
        return self._constants[device]

    def __call__(self, batch: dict, device=None, *, channels_last: bool = False) -> dict:
        """Build ``batch`` on ``device`` (default: where it is); ``channels_last``: lay the
        inputs out as the model's channels_last input (no copy later)."""
        device = torch.device(device) if device is not None else batch["target"].device
        k = self._on(device)

        def get(key):
            return batch[key].to(device, non_blocking=True)

        zeroed = get("inputs_zeroed")
        kept = (~zeroed).to(torch.float32)  # (B, groups): 0 where a group is zeroed
        cells = torch.nan_to_num(get("cells"), nan=0.0) * kept[:, 0, None, None, None]
        codes, prior_codes = get("target"), get("prior")
        n, height, width = codes.shape
        offset = get("cell_offset")
        cell_rows = (offset[:, :1] + torch.arange(height, device=device)) // self.factor
        cell_cols = (offset[:, 1:] + torch.arange(width, device=device)) // self.factor
        cell_index = (cell_rows[:, :, None] * cells.shape[-1] + cell_cols[:, None, :]).flatten(1)
        has_prior = get("has_prior")  # False where 'prior' is zeroed
        if (height * width, device) not in self._orders:
            self._orders[height * width, device] = _pixel_order(height * width, device)
        keep = prior_keep(get("prior_hidden"), get("mask_blocks"), get("mask_key"),
                          shape=(height, width), block_size=self.prior_mask.block_size,
                          order=self._orders[height * width, device])
        keep &= has_prior[:, None, None]
        prior = k["lookup"][prior_codes.long()]
        target = k["lookup"][codes.long()]
        # pixels whose class differs from the prior's (hidden or not): train.change_weight
        changed = (prior != target) & (prior >= 0) & has_prior[:, None, None]
        prior.masked_fill_(~keep, IGNORE_INDEX)
        static = get("static")
        if k["smooth"] is not None:  # per-pixel channels, placed before the static ones
            smooth = self._smooth(get("ring"), k["smooth"], offset, cell_index, (height, width))
            static = torch.cat([smooth * kept[:, 0, None, None, None], static], 1)
        if self.augment:
            if height != width:
                raise ValueError(f"augment turns square windows only, got {height}x{width}")
            if (height, device) not in self._sources:
                self._sources[height, device] = _symmetry_sources(height, device)
            source = self._sources[height, device][get("symmetry")]
            prior, target, static, changed = (_take(x, source)
                                              for x in (prior, target, static, changed))
            cell_index = cell_index.gather(1, source)
        n_static, n_classes = static.shape[1], len(self.predicted)
        n_smooth = 0 if k["smooth"] is None else k["smooth"].shape[0]
        first_prior = self.n_coarse + n_static
        inputs = torch.empty((n, first_prior + n_classes + 2, height, width), device=device,
                             memory_format=torch.channels_last if channels_last
                             else torch.contiguous_format)
        inputs[:, : self.n_coarse] = cells.flatten(2).gather(
            2, cell_index[:, None, :].expand(n, cells.shape[1], -1)).view(
            n, self.n_coarse, height, width)
        inputs[:, self.n_coarse : self.n_coarse + n_smooth] = static[:, :n_smooth]
        normalised = inputs[:, self.n_coarse + n_smooth : first_prior]
        torch.sub(static[:, n_smooth:], k["mean"], out=normalised)
        normalised.div_(k["std"]).nan_to_num_(nan=0.0).mul_(kept[:, 1, None, None, None])
        known = prior >= 0
        one_hot = inputs[:, first_prior : first_prior + n_classes]
        one_hot.zero_().scatter_(1, prior.clamp(min=0)[:, None], known[:, None].to(torch.float32))
        inputs[:, -2] = known
        inputs[:, -1] = (get("direction") * kept[:, 2])[:, None, None]
        fraction = keep.flatten(1).float().mean(1)
        return {
            "inputs": inputs,
            "target": target,
            "changed": changed,
            "prior_keep_fraction": torch.where(has_prior, fraction, 0.0),
            "inputs_zeroed": zeroed,
            **{key: batch[key] for key in ("year", "direction", "row", "col", "index")},
        }

    def _smooth(self, ring: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor,
                cell_index: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """(B, G, h, w) smooth coarse channels (:mod:`ai4land.samples.smooth`) from the
        windows' cells with their ring (B, V, m + 2, n + 2), before any symmetry."""
        height, width = shape
        knot = smooth_coarse.knots_torch(ring, matrix)  # (B, 3, 3, G, m, n)
        n, g = knot.shape[0], knot.shape[3]
        flat = knot.reshape(n, 9 * g, -1)
        at = flat.gather(2, cell_index[:, None, :].expand(n, 9 * g, -1)).view(
            n, 3, 3, g, height, width)
        factor, device = self.factor, ring.device
        u = ((offset[:, :1] + torch.arange(height, device=device)) % factor + 0.5) / factor - 0.5
        v = ((offset[:, 1:] + torch.arange(width, device=device)) % factor + 0.5) / factor - 0.5
        down = (u > 0)[:, None, :, None]  # (B, 1, h, 1)
        right = (v > 0)[:, None, None, :]  # (B, 1, 1, w)
        wu = u.abs().float()[:, None, :, None]
        wv = v.abs().float()[:, None, None, :]
        own = at[:, 1, 1]
        vertical = torch.where(down, at[:, 2, 1], at[:, 0, 1])
        horizontal = torch.where(right, at[:, 1, 2], at[:, 1, 0])
        diagonal = torch.where(down, torch.where(right, at[:, 2, 2], at[:, 2, 0]),
                               torch.where(right, at[:, 0, 2], at[:, 0, 0]))
        return ((1 - wu) * (1 - wv) * own + wu * (1 - wv) * vertical
                + (1 - wu) * wv * horizontal + wu * wv * diagonal)
