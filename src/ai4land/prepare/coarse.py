"""Coarse fractions: LUH-style NetCDF -> ``coarse/{scenario}.zarr`` at coarse resolution.

The file is opened lazily (dask) and read a block of years at a time. Fill values are
masked whatever attribute declares them (LUH2's ``_Fillvalue`` included), time is
decoded to calendar years here (cftime cannot read "years since 850-01-01"), lat/lon
are normalised to north-up and -180..180 and cut to the cube's coarse grid, and the
fractions are checked before anything is written.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from ai4land.config import stage_config
from ai4land.errors import ConfigError, GridError, InputDataError
from ai4land.grid import Grid
from ai4land.io.atomic import atomic_path
from ai4land.io.cube import TILE_CHUNK
from ai4land.io.rasters import (
    LatLonAxes,
    decode_years,
    fill_values,
    latlon_axes,
    mask_fill,
    open_netcdf,
    require_variable,
)
from ai4land.prepare._common import (
    create_store,
    cube_paths,
    finish_store,
    land_share,
    latlon_coords,
    progress_bar,
    read_grids,
)
from ai4land.prepare.static import water_codes

# Bytes of fractions held in memory at once (a block of years, all variables).
BLOCK_BYTES = 256 * 2**20
# A coarse cell must hold land-use data when at least this share of its fine pixels hold
# a land-use class (not ocean, water or no data) in some observed year, unless its water
# fraction is 1. Cells with fewer (coastlines the coarse data call ocean, islands) may lack
# them: predict keeps their pixels' observed classes.
LAND_CELL_SHARE = 0.5


def coarse_path(config, scenario: str) -> str:
    coarse = config.datasets.coarse
    if scenario == "historical":
        return coarse.historical
    if scenario not in coarse.scenarios:
        known = ", ".join(["historical", *coarse.scenarios])
        raise ConfigError(
            f"scenario {scenario!r} has no file under datasets.coarse.scenarios (known: {known})"
        )
    return coarse.scenarios[scenario]


def used_years(config) -> list[int]:
    return sorted(
        set(config.observed_years) | set(config.backward_years) | set(config.forward_years)
    )


def required_years(config, scenario: str) -> list[int]:
    return config.scenario_years(scenario)


def _cut(axes: LatLonAxes, grid: Grid, *, path) -> tuple[slice, slice]:
    """North-up row/col slices of ``axes`` that give exactly ``grid``."""
    try:
        sub, (row0, col0) = axes.grid.subset(grid.bounds)
        sub.require_same(grid, what=str(path))
    except GridError as exc:
        raise GridError(
            f"{path}: its grid {axes.grid.to_dict()} does not hold the cube's coarse grid "
            f"({exc}); rerun `ai4land prepare target` or fix region.bbox"
        ) from None
    return slice(row0, row0 + grid.height), slice(col0, col0 + grid.width)


def _read(axes: LatLonAxes, var: xr.DataArray, rows: slice, cols: slice, *, time_dim=None,
          time_index=None) -> np.ndarray:
    part = axes.take(var, rows, cols)
    if time_dim is not None:
        part = part.isel({time_dim: time_index}).transpose(time_dim, axes.lat_dim, axes.lon_dim)
    else:
        part = part.transpose(axes.lat_dim, axes.lon_dim)
    return np.asarray(part.values)


def _where(grid: Grid, years: list[int], index: tuple[int, ...]) -> str:
    *year_part, row, col = index
    year = f"year {years[year_part[0]]}, " if year_part else ""
    return f"{year}lat {grid.lat[row]:.4f}, lon {grid.lon[col]:.4f}"


def _check(values: np.ndarray, *, name: str, path, grid: Grid, years: list[int],
           land_cells: np.ndarray, tol: float) -> None:
    """Range and missing-on-land checks of one variable ((year,) lat, lon)."""
    with np.errstate(invalid="ignore"):
        bad = (values < -tol) | (values > 1 + tol)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise InputDataError(
            f"{path}: variable {name!r} is {float(values[index]):.6g} at "
            f"{_where(grid, years, index)}, outside [0, 1] (tolerance {tol}); it is not a "
            "fraction, check datasets.coarse.variables"
        )
    missing = np.isnan(values) & land_cells
    if missing.any():
        index = tuple(int(i) for i in np.argwhere(missing)[0])
        raise InputDataError(
            f"{path}: variable {name!r} is missing (fill value or NaN) at "
            f"{_where(grid, years, index)}, "
            f"a cell whose fine pixels are mostly land-use classes (>= {LAND_CELL_SHARE:.0%}, "
            "not ocean, water or no data); the coarse data must cover the land of region.bbox"
        )


def _years_kept(config, scenario: str, file_years, *, time_dim: str,
                path) -> tuple[list[int], list[int]]:
    """(indices in the file, calendar years) of the years the cube needs; InputDataError
    when the file lacks a year the scenario needs."""
    wanted = used_years(config)
    keep = [i for i, y in enumerate(file_years) if wanted[0] <= y <= wanted[-1]]
    years = [int(file_years[i]) for i in keep]
    missing = sorted(set(required_years(config, scenario)) - set(years))
    if missing:
        raise InputDataError(
            f"{path}: variable {time_dim!r} lacks year(s) {missing[0]}..{missing[-1]} "
            f"needed for scenario {scenario!r} (file holds {int(file_years.min())}-"
            f"{int(file_years.max())}); fix years.backward/forward/observed or the file"
        )
    if not years:
        raise InputDataError(
            f"{path}: variable {time_dim!r} holds no year in {wanted[0]}-{wanted[-1]} "
            f"(file holds {int(file_years.min())}-{int(file_years.max())})"
        )
    return keep, years


def _read_water(stack: ExitStack, coarse_cfg, ds, *, path, grid: Grid, years: list[int],
                land_cells: np.ndarray, tol: float) -> tuple[np.ndarray, dict]:
    """The (lat, lon) water fraction, from the static file (or the states file itself),
    checked and clipped to [0, 1]; and the variable's attributes."""
    water_name = coarse_cfg.water_variable
    water_path = coarse_cfg.static or path
    source = ds
    if coarse_cfg.static:
        source = open_netcdf(water_path)
        stack.callback(source.close)
    var = require_variable(source, water_name, path=water_path)
    water_axes = latlon_axes(source, path=water_path)
    water_rows, water_cols = _cut(water_axes, grid, path=water_path)
    extra = [d for d in var.dims if d not in (water_axes.lat_dim, water_axes.lon_dim)]
    if any(var.sizes[d] != 1 for d in extra):
        raise InputDataError(
            f"{water_path}: variable {water_name!r} must be 2-D (lat, lon), has dims {var.dims}"
        )
    var = var.isel({d: 0 for d in extra})
    water = mask_fill(_read(water_axes, var, water_rows, water_cols),
                      fill_values(var, coarse_cfg.fill_attributes), coarse_cfg.fill_threshold)
    _check(water, name=water_name, path=water_path, grid=grid, years=years,
           land_cells=land_cells, tol=tol)
    return np.clip(water, 0.0, 1.0), var.attrs


def _layout(coarse_cfg, variables: dict, *, scenario: str, path, grid: Grid, years: list[int],
            water_attrs: dict | None) -> tuple[dict, dict, dict]:
    """The store's variables, coordinates and attributes."""
    chunks = (1, TILE_CHUNK, TILE_CHUNK)
    store_vars: dict = {}
    for name, var in variables.items():
        store_vars[name] = (("year", "lat", "lon"), (len(years), *grid.shape), "float32", chunks, {
            "units": "1",
            "long_name": str(var.attrs.get("long_name", name)),
            "source_file": str(path),
            "source_variable": name,
        })
    if water_attrs is not None:
        water_name = coarse_cfg.water_variable
        store_vars[water_name] = (("lat", "lon"), grid.shape, "float32", chunks[1:], {
            "units": "1",
            "long_name": str(water_attrs.get("long_name", water_name)),
            "source_file": str(coarse_cfg.static or path),
            "source_variable": water_name,
        })
    coords = {"year": ("year", np.asarray(years, dtype="int64"), {"long_name": "calendar year"}),
              **latlon_coords(grid)}
    attrs = {
        "title": f"ai4land coarse land-use fractions ({scenario})",
        "Conventions": "CF-1.8",
        "scenario": scenario,
        "source": str(path),
        "crs": "EPSG:4326",
    }
    return store_vars, coords, attrs


@dataclass
class _Source:
    """The states file as read: its variables, axes and cut to the cube's grid."""

    path: object
    variables: dict
    fills: dict
    axes: LatLonAxes
    rows: slice
    cols: slice
    time_dim: str


def _write_block(group, source: _Source, coarse_cfg, *, start: int, index, block_years: list[int],
                 grid: Grid, land_cells: np.ndarray, water: np.ndarray | None,
                 tol: float) -> None:
    """Read, check and write the fractions of a block of years starting at ``start``;
    InputDataError where the fractions (and water) sum to more than 1."""
    total = np.zeros((len(block_years), *grid.shape), dtype="float64")
    for name, var in source.variables.items():
        values = mask_fill(
            _read(source.axes, var, source.rows, source.cols, time_dim=source.time_dim,
                  time_index=index),
            source.fills[name], coarse_cfg.fill_threshold,
        )
        _check(values, name=name, path=source.path, grid=grid, years=block_years,
               land_cells=land_cells[None], tol=tol)
        values = np.clip(values, 0.0, 1.0)
        total += np.nan_to_num(values)
        group[name][start:start + len(block_years)] = values
    if water is not None:
        total += np.nan_to_num(water)[None]
    over = total > 1 + tol
    if over.any():
        where = tuple(int(i) for i in np.argwhere(over)[0])
        water_names = [coarse_cfg.water_variable] if water is not None else []
        names = "+".join([*source.variables, *water_names])
        raise InputDataError(
            f"{source.path}: fractions {names} sum to {total[where]:.6f} > 1 at "
            f"{_where(grid, block_years, where)} (tolerance {tol}); "
            "check datasets.coarse.variables lists no overlapping states"
        )


def prepare_coarse(config, *, scenario: str, progress: bool = True) -> Path:
    """Write ``coarse/{scenario}.zarr`` (fractions per year + water); return its path."""
    config = stage_config(config, "prepare_coarse")  # reads only its slice
    coarse_cfg = config.datasets.coarse
    path = coarse_path(config, scenario)
    fine, grid, factor = read_grids(config)
    tol = coarse_cfg.fraction_tolerance

    with ExitStack() as stack:
        ds = open_netcdf(path, chunks={})
        stack.callback(ds.close)
        time_dim, file_years = decode_years(ds, path=path,
                                             units=coarse_cfg.time_units_of(scenario))
        variables = {name: require_variable(ds, name, path=path) for name in coarse_cfg.variables}
        axes = latlon_axes(ds, path=path)
        rows, cols = _cut(axes, grid, path=path)
        keep, years = _years_kept(config, scenario, file_years, time_dim=time_dim, path=path)

        # Coarse cells that are mostly land-use pixels in the fine maps (ocean, inland water
        # and no-data pixels need no land-use data: all-water or all-ice cells pass).
        classes = config.classes
        ignore = [classes.ocean, classes.nodata, *water_codes(config)]
        land_cells = land_share(config, fine, factor, ignore=ignore,
                                progress=progress) >= LAND_CELL_SHARE

        water = water_attrs = None
        if coarse_cfg.water_variable:
            water, water_attrs = _read_water(stack, coarse_cfg, ds, path=path, grid=grid,
                                             years=years, land_cells=land_cells, tol=tol)
            # A cell the water fraction fills (LUH2's ice sheets and large lakes) has no
            # land use whatever the fine maps call its pixels (ice may be sparse there).
            land_cells = land_cells & ~(water >= 1 - tol)

        store_vars, coords, attrs = _layout(coarse_cfg, variables, scenario=scenario, path=path,
                                            grid=grid, years=years, water_attrs=water_attrs)
        source = _Source(path=path, variables=variables, axes=axes, rows=rows, cols=cols,
                         time_dim=time_dim,
                         fills={name: fill_values(var, coarse_cfg.fill_attributes)
                                for name, var in variables.items()})
        per_year = len(variables) * grid.height * grid.width * 4
        block = max(1, BLOCK_BYTES // max(per_year, 1))

        out = cube_paths(config).coarse(scenario)
        with atomic_path(out) as tmp:
            group = create_store(tmp, store_vars, coords=coords, attrs=attrs)
            if water is not None:
                group[coarse_cfg.water_variable][:] = water
            starts = range(0, len(years), block)
            for start in progress_bar(starts, desc=f"coarse {scenario}", enabled=progress):
                stop = min(start + block, len(years))
                index = keep[start:stop]
                if index == list(range(index[0], index[-1] + 1)):
                    index = slice(index[0], index[-1] + 1)
                _write_block(group, source, coarse_cfg, start=start, index=index,
                             block_years=years[start:stop], grid=grid, land_cells=land_cells,
                             water=water, tol=tol)
            finish_store(tmp)
    return out
