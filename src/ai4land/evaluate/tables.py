"""CSV tables of ``metrics.json``: one row per model, per (model, year), per (model, block),
per (model, class); and the CLI summary. Columns come from the metric registry
(:mod:`ai4land.evaluate.registry`)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from ai4land.evaluate import registry
from ai4land.evaluate.interface import BLOCK, TOTAL, YEAR
from ai4land.io.atomic import atomic_path

TABLES = ("metrics_by_model.csv", "metrics_by_year.csv", "metrics_by_block.csv",
          "per_class_iou.csv")


def _write(path: Path, header: Sequence[str], rows: list[list]) -> Path:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    return path


def _by_model(models: Mapping) -> tuple[list[str], list[list]]:
    metrics = registry.metrics(TOTAL)
    rows = []
    for name, entry in models.items():
        columns = {}
        for metric in metrics:
            columns.update(metric.columns(entry))
        rows.append([name, *columns.values()])
    return ["model", *columns], rows


def write_tables(metrics: Mapping, directory: Path) -> list[Path]:
    """The CSV files of ``TABLES`` under ``directory``."""
    models = metrics["models"]
    legend = metrics.get("legend", {})
    header, by_model = _by_model(models)
    year_keys = [m.name for m in registry.metrics(YEAR) if m.table]
    by_year = [[name, year, *(values.get(k) for k in year_keys)]
               for name, m in models.items() for year, values in m["by_year"].items()]
    block_keys = ["row", "col", *(m.name for m in registry.metrics(BLOCK) if m.table)]
    by_block = [[name, block, *(values.get(k) for k in block_keys)]
                for name, m in models.items() for block, values in m["by_block"].items()]
    per_class_metrics = [m for m in registry.metrics(TOTAL) if m.per_class]
    codes = [str(c) for c in metrics["classes"]]
    per_class = [[name, code, legend.get(code, ""),
                  *(m.get(metric.name, {}).get(code) for metric in per_class_metrics)]
                 for name, m in models.items() for code in codes]
    return [
        _write(directory / TABLES[0], header, by_model),
        _write(directory / TABLES[1], ["model", "year", *year_keys], by_year),
        _write(directory / TABLES[2], ["model", "block", *block_keys], by_block),
        _write(directory / TABLES[3], ["model", "class", "name",
                                       *(m.per_class for m in per_class_metrics)], per_class),
    ]


def summary(metrics: Mapping) -> str:
    """The CLI's table: one row per model, a column per metric with a ``label``."""
    columns = [m for m in registry.metrics(TOTAL) if m.label]
    lines = [f"{'model':>20s}  " + "  ".join(f"{m.label:>6s}" for m in columns)]
    for name, values in metrics["models"].items():
        row = [values.get(m.name) for m in columns]
        lines.append(f"{name:>20s}  " + "  ".join("   n/a" if v is None else f"{v:.4f}"
                                                   for v in row))
    return "\n".join(lines)
