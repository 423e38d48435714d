"""One (scenario, year) prediction job: inputs → inference → harmonise → products.

The backward chain runs under scenario ``historical`` (direction -1: the prior is the
next year's map); each SSP runs forward (direction +1: the prior is the previous
year's map). The first job of a chain gets ``prior_path=None`` and starts from the
observed map of the cube (first observed year going backward, last going forward).
An observed year listed in ``years.observed`` is predicted on its own under
``historical``: forward, with the previous observed map as prior (none before the first
observed year), and harmonised to its own observed map's class shares per coarse cell.

Memory is bounded whatever the region size: inference yields final rows band by band
(:func:`ai4land.inference.stream_probabilities`); bands are cut into whole coarse-cell
rows (:func:`rebands`), at most :data:`BAND_PIXELS` pixels over all workers, which are
harmonised on their own (harmonisation never crosses a coarse cell), then regrouped
into rows of :data:`STORE_TILE`, which are written to the Zarr slice and to staged
GTiffs. Inputs (cube, prior COG) are read a row of windows at a time. Windows over
open ocean (only no-data coarse cells) are not run (:func:`plan_prediction`): none of
their pixels is valid, so the products are the same without them.

The job's threads share one C heap (:mod:`ai4land.heap`), so the model's activations
reuse the memory of the previous pass instead of being page-faulted in anew.

Threads, on a CPU job with N cores (:func:`job_threads`): one builds the next windows'
inputs; N single-threaded model streams run the windows; the model's thread blends
them and hands each band's coarse-cell rows to N finalising workers (harmonise,
uncertainty layers, report tallies); this thread collects the finalised rows in row
order (so the report's sums do not depend on the threads) and writes them; the three
COG layers are converted side by side at the end. The numpy, numba, torch and GDAL work
in all of them releases the GIL.

Outputs are written in an order that keeps a killed job visible as incomplete: the
Zarr region (streamed), then the probability/entropy(/spread) COGs, then the class
COG, then the JSON report (each atomically), so a present report means every product
of the job is there.
"""

from __future__ import annotations

import collections
import fcntl
import gc
import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from pathlib import Path

import numpy as np
import rasterio

from ai4land.errors import InputDataError, ModelCardError
from ai4land.grid import Grid, Window
from ai4land.harmonize import (
    ErrorTally,
    Groups,
    allocate_change,
    class_groups,
    delta_target,
    harmonize,
    luh_group_fractions,
    map_group_fractions,
    offset_weight,
)
from ai4land.heap import share_one_heap
from ai4land.inference import (
    autocast_dtype,
    plan_windows,
    resolve_device,
    stream_probabilities,
    weights_digest,
)
from ai4land.io.atomic import atomic_path
from ai4land.io.cube import Cube, upsample_cells
from ai4land.io.rasters import open_class_map, require_class_codes
from ai4land.layers import map_layers, summarise
from ai4land.prefetch import Prefetch
from ai4land.products import (
    GDAL_ENV,
    CogLayer,
    StoreWriter,
    class_layer,
    init_store,
    layer_path,
    product_layers,
    quantise,
    quantised_layer,
    require_writable,
    staging_dir,
)
from ai4land.samples.features import build_inputs, codes_to_index, input_channel_names

STORE_TILE = 256
BAND_PIXELS = 1 << 21  # pixels harmonised at once (all workers): ~0.3 GiB of working arrays

PriorReader = Callable[[Window], np.ndarray]


def ensemble_seed(config, scenario: str, year: int) -> int:
    """MC dropout seed: a pure function of (config seed, scenario, year)."""
    text = f"{config.seed}:{scenario}:{year}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def _banded(read: Callable[[Window], np.ndarray], width: int) -> Callable[[Window], np.ndarray]:
    """``read`` (a window → (..., h, w) array), one full-width band of rows at a time:
    windows run row by row, so one read serves a whole row of windows; a read per window
    re-reads their overlaps and costs more than the model's forward pass on a CPU."""
    held: dict[str, object] = {"rows": None, "band": None}

    def read_window(window: Window) -> np.ndarray:
        rows = (window.row, window.height)
        if held["rows"] != rows:
            held["band"] = read(Window(window.row, 0, window.height, width))
            held["rows"] = rows
        return held["band"][..., window.col : window.col + window.width]

    return read_window


class _StaticBands:
    """The cube, with the static features of the current band of window rows in memory
    (a static band of a global row of 512-pixel tiles is ~220 MB for three features).
    The year's coarse cells go to ``build_inputs`` as ``coarse_cells``."""

    def __init__(self, cube: Cube):
        self._cube = cube
        self.static_window = _banded(cube.static_window, cube.fine_grid.width)

    def __getattr__(self, name: str):
        return getattr(self._cube, name)


def nodata_cells(cube: Cube, cells: np.ndarray) -> np.ndarray:
    """(h, w) bool: the coarse cells of ``cells`` (C, h, w) where every coarse variable is
    no-data (no land in the scenario: its pixels are not valid in the products)."""
    return np.isnan(cells[: len(cube.coarse_variables)]).all(axis=0)


def plan_prediction(config, *, cube: Cube,
                    cells: np.ndarray | None = None) -> tuple[list[Window], frozenset[Window]]:
    """The windows of the region (:func:`~ai4land.inference.plan_windows`), and those of
    them to skip: with ``cells`` (the year's coarse cells of the region), the windows
    that touch only no-data cells (open ocean), whose pixels no product uses; none if
    that is every window."""
    windows = plan_windows(cube.fine_grid.shape, tile_size=config.predict.tile_size,
                           overlap=config.predict.overlap)
    if cells is None:
        return windows, frozenset()
    empty = nodata_cells(cube, cells)
    skip = frozenset(w for w in windows if empty[w.coarse_slices(cube.factor)].all())
    return windows, skip if len(skip) < len(windows) else frozenset()


def probability_bands(config, *, cube: Cube, model, scenario: str, year: int,
                      prior: PriorReader | None, direction: int, device=None,
                      progress: bool | None = None, coarse_cells: np.ndarray | None = None,
                      streams: int = 1, skip_nodata: bool = False,
                      ) -> tuple[Iterator[tuple[int, np.ndarray]], int, int]:
    """Blended (h, W, C) probability bands of the region, top to bottom; the window count;
    and how many of the windows were skipped.

    C is the number of classes, plus the two spread channels of an ensemble.
    ``coarse_cells``: the year's coarse cells of the whole region, if already read.
    ``skip_nodata``: windows that touch only no-data coarse cells are not run (see
    :func:`plan_prediction`); their pixels' probabilities are then meaningless, which
    is fine for products that mask them out (:func:`run_predict`).
    """
    grid = cube.fine_grid
    predicted = list(config.classes.predicted)
    inputs_cube = _StaticBands(cube)
    # a global year of coarse cells is ~50 MB: read once, not once per window
    cells = (cube.coarse_cells(scenario, year, Window(0, 0, *grid.shape))
             if coarse_cells is None else coarse_cells)
    windows, skip = plan_prediction(config, cube=cube, cells=cells if skip_nodata else None)

    prior_band = None if prior is None else _banded(prior, grid.width)

    def load_window(window: Window, out: np.ndarray | None = None) -> np.ndarray:
        return build_inputs(inputs_cube, scenario=scenario, year=year, window=window,
                            predicted=predicted,
                            prior=None if prior_band is None else prior_band(window),
                            direction=direction, coarse_cells=cells, out=out)

    ensemble = config.predict.ensemble
    stream = stream_probabilities(
        model, load_window=load_window, shape=grid.shape, windows=windows,
        batch_size=config.predict.batch_size,
        device=device if device is not None else resolve_device(config.predict.device),
        ensemble=ensemble.kind, members=ensemble.members,
        seed=ensemble_seed(config, scenario, year),
        progress=progress, description=f"{scenario} {year}", streams=streams, skip=skip,
    )
    return stream, len(windows), len(skip)


def year_probabilities(config, *, cube: Cube, model, scenario: str, year: int,
                       prior: np.ndarray | None, direction: int, device=None,
                       progress: bool | None = None) -> tuple[np.ndarray, int]:
    """Blended class probabilities (H, W, K) of the whole region for one year (in memory)."""
    stream, n_windows, _ = probability_bands(
        config, cube=cube, model=model, scenario=scenario, year=year,
        prior=None if prior is None else (lambda window: prior[window.slices]),
        direction=direction, device=device, progress=progress)
    k = len(config.classes.predicted)
    return np.concatenate([band[..., :k] for _, band in stream]), n_windows


def rebands(bands: Iterable[tuple[int, np.ndarray]], *, multiple: int, height: int,
            max_rows: int | None = None, parts: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Regroup consecutive row bands into bands that start on a multiple of ``multiple``
    rows and end on one (the last one ends at ``height``), as soon as the rows are there.

    The rows each input band completes are cut into at least ``parts`` nearly equal
    bands (so that many workers can take them) of at most ``max_rows`` rows (default:
    ``multiple``, i.e. bands of exactly ``multiple`` rows). Bands inside an input band
    are views of it; only a band straddling two input bands is copied, and the rows held
    back for the next one (fewer than ``multiple``) are copied out of theirs.
    """
    units_max = max(1, (max_rows or multiple) // multiple)
    top, pending = 0, []
    for row, band in bands:
        if row != top + sum(len(b) for b in pending):
            raise RuntimeError(f"row band starting at {row} is out of order")
        end = row + len(band)
        cut = end if end == height else end // multiple * multiple
        if cut <= top:
            pending.append(band)
            continue
        head = np.concatenate(pending) if len(pending) > 1 else (pending[0] if pending else None)
        units = -(-(cut - top) // multiple)
        n = min(units, max(parts, -(-units // units_max)))
        start = top
        for i in range(n):
            stop = min(start + (units // n + (i < units % n)) * multiple, cut)
            if start >= row:
                yield start, band[start - row : stop - row]
            else:  # rows held back from earlier bands, then the first rows of this one
                yield start, np.concatenate([head[start - top : stop - top],
                                             band[: max(stop - row, 0)]])
            start = stop
        rest = band[cut - row :]
        pending = [rest.copy()] if len(rest) else []
        top = cut


def init_product_store(config, *, store: str | Path, scenario: str) -> Path:
    """Create or grow the product store for ``scenario`` and write its layout marker.

    The store always holds every configured scenario (created in config order, so a
    fresh run is deterministic); scenarios added to the config later are appended. The
    marker (the Snakemake target of ``init-store``) is per scenario, so adding an SSP
    leaves the other chains' markers, and their predictions, untouched. A lock file
    serialises concurrent ``init-store`` jobs.
    """
    store = Path(store)
    if scenario not in config.product_scenarios:
        raise InputDataError(f"scenario {scenario!r} is not in the config's product scenarios "
                             f"{config.product_scenarios}")
    cube = Cube.from_config(config)
    layers = product_layers(spread=config.predict.ensemble.write_layer)
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(store.with_name(store.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        init_store(store, grid=cube.fine_grid, scenarios=config.product_scenarios,
                   years=config.product_years, tile=STORE_TILE, legend=config.classes.legend,
                   layers=layers, grow=True)
    layout = {
        "store": store.name,
        "scenario": scenario,
        "years": config.product_years,
        "grid": cube.fine_grid.to_dict(),
        "chunk": [1, 1, STORE_TILE, STORE_TILE],
        "layers": layers,
    }
    marker = store.with_name(f"{store.name}.{scenario}.layout.json")
    with atomic_path(marker) as tmp:
        tmp.write_text(json.dumps(layout, indent=1) + "\n")
    return marker


def chain_direction(scenario: str) -> int:
    """-1 for the backward ``historical`` chain, +1 for forward scenario chains."""
    return -1 if scenario == "historical" else 1


def anchor_year(cube: Cube, direction: int) -> int:
    """The observed year a chain starts from: the last going forward, the first backward."""
    years = cube.target_years
    if not years:
        raise InputDataError(f"{cube.paths.target}: holds no observed map")
    return max(years) if direction > 0 else min(years)


@contextmanager
def open_prior(path: str | Path, grid: Grid) -> Iterator[PriorReader]:
    """A window reader of a previous job's COG; GridError if it is on another grid."""
    path = Path(path)
    with open_class_map(path, hint=" (run the previous year of the chain)") as (src, found):
        grid.require_same(found, what=f"prior map {path}")
        require_class_codes(src, path)

        def read(window: Window) -> np.ndarray:
            return src.read(1, window=rasterio.windows.Window(
                window.col, window.row, window.width, window.height))

        yield read


def _check_year(cube: Cube, scenario: str, year: int) -> None:
    years = cube.coarse_years(scenario)
    if year not in years:
        held = f"{years[0]}-{years[-1]}" if years else "no years"
        raise InputDataError(
            f"{cube.paths.coarse(scenario)}: scenario {scenario!r} has no coarse data for "
            f"year {year} (holds {held}); add the year to the scenario file or drop it from "
            "years.backward/forward"
        )


def _check_product_year(config, scenario: str, year: int) -> None:
    """One line unless (scenario, year) is a map of the config's product."""
    if year in config.scenario_years(scenario):
        return
    if scenario == "historical" and year in config.observed_years:
        hint = f"{year} is an observed year: add it to years.observed to predict its map"
    else:
        hint = "add the year to years.backward, years.forward or years.observed"
    raise InputDataError(f"scenario {scenario!r}, year {year} is not in the config's product "
                         f"(scenarios {config.product_scenarios}, years "
                         f"{config.scenario_years(scenario) or 'none'}); {hint}")


class _Tally:
    """What the per-year report counts (conservation errors, class counts, pixels,
    spread), for one band or, merged band by band in row order, for the year: float
    sums then add up in the same order whichever thread finalised which band."""

    def __init__(self, k: int):
        self.errors = {(when, target): ErrorTally() for when in ("before", "after")
                       for target in ("delta_target", "luh")}
        self.class_counts = np.zeros(k, dtype="int64")
        self.pixels = {"land": 0, "valid": 0, "nodata": 0, "kept": 0}
        self.changed = self.reassigned = self.rejections = 0
        self.spread_sums = np.zeros(2, dtype="float64")  # std, disagreement over valid pixels
        self.seconds = 0.0

    def merge(self, band: _Tally) -> None:
        for key, tally in self.errors.items():
            tally.merge(band.errors[key])
        self.class_counts += band.class_counts
        for key in self.pixels:
            self.pixels[key] += band.pixels[key]
        self.changed += band.changed
        self.reassigned += band.reassigned
        self.rejections += band.rejections
        self.spread_sums += band.spread_sums
        self.seconds += band.seconds


class Finaliser:
    """Turns probabilities of whole coarse cells into product layers and the band's
    :class:`_Tally`: harmonisation to the delta-method target of ``anchor`` (when
    ``predict.harmonize``), then the layers. Safe to call from several threads at once
    (bands of different rows). ``predict`` finalises full-width bands; the evaluation
    (:mod:`ai4land.evaluate.chains`) finalises the windows around its test blocks with
    the same code, so it scores what predict publishes.

    ``layers`` are the names of :func:`~ai4land.products.product_layers`, plus ``raw``
    for the class codes of the plain argmax (no data off the valid pixels), which the
    evaluation reports beside the harmonised map. ``prior`` (a window reader of the
    prior map) is the previous map that ``predict.allocation`` "change" continues, and
    lets the report count ``changed_pixels``; without it they read 0.
    """

    def __init__(self, config, *, cube: Cube, anchor: int, classes: list[int], groups: Groups,
                 weight: float, layers: list[str], cells: np.ndarray, anchor_cells: np.ndarray,
                 prior: PriorReader | None = None):
        self.config, self.cube, self.anchor = config, cube, anchor
        self.prior, self._prior_lock = prior, threading.Lock()  # the reader is not shared
        self.cells, self.anchor_cells = cells, anchor_cells  # whole region, coarse
        self.cell_nodata = nodata_cells(cube, cells)
        self.classes, self.groups, self.weight, self.layers = classes, groups, weight, layers
        self.code_of = np.asarray(classes, dtype="uint8")
        self.total = _Tally(len(classes))

    def __call__(self, row: int, band: np.ndarray, col: int = 0,
                 prior: np.ndarray | None = None) -> tuple[int, np.ndarray, _Tally]:
        """The (h, w, layers) layers of the (h, w, C) probabilities ``band`` whose first
        pixel is (``row``, ``col``) of the region: whole coarse cells (a band may end at
        the region's last row or column). ``prior``: the (h, w) class codes of the
        chain's previous map there (default: read by the finaliser's ``prior`` reader);
        with ``predict.allocation`` "change" the map keeps it but for each cell's net
        change (:func:`~ai4land.harmonize.allocate_change`)."""
        start = time.perf_counter()
        cube, config, factor = self.cube, self.config, self.cube.factor
        k = len(self.classes)
        tally = _Tally(k)
        window = Window(row, col, band.shape[0], band.shape[1])
        probs = band[..., :k]
        land = cube.land_mask_window(window)
        valid, kept, anchor_codes = self._masks(window, land=land)

        best, group_p, entropy = summarise(probs, self.groups, self.classes, valid=valid)
        argmax_codes = np.where(valid, self.code_of[best], config.classes.nodata).astype("uint8")
        target, luh_t = self._targets(window, valid=valid, anchor_codes=anchor_codes)

        if prior is None and self.prior is not None:
            with self._prior_lock:
                prior = self.prior(window)
        index = best
        change = prior is not None and config.predict.allocation == "change"
        if config.predict.harmonize and change:
            result = allocate_change(probs, self.classes, factor=factor, valid=valid,
                                     targets=target, groups=self.groups,
                                     prior=codes_to_index(prior, self.classes),
                                     margin=config.predict.swap_margin, argmax=best,
                                     smoothing=config.predict.change_smoothing)
            index = result.index
            tally.reassigned = result.changed
        elif config.predict.harmonize:
            result = harmonize(probs, self.classes, factor=factor, valid=valid, targets=target,
                               groups=self.groups, argmax=best, group_p=group_p)
            index = result.index
            tally.reassigned, tally.rejections = result.changed, result.rejections
        codes, probability, entropy, tally.class_counts = map_layers(
            probs, index, entropy=entropy, valid=valid, land=land, codes=self.code_of,
            nodata=config.classes.nodata, ocean=config.classes.ocean)
        codes[kept] = anchor_codes[kept]  # not modelled: probability and entropy no data
        if prior is not None:
            tally.changed = int(np.count_nonzero((codes != prior) & valid))
        for when, mapped in (("before", argmax_codes), ("after", codes)):
            fractions, n = map_group_fractions(mapped, self.groups, factor=factor, valid=valid)
            for name, goal in (("delta_target", target), ("luh", luh_t)):
                tally.errors[when, name].add_fractions(fractions, n, target=goal)
        n_valid, n_land, n_kept = int(valid.sum()), int(land.sum()), int(kept.sum())
        tally.pixels.update(land=n_land, valid=n_valid, nodata=n_land - n_valid - n_kept,
                            kept=n_kept)

        out = {"lulc": codes, "probability": probability, "entropy": entropy,
               "raw": argmax_codes}
        if band.shape[-1] > k:  # ensemble: member std of the top class, disagreement
            tally.spread_sums += band[valid][:, k : k + 2].sum(axis=0, dtype="float64")
            out["spread"] = quantise(np.where(valid, band[..., k], np.nan))
        tally.seconds = time.perf_counter() - start
        return row, np.stack([out[name] for name in self.layers], axis=-1), tally

    def _masks(self, window: Window, *, land: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``valid``: the pixels of ``window`` harmonised and mapped; ``kept``: those that
        keep the anchor map's class; and the anchor map's codes."""
        rows, cols = window.coarse_slices(self.cube.factor)
        anchor_codes = self.cube.target_window(self.anchor, window)
        no_cell_data = upsample_cells(self.cell_nodata[rows, cols], factor=self.cube.factor,
                                      window=window)
        # The anchor map's no-data pixels stay no data, out of every cell's quotas; land of
        # cells without coarse land-use data (coastlines the coarse data call ocean, all
        # water or ice cells) keeps the anchor map's classes: nothing constrains a change.
        valid = land & ~no_cell_data & (anchor_codes != self.config.classes.nodata)
        kept = land & no_cell_data
        if kept.any():
            kept &= np.isin(anchor_codes, self.code_of)
        return valid, kept, anchor_codes

    def _targets(self, window: Window, *, valid: np.ndarray,
                 anchor_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, cols = window.coarse_slices(self.cube.factor)
        names = self.cube.coarse_channel_names
        luh_t = luh_group_fractions(self.cells[:, rows, cols], names, self.groups)
        luh_anchor = luh_group_fractions(self.anchor_cells[:, rows, cols], names, self.groups)
        anchor_fractions, _ = map_group_fractions(anchor_codes, self.groups,
                                                  factor=self.cube.factor, valid=valid)
        target = delta_target(anchor_fractions, luh_t, luh_anchor, offset_weight=self.weight)
        return target, luh_t

    def valid(self, window: Window, *, land: np.ndarray) -> np.ndarray:
        """(h, w) bool: the pixels of ``window`` that harmonisation allocates."""
        return self._masks(window, land=land)[0]

    def targets(self, window: Window, *, land: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(G, hc, wc) group fractions of the cells of ``window`` (whole cells): the
        delta-method target harmonisation allocates to, and the LUH-mapped fractions."""
        valid, _, anchor_codes = self._masks(window, land=land)
        return self._targets(window, valid=valid, anchor_codes=anchor_codes)

    def collect(self, finalised: tuple[int, np.ndarray, _Tally]) -> tuple[int, np.ndarray]:
        """Add a band's tally to the year's (call in row order); the band's layers."""
        row, block, tally = finalised
        self.total.merge(tally)
        return row, block

    def report(self) -> dict:
        total = self.total
        valid = max(total.pixels["valid"], 1)
        fractions = {str(c): round(float(n) / valid, 6)
                     for c, n in zip(self.classes, total.class_counts, strict=True)}
        ensemble = self.config.predict.ensemble
        spread = {"kind": ensemble.kind, "members": ensemble.members}
        if ensemble.kind != "none":
            spread.update(mean_std=round(float(total.spread_sums[0]) / valid, 6),
                          mean_disagreement=round(float(total.spread_sums[1]) / valid, 6))
        return {
            "conservation": {when: {name: total.errors[when, name].result()
                                    for name in ("delta_target", "luh")}
                             for when in ("before", "after")},
            "changed_pixels": int(total.changed),  # valid pixels unlike the prior map's
            "harmonize_reassigned_pixels": int(total.reassigned),  # unlike the argmax
            "harmonize_rejections": int(total.rejections),
            "class_fractions": fractions,
            "pixels": dict(total.pixels),
            "ensemble": spread,
        }


@contextmanager
def _garbage_collection_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (restored after). A full
    collection walks every object of a heap that holds torch, xarray and numba while
    holding the GIL, stalling all the job's threads (measured: the first windows of a
    job waited ~0.2 s for one); the job's arrays are freed by reference counting."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def band_rows(factor: int, width: int, workers: int = 1) -> int:
    """Rows of the largest band a worker finalises: whole coarse-cell rows, at most
    :data:`BAND_PIXELS` pixels over all ``workers`` (one coarse-cell row at least), so
    the finalisers' working arrays do not grow with their number."""
    return factor * max(1, BAND_PIXELS // workers // (factor * width))


def job_threads() -> int:
    """The job's cores: torch's thread count, which Snakemake sets from the rule's
    ``threads`` (``OMP_NUM_THREADS``). On a CPU the model runs that many single-threaded
    streams, and as many workers finalise bands."""
    import torch

    return max(1, torch.get_num_threads())


@_garbage_collection_paused()
def run_predict(
    config,
    *,
    scenario: str,
    year: int,
    model_dir: str | Path,
    prior_path: str | Path | None,
    output: str | Path,
    store: str | Path,
    progress: bool | None = None,
) -> dict:
    """Predict the map of ``year`` under ``scenario``; write COGs, Zarr region and report.

    Returns the report (also written as JSON beside ``output``, less ``timings_s``).
    """
    from ai4land.models.card import CARD, check_inputs, code_version, load_model

    t_start = time.perf_counter()
    share_one_heap()  # before the job's threads start
    output, store, model_dir = Path(output), Path(store), Path(model_dir)
    require_writable(output.parent)
    require_writable(store.parent)
    # an observed year (years.observed) is predicted on its own, as evaluation predicts a
    # test year: forward, the previous observed map as prior (none before the first), and
    # harmonised to its own observed map (the delta target's anchor is the year itself)
    observed = scenario == "historical" and year in config.observed_product_years
    direction = 1 if observed else chain_direction(scenario)
    cube = Cube.from_config(config)
    grid = cube.fine_grid
    _check_year(cube, scenario, year)
    _check_product_year(config, scenario, year)

    model, card = load_model(model_dir)
    predicted = list(config.classes.predicted)
    try:
        check_inputs(card, input_channel_names(cube, predicted))
    except ModelCardError as exc:
        raise ModelCardError(f"{model_dir / CARD}: {exc}; train a model on this cube or pass "
                             "a matching --model") from None
    classes = [int(c) for c in card.classes]
    if classes != predicted:
        raise ModelCardError(f"{model_dir / CARD}: classes {classes} differ from "
                             f"classes.predicted {predicted} of the config")
    groups = class_groups(config.datasets.coarse.groups, classes)
    if config.predict.ensemble.kind == "mc_dropout" and not model.config.get("dropout"):
        raise ModelCardError(f"{model_dir / CARD}: predict.ensemble.kind mc_dropout needs a "
                             "model with dropout; train with train.dropout > 0 or use tta")

    anchor = year if observed else anchor_year(cube, direction)
    anchor_scenario = cube.scenario_for_year(anchor, preferred=scenario)
    weight = offset_weight(year, anchor, decay_years=config.predict.harmonize_decay_years)
    layers = product_layers(spread=config.predict.ensemble.write_layer)
    whole = Window(0, 0, *grid.shape)
    cells = cube.coarse_cells(scenario, year, whole)
    device = resolve_device(config.predict.device)
    workers = job_threads()
    timings = {"load": 0.0, "wait": 0.0, "write": 0.0}  # load: set once the setup is done

    with ExitStack() as stack:
        stack.enter_context(rasterio.Env(**GDAL_ENV))
        prior_year = (year - 1 if year - 1 in cube.target_years else None) if observed else anchor
        if prior_path is None and prior_year is None:
            prior = own_prior = None
        elif prior_path is None:
            def prior(window: Window) -> np.ndarray:
                return cube.target_window(prior_year, window)
            own_prior = prior
        else:
            prior = stack.enter_context(open_prior(prior_path, grid))
            own_prior = stack.enter_context(open_prior(prior_path, grid))  # the workers'
        finalise = Finaliser(config, cube=cube, anchor=anchor, classes=classes, groups=groups,
                             weight=weight, layers=layers, cells=cells,
                             anchor_cells=cube.coarse_cells(anchor_scenario, anchor, whole),
                             prior=own_prior)
        pool = ThreadPoolExecutor(workers, thread_name_prefix="ai4land-finalise")
        stack.callback(pool.shutdown, cancel_futures=True)
        # the COG layers convert in their own threads: they start while the workers
        # still write the last Zarr blocks
        converter = ThreadPoolExecutor(len(layers), thread_name_prefix="ai4land-cog")
        stack.callback(converter.shutdown, cancel_futures=True)
        stream, n_windows, n_skipped = probability_bands(
            config, cube=cube, model=model, scenario=scenario, year=year, prior=prior,
            direction=direction, device=device, progress=progress, coarse_cells=cells,
            streams=workers, skip_nodata=True)
        stack.callback(stream.close)  # its threads stop with the job, however it ends
        # The model's thread cuts each row band into whole coarse-cell rows for the
        # workers, which finalise them while the model runs the next row of windows; this
        # thread collects them in row order and writes them. It starts before the rest of
        # the setup below, which then overlaps the first windows' inputs.
        bands = rebands(stream, multiple=cube.factor, height=grid.height,
                        max_rows=band_rows(cube.factor, grid.width, workers), parts=workers)
        futures = stack.enter_context(Prefetch(
            (pool.submit(finalise, row, band) for row, band in bands), depth=workers))

        model_hash = weights_digest(model)
        prior_source = (Path(prior_path).name if prior_path is not None
                        else "none" if prior_year is None else f"observed {prior_year}")
        tags = {
            "AI4LAND_SCENARIO": scenario,
            "AI4LAND_YEAR": int(year),
            "AI4LAND_DIRECTION": direction,
            "AI4LAND_PRIOR": prior_source,
            "AI4LAND_HARMONIZED": bool(config.predict.harmonize),
            "AI4LAND_CONFIG_HASH": config.hash(),
            "AI4LAND_MODEL_WEIGHTS_SHA256": model_hash,
            "AI4LAND_CODE_VERSION": code_version(),
        }
        init_store(store, grid=grid, scenarios=config.product_scenarios,
                   years=config.product_years, tile=STORE_TILE, legend=config.classes.legend,
                   layers=layers)
        writer = StoreWriter(store, scenario=scenario, year=year)
        workdir = stack.enter_context(staging_dir(output))
        cogs = {}
        for name in layers:
            spec = (class_layer(config.classes.legend, tags=tags,
                                level=config.predict.compress_level) if name == "lulc"
                    else quantised_layer(name, tags=tags,
                                         level=config.predict.uncertainty_compress_level))
            cogs[name] = stack.enter_context(
                CogLayer(layer_path(output, name), grid, workdir=workdir, **spec))

        timings["load"] = time.perf_counter() - t_start

        def finalised() -> Iterator[tuple[int, np.ndarray]]:
            results = iter(futures)
            while True:  # the wait: for the model, then for the band's worker
                t0 = time.perf_counter()
                future = next(results, None)
                result = None if future is None else future.result()
                timings["wait"] += time.perf_counter() - t0
                if result is None:
                    return
                yield finalise.collect(result)

        # Zarr blocks are written by the workers (chunk files, any order), so the last
        # ones overlap the COG conversions; at most `workers` blocks wait at a time.
        store_writes: collections.deque = collections.deque()
        for row, block in rebands(finalised(), multiple=STORE_TILE, height=grid.height):
            t0 = time.perf_counter()
            values = {name: np.ascontiguousarray(block[..., i]) for i, name in enumerate(layers)}
            for name, cog in cogs.items():
                cog.write(row, values[name])
            store_writes.append(pool.submit(writer.write, row, values))
            while len(store_writes) > workers:
                store_writes.popleft().result()
            timings["write"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        # converted side by side; the class map is renamed into place last, after the
        # Zarr region: it marks the job's products complete
        conversions = [converter.submit(cog.convert) for cog in cogs.values()]
        wait([*conversions, *store_writes])  # all done (or failed) before any clean-up
        for future in [*store_writes, *conversions]:
            future.result()
        for name in [*layers[1:], layers[0]]:
            cogs[name].publish()
        timings["convert"] = time.perf_counter() - t0
    timings["finalise_thread_s"] = finalise.total.seconds
    timings["total"] = time.perf_counter() - t_start

    dtype = autocast_dtype(device)
    report = {
        "scenario": scenario,
        "year": int(year),
        "direction": direction,
        "prior": prior_source,
        "anchor_year": anchor,
        "anchor_scenario": anchor_scenario,
        "harmonized": bool(config.predict.harmonize),
        "harmonize_offset_weight": weight,
        "harmonize_decay_years": config.predict.harmonize_decay_years,
        **finalise.report(),
        "windows": n_windows,
        "windows_skipped": n_skipped,
        "device": str(device),
        "autocast": str(dtype).removeprefix("torch.") if dtype is not None else "float32",
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "outputs": {name: layer_path(output, name).name for name in layers} | {"store": store.name},
        "config_hash": config.hash(),
        "model_weights_sha256": model_hash,
    }
    # The written report is a published product: without the timings, which differ run
    # to run, it hashes the same when the product is regenerated.
    published = {key: value for key, value in report.items() if key != "timings_s"}
    with atomic_path(output.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(published, indent=1, sort_keys=True) + "\n")
    return report
