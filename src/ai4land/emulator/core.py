"""The emulator on demand: a trained model applied to any LUH-format scenario, region and years.

``Emulator.from_model(model_dir)`` loads the weights and the model card once (a warm
model); ``predict(scenario, bbox=..., years=..., prior=...)`` returns an xarray Dataset
of the maps (``lulc``, ``probability``, ``entropy``), year by year
(:meth:`Emulator.iter_years` streams them one year at a time).

What it needs and where it finds it:

* the **config** the model was trained with: the model card carries it
  (``ModelCard.config``); ``config=`` overrides it (a ``Config`` or YAML path(s));
* the **static data** of the model (static features, land mask, the observed maps that
  anchor the chain and the harmonisation): the prepared cube (``paths.cube`` of that
  config). ``cube=`` names it; otherwise a relative ``paths.cube`` is looked for under
  the current directory, then under each parent of the model directory (a model in
  ``<run>/results/model`` finds ``<run>/resources/cube``);
* the **scenario**: coarse fractions in LUH format, a NetCDF file (or Zarr store) or an
  in-memory ``xarray.Dataset`` (what a coupled model holds), on the model's coarse grid
  (same resolution and cell edges; any extent covering the region). It must hold the
  coarse variables of the config (``datasets.coarse.variables``) for the years asked
  for; the water fraction (``water_variable``) is taken from it when it holds one,
  else from the cube (it is static). Its time axis needs units ("years since
  2015-01-01", CF "days since ..."); a unitless axis named ``year`` holds calendar
  years, any other unitless one is read with ``datasets.coarse.time_units``.

Each year goes through the product's own code path (:mod:`ai4land.predict`): the same
inputs (:func:`~ai4land.samples.features.build_inputs`), sliding windows and blending
(:func:`~ai4land.predict.probabilities.probability_bands`), and the same finalising:
harmonisation to the delta-method target, layers and report
(:class:`~ai4land.predict.finalise.Finaliser`), band by band with the working memory of a
predict job. The region is the bbox widened to whole coarse cells (harmonisation works
cell by cell), then cut back to the bbox's pixels; over the cube's whole extent the maps
equal ``ai4land predict``'s.

The chain: years after the first observed year run forward from the last observed year
before them (its observed map is the first prior and the delta method's anchor), years
before it run backward from the first observed year after them. Each later year's prior
is the previous (forward) or next (backward) predicted map. ``prior=`` replaces the
first prior (a GeoTIFF on the model's fine grid, an array of the bbox's shape, or a
DataArray with lat/lon). A model trained without the prior (card ``dropped_inputs``,
e.g. on single-year data) runs in single-year mode: each year on its own, anchored on
its nearest observed year (observed years included).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import xarray as xr

from ai4land.encoding import QUANT_NODATA, QUANT_SCALE, dequantise
from ai4land.errors import GridError, InputDataError, ModelCardError
from ai4land.grid import Grid, Window
from ai4land.io.cube import Cube
from ai4land.io.prefetch import Prefetch
from ai4land.io.rasters import (
    TIME_NAMES,
    decode_years,
    fill_values,
    find_coord,
    is_netcdf,
    latlon_axes,
    mask_fill,
    open_class_map,
    require_class_codes,
)
from ai4land.io.zarr_store import product_layers
from ai4land.predict.harmonize import class_groups, offset_weight

SCENARIO_NAME = "emulated"
LAYER_ATTRS = {
    "probability": "probability of the mapped class",
    "entropy": "class entropy / log(K): 0 certain, 1 uniform",
    "spread": "ensemble spread: std over members of the mapped class's probability",
}


def _resolve_config(card, config, *, source: Path):
    from ai4land.config import Config, load_config, parse_config

    if isinstance(config, Config):
        return config
    if config is not None:
        paths = [config] if isinstance(config, str | Path) else list(config)
        return load_config(*paths)
    if not card.config:
        raise ModelCardError(f"{source}: the model card holds no config (trained before cards "
                             "carried it); pass config= (the YAML the model was trained with)")
    return parse_config(card.config, source=f"{source} (config)")


def _find_cube(config, cube, model_dir: Path) -> Path:
    if cube is not None:
        root = Path(cube)
        if not (root / "grids.json").is_file():
            raise InputDataError(f"{root}: not a prepared cube (no grids.json); pass the "
                                 "resources/cube directory the model was trained on")
        return root
    configured = Path(config.paths.cube)
    candidates = ([configured] if configured.is_absolute() else
                  [Path.cwd() / configured,
                   *(parent / configured for parent in model_dir.resolve().parents)])
    for root in candidates:
        if (root / "grids.json").is_file():
            return root
    raise InputDataError(f"{configured}: the model's static data (prepared cube) not found "
                         f"under the current directory or above {model_dir}; pass cube=")


class Region:
    """The cube seen through a region of whole coarse cells: the reads the product's
    prediction functions make of a :class:`~ai4land.io.cube.Cube` (static features,
    land mask, observed maps), shifted to the region; coarse cells come from the
    year's scenario cells that the caller passes."""

    def __init__(self, cube: Cube, cells: Window):
        factor = cube.factor
        self._cube = cube
        self.cells = cells  # the region in coarse cells of the cube
        self.factor = factor
        self.offset = Window(cells.row * factor, cells.col * factor,
                             cells.height * factor, cells.width * factor)
        grid = cube.fine_grid
        self.fine_grid = Grid(west=grid.west + self.offset.col * grid.res,
                              north=grid.north - self.offset.row * grid.res, res=grid.res,
                              width=self.offset.width, height=self.offset.height, crs=grid.crs)
        coarse = cube.coarse_grid
        self.coarse_grid = Grid(west=coarse.west + cells.col * coarse.res,
                                north=coarse.north - cells.row * coarse.res, res=coarse.res,
                                width=cells.width, height=cells.height, crs=coarse.crs)
        self.coarse_variables = cube.coarse_variables
        self.water_variable = cube.water_variable
        self.coarse_channel_names = cube.coarse_channel_names
        self.static_names = cube.static_names
        self.paths = cube.paths

    def _shift(self, window: Window) -> Window:
        return Window(window.row + self.offset.row, window.col + self.offset.col,
                      window.height, window.width)

    @property
    def target_years(self) -> list[int]:
        return self._cube.target_years

    def static_window(self, window: Window) -> np.ndarray:
        return self._cube.static_window(self._shift(window))

    def land_mask_window(self, window: Window) -> np.ndarray:
        return self._cube.land_mask_window(self._shift(window))

    def target_window(self, year: int, window: Window) -> np.ndarray:
        return self._cube.target_window(year, self._shift(window))

    def cube_cells(self, year: int) -> np.ndarray:
        """The cube's coarse cells (variables + water) of the region for ``year``."""
        scenario = self._cube.scenario_for_year(year)
        return self._cube.coarse_cells(scenario, year, self.offset)

    def cube_water(self) -> np.ndarray:
        """The cube's water fraction (static) of the region's cells."""
        cube, name = self._cube, self.water_variable
        rows, cols = self.offset.coarse_slices(self.factor)
        for path in sorted((cube.paths.root / "coarse").glob("*.zarr")):
            ds = cube.coarse(path.stem)
            if name in ds.variables:
                return np.asarray(ds[name].isel(lat=rows, lon=cols).values, dtype="float32")
        raise InputDataError(f"{cube.paths.root / 'coarse'}: no coarse store holds the water "
                             f"fraction {name!r}; add it to the scenario")


class CoarseScenario:
    """Coarse fractions of a scenario (LUH layout) on the model's coarse grid, read a
    year and a region at a time: fill values masked (LUH2's ``_Fillvalue`` included),
    north-up, -180..180, checked to be fractions."""

    def __init__(self, source, *, config, coarse_grid: Grid, name: str | None = None):
        coarse = config.datasets.coarse
        self._own = None
        if isinstance(source, xr.Dataset):
            ds, self.label = source, name or "scenario dataset"
        else:
            path = Path(source)
            self.label = str(path)
            if path.is_dir() and (path.suffix == ".zarr" or (path / "zarr.json").exists()):
                ds = xr.open_zarr(path, chunks=None)
            elif path.is_file() and is_netcdf(path):
                from ai4land.io.rasters import open_netcdf

                ds = open_netcdf(path)
            elif not path.exists():
                raise InputDataError(f"{path}: scenario file not found")
            else:
                raise InputDataError(f"{path}: a scenario must be a NetCDF file (.nc) or a Zarr "
                                     "store of LUH-format coarse fractions")
            self._own = ds
        self.name = name or SCENARIO_NAME
        self.ds = ds
        missing = [v for v in coarse.variables if v not in ds.variables]
        if missing:
            held = ", ".join(sorted(str(v) for v in ds.data_vars)) or "none"
            raise InputDataError(f"{self.label}: variable(s) {', '.join(missing)} missing (the "
                                 f"model needs {', '.join(coarse.variables)}; it holds {held})")
        # a unitless axis named "year" holds calendar years (as the cube's own stores)
        dim = find_coord(ds, TIME_NAMES, what="time", path=self.label)
        units = "year" if dim.lower() == "year" else coarse.time_units_of(self.name)
        self.time_dim, years = decode_years(ds, path=self.label, units=units)
        self.years = [int(y) for y in years]
        self.axes = latlon_axes(ds, path=self.label)
        grid = self.axes.grid
        if abs(grid.res - coarse_grid.res) > 1e-6 * coarse_grid.res:
            raise GridError(
                f"{self.label}: its grid has {grid.res:g} degree cells, the model's "
                f"coarse grid {coarse_grid.res:g}; regrid the scenario (conservatively) "
                "to the model's coarse grid first"
            )
        for edge, offset in (("west", (grid.west - coarse_grid.west) / grid.res),
                             ("north", (coarse_grid.north - grid.north) / grid.res)):
            if abs(offset - round(offset)) > 1e-3:
                raise GridError(f"{self.label}: its cells' {edge} edges are offset by "
                                f"{offset - math.floor(offset):.3f} cells from the model's "
                                "coarse grid; regrid the scenario to the model's coarse grid")
        self.variables = list(coarse.variables)
        self.water = coarse.water_variable if coarse.water_variable in ds.variables else None
        self.fills = {v: fill_values(ds[v], coarse.fill_attributes)
                      for v in [*self.variables, *([self.water] if self.water else [])]}
        self.threshold = coarse.fill_threshold
        self.tolerance = coarse.fraction_tolerance

    def close(self) -> None:
        if self._own is not None:
            self._own.close()

    def _slices(self, region: Grid) -> tuple[slice, slice]:
        try:
            sub, (row0, col0) = self.axes.grid.subset(region.bounds)
        except GridError:
            raise GridError(f"{self.label}: covers {_fmt(self.axes.grid.bounds)}, not the "
                            f"region's coarse cells {_fmt(region.bounds)}; pass a bbox inside "
                            "the scenario or a scenario covering it") from None
        return slice(row0, row0 + region.height), slice(col0, col0 + region.width)

    def has_year(self, year: int) -> bool:
        return int(year) in self.years

    def cells(self, year: int, region: Grid, *, water: np.ndarray | None = None) -> np.ndarray:
        """(V [+ water], h, w) float32 of ``region`` (coarse cells) for ``year``, NaN
        where the scenario holds no data; ``water`` (h, w) is used when the scenario
        holds no water fraction."""
        if not self.has_year(year):
            raise InputDataError(f"{self.label}: no data for year {year} (holds "
                                 f"{_span(self.years)}); pass years inside it")
        rows, cols = self._slices(region)
        index = self.years.index(int(year))
        layers = []
        for name in [*self.variables, *([self.water] if self.water else [])]:
            var = self.axes.take(self.ds[name], rows, cols)
            if self.time_dim in var.dims:
                var = var.isel({self.time_dim: index})
            extra = [d for d in var.dims if d not in (self.axes.lat_dim, self.axes.lon_dim)]
            if any(var.sizes[d] != 1 for d in extra):
                raise InputDataError(f"{self.label}: variable {name!r} has dims {var.dims}; "
                                     "expected (time, lat, lon) or (lat, lon)")
            var = var.isel({d: 0 for d in extra}).transpose(self.axes.lat_dim, self.axes.lon_dim)
            values = mask_fill(np.asarray(var.values), self.fills[name], self.threshold)
            with np.errstate(invalid="ignore"):
                bad = (values < -self.tolerance) | (values > 1 + self.tolerance)
            if bad.any():
                r, c = (int(i) for i in np.argwhere(bad)[0])
                raise InputDataError(
                    f"{self.label}: variable {name!r} is {float(values[r, c]):.6g} in year "
                    f"{year} at lat {region.lat[r]:.4f}, lon {region.lon[c]:.4f}, outside "
                    f"[0, 1]; the scenario must hold fractions")
            layers.append(np.clip(values, 0.0, 1.0))
        if self.water is None and water is not None:
            layers.append(water)
        return np.stack(layers).astype("float32", copy=False)


def _fmt(bounds) -> str:
    return "[" + ", ".join(f"{b:g}" for b in bounds) + "]"


def _span(years: Sequence[int]) -> str:
    return f"{years[0]}-{years[-1]}" if years else "no years"


def chain_plan(years: Sequence[int], observed: Sequence[int]) -> tuple[list[int], int, int]:
    """(years in the order they run, direction, anchor year): forward from the last
    observed year before them, or backward (years before the first observed year)
    from the first observed year after them."""
    years = sorted({int(y) for y in years})
    if not years:
        raise InputDataError("no years to predict; pass years=(first, last)")
    if not observed:
        raise InputDataError("the model's cube holds no observed map to start a chain from")
    if years[-1] < min(observed):
        return years[::-1], -1, min(y for y in observed if y > years[-1])
    before = [y for y in observed if y < years[0]]
    if not before:
        raise InputDataError(f"years {_span(years)} start at or before the first observed year "
                             f"{min(observed)}; a forward chain needs an observed year before them")
    return years, 1, max(before)


def year_plan(years: Sequence[int], observed: Sequence[int], *,
              chained: bool) -> list[tuple[int, int, int]]:
    """(year, direction, anchor year) in the order the years run: one chain
    (:func:`chain_plan`) for a model with the prior; for a model without it (single-year
    mode), each year on its own, anchored on its nearest observed year (the earlier on
    a tie), observed years included."""
    if chained:
        order, direction, anchor = chain_plan(years, observed)
        return [(year, direction, anchor) for year in order]
    if not observed:
        raise InputDataError("the model's cube holds no observed map to anchor the years on")
    plan = []
    for year in sorted({int(y) for y in years}):
        anchor = min(observed, key=lambda a: (abs(a - year), a))
        plan.append((year, 1 if year >= anchor else -1, anchor))
    return plan


def _years(years) -> list[int]:
    """One year, a ``(first, last)`` tuple (inclusive), or a list of years."""
    if isinstance(years, int | np.integer):
        return [int(years)]
    if isinstance(years, tuple) and len(years) == 2:
        first, last = (int(y) for y in years)
        if first > last:
            raise InputDataError(f"years {years}: (first, last) needs first <= last")
        return list(range(first, last + 1))
    return [int(y) for y in years]


class Emulator:
    """A trained model, its config and its static data, ready to predict (warm)."""

    def __init__(self, *, model, card, config, cube: Cube, model_dir: Path, device=None):
        from ai4land.device import resolve_device
        from ai4land.models.card import CARD, check_inputs
        from ai4land.predict.inference import weights_digest
        from ai4land.samples.features import demand_groups_of, input_channel_names, smooth_of

        self.model, self.card, self.config, self.cube = model, card, config, cube
        self.model_dir = Path(model_dir)
        predicted = list(config.classes.predicted)
        groups = class_groups(config.datasets.coarse.groups, predicted)
        self.uses_demand = bool(demand_groups_of(card.input_channels))
        self.smooth = smooth_of(card.input_channels, groups)  # train.smooth_coarse
        try:
            check_inputs(card, input_channel_names(
                cube, predicted, demand=groups.names if self.uses_demand else (),
                smooth=self.smooth))
        except ModelCardError as exc:
            raise ModelCardError(f"{self.model_dir / CARD}: {exc} (cube {cube.paths.root}); "
                                 "pass the cube the model was trained on") from None
        self.classes = [int(c) for c in card.classes]
        if self.classes != predicted:
            raise ModelCardError(f"{self.model_dir / CARD}: classes {self.classes} differ from "
                                 f"classes.predicted {predicted} of the config")
        self.groups = class_groups(config.datasets.coarse.groups, self.classes)
        self.uses_prior = "prior" not in card.dropped_inputs
        self.device = resolve_device(device or config.predict.device, key="predict.device")
        self.layers = product_layers(spread=config.predict.ensemble.write_layer)
        self.model_hash = weights_digest(model)

    @classmethod
    def from_model(cls, model_dir: str | Path, *, config=None, cube: str | Path | None = None,
                   device: str | None = None) -> Emulator:
        """Load the model of ``model_dir`` (weights + card) and find its config and cube."""
        from ai4land.models.card import CARD, load_model
        from ai4land.predict.heap import share_one_heap

        share_one_heap()  # before any of the emulator's threads start
        model_dir = Path(model_dir)
        model, card = load_model(model_dir)
        config = _resolve_config(card, config, source=model_dir / CARD)
        root = _find_cube(config, cube, model_dir)
        coarse = config.datasets.coarse
        return cls(model=model, card=card, config=config, model_dir=model_dir, device=device,
                   cube=Cube(root, coarse_variables=coarse.variables,
                             water_variable=coarse.water_variable))

    # --- description -----------------------------------------------------------------

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(west, south, east, north) of the model's static data: bboxes must lie inside."""
        return self.cube.fine_grid.bounds

    def describe(self) -> dict:
        """What the model needs and covers (the service's ``/model``)."""
        coarse = self.config.datasets.coarse
        return {
            "model_weights_sha256": self.model_hash,
            "config_hash": self.config.hash(),
            "classes": {str(c): self.config.classes.legend[c] for c in self.classes},
            "extent": list(self.extent),
            "fine_resolution": self.cube.fine_grid.res,
            "coarse_grid": self.cube.coarse_grid.to_dict(),
            "scenario_variables": list(coarse.variables),
            "water_variable": coarse.water_variable,
            "observed_years": self.cube.target_years,
            "uses_prior": self.uses_prior,
        }

    # --- prediction ------------------------------------------------------------------

    def region(self, bbox) -> tuple[Region, Window]:
        """The whole-coarse-cell :class:`Region` holding ``bbox`` (west, south, east,
        north), and the bbox's pixels inside it."""
        fine = self.cube.fine_grid
        west, south, east, north = (float(v) for v in bbox)
        if not (west < east and south < north):
            raise InputDataError(f"bbox {_fmt(bbox)} must be [west, south, east, north] with "
                                 "west < east and south < north")
        try:
            sub, (row0, col0) = fine.subset((west, south, east, north))
        except GridError:
            raise GridError(f"bbox {_fmt(bbox)} reaches outside the model's static data "
                            f"{_fmt(fine.bounds)} (cube {self.cube.paths.root}); pass a bbox "
                            "inside it") from None
        factor = self.cube.factor
        cells = Window(row0 // factor, col0 // factor,
                       -(-(row0 + sub.height) // factor) - row0 // factor,
                       -(-(col0 + sub.width) // factor) - col0 // factor)
        region = Region(self.cube, cells)
        inner = Window(row0 - region.offset.row, col0 - region.offset.col, sub.height, sub.width)
        return region, inner

    def _first_prior(self, prior, region: Region, inner: Window, anchor: int) -> np.ndarray | None:
        """The region's first prior (uint8 codes): the observed anchor map, replaced by
        ``prior`` where it covers the region."""
        if not self.uses_prior:
            return None
        whole = Window(0, 0, *region.fine_grid.shape)
        codes = np.array(region.target_window(anchor, whole), dtype="uint8")
        if prior is None:
            return codes
        grid = region.fine_grid
        if isinstance(prior, str | Path):
            codes[...] = _read_prior_file(Path(prior), grid, fallback=codes)
        elif isinstance(prior, xr.DataArray):
            prior = prior.squeeze(drop=True)
            lat = next(d for d in prior.dims if str(d).lower().startswith("lat"))
            lon = next(d for d in prior.dims if str(d).lower().startswith("lon"))
            values = np.asarray(prior.reindex({lat: grid.lat, lon: grid.lon}, method="nearest",
                                              tolerance=grid.res / 4)
                                .transpose(lat, lon).values, dtype="float64")
            given = ~np.isnan(values)
            codes[given] = values[given].astype("uint8")
        else:
            array = np.asarray(prior)
            if array.shape != (inner.height, inner.width):
                raise InputDataError(f"prior array has shape {array.shape}, expected the bbox's "
                                     f"{(inner.height, inner.width)} (rows, columns)")
            codes[inner.slices] = array.astype("uint8")
        return codes

    def iter_years(self, scenario, *, bbox=None, years, prior=None, name: str | None = None,
                   progress: bool | None = False) -> Iterator[xr.Dataset]:
        """One Dataset per year (``lulc``, ``probability``, ``entropy`` on the bbox's
        pixels), in chain order; see :meth:`predict`."""
        config = self.config
        region, inner = self.region(bbox if bbox is not None else self.extent)
        if prior is not None and not self.uses_prior:
            raise InputDataError("the model was trained without the prior (model card "
                                 "dropped_inputs); predict without prior=")
        plan = year_plan(_years(years), self.cube.target_years, chained=self.uses_prior)
        source = scenario if isinstance(scenario, CoarseScenario) else CoarseScenario(
            scenario, config=config, coarse_grid=self.cube.coarse_grid, name=name)
        try:
            missing = [year for year, _, _ in plan if not source.has_year(year)]
            if missing:
                raise InputDataError(f"{source.label}: no data for year(s) {_span(missing)} "
                                     f"(holds {_span(source.years)}); pass years inside it")
            water = (region.cube_water() if source.water is None and self.cube.water_variable
                     else None)
            anchors: dict[int, np.ndarray] = {}
            current = self._first_prior(prior, region, inner, plan[0][2])
            for year, direction, anchor in plan:
                if anchor not in anchors:
                    anchors[anchor] = (source.cells(anchor, region.coarse_grid, water=water)
                                       if source.has_year(anchor) else region.cube_cells(anchor))
                cells = source.cells(year, region.coarse_grid, water=water)
                block, report = self._year(region, source.name, year, direction, anchor, cells,
                                           anchors[anchor], current, progress)
                if self.uses_prior:
                    current = block[..., 0]
                report.update(scenario=source.label, year=int(year), direction=direction,
                              anchor_year=anchor)
                yield self._dataset(block[inner.slices], region.fine_grid, inner, year, report)
        finally:
            if source is not scenario:
                source.close()

    def predict(self, scenario, *, bbox=None, years, prior=None, name: str | None = None,
                progress: bool | None = False) -> xr.Dataset:
        """The maps of ``years`` under ``scenario`` over ``bbox`` (default: the model's
        whole extent), as one Dataset with a ``year`` axis (in calendar order).

        ``scenario``: a LUH-format NetCDF file or Zarr store, or an ``xarray.Dataset``
        of coarse fractions; ``years``: one year, a ``(first, last)`` tuple (inclusive)
        or a list of years;
        ``prior``: the first prior map (see the module's doc). Layers: ``lulc`` (uint8
        class codes; ``classes.nodata`` on land without data, ``classes.ocean`` off
        land), ``probability`` and ``entropy`` (float32 in [0, 1], NaN off valid land;
        the product's values, stored back as its uint8 when written).
        """
        parts = list(self.iter_years(scenario, bbox=bbox, years=years, prior=prior, name=name,
                                     progress=progress))
        ds = xr.concat(parts, dim="year", combine_attrs="drop").sortby("year")
        ds.attrs = {k: v for k, v in parts[0].attrs.items() if k != "report"}
        ds.attrs["reports"] = json.dumps([json.loads(p.attrs["report"]) for p in parts])
        for name_ in ds.data_vars:
            ds[name_].encoding = parts[0][name_].encoding
        return ds

    def aggregate(self, maps, grid) -> xr.Dataset:
        """Fractions of ``maps`` (a Dataset of :meth:`predict`, or files written by
        ``emulate``) on ``grid`` (a resolution in degrees over the maps' extent,
        ``{"res": r, "bbox": [w, s, e, n]}``, a :class:`~ai4land.grid.Grid`, a
        :class:`~ai4land.emulator.aggregate.TargetGrid` or a grid file): one fraction per class
        and per plant functional type (the config's ``aggregate`` crosswalk), in LUH
        layout; see :mod:`ai4land.emulator.aggregate`."""
        from ai4land.emulator.aggregate import aggregate_maps

        return aggregate_maps(maps, grid, classes=self.config.classes,
                              aggregate=self.config.aggregate)

    def _year(self, region: Region, name: str, year: int, direction: int, anchor: int,
              cells: np.ndarray, anchor_cells: np.ndarray, prior: np.ndarray | None,
              progress) -> tuple[np.ndarray, dict]:
        """(h, w, layers) uint8 product layers of the region for ``year``, and its report,
        through the product's prediction and finalising."""
        from ai4land.predict.finalise import Finaliser
        from ai4land.predict.probabilities import probability_bands, rebands
        from ai4land.predict.run import band_rows, job_threads

        config = self.config
        grid = region.fine_grid
        weight = offset_weight(year, anchor, decay_years=config.predict.harmonize_decay_years)
        finalise = Finaliser(config, cube=region, anchor=anchor, classes=self.classes,
                              groups=self.groups, weight=weight, layers=self.layers,
                              cells=cells, anchor_cells=anchor_cells)
        workers = job_threads()
        out = np.empty((*grid.shape, len(self.layers)), dtype="uint8")
        with ExitStack() as stack:
            pool = ThreadPoolExecutor(workers, thread_name_prefix="ai4land-finalise")
            stack.callback(pool.shutdown, cancel_futures=True)
            stream, n_windows, n_skipped = probability_bands(
                config, cube=region, model=self.model, scenario=name, year=year,
                prior=None if prior is None else (lambda window: prior[window.slices]),
                direction=direction, device=self.device, progress=progress,
                coarse_cells=cells, streams=workers, skip_nodata=True,
                demand=finalise.demand(prior) if self.uses_demand else None,
                smooth=self.smooth)
            stack.callback(stream.close)
            bands = rebands(stream, multiple=region.factor, height=grid.height,
                            max_rows=band_rows(region.factor, grid.width, workers), parts=workers)
            futures = stack.enter_context(Prefetch(
                (pool.submit(finalise, row, band, 0,
                             None if prior is None else prior[row : row + len(band)])
                 for row, band in bands), depth=workers))
            for future in futures:
                row, block = finalise.collect(future.result())
                out[row : row + len(block)] = block
        report = finalise.report()
        report.update(windows=n_windows, windows_skipped=n_skipped,
                      harmonized=bool(config.predict.harmonize),
                      harmonize_offset_weight=weight)
        return out, report

    def _dataset(self, block: np.ndarray, region_grid: Grid, inner: Window, year: int,
                 report: dict) -> xr.Dataset:
        grid = Grid(west=region_grid.west + inner.col * region_grid.res,
                    north=region_grid.north - inner.row * region_grid.res, res=region_grid.res,
                    width=inner.width, height=inner.height, crs=region_grid.crs)
        classes = self.config.classes
        codes = sorted(classes.legend)
        data = {"lulc": (("lat", "lon"), np.ascontiguousarray(block[..., 0]), {
            "long_name": "land-use/land-cover class",
            "flag_values": np.asarray(codes, dtype="uint8"),
            "flag_meanings": " ".join(classes.legend[c].replace(" ", "_").replace("/", "_")
                                      for c in codes),
            "legend": json.dumps({str(c): classes.legend[c] for c in codes}),
        })}
        for i, layer in enumerate(self.layers[1:], start=1):
            data[layer] = (("lat", "lon"), dequantise(block[..., i]),
                           {"long_name": LAYER_ATTRS[layer], "units": "1"})
        ds = xr.Dataset(data, coords={
            "lat": ("lat", grid.lat, {"standard_name": "latitude", "units": "degrees_north"}),
            "lon": ("lon", grid.lon, {"standard_name": "longitude", "units": "degrees_east"}),
        })
        ds = ds.expand_dims(year=[int(year)])
        ds["lulc"].encoding = {"dtype": "uint8"}
        for layer in self.layers[1:]:
            ds[layer].encoding = {"dtype": "uint8", "scale_factor": 1.0 / QUANT_SCALE,
                                  "add_offset": 0.0, "_FillValue": QUANT_NODATA}
        ds.attrs = {
            "title": "ai4land emulated land-use/land-cover maps",
            "Conventions": "CF-1.8",
            "crs": grid.crs,
            "model_weights_sha256": self.model_hash,
            "config_hash": self.config.hash(),
            "harmonized": int(bool(self.config.predict.harmonize)),
            "grid": json.dumps(grid.to_dict()),
            "legend": json.dumps({str(c): classes.legend[c] for c in codes}),
            "report": json.dumps(report, sort_keys=True),
        }
        return ds


def _read_prior_file(path: Path, grid: Grid, *, fallback: np.ndarray) -> np.ndarray:
    """The part of a class-map GeoTIFF on ``grid`` (``fallback`` where it does not reach)."""
    import rasterio

    with open_class_map(path) as (src, found):
        require_class_codes(src, path)
        col = (grid.west - found.west) / found.res
        row = (found.north - grid.north) / found.res
        if (found.crs != grid.crs or abs(found.res - grid.res) > 1e-6 * grid.res
                or abs(col - round(col)) > 1e-3 or abs(row - round(row)) > 1e-3):
            raise GridError(f"{path}: prior map is on grid {found.to_dict()}, not on the model's "
                            f"fine grid ({grid.res:g} degree pixels aligned with {grid.to_dict()})")
        row, col = round(row), round(col)
        out = fallback.copy()
        r0, c0 = max(row, 0), max(col, 0)
        r1, c1 = min(row + grid.height, src.height), min(col + grid.width, src.width)
        if r1 > r0 and c1 > c0:
            out[r0 - row : r1 - row, c0 - col : c1 - col] = src.read(
                1, window=rasterio.windows.Window(c0, r0, c1 - c0, r1 - r0))
        return out


# --- writing ------------------------------------------------------------------------

MAP_FORMATS = {".nc": "netcdf", ".zarr": "zarr", ".tif": "cog", ".tiff": "cog"}


def map_format(out: str | Path) -> str:
    """The output format of ``out`` from its extension (:data:`MAP_FORMATS`)."""
    suffix = Path(out).suffix.lower()
    if suffix not in MAP_FORMATS:
        raise InputDataError(f"{out}: unknown output format {suffix or '(no extension)'!r}; "
                             "use .nc (NetCDF), .zarr (Zarr) or .tif (a COG per year)")
    return MAP_FORMATS[suffix]


def cog_paths(out: str | Path, year: int) -> Path:
    """The class COG of ``year`` for ``--out X.tif``: ``X_<year>.tif`` (its probability
    and entropy layers beside it, as the product's ``X_<year>_probability.tif``)."""
    out = Path(out)
    return out.with_name(f"{out.stem}_{int(year)}{out.suffix}")


def write_maps(datasets, out: str | Path) -> list[Path]:
    """Write the one-year Datasets of :meth:`Emulator.iter_years` as they come (one year
    in memory at a time): a NetCDF file or Zarr store with a ``year`` axis, or a COG per
    year (class map, probability, entropy) by ``out``'s extension. Each file appears
    whole (written to a temporary, then renamed); the years' reports are its
    ``reports`` attribute (a JSON list), as in :meth:`Emulator.predict`'s Dataset.
    Returns the paths written."""
    from ai4land.io.atomic import atomic_path

    out = Path(out)
    kind = map_format(out)
    if kind == "cog":
        return [path for ds in datasets for path in _write_cogs(ds, out)]
    with atomic_path(out) as tmp:
        writer = _write_netcdf if kind == "netcdf" else _write_zarr
        writer(datasets, tmp)
    return [out]


def _write_cogs(ds: xr.Dataset, out: Path) -> list[Path]:
    from ai4land.encoding import quantise
    from ai4land.io.cog import write_cog, write_probability_cogs

    year = int(ds["year"].values[0])
    grid = Grid.from_dict(json.loads(ds.attrs["grid"]))
    legend = {int(k): v for k, v in json.loads(ds.attrs["legend"]).items()}
    report = json.loads(ds.attrs["report"])
    tags = {"AI4LAND_SCENARIO": report["scenario"], "AI4LAND_YEAR": year,
            "AI4LAND_DIRECTION": report["direction"], "AI4LAND_ANCHOR_YEAR": report["anchor_year"],
            "AI4LAND_HARMONIZED": bool(ds.attrs["harmonized"]),
            "AI4LAND_CONFIG_HASH": ds.attrs["config_hash"],
            "AI4LAND_MODEL_WEIGHTS_SHA256": ds.attrs["model_weights_sha256"]}
    path = cog_paths(out, year)
    layers = [quantise(ds[name].values[0]) for name in ("probability", "entropy")]
    extra = write_probability_cogs(path, *layers, grid, tags=tags)
    write_cog(path, ds["lulc"].values[0], grid, legend=legend, tags=tags)
    return [path, *extra]


def _write_netcdf(datasets, path: Path) -> None:
    """A NetCDF4 file with an unlimited ``year`` axis, appended a year at a time; the
    layers stored as the product stores them (uint8; probability-like ones as
    round(x × 254) with scale_factor 1/254 and _FillValue 255)."""
    import netCDF4

    from ai4land.encoding import quantise

    reports: list[dict] = []
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        for i, ds in enumerate(datasets):
            if i == 0:
                nc.setncatts({k: v for k, v in ds.attrs.items() if k != "report"})
                nc.createDimension("year", None)
                for name in ("lat", "lon"):
                    nc.createDimension(name, ds.sizes[name])
                    var = nc.createVariable(name, "f8", (name,))
                    var.setncatts(ds[name].attrs)
                    var[:] = ds[name].values
                year = nc.createVariable("year", "i4", ("year",))
                year.setncatts({"long_name": "calendar year", "units": "year"})
                chunks = (1, min(256, ds.sizes["lat"]), min(256, ds.sizes["lon"]))
                for name in ds.data_vars:
                    encoding = ds[name].encoding
                    var = nc.createVariable(name, "u1", ("year", "lat", "lon"), zlib=True,
                                            complevel=4, chunksizes=chunks,
                                            fill_value=encoding.get("_FillValue", False))
                    var.set_auto_maskandscale(False)  # the stored bytes are written as such
                    attrs = dict(ds[name].attrs)
                    if "scale_factor" in encoding:
                        attrs.update(scale_factor=np.float32(encoding["scale_factor"]),
                                     add_offset=np.float32(0.0))
                    var.setncatts(attrs)
            nc["year"][i] = int(ds["year"].values[0])
            reports.append(json.loads(ds.attrs["report"]))
            nc.reports = json.dumps(reports)  # the years' prediction reports (JSON list)
            for name in ds.data_vars:
                values = ds[name].values[0]
                nc[name][i] = values if values.dtype == np.uint8 else quantise(values)


def _write_zarr(datasets, path: Path) -> None:
    """A Zarr store with a ``year`` axis, appended a year at a time."""
    import warnings

    import zarr

    reports: list[dict] = []
    for i, ds in enumerate(datasets):
        reports.append(json.loads(ds.attrs["report"]))
        ds.attrs = {k: v for k, v in ds.attrs.items() if k != "report"}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
            if i == 0:
                chunks = (1, min(256, ds.sizes["lat"]), min(256, ds.sizes["lon"]))
                encoding = {name: {**ds[name].encoding, "chunks": chunks}
                            for name in ("lulc", "probability", "entropy", "spread")
                            if name in ds}
                ds.to_zarr(path, mode="w", encoding=encoding, consolidated=True)
            else:
                ds.to_zarr(path, append_dim="year", consolidated=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        zarr.open_group(path, mode="r+").attrs["reports"] = json.dumps(reports)
        zarr.consolidate_metadata(path)
