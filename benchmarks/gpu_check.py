"""GPU check: what one lent GPU does with this code, in under 5 minutes.

Run by ``benchmarks/gpu_check.sh`` under ``torchrun`` with one process. It measures:

1. DDP with one process on the GPU's backend (nccl; gloo in a dry run): the process
   group starts and an all-reduce returns;
2. AMP training steps/s of the production U-Net (config/config.yaml: base channels,
   depth, tile, per-rank batch) wrapped in DDP, on a batch already on the device (the
   model's consumption in samples/s);
3. bf16 inference Mpix/s of the same model (batch norm folded, channels_last, the
   predict job's autocast) at the production predict tile;
4. the training input pipeline against that consumption: raw windows of a generated
   cube read by ``train.num_workers``-style loader processes (pinned memory), each batch
   built on the device by ``BatchInputs``; samples/s, and per loader process;
5. peak GPU memory (``torch.cuda.max_memory_allocated``);
6. predict's inputs built on the device from raw arrays (``DeviceInputs``, as a predict
   job on a GPU builds them: prior codes, static layers and coarse cells read on the
   host, one-hot/upsampling/normalisation on the device) in Mpix/s, against the bf16
   inference of part 3 (``over_inference`` > 1: the inputs keep up with the model).

``--dry-run`` runs every part on the CPU with gloo and small sizes (CI keeps the script
working where no GPU is lent); its numbers mean nothing. Writes one JSON result in the
format of ``benchmarks/results`` (ours: the pipeline's samples/s; reference: the GPU's
consumption; target: the pipeline faster), with every part in ``params``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import yaml

from benchmarks.common import RESULTS, machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from data.tiny_cube import tiny_config, write_tiny_cube  # noqa: E402

PRODUCTION = ROOT / "config" / "config.yaml"
BUDGET_S = 20.0  # seconds of timed work per part (after warm-up)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(func, device, *, warmup: int, budget_s: float, max_calls: int) -> tuple[float, int]:
    """Calls per second of ``func`` over at most ``budget_s`` (after ``warmup`` calls)."""
    for _ in range(warmup):
        func()
    _sync(device)
    start, calls = time.perf_counter(), 0
    while calls < max_calls and (calls == 0 or time.perf_counter() - start < budget_s):
        func()
        calls += 1
    _sync(device)
    return calls / (time.perf_counter() - start), calls


def settings(dry_run: bool) -> dict:
    """Sizes: the production config's on a GPU, small ones in a dry run."""
    production = yaml.safe_load(PRODUCTION.read_text())
    train, predict = production["train"], production["predict"]
    if dry_run:
        return {"base_channels": 8, "depth": 2, "tile": 32, "batch": 2, "predict_tile": 64,
                "predict_batch": 1, "workers": 1, "cube_size": 128, "budget_s": 0.5,
                "max_calls": 3}
    return {"base_channels": train["base_channels"], "depth": train["depth"],
            "tile": train["tile_size"], "batch": train["batch_size"] // train.get("nproc", 1),
            "predict_tile": predict["tile_size"], "predict_batch": 16,
            "workers": train.get("num_workers", 4), "cube_size": 1024, "budget_s": BUDGET_S,
            "max_calls": 10_000}


def _device(dry_run: bool) -> tuple[torch.device, str]:
    if dry_run:
        return torch.device("cpu"), "gloo"
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device; run with --dry-run on a CPU")
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    torch.cuda.reset_peak_memory_stats(device)
    return device, "nccl"


def _check_ddp(device: torch.device, backend: str) -> dict:
    """1. DDP, one process: the process group starts and all_reduce works."""
    tick = time.perf_counter()
    dist.init_process_group(backend=backend)
    probe = torch.ones(1, device=device)
    dist.all_reduce(probe)
    return {"world_size": dist.get_world_size(), "all_reduce_ok": float(probe) == 1.0,
            "init_s": round(time.perf_counter() - tick, 3)}


def _check_training(batch: dict, *, device, precision, n_classes: int, s: dict) -> dict:
    """2. AMP training steps/s under DDP."""
    from torch.nn.parallel import DistributedDataParallel

    from ai4land.models.unet import UNet
    from ai4land.train.loop import _batch_stats

    channels = batch["inputs"].shape[1]
    torch.manual_seed(0)
    net = UNet(channels, n_classes, base_channels=s["base_channels"], depth=s["depth"]).to(device)
    if precision.channels_last:
        net = net.to(memory_format=torch.channels_last)
    model = DistributedDataParallel(
        net, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.grad_scaler)

    def step() -> None:
        loss_sum, stats, _ = _batch_stats(model, batch, device=device, precision=precision,
                                          num_classes=n_classes)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss_sum / stats[1].clamp(min=1)).backward()
        scaler.step(optimizer)
        scaler.update()

    steps_per_s, n = _rate(step, device, warmup=3, budget_s=s["budget_s"],
                           max_calls=s["max_calls"])
    return {"precision": precision.describe(), "steps_per_s": steps_per_s,
            "samples_per_s": steps_per_s * s["batch"], "steps_timed": n,
            "batch": s["batch"], "tile": s["tile"], "in_channels": int(channels)}


def _check_inference(channels: int, *, device, n_classes: int, s: dict) -> dict:
    """3. bf16 inference Mpix/s (the predict job's model set-up)."""
    from ai4land.device import autocast_dtype
    from ai4land.models.unet import UNet
    from ai4land.predict.inference import fold_batchnorm

    predictor = fold_batchnorm(UNet(channels, n_classes, base_channels=s["base_channels"],
                                    depth=s["depth"]).eval()).to(device)
    predictor = predictor.to(memory_format=torch.channels_last)
    dtype = autocast_dtype(device)
    x = torch.randn(s["predict_batch"], channels, s["predict_tile"], s["predict_tile"],
                    device=device).contiguous(memory_format=torch.channels_last)

    def forward() -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype,
                                                    enabled=dtype is not None):
            predictor(x)

    passes, n = _rate(forward, device, warmup=2, budget_s=s["budget_s"],
                      max_calls=s["max_calls"])
    return {"autocast": str(dtype), "mpix_per_s":
            passes * x.shape[0] * x.shape[2] * x.shape[3] / 1e6,
            "passes_timed": n, "batch": x.shape[0], "tile": s["predict_tile"]}


def _check_predict_inputs(cube, predicted, *, device, inference_mpix: float, s: dict) -> dict:
    """6. predict's inputs built on the device, against the model's inference."""
    from ai4land.grid import Window
    from ai4land.predict.inference import plan_windows
    from ai4land.predict.probabilities import DeviceInputs

    year = cube.target_years[0]
    whole = Window(0, 0, *cube.fine_grid.shape)
    prior_map = cube.target_window(year, whole)
    inputs = DeviceInputs(cube, cells=cube.coarse_cells(cube.scenario_for_year(year), year,
                                                         whole),
                          predicted=list(predicted), prior=lambda w: prior_map[w.slices],
                          direction=-1, device=device)
    tile = s["predict_tile"]
    windows = plan_windows(cube.fine_grid.shape, tile_size=tile, overlap=tile // 8)
    group = (windows * s["predict_batch"])[: s["predict_batch"]]
    calls, n = _rate(lambda: inputs(group), device, warmup=1, budget_s=s["budget_s"],
                     max_calls=s["max_calls"])
    mpix = calls * len(group) * tile * tile / 1e6
    return {"mpix_per_s": mpix, "batches_timed": n, "batch": len(group), "tile": tile,
            "over_inference": mpix / inference_mpix}


def _check_pipeline(loader, inputs, *, device, precision, consumption: float, s: dict) -> dict:
    """4. the input pipeline against the GPU's consumption."""
    n_batches = max(4, min(200, int(consumption * s["budget_s"] / s["batch"])))
    rates = {}
    for workers in sorted({0, s["workers"]}):
        data = loader(n_batches * s["batch"], workers)
        _sync(device)
        tick = time.perf_counter()
        for raw in data:
            inputs(raw, device, channels_last=precision.channels_last)
        _sync(device)
        rates[workers] = n_batches * s["batch"] / (time.perf_counter() - tick)
    pipeline = rates[s["workers"]]
    return {"samples_per_s": pipeline, "workers": s["workers"],
            "samples_per_s_in_process": rates[0],
            "samples_per_s_per_worker": pipeline / max(1, s["workers"]),
            "batches": n_batches, "over_consumption": pipeline / consumption}


def run(dry_run: bool) -> dict:
    from torch.utils.data import DataLoader

    from ai4land.io.cube import Cube
    from ai4land.samples.arrays import TrainingArrays
    from ai4land.samples.dataset import WindowDataset
    from ai4land.samples.features import BatchInputs
    from ai4land.samples.plan import SamplePlanner
    from ai4land.train.loop import resolve_precision

    started = time.perf_counter()
    s = settings(dry_run)
    device, backend = _device(dry_run)
    out: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                 "torch": torch.__version__, "cuda": torch.version.cuda, "backend": backend,
                 "settings": s}
    out["ddp"] = _check_ddp(device, backend)
    try:
        with tempfile.TemporaryDirectory(prefix="ai4land-gpu-check-") as tmp:
            root = Path(tmp)
            write_tiny_cube(root / "cube", size=s["cube_size"], factor=8)
            config = tiny_config(root / "cube")
            cube = Cube.from_config(config)
            predicted = config.classes.predicted
            years = cube.target_years
            arrays = TrainingArrays.from_cube(cube, years)
            prior_mask = config.train.prior_mask
            inputs = BatchInputs.of(arrays, predicted=predicted, prior_mask=prior_mask,
                                    augment=True)
            planner = SamplePlanner(np.ones(cube.fine_grid.shape, dtype=bool),
                                    tile_size=s["tile"], years=years, seed=0,
                                    scenario_for_year=cube.scenario_for_year)
            precision = resolve_precision(device, amp=True)

            def loader(n_samples: int, workers: int):
                dataset = WindowDataset(arrays, planner.epoch(0, n_samples),
                                        prior_mask=prior_mask, seed=0,
                                        input_dropout={"static": 0.5}, augment=True)
                return DataLoader(dataset, batch_size=s["batch"], num_workers=workers,
                                  pin_memory=device.type == "cuda",
                                  multiprocessing_context="fork" if workers else None)

            batch = inputs(next(iter(loader(s["batch"], 0))), device,
                           channels_last=precision.channels_last)
            out["training"] = _check_training(batch, device=device, precision=precision,
                                              n_classes=len(predicted), s=s)
            out["inference"] = _check_inference(batch["inputs"].shape[1], device=device,
                                                n_classes=len(predicted), s=s)
            out["predict_inputs"] = _check_predict_inputs(
                cube, predicted, device=device, inference_mpix=out["inference"]["mpix_per_s"],
                s=s)
            out["pipeline"] = _check_pipeline(loader, inputs, device=device, precision=precision,
                                              consumption=out["training"]["samples_per_s"], s=s)
    finally:
        dist.destroy_process_group()

    # 5. peak GPU memory
    out["peak_gpu_mib"] = (torch.cuda.max_memory_allocated(device) / 2**20
                           if device.type == "cuda" else None)
    out["wall_s"] = time.perf_counter() - started
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true",
                        help="CPU, gloo, small sizes: checks the script, measures nothing")
    parser.add_argument("--out", type=Path, default=None,
                        help="result JSON (default benchmarks/results/gpu_check.json; a dry "
                             "run: benchmarks/logs/gpu_check_dry_run.json)")
    args = parser.parse_args(argv)
    out = run(args.dry_run)
    path = args.out or (ROOT / "benchmarks" / "logs" / "gpu_check_dry_run.json" if args.dry_run
                        else RESULTS / "gpu_check.json")
    pipeline, consumption = out["pipeline"]["samples_per_s"], out["training"]["samples_per_s"]
    result = {
        "name": "gpu_check", "metric": "samples_per_s",
        "ours": round(pipeline, 2), "reference": round(consumption, 2),
        "reference_name": (f"DDP AMP training consumption ({out['training']['precision']}, "
                           f"tile {out['training']['tile']}, batch {out['training']['batch']})"),
        "ratio": round(pipeline / consumption, 3), "higher_is_better": True,
        "target": "input pipeline faster than the GPU consumes (ratio > 1); whole check < 300 s",
        "meets_target": None if args.dry_run else bool(pipeline > consumption
                                                        and out["wall_s"] < 300),
        "machine": f"{machine()}, {out['device']}", "date": dt.date.today().isoformat(),
        "dry_run": args.dry_run, "params": out,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, path)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
