import subprocess
import sys

import pytest
import yaml

from ai4land.config import load_config, parse_config
from ai4land.errors import ConfigError


def test_demo_and_production_configs_validate(repo):
    demo = load_config(repo / "config/demo.yaml")
    production = load_config(repo / "config/config.yaml")  # a whole config on its own
    assert demo.product_scenarios == ["historical", "ssp126", "ssp585"]
    assert demo.backward_years == [1959, 1958, 1957, 1956]
    assert len(production.scenarios) == 8
    assert production.forward_years[-1] == 2100
    assert production.backward_years[-1] == 1850
    assert not production.demo_world
    assert set(production.sources) >= {"luh2_states", "luh2_static", "hildaplus", "elevation"}


def test_error_names_file_setting_and_value(tmp_path, demo_config_dict):
    demo_config_dict["train"]["batch_size"] = -1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(demo_config_dict))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: train.batch_size")
    assert "greater than 0" in message and "-1" in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c["train"].update(bach_size=3), "train.bach_size is not a known setting"),
        (lambda c: c.pop("years"), "years is required"),
        (lambda c: c["years"].update(test=[2001, 2030]), "outside the observed years"),
        (lambda c: c["years"].update(forward=[2010, 2020]), "must start after the last observed"),
        (lambda c: c.update(scenarios=["ssp999"]), "['ssp999'] have no file"),
        (lambda c: c["predict"].update(overlap=100), "overlap must be < tile_size / 2"),
        (
            lambda c: c.update(classes={"predicted": [11, 12]}),
            "class code 12 is not in classes.legend",
        ),
    ],
)
def test_invalid_configs(demo_config_dict, change, expected):
    change(demo_config_dict)
    with pytest.raises(ConfigError, match=None) as info:
        parse_config(demo_config_dict, source="x.yaml")
    assert expected in str(info.value)


def test_config_hash_is_stable_and_sensitive(demo_config_dict):
    a = parse_config(demo_config_dict)
    b = parse_config(demo_config_dict)
    demo_config_dict["seed"] = 7
    c = parse_config(demo_config_dict)
    assert a.hash() == b.hash() != c.hash()


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(bad)


def test_cli_config_check(repo, tmp_path, demo_config_dict):
    ok = subprocess.run(
        [sys.executable, "-m", "ai4land", "config", "check", str(repo / "config/demo.yaml")],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert '"run_name": "demo"' in ok.stdout
    demo_config_dict["train"]["batch_size"] = -1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(demo_config_dict))
    bad = subprocess.run([sys.executable, "-m", "ai4land", "config", "check", str(path)],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stderr.strip().count("\n") == 0, bad.stderr
    assert bad.stderr.startswith("ai4land: error: ") and "train.batch_size" in bad.stderr
