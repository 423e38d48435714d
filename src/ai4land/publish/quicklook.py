"""Pictures of the product, written into the publish tree by ``publish``.

- ``quicklooks/<scenario>/ai4land_<scenario>_<year>.png``: the class map with the class
  colour table, a legend and a title (the STAC items' ``overview`` asset);
- ``quicklooks/<scenario>/ai4land_<scenario>_change.png``: change from the chain's
  anchor year (the observed map it starts from) to its farthest year: where, and the
  gains and losses of each class;
- ``quicklooks/<scenario>/ai4land_<scenario>.gif``: the chain, one frame a year;
- ``quicklooks/class_area_trajectories.png``: every scenario's class-group fractions
  against the LUH-mapped fractions and the harmonisation target (the reports'
  ``group_fractions``);
- the static web viewer's layers (:mod:`ai4land.publish.viewer`): per (scenario, year)
  palette PNGs of the class map (also the STAC ``thumbnail``), probability and entropy,
  at most :data:`LAYER_MAX_PX` pixels on the long side.

Maps are read from the COGs' overviews (a decimated read picks the overview level), so
the pictures cost little even for a global grid; the change counts and the viewer's
cell fractions read the maps whole, in bands of rows. Everything is a pure function
of the products (no time stamps; matplotlib's Software tag dropped), so publishing twice
writes the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw
from rasterio.enums import Resampling
from rasterio.windows import Window as RioWindow

from ai4land.encoding import NODATA, class_colour, colour_table

LAYER_MAX_PX = 1024  # long side of the viewer's class layers, thumbnails and GIF frames
RAMP_MAX_PX = 512  # long side of the viewer's probability and entropy layers
RAMP_STEPS = 20  # the viewer shows probability and entropy in steps of 1/20
FIGURE_DPI = 100
BAND_ROWS = 512  # rows read at a time for the whole-map counts
PNG_META = {"Software": None}  # no version string: the same bytes on another matplotlib


def decimation(width: int, height: int, max_px: int = LAYER_MAX_PX) -> int:
    """The whole-number step that brings the long side to at most ``max_px``."""
    return max(1, math.ceil(max(width, height) / max_px))


def read_decimated(path: Path, max_px: int = LAYER_MAX_PX) -> np.ndarray:
    """Band 1 of ``path`` at most ``max_px`` on the long side, nearest neighbour from
    the overview level GDAL picks for that size (mode overviews for classes, average
    overviews for probability and entropy)."""
    with rasterio.open(path) as src:
        step = decimation(src.width, src.height, max_px)
        shape = (math.ceil(src.height / step), math.ceil(src.width / step))
        return src.read(1, out_shape=shape, resampling=Resampling.nearest)


# --- palette images -----------------------------------------------------------------


def class_palette(legend: Mapping[int, str]) -> tuple[list[int], bytes]:
    """A 256-entry palette indexed by class code and its alpha per entry (no data and
    codes outside the legend transparent)."""
    table = colour_table(legend)
    palette, alpha = [0] * 768, bytearray(256)
    for code, (r, g, b, a) in table.items():
        palette[3 * code: 3 * code + 3] = [r, g, b]
        alpha[code] = a
    return palette, bytes(alpha)


def ramp_palette(steps: int = RAMP_STEPS) -> tuple[list[int], bytes]:
    """Viridis at 0, 1/steps, ..., 1 (entries 0..steps), entry 255 (no data) transparent."""
    from matplotlib import colormaps

    colours = colormaps["viridis"](np.arange(steps + 1) / steps)[:, :3]
    palette = [0] * 768
    palette[: 3 * (steps + 1)] = np.rint(colours * 255).astype(int).ravel().tolist()
    return palette, bytes([255] * 255 + [0])


def ramp_steps(values: np.ndarray, steps: int = RAMP_STEPS) -> np.ndarray:
    """uint8 quantised values (value / 254, 255 no data) → palette entries 0..steps, 255:
    the viewer layers show probability and entropy in steps of 1/steps (PNGs a fraction
    of the size of 255 levels, which on noisy layers hardly compress)."""
    values = np.asarray(values)
    # round half up in integers: (v * steps + 127) // 254
    entries = (values.astype("int32") * steps + 127) // 254
    return np.where(values == 255, 255, entries).astype("uint8")


def palette_png(values: np.ndarray, palette: tuple[list[int], bytes]) -> bytes:
    """A palette PNG of the uint8 ``values`` (one byte a pixel, compressed at level 9)."""
    image = Image.fromarray(np.ascontiguousarray(values, dtype="uint8"), mode="P")
    image.putpalette(palette[0])
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=9, transparency=palette[1])
    return out.getvalue()


def class_rgba(codes: np.ndarray, legend: Mapping[int, str]) -> np.ndarray:
    """(h, w, 4) float RGBA of class codes (no data transparent)."""
    lut = np.zeros((256, 4))
    for code, rgba in colour_table(legend).items():
        lut[code] = np.asarray(rgba) / 255.0
    return lut[codes]


# --- figures ------------------------------------------------------------------------


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=FIGURE_DPI, metadata=PNG_META)
    plt.close(fig)


def _legend_handles(legend: Mapping[int, str], codes: Iterable[int] | None = None):
    from matplotlib.patches import Patch

    shown = sorted(legend if codes is None else set(codes) & set(legend))
    return [Patch(facecolor=np.asarray(class_colour(c)) / 255.0,
                  edgecolor="0.4", label=f"{c} {legend[c]}") for c in shown if c != NODATA]


def map_figure(codes: np.ndarray, bounds, legend: Mapping[int, str], title: str,
               path: Path) -> None:
    """The class map with its legend and title (a quicklook)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    west, south, east, north = bounds
    fig, ax = plt.subplots(figsize=(8.0, 5.6), layout="constrained")
    ax.imshow(class_rgba(codes, legend), extent=(west, east, south, north),
              interpolation="nearest")
    ax.set_title(title)
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    fig.legend(handles=_legend_handles(legend), loc="outside right center", fontsize=8,
               frameon=False)
    _save(fig, path)


def change_figure(anchor: np.ndarray, last: np.ndarray, transitions: np.ndarray,
                  classes: list[int], bounds, legend: Mapping[int, str], title: str,
                  path: Path) -> None:
    """Where the map differs from the anchor map (pixels coloured by their new class,
    the unchanged ones white) and each class's gains and losses, from the whole-map
    ``transitions`` counts ((K, K): anchor class → last class over valid pixels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    west, south, east, north = bounds
    rgba = class_rgba(last, legend)
    same = (anchor == last) & (last != NODATA)
    rgba[same] = (1.0, 1.0, 1.0, 1.0)
    total = max(int(transitions.sum()), 1)
    stay = np.diag(transitions)
    gains = (transitions.sum(axis=0) - stay) / total * 100
    losses = (transitions.sum(axis=1) - stay) / total * 100
    fig, (ax, bars) = plt.subplots(1, 2, figsize=(11.0, 4.8), layout="constrained",
                                   width_ratios=(1.2, 1.0))
    ax.imshow(rgba, extent=(west, east, south, north), interpolation="nearest")
    ax.set_title("changed pixels in their new class (white: unchanged)", fontsize=9)
    y = np.arange(len(classes))
    colours = [np.asarray(class_colour(c)) / 255.0 for c in classes]
    bars.barh(y, gains, color=colours, edgecolor="0.3", label="gain")
    bars.barh(y, -losses, color=colours, edgecolor="0.3", hatch="//", label="loss")
    bars.axvline(0, color="0.2", lw=0.8)
    bars.set_yticks(y, [legend.get(c, str(c)) for c in classes], fontsize=8)
    bars.set_xlabel("% of valid pixels (loss < 0 < gain)")
    bars.set_title(f"gains and losses; {(total - stay.sum()) / total * 100:.2f} % of the "
                   "pixels changed class", fontsize=9)
    fig.suptitle(title)
    _save(fig, path)


def trajectory_figure(series: Mapping[str, Mapping[int, dict]], path: Path) -> None:
    """One panel per class group: every scenario's map fraction (solid) against the
    harmonisation target (dashed) and the LUH-mapped fractions (dotted) by year.
    ``series[scenario][year]`` is a report's ``group_fractions``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = sorted({g for years in series.values() for r in years.values()
                     for g in r["map"]})
    cols = min(3, max(1, len(groups)))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 2.8 * rows + 0.6),
                             layout="constrained", squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, group in zip(axes.ravel(), groups, strict=False):
        for i, (scenario, years) in enumerate(sorted(series.items())):
            xs = sorted(years)
            for key, style in (("map", "-"), ("delta_target", "--"), ("luh", ":")):
                ys = [years[x][key].get(group, np.nan) * 100 for x in xs]
                ax.plot(xs, ys, style, color=colours(i % 10), marker="." if len(xs) < 12
                        else None, label=f"{scenario} {key}")
        ax.set_title(group, fontsize=9)
        ax.set_ylabel("% of area")
    for ax in axes.ravel()[len(groups):]:
        ax.set_axis_off()
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=7,
               frameon=False)
    fig.suptitle("Class-group area by year: map (solid), harmonisation target (dashed), "
                 "LUH-mapped (dotted)", fontsize=10)
    _save(fig, path)


def animation(frames: list[tuple[int, np.ndarray]], legend: Mapping[int, str],
              label: str, path: Path, duration_ms: int = 600) -> None:
    """A looping GIF of the class maps ``frames`` ((year, codes), in order), the
    scenario and year written above each frame (no data white)."""
    palette, _ = class_palette(legend)
    palette[3 * NODATA: 3 * NODATA + 3] = [255, 255, 255]
    text = next(i for i in range(1, 256) if i not in legend and i != NODATA)
    palette[3 * text: 3 * text + 3] = [0, 0, 0]
    images = []
    for year, codes in frames:
        h, w = codes.shape
        canvas = Image.new("P", (max(w, 160), h + 18), color=NODATA)
        canvas.putpalette(palette)
        canvas.paste(Image.fromarray(np.ascontiguousarray(codes, dtype="uint8"), mode="P"),
                     (0, 18))
        ImageDraw.Draw(canvas).text((4, 3), f"{label}: {year}", fill=text)
        images.append(canvas)
    path.parent.mkdir(parents=True, exist_ok=True)
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:],
                   duration=duration_ms, loop=0, optimize=False)


# --- whole-map counts ---------------------------------------------------------------


def row_bands(height: int, rows: int = BAND_ROWS) -> Iterable[tuple[int, int]]:
    for start in range(0, height, rows):
        yield start, min(rows, height - start)


def read_band(path: Path, start: int, rows: int) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1, window=RioWindow(0, start, src.width, rows))
