"""workflow/envs/*.yaml install what pyproject.toml declares, with the same pins."""

import re
import tomllib

import yaml


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_conda_envs_match_pyproject(repo):
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    wanted = {_name(r): r.replace(" ", "") for r in project["dependencies"]}
    python = project["requires-python"].removeprefix(">=")
    envs = sorted((repo / "workflow/envs").glob("*.yaml"))
    assert envs
    for env in envs:
        deps = yaml.safe_load(env.read_text())["dependencies"]
        pythons = [d for d in deps if isinstance(d, str) and d.startswith("python")]
        assert pythons and pythons[0].split("=")[-1].startswith(python), (env.name, pythons)
        pip = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
        assert any(line.startswith("-e ") for line in pip), f"{env.name}: the package itself"
        have = {_name(r): r.replace(" ", "") for r in pip if not r.startswith("-")}
        assert have == wanted, (env.name, set(have.items()) ^ set(wanted.items()))
