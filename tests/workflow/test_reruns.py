"""Partial reruns on a finished tiny run (dry runs; no Slurm needed).

A predict-only config change reruns predict and publish, not train; one (scenario,
year) can be regenerated alone; adding an SSP runs only its chain. Generated from the
config slices (ai4land.config.STAGES): an edit of each config entry reruns exactly the
rules whose slice holds it.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr
import yaml
from config_edits import leaf_edits

from ai4land.config import STAGES, parse_config, read_config_files, slice_hash

REPO = Path(__file__).resolve().parents[2]
TINY = [REPO / "config/demo.yaml", REPO / "tests/integration/tiny.yaml"]
UPSTREAM = {"demo_world", "prepare_target", "prepare_static", "prepare_coarse", "split", "train"}


def _snakemake(workdir: Path, *args: str, configs=()) -> str:
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(workdir), *args, "--configfile", *map(str, [*TINY, *configs])],
        capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def _planned(out: str) -> dict[str, int]:
    """{rule: job count} from the job stats table of a dry run."""
    table = out.split("Job stats:", 1)[1] if "Job stats:" in out else ""
    return {
        m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"
    }


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reruns")
    _snakemake(workdir, "--cores", "2")
    return workdir


@pytest.mark.slow
def test_nothing_to_do_on_a_finished_run(finished):
    assert "Nothing to be done" in _snakemake(finished, "-n")


@pytest.mark.slow
def test_predict_change_reruns_only_predict_and_publish(finished, tmp_path):
    change = tmp_path / "predict.yaml"
    change.write_text("predict:\n  compress_level: 5\n")
    planned = _planned(_snakemake(finished, "-n", configs=[change]))
    assert set(planned) == {"predict", "publish", "all"}, planned
    assert planned["predict"] == 6


@pytest.mark.slow
def test_harmonisation_change_also_reruns_evaluate(finished, tmp_path):
    # evaluate scores the published (harmonised) chains, so it follows predict.harmonize
    change = tmp_path / "predict.yaml"
    change.write_text("predict:\n  harmonize: false\n")
    planned = _planned(_snakemake(finished, "-n", configs=[change]))
    assert set(planned) == {"predict", "evaluate", "publish", "all"}, planned


@pytest.mark.slow
def test_train_change_reruns_train_and_downstream(finished, tmp_path):
    change = tmp_path / "train.yaml"
    change.write_text("train:\n  lr: 0.001\n")
    planned = _planned(_snakemake(finished, "-n", configs=[change]))
    assert {"train", "evaluate", "predict", "publish"} <= set(planned), planned
    assert not set(planned) & (UPSTREAM - {"train"}), planned


@pytest.mark.slow
def test_one_scenario_year_alone(finished):
    target = "results/maps/ssp585/ai4land_ssp585_2021.tif"
    planned = _planned(_snakemake(finished, "-n", "--forcerun", target, "--until", target))
    assert planned == {"predict": 1}, planned


@pytest.mark.slow
def test_dropping_an_ssp_leaves_every_chain_alone(finished, tmp_path):
    # The finished run has ssp126 and ssp585; the plan for a shorter SSP list.
    change = tmp_path / "ssp.yaml"
    change.write_text("scenarios: [ssp126]\n")
    planned = _planned(_snakemake(finished, "-n", configs=[change]))
    # the store keeps the dropped slices; publish lists fewer maps
    assert planned == {"publish": 1, "all": 1}, planned


@pytest.mark.slow
def test_adding_an_ssp_runs_only_its_chain(finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir, symlinks=True)
    only_126 = tmp_path / "ssp126.yaml"
    only_126.write_text("scenarios: [ssp126]\n")
    _snakemake(workdir, "--cores", "2", configs=[only_126])
    # as if ssp585 had never been predicted
    shutil.rmtree(workdir / "results/maps/ssp585")
    (workdir / "results/product/ai4land.zarr.ssp585.layout.json").unlink()
    kept = {p: p.read_bytes() for p in (workdir / "results/maps").rglob("*.tif")}

    planned = _planned(_snakemake(workdir, "-n"))
    assert planned == {"init_store": 1, "predict": 2, "publish": 1, "all": 1}, planned
    _snakemake(workdir, "--cores", "2")
    assert {p: p.read_bytes() for p in kept} == kept, "an existing chain was rewritten"
    store = xr.open_zarr(workdir / "results/product/ai4land.zarr", mask_and_scale=False)
    assert list(store["scenario"].values) == ["historical", "ssp126", "ssp585"]
    assert (store["lulc"].sel(scenario="ssp585", year=2021).values != 99).any()


def _recorded(workdir: Path) -> dict[str, tuple[str, list[str]]]:
    """{output path: (rule, params)} of a finished run, from Snakemake's metadata (one
    record per output, named by its path in urlsafe base64, split into '@' parts)."""
    root = workdir / ".snakemake" / "metadata"
    records = {}
    for path in root.rglob("*"):
        if path.is_file():
            name = "".join(part.removeprefix("@") for part in path.relative_to(root).parts)
            record = json.loads(path.read_text())
            records[base64.urlsafe_b64decode(name).decode()] = (record["rule"], record["params"])
    return records


@pytest.mark.slow
def test_every_rule_records_its_config_slice_hash(finished):
    config = parse_config(read_config_files(TINY))
    records = _recorded(finished)
    assert {rule for rule, _ in records.values()} == UPSTREAM | {
        "evaluate", "init_store", "predict", "publish"}
    for output, (rule, params) in records.items():
        assert repr(slice_hash(config, rule)) in params, f"{output} ({rule}): {params}"


@pytest.mark.slow
def test_each_config_entry_reruns_exactly_the_rules_reading_it(finished, tmp_path):
    """Generated from the slices: the leaf entries of the tiny config, grouped by the
    set of rules whose slice holds them; for one edit per group Snakemake's summary
    (``--summary``: each output's status) must say 'params changed' for the outputs of
    exactly those rules."""
    data = read_config_files(TINY)
    records = _recorded(finished)
    present = {rule for rule, _ in records.values()}
    groups: dict[frozenset, tuple[str, dict]] = {}
    for dotted, edited, entries in leaf_edits(data):
        readers = frozenset(rule for rule in present
                            if any(STAGES[rule].hashes(entry) for entry in entries))
        # an edit of paths.* moves every output: there is nothing recorded to compare
        if not dotted.startswith("paths."):
            groups.setdefault(readers, (dotted, edited))
    assert len(groups) > 10
    wrong = []
    for readers, (dotted, edited) in groups.items():
        change = tmp_path / f"{dotted}.yaml"
        change.write_text(yaml.safe_dump(edited))
        out = _snakemake(finished, "--summary", configs=[change])
        # columns: output file, date, rule, log file(s), status, plan
        rows = [line.split("\t") for line in out.splitlines() if line.count("\t") >= 5]
        listed = {row[2] for row in rows if "params changed" in row[4]}
        # an output whose input files moved with the edit is reported as that, which
        # reruns it whatever its params
        moved = {row[2] for row in rows if "set of input files changed" in row[4]}
        if not (listed <= readers and readers - listed <= moved):
            wrong.append(f"{dotted}: reruns {sorted(listed)}, its readers are {sorted(readers)}")
    assert not wrong, "\n".join(wrong)
