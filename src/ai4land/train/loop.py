"""Training: one process, or one per rank under ``torchrun`` (DDP; gloo on CPU, nccl on GPU).

One command line, ``ai4land train --config C --output O --split S`` (also reachable as
``python -m ai4land.train ...``), run as a single process or under torchrun:
``ai4land torchrun --nproc N -- train ...`` (what the workflow runs) or
``torchrun --standalone --nproc_per_node=N -m ai4land.train ...``. In Python:
``run_training(config, output_dir=..., split_path=...)``.

Exact resume: the data of step ``s`` of epoch ``e`` is a pure function of
(seed, e, s) (see ``ai4land.samples.plan``), and ``checkpoints/last.pt`` holds the
model, optimiser, scheduler, scaler, position, partial-epoch statistics, early-stopping
state and the RNG states of every rank. A run killed and resumed logs the same losses
as an uninterrupted one (bit for bit on CPU).

Outputs (rank 0) under ``output_dir``: ``model.pt`` + ``model_card.json`` (best
validation weights), ``metrics.csv`` / ``metrics.jsonl`` (one row per epoch, with
``data_wait``: the share of training time spent waiting for batches),
``steps.jsonl`` (one row per optimiser step), ``checkpoints/{last,best}.pt`` and, with
``train.tensorboard``, TensorBoard scalars under ``tensorboard/``.

One trainer per model directory: rank 0 holds an exclusive lock on ``.train.lock`` in
it for the whole run (a second trainer stops with one line), and a torchrun worker
dies with its agent (:func:`ai4land.train.launch.die_with_parent`), so a killed job leaves
no worker writing ``last.pt`` beside its restart.

Input pipeline: the training years of the cube are copied once into plain arrays
(``TrainingArrays``: in memory, or memory-mapped under ``train.cache_dir``); samples are
raw window slices of them (``WindowDataset``), read by ``train.num_workers`` loader
processes (0: in this process; pinned memory on CUDA), and each collated batch is built
into the network input on the training device (``BatchInputs``: one-hot, upsampling,
normalisation, prior masking, input dropout, symmetries as batched tensor operations).
A background thread keeps ``train.prefetch`` built batches ahead of the model.
"""

from __future__ import annotations

import csv
import fcntl
import hashlib
import json
import logging
import math
import os
import random
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ai4land.config import slice_hash, stage_config, unsliced
from ai4land.device import autocast_dtype, resolve_device
from ai4land.errors import ConfigError, InputDataError, OutputError
from ai4land.grid import Window
from ai4land.io.atomic import atomic_path
from ai4land.io.cube import Cube
from ai4land.io.prefetch import Prefetch
from ai4land.models.card import ModelCard, code_version, save_model
from ai4land.models.unet import UNet
from ai4land.predict.demand import training_demand
from ai4land.predict.harmonize import class_groups
from ai4land.samples.arrays import TrainingArrays
from ai4land.samples.dataset import WindowDataset
from ai4land.samples.features import (
    IGNORE_INDEX,
    BatchInputs,
    codes_to_index,
    group_channels,
    input_channel_names,
    input_normalisation,
)
from ai4land.samples.plan import SamplePlanner, change_counts, largest_tile, shard
from ai4land.samples.smooth import group_matrix, smooth_groups
from ai4land.samples.split import load_split
from ai4land.train.launch import AGENT_MARKERS, die_with_parent, in_torchrun_worker

log = logging.getLogger("ai4land.train")

CHECKPOINTS = "checkpoints"
LOCK = ".train.lock"
LAST = "last.pt"
BEST = "best.pt"
CHECKPOINT_FORMAT = 1
TENSORBOARD = "tensorboard"
METRIC_FIELDS = [
    "epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_oa", "val_miou",
    "best_val_loss", "samples_per_s", "data_wait", "epoch_s",
]
# Settings that do not change the trajectory of a run (a resume may change them).
NOT_TRAJECTORY = {"nproc", "backend", "device", "tensorboard", "prefetch", "num_workers",
                  "cache_dir"}


# --- run-time environment ------------------------------------------------------------


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    distributed: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass(frozen=True)
class Precision:
    autocast_dtype: torch.dtype | None
    channels_last: bool
    grad_scaler: bool

    def describe(self) -> str:
        if self.autocast_dtype is None:
            return "fp32"
        name = str(self.autocast_dtype).removeprefix("torch.")
        return f"{name} autocast" + (" + channels_last" if self.channels_last else "") + (
            " + GradScaler" if self.grad_scaler else ""
        )


def resolve_backend(setting: str, device: torch.device) -> str:
    if setting == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if setting == "nccl" and device.type != "cuda":
        raise ConfigError("train.backend 'nccl' needs a CUDA device; use 'gloo' or 'auto' on CPU")
    return setting


def resolve_precision(device: torch.device, amp: bool) -> Precision:
    """``amp``: bf16 autocast where the device runs it natively, fp16 with a GradScaler on
    a GPU without bf16, fp32 on a CPU without native bf16 (see :mod:`ai4land.device`)."""
    dtype = autocast_dtype(device) if amp else None
    if dtype is None:
        return Precision(None, False, False)
    return Precision(dtype, True, dtype == torch.float16)


def _init_distributed(
    backend_setting: str, device_setting: str
) -> tuple[DistInfo, torch.device, bool]:
    """Read torchrun's environment; start the process group when there are several ranks."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_setting, local_rank=local_rank, key="train.device")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    started = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend=resolve_backend(backend_setting, device))
        started = True
    distributed = dist.is_initialized() and dist.get_world_size() > 1
    if distributed:
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank, world_size, local_rank, distributed), device, started


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state(device: torch.device) -> dict:
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype("int64")), *np_state[2:]),
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy().astype("uint32"), *rest))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def training_hash(config) -> str:
    """Hash of the settings that change the training trajectory (resume must match it)."""
    relevant = {
        "seed": config.seed,
        "train": config.train.model_dump(mode="json", exclude=NOT_TRAJECTORY),
        "classes": config.classes.model_dump(mode="json"),
        "years": config.years.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def lr_factor(step: int, total: int) -> float:
    """Linear warmup over 5 % of the steps, then cosine decay to 1 % of the peak."""
    warmup = max(1, round(0.05 * total))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress))


# --- the run -------------------------------------------------------------------------


class _Logs:
    """Rank-0 metric files; on resume rows after the checkpoint's step are dropped."""

    def __init__(self, output_dir: Path, *, enabled: bool, tensorboard: bool = False):
        self.enabled = enabled
        self.output_dir = output_dir
        self.steps_path = output_dir / "steps.jsonl"
        self.epochs_path = output_dir / "metrics.jsonl"
        self.csv_path = output_dir / "metrics.csv"
        self.tensorboard = tensorboard and enabled
        self.writer = None

    @staticmethod
    def _rows(path: Path) -> list[dict]:
        if not path.exists():
            return []
        rows = []
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill
                break
        return rows

    def reset(self, keep_until_step: int) -> None:
        if not self.enabled:
            return
        for path in (self.steps_path, self.epochs_path):
            rows = [r for r in self._rows(path) if r["step"] <= keep_until_step]
            with atomic_path(path) as tmp:
                tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        self._write_csv()
        if self.tensorboard:
            self.writer = _tensorboard_writer(self.output_dir / TENSORBOARD,
                                              purge_step=keep_until_step + 1)

    def step(self, row: dict) -> None:
        if self.enabled:
            with self.steps_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        if self.writer is not None:
            for key in ("loss", "acc", "lr"):
                self.writer.add_scalar(f"step/{key}", row[key], row["step"])

    def epoch(self, row: dict) -> None:
        if self.enabled:
            with self.epochs_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            self._write_csv()
        if self.writer is not None:
            for key, value in row.items():
                if key not in ("epoch", "step") and isinstance(value, int | float):
                    self.writer.add_scalar(f"epoch/{key}", value, row["step"])
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def _write_csv(self) -> None:
        rows = self._rows(self.epochs_path)
        with atomic_path(self.csv_path) as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=METRIC_FIELDS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    def epoch_rows(self) -> list[dict]:
        return self._rows(self.epochs_path)


def _tensorboard_writer(directory: Path, *, purge_step: int):
    """A SummaryWriter, or None (with a warning) when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("train.tensorboard is true but the tensorboard package is not installed; "
                    "metrics go to metrics.csv/jsonl only (pip install tensorboard)")
        return None
    return SummaryWriter(log_dir=str(directory), purge_step=purge_step)


def _loader(dataset: WindowDataset, batch_size: int, *, num_workers: int = 0,
            pin_memory: bool = False) -> DataLoader:
    # Its own generator: creating an iterator draws a seed from it, and drawing from the
    # global generator would shift dropout after a resume (which creates more loaders).
    # Workers are forked: they only slice the arrays (no Zarr reader runs in them).
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      pin_memory=pin_memory, drop_last=False,
                      generator=torch.Generator().manual_seed(0),
                      multiprocessing_context="fork" if num_workers else None)


def _built(loader, inputs: BatchInputs, device: torch.device, precision: Precision, *,
           background: bool = False):
    """The loader's raw batches built into network inputs on ``device`` (laid out as the
    model takes them). ``background``: running in the prefetch thread; on a CPU its
    tensor operations then use one thread (this thread's own setting), leaving the
    other threads to the model instead of contending for every core."""
    if background and device.type == "cpu":
        torch.set_num_threads(1)
    for raw in loader:
        yield inputs(raw, device, channels_last=precision.channels_last)


def _batch_stats(model, batch, *, device, precision, num_classes, confusion=False,
                 change_weight: float = 1.0):
    """The batch's summed loss (pixels whose class differs from the prior's weighted by
    ``change_weight``), [loss, valid pixels, correct pixels] and the confusion matrix."""
    inputs = batch["inputs"].to(device, non_blocking=True)
    if precision.channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    target = batch["target"].to(device, non_blocking=True)
    context = (torch.autocast(device.type, dtype=precision.autocast_dtype)
               if precision.autocast_dtype is not None else nullcontext())
    with context:
        logits = model(inputs)
    logits = logits.float()
    if change_weight == 1.0:
        loss_sum = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="sum")
    else:
        losses = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
        changed = batch["changed"].to(device, non_blocking=True)
        loss_sum = (losses * (1.0 + (change_weight - 1.0) * changed.float())).sum()
    valid = target != IGNORE_INDEX
    pred = logits.detach().argmax(1)
    stats = torch.stack([
        loss_sum.detach().double(), valid.sum().double(), ((pred == target) & valid).sum().double()
    ])
    matrix = None
    if confusion:
        index = target[valid] * num_classes + pred[valid]
        matrix = torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)
    return loss_sum, stats, matrix


def _all_reduce(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.distributed:
        dist.all_reduce(tensor)
    return tensor


@torch.no_grad()
def validate(model, loader, *, device, precision, num_classes, info: DistInfo) -> dict:
    """Loss, overall accuracy and mIoU over the (sharded) validation plan."""
    net = getattr(model, "module", model)
    was_training = net.training
    net.eval()
    totals = torch.zeros(3, dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
    for batch in loader:
        _, stats, matrix = _batch_stats(net, batch, device=device, precision=precision,
                                        num_classes=num_classes, confusion=True)
        totals += stats
        confusion += matrix.double()
    _all_reduce(totals, info)
    _all_reduce(confusion, info)
    net.train(was_training)
    confusion = confusion.cpu().numpy()
    intersection = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - intersection
    present = union > 0
    valid = float(totals[1])
    return {
        "val_loss": float(totals[0]) / max(valid, 1.0),
        "val_oa": float(totals[2]) / max(valid, 1.0),
        "val_miou": float((intersection[present] / union[present]).mean())
        if present.any()
        else 0.0,
    }


def run_training(
    config,
    *,
    output_dir: str | Path,
    split_path: str | Path | None = None,
    resume: bool = True,
    restart_if_changed: bool = False,
    max_steps: int | None = None,
) -> dict:
    """Train the U-Net of ``config``; works under ``torchrun`` and as a single process.

    A checkpoint written with other training settings is refused, unless
    ``restart_if_changed``: then its files move to ``checkpoints/stale-<hash>/`` and
    training starts afresh (the workflow's choice: Snakemake reruns training exactly
    when those settings change). ``max_steps`` stops after that many optimiser steps in
    total (counting steps done before a resume), writing a checkpoint first; the
    schedule still spans ``epochs * steps_per_epoch``. Returns a summary dict (rank 0's
    view).
    """
    config = stage_config(config, "train")  # reads only its slice
    train_cfg = config.train
    if in_torchrun_worker():
        die_with_parent(markers=AGENT_MARKERS)
    main = int(os.environ.get("RANK", "0")) == 0
    with exclusive_output(Path(output_dir)) if main else nullcontext():
        info, device, started = _init_distributed(train_cfg.backend, train_cfg.device)
        try:
            return _run(config, info=info, device=device, output_dir=Path(output_dir),
                        split_path=split_path, resume=resume, max_steps=max_steps,
                        restart_if_changed=restart_if_changed)
        finally:
            if started and dist.is_initialized():
                dist.destroy_process_group()


@contextmanager
def exclusive_output(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory/.train.lock`` (created with the directory)
    for the block; OutputError at once if another trainer holds it. The kernel drops
    the lock when its holder exits, however it ends."""
    directory.mkdir(parents=True, exist_ok=True)
    handle = open(directory / LOCK, "a+")  # noqa: SIM115 - held for the block
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown process"
        handle.close()
        raise OutputError(f"{directory}: another trainer ({holder}) is writing this model "
                          "directory; stop it or wait for it to end, then rerun") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        handle.close()


def _training_arrays(cube: Cube, years: list[int], cache_dir, info: DistInfo) -> TrainingArrays:
    """The training years as arrays: in memory, or memory-mapped from ``cache_dir``
    (written by local rank 0 while the node's other ranks wait, then opened by all)."""
    if cache_dir is None:
        return TrainingArrays.from_cube(cube, years)
    writer = info.local_rank == 0
    arrays = TrainingArrays.from_cube(cube, years, directory=cache_dir) if writer else None
    if info.distributed:
        dist.barrier()
    return arrays or TrainingArrays.from_cube(cube, years, directory=cache_dir, write=False)


def _set_aside(ckpt_dir: Path, old_hash: str) -> None:
    """Move the checkpoints of other training settings to ``stale-<hash>/`` (kept, not
    deleted: a change can be undone)."""
    stale = ckpt_dir / f"stale-{old_hash}"
    stale.mkdir(exist_ok=True)
    for name in (LAST, BEST):
        if (ckpt_dir / name).exists():
            os.replace(ckpt_dir / name, stale / name)
    log.warning("%s: checkpoints of other training settings moved to %s; starting afresh",
                ckpt_dir, stale)


def _run(config, *, info: DistInfo, device, output_dir: Path, split_path, resume, max_steps,
         restart_if_changed: bool = False) -> dict:
    started_at = time.perf_counter()
    per_rank = _per_rank_batch(config.train, info.world_size)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    precision = resolve_precision(device, config.train.amp)
    data = _load_data(config, info=info, device=device, split_path=split_path,
                      per_rank=per_rank)
    trainer = _Trainer(config, info=info, device=device, precision=precision, data=data,
                       output_dir=output_dir, per_rank=per_rank, max_steps=max_steps)
    trainer.restore(resume=resume, restart_if_changed=restart_if_changed)
    trainer.train()
    return trainer.finish(started_at)


def _per_rank_batch(train_cfg, world: int) -> int:
    """The batch of each rank; ConfigError for a batch or tile the run cannot use."""
    if train_cfg.batch_size % world:
        raise ConfigError(
            f"train.batch_size {train_cfg.batch_size} does not divide over {world} processes"
        )
    multiple = 2**train_cfg.depth
    if train_cfg.tile_size % multiple:
        raise ConfigError(
            f"train.tile_size {train_cfg.tile_size} must be a multiple of 2**depth = {multiple}"
        )
    return train_cfg.batch_size // world


# --- data ----------------------------------------------------------------------------


@dataclass
class _Data:
    """What training reads: the cube, the training arrays, the sample planner of the
    train blocks and the validation loader (None when no window fits the val blocks)."""

    cube: Cube
    predicted: list[str]
    channels: list[str]
    years: list[int]
    arrays: TrainingArrays
    planner: SamplePlanner
    val_loader: DataLoader | None
    val_tile: int
    # (G, V) coarse variables summed per smooth group (train.smooth_coarse), else None
    smooth_matrix: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.predicted)


def _load_data(config, *, info: DistInfo, device, split_path, per_rank: int) -> _Data:
    train_cfg = config.train
    cube = Cube.from_config(config)
    split_path = Path(split_path or Path(config.paths.results) / "split" / "split.json")
    split = load_split(split_path)
    if (split.height, split.width) != cube.fine_grid.shape:
        raise InputDataError(
            f"{split_path}: split covers {split.height}x{split.width} pixels but the cube grid is "
            f"{cube.fine_grid.height}x{cube.fine_grid.width}; run `ai4land split` again"
        )
    predicted = list(config.classes.predicted)
    groups = class_groups(config.datasets.coarse.groups, predicted)
    smooth = groups if train_cfg.smooth_coarse else None
    channels = input_channel_names(cube, predicted,
                                   demand=groups.names if train_cfg.demand else (),
                                   smooth=smooth)
    years = [y for y in split.train_years if y in cube.target_years]
    land_mask = np.asarray(cube.static["land_mask"].values).astype(bool)
    arrays = _training_arrays(cube, years, train_cfg.cache_dir, info)
    if train_cfg.demand:  # the change each cell makes, as a chain's allocation sees it
        arrays.demand = training_demand(
            arrays.target, arrays.cells, arrays.years, land=land_mask, groups=groups,
            channel_names=cube.coarse_channel_names, n_variables=len(cube.coarse_variables),
            factor=cube.factor, nodata=config.classes.nodata,
            decay_years=config.predict.harmonize_decay_years)
    planner = _train_planner(config, cube, split.role_mask("train"), years=years,
                             predicted=predicted, land_mask=land_mask)
    val_mask = split.role_mask("val")
    val_tile = largest_tile(val_mask, multiple=2**train_cfg.depth, at_most=train_cfg.tile_size,
                            land_mask=land_mask, min_land_fraction=train_cfg.min_land_fraction)
    val_loader = None
    if val_tile:
        val_loader = _val_loader(config, cube, arrays, val_mask, val_tile=val_tile, years=years,
                                 land_mask=land_mask, info=info, per_rank=per_rank,
                                 pin_memory=device.type == "cuda")
    elif info.is_main:
        log.warning("no validation window fits the val blocks: no validation or early stopping")
    smooth_matrix = (None if smooth is None else group_matrix(
        groups, cube.coarse_channel_names, smooth_groups(groups)))
    return _Data(cube=cube, predicted=predicted, channels=channels, years=years, arrays=arrays,
                 planner=planner, val_loader=val_loader, val_tile=val_tile,
                 smooth_matrix=smooth_matrix)


def _train_planner(config, cube: Cube, train_mask, *, years, predicted, land_mask) -> SamplePlanner:
    """The windows of each epoch in the train blocks (``train.change_balanced``: a share
    of them drawn in proportion to the prior -> target change of their block)."""
    train_cfg = config.train
    change = None
    if train_cfg.change_balanced > 0:
        whole = Window(0, 0, *cube.fine_grid.shape)
        change = change_counts(
            lambda year: codes_to_index(cube.target_window(year, whole), predicted), years,
            block_size=train_cfg.tile_size, allowed=train_mask,
        )
    return SamplePlanner(
        train_mask, tile_size=train_cfg.tile_size, years=years, seed=config.seed,
        scenario_for_year=cube.scenario_for_year, land_mask=land_mask,
        min_land_fraction=train_cfg.min_land_fraction, stream="train", role="train",
        with_prior=train_cfg.uses_prior, change=change, change_share=train_cfg.change_balanced,
    )


def _val_loader(config, cube: Cube, arrays: TrainingArrays, val_mask, *, val_tile: int, years,
                land_mask, info: DistInfo, per_rank: int, pin_memory: bool) -> DataLoader:
    """The same ``train.val_batches`` batches of the val blocks at every epoch (sharded),
    posed as predict poses them: the prior map shown whole (training hides parts of it,
    ``train.prior_mask``; scoring that harder task picked models for the wrong one)."""
    train_cfg = config.train
    val_planner = SamplePlanner(
        val_mask, tile_size=val_tile, years=years, seed=config.seed,
        scenario_for_year=cube.scenario_for_year, land_mask=land_mask,
        min_land_fraction=train_cfg.min_land_fraction, stream="val", role="val",
        with_prior=train_cfg.uses_prior,
    )
    val_plan = val_planner.epoch(0, train_cfg.val_batches * train_cfg.batch_size)
    return _loader(
        WindowDataset(arrays, shard(val_plan, info.rank, info.world_size),
                      prior_mask=train_cfg.prior_mask, seed=config.seed, stream="val-load",
                      mask_prior=False, with_prior=train_cfg.uses_prior,
                      smooth=train_cfg.smooth_coarse),
        per_rank, num_workers=train_cfg.num_workers, pin_memory=pin_memory,
    )


# --- the trainer ---------------------------------------------------------------------


def _initial_state() -> dict:
    """The position and running statistics saved in every checkpoint."""
    return {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_val_loss": math.inf,
            "best_epoch": -1, "bad_epochs": 0, "finished": False,
            "epoch_stats": [0.0, 0.0, 0.0], "train_time": 0.0, "train_samples": 0,
            "data_wait": 0.0}


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


class _Trainer:
    """One training run on one rank: the model and optimiser, the run's ``state`` (saved
    in ``checkpoints/last.pt``), its logs, and the steps from the state's position on."""

    def __init__(self, config, *, info: DistInfo, device: torch.device, precision: Precision,
                 data: _Data, output_dir: Path, per_rank: int, max_steps: int | None):
        self.config, self.cfg = config, config.train
        self.info, self.device, self.precision, self.data = info, device, precision, data
        self.output_dir, self.per_rank = output_dir, per_rank
        self._build_model()
        self.total_steps = self.cfg.epochs * self.cfg.steps_per_epoch
        self.stop_at = self.total_steps if max_steps is None else min(max_steps, self.total_steps)
        self.ckpt_dir = output_dir / CHECKPOINTS
        self.last_path, self.best_path = self.ckpt_dir / LAST, self.ckpt_dir / BEST
        self.logs = _Logs(output_dir, enabled=info.is_main, tensorboard=self.cfg.tensorboard)
        if info.is_main:
            output_dir.mkdir(parents=True, exist_ok=True)
        self.state = _initial_state()
        self.config_hash = training_hash(config)
        self.step_losses: list[float] = []
        arrays, predicted = data.arrays, data.predicted
        # built on the training device: training batches augmented, validation ones not
        self.train_inputs = BatchInputs.of(arrays, predicted=predicted,
                                           prior_mask=self.cfg.prior_mask,
                                           augment=self.cfg.augment,
                                           smooth_matrix=data.smooth_matrix)
        self.val_inputs = BatchInputs.of(arrays, predicted=predicted,
                                         prior_mask=self.cfg.prior_mask,
                                         smooth_matrix=data.smooth_matrix)

    def _build_model(self) -> None:
        """The U-Net (DDP-wrapped across ranks), AdamW, the warmup-cosine schedule and the
        GradScaler; the weights are drawn from ``seed``."""
        cfg, data, device = self.cfg, self.data, self.device
        seed_everything(self.config.seed)
        self.arch = dict(base_channels=cfg.base_channels, depth=cfg.depth, norm=cfg.norm,
                         dropout=cfg.dropout,
                         zero_channels=group_channels(data.channels, cfg.dropped_inputs),
                         prior_skip=([data.channels.index(f"prior:{code}")
                                      for code in data.predicted]
                                     if cfg.prior_skip and cfg.uses_prior else []))
        self.net = UNet(len(data.channels), data.num_classes, **self.arch).to(device)
        if self.precision.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.model = (DistributedDataParallel(
            self.net, device_ids=[device.index] if device.type == "cuda" else None)
            if self.info.distributed else self.net)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr,
                                           weight_decay=cfg.weight_decay)
        total_steps = cfg.epochs * cfg.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, total_steps))
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.grad_scaler)

    # --- state / resume --------------------------------------------------------------

    def restore(self, *, resume: bool, restart_if_changed: bool) -> None:
        """Continue from ``last.pt`` (model, optimiser, position, RNG states) when it was
        written with these training settings; otherwise start afresh (see run_training)."""
        info = self.info
        ckpt = self._matching_checkpoint(resume=resume, restart_if_changed=restart_if_changed)
        if ckpt is not None:
            self.net.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.scaler.load_state_dict(ckpt["scaler"])
            self.state.update(ckpt["state"])
            rng_states = ckpt["rng"]
            _set_rng_state(rng_states[info.rank] if info.rank < len(rng_states) else rng_states[0],
                           self.device)
            self.logs.reset(self.state["global_step"])
            if info.is_main:
                log.info("resumed from %s at step %d (epoch %d)", self.last_path,
                         self.state["global_step"], self.state["epoch"])
        else:
            if info.is_main:
                for path in (self.last_path, self.best_path, self.logs.steps_path,
                             self.logs.epochs_path):
                    path.unlink(missing_ok=True)
                self.logs.reset(0)
            torch.manual_seed(self.config.seed + 1 + info.rank)  # dropout streams differ per rank

    def _matching_checkpoint(self, *, resume: bool, restart_if_changed: bool) -> dict | None:
        if not (resume and self.last_path.exists()):
            return None
        ckpt = torch.load(self.last_path, map_location="cpu", weights_only=True)
        if ckpt.get("training_hash") == self.config_hash:
            return ckpt
        if not restart_if_changed:
            raise ConfigError(
                f"{self.last_path}: checkpoint was written with other training settings; "
                "restore them or start afresh (resume=False / --no-resume)"
            )
        if self.info.is_main:
            _set_aside(self.ckpt_dir, str(ckpt.get("training_hash"))[:12])
        return None

    def _log_start(self) -> None:
        cfg, dropped = self.cfg, self.cfg.dropped_inputs
        log.info(
            "training on %s x%d (%s), %d channels%s, tile %d (validation tile %d), batch %d "
            "(%d per rank), %d steps", self.device, self.info.world_size,
            self.precision.describe(), len(self.data.channels),
            f" ({', '.join(dropped)} zeroed)" if dropped else "", cfg.tile_size,
            self.data.val_tile, cfg.batch_size, self.per_rank, self.total_steps,
        )

    def save_checkpoint(self) -> None:
        """``last.pt``: written by rank 0 with the RNG states of every rank."""
        info = self.info
        rng = _rng_state(self.device)
        if info.distributed:
            gathered = [None] * info.world_size
            dist.all_gather_object(gathered, rng)
        else:
            gathered = [rng]
        if info.is_main:
            payload = {
                "format": CHECKPOINT_FORMAT, "training_hash": self.config_hash,
                "world_size": info.world_size, "model": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "state": dict(self.state), "rng": gathered,
            }
            with atomic_path(self.last_path) as tmp:
                torch.save(payload, tmp)
        if info.distributed:
            dist.barrier()

    # --- loop ------------------------------------------------------------------------

    def train(self) -> None:
        """Epochs from the state's position until the last epoch, early stopping or
        ``max_steps``."""
        state, steps_per_epoch = self.state, self.cfg.steps_per_epoch
        if self.info.is_main:
            self._log_start()
        self.model.train()
        while not state["finished"] and state["epoch"] < self.cfg.epochs:
            epoch = state["epoch"]
            if state["global_step"] >= self.stop_at and state["step_in_epoch"] < steps_per_epoch:
                break
            self._train_epoch(epoch)
            if state["step_in_epoch"] < steps_per_epoch:
                break  # stopped by max_steps mid-epoch; the checkpoint is written
            self._end_epoch(epoch)
            if state["global_step"] >= self.stop_at:
                break

    def _batches(self, epoch: int):
        """This rank's built batches of ``epoch`` from the saved position on."""
        cfg, data = self.cfg, self.data
        plan = data.planner.epoch(epoch, cfg.steps_per_epoch * cfg.batch_size)
        mine = shard(plan, self.info.rank, self.info.world_size)[
            self.state["step_in_epoch"] * self.per_rank :]
        loader = _loader(WindowDataset(data.arrays, mine, prior_mask=cfg.prior_mask,
                                       seed=self.config.seed, with_prior=cfg.uses_prior,
                                       input_dropout=cfg.input_dropout, augment=cfg.augment,
                                       smooth=cfg.smooth_coarse),
                         self.per_rank, num_workers=cfg.num_workers,
                         pin_memory=self.device.type == "cuda")
        built = _built(loader, self.train_inputs, self.device, self.precision,
                       background=bool(cfg.prefetch))
        return Prefetch(built, cfg.prefetch) if cfg.prefetch else built

    def _progress_bar(self, epoch: int):
        if not (self.info.is_main and sys.stderr.isatty()):
            return None
        from tqdm import tqdm

        return tqdm(total=self.cfg.steps_per_epoch, initial=self.state["step_in_epoch"],
                    desc=f"epoch {epoch + 1}/{self.cfg.epochs}", leave=False)

    def _bank_time(self, tick: float, steps: int) -> float:
        """Add the time since ``tick`` and the samples of ``steps`` steps to the epoch's
        speed statistics; the new tick."""
        self.state["train_time"] += time.perf_counter() - tick
        self.state["train_samples"] += steps * self.cfg.batch_size
        return time.perf_counter()

    def _train_epoch(self, epoch: int) -> None:
        """The steps of ``epoch`` from the saved position to its end, or to ``max_steps``
        (a checkpoint every ``train.checkpoint_every`` steps and there)."""
        state, cfg = self.state, self.cfg
        batches = self._batches(epoch)
        bar = self._progress_bar(epoch)
        tick = time.perf_counter()
        done_in_call = 0
        waiting_since = time.perf_counter()
        for batch in batches:
            state["data_wait"] += time.perf_counter() - waiting_since
            step_loss = self._step(batch, epoch)
            done_in_call += 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{step_loss:.4f}")
            if state["step_in_epoch"] < cfg.steps_per_epoch:  # not at the epoch's end
                at_stop = state["global_step"] >= self.stop_at
                if at_stop or state["global_step"] % cfg.checkpoint_every == 0:
                    tick, done_in_call = self._bank_time(tick, done_in_call), 0
                    self.save_checkpoint()
                if at_stop:
                    break
            waiting_since = time.perf_counter()
        if isinstance(batches, Prefetch):
            batches.close()
        if bar is not None:
            bar.close()
        self._bank_time(tick, done_in_call)

    def _step(self, batch, epoch: int) -> float:
        """One optimiser step on a global batch; its mean loss."""
        state, world = self.state, self.info.world_size
        loss_sum, stats, _ = _batch_stats(self.model, batch, device=self.device,
                                          precision=self.precision,
                                          num_classes=self.data.num_classes,
                                          change_weight=self.cfg.change_weight)
        _all_reduce(stats, self.info)
        global_valid = max(float(stats[1]), 1.0)
        # DDP averages gradients over ranks: scale so the result is the global mean.
        loss = loss_sum * (world / global_valid)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]
        self.scheduler.step()
        state["global_step"] += 1
        state["step_in_epoch"] += 1
        for i in range(3):
            state["epoch_stats"][i] += float(stats[i])
        step_loss = float(stats[0]) / global_valid
        self.step_losses.append(step_loss)
        self.logs.step({"step": state["global_step"], "epoch": epoch, "loss": step_loss,
                        "acc": float(stats[2]) / global_valid, "lr": lr})
        return step_loss

    # --- epoch end: validation, early stopping, logs, checkpoint ---------------------

    def _end_epoch(self, epoch: int) -> None:
        state = self.state
        loss_total, valid_total, correct_total = state["epoch_stats"]
        row = {
            "epoch": epoch + 1, "step": state["global_step"],
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": loss_total / max(valid_total, 1.0),
            "train_acc": correct_total / max(valid_total, 1.0),
            "samples_per_s": state["train_samples"] / max(state["train_time"], 1e-9),
            "data_wait": state["data_wait"] / max(state["train_time"], 1e-9),
            "epoch_s": state["train_time"],
        }
        if self.data.val_loader is not None:
            self._validate(row, epoch)
        row["best_val_loss"] = _finite_or_none(state["best_val_loss"])
        self.logs.epoch(row)
        if self.info.is_main:
            log.info(
                "epoch %d/%d step %d: train loss %.4f acc %.3f%s, %.1f samples/s",
                epoch + 1, self.cfg.epochs, state["global_step"], row["train_loss"],
                row["train_acc"],
                (f", val loss {row['val_loss']:.4f} OA {row['val_oa']:.3f} mIoU "
                 f"{row['val_miou']:.3f}") if "val_loss" in row else "",
                row["samples_per_s"],
            )
        state.update(epoch=epoch + 1, step_in_epoch=0, epoch_stats=[0.0, 0.0, 0.0],
                     train_time=0.0, train_samples=0, data_wait=0.0)
        if state["epoch"] >= self.cfg.epochs:
            state["finished"] = True
        self.save_checkpoint()

    def _validate(self, row: dict, epoch: int) -> None:
        """Validation scores into ``row``; ``best.pt`` on a new best validation loss, early
        stopping after ``train.early_stopping_patience`` epochs without one."""
        state = self.state
        row.update(validate(self.model,
                            _built(self.data.val_loader, self.val_inputs, self.device,
                                   self.precision),
                            device=self.device, precision=self.precision,
                            num_classes=self.data.num_classes, info=self.info))
        if row["val_loss"] < state["best_val_loss"]:
            state["best_val_loss"], state["best_epoch"], state["bad_epochs"] = (
                row["val_loss"], epoch + 1, 0)
            if self.info.is_main:
                with atomic_path(self.best_path) as tmp:
                    torch.save({"model": self.net.state_dict(), "epoch": epoch + 1,
                                "metrics": row}, tmp)
            return
        state["bad_epochs"] += 1
        if state["bad_epochs"] >= self.cfg.early_stopping_patience:
            state["finished"] = True
            if self.info.is_main:
                log.info("early stopping after epoch %d (best epoch %d)", epoch + 1,
                         state["best_epoch"])

    # --- final model (rank 0) --------------------------------------------------------

    def finish(self, started_at: float) -> dict:
        """Write ``model.pt`` and its card (rank 0; the best validation weights); the
        run's summary."""
        state = self.state
        summary = {
            "global_step": state["global_step"],
            "epochs_completed": state["epoch"],
            "finished": state["finished"],
            "best_val_loss": _finite_or_none(state["best_val_loss"]),
            "best_epoch": state["best_epoch"],
            "step_losses": self.step_losses,
            "precision": self.precision.describe(),
            "world_size": self.info.world_size,
            "device": str(self.device),
            "output_dir": str(self.output_dir),
        }
        if self.info.is_main:
            summary["metrics"] = self._save_model()
            summary["wall_s"] = time.perf_counter() - started_at
            log.info("wrote %s (best epoch %s) in %.1f s", self.output_dir / "model.pt",
                     state["best_epoch"], summary["wall_s"])
        self.logs.close()
        if self.info.distributed:
            dist.barrier()
        return summary

    def _save_model(self) -> dict:
        """``model.pt`` + ``model_card.json``; the card's metrics."""
        cfg, data, state, config = self.cfg, self.data, self.state, self.config
        rows = self.logs.epoch_rows()
        best_row = next((r for r in rows if r["epoch"] == state["best_epoch"]),
                        rows[-1] if rows else {})
        final = UNet(len(data.channels), data.num_classes, **self.arch)
        if self.best_path.exists():
            final.load_state_dict(torch.load(self.best_path, map_location="cpu",
                                             weights_only=True)["model"])
        else:
            final.load_state_dict({k: v.cpu() for k, v in self.net.state_dict().items()})
        speeds = [r["samples_per_s"] for r in rows if r.get("samples_per_s")]
        waits = [r["data_wait"] for r in rows if r.get("data_wait") is not None]
        metrics = {k: best_row.get(k) for k in ("epoch", "val_loss", "val_oa", "val_miou",
                                                "train_loss", "train_acc")}
        metrics.update(steps=state["global_step"], finished=state["finished"],
                       samples_per_s=float(np.mean(speeds)) if speeds else None,
                       data_wait=float(np.mean(waits)) if waits else None,
                       val_tile_size=data.val_tile, precision=self.precision.describe(),
                       world_size=self.info.world_size, device=self.device.type)
        card = ModelCard(
            input_channels=data.channels, classes=data.predicted, architecture=final.config,
            tile_size=cfg.tile_size, config_hash=slice_hash(config, "train"),
            code_version=code_version(),
            seed=config.seed, trained_years=data.years, dropped_inputs=cfg.dropped_inputs,
            normalisation=input_normalisation(data.cube), metrics=metrics,
            # the emulator's default config: the whole config of this training run
            config=unsliced(config).model_dump(mode="json"),
        )
        save_model(self.output_dir, final, card)
        return metrics
