"""Training samples/s on CPU for the default demo U-Net: bf16 autocast + channels_last
(what ``ai4land train`` uses where the CPU has native bf16) vs the same model in fp32
with the default memory layout, side by side on the same batches of the demo cube.

Only optimiser steps are timed (forward, loss, backward, clipping, AdamW); the batches
are loaded beforehand, so this is the model's consumption rate.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import best_of, write_result

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from data.demo_cube import demo_workspace, split_path  # noqa: E402

STEPS = 6
N_BATCHES = 6


def demo_batches(directory: Path, *, n_batches: int = N_BATCHES):
    """(config, arrays, dataset, batches): ``n_batches`` training batches of the demo cube
    (raw ``WindowDataset`` items, collated, built into inputs on the CPU)."""
    from torch.utils.data import default_collate

    from ai4land.io.cube import Cube
    from ai4land.samples.arrays import TrainingArrays
    from ai4land.samples.dataset import WindowDataset
    from ai4land.samples.features import BatchInputs
    from ai4land.samples.plan import SamplePlanner
    from ai4land.samples.split import load_split

    config = demo_workspace(directory)
    cube = Cube.from_config(config)
    split = load_split(split_path(config))
    train = config.train
    years = [y for y in split.train_years if y in cube.target_years]
    arrays = TrainingArrays.from_cube(cube, years)
    planner = SamplePlanner(split.role_mask("train"), tile_size=train.tile_size,
                            years=years, seed=config.seed,
                            scenario_for_year=cube.scenario_for_year)
    dataset = WindowDataset(arrays, planner.epoch(0, n_batches * train.batch_size),
                            prior_mask=train.prior_mask, seed=config.seed)
    inputs = BatchInputs.of(arrays, predicted=config.classes.predicted,
                            prior_mask=train.prior_mask)
    size = train.batch_size
    batches = [inputs(default_collate([dataset[i] for i in range(b * size, (b + 1) * size)]))
               for b in range(n_batches)]
    return config, arrays, dataset, batches


def model_samples_per_s(config, batches, *, in_channels: int, precision) -> float:
    """Best-of-3 optimiser steps per second x batch size, for one precision setting."""
    from ai4land.models.unet import UNet
    from ai4land.train.loop import _batch_stats

    torch.manual_seed(config.seed)
    train = config.train
    net = UNet(in_channels, len(config.classes.predicted), base_channels=train.base_channels,
               depth=train.depth, norm=train.norm)
    if precision.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=train.lr)
    device = torch.device("cpu")

    def steps(n: int) -> None:
        for i in range(n):
            batch = batches[i % len(batches)]
            loss_sum, stats, _ = _batch_stats(net, batch, device=device, precision=precision,
                                              num_classes=len(config.classes.predicted))
            optimizer.zero_grad(set_to_none=True)
            (loss_sum / stats[1].clamp(min=1)).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), train.grad_clip)
            optimizer.step()

    steps(2)  # warm-up: oneDNN primitive creation
    return STEPS * train.batch_size / best_of(lambda: steps(STEPS))


def main() -> None:
    from ai4land.device import cpu_supports_bf16
    from ai4land.train.loop import Precision, resolve_precision

    with tempfile.TemporaryDirectory(prefix="ai4land-bench-") as tmp:
        config, _, dataset, batches = demo_batches(Path(tmp))
        in_channels = batches[0]["inputs"].shape[1]
        ours_precision = resolve_precision(torch.device("cpu"), amp=True)
        ours = model_samples_per_s(config, batches, in_channels=in_channels,
                                   precision=ours_precision)
        reference = model_samples_per_s(config, batches, in_channels=in_channels,
                                        precision=Precision(None, False, False))
    write_result(
        "train_throughput", metric="samples_per_s", ours=ours, reference=reference,
        reference_name="fp32, default memory layout",
        target="faster than fp32 (ratio > 1) where the CPU has native bf16",
        meets_target=ours > reference if cpu_supports_bf16() else None,
        params={"precision": ours_precision.describe(), "batch_size": config.train.batch_size,
                "tile_size": config.train.tile_size, "base_channels": config.train.base_channels,
                "depth": config.train.depth, "in_channels": int(in_channels),
                "steps_timed": STEPS, "threads": torch.get_num_threads()},
        higher_is_better=True,
    )


if __name__ == "__main__":
    main()
