"""Tiled sliding-window inference with Gaussian blending, streamed row band by row band.

Two separate steps:

* :func:`plan_windows` says *where*: equal-sized tiles with a fixed overlap covering the
  grid, the last row/column of tiles flush with the bottom/right edge.
* :func:`stream_probabilities` says *what*: it runs batches of windows through the
  model under ``torch.inference_mode`` (channels_last; bf16 autocast on CPUs that
  support it, bf16 or fp16 on GPUs), turns logits into softmax probabilities in float32
  and accumulates them weighted by a Gaussian centred on each tile, so tile seams vanish.

Memory does not grow with the region: windows run in row-major order, and once the last
tile of a row of tiles is added, every pixel above the next row's first pixel is final.
:class:`BandAccumulator` holds only one tile height of rows; final rows leave it as a
band, in order, so callers can harmonise and write them before the next band exists.

Optional ensembles (:data:`ENSEMBLES`): test-time augmentation (the model on flipped
inputs, outputs flipped back) or MC dropout (dropout layers left on). The blended
probability is the member mean; two extra channels carry the member spread: the
standard deviation over members of the probability of the mean's most probable class,
and the share of members whose most probable class differs from the mean's.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

import numba
import numpy as np
import torch
import torch.nn.functional as F

from ai4land.device import autocast_dtype, resolve_device
from ai4land.grid import Window
from ai4land.io.prefetch import Prefetch

# load_window(window, out=None) -> (C_in, h, w) float32 input, ``out`` filled if given
WindowLoader = Callable[..., np.ndarray]
# load_batch(windows) -> (B, C_in, h, w) float32 input of same-shaped windows, built on the
# device (:class:`ai4land.predict.probabilities.DeviceInputs`)
BatchLoader = Callable[[Sequence[Window]], torch.Tensor]


# --- planning -----------------------------------------------------------------------


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    """Tile start offsets along one axis; the last tile ends exactly at ``length``."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"overlap {overlap} must be smaller than tile size {tile}")
    starts = list(range(0, length - tile + 1, stride))
    if starts[-1] != length - tile:
        starts.append(length - tile)
    return starts


def plan_windows(shape: tuple[int, int], *, tile_size: int, overlap: int) -> list[Window]:
    """Windows of ``tile_size`` (clipped to the grid) overlapping by ``overlap`` pixels.

    Windows come in row-major order. Every window has the same size, so they batch; a
    grid smaller than the tile gives one window of the grid's size.
    """
    height, width = shape
    if height <= 0 or width <= 0:
        raise ValueError(f"cannot plan windows on an empty grid {shape}")
    th, tw = min(tile_size, height), min(tile_size, width)
    return [
        Window(row=r, col=c, height=th, width=tw)
        for r in _starts(height, tile_size, overlap)
        for c in _starts(width, tile_size, overlap)
    ]


def tile_rows(windows: Sequence[Window]) -> list[list[Window]]:
    """Group row-major windows into rows of tiles (same first row)."""
    rows: dict[int, list[Window]] = {}
    for window in windows:
        rows.setdefault(window.row, []).append(window)
    return [rows[r] for r in sorted(rows)]


def gaussian_weights(height: int, width: int, *, sigma_scale: float = 0.125) -> np.ndarray:
    """A (height, width) float32 Gaussian with peak 1, sigma = ``sigma_scale`` × size.

    Edge values are raised to a small positive floor so every pixel of a tile counts
    (the grid's own edges are only ever covered by tile edges).
    """

    def axis(n: int) -> np.ndarray:
        sigma = max(n * sigma_scale, 1e-6)
        x = np.arange(n, dtype="float64") - (n - 1) / 2
        return np.exp(-0.5 * (x / sigma) ** 2)

    weights = np.outer(axis(height), axis(width))
    weights /= weights.max()
    return np.maximum(weights, 1e-3).astype("float32")


# --- running ------------------------------------------------------------------------


class BandAccumulator:
    """Gaussian-weighted sum of tile outputs over a rolling band of full-width rows.

    Holds rows ``top .. top + capacity`` of a (H, W, C) grid; :meth:`pop` returns the
    blended rows above a given row and moves the band down. Each pixel sees the same
    additions in the same order as a whole-grid accumulator, so the result is identical.
    """

    def __init__(self, shape: tuple[int, int], channels: int, tile_shape: tuple[int, int]):
        self.shape = shape
        self.top = 0
        self.capacity = min(tile_shape[0], shape[0])
        self.sum = np.zeros((self.capacity, shape[1], channels), dtype="float32")
        self.weight = np.zeros((self.capacity, shape[1]), dtype="float32")
        self.tile_weight = gaussian_weights(*tile_shape)

    def _slices(self, window: Window) -> tuple[slice, slice]:
        row = window.row - self.top
        if row < 0 or row + window.height > self.capacity:
            raise RuntimeError(f"window {window} lies outside the band of rows "
                               f"{self.top}..{self.top + self.capacity}")
        return slice(row, row + window.height), slice(window.col, window.col + window.width)

    def add(self, window: Window, values_hwc: np.ndarray) -> None:
        rows, cols = self._slices(window)
        _add_weighted(self.sum[rows, cols], self.weight[rows, cols],
                      np.ascontiguousarray(values_hwc, dtype="float32"),
                      self.tile_weight[: window.height, : window.width])

    def add_weight(self, window: Window) -> None:
        """A window that was not run: its weight without values (``skip`` of
        :func:`stream_probabilities`)."""
        self.weight[self._slices(window)] += self.tile_weight[: window.height, : window.width]

    def pop(self, until: int) -> np.ndarray:
        """Blended rows ``top .. until`` (final: no later window may touch them)."""
        n = until - self.top
        if not 0 < n <= self.capacity:
            raise RuntimeError(f"cannot finalise rows {self.top}..{until}")
        if (self.weight[:n] <= 0).any():
            raise RuntimeError("some pixels are not covered by any window")
        band = self.sum[:n] / self.weight[:n, :, None]
        self.sum[: self.capacity - n] = self.sum[n:]
        self.weight[: self.capacity - n] = self.weight[n:]
        self.sum[self.capacity - n :] = 0
        self.weight[self.capacity - n :] = 0
        self.top = until
        return band


@numba.njit(cache=True, nogil=True)
def _add_weighted(total, weight, values, tile_weight):  # pragma: no cover - compiled
    """``total += values * tile_weight[..., None]; weight += tile_weight`` in one pass
    (the same float32 roundings as numpy's two)."""
    height, width, channels = values.shape
    for i in range(height):
        for j in range(width):
            w = tile_weight[i, j]
            for c in range(channels):
                total[i, j, c] += values[i, j, c] * w
            weight[i, j] += w


def fold_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy of ``model`` with each Conv2d → BatchNorm2d pair (consecutive in
    an ``nn.Sequential``) folded into one conv; the caller's model is left untouched."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model = copy.deepcopy(model).eval()
    for module in model.modules():
        if not isinstance(module, torch.nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:], strict=False):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(norm, torch.nn.BatchNorm2d):
                module._modules[first] = fuse_conv_bn_eval(conv, norm)
                module._modules[second] = torch.nn.Identity()
    return model


ENSEMBLES = ("none", "tta", "mc_dropout")
# Test-time augmentation members: the flips (tensor dims) applied to input and output.
TTA_FLIPS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))
SPREAD_CHANNELS = 2  # after the K class channels: std of the top class, disagreement


def enable_mc_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Switch the dropout layers of an eval-mode ``model`` back on (MC dropout)."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    if not layers:
        raise ValueError("the model has no dropout layers (train it with train.dropout > 0)")
    for layer in layers:
        layer.train()
    return model


def plan_batches(windows: Sequence[Window], batch_size: int) -> list[list[Window]]:
    """Batches of at most ``batch_size`` windows, never spanning two rows of tiles.

    A row's band of blended probabilities is final once its last batch is done, so
    harmonising and writing it can overlap the next row's forward passes; a batch
    spanning rows would hold the band back (on a narrow region, all of them).
    """
    return [row[start : start + batch_size] for row in tile_rows(windows)
            for start in range(0, len(row), batch_size)]


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


class _InputBuffers:
    """The batch input, in one reused channels_last tensor. On a CPU, windows that need
    no padding are built straight into their slot (``load_window(window, out=slot)``
    with a channels-last view: no planar copy to transpose); otherwise (padding, a GPU,
    the buffer's first window) a window is built in one reused host array, then copied
    (padded if needed) into its slot. Reuse saves the page faults of fresh large arrays;
    one window at a time keeps a batch's input in host memory once, not twice (that
    saved ~0.4 GB for a batch of 16 windows of 512 x 512). Copies on a CPU are numpy's,
    single-threaded: batches are built in their own thread while the model runs.
    """

    def __init__(self, batch_size: int, device: torch.device):
        self.batch_size, self.device = batch_size, device
        self.host: np.ndarray | None = None  # (C, h, w)
        self.tensor: torch.Tensor | None = None

    def batch(self, windows: Sequence[Window], load_window: WindowLoader,
              pad_multiple: int) -> tuple[torch.Tensor, int, int]:
        """(B, C, h', w') channels_last input of ``windows`` (all of one shape) padded to
        ``pad_multiple``; and the unpadded h, w."""
        h = w = 0
        for i, window in enumerate(windows):
            h, w = window.height, window.width
            if (self.device.type == "cpu" and self.tensor is not None
                    and self.tensor.shape[0] > i and tuple(self.tensor.shape[2:]) == (h, w)):
                # no padding: built straight into the slot (channels last in memory)
                slot = self.tensor[i].numpy()
                values = load_window(window, out=slot)
                if not np.shares_memory(values, slot):
                    np.copyto(slot, values)
                continue
            fits = self.host is not None and self.host.shape[1:] == (window.height, window.width)
            out = self.host if fits else None
            values = load_window(window, out=out)
            if out is None or not np.shares_memory(values, out):  # a new array: copy it
                if self.host is None or self.host.shape != values.shape:
                    self.host = np.empty(values.shape, dtype="float32")
                self.host[...] = values
            x, h, w = _pad_to_multiple(torch.from_numpy(self.host)[None], pad_multiple)
            shape = (max(self.batch_size, len(windows)), *x.shape[1:])
            if self.tensor is None or tuple(self.tensor.shape) != shape:
                self.tensor = torch.empty(shape, dtype=torch.float32, device=self.device,
                                          memory_format=torch.channels_last)
            if self.device.type == "cpu":
                np.copyto(self.tensor[i].numpy(), x[0].numpy())
            else:
                self.tensor[i].copy_(x[0])
        return self.tensor[: len(windows)], h, w


def _batch_inputs(batches: Sequence[Sequence[Window]], load_window: WindowLoader, *,
                  batch_size: int, device: torch.device, pad_multiple: int,
                  buffers: int, load_batch: BatchLoader | None = None) -> Iterator[tuple]:
    """``(windows, x, h, w)`` per group of same-shaped windows of each batch, built in
    ``buffers`` input buffers taken in turn. The consumer must be done with an item
    before the one ``buffers`` items on is built: under :class:`Prefetch` (depth d)
    with at most s items in flight, that takes s + d + 1. With ``load_batch`` each
    group is built by it instead, in a new tensor on the device."""
    ring = [_InputBuffers(batch_size, device) for _ in range(buffers)]
    item = 0
    for batch_windows in batches:
        for group_shape in sorted({(w.height, w.width) for w in batch_windows}):
            group = [w for w in batch_windows if (w.height, w.width) == group_shape]
            if load_batch is not None:
                x, h, w = _pad_to_multiple(load_batch(group), pad_multiple)
                yield group, x.contiguous(memory_format=torch.channels_last), h, w
                continue
            x, h, w = ring[item % buffers].batch(group, load_window, pad_multiple)
            item += 1
            yield group, x, h, w


@contextlib.contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` for the block (threads started inside
    take it up), then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _softmax(model, x: torch.Tensor, *, h: int, w: int, dtype: torch.dtype | None,
             flip: tuple[int, ...] = ()) -> torch.Tensor:
    """(B, K, h, w) float32 softmax of one forward pass (on ``x`` flipped by ``flip``)."""
    if flip:
        x = torch.flip(x, flip).contiguous(memory_format=torch.channels_last)
    context = (torch.autocast(device_type=x.device.type, dtype=dtype) if dtype is not None
               else contextlib.nullcontext())
    with context:
        logits = model(x)
    if flip:
        logits = torch.flip(logits, flip)
    return torch.softmax(logits[..., :h, :w], dim=1, dtype=torch.float32)


def _ensemble(members: list[torch.Tensor]) -> torch.Tensor:
    """Member softmaxes (M x (B, K, h, w)) → (B, K + 2, h, w): mean, top-class std, disagreement."""
    stack = torch.stack(members)
    mean = stack.mean(dim=0)
    top = mean.argmax(dim=1, keepdim=True)  # (B, 1, h, w)
    p_top = torch.gather(stack, 2, top.expand(len(members), *top.shape))[:, :, 0]
    std = p_top.std(dim=0, unbiased=False)
    disagree = (stack.argmax(dim=2) != top[:, 0]).float().mean(dim=0)
    return torch.cat([mean, std[:, None], disagree[:, None]], dim=1)


def _run_windows(windows: Sequence[Window], skip: frozenset, ensemble: str,
                 members: int) -> list[Window]:
    """The windows to run; ValueError for a request that cannot run."""
    if not windows:
        raise ValueError("no windows to predict")
    run_windows = [w for w in windows if w not in skip]
    if not run_windows:
        raise ValueError("every window is skipped: nothing to predict")
    if ensemble not in ENSEMBLES:
        raise ValueError(f"unknown ensemble {ensemble!r}; use one of {ENSEMBLES}")
    if ensemble == "tta" and not 2 <= members <= len(TTA_FLIPS):
        raise ValueError(f"tta has 2 to {len(TTA_FLIPS)} members (flips), got {members}")
    if ensemble == "mc_dropout" and members < 2:
        raise ValueError(f"mc_dropout needs at least 2 members, got {members}")
    return run_windows


def _forward(model, x: torch.Tensor, h: int, w: int, *, dtype: torch.dtype | None,
             flips: Sequence[tuple[int, ...]], ensemble: str) -> np.ndarray:
    """(B, h, w, C) blended-member probabilities of one input batch."""
    with torch.inference_mode():  # thread-local, like autocast
        probs = [_softmax(model, x, h=h, w=w, dtype=dtype, flip=f) for f in flips]
        out = probs[0] if ensemble == "none" else _ensemble(probs)
        return out.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _passes_in_order(pool: ThreadPoolExecutor, forward: Callable, items: Iterator[tuple],
                     streams: int) -> Iterator[tuple[list[Window], np.ndarray]]:
    """``(windows, outputs)`` of each input item, in order, run ``streams`` at a time."""
    pending: collections.deque = collections.deque()  # in window order

    def top_up() -> None:
        """Start passes while fewer than `streams` run (a stream that finished early,
        e.g. on a row's shorter last batch, takes the next one at once); at most
        streams + 1 wait for their turn to be blended (each holds an input buffer)."""
        while (len(pending) <= streams
               and sum(not future.done() for _, future in pending) < streams):
            item = next(items, None)
            if item is None:
                return
            group, x, h, w = item
            pending.append((group, pool.submit(forward, x, h, w)))

    top_up()
    while pending:
        oldest = pending[0][1]
        while not oldest.done():
            wait([f for _, f in pending if not f.done()], return_when=FIRST_COMPLETED)
            top_up()
        group, future = pending.popleft()
        values = future.result()
        top_up()
        yield group, values


class _Blender:
    """Adds window outputs to a :class:`BandAccumulator` in the plan's order (a skipped
    window adds its blending weight only) and hands out each row band they complete."""

    def __init__(self, windows: Sequence[Window], shape: tuple[int, int], *,
                 skip: frozenset, on_added: Callable[[], object]):
        self.shape, self.skip, self.on_added = shape, skip, on_added
        self.tile_shape = (max(w.height for w in windows), max(w.width for w in windows))
        rows = tile_rows(windows)
        self.last_of_row = {row[-1]: (rows[i + 1][0].row if i + 1 < len(rows) else shape[0])
                            for i, row in enumerate(rows)}
        self.accumulator: BandAccumulator | None = None
        self.outputs: dict[Window, np.ndarray] = {}
        self.order = iter(windows)  # the blend's order: every window, skipped ones included
        self.next_window = next(self.order)

    def add(self, group: Sequence[Window], values: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
        """Take the outputs of ``group``; yield ``(row, band)`` for each band of rows the
        windows now in (or skipped) complete, top to bottom."""
        self.outputs.update(zip(group, values, strict=True))
        if self.accumulator is None:
            self.accumulator = BandAccumulator(self.shape, values.shape[-1], self.tile_shape)
        accumulator = self.accumulator
        while self.next_window is not None and (self.next_window in self.skip
                                                or self.next_window in self.outputs):
            window = self.next_window
            if window in self.skip:
                accumulator.add_weight(window)
            else:
                accumulator.add(window, self.outputs.pop(window))
                self.on_added()
            if window in self.last_of_row:
                top = accumulator.top
                yield top, accumulator.pop(self.last_of_row[window])
            self.next_window = next(self.order, None)


def _stream_count(streams: int, device: torch.device, ensemble: str) -> int:
    """On a CPU, ``streams`` single-threaded model passes run side by side, each on its
    share of the batch: no thread waits at the barriers of a multi-threaded operator
    (9 % faster here), and the job's other threads take cores without stalling them.
    MC dropout keeps one stream: its masks come from one random generator, in order."""
    if device.type != "cpu" or ensemble == "mc_dropout":
        return 1
    return max(1, streams)


def stream_probabilities(
    model: torch.nn.Module,
    *,
    load_window: WindowLoader,
    shape: tuple[int, int],
    windows: Sequence[Window],
    batch_size: int = 8,
    device: str | torch.device = "auto",
    amp: bool | None = None,
    pad_multiple: int | None = None,
    ensemble: str = "none",
    members: int = 1,
    seed: int = 0,
    progress: bool | None = None,
    description: str = "inference",
    streams: int = 1,
    skip: Collection[Window] = (),
    load_batch: BatchLoader | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(row, band)``: blended (h, W, C) float32 rows, top to bottom, covering the grid.

    ``load_window(window, out=None)`` returns the (C_in, h, w) float32 input of one
    window (built with :func:`ai4land.samples.features.build_inputs`); given ``out``, a
    slot of the batch buffer, it may fill and return that instead of a new array.
    ``load_batch(windows)``, if given, builds the input of a group of same-shaped windows
    at once on the device instead (the raw arrays cross to a GPU, not the inputs).
    Windows whose size is not a multiple of ``pad_multiple`` (default ``2**model.depth``,
    else 16) are padded (reflect) and the logits cropped back. ``amp=None`` picks bf16
    autocast where the hardware has it. C is K, plus :data:`SPREAD_CHANNELS` with an
    ensemble of ``members`` (``tta``: up to 4 flips; ``mc_dropout``: dropout on, torch
    seeded with ``seed``). ``progress=None`` shows a bar only on a terminal. On a CPU,
    ``streams`` > 1 runs that many single-threaded forward passes at once, each on
    ``batch_size / streams`` windows (the blend is the same: tiles are added in order).

    ``skip``: windows of ``windows`` not run (e.g. open ocean): each adds its blending
    weight but no probability, so its pixels blend to the run windows' values scaled
    down, or to 0 where no run window covers them; every other pixel is as without
    ``skip``. The caller masks the skipped windows' pixels out.
    """
    from tqdm.auto import tqdm

    skip = frozenset(skip)
    run_windows = _run_windows(windows, skip, ensemble, members)
    device = resolve_device(device)
    dtype = autocast_dtype(device, amp)
    flips = TTA_FLIPS[:members] if ensemble == "tta" else ((),) * max(members, 1)
    if pad_multiple is None:
        pad_multiple = 2 ** int(getattr(model, "depth", 4))

    streams = _stream_count(streams, device, ensemble)
    stream_batch = -(-batch_size // streams)  # windows per forward pass of a stream
    batches = plan_batches(run_windows, stream_batch)
    bar = tqdm(total=len(run_windows), desc=description, unit="tile",
               disable=None if progress is None else not progress, leave=False)
    blender = _Blender(windows, shape, skip=skip, on_added=lambda: bar.update(1))

    with contextlib.ExitStack() as stack:
        # inputs are built (reading the cube) in their own thread, ahead of the model
        inputs = stack.enter_context(Prefetch(
            _batch_inputs(batches, load_window, batch_size=stream_batch, device=device,
                          pad_multiple=pad_multiple, buffers=streams + 3,
                          load_batch=load_batch),
            depth=1, name="ai4land-inputs"))
        model = fold_batchnorm(model).to(device).to(memory_format=torch.channels_last)
        if ensemble == "mc_dropout":
            enable_mc_dropout(model)
            stack.enter_context(torch.random.fork_rng(devices=[]))
            torch.manual_seed(seed)
        if streams > 1:
            stack.enter_context(_intra_op_threads(1))
        pool = ThreadPoolExecutor(streams, thread_name_prefix="ai4land-model")
        stack.callback(pool.shutdown, cancel_futures=True)
        forward = functools.partial(_forward, model, dtype=dtype, flips=flips, ensemble=ensemble)
        for group, values in _passes_in_order(pool, forward, iter(inputs), streams):
            yield from blender.add(group, values)  # row-major: rows of tiles complete in turn
    bar.close()


def predict_probabilities(model: torch.nn.Module, **kwargs) -> np.ndarray:
    """The whole (H, W, C) blend of :func:`stream_probabilities` (small regions, tests)."""
    return np.concatenate([band for _, band in stream_probabilities(model, **kwargs)])


def coverage_count(windows: Iterable[Window], shape: tuple[int, int]) -> np.ndarray:
    """How many windows cover each pixel (a check used by tests and reports)."""
    count = np.zeros(shape, dtype="int32")
    for window in windows:
        count[window.slices] += 1
    return count


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of a model's weights (names, dtypes, shapes, values), not of the file.

    ``torch.save`` zip archives carry the name of the file they were written to, so
    byte hashes of ``model.pt`` can differ for identical weights; this one does not.
    """
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{value.dtype}:{tuple(value.shape)};".encode())
        array = value.numpy() if value.dtype != torch.bfloat16 else value.view(torch.int16).numpy()
        digest.update(memoryview(array).cast("B"))  # the same bytes, without a copy
    return digest.hexdigest()
