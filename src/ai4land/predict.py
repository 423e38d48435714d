"""One (scenario, year) prediction job: inputs → inference → harmonise → products.

The backward chain runs under scenario ``historical`` (direction -1: the prior is the
next year's map); each SSP runs forward (direction +1: the prior is the previous
year's map). The first job of a chain gets ``prior_path=None`` and starts from the
observed map of the cube (first observed year going backward, last going forward).

Outputs are written in an order that keeps a killed job visible as incomplete: the
Zarr region, then the probability/entropy COGs, then the class COG, then the JSON
report (both atomically), so a present report means every product of the job is there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import rasterio

from ai4land.errors import InputDataError, ModelCardError
from ai4land.grid import Grid, Window
from ai4land.harmonize import (
    class_groups,
    conservation_error,
    delta_target,
    harmonize,
    luh_group_fractions,
    map_group_fractions,
)
from ai4land.inference import (
    autocast_dtype,
    plan_windows,
    predict_probabilities,
    probability_layers,
    resolve_device,
)
from ai4land.io.atomic import atomic_path
from ai4land.io.cube import Cube
from ai4land.products import (
    init_store,
    probability_paths,
    sha256_file,
    write_cog,
    write_probability_cogs,
    write_year,
)
from ai4land.samples.features import build_inputs, input_channel_names


STORE_TILE = 256


def year_probabilities(config, *, cube: Cube, model, scenario: str, year: int,
                       prior: np.ndarray | None, direction: int, device=None,
                       progress: bool | None = None) -> tuple[np.ndarray, int]:
    """Blended class probabilities (H, W, K) of the whole region for one year."""
    grid = cube.fine_grid
    windows = plan_windows(grid.shape, tile_size=config.predict.tile_size,
                           overlap=config.predict.overlap)
    predicted = list(config.classes.predicted)

    def load_window(window: Window) -> np.ndarray:
        return build_inputs(cube, scenario=scenario, year=year, window=window,
                            predicted=predicted,
                            prior=None if prior is None else prior[window.slices],
                            direction=direction)

    probs = predict_probabilities(
        model, load_window=load_window, shape=grid.shape, windows=windows,
        batch_size=config.predict.batch_size,
        device=device if device is not None else resolve_device(config.predict.device),
        progress=progress, description=f"{scenario} {year}",
    )
    return probs, len(windows)


def predict_map(config, *, cube: Cube, model, scenario: str, year: int,
                prior: np.ndarray | None, direction: int) -> np.ndarray:
    """The network's most probable class codes (no harmonisation); ocean stays ocean."""
    probs, _ = year_probabilities(config, cube=cube, model=model, scenario=scenario,
                                  year=year, prior=prior, direction=direction, progress=False)
    code_of = np.asarray(config.classes.predicted, dtype="uint8")
    land = cube.land_mask_window(Window(0, 0, *cube.fine_grid.shape))
    return np.where(land, code_of[probs.argmax(axis=-1)], config.classes.ocean).astype("uint8")


def init_product_store(config, *, store: str | Path) -> Path:
    """Create the empty product store and its layout marker (the Snakemake target)."""
    store = Path(store)
    cube = Cube.from_config(config)
    init_store(store, grid=cube.fine_grid, scenarios=config.product_scenarios,
               years=config.product_years, tile=STORE_TILE, legend=config.classes.legend)
    layout = {
        "store": store.name,
        "scenarios": config.product_scenarios,
        "years": config.product_years,
        "grid": cube.fine_grid.to_dict(),
        "chunk": [1, 1, STORE_TILE, STORE_TILE],
    }
    marker = store.with_name(store.name + ".layout.json")
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


def read_prior(path: Path, grid: Grid) -> np.ndarray:
    """The class codes of a previous job's COG; GridError if it is on another grid."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(f"{path}: prior map not found (run the previous year of the chain)")
    try:
        with rasterio.open(path) as src:
            crs = src.crs.to_string() if src.crs else "unknown CRS"
            found = Grid.from_transform(src.transform, width=src.width, height=src.height,
                                        crs=crs)
            grid.require_same(found, what=f"prior map {path}")
            if src.count != 1 or src.dtypes[0] != "uint8":
                raise InputDataError(f"{path}: prior map must be one uint8 band of class codes")
            return src.read(1)
    except rasterio.errors.RasterioIOError as exc:
        raise InputDataError(f"{path}: cannot read prior map ({exc})") from None


def _check_year(cube: Cube, scenario: str, year: int) -> None:
    years = cube.coarse_years(scenario)
    if year not in years:
        held = f"{years[0]}-{years[-1]}" if years else "no years"
        raise InputDataError(
            f"{cube.paths.coarse(scenario)}: scenario {scenario!r} has no coarse data for "
            f"year {year} (holds {held})"
        )


def _fractions(codes: np.ndarray, valid: np.ndarray, classes: list[int]) -> dict[str, float]:
    total = max(int(valid.sum()), 1)
    values = codes[valid]
    return {str(c): round(float((values == c).sum()) / total, 6) for c in classes}


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

    Returns the report (also written as JSON beside ``output``).
    """
    from ai4land.models.card import check_inputs, code_version, load_model

    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    output, store, model_dir = Path(output), Path(store), Path(model_dir)
    direction = chain_direction(scenario)
    cube = Cube.from_config(config)
    grid = cube.fine_grid
    full = Window(0, 0, grid.height, grid.width)
    factor = cube.factor
    _check_year(cube, scenario, year)

    model, card = load_model(model_dir)
    predicted = list(config.classes.predicted)
    check_inputs(card, input_channel_names(cube, predicted))
    classes = [int(c) for c in card.classes]
    groups = class_groups(config.datasets.coarse.groups, classes)
    missing = sorted({c for g in groups.classes for c in g} - set(classes))
    if missing:
        raise ModelCardError(f"{model_dir}: the model does not predict classes {missing} "
                             "named in datasets.coarse.groups")

    anchor = anchor_year(cube, direction)
    if prior_path is None:
        prior = cube.target_window(anchor, full)
        prior_source = f"observed {anchor}"
    else:
        prior = read_prior(Path(prior_path), grid)
        prior_source = Path(prior_path).name
    timings["load"] = time.perf_counter() - t_start

    # --- inference -------------------------------------------------------------------
    t0 = time.perf_counter()
    device = resolve_device(config.predict.device)
    probs, n_windows = year_probabilities(
        config, cube=cube, model=model, scenario=scenario, year=year, prior=prior,
        direction=direction, device=device, progress=progress,
    )
    if probs.shape[-1] != len(classes):
        raise ModelCardError(f"{model_dir}: model returns {probs.shape[-1]} classes, "
                             f"card lists {len(classes)}")
    timings["inference"] = time.perf_counter() - t0

    # --- masks, argmax, harmonisation ------------------------------------------------
    t0 = time.perf_counter()
    land = cube.land_mask_window(full)
    cells = cube.coarse_cells(scenario, year, full)
    n_frac = len(cube.coarse_variables)
    cell_nodata = np.isnan(cells[:n_frac]).all(axis=0)
    pixel_nodata = np.repeat(np.repeat(cell_nodata, factor, 0), factor, 1)[: grid.height,
                                                                          : grid.width]
    valid = land & ~pixel_nodata
    code_of = np.asarray(classes, dtype="uint8")

    argmax = np.where(valid, probs.argmax(axis=-1), -1)
    argmax_codes = np.where(valid, code_of[np.maximum(argmax, 0)], config.classes.nodata)
    argmax_codes = argmax_codes.astype("uint8")

    channel_names = cube.coarse_channel_names
    luh_t = luh_group_fractions(cells, channel_names, groups)
    anchor_scenario = cube.scenario_for_year(anchor, preferred=scenario)
    luh_anchor = luh_group_fractions(cube.coarse_cells(anchor_scenario, anchor, full),
                                     channel_names, groups)
    anchor_codes = cube.target_window(anchor, full)
    anchor_fractions, _ = map_group_fractions(anchor_codes, groups, factor=factor, valid=land)
    target = delta_target(anchor_fractions, luh_t, luh_anchor)

    def errors(codes: np.ndarray) -> dict:
        return {
            "delta_target": conservation_error(codes, groups, factor=factor, valid=valid,
                                               target=target),
            "luh": conservation_error(codes, groups, factor=factor, valid=valid, target=luh_t),
        }

    before = errors(argmax_codes)
    index, changed, rounds = argmax, 0, 0
    if config.predict.harmonize:
        result = harmonize(probs, classes, factor=factor, valid=valid, targets=target,
                           groups=groups)
        index, changed, rounds = result.index, result.changed, result.rounds
    codes = np.where(valid, code_of[np.maximum(index, 0)], config.classes.nodata)
    codes = np.where(land, codes, config.classes.ocean).astype("uint8")
    after = errors(codes)
    probability, entropy = probability_layers(probs, index)
    timings["harmonize"] = time.perf_counter() - t0

    # --- products --------------------------------------------------------------------
    t0 = time.perf_counter()
    model_hash = sha256_file(model_dir / "model.pt")
    tags = {
        "AI4LAND_SCENARIO": scenario,
        "AI4LAND_YEAR": int(year),
        "AI4LAND_DIRECTION": direction,
        "AI4LAND_PRIOR": prior_source,
        "AI4LAND_HARMONIZED": bool(config.predict.harmonize),
        "AI4LAND_CONFIG_HASH": config.hash(),
        "AI4LAND_MODEL_SHA256": model_hash,
        "AI4LAND_CODE_VERSION": code_version(),
    }
    init_store(store, grid=grid, scenarios=config.product_scenarios,
               years=config.product_years, tile=STORE_TILE, legend=config.classes.legend)
    write_year(store, scenario=scenario, year=year, codes=codes, probability=probability,
               entropy=entropy)
    write_probability_cogs(output, probability, entropy, grid, tags=tags)
    write_cog(output, codes, grid, legend=config.classes.legend, tags=tags)
    timings["write"] = time.perf_counter() - t0
    timings["total"] = time.perf_counter() - t_start

    prob_path, ent_path = probability_paths(output)
    dtype = autocast_dtype(device)
    report = {
        "scenario": scenario,
        "year": int(year),
        "direction": direction,
        "prior": prior_source,
        "anchor_year": anchor,
        "anchor_scenario": anchor_scenario,
        "harmonized": bool(config.predict.harmonize),
        "conservation": {"before": before, "after": after},
        "changed_pixels": int(changed),
        "harmonize_rounds": int(rounds),
        "class_fractions": _fractions(codes, valid, classes),
        "pixels": {"land": int(land.sum()), "valid": int(valid.sum()),
                   "nodata": int((land & ~valid).sum())},
        "windows": n_windows,
        "device": str(device),
        "autocast": str(dtype).removeprefix("torch.") if dtype is not None else "float32",
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "outputs": {"lulc": output.name, "probability": prob_path.name,
                    "entropy": ent_path.name, "store": str(store)},
        "config_hash": config.hash(),
        "model_sha256": model_hash,
    }
    with atomic_path(output.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    return report
