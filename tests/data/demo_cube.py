"""A small demo world as an analysis-ready cube plus split, for quality tests and benchmarks.

``demo_workspace(directory, bbox=..., overrides=...)`` loads ``config/demo.yaml``, points
every path under ``directory``, writes the synthetic demo inputs for ``bbox``, prepares
the cube (target, static, historical coarse) and writes ``results/split/split.json``.
It returns the validated ``Config``. Everything is a pure function of the arguments.
"""

from __future__ import annotations

from pathlib import Path

from ai4land.config import Config, deep_update, parse_config, read_config_files
from ai4land.demo_world import write_demo_world
from ai4land.prepare import prepare_coarse, prepare_static, prepare_target
from ai4land.samples.split import run_split

REPO = Path(__file__).resolve().parents[2]
# 3 x 3 degrees: 300 x 300 fine pixels, 12 x 12 LUH2 cells, ~15 training blocks.
SMALL_BBOX = (4.0, 42.0, 7.0, 45.0)
# Four test years keep evaluation short; overrides may change them.
TEST_YEARS = [2001, 2004]


def demo_config(directory: Path, *, bbox=SMALL_BBOX, overrides: dict | None = None) -> Config:
    """``config/demo.yaml`` for ``bbox`` with every input and output under ``directory``."""
    directory = Path(directory).resolve()
    data = read_config_files([REPO / "config" / "demo.yaml"])

    def inside(path: str | None) -> str | None:
        return None if path is None else str(directory / path)

    coarse = data["datasets"]["coarse"]
    coarse["historical"] = inside(coarse["historical"])
    coarse["static"] = inside(coarse.get("static"))
    coarse["scenarios"] = {k: inside(v) for k, v in coarse.get("scenarios", {}).items()}
    fine = data["datasets"]["fine"]
    fine["archive"] = inside(fine.get("archive"))
    for layer in data["datasets"].get("static", []):
        layer["path"] = inside(layer["path"])
    data["paths"] = {name: inside(path) for name, path in data["paths"].items()}
    data["demo"] = {**data.get("demo", {}), "bbox": list(bbox)}
    data["years"]["test"] = list(TEST_YEARS)
    return parse_config(deep_update(data, overrides or {}), source="demo_config")


def demo_workspace(directory: Path, *, bbox=SMALL_BBOX, overrides: dict | None = None) -> Config:
    """Write the demo inputs, the cube and the split under ``directory``; return the config."""
    config = demo_config(directory, bbox=bbox, overrides=overrides)
    write_demo_world(config, progress=False)
    prepare_target(config, progress=False)
    prepare_static(config, progress=False)
    prepare_coarse(config, scenario="historical", progress=False)
    split_dir = Path(config.paths.results) / "split"
    split_dir.mkdir(parents=True, exist_ok=True)
    run_split(config, output=split_dir / "split.json", figure=split_dir / "split.png")
    return config


def split_path(config: Config) -> Path:
    return Path(config.paths.results) / "split" / "split.json"
