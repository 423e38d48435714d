"""Shared helpers: timing, machine description, and the result JSON (docs/design.md)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def trained_run(config_path: str | Path, *, how: str):
    """The config at ``config_path`` (relative to the repository root) and the model
    directory and split file its run wrote under ``paths.results``; exits with ``how`` to
    make them when either is missing (the evaluation benchmarks score a trained run)."""
    from ai4land.config import load_config

    config = load_config(ROOT / config_path)
    results = ROOT / config.paths.results
    model, split = results / "model", results / "split" / "split.json"
    if not (model / "model.pt").is_file() or not split.is_file():
        raise SystemExit(f"{model / 'model.pt'} or {split} missing: {how}")
    return config, model, split


def run_child(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` of a measuring child that dies with this process (Linux
    ``PR_SET_PDEATHSIG``): a benchmark stopped mid-run leaves no child using the cores."""
    from ai4land.train.launch import die_with_parent

    parent = os.getpid()
    return subprocess.run(command, preexec_fn=lambda: die_with_parent(parent=parent), **kwargs)


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}"


def best_of(func: Callable[[], object], *, repeats: int = 3) -> float:
    """Fastest wall time of ``repeats`` runs (seconds): the least disturbed by noise."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def write_result(name: str, *, metric: str, ours: float, reference: float | None,
                 reference_name: str | None, target: str | None, meets_target: bool | None,
                 params: dict, higher_is_better: bool = False) -> dict:
    ratio = ours / reference if reference else None
    result = {
        "name": name,
        "metric": metric,
        "ours": round(ours, 4),
        "reference": None if reference is None else round(reference, 4),
        "reference_name": reference_name,
        "ratio": None if ratio is None else round(ratio, 3),
        "higher_is_better": higher_is_better,
        "target": target,
        "meets_target": meets_target,
        "machine": machine(),
        "date": dt.date.today().isoformat(),
        "params": params,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return result
