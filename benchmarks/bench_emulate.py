"""emulate_latency and service_throughput: the emulator on demand, warm, on this machine.

World: a generated cube of 1200 x 1200 pixels of 0.01 degree with 30-pixel coarse cells
(``bench_predict_overhead.job_world``) and a forward scenario year (1966) written as a
LUH2-format NetCDF. Model: the production architecture and predict settings of
``config/config.yaml`` (untrained weights: the time of a forward pass does not depend
on them; harmonisation moves more pixels than with a trained model, so this is the
slower case), and the demo's in ``params.demo_model``.

emulate_latency: ``Emulator.predict`` of a 900 x 900 pixel bbox (9 x 9 degrees, ~1000 x
1000 km) for one year, end to end: the scenario file opened and read, inputs built, the
windows run and blended, harmonised, layers made, the Dataset returned; the model
loaded once before (warm) and one call made to warm up. Median of ``REPEATS`` calls.
Reference: the model's forward passes alone over the same windows and batches (inputs
built beforehand; the faster of one stream on all cores and the emulator's two
single-threaded streams, which wait less at operator barriers on a loaded machine), so
the ratio is the emulator's overhead. Target: < 5 s.

service_throughput: ``ai4land serve`` in its own process (max-concurrent 1, as
predictions use all cores), 4 clients (httpx) each posting the same request
``PER_CLIENT`` times (maps as NetCDF); requests per second over the whole run.
Reference: one client posting the same total number of requests one after another.

This machine (2 cores) is shared with other agents' jobs: the load average at the
start of each measurement is in ``params``; numbers are noisy.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_predict_overhead import (
    input_batch,
    job_config,
    job_world,
    model_forward,
    production_settings,
    untrained_model,
)
from benchmarks.common import write_result

REPO = Path(__file__).resolve().parents[1]
SIZE = 1200
BBOX = (5.13, 37.27, 14.13, 46.27)  # 900 x 900 pixels, not on coarse-cell edges
YEAR = 1966
REPEATS = 3
CLIENTS, PER_CLIENT = 4, 2


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _world(root: Path) -> None:
    """The cube and the scenario file (the historical coarse data, with YEAR added)."""
    sys.path.insert(0, str(REPO / "tests" / "data"))
    from emulator_world import write_luh_file
    from tiny_cube import rewrite_coarse_years

    architecture, predict = production_settings()
    job_world(root, architecture=architecture, predict=predict, size=SIZE)
    rewrite_coarse_years(root / "cube", "historical", list(range(1958, YEAR + 1)))
    write_luh_file(root / "cube", "historical", root / "scenario.nc")


def _forward_reference(emulator, model_dir: Path) -> dict[int, float]:
    """Seconds of the model's forward passes alone over the bbox region's windows, in
    the job's batches, by number of streams (1: one pass at a time on all of torch's
    threads; 2: two single-threaded passes side by side, the emulator's scheme)."""
    from concurrent.futures import ThreadPoolExecutor

    from ai4land.grid import Window
    from ai4land.predict.inference import _intra_op_threads, plan_batches, plan_windows

    region, _ = emulator.region(BBOX)
    config = emulator.config
    windows = plan_windows(region.fine_grid.shape, tile_size=config.predict.tile_size,
                           overlap=config.predict.overlap)
    forward = model_forward(model_dir)
    anchor = max(emulator.cube.target_years)
    whole = Window(0, 0, *region.fine_grid.shape)
    prior = region.target_window(anchor, whole)
    cells = region.cube_cells(anchor)
    pad = 2 ** int(emulator.model.depth)
    batches = [input_batch(region, batch, predicted=list(config.classes.predicted), year=anchor,
                           prior=lambda w: prior[w.slices], pad_multiple=pad, coarse_cells=cells)
               for batch in plan_batches(windows, config.predict.batch_size)]
    forward(batches[0])
    seconds = {}
    for streams in (1, 2):  # one pass on all cores, or the job's single-threaded streams
        chunks = [c for x in batches for c in torch.tensor_split(x, streams) if len(c)]
        start = time.perf_counter()
        if streams == 1:
            for x in chunks:
                forward(x)
        else:
            with _intra_op_threads(1), ThreadPoolExecutor(streams) as pool:
                list(pool.map(forward, chunks))
        seconds[streams] = time.perf_counter() - start
    return seconds


def latency(root: Path, *, architecture: dict, predict: dict, name: str) -> dict:
    from ai4land.emulator.core import Emulator

    config = job_config(root, architecture=architecture, predict=predict)
    model_dir = untrained_model(config, root / name)
    emulator = Emulator.from_model(model_dir, config=config)
    scenario = root / "scenario.nc"
    emulator.predict(scenario, bbox=BBOX, years=YEAR)  # warm-up (compiled kernels, caches)
    load = _load()
    walls, forwards, by_streams = [], [], []
    for _ in range(REPEATS):  # interleaved with the reference
        start = time.perf_counter()
        ds = emulator.predict(scenario, bbox=BBOX, years=YEAR)
        walls.append(time.perf_counter() - start)
        seconds = _forward_reference(emulator, model_dir)
        forwards.append(min(seconds.values()))
        by_streams.append({str(k): round(v, 3) for k, v in seconds.items()})
    region, _ = emulator.region(BBOX)
    return {"wall_s": statistics.median(walls), "walls_s": [round(w, 3) for w in walls],
            "forward_s": statistics.median(forwards),
            "forwards_s": [round(f, 3) for f in forwards], "forward_s_by_streams": by_streams,
            "shape": list(ds["lulc"].shape[1:]), "region_shape": list(region.fine_grid.shape),
            "architecture": architecture, "predict": predict, "threads": torch.get_num_threads(),
            "load_average_at_start": load, "model_dir": str(model_dir), "config": config}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def throughput(root: Path, model_dir: Path, config) -> dict:
    import httpx
    import yaml

    config_file = root / "service-config.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    port = _free_port()
    log = (root / "serve.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "ai4land", "serve", "--model", str(model_dir), "--config",
         str(config_file), "--port", str(port), "--scenario-dir", str(root),
         "--max-concurrent", "1", "--max-queue", str(CLIENTS)],
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    data = {"years": str(YEAR), "bbox": ",".join(map(str, BBOX)),
            "scenario_path": str(root / "scenario.nc")}
    try:
        with httpx.Client(base_url=base, timeout=600) as client:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if client.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.5)
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((root / "serve.log").read_text()[-2000:])
            assert client.post("/emulate", data=data).status_code == 200  # warm-up

            def run(n: int, latencies: list) -> None:
                with httpx.Client(base_url=base, timeout=600) as own:
                    for _ in range(n):
                        start = time.perf_counter()
                        response = own.post("/emulate", data=data)
                        response.raise_for_status()
                        latencies.append(time.perf_counter() - start)

            load = _load()
            sequential: list[float] = []
            start = time.perf_counter()
            run(CLIENTS * PER_CLIENT, sequential)
            sequential_s = time.perf_counter() - start
            concurrent: list[float] = []
            threads = [threading.Thread(target=run, args=(PER_CLIENT, concurrent))
                       for _ in range(CLIENTS)]
            start = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            concurrent_s = time.perf_counter() - start
    finally:
        process.terminate()
        process.wait(timeout=60)
        log.close()
    n = CLIENTS * PER_CLIENT
    return {"requests": n, "clients": CLIENTS, "concurrent_s": round(concurrent_s, 3),
            "sequential_s": round(sequential_s, 3),
            "concurrent_latency_p50_s": round(float(np.percentile(concurrent, 50)), 3),
            "concurrent_latency_max_s": round(max(concurrent), 3),
            "sequential_latency_p50_s": round(float(np.percentile(sequential, 50)), 3),
            "rps": n / concurrent_s, "sequential_rps": n / sequential_s,
            "completed": len(concurrent), "load_average_at_start": load}


def main() -> None:
    architecture, predict = production_settings()
    with tempfile.TemporaryDirectory(prefix="ai4land-bench-emulate-") as tmp:
        root = Path(tmp)
        _world(root)
        production = latency(root, architecture=architecture, predict=predict, name="production")
        demo = latency(root, architecture={"base_channels": 16, "depth": 3},
                       predict={"tile_size": 128, "overlap": 32, "batch_size": 8,
                                "device": "cpu"}, name="demo")
        service = throughput(root, Path(production.pop("model_dir")), production.pop("config"))
    demo.pop("model_dir"), demo.pop("config")
    write_result(
        "emulate_latency", metric="wall_s", ours=production["wall_s"],
        reference=production["forward_s"],
        reference_name="the model's forward passes alone over the same windows and batches "
                       "(the faster of one stream on all cores and two single-threaded ones)",
        target="< 5 s for a 900 x 900 pixel bbox, one year, warm model, 2 cores",
        meets_target=production["wall_s"] < 5.0,
        params={**production, "demo_model": demo, "year": YEAR, "bbox": list(BBOX),
                "weights": "untrained (production architecture)", "repeats": REPEATS,
                "note": "2-core machine shared with other agents' jobs: noisy"})
    write_result(
        "service_throughput", metric="requests_per_s", ours=service["rps"],
        reference=service["sequential_rps"],
        reference_name="one client, the same requests one after another",
        target=None, meets_target=None, higher_is_better=True,
        params={**service, "request": {"bbox": list(BBOX), "years": [YEAR], "output": "maps",
                                       "format": "netcdf"},
                "server": {"max_concurrent": 1, "max_queue": CLIENTS},
                "note": "2-core machine shared with other agents' jobs: noisy"})


if __name__ == "__main__":
    main()
