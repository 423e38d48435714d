# Shared definitions: the validated config, paths, and chain (prior) lookups.
import os
import sys

from ai4land.config import parse_config
from ai4land.errors import Ai4landError

try:
    CFG = parse_config(config, source=", ".join(map(str, workflow.configfiles)))
except Ai4landError as exc:
    sys.exit(f"ai4land: error: {exc}")

# Every CLI call sees exactly the config files Snakemake merged, in the same order:
# the default first, then each --configfile (later files win).
CONFIG_FILES = [DEFAULT_CONFIG] + [
    str(path) for path in workflow.configfiles
    if os.path.abspath(path) != os.path.abspath(DEFAULT_CONFIG)
]
CONFIG_ARGS = " ".join(f"--config {path}" for path in CONFIG_FILES)
RAW = CFG.paths.raw
CUBE = CFG.paths.cube
RESULTS = CFG.paths.results
LOGS = "logs"
BENCHMARKS = "benchmarks/logs"
COARSE_SCENARIOS = ["historical"] + list(CFG.datasets.coarse.scenarios)
MODEL_DIR = f"{RESULTS}/model"
STORE_MARKER = f"{RESULTS}/product/ai4land.zarr.layout.json"


wildcard_constraints:
    scenario="[A-Za-z0-9_-]+",
    year=r"\d{4}",


def store_of(marker):
    """The product Zarr store next to its layout marker file."""
    return marker.removesuffix(".layout.json")


def map_path(scenario, year, suffix=".tif"):
    return f"{RESULTS}/maps/{scenario}/ai4land_{scenario}_{year}{suffix}"


def coarse_source(wildcards):
    if wildcards.scenario == "historical":
        return CFG.datasets.coarse.historical
    if wildcards.scenario not in CFG.datasets.coarse.scenarios:
        raise ValueError(f"unknown coarse scenario {wildcards.scenario!r}")
    return CFG.datasets.coarse.scenarios[wildcards.scenario]


def prior_map(wildcards):
    """The neighbouring year's map in this scenario's chain; none for the chain's first year."""
    years = CFG.chain_years(wildcards.scenario)
    year = int(wildcards.year)
    if year not in years:
        raise ValueError(f"year {year} is not in the {wildcards.scenario} chain {years}")
    position = years.index(year)
    return [map_path(wildcards.scenario, years[position - 1])] if position else []


def prior_arg(wildcards, input):
    return f"--prior {input.prior}" if input.prior else ""


ALL_MAPS = [
    map_path(scenario, year, suffix)
    for scenario in CFG.product_scenarios
    for year in CFG.chain_years(scenario)
    for suffix in (".tif", ".json")
]
