"""CSV tables of ``metrics.json``: one row per model, per (model, year), per (model, block),
per (model, class)."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

from ai4land.io.atomic import atomic_path

TOTALS = ("oa", "miou", "kappa", "f1", "fom_change", "iou_change", "conservation_mae")
# the whole-period change of a chain (start map -> last year), with the FoM's interval
PERIOD = ("fom", "producers_accuracy", "users_accuracy")
TABLES = ("metrics_by_model.csv", "metrics_by_year.csv", "metrics_by_block.csv",
          "per_class_iou.csv")


def _write(path: Path, header: Sequence[str], rows: list[list]) -> Path:
    with atomic_path(path) as tmp, tmp.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])
    return path


def write_tables(metrics: Mapping, directory: Path) -> list[Path]:
    """The CSV files of ``TABLES`` under ``directory``."""
    models = metrics["models"]
    legend = metrics.get("legend", {})
    by_model = [[name, *(m[k] for k in TOTALS), m["n_pixels"],
                 *(m.get("period", {}).get(k) for k in PERIOD),
                 *(m.get("intervals", {}).get("period_fom", {}).get(k) for k in ("low", "high"))]
                for name, m in models.items()]
    year_keys = [k for k in list(next(iter(models.values()))["by_year"].values())[0]
                 if k != "stability"]
    by_year = [[name, year, *(values[k] for k in year_keys)]
               for name, m in models.items() for year, values in m["by_year"].items()]
    block_keys = ("row", "col", "oa", "miou", "kappa", "f1", "n_pixels")
    by_block = [[name, block, *(values[k] for k in block_keys)]
                for name, m in models.items() for block, values in m["by_block"].items()]
    per_class = [[name, code, legend.get(code, ""), iou, m["per_class_f1"][code]]
                 for name, m in models.items() for code, iou in m["per_class_iou"].items()]
    return [
        _write(directory / TABLES[0], ["model", *TOTALS, "n_pixels",
                                       *(f"period_{k}" for k in PERIOD),
                                       "period_fom_low", "period_fom_high"], by_model),
        _write(directory / TABLES[1], ["model", "year", *year_keys], by_year),
        _write(directory / TABLES[2], ["model", "block", *block_keys], by_block),
        _write(directory / TABLES[3], ["model", "class", "name", "iou", "f1"], per_class),
    ]
