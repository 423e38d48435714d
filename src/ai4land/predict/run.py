"""One (scenario, year) prediction job: inputs → inference → harmonise → products.

The backward chain runs under scenario ``historical`` (direction -1: the prior is the
next year's map); each SSP runs forward (direction +1: the prior is the previous
year's map). The first job of a chain gets ``prior_path=None`` and starts from the
observed map of the cube (first observed year going backward, last going forward).
An observed year listed in ``years.observed`` is predicted on its own under
``historical``: forward, with the previous observed map as prior (none before the first
observed year), and harmonised to its own observed map's class shares per coarse cell.

Memory is bounded whatever the region size: inference yields final rows band by band
(:func:`ai4land.predict.inference.stream_probabilities`); bands are cut into whole coarse-cell
rows (:func:`rebands`), at most :data:`BAND_PIXELS` pixels over all workers, which are
harmonised on their own (harmonisation never crosses a coarse cell), then regrouped
into rows of :data:`STORE_TILE`, which are written to the Zarr slice and to staged
GTiffs. Inputs (cube, prior COG) are read a row of windows at a time. Windows over
open ocean (only no-data coarse cells) are not run (:func:`plan_prediction`): none of
their pixels is valid, so the products are the same without them.

The job's threads share one C heap (:mod:`ai4land.predict.heap`), so the model's activations
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
import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from ai4land.config import slice_hash, stage_config
from ai4land.device import autocast_dtype, resolve_device
from ai4land.errors import InputDataError, ModelCardError
from ai4land.grid import Window
from ai4land.io.atomic import atomic_path
from ai4land.io.cog import (
    GDAL_ENV,
    CogLayer,
    class_layer,
    layer_path,
    quantised_layer,
    require_writable,
    staging_dir,
)
from ai4land.io.cube import Cube
from ai4land.io.prefetch import Prefetch
from ai4land.io.zarr_store import StoreWriter, init_store, product_layers
from ai4land.predict.finalise import Finaliser, anchor_year, chain_direction, open_prior
from ai4land.predict.harmonize import (
    class_groups,
    offset_weight,
)
from ai4land.predict.heap import share_one_heap
from ai4land.predict.inference import weights_digest
from ai4land.predict.probabilities import probability_bands, rebands
from ai4land.samples.features import demand_groups_of, input_channel_names, smooth_of

STORE_TILE = 256


BAND_PIXELS = 1 << 21  # pixels harmonised at once (all workers): ~0.3 GiB of working arrays


def init_product_store(config, *, store: str | Path, scenario: str) -> Path:
    """Create or grow the product store for ``scenario`` and write its layout marker.

    The store always holds every configured scenario (created in config order, so a
    fresh run is deterministic); scenarios added to the config later are appended. The
    marker (the Snakemake target of ``init-store``) is per scenario, so adding an SSP
    leaves the other chains' markers, and their predictions, untouched. A lock file
    serialises concurrent ``init-store`` jobs.
    """
    config = stage_config(config, "init_store")  # reads only its slice
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


@dataclass(frozen=True)
class _JobPlan:
    """Where a (scenario, year) job's chain starts and what its prior is."""

    scenario: str
    year: int
    direction: int
    anchor: int
    anchor_scenario: str
    weight: float  # the harmonisation offset's weight at this distance from the anchor
    prior_year: int | None  # observed map used as prior (no --prior), None for none
    prior_source: str  # as the tags and the report name it


def _plan_job(config, cube: Cube, *, scenario: str, year: int,
              prior_path: Path | None) -> _JobPlan:
    # an observed year (years.observed) is predicted on its own, as evaluation predicts a
    # test year: forward, the previous observed map as prior (none before the first), and
    # harmonised to its own observed map (the delta target's anchor is the year itself)
    observed = scenario == "historical" and year in config.observed_product_years
    direction = 1 if observed else chain_direction(scenario)
    anchor = year if observed else anchor_year(cube, direction)
    anchor_scenario = cube.scenario_for_year(anchor, preferred=scenario)
    weight = offset_weight(year, anchor, decay_years=config.predict.harmonize_decay_years)
    prior_year = (year - 1 if year - 1 in cube.target_years else None) if observed else anchor
    prior_source = (Path(prior_path).name if prior_path is not None
                    else "none" if prior_year is None else f"observed {prior_year}")
    return _JobPlan(scenario=scenario, year=year, direction=direction, anchor=anchor,
                    anchor_scenario=anchor_scenario, weight=weight, prior_year=prior_year,
                    prior_source=prior_source)


def _checked_model(config, cube: Cube, model_dir: Path):
    """The model, its classes, whether it has demand channels (``train.demand``) and
    the coarse groups of its smooth coarse channels (``train.smooth_coarse``; None
    without); ModelCardError (one line) when it does not fit the cube, the config's classes or
    the ensemble."""
    from ai4land.models.card import CARD, check_inputs, load_model

    model, card = load_model(model_dir)
    predicted = list(config.classes.predicted)
    groups = class_groups(config.datasets.coarse.groups, predicted)
    uses_demand = bool(demand_groups_of(card.input_channels))
    smooth = smooth_of(card.input_channels, groups)
    try:
        check_inputs(card, input_channel_names(cube, predicted,
                                               demand=groups.names if uses_demand else (),
                                               smooth=smooth))
    except ModelCardError as exc:
        raise ModelCardError(f"{model_dir / CARD}: {exc}; train a model on this cube or pass "
                             "a matching --model") from None
    classes = [int(c) for c in card.classes]
    if classes != predicted:
        raise ModelCardError(f"{model_dir / CARD}: classes {classes} differ from "
                             f"classes.predicted {predicted} of the config")
    if config.predict.ensemble.kind == "mc_dropout" and not model.config.get("dropout"):
        raise ModelCardError(f"{model_dir / CARD}: predict.ensemble.kind mc_dropout needs a "
                             "model with dropout; train with train.dropout > 0 or use tta")
    return model, classes, uses_demand, smooth


def _priors(stack: ExitStack, cube: Cube, plan: _JobPlan, prior_path: Path | None, grid):
    """(the model's prior reader, the finalising workers' own): the --prior COG, the
    observed map of ``plan.prior_year``, or None."""
    if prior_path is None and plan.prior_year is None:
        return None, None
    if prior_path is None:
        def prior(window: Window) -> np.ndarray:
            return cube.target_window(plan.prior_year, window)
        return prior, prior
    return (stack.enter_context(open_prior(prior_path, grid)),
            stack.enter_context(open_prior(prior_path, grid)))  # the workers'


def _open_cogs(stack: ExitStack, config, output: Path, grid, layers: list[str],
               tags: dict) -> dict[str, CogLayer]:
    """The job's COG layers, staged beside ``output`` (removed with the stack)."""
    workdir = stack.enter_context(staging_dir(output))
    cogs = {}
    for name in layers:
        spec = (class_layer(config.classes.legend, tags=tags,
                            level=config.predict.compress_level) if name == "lulc"
                else quantised_layer(name, tags=tags,
                                     level=config.predict.uncertainty_compress_level))
        cogs[name] = stack.enter_context(
            CogLayer(layer_path(output, name), grid, workdir=workdir, **spec))
    return cogs


def _pools(stack: ExitStack, workers: int, layers: int):
    """The finalising workers, and the threads converting the COG layers (they start
    while the workers still write the last Zarr blocks); shut down with the stack."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="ai4land-finalise")
    stack.callback(pool.shutdown, cancel_futures=True)
    converter = ThreadPoolExecutor(layers, thread_name_prefix="ai4land-cog")
    stack.callback(converter.shutdown, cancel_futures=True)
    return pool, converter


def _collected(futures, finalise: Finaliser, timings: dict) -> Iterator[tuple[int, np.ndarray]]:
    """The finalised rows in row order; the time spent waiting for them in ``timings``."""
    results = iter(futures)
    while True:  # the wait: for the model, then for the band's worker
        t0 = time.perf_counter()
        future = next(results, None)
        result = None if future is None else future.result()
        timings["wait"] += time.perf_counter() - t0
        if result is None:
            return
        yield finalise.collect(result)


def _write_products(rows: Iterator[tuple[int, np.ndarray]], *, cogs: dict[str, CogLayer],
                    writer: StoreWriter, layers: list[str], height: int,
                    pool: ThreadPoolExecutor, converter: ThreadPoolExecutor, workers: int,
                    timings: dict) -> None:
    """Write the finalised rows to the COG layers and the Zarr region, then convert and
    publish the COGs (the class map last: it marks the job's products complete)."""
    # Zarr blocks are written by the workers (chunk files, any order), so the last
    # ones overlap the COG conversions; at most `workers` blocks wait at a time.
    store_writes: collections.deque = collections.deque()
    for row, block in rebands(rows, multiple=STORE_TILE, height=height):
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
    config = stage_config(config, "predict")  # reads only its slice
    t_start = time.perf_counter()
    share_one_heap()  # before the job's threads start
    output, store, model_dir = Path(output), Path(store), Path(model_dir)
    require_writable(output.parent)
    require_writable(store.parent)
    cube = Cube.from_config(config)
    grid = cube.fine_grid
    _check_year(cube, scenario, year)
    _check_product_year(config, scenario, year)
    model, classes, uses_demand, smooth = _checked_model(config, cube, model_dir)
    plan = _plan_job(config, cube, scenario=scenario, year=year, prior_path=prior_path)
    layers = product_layers(spread=config.predict.ensemble.write_layer)
    cells = cube.coarse_cells(scenario, year, Window(0, 0, *grid.shape))
    device = resolve_device(config.predict.device, key="predict.device")
    workers = job_threads()
    timings = {"load": 0.0, "wait": 0.0, "write": 0.0}  # load: set once the setup is done

    with ExitStack() as stack:
        stack.enter_context(rasterio.Env(**GDAL_ENV))
        prior, own_prior = _priors(stack, cube, plan, prior_path, grid)
        finalise = Finaliser(config, cube=cube, anchor=plan.anchor, classes=classes,
                             groups=class_groups(config.datasets.coarse.groups, classes),
                             weight=plan.weight, layers=layers, cells=cells, prior=own_prior,
                             anchor_cells=cube.coarse_cells(plan.anchor_scenario, plan.anchor,
                                                            Window(0, 0, *grid.shape)))
        pool, converter = _pools(stack, workers, len(layers))
        # a model with demand channels sees each cell's change to make against the prior
        stream, n_windows, n_skipped = probability_bands(
            config, cube=cube, model=model, scenario=scenario, year=year, prior=prior,
            direction=plan.direction, device=device, progress=progress, coarse_cells=cells,
            streams=workers, skip_nodata=True,
            demand=finalise.demand(prior) if uses_demand else None, smooth=smooth)
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
        init_store(store, grid=grid, scenarios=config.product_scenarios,
                   years=config.product_years, tile=STORE_TILE, legend=config.classes.legend,
                   layers=layers)
        writer = StoreWriter(store, scenario=scenario, year=year)
        cogs = _open_cogs(stack, config, output, grid, layers, _tags(config, plan, model_hash))
        timings["load"] = time.perf_counter() - t_start
        _write_products(_collected(futures, finalise, timings), cogs=cogs, writer=writer,
                        layers=layers, height=grid.height, pool=pool, converter=converter,
                        workers=workers, timings=timings)
    timings["finalise_thread_s"] = finalise.total.seconds
    timings["total"] = time.perf_counter() - t_start

    report = _report(config, plan, finalise=finalise, windows=(n_windows, n_skipped),
                     device=device, timings=timings, output=output, layers=layers, store=store,
                     model_hash=model_hash)
    # The written report is a published product: without the timings, which differ run
    # to run, it hashes the same when the product is regenerated.
    published = {key: value for key, value in report.items() if key != "timings_s"}
    with atomic_path(output.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(published, indent=1, sort_keys=True) + "\n")
    return report


def _tags(config, plan: _JobPlan, model_hash: str) -> dict:
    """The provenance tags of the job's COGs."""
    from ai4land.models.card import code_version

    return {
        "AI4LAND_SCENARIO": plan.scenario,
        "AI4LAND_YEAR": int(plan.year),
        "AI4LAND_DIRECTION": plan.direction,
        "AI4LAND_PRIOR": plan.prior_source,
        "AI4LAND_HARMONIZED": bool(config.predict.harmonize),
        "AI4LAND_CONFIG_HASH": slice_hash(config, "predict"),
        "AI4LAND_MODEL_WEIGHTS_SHA256": model_hash,
        "AI4LAND_CODE_VERSION": code_version(),
    }


def _report(config, plan: _JobPlan, *, finalise: Finaliser, windows: tuple[int, int], device,
            timings: dict, output: Path, layers: list[str], store: Path,
            model_hash: str) -> dict:
    dtype = autocast_dtype(device)
    return {
        "scenario": plan.scenario,
        "year": int(plan.year),
        "direction": plan.direction,
        "prior": plan.prior_source,
        "anchor_year": plan.anchor,
        "anchor_scenario": plan.anchor_scenario,
        "harmonized": bool(config.predict.harmonize),
        "harmonize_offset_weight": plan.weight,
        "harmonize_decay_years": config.predict.harmonize_decay_years,
        **finalise.report(),
        "windows": windows[0],
        "windows_skipped": windows[1],
        "device": device.type,  # "cuda", not "cuda:0": the published report stays the same
        "autocast": str(dtype).removeprefix("torch.") if dtype is not None else "float32",
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "outputs": {name: layer_path(output, name).name for name in layers} | {"store": store.name},
        "config_hash": slice_hash(config, "predict"),
        "model_weights_sha256": model_hash,
    }
