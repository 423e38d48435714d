"""Tiled sliding-window inference with Gaussian blending.

Two separate steps:

* :func:`plan_windows` says *where*: equal-sized tiles with a fixed overlap covering the
  grid, the last row/column of tiles flush with the bottom/right edge.
* :func:`predict_probabilities` says *what*: it streams batches of windows through the
  model under ``torch.inference_mode`` (channels_last; bf16 autocast on CPUs that
  support it, bf16 or fp16 on GPUs), turns logits into softmax probabilities in float32
  and accumulates them weighted by a Gaussian centred on each tile, so tile seams vanish.

The accumulation lives in :class:`BlendAccumulator`. For the regions this project runs
(up to a few thousand pixels a side) a full (H, W, K) accumulator is fine. For global
maps, windows are planned row by row (:func:`tile_rows`): once a row of tiles is done,
every pixel above the next row's first pixel is final, so the accumulator can be a
rolling band of ``tile_size`` rows that is flushed to the writer row by row. The code
keeps that structure (windows are processed in row order) so the change is local.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ai4land.grid import Window


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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("predict.device is 'cuda' but no CUDA device is available")
    return torch.device(device)


def cpu_supports_bf16() -> bool:
    """True when oneDNN has native bf16 kernels (AVX-512 BF16 / AMX); emulated bf16 is slow."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: torch.device, amp: bool | None = None) -> torch.dtype | None:
    """The autocast dtype for ``device``: None (fp32), bf16 or fp16. ``amp=None`` = auto."""
    if amp is False:
        return None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and (amp is True or cpu_supports_bf16()):
        return torch.bfloat16
    return None


class BlendAccumulator:
    """Gaussian-weighted sum of tile probabilities over an (H, W, K) grid."""

    def __init__(self, shape: tuple[int, int], num_classes: int, tile_shape: tuple[int, int]):
        self.shape = shape
        self.num_classes = num_classes
        self.sum = np.zeros((*shape, num_classes), dtype="float32")
        self.weight = np.zeros(shape, dtype="float32")
        self.tile_weight = gaussian_weights(*tile_shape)

    def add(self, window: Window, probs_hwk: np.ndarray) -> None:
        rows, cols = window.slices
        w = self.tile_weight[: window.height, : window.width]
        self.sum[rows, cols] += probs_hwk * w[..., None]
        self.weight[rows, cols] += w

    def result(self) -> np.ndarray:
        if (self.weight <= 0).any():
            raise RuntimeError("some pixels are not covered by any window")
        self.sum /= self.weight[..., None]
        return self.sum


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


def _batches(items: Sequence[Window], size: int) -> Iterator[list[Window]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, int, int]:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, h, w


def predict_probabilities(
    model: torch.nn.Module,
    *,
    load_window: Callable[[Window], np.ndarray],
    shape: tuple[int, int],
    windows: Sequence[Window],
    batch_size: int = 8,
    device: str | torch.device = "auto",
    amp: bool | None = None,
    pad_multiple: int | None = None,
    progress: bool | None = None,
    description: str = "inference",
) -> np.ndarray:
    """Blend the model's softmax over ``windows``: (H, W, K) float32 probabilities.

    ``load_window(window)`` returns the (C, h, w) float32 input of one window (built with
    :func:`ai4land.samples.features.build_inputs`). Windows whose size is not a multiple
    of ``pad_multiple`` (default ``2**model.depth``, else 16) are padded (reflect) and
    the logits cropped back. ``amp=None`` picks bf16 autocast where the hardware has it.
    ``progress=None`` shows a bar only on a terminal.
    """
    from tqdm.auto import tqdm

    if not windows:
        raise ValueError("no windows to predict")
    device = resolve_device(device)
    dtype = autocast_dtype(device, amp)
    model = fold_batchnorm(model).to(device).to(memory_format=torch.channels_last)
    if pad_multiple is None:
        pad_multiple = 2 ** int(getattr(model, "depth", 4))
    tile_shape = (max(w.height for w in windows), max(w.width for w in windows))

    accumulator: BlendAccumulator | None = None
    # Keep row-major order: rows of tiles complete in turn (see module docstring).
    ordered = [w for row in tile_rows(windows) for w in row]
    bar = tqdm(total=len(ordered), desc=description, unit="tile",
               disable=None if progress is None else not progress,
               leave=False)
    with torch.inference_mode():
        for batch_windows in _batches(ordered, batch_size):
            shapes = {(w.height, w.width) for w in batch_windows}
            for group_shape in sorted(shapes):
                group = [w for w in batch_windows if (w.height, w.width) == group_shape]
                inputs = np.stack([load_window(w) for w in group]).astype("float32", copy=False)
                x = torch.from_numpy(inputs).to(device)
                x, h, w = _pad_to_multiple(x, pad_multiple)
                x = x.contiguous(memory_format=torch.channels_last)
                context = (
                    torch.autocast(device_type=device.type, dtype=dtype)
                    if dtype is not None
                    else contextlib.nullcontext()
                )
                with context:
                    logits = model(x)
                logits = logits[..., :h, :w].float()
                probs = torch.softmax(logits, dim=1).permute(0, 2, 3, 1).contiguous()
                probs_np = probs.cpu().numpy()
                if accumulator is None:
                    accumulator = BlendAccumulator(shape, probs_np.shape[-1], tile_shape)
                for window, tile in zip(group, probs_np, strict=True):
                    accumulator.add(window, tile)
            bar.update(len(batch_windows))
    bar.close()
    assert accumulator is not None
    return accumulator.result()


def coverage_count(windows: Iterable[Window], shape: tuple[int, int]) -> np.ndarray:
    """How many windows cover each pixel (a check used by tests and reports)."""
    count = np.zeros(shape, dtype="int32")
    for window in windows:
        count[window.slices] += 1
    return count


def probability_layers(probs: np.ndarray, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probability of the chosen class index and normalised entropy, both (H, W) float32.

    ``chosen`` holds class indices (-1 where no class was chosen: both layers are NaN).
    Entropy is divided by log(K), so 0 = certain, 1 = uniform.
    """
    k = probs.shape[-1]
    safe = np.clip(chosen, 0, k - 1)
    p_chosen = np.take_along_axis(probs, safe[..., None], axis=-1)[..., 0].astype("float32")
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(probs > 0, probs * np.log(np.maximum(probs, 1e-30)), 0.0)
    entropy = (-plogp.sum(axis=-1) / math.log(k) if k > 1 else np.zeros(chosen.shape))
    entropy = np.clip(entropy, 0.0, 1.0).astype("float32")
    invalid = chosen < 0
    p_chosen[invalid] = np.nan
    entropy[invalid] = np.nan
    return p_chosen, entropy
