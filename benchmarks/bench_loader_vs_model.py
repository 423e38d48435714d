"""Data-loader samples/s (reading windows from the demo cube, building inputs, collating)
vs the samples/s the default U-Net consumes in training, side by side.

The loader must be the faster of the two (ratio > 1) for the background prefetch
thread to hide it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from benchmarks.bench_train_throughput import demo_batches, model_samples_per_s
from benchmarks.common import best_of, write_result

LOADER_BATCHES = 6


def main() -> None:
    from ai4land.train import resolve_precision

    with tempfile.TemporaryDirectory(prefix="ai4land-bench-") as tmp:
        config, _, dataset, batches = demo_batches(Path(tmp), n_batches=LOADER_BATCHES * 4)
        size = config.train.batch_size

        def load() -> None:
            # A fresh dataset each time: coarse cells are cached per dataset.
            fresh = type(dataset)(dataset.cube, dataset.plan[: LOADER_BATCHES * size],
                                  predicted=dataset.predicted, prior_mask=dataset.prior_mask,
                                  seed=dataset.seed)
            for _ in DataLoader(fresh, batch_size=size, num_workers=0):
                pass

        load()
        loader = LOADER_BATCHES * size / best_of(load)
        precision = resolve_precision(torch.device("cpu"), amp=True)
        model = model_samples_per_s(config, batches, in_channels=batches[0]["inputs"].shape[1],
                                    precision=precision)
    write_result(
        "loader_vs_model", metric="samples_per_s", ours=loader, reference=model,
        reference_name=f"model consumption ({precision.describe()})",
        target="loader faster than the model (ratio > 1)", meets_target=loader > model,
        params={"batch_size": size, "tile_size": config.train.tile_size,
                "batches_loaded": LOADER_BATCHES, "loader": "one thread, cold coarse cache"},
        higher_is_better=True,
    )


if __name__ == "__main__":
    main()
