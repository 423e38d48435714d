"""Prediction chains over the held-out test blocks, finalised as ``predict`` finalises them.

A chain starts from an observed map and runs year by year, each year's map the prior of
the next, as ``predict`` runs its chains: *forward* from the observed map of the year
before the test years through the test years, *backward* from the observed map of the
year after them down to the first. Its harmonisation anchor is the start map (the
delta-method target: start map + LUH(t) - LUH(start)).

Memory does not grow with the region: each test block is a :class:`Site`, the windows
of predict's own window plan (:func:`~ai4land.predict.probabilities.plan_prediction`) that touch the
block's coarse cells. Inside the block's cells every window predict would blend is run,
so with the same prior a pixel gets predict's probabilities exactly; the cells covered
by those windows (``Site.area``) are finalised by :class:`~ai4land.predict.finalise.Finaliser`,
predict's own harmonisation and layers. The prior beyond them (the windows' outer ring,
context only) is the network's plain argmax there. A site holds a few hundred pixels a
side; the whole region is never held, only its coarse cells (as predict holds them).

Models are *scorers* (per-pixel class scores, finalised: the U-Net and the allocation
baselines) or *mappers* (class codes directly: persistence, coarse majority, random
allocation); :mod:`ai4land.evaluate.run` scores what they produce.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ai4land.grid import Window
from ai4land.io.cube import Cube
from ai4land.predict.inference import plan_windows, stream_probabilities
from ai4land.samples.features import build_inputs
from ai4land.samples.split import Block, Split


@dataclass(frozen=True)
class Site:
    """One test block and the windows evaluated around it (all in region pixels)."""

    label: int  # the block's index among the test blocks
    block: Block
    scored: Window  # the test block: its land pixels are scored
    cells: Window  # the block's coarse cells (whole cells, clipped to the region)
    area: Window  # whole coarse cells inside ``outer``: finalised (harmonised)
    outer: Window  # the union of predict's windows that touch ``cells``
    windows: tuple[Window, ...]  # those windows, in ``outer``'s pixel coordinates

    def inside(self, window: Window, within: Window | None = None) -> tuple[slice, slice]:
        """Slices of ``window`` inside ``within`` (default: ``outer``)."""
        base = within or self.outer
        return (slice(window.row - base.row, window.row - base.row + window.height),
                slice(window.col - base.col, window.col - base.col + window.width))


def _aligned(window: Window, factor: int, shape: tuple[int, int], *, outward: bool) -> Window:
    """``window`` grown (``outward``) or shrunk to whole coarse cells; an edge on the
    region's last row or column stays (cells there may be partial)."""
    height, width = shape

    def span(start: int, size: int, limit: int) -> tuple[int, int]:
        end = start + size
        if outward:
            lo, hi = start // factor * factor, min(-(-end // factor) * factor, limit)
        else:
            lo = -(-start // factor) * factor
            hi = end if end == limit else end // factor * factor
        return lo, hi

    r0, r1 = span(window.row, window.height, height)
    c0, c1 = span(window.col, window.width, width)
    return Window(r0, c0, r1 - r0, c1 - c0)


def _overlaps(a: Window, b: Window) -> bool:
    return (a.row < b.row + b.height and b.row < a.row + a.height
            and a.col < b.col + b.width and b.col < a.col + a.width)


def plan_sites(config, *, shape: tuple[int, int], factor: int, split: Split,
               role: str = "test") -> list[Site]:
    """A :class:`Site` per ``role`` block of ``split`` (test or val) on a region of
    ``shape`` pixels."""
    windows = plan_windows(shape, tile_size=config.predict.tile_size,
                           overlap=config.predict.overlap)
    sites = []
    for label, block in enumerate(b for b in split.blocks if b.role == role):
        scored = split.block_window(block)
        cells = _aligned(scored, factor, shape, outward=True)
        # predict's windows form a grid of row starts x column starts: those touching a
        # rectangle cover a rectangle, every pixel of it
        touching = [w for w in windows if _overlaps(w, cells)]
        top, left = min(w.row for w in touching), min(w.col for w in touching)
        bottom = max(w.row + w.height for w in touching)
        right = max(w.col + w.width for w in touching)
        outer = Window(top, left, bottom - top, right - left)
        sites.append(Site(
            label=label, block=block, scored=scored, cells=cells,
            area=_aligned(outer, factor, shape, outward=False), outer=outer,
            windows=tuple(Window(w.row - top, w.col - left, w.height, w.width)
                          for w in touching)))
    return sites


def site_demand(finaliser, site: Site, prior: np.ndarray | None, *, factor: int,
                shape: tuple[int, int]) -> np.ndarray:
    """(G, cells_y, cells_x) the demand channels of the region's cells
    (:meth:`~ai4land.predict.finalise.Finaliser.demand`) from ``prior``, the (h, w) class
    codes of ``site.outer``: exact on the cells of ``site.area`` (whole cells, as predict
    computes them), from the covered part on the outer ring's cells (context only, as
    the prior there), 0 elsewhere and without a prior."""
    hc, wc = -(-shape[0] // factor), -(-shape[1] // factor)
    out = np.zeros((len(finaliser.groups), hc, wc), dtype="float32")
    if prior is None:
        return out
    cells = _aligned(site.outer, factor, shape, outward=True)
    codes = np.full((cells.height, cells.width), finaliser.config.classes.nodata, dtype="uint8")
    codes[site.inside(site.outer, cells)] = prior  # outside the prior: in no group, not counted
    rows, cols = cells.coarse_slices(factor)
    out[:, rows, cols] = finaliser.window_demand(cells, codes)
    return out


def site_probabilities(config, *, cube: Cube, model, site: Site, scenario: str, year: int,
                       prior: np.ndarray | None, direction: int, coarse_cells: np.ndarray,
                       device, seed: int, demand: np.ndarray | None = None,
                       smooth=None) -> np.ndarray:
    """(h, w, C) blended probabilities of ``site.outer`` as predict blends them: predict's
    windows, batches and ensemble; ``prior`` the (h, w) class codes of ``outer``;
    ``demand`` the demand channels (:func:`site_demand`) for a model with them."""
    inputs = build_inputs(cube, scenario=scenario, year=year, window=site.outer,
                          predicted=list(config.classes.predicted), prior=prior,
                          direction=direction, coarse_cells=coarse_cells, demand=demand,
                          smooth=smooth)

    def load_window(window: Window, out: np.ndarray | None = None) -> np.ndarray:
        return inputs[(slice(None), *window.slices)]

    ensemble = config.predict.ensemble
    stream = stream_probabilities(
        model, load_window=load_window, shape=(site.outer.height, site.outer.width),
        windows=site.windows, batch_size=config.predict.batch_size, device=device,
        ensemble=ensemble.kind, members=ensemble.members, seed=seed, progress=False)
    return np.concatenate([band for _, band in stream])
