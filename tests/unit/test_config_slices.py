"""Config slices (ai4land.config.STAGES): each stage reads, and reruns on, its own slice.

The per-entry test is generated from the schema (tests/config_edits.py walks every leaf
entry of a small config): each entry is edited and exactly the rules whose slice holds it
change their hash, the value Snakemake keeps as the rule's ``config_hash`` param.
tests/workflow/test_reruns.py checks the same on a finished run with Snakemake itself.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
from config_edits import leaf_edits

from ai4land.config import (
    STAGES,
    ConfigSlice,
    UndeclaredConfigError,
    parse_config,
    read_config_files,
    slice_hash,
    stage_config,
    unsliced,
)

REPO = Path(__file__).resolve().parents[2]
SOURCE = {"url": "https://example.org/states.nc", "path": "resources/raw/luh2/states.nc"}


def small_config_data() -> dict:
    """The tiny end-to-end run's config, plus two download sources (one rule each)."""
    data = read_config_files([REPO / "config/demo.yaml", REPO / "tests/integration/tiny.yaml"])
    data["sources"] = {"luh2": dict(SOURCE), "hilda": dict(SOURCE, path="resources/raw/h.zip")}
    return data


def rules_of(config) -> dict[str, tuple[str, str | None]]:
    """{rule: (stage, item)}: one rule per stage, one download rule per source."""
    rules = {stage: (stage, None) for stage in STAGES if STAGES[stage].per_item is None}
    for stage, spec in STAGES.items():
        if spec.per_item is not None:
            for item in getattr(config, spec.per_item):
                rules[f"{stage}_{item}"] = (stage, item)
    return rules


def rule_reads(stage: str, item: str | None, dotted: str) -> bool:
    """Whether the rule of (stage, item) reruns on an edit of ``dotted``, by the
    declaration alone (StageSlice.hashes; a per-item rule only on its own item)."""
    spec = STAGES[stage]
    if spec.per_item is not None and item is not None and dotted.startswith(spec.per_item + "."):
        return dotted.startswith(f"{spec.per_item}.{item}.") or dotted == f"{spec.per_item}.{item}"
    return spec.hashes(dotted)


def test_every_config_entry_reruns_exactly_the_rules_that_read_it():
    data = small_config_data()
    base = parse_config(data)
    rules = rules_of(base)
    before = {rule: slice_hash(base, stage, item=item) for rule, (stage, item) in rules.items()}
    wrong, seen = [], 0
    for dotted, edited, entries in leaf_edits(data):
        config = parse_config(edited)
        changed = {rule for rule, (stage, item) in rules.items()
                   if slice_hash(config, stage, item=item) != before[rule]}
        expected = {rule for rule, (stage, item) in rules.items()
                    if any(rule_reads(stage, item, entry) for entry in entries)}
        seen += 1
        if changed != expected:
            wrong.append(f"{dotted}: reruns {sorted(changed)}, its readers are {sorted(expected)}")
    assert not wrong, "\n".join(wrong)
    assert seen > 100  # every leaf of the schema, not a sample


def test_every_declared_entry_exists_in_the_schema():
    tree = parse_config(small_config_data()).model_dump(mode="json")
    for stage, spec in STAGES.items():
        for dotted in (*spec.reads, *spec.unhashed):
            if dotted == "*":
                continue
            node = tree
            for part in dotted.split("."):
                assert isinstance(node, dict) and part in node, f"{stage}: no entry {dotted}"
                node = node[part]


def test_workflow_rules_rerun_on_their_slice_hash():
    # every rule's config_hash param is the slice hash of the stage of the same name
    rules = {}
    for path in sorted((REPO / "workflow/rules").glob("*.smk")):
        rule = None
        for line in path.read_text().splitlines():
            if found := re.match(r"\s*rule\s*(\w*):", line):
                rule = found.group(1) or None
                rules[rule] = None
            elif rule is None and (found := re.match(r'\s*f?"(\w+?)_\{', line)):
                rule = found.group(1)  # a rule per item: name: f"download_{_key}"
                rules[rule] = rules.pop(None, None)
            elif found := re.match(r"\s*config_hash=(.*)", line):
                rules[rule] = found.group(1)
    rules.pop("all", None)
    assert rules, "no rules found"
    for rule, param in rules.items():
        stage = rule
        assert stage in STAGES, f"rule {rule} has no config slice in ai4land.config.STAGES"
        expected = (f'slice_hash(CFG, "{stage}", item=_key),' if STAGES[stage].per_item
                    else f'slice_hash(CFG, "{stage}"),')
        assert param == expected, f"rule {rule}: config_hash={param}"


def test_a_slice_reads_only_what_it_declares():
    config = parse_config(small_config_data())
    view = stage_config(config, "predict")
    assert view.predict.tile_size == config.predict.tile_size
    assert view.datasets.coarse.groups == config.datasets.coarse.groups
    assert view.product_years == config.product_years  # derived, from declared entries
    assert view.scenario_years("ssp126") == config.scenario_years("ssp126")
    with pytest.raises(UndeclaredConfigError, match="'predict' reads the config entry 'train'"):
        view.train  # noqa: B018
    with pytest.raises(UndeclaredConfigError, match="datasets.coarse.historical"):
        view.datasets.coarse.historical  # noqa: B018
    split = stage_config(config, "split")
    with pytest.raises(UndeclaredConfigError, match="product_years"):
        split.product_years  # noqa: B018
    with pytest.raises(UndeclaredConfigError, match="handed stage 'split'"):
        stage_config(split, "train")
    with pytest.raises(TypeError):
        view.seed = 1


def test_a_slice_pickles_dumps_and_hashes_as_its_config():
    config = parse_config(small_config_data())
    view = stage_config(config, "prepare_static")
    again = pickle.loads(pickle.dumps(view.datasets.coarse))
    assert isinstance(again, ConfigSlice) and again.groups == config.datasets.coarse.groups
    dump = view.model_dump(mode="json")
    assert set(dump) == {"datasets", "classes", "paths"}
    assert set(dump["classes"]) == {"ocean", "nodata"}
    assert unsliced(view) is config
    assert slice_hash(view, "prepare_static") == slice_hash(config, "prepare_static")
    # publish records the whole config: its slice is the config, its hash the config's
    assert stage_config(config, "publish") is config
    assert slice_hash(config, "publish") == config.hash()


def test_a_download_rule_hashes_only_its_source():
    data = small_config_data()
    base = parse_config(data)
    data["sources"]["luh2"]["url"] = "https://example.org/other.nc"
    edited = parse_config(data)
    assert slice_hash(base, "download", item="luh2") != slice_hash(edited, "download", item="luh2")
    assert (slice_hash(base, "download", item="hilda")
            == slice_hash(edited, "download", item="hilda"))
