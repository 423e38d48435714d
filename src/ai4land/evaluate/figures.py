"""The evaluation figures, drawn from ``metrics.json`` content and a few sample tiles.

Each function draws one PNG (written atomically) and returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ai4land.encoding import class_colour
from ai4land.evaluate import registry
from ai4land.evaluate.change import CATEGORIES, change_categories
from ai4land.evaluate.interface import YEAR
from ai4land.io.atomic import atomic_path

MODEL_COLOURS = {
    "unet": "#e41a1c", "unet_raw": "#fb9a99", "unet_teacher_forced": "#ff7f00",
    "persistence": "#377eb8", "coarse_majority": "#984ea3", "random_allocation": "#999999",
    "random_change": "#a6cee3", "neighbourhood_density": "#1f78b4",
    "gradient_boosting": "#4daf4a", "smooth_coarse": "#b15928",
}
ERROR_COLOURS = ("#ffffff", "#bdbdbd", "#d7191c")  # not scored, correct, wrong
# change maps (start map -> end): not scored, then the categories of
# ai4land.evaluate.change.CATEGORIES (correct rejection, hit, miss, false alarm, wrong hit)
CHANGE_COLOURS = ("#ffffff", "#e0e0e0", "#1a9641", "#d7191c", "#fdae61", "#7b3294")
CHANGE_LABELS = ("not scored", *(c.replace("_", " ") for c in CATEGORIES))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return path


def _integer_years(ax, years: Sequence[int] = (), *, nbins: int | str = "auto") -> None:
    """Integer year ticks; a single year gets its own tick and a narrow axis around it
    (matplotlib would stretch one point over two centuries)."""
    from matplotlib.ticker import FixedLocator, MaxNLocator

    if len(set(years)) == 1:
        year = next(iter(years))
        ax.set_xlim(year - 1, year + 1)
        ax.xaxis.set_major_locator(FixedLocator([year]))
        return
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=nbins))


def _label(code: int, legend: Mapping[int, str]) -> str:
    return f"{code} {legend.get(code, '')}".strip()


def confusion_matrix_figure(cm: np.ndarray, *, classes: Sequence[int], legend: Mapping[int, str],
                            title: str, path: Path) -> Path:
    """Row-normalised confusion matrix (recall per target class) with pixel counts."""
    plt = _pyplot()
    cm = np.asarray(cm, dtype="float64")
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i, j in np.ndindex(cm.shape):
        ax.text(j, i, f"{share[i, j]:.2f}\n{int(cm[i, j])}", ha="center", va="center",
                fontsize=7, color="white" if share[i, j] > 0.6 else "black")
    labels = [_label(c, legend) for c in classes]
    ax.set_xticks(range(len(classes)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), labels, fontsize=8)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("target class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="share of the target class")
    return _save(fig, path)


def per_class_iou_figure(models: Mapping[str, dict], *, classes: Sequence[int],
                         legend: Mapping[int, str], path: Path) -> Path:
    """Grouped bars: IoU of every class for every model, mIoU in the legend."""
    plt = _pyplot()
    names = list(models)
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for m, name in enumerate(names):
        iou = [models[name]["per_class_iou"].get(str(c)) for c in classes]
        values = [np.nan if v is None else v for v in iou]
        miou = models[name]["miou"]
        ax.bar(np.arange(len(classes)) + (m - (len(names) - 1) / 2) * width, values, width,
               color=MODEL_COLOURS.get(name), label=f"{name} (mIoU {miou:.3f})")
    ax.set_xticks(range(len(classes)), [_label(c, legend) for c in classes], rotation=20,
                  ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("IoU on test blocks and years")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def by_year_figure(models: Mapping[str, dict], *, path: Path) -> Path:
    """The registered metrics with a ``title`` (OA, mIoU, FoM on change) per test year,
    one panel per metric, one line per model."""
    plt = _pyplot()
    keys = [(m.name, m.title) for m in registry.metrics(YEAR) if m.title]
    fig, axes = plt.subplots(1, len(keys), figsize=(14 * len(keys) / 3, 4), squeeze=False)
    axes = axes[0]
    years = sorted({int(y) for values in models.values() for y in values["by_year"]})
    for ax, (key, title) in zip(axes, keys, strict=True):
        for name, values in models.items():
            series = [values["by_year"].get(str(y), {}).get(key) for y in years]
            ax.plot(years, [np.nan if v is None else v for v in series], marker="o", ms=3,
                    color=MODEL_COLOURS.get(name), label=name,
                    linestyle="--" if name in ("unet_raw", "unet_teacher_forced") else "-")
        ax.set_title(title)
        ax.set_xlabel("test year")
        ax.grid(alpha=0.3)
        _integer_years(ax, years)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def tiles_figure(tiles: Sequence[dict], *, legend: Mapping[int, str], path: Path) -> Path:
    """Rows = sample test tiles; columns = maps (class colours) and error or change maps.

    Each tile is ``{"title": str, "target": codes, "scored": bool mask, "start": codes
    or None, "panels": {name: codes}}``; after every predicted panel comes its change map
    against ``start`` (:func:`ai4land.evaluate.change.change_categories`), or
    without a start map its error map (grey correct, red wrong).
    """
    plt = _pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    codes = sorted(legend)
    lut = np.zeros(256, dtype="int64")
    lut[codes] = np.arange(len(codes))
    class_cmap = ListedColormap([np.array(class_colour(c)) / 255 for c in codes])
    error_cmap = ListedColormap(ERROR_COLOURS)
    change_cmap = ListedColormap(CHANGE_COLOURS)
    with_start = tiles[0].get("start") is not None
    columns = ["target"] + [name for name in tiles[0]["panels"] for _ in (0, 1)]
    fig, axes = plt.subplots(len(tiles), len(columns), squeeze=False,
                             figsize=(2.2 * len(columns), 2.3 * len(tiles)))
    for row, tile in zip(axes, tiles, strict=True):
        target = tile["target"]
        scored = tile["scored"]
        panels = [("target", target, None)]
        for name, predicted in tile["panels"].items():
            panels.append((name, predicted, None))
            if with_start:
                panels.append((f"{name} change", 1 + change_categories(
                    tile["start"], target, predicted, valid=scored), "change"))
            else:
                panels.append((f"{name} error",
                               np.where(scored, 1 + (predicted != target), 0), "error"))
        for ax, (title, values, kind) in zip(row, panels, strict=True):
            if kind == "error":
                ax.imshow(values, cmap=error_cmap, vmin=0, vmax=2, interpolation="nearest")
            elif kind == "change":
                ax.imshow(values, cmap=change_cmap, vmin=0, vmax=len(CHANGE_COLOURS) - 1,
                          interpolation="nearest")
            else:
                ax.imshow(lut[values], cmap=class_cmap, vmin=0, vmax=len(codes) - 1,
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)
        row[0].set_ylabel(tile["title"], fontsize=8)
    handles = [Patch(color=np.array(class_colour(c)) / 255,
                     label=_label(c, legend)) for c in codes]
    colours, labels = ((CHANGE_COLOURS, CHANGE_LABELS) if with_start else
                       (ERROR_COLOURS, ("not scored", "correct", "wrong")))
    errors = [Patch(facecolor=colour, edgecolor="black", label=label)
              for colour, label in zip(colours, labels, strict=True)]
    fig.legend(handles=handles, title="classes", loc="lower left", ncol=5, fontsize=7)
    fig.legend(handles=errors, title="change since the start map" if with_start
               else "error panels", loc="lower right", ncol=3, fontsize=7)
    fig.subplots_adjust(bottom=0.18)
    return _save(fig, path)


def class_area_figure(areas: Mapping[str, Mapping], *, path: Path) -> Path:
    """Group area share of the scored land per chain year: one row per chain, one column
    per group; the coarse (LUH-mapped) fractions, the harmonisation target, the observed
    map and each model's map."""
    plt = _pyplot()
    chains = list(areas)
    groups = next(iter(areas.values()))["groups"]
    fig, axes = plt.subplots(len(chains), len(groups), squeeze=False,
                             figsize=(3.2 * len(groups), 2.8 * len(chains)))
    styles = {"coarse": ("black", "--"), "target": ("black", ":"), "observed": ("#000000", "-")}
    for row, chain in zip(axes, chains, strict=True):
        area = areas[chain]
        years = area["years"]
        for ax, group in zip(row, groups, strict=True):
            for source, values in area["series"].items():
                colour, style = styles.get(source, (MODEL_COLOURS.get(source), "-"))
                reference = source in styles  # drawn over the models' lines
                ax.plot(years, values[group], color=colour, linestyle=style, marker="o",
                        ms=2, linewidth=2 if source == "observed" else 1, label=source,
                        zorder=3 if reference else 2)
            ax.set_title(f"{group} ({chain})", fontsize=9)
            ax.grid(alpha=0.3)
            _integer_years(ax, years, nbins=4)
        row[0].set_ylabel("share of scored land")
    axes[0, -1].legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _save(fig, path)


def change_fom_figure(models: Mapping[str, dict], comparison: Mapping, *, path: Path) -> Path:
    """Per model, the figure of merit of the whole-period change (start map -> last chain
    year) and of the yearly change, with their block-bootstrap intervals; the title says
    whether the U-Net differs significantly from the best baseline."""
    plt = _pyplot()
    keys = (("period_fom", "whole-period change"), ("fom_change", "year-to-year change"))
    names = list(models)
    fig, axes = plt.subplots(1, len(keys), figsize=(12, 0.4 * len(names) + 1.5), sharey=True)
    for ax, (key, title) in zip(axes, keys, strict=True):
        for i, name in enumerate(names):
            interval = models[name].get("intervals", {}).get(key)
            if interval is None or interval["estimate"] is None:
                continue
            low = interval["low"] if interval["low"] is not None else interval["estimate"]
            high = interval["high"] if interval["high"] is not None else interval["estimate"]
            ax.errorbar(interval["estimate"], i, xerr=[[interval["estimate"] - low],
                                                       [high - interval["estimate"]]],
                        fmt="o", color=MODEL_COLOURS.get(name), capsize=3)
        entry = comparison.get(key, {}).get("best_baseline")
        if entry is not None:
            verdict = "significant" if entry["significant"] else "not significant"
            title += (f"\nU-Net - {entry['baseline']}: {_number(entry['estimate'])} "
                      f"[{_number(entry['low'])}, {_number(entry['high'])}], {verdict}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("figure of merit (95 % block-bootstrap interval)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(names)), names, fontsize=8)
    axes[0].invert_yaxis()
    fig.tight_layout()
    return _save(fig, path)


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def calibration_figure(calibrations: Mapping[str, dict], *, path: Path) -> Path:
    """Reliability diagram (accuracy vs confidence per bin) and pixels per bin."""
    plt = _pyplot()
    fig, (ax, hist) = plt.subplots(1, 2, figsize=(10, 4))
    ax.plot([0, 1], [0, 1], color="black", linewidth=0.8, label="perfectly calibrated")
    for name, cal in calibrations.items():
        edges = np.asarray(cal["bin_edges"])
        confidence = [np.nan if v is None else v for v in cal["confidence"]]
        accuracy = [np.nan if v is None else v for v in cal["accuracy"]]
        ax.plot(confidence, accuracy, marker="o", color=MODEL_COLOURS.get(name),
                label=f"{name} (ECE {cal['ece']:.3f})")
        hist.stairs(np.asarray(cal["count"]) / max(sum(cal["count"]), 1), edges,
                    color=MODEL_COLOURS.get(name), label=name)
    ax.set_xlabel("confidence (probability of the chosen class)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    hist.set_xlabel("confidence")
    hist.set_ylabel("share of scored pixels")
    hist.legend(fontsize=7)
    return _save(fig, path)
