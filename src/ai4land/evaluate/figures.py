"""The evaluation figures, drawn from ``metrics.json`` content and a few sample tiles.

Each function draws one PNG (written atomically) and returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ai4land.io.atomic import atomic_path
from ai4land.products import DEFAULT_COLOURS

MODEL_COLOURS = {
    "unet": "#e41a1c", "unet_rollout": "#ff7f00", "persistence": "#377eb8",
    "coarse_majority": "#984ea3", "random_allocation": "#999999", "gradient_boosting": "#4daf4a",
}
ERROR_COLOURS = ("#ffffff", "#bdbdbd", "#d7191c")  # not scored, correct, wrong


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


def _integer_years(ax) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


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
    """OA, mIoU and FoM on change per test year, one line per model."""
    plt = _pyplot()
    keys = (("oa", "overall accuracy"), ("miou", "mIoU"), ("fom_change", "figure of merit (change)"))
    fig, axes = plt.subplots(1, len(keys), figsize=(14, 4))
    for ax, (key, title) in zip(axes, keys, strict=True):
        for name, values in models.items():
            years = sorted(int(y) for y in values["by_year"])
            series = [values["by_year"][str(y)][key] for y in years]
            ax.plot(years, [np.nan if v is None else v for v in series], marker="o", ms=3,
                    color=MODEL_COLOURS.get(name), label=name,
                    linestyle="--" if name == "unet_rollout" else "-")
        ax.set_title(title)
        ax.set_xlabel("test year")
        ax.grid(alpha=0.3)
        _integer_years(ax)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def tiles_figure(tiles: Sequence[dict], *, legend: Mapping[int, str], path: Path) -> Path:
    """Rows = sample test tiles; columns = maps (class colours) and error maps.

    Each tile is ``{"title": str, "target": codes, "scored": bool mask, "panels": {name:
    codes}}``; an error panel (grey correct, red wrong) follows every predicted panel.
    """
    plt = _pyplot()
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    codes = sorted(legend)
    lut = np.zeros(256, dtype="int64")
    lut[codes] = np.arange(len(codes))
    class_cmap = ListedColormap([np.array(DEFAULT_COLOURS.get(c, (c, c, c))) / 255 for c in codes])
    error_cmap = ListedColormap(ERROR_COLOURS)
    columns = ["target"] + [name for name in tiles[0]["panels"] for _ in (0, 1)]
    fig, axes = plt.subplots(len(tiles), len(columns), squeeze=False,
                             figsize=(2.2 * len(columns), 2.3 * len(tiles)))
    for row, tile in zip(axes, tiles, strict=True):
        target = tile["target"]
        scored = tile["scored"]
        panels = [("target", target, False)]
        for name, predicted in tile["panels"].items():
            panels.append((name, predicted, False))
            panels.append((f"{name} error", np.where(scored, 1 + (predicted != target), 0), True))
        for ax, (title, values, is_error) in zip(row, panels, strict=True):
            if is_error:
                ax.imshow(values, cmap=error_cmap, vmin=0, vmax=2, interpolation="nearest")
            else:
                ax.imshow(lut[values], cmap=class_cmap, vmin=0, vmax=len(codes) - 1,
                          interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)
        row[0].set_ylabel(tile["title"], fontsize=8)
    handles = [Patch(color=np.array(DEFAULT_COLOURS.get(c, (c, c, c))) / 255,
                     label=_label(c, legend)) for c in codes]
    errors = [Patch(facecolor=colour, edgecolor="black", label=label)
              for colour, label in zip(ERROR_COLOURS, ("not scored", "correct", "wrong"),
                                       strict=True)]
    fig.legend(handles=handles, title="classes", loc="lower left", ncol=5, fontsize=7)
    fig.legend(handles=errors, title="error panels", loc="lower right", ncol=3, fontsize=7)
    fig.subplots_adjust(bottom=0.18)
    return _save(fig, path)


def class_area_figure(area: Mapping, *, path: Path) -> Path:
    """Group area share over the region per year: coarse scenario vs maps."""
    plt = _pyplot()
    groups = area["groups"]
    years = area["years"]
    cols = min(3, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False, figsize=(4.2 * cols, 3 * rows))
    styles = {"coarse": ("black", "--"), "observed": ("#377eb8", "-"),
              "unet": (MODEL_COLOURS["unet"], "-"), "unet_rollout": (MODEL_COLOURS["unet_rollout"], ":")}
    for g, group in enumerate(groups):
        ax = axes.flat[g]
        for source, (colour, style) in styles.items():
            if source in area["series"]:
                ax.plot(years, area["series"][source][group], color=colour, linestyle=style,
                        marker="o", ms=2, label=source)
        ax.set_title(group, fontsize=9)
        ax.grid(alpha=0.3)
        _integer_years(ax)
    for ax in axes.flat[len(groups):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("share of land pixels")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, path)


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
