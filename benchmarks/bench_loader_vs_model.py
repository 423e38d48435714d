"""The training input pipeline's samples/s on one CPU thread (raw windows sliced from
the training arrays, collated, built into the network input by ``BatchInputs`` on the
CPU, as ``ai4land train``'s prefetch thread does without a GPU) vs the samples/s the
default U-Net consumes in training (the faster of all threads and one: on a machine
shared with other jobs, two threads can run far slower than one), side by side on the
demo cube.

The pipeline must be the faster of the two (ratio > 1) for the background prefetch
thread to hide it. Interleaved, best of 3 (a shared machine).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from benchmarks.bench_train_throughput import demo_batches, model_samples_per_s
from benchmarks.common import write_result

LOADER_BATCHES = 24
REPEATS = 3


def main() -> None:
    from ai4land.samples.features import BatchInputs
    from ai4land.train.loop import resolve_precision

    precision = resolve_precision(torch.device("cpu"), amp=True)
    threads = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="ai4land-bench-") as tmp:
        config, arrays, dataset, batches = demo_batches(Path(tmp), n_batches=LOADER_BATCHES)
        size, train = config.train.batch_size, config.train
        fresh = type(dataset)(arrays, dataset.plan, prior_mask=train.prior_mask,
                              seed=dataset.seed, input_dropout=train.input_dropout,
                              augment=train.augment)
        inputs = BatchInputs.of(arrays, predicted=config.classes.predicted,
                                prior_mask=train.prior_mask, augment=train.augment)

        def load() -> float:
            torch.set_num_threads(1)  # the prefetch thread's own setting in training
            start = time.perf_counter()
            for raw in DataLoader(fresh, batch_size=size, num_workers=0):
                inputs(raw, "cpu", channels_last=precision.channels_last)
            elapsed = time.perf_counter() - start
            torch.set_num_threads(threads)
            return len(fresh) / elapsed

        def consume(n_threads: int) -> float:
            torch.set_num_threads(n_threads)
            rate = model_samples_per_s(config, batches, in_channels=batches[0]["inputs"].shape[1],
                                       precision=precision)
            torch.set_num_threads(threads)
            return rate

        loader, by_threads = 0.0, {threads: 0.0, 1: 0.0}
        for _ in range(REPEATS):
            loader = max(loader, load())
            for n in by_threads:
                by_threads[n] = max(by_threads[n], consume(n))
        model = max(by_threads.values())  # the model's best rate on this CPU
    write_result(
        "loader_vs_model",
        metric="samples_per_s",
        ours=loader,
        reference=model,
        reference_name=f"model consumption ({precision.describe()}, the faster of {threads} "
        "threads and 1)",
        target="loader faster than the model (ratio > 1)",
        meets_target=loader > model,
        params={
            "batch_size": size,
            "tile_size": train.tile_size,
            "batches_loaded": LOADER_BATCHES,
            "model_samples_per_s_by_threads": {str(n): round(v, 2) for n, v in by_threads.items()},
            "augment": train.augment,
            "input_dropout": train.input_dropout,
            "repeats": REPEATS,
            "loader": "one thread: raw windows from in-memory training arrays, collated, "
            "built on the CPU by BatchInputs (channels_last as the model takes "
            "them); interleaved with the model, best of 3 each",
        },
        higher_is_better=True,
    )


if __name__ == "__main__":
    main()
