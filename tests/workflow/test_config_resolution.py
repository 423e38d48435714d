"""The config a run uses is exactly the files passed with --configfile, as
`ai4land config check` resolves them; only what the config asks for is scheduled."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ai4land.config import load_config

REPO = Path(__file__).resolve().parents[2]


def _snakemake(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"),
         "--directory", str(workdir), *args],
        capture_output=True, text=True, env=env, cwd=REPO)


def _config_check(*files) -> dict:
    result = subprocess.run([sys.executable, "-m", "ai4land", "config", "check", *map(str, files)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _workflow_config(workdir: Path) -> dict:
    """The config the workflow's rules were given (the merged file they pass to ai4land)."""
    return load_config(workdir / ".snakemake/ai4land/config.yaml").model_dump(mode="json")


def _planned(out: str) -> dict[str, int]:
    table = out.split("Job stats:", 1)[1]
    return {
        m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"
    }


def _one_ssp_config(path: Path) -> Path:
    """config/config.yaml with one SSP and no train: section (the schema's defaults)."""
    data = yaml.safe_load((REPO / "config/config.yaml").read_text())
    data["sources"] = {k: v for k, v in data["sources"].items()
                       if not k.startswith("luh2_ssp") or k == "luh2_ssp245"}
    coarse = data["datasets"]["coarse"]
    coarse["scenarios"] = {"ssp245": coarse["scenarios"]["ssp245"]}
    data["scenarios"] = ["ssp245"]
    del data["train"]
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_workflow_runs_the_config_that_config_check_prints(tmp_path):
    mine = _one_ssp_config(tmp_path / "my.yaml")
    result = _snakemake(tmp_path / "run", "-n", "--configfile", str(mine))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    resolved = _workflow_config(tmp_path / "run")
    assert resolved == _config_check(mine)
    # nothing of config/demo.yaml crept in
    assert list(resolved["datasets"]["coarse"]["scenarios"]) == ["ssp245"]
    assert resolved["train"]["epochs"] == 4 and resolved["train"]["input_dropout"] == {}


def test_several_config_files_merge_in_order_as_config_check_merges_them(tmp_path):
    files = [REPO / "config/demo.yaml", REPO / "tests/integration/tiny.yaml"]
    result = _snakemake(tmp_path, "-n", "--configfile", *map(str, files))
    assert result.returncode == 0, result.stderr[-3000:]
    assert _workflow_config(tmp_path) == _config_check(*files)


def test_without_configfile_the_demo_config_is_the_whole_config(tmp_path):
    result = _snakemake(tmp_path, "-n")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no --configfile given: running the demo world (config/demo.yaml)" in result.stderr
    assert _workflow_config(tmp_path) == _config_check(REPO / "config/demo.yaml")


def test_only_the_configured_scenarios_are_downloaded_and_prepared(tmp_path):
    one = tmp_path / "ssp245.yaml"
    one.write_text("scenarios: [ssp245]\n")
    result = _snakemake(tmp_path / "run", "-n", "--quiet", "rules",
                        "--configfile", str(REPO / "config/config.yaml"), str(one))
    assert result.returncode == 0, result.stderr[-3000:]
    planned = _planned(result.stdout + result.stderr)
    downloads = {rule for rule in planned if rule.startswith("download_luh2_ssp")}
    assert downloads == {"download_luh2_ssp245"}, planned
    assert planned["prepare_coarse"] == 2  # historical and ssp245
    assert planned["init_store"] == 2
    assert planned["predict"] == 110 + 81


def test_jobs_find_ai4land_without_an_activated_virtualenv(tmp_path):
    """Rules run the ai4land of Snakemake's interpreter, not whatever PATH holds."""
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                           if p and not shutil.which("ai4land", path=p))
    assert shutil.which("ai4land", path=path) is None
    env = dict(os.environ, PATH=path)
    env.pop("VIRTUAL_ENV", None)
    files = [REPO / "config/demo.yaml", REPO / "tests/integration/tiny.yaml"]
    result = _snakemake(tmp_path, "--cores", "1", "--configfile", *map(str, files),
                        "--until", "demo_world", env=env)
    log = tmp_path / "logs/demo_world.log"
    assert result.returncode == 0, (result.stderr[-3000:]
                                    + (log.read_text()[-2000:] if log.exists() else ""))
    assert (tmp_path / "resources/raw/luh2/states.nc").is_file()


def _tiny_with(tmp_path: Path, text: str) -> list[str]:
    override = tmp_path / "override.yaml"
    override.write_text(text)
    return [str(REPO / "config/demo.yaml"), str(REPO / "tests/integration/tiny.yaml"),
            str(override)]


def test_a_config_without_maps_to_predict_trains_and_evaluates(tmp_path):
    # e.g. one observed year of your own data, nothing asked for before or after it
    files = _tiny_with(tmp_path, "years: {backward: null, forward: null}\nscenarios: []\n")
    result = _snakemake(tmp_path / "run", "-n", "--configfile", *files)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "the config asks for no maps" in result.stderr
    planned = _planned(result.stdout + result.stderr)
    assert planned["evaluate"] == 1 and planned["all"] == 1
    assert not {"predict", "init_store", "publish"} & set(planned), planned
    # asked for by name, publish is planned (its CLI then says "nothing to publish")
    result = _snakemake(tmp_path / "run", "-n", "publish", "--configfile", *files)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "IndexError" not in result.stderr and _planned(result.stdout)["publish"] == 1


def test_observed_years_are_predicted_without_a_chain(tmp_path):
    files = _tiny_with(tmp_path, "years: {observed: [2014, 2015]}\n")
    result = _snakemake(tmp_path / "run", "-n", "--configfile", *files)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout + result.stderr
    # 2 backward + 2 observed (historical) + 2 x 2 forward years
    assert _planned(out)["predict"] == 8
    # an observed year's job reads no previous map (its prior is the cube's observed map)
    inputs = re.search(r"input: (.*)\n\s*output: results/maps/historical/ai4land_historical_2015"
                       r"\.tif", out)[1]
    assert "results/maps" not in inputs and "results/model/model.pt" in inputs


@pytest.mark.slow
def test_an_observed_years_harmonised_map_runs_through_publish(tmp_path):
    files = _tiny_with(tmp_path, "years: {backward: null, forward: null, observed: [2015, 2015]}\n"
                                 "scenarios: []\n")
    workdir = tmp_path / "run"
    result = _snakemake(workdir, "--cores", "2", "--configfile", *files)
    assert result.returncode == 0, result.stderr[-5000:]
    report = json.loads((workdir / "results/maps/historical/ai4land_historical_2015.json")
                        .read_text())
    assert report["prior"] == "observed 2014" and report["anchor_year"] == 2015
    assert report["conservation"]["after"]["delta_target"]["mae"] < 0.02
    manifest = (workdir / "results/publish/SHA256SUMS").read_text()
    assert "maps/historical/ai4land_historical_2015.tif" in manifest
    assert sorted(p.name for p in (workdir / "results/maps/historical").glob("*.tif")) == [
        "ai4land_historical_2015.tif", "ai4land_historical_2015_entropy.tif",
        "ai4land_historical_2015_probability.tif"]
