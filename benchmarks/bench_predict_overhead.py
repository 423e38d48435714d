"""predict_overhead: a whole predict job's wall time / the pure model forward time.

The default model is the production one (architecture and predict settings: tile,
overlap, batch, from ``config/config.yaml``), trained for a few dozen steps on a
generated cube of 1800 x 1800 fine pixels with 30-pixel coarse cells (LUH2's 0.25
degrees over 30 arc-seconds), so its maps look like a trained model's (close to the
prior; harmonisation moves few pixels).

The headline is a job on a generated 3600 x 3600 cube (64 windows, one of them over
open ocean, which the job skips and the reference leaves out too; a production year,
36000 x 18000, has ~3300). A job also has fixed costs (setup; the last row of windows
blended, harmonised and written after the model has finished; the COG conversion),
which weigh more on a smaller region: the same model on the 1800 x 1800 cube is in
``params.small_region``, and an untrained model there, whose argmax is far from every
coarse target and makes harmonisation move most pixels, once in
``params.untrained_worst_case``.

The job (``run_predict``, in process) reads inputs, runs the windows, harmonises,
writes three COGs and the Zarr slice; the reference is only the model's forward passes
(bf16 autocast + channels_last, folded batch norm, as in the job) over the same
windows in the same batches, with inputs built beforehand: the faster of the job's
own scheme (one single-threaded stream per core, each on its share of the batch) and
one stream on all cores (``forward_s_by_streams`` gives both). Job and reference run
interleaved, 5 times; the ratio is of medians (this machine varies by 5-10 % between
runs). Target (issue 21): job / forward <= 1.15 on 3600 x 3600 and <= 1.3 on 1800 x 1800;
the machine's load averages go into the params (the ratio means little on a busy one).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from benchmarks.bench_predict_memory import load_average
from benchmarks.common import write_result

REPO = Path(__file__).resolve().parents[1]
SIZE, FACTOR = 1800, 30  # the training cube, and the small region measured
REGION_SIZE = 3600  # the headline region
TRAIN_STEPS = 40
REPEATS = 5
TARGET, SMALL_TARGET = 1.15, 1.3  # job / forward on the headline and the small region


def production_settings() -> tuple[dict, dict]:
    """(architecture, predict settings) of config/config.yaml."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    architecture = {key: config["train"][key] for key in ("base_channels", "depth")}
    predict = {key: config["predict"][key] for key in ("tile_size", "overlap", "batch_size")}
    return architecture, {**predict, "device": "cpu"}


def job_config(root: Path, *, architecture: dict, predict: dict):
    """The config of the benchmark's world under ``root``."""
    from ai4land.config import parse_config

    return parse_config({
        "run_name": "bench",
        "paths": {"raw": str(root / "raw"), "cube": str(root / "cube"),
                  "results": str(root / "results")},
        "datasets": {"coarse": {"historical": "unused.nc"},
                     "fine": {"pattern": "unused_{year}.tif", "years": [1960, 1965]}},
        "years": {"train": [1960, 1963], "test": [1964, 1965], "backward": [1958, 1959]},
        "train": {**architecture, "epochs": 1, "steps_per_epoch": TRAIN_STEPS,
                  "batch_size": 8, "tile_size": 128, "val_batches": 1,
                  "checkpoint_every": TRAIN_STEPS},
        "predict": predict,
    }, source="benchmark")


def job_world(root: Path, *, architecture: dict, predict: dict, size: int = SIZE):
    """Write the generated cube (``size`` pixels square) and its split under ``root``;
    return the config."""
    from ai4land.io.cube import Cube
    from ai4land.samples.split import make_split

    sys.path.insert(0, str(REPO / "tests" / "data"))
    from tiny_cube import write_tiny_cube

    write_tiny_cube(root / "cube", size=size, factor=FACTOR, years=range(1958, 1966))
    config = job_config(root, architecture=architecture, predict=predict)
    land = np.asarray(Cube.from_config(config).static["land_mask"].values).astype(bool)
    split = make_split(land, block_size=150, n_test=2, n_val=2, buffer=1,
                       train_years=config.years.train, test_years=config.years.test, seed=0)
    (root / "split.json").write_text(json.dumps(split.to_json()))
    return config


def trained_model(config, root: Path) -> tuple[Path, float]:
    from ai4land.train.loop import run_training

    start = time.perf_counter()
    run_training(config, output_dir=root / "trained", split_path=root / "split.json")
    return root / "trained", time.perf_counter() - start


def trained_world(root: Path):
    """The benchmark world under ``root`` with the production model trained on it:
    (config, model directory, training seconds)."""
    architecture, predict = production_settings()
    config = job_world(root, architecture=architecture, predict=predict)
    model_dir, train_s = trained_model(config, root)
    return config, model_dir, train_s


def untrained_model(config, root: Path) -> Path:
    from ai4land.io.cube import Cube
    from ai4land.models import ModelCard, UNet, save_model
    from ai4land.samples.features import input_channel_names

    names = input_channel_names(Cube.from_config(config), list(config.classes.predicted))
    torch.manual_seed(0)
    model = UNet(
        len(names),
        len(config.classes.predicted),
        base_channels=config.train.base_channels,
        depth=config.train.depth,
    )
    save_model(root / "untrained", model, ModelCard(
        input_channels=names, tile_size=config.train.tile_size,
        classes=list(config.classes.predicted), architecture=model.config))
    return root / "untrained"


def predict_job(config, root: Path, model_dir: Path, *, year: int = 1959) -> dict:
    """One backward-chain job (prior: the cube's first observed map), as Snakemake runs it."""
    from ai4land.predict.run import run_predict

    out = root / "results" / "maps" / model_dir.name / f"ai4land_historical_{year}.tif"
    return run_predict(config, scenario="historical", year=year, model_dir=model_dir,
                       prior_path=None, output=out,
                       store=root / "results" / model_dir.name / "ai4land.zarr", progress=False)


def model_forward(model_dir: Path):
    """One forward pass of the job's model (folded batch norm, channels_last, the job's
    autocast) as a callable on an input batch; nothing else."""
    from ai4land.device import autocast_dtype
    from ai4land.models.card import load_model
    from ai4land.predict.inference import fold_batchnorm

    model = fold_batchnorm(load_model(model_dir)[0]).to(memory_format=torch.channels_last)
    dtype = autocast_dtype(torch.device("cpu"))

    def forward(x: torch.Tensor) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype,
                                                    enabled=dtype is not None):
            model(x)

    return forward


def input_batch(cube, windows, *, predicted: list[int], year: int, prior, pad_multiple: int,
                coarse_cells=None) -> torch.Tensor:
    """The channels_last input of ``windows`` as the job builds it (backward chain, prior
    ``prior(window)``), padded to ``pad_multiple``."""
    from ai4land.predict.inference import _pad_to_multiple
    from ai4land.samples.features import build_inputs

    inputs = np.stack([build_inputs(cube, scenario="historical", year=year, window=w,
                                    predicted=predicted, prior=prior(w), direction=-1,
                                    coarse_cells=coarse_cells) for w in windows])
    x, _, _ = _pad_to_multiple(torch.from_numpy(inputs), pad_multiple)
    return x.contiguous(memory_format=torch.channels_last)


def forward_pass(config, model_dir: Path, *, streams: int, year: int = 1959):
    """A callable running only the model's forward passes over the job's windows, in
    the job's batches: ``streams`` single-threaded passes side by side, each on
    ``batch_size / streams`` windows, as the job runs them on a CPU with that many
    cores (``streams=1``: one pass at a time on all of torch's threads)."""
    from concurrent.futures import ThreadPoolExecutor

    from ai4land.grid import Window
    from ai4land.io.cube import Cube
    from ai4land.predict.inference import _intra_op_threads, plan_batches
    from ai4land.predict.probabilities import plan_prediction

    cube = Cube.from_config(config)
    forward = model_forward(model_dir)
    whole = Window(0, 0, *cube.fine_grid.shape)
    # the windows the job runs (not those over open ocean)
    windows, skip = plan_prediction(config, cube=cube,
                                    cells=cube.coarse_cells("historical", year, whole))
    run_windows = [w for w in windows if w not in skip]
    prior = cube.target_window(1958, whole)  # the job's anchor
    batches = [input_batch(cube, batch, predicted=list(config.classes.predicted), year=year,
                           prior=lambda w: prior[w.slices], pad_multiple=2**config.train.depth)
               for batch in plan_batches(run_windows, -(-config.predict.batch_size // streams))]

    def run():
        if streams == 1:
            for x in batches:
                forward(x)
            return
        with _intra_op_threads(1), ThreadPoolExecutor(streams) as pool:
            list(pool.map(forward, batches))

    return run, len(windows), len(skip)


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def measure(config, root: Path, model_dir: Path, repeats: int) -> dict:
    """Job and forward passes interleaved (load from other processes hits both alike).
    The reference is the faster forward scheme by median: the job's own (one
    single-threaded stream per core) or one stream on all cores; the ratio is the
    median job over that scheme's median. (Best of each is kept as ``best_ratio``: a
    minimum over the two schemes' 2 x repeats runs against one over the job's repeats
    would favour the reference by sample count alone.)"""
    streams = torch.get_num_threads()
    passes = {n: forward_pass(config, model_dir, streams=n) for n in sorted({1, streams})}
    forwards = {n: run for n, (run, *_) in passes.items()}
    _, n_windows, n_skipped = passes[1]
    predict_job(config, root, model_dir)  # warm-up: store created, caches filled
    for run in forwards.values():
        run()
    walls, reports, times = [], [], {n: [] for n in forwards}
    for _ in range(repeats):
        wall, report = timed(lambda: predict_job(config, root, model_dir))
        walls.append(wall)
        reports.append(report)
        for n, run in forwards.items():
            times[n].append(timed(run)[0])
    scheme = min(times, key=lambda n: np.median(times[n]))
    wall_s, forward_s = float(np.median(walls)), float(np.median(times[scheme]))
    typical = int(np.argsort(walls)[(len(walls) - 1) // 2])  # the median run (or lower)
    return {"wall_s": round(wall_s, 3), "forward_s": round(forward_s, 3),
            "ratio": round(wall_s / forward_s, 3), "reference_streams": scheme,
            "best_ratio": round(min(walls) / min(times[scheme]), 3),
            "windows": n_windows, "windows_skipped": n_skipped,
            "walls_s": [round(w, 3) for w in walls],
            "forward_s_by_streams": {str(n): [round(x, 3) for x in t] for n, t in times.items()},
            "job_stages_s": reports[typical]["timings_s"],
            "changed_pixels": reports[typical]["changed_pixels"],
            "valid_pixels": reports[typical]["pixels"]["valid"]}


def main() -> None:
    torch.set_num_threads(2)
    architecture, predict = production_settings()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config, trained, train_s = trained_world(root)
        small = measure(config, root, trained, REPEATS)
        worst = measure(config, root, untrained_model(config, root), 1)
        region_root = root / f"region_{REGION_SIZE}"
        region_config = job_world(region_root, architecture=architecture, predict=predict,
                                  size=REGION_SIZE)
        ours = measure(region_config, region_root, trained, REPEATS)
    write_result(
        "predict_overhead", metric="wall_s", ours=ours["wall_s"], reference=ours["forward_s"],
        reference_name=f"model forward only (the same windows and batches of a {REGION_SIZE} x "
                       f"{REGION_SIZE} region, bf16 + channels_last, the faster of one stream "
                       "per core and one stream on all cores; medians of 5 interleaved runs; "
                       "1800 x 1800 and an untrained model in params)",
        target=f"job / forward <= {TARGET} on {REGION_SIZE} x {REGION_SIZE} and <= "
               f"{SMALL_TARGET} on {SIZE} x {SIZE} (issue 21)",
        meets_target=ours["ratio"] <= TARGET and small["ratio"] <= SMALL_TARGET,
        params={"grid": [REGION_SIZE, REGION_SIZE], "factor": FACTOR, **predict, **architecture,
                "model": f"production architecture trained {TRAIN_STEPS} steps "
                         f"({train_s:.0f} s) on the generated {SIZE} x {SIZE} cube",
                "trained": ours, "small_region": {"grid": [SIZE, SIZE], **small},
                "untrained_worst_case": {"grid": [SIZE, SIZE], **worst},
                "repeats": REPEATS, "load_average": load_average()},
    )


if __name__ == "__main__":
    main()
