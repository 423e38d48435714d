"""The publish tree's pictures and its static web viewer.

``write_pictures`` writes, for the products of a publish run, the quicklooks, the
animations and the class-area trajectories (:mod:`ai4land.publish.quicklook`) and the
viewer: ``viewer/index.html`` with its script and style, Leaflet (vendored from the npm
registry, ``viewer/vendor/leaflet``, BSD-2-Clause; no CDN: it works offline from any
static file server), ``viewer/data/index.json`` (bounds, scenarios, years, classes,
cells), per (scenario, year) palette PNGs of the class map, probability and entropy
placed as image overlays on the grid's bounds, and per scenario the class fractions of
every viewer cell and year (``viewer/data/<scenario>/cells.json``). The probability and
entropy layers are at most :data:`~ai4land.publish.quicklook.RAMP_MAX_PX` pixels on the
long side, in steps of 1/20 (they are near noise; 255 levels hardly compress).

A viewer cell is a coarse cell of the cube, or ``m`` x ``m`` of them where the region
has more than :data:`CELL_MAX` coarse cells on its long side. Its fractions are over
the cell's pixels that hold a class (ocean and water included, no data left out), in
basis points (1/10 000, rounded half up from pixel counts), with the pixel count, so
the panel's percentages with two decimals are the product's exactly. A map of more
than :data:`CELL_EXACT_PX` pixels (a continent, the globe) is counted at 1/``step`` of
its resolution instead (``cells.step`` in the index, a divisor of the cell size; read
nearest from the COG's mode overviews), which keeps publish's time per map bounded; the
panel then says the numbers are estimated.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ai4land.encoding import NODATA, class_hex
from ai4land.errors import OutputError
from ai4land.grid import Grid, Window
from ai4land.io.cog import layer_path
from ai4land.publish import quicklook as ql

VIEWER = "viewer"
QUICKLOOKS = "quicklooks"
CELL_MAX = 64  # viewer cells on the long side at most
CELL_EXACT_PX = 64_000_000  # maps up to this size are counted at full resolution
LAYERS = ("lulc", "probability", "entropy")
LEAFLET_VERSION = "1.9.4"
ASSETS = Path(__file__).parent / "viewer_assets"


@dataclass
class CellGrid:
    """The viewer's cells: ``size`` fine pixels a side, ``rows`` x ``cols`` of them."""

    size: int
    rows: int
    cols: int
    step: int = 1  # counted at 1/step of the resolution (1: every pixel)

    @classmethod
    def of(cls, grid: Grid, factor: int, max_cells: int = CELL_MAX,
           exact_px: int = CELL_EXACT_PX) -> CellGrid:
        coarse = max(math.ceil(grid.height / factor), math.ceil(grid.width / factor))
        size = factor * max(1, math.ceil(coarse / max_cells))
        need = math.ceil(math.sqrt(grid.width * grid.height / exact_px))
        step = next(d for d in range(max(1, need), size + 1) if size % d == 0)
        return cls(size, math.ceil(grid.height / size), math.ceil(grid.width / size), step)


@dataclass
class _Scenario:
    """What one scenario's pass over its maps collects."""

    name: str
    years: list[int] = field(default_factory=list)
    reports: dict[int, dict] = field(default_factory=dict)
    frames: list[tuple[int, np.ndarray]] = field(default_factory=list)
    bp: list[list[int]] = field(default_factory=list)
    valid: list[list[int]] = field(default_factory=list)


def cell_counts(path: Path, cells: CellGrid, classes: list[int]) -> np.ndarray:
    """(cells, K) pixel counts of each class in each viewer cell of the class COG
    ``path``, read in bands of cell rows (at 1/``cells.step`` of the resolution: nearest
    from the mode overviews)."""
    k = len(classes)
    lut = np.full(256, -1, dtype="int64")
    lut[np.asarray(classes)] = np.arange(k)
    counts = np.zeros(cells.rows * cells.cols * k, dtype="int64")
    size = cells.size // cells.step  # a cell's pixels a side in the read
    rows = size * max(1, ql.BAND_ROWS // size)
    with ql.rasterio.open(path) as src:
        width, height = math.ceil(src.width / cells.step), math.ceil(src.height / cells.step)
        col_cell = np.arange(width) // size
        for start, n in ql.row_bands(height, rows):
            window = ql.RioWindow(0, start * cells.step, src.width,
                                  min(n * cells.step, src.height - start * cells.step))
            codes = src.read(1, window=window, out_shape=(n, width),
                             resampling=ql.Resampling.nearest)
            row_cell = (np.arange(start, start + n) // size)[:, None]
            index = lut[codes]
            ok = index >= 0
            flat = ((row_cell * cells.cols + col_cell[None, :]) * k + index)[ok]
            counts += np.bincount(flat, minlength=counts.size)
    return counts.reshape(cells.rows * cells.cols, k)


def basis_points(counts: np.ndarray) -> tuple[list[int], list[int]]:
    """Fractions of each cell's pixels in 1/10 000, rounded half up; the pixel counts."""
    n = counts.sum(axis=1, keepdims=True)
    bp = (counts * 20000 + n) // np.maximum(2 * n, 1)
    return bp.ravel().tolist(), n.ravel().tolist()


def _transitions(config, cube, anchor_year: int, last: Path, classes: list[int],
                 step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(K, K) counts anchor class → ``last`` class over pixels valid in both, and both
    maps decimated by ``step`` (plain subsampling, so the pictures agree pixel for pixel)."""
    k = len(classes)
    lut = np.full(256, -1, dtype="int16")  # k * k fits: half the memory of int64 bands
    lut[np.asarray(classes)] = np.arange(k)
    counts = np.zeros(k * k, dtype="int64")
    small_anchor, small_last = [], []
    with ql.rasterio.open(last) as src:
        width, height = src.width, src.height
        for start, n in ql.row_bands(height):
            now = src.read(1, window=ql.RioWindow(0, start, width, n))
            then = cube.target_window(anchor_year, Window(start, 0, n, width))
            a, b = lut[then], lut[now]
            ok = (a >= 0) & (b >= 0)
            counts += np.bincount((a * np.int16(k) + b)[ok], minlength=k * k)
            offset = (-start) % step
            small_anchor.append(then[offset::step, ::step])
            small_last.append(now[offset::step, ::step])
    return counts.reshape(k, k), np.concatenate(small_anchor), np.concatenate(small_last)


def _cube(config, grid: Grid):
    from ai4land.io.cube import Cube

    cube = Cube.from_config(config)
    if (cube.fine_grid.height, cube.fine_grid.width) != (grid.height, grid.width):
        raise OutputError(f"{cube.paths.grids}: the cube's fine grid "
                          f"({cube.fine_grid.height} x {cube.fine_grid.width}) is not the "
                          f"maps' ({grid.height} x {grid.width}); publish the cube's maps")
    return cube


def _scenario_pass(config, cube, cells: CellGrid, scenario: str,
                   products: list[tuple[int, Path]], tree: Path) -> _Scenario:
    """Per year: the viewer layers, the quicklook, the cells' fractions; then the
    scenario's animation and change figure."""
    legend, classes = config.classes.legend, _classes(config)
    out = _Scenario(scenario)
    layers = tree / VIEWER / "data" / scenario
    layers.mkdir(parents=True, exist_ok=True)
    class_palette, ramp = ql.class_palette(legend), ql.ramp_palette()
    for year, cog in products:
        report = json.loads(cog.with_suffix(".json").read_text())
        codes = ql.read_decimated(cog)
        (layers / f"{year}_lulc.png").write_bytes(ql.palette_png(codes, class_palette))
        for name in LAYERS[1:]:
            values = ql.read_decimated(layer_path(cog, name), ql.RAMP_MAX_PX)
            (layers / f"{year}_{name}.png").write_bytes(
                ql.palette_png(ql.ramp_steps(values), ramp))
        ql.map_figure(codes, cube.fine_grid.bounds, legend, f"{scenario} {year}",
                      quicklook_path(tree, scenario, year))
        bp, valid = basis_points(cell_counts(cog, cells, classes))
        out.years.append(year)
        out.reports[year] = report
        out.frames.append((year, codes))
        out.bp.append(bp)
        out.valid.append(valid)
    _chain_pictures(config, cube, out, products, tree)
    return out


def _chain_pictures(config, cube, out: _Scenario, products: list[tuple[int, Path]],
                    tree: Path) -> None:
    """The scenario's animation and its change since the anchor year."""
    legend, classes, scenario = config.classes.legend, _classes(config), out.name
    folder = tree / QUICKLOOKS / scenario
    ql.animation(out.frames, legend, scenario, folder / f"ai4land_{scenario}.gif")
    # the chain's farthest year from its anchor (observed product years are no chain)
    chain = [p for p in products if p[0] in config.chain_years(scenario)] or products
    anchor = out.reports[chain[0][0]].get("anchor_year")
    if anchor is None or int(anchor) not in cube.target_years:
        raise OutputError(f"{chain[0][1].with_suffix('.json')}: anchor_year "
                          f"{anchor} is not a year of the cube's observed maps")
    year, cog = max(chain, key=lambda p: abs(p[0] - int(anchor)))
    grid = cube.fine_grid
    step = ql.decimation(grid.width, grid.height)
    counts, small_anchor, small_last = _transitions(config, cube, int(anchor), cog,
                                                    classes, step)
    ql.change_figure(small_anchor, small_last, counts, classes, grid.bounds, legend,
                     f"{scenario}: change from {anchor} (observed) to {year}",
                     folder / f"ai4land_{scenario}_change.png")


def _classes(config) -> list[int]:
    """The classes the viewer counts: the legend but no data."""
    return [c for c in sorted(config.classes.legend) if c != NODATA]


def quicklook_path(tree: Path, scenario: str, year: int) -> Path:
    return tree / QUICKLOOKS / scenario / f"ai4land_{scenario}_{year}.png"


def thumbnail_path(tree: Path, scenario: str, year: int) -> Path:
    return tree / VIEWER / "data" / scenario / f"{year}_lulc.png"


def write_pictures(config, products: list[tuple[str, int, Path]], tree: Path,
                   title: str) -> dict:
    """Quicklooks, animations, trajectories and the viewer for ``products`` (as linked
    into ``tree``); the index the viewer reads."""
    grid = ql_grid(products[0][2])
    cube = _cube(config, grid)
    cells = CellGrid.of(grid, cube.factor)
    by_scenario: dict[str, list[tuple[int, Path]]] = {}
    for scenario, year, cog in products:
        by_scenario.setdefault(scenario, []).append((year, cog))
    passes = [_scenario_pass(config, cube, cells, s, sorted(p), tree)
              for s, p in by_scenario.items()]
    series = {p.name: {y: p.reports[y]["group_fractions"] for y in p.years
                       if "group_fractions" in p.reports[y]} for p in passes}
    if any(series.values()):
        ql.trajectory_figure({s: v for s, v in series.items() if v},
                             tree / QUICKLOOKS / "class_area_trajectories.png")
    for p in passes:
        _write_json(tree / VIEWER / "data" / p.name / "cells.json",
                    {"scenario": p.name, "years": p.years, "classes": _classes(config),
                     "bp": p.bp, "pixels": p.valid})
    index = _index(config, grid, cells, passes, title)
    _write_json(tree / VIEWER / "data" / "index.json", index)
    _copy_assets(tree / VIEWER)
    return index


def ql_grid(cog: Path) -> Grid:
    with ql.rasterio.open(cog) as src:
        return Grid.from_transform(src.transform, width=src.width, height=src.height,
                                   crs=src.crs.to_string() if src.crs else "")


def _index(config, grid: Grid, cells: CellGrid, passes: list[_Scenario], title: str) -> dict:
    legend = config.classes.legend
    step = ql.decimation(grid.width, grid.height)
    return {
        "title": title,
        "bounds": list(grid.bounds),  # west, south, east, north
        "layers": list(LAYERS),
        "layer_shape": [math.ceil(grid.height / step), math.ceil(grid.width / step)],
        "scenarios": [{"name": p.name, "years": p.years,
                       "anchor_year": p.reports[p.years[0]].get("anchor_year"),
                       "direction": p.reports[p.years[0]].get("direction")} for p in passes],
        "classes": [{"code": c, "name": legend[c],
                     "colour": "#" + class_hex(c)} for c in _classes(config)],
        "cells": {"size": cells.size, "rows": cells.rows, "cols": cells.cols,
                  "degrees": cells.size * grid.res, "step": cells.step},
        "leaflet": LEAFLET_VERSION,
    }


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n")


def _copy_assets(target: Path) -> None:
    for path in sorted(ASSETS.rglob("*")):
        if path.is_file():
            out = target / path.relative_to(ASSETS)
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, out)
