"""Every leaf entry of a config, each with one valid edit: generated from the pydantic
schema (ai4land.config.Config), not listed by hand.

``leaf_edits(data)`` walks the validated config: nested sections, mapping entries (a
legend code, a coarse group, a source) and list items of sections (a static layer) down
to the values, and for each one finds a new value the schema accepts (bools flip,
numbers move, literals take another choice, ranges shift, None gets a value of its
type). The tests of config slices edit each one and check which stages rerun.
"""

from __future__ import annotations

import copy
import types
import typing
from collections.abc import Iterator

from pydantic import BaseModel

from ai4land.config import Config, parse_config
from ai4land.errors import ConfigError

# Values for entries whose None, empty or constrained value the generic edits below cannot
# replace (a new entry of one of these types needs a line here: the test names it). A
# dict of dotted entries edits them together (the schema ties them).
SPECIAL: dict[str, list] = {
    "datasets.coarse.water_variable": [{"datasets.coarse.water_variable": "wtr",
                                        "datasets.coarse.groups.water.variables": ["wtr"]}],
    "predict.ensemble.kind": [{"predict.ensemble.kind": "tta",
                               "predict.ensemble.members": 2}],
    "predict.ensemble.write_layer": [{"predict.ensemble.write_layer": True,
                                      "predict.ensemble.kind": "tta",
                                      "predict.ensemble.members": 2}],
    "region.bbox": [[4.0, 42.0, 5.0, 43.0]],
    "years.observed": [[2001, 2002]],
    "classes.ocean": [77],
    "classes.nodata": [0],
    "train.drop_inputs": [["coarse"]],
    "train.input_dropout": [{"static": 0.25}, {"coarse": 0.25}],
    "datasets.coarse.static": ["resources/raw/luh2/other.nc"],
    "datasets.fine.archive": ["resources/raw/hildaplus/other.zip"],
    "sources": [{"extra": {"url": "https://example.org/x.nc", "path": "resources/raw/x.nc"}}],
}


def _model_of(annotation) -> type[BaseModel] | None:
    """The pydantic model inside ``annotation`` (X, X | None), if any."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    for candidate in (annotation, *(typing.get_args(annotation) if union else ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _literals(annotation) -> list:
    out = []
    for arg in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(arg) is typing.Literal:
            out += list(typing.get_args(arg))
    return out


def _candidates(dotted: str, value, annotation) -> list:
    if dotted in SPECIAL:
        return SPECIAL[dotted]
    literals = _literals(annotation)
    if literals:
        return [v for v in literals if v != value]
    if value is None:
        base = {typing.get_args(a)[0] if typing.get_origin(a) is typing.Annotated else a
                for a in typing.get_args(annotation)}
        return [v for t, v in ((str, "value"), (int, 10), (float, 1.0)) if t in base]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [value + 1, value - 1, value * 2, value + 10]
    if isinstance(value, float):
        return [value * 1.5, value / 2, value + 0.01, value - 0.01]
    if isinstance(value, str):
        return [value + "_x", value.replace("{year}", "{year}_x")]
    ranged = any(typing.get_origin(a) is tuple for a in (annotation, *typing.get_args(annotation)))
    if ranged and len(value) == 2:
        a, b = value
        return [[a, b - 1], [a + 1, b], [a - 1, b], [a, b + 1]]
    if ranged and len(value) == 4:
        w, s, e, n = value
        return [[w, s, e - 0.5, n], [w + 0.5, s, e, n]]
    if isinstance(value, dict) and value:  # shares: the same values, turned among the keys
        keys, values = list(value), list(value.values())
        return [dict(zip(keys, values[1:] + values[:1], strict=True)), {**value, "other": 0.0}]
    if isinstance(value, list) and value:
        return [value[:-1], value[::-1], [*value, value[0]]]
    return []


def _set(data: dict, parts: list, value) -> dict:
    out = copy.deepcopy(data)
    node = out
    for part in parts[:-1]:
        node = node[part]
    node[parts[-1]] = value
    return out


def _walk(value, parts: list, annotation) -> Iterator[tuple]:
    """(path parts, value, annotation) of every leaf under ``value``."""
    model = _model_of(annotation) if parts else Config
    if model is not None and isinstance(value, dict):
        for name, sub in value.items():
            yield from _walk(sub, [*parts, name], model.model_fields[name].annotation)
        return
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    floats = origin is dict and typing.get_origin(args[1]) is typing.Annotated
    if origin is dict and value and not floats:  # a dict of shares is one entry
        for key, sub in value.items():
            yield from _walk(sub, [*parts, key], args[1])
        return
    if origin is list and value and _model_of(args[0]) is not None:
        for index, sub in enumerate(value):
            yield from _walk(sub, [*parts, index], args[0])
        return
    yield parts, value, annotation


def _edit(base: dict, parts: list, candidate) -> tuple[dict, list[str]]:
    """``base`` with the entry at ``parts`` set to ``candidate`` (or the dotted entries of a
    co-edit set), and the dotted entries edited."""
    if isinstance(candidate, dict) and ".".join(map(str, parts)) in candidate:
        edited = base
        for dotted, value in candidate.items():
            edited = _set(edited, dotted.split("."), value)
        return edited, list(candidate)
    return _set(base, parts, candidate), [".".join(map(str, parts))]


def leaf_edits(data: dict) -> Iterator[tuple[str, dict, list[str]]]:
    """(dotted entry, edited config data, every dotted entry edited) for every leaf entry
    of the config ``data``.

    Raises AssertionError naming an entry none of whose candidate values validates.
    """
    base = parse_config(data).model_dump(mode="json")
    stuck = []
    for parts, value, annotation in _walk(base, [], None):
        dotted = ".".join(map(str, parts))
        for candidate in _candidates(dotted, value, annotation):
            edited, entries = _edit(base, parts, candidate)
            try:
                changed = parse_config(edited).model_dump(mode="json")
            except ConfigError:
                continue
            if changed != base:
                yield dotted, edited, entries
                break
        else:
            stuck.append(f"{dotted} = {value!r}")
    if stuck:
        raise AssertionError(f"no valid edit of the config entries {stuck}: add values to "
                             "SPECIAL in tests/config_edits.py")

