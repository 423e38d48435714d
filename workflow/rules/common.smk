# Shared definitions: the validated config, paths, and chain (prior) lookups.
import os
import shlex
import sys

from snakemake_interface_executor_plugins.settings import DeploymentMethod

from ai4land.config import parse_config, slice_hash
from ai4land.errors import Ai4landError
from ai4land.io.locks import claim_workdir

try:
    CFG = parse_config(config, source=", ".join(map(str, workflow.configfiles)))
except Ai4landError as exc:
    sys.exit(f"ai4land: error: {exc}")

def _merged_config_file():
    """The merged config in one file at a fixed path, written only when it changed.

    Rules pass this path, not the list of --configfile paths, so adding or renaming a
    config file does not change every rule's params; each rule's config_hash param (the
    hash of its config slice, ai4land.config.STAGES) reruns exactly the rules whose
    slice holds a changed entry.
    """
    import yaml

    path = os.path.join(".snakemake", "ai4land", "config.yaml")
    text = yaml.safe_dump(dict(config), sort_keys=True)
    if not os.path.exists(path) or open(path).read() != text:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    return path


CONFIG_ARGS = f"--config {_merged_config_file()}"
# A killed run's Snakemake locks would stop every later run (LockException): this run
# holds a lock that dies with it, and removes the locks of runs that hold none.
if workflow.is_main_process:
    for _stale in claim_workdir(".snakemake"):
        print(f"ai4land: removed {_stale}, left by a killed run", file=sys.stderr)
# Rules call `ai4land`: the package installed with the interpreter Snakemake runs under
# (a shell function, so no activated virtualenv or PATH entry is needed); with --sdm conda,
# the one of the rule's environment.
if DeploymentMethod.CONDA not in workflow.deployment_settings.deployment_method:
    _python = shlex.quote(sys.executable).replace("{", "{{{{").replace("}", "}}}}")
    shell.prefix(f'set -euo pipefail; ai4land() {{{{ {_python} -m ai4land "$@"; }}}}; ')
if workflow.is_main_process and not CFG.product_years:
    print("ai4land: the config asks for no maps (years.backward, years.forward and "
          "years.observed are empty): the run ends with the evaluation", file=sys.stderr)
RAW = CFG.paths.raw
CUBE = CFG.paths.cube
RESULTS = CFG.paths.results
LOGS = "logs"
BENCHMARKS = "benchmarks/logs"
MODEL_DIR = f"{RESULTS}/model"
# One layout marker per scenario: adding an SSP adds a marker (and grows the store)
# without touching the markers, and so the chains, of the other scenarios.
STORE_MARKER = f"{RESULTS}/product/ai4land.zarr.{{scenario}}.layout.json"


wildcard_constraints:
    scenario="[A-Za-z0-9_-]+",
    year=r"\d{4}",


def store_of(marker):
    """The product Zarr store next to a scenario's layout marker file."""
    return marker.removesuffix(".layout.json").rsplit(".", 1)[0]


def results_path(publish_output, name):
    """``name`` under the results directory of a ``results/publish/<file>`` output."""
    return os.path.join(os.path.dirname(os.path.dirname(publish_output)), name)


def map_path(scenario, year, suffix=".tif"):
    return f"{RESULTS}/maps/{scenario}/ai4land_{scenario}_{year}{suffix}"


def coarse_source(wildcards):
    if wildcards.scenario == "historical":
        return CFG.datasets.coarse.historical
    if wildcards.scenario not in CFG.datasets.coarse.scenarios:
        raise ValueError(f"unknown coarse scenario {wildcards.scenario!r}")
    return CFG.datasets.coarse.scenarios[wildcards.scenario]


def scenario_cube(wildcards):
    """The cube a (scenario, year) prediction reads: CUBE_PARTS and the scenario's coarse cube."""
    own = [] if wildcards.scenario == "historical" else [f"{CUBE}/coarse/{wildcards.scenario}.zarr"]
    return CUBE_PARTS + own


def prior_map(wildcards):
    """The neighbouring year's map in this scenario's chain; none for the chain's first year
    and for an observed year (its prior is an observed map of the cube)."""
    years = CFG.chain_years(wildcards.scenario)
    year = int(wildcards.year)
    if year in CFG.scenario_years(wildcards.scenario) and year not in years:
        return []
    if year not in years:
        raise ValueError(f"year {year} is not in the {wildcards.scenario} chain {years}")
    position = years.index(year)
    return [map_path(wildcards.scenario, years[position - 1])] if position else []


def prior_arg(wildcards, input):
    return f"--prior {input.prior}" if input.prior else ""


ALL_MAPS = [
    map_path(scenario, year, suffix)
    for scenario in CFG.product_scenarios
    for year in CFG.scenario_years(scenario)
    for suffix in (".tif", ".json")
]
