"""Static features: reproject/resample each configured layer onto the fine grid ->
``static.zarr``."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioIOError
from rasterio.warp import Resampling, calculate_default_transform, reproject, transform_bounds
from rasterio.windows import Window as RioWindow

from ai4land.config import stage_config
from ai4land.errors import ConfigError, InputDataError
from ai4land.grid import Grid
from ai4land.io.atomic import atomic_path
from ai4land.io.cube import LAND_MASK, TARGET_VARIABLE, TILE_CHUNK
from ai4land.io.rasters import (
    fill_values,
    is_netcdf,
    latlon_axes,
    mask_fill,
    netcdf_crs,
    open_netcdf,
    require_variable,
)
from ai4land.io.tiff import require_complete
from ai4land.prepare._common import (
    create_store,
    cube_paths,
    finish_store,
    gdal_env,
    latlon_coords,
    open_store,
    progress_bar,
    read_grids,
)

# A layer may leave at most this fraction of the region's land pixels without data.
COVERAGE_TOLERANCE = 1e-3
# Source pixels read beyond the destination footprint (resampling kernels need them).
SOURCE_MARGIN = 3
_FILL_ATTRIBUTES = ("_FillValue", "_Fillvalue", "missing_value", "fill_value")
_FILL_THRESHOLD = 1e19
# Fine rows warped at once: one chunk row, so a global-width strip (36000 columns) and the
# float64 slope arrays derived from it stay at tens of MB each.
STATIC_ROWS = TILE_CHUNK


def _wgs84_metres_per_degree(lat_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Length of one degree of latitude and of longitude (WGS84) at ``lat_deg``."""
    phi = np.radians(lat_deg)
    per_lat = 111132.954 - 559.822 * np.cos(2 * phi) + 1.175 * np.cos(4 * phi)
    per_lon = 111412.84 * np.cos(phi) - 93.5 * np.cos(3 * phi) + 0.118 * np.cos(5 * phi)
    return per_lat, per_lon


def slope_degrees(elevation: np.ndarray, *, lat: np.ndarray, res: float) -> np.ndarray:
    """Slope in degrees of an elevation grid (metres) on a north-up lat/lon grid.

    ``lat`` holds the row-centre latitudes; metres per degree follow WGS84, so east-west
    spacing shrinks with cos(latitude).
    """
    elevation = np.asarray(elevation, dtype="float64")
    per_lat, per_lon = _wgs84_metres_per_degree(np.asarray(lat, dtype="float64"))
    if elevation.shape[0] < 2 or elevation.shape[1] < 2:
        return np.zeros(elevation.shape, dtype="float32")
    # np.gradient along rows: d/drow; rows go south, so northing spacing is -res*per_lat.
    dz_drow, dz_dcol = np.gradient(elevation)
    dz_dy = dz_drow / (-res * per_lat)[:, None]
    dz_dx = dz_dcol / (res * np.maximum(per_lon, 1e-6))[:, None]
    return np.degrees(np.arctan(np.hypot(dz_dx, dz_dy))).astype("float32")


def slope_name(layer_name: str) -> str:
    return "slope" if layer_name in ("elevation", "dem", "topography") else f"{layer_name}_slope"


def _window_transform(window: RioWindow, transform: Affine) -> Affine:
    return transform @ Affine.translation(window.col_off, window.row_off)


def _window_bounds(window: RioWindow, transform: Affine) -> tuple[float, float, float, float]:
    corner = _window_transform(window, transform)
    xs = [corner.c, corner.c + corner.a * window.width]
    ys = [corner.f, corner.f + corner.e * window.height]
    return min(xs), min(ys), max(xs), max(ys)


class LayerSource:
    """One static input opened for windowed reads: north-up transform, CRS, NaN for no data."""

    def __init__(self, layer):
        self.layer = layer
        self.path = str(layer.path)
        if not Path(self.path).is_file():
            raise InputDataError(f"{self.path}: static layer {layer.name!r} not found; "
                                 "run `ai4land download` (or demo-world) first")
        self._dataset = None
        self._raster = None
        if is_netcdf(self.path):
            self._open_netcdf()
        else:
            self._open_raster()

    # NetCDF: lat/lon (or projected x/y with a grid_mapping) in any row order.
    def _open_netcdf(self) -> None:
        layer = self.layer
        ds = open_netcdf(self.path)
        self._dataset = ds
        if not layer.variable:
            candidates = [v for v in ds.data_vars if ds[v].ndim >= 2]
            if len(candidates) != 1:
                raise ConfigError(f"datasets.static[{layer.name}]: {self.path} holds several "
                                  f"variables {candidates}; set `variable`")
            name = str(candidates[0])
        else:
            name = layer.variable
        var = require_variable(ds, name, path=self.path)
        self.variable = name
        try:
            self.crs = CRS.from_user_input(netcdf_crs(ds, var))
        except CRSError as exc:
            raise InputDataError(
                f"{self.path}: variable {name!r} has an unreadable grid_mapping ({exc})"
            ) from None
        self._axes = latlon_axes(var, path=self.path, crs=self.crs.to_string(),
                                 geographic=self.crs.is_geographic)
        extra = [d for d in var.dims if d not in (self._axes.lat_dim, self._axes.lon_dim)]
        for dim in extra:
            if var.sizes[dim] != 1:
                raise InputDataError(
                    f"{self.path}: variable {name!r} has extra dimension {dim!r} "
                    f"of size {var.sizes[dim]}; a 2-D (lat, lon) field is expected"
                )
        self._var = var.isel({d: 0 for d in extra})
        self._fills = fill_values(var, _FILL_ATTRIBUTES)
        grid = self._axes.grid
        self.transform = grid.transform
        self.width, self.height = grid.width, grid.height
        self.units = var.attrs.get("units")

    def _open_raster(self) -> None:
        require_complete(self.path, what=f"static layer {self.layer.name!r}")
        try:
            src = rasterio.open(self.path)
        except RasterioIOError as exc:
            raise InputDataError(f"{self.path}: cannot be read as a raster ({exc})") from None
        self._raster = src
        self.variable = "band 1"
        if src.crs is None:
            raise InputDataError(f"{self.path}: band 1 has no CRS; assign one "
                                 "(gdal_edit.py -a_srs ...) before using it as a static layer")
        self.crs = src.crs
        self.transform = src.transform
        self.width, self.height = src.width, src.height
        self.units = src.units[0] if src.units and src.units[0] else None

    def close(self) -> None:
        if self._dataset is not None:
            self._dataset.close()
        if self._raster is not None:
            self._raster.close()

    def read(self, window: RioWindow) -> np.ndarray:
        row0, col0 = int(window.row_off), int(window.col_off)
        row1, col1 = row0 + int(window.height), col0 + int(window.width)
        if self._raster is not None:
            try:
                data = self._raster.read(1, window=window, masked=True, out_dtype="float32")
            except RasterioIOError as exc:
                raise InputDataError(
                    f"{self.path}: band 1 rows {row0}-{row1 - 1} cannot be decoded "
                    f"({exc.__cause__ or exc}); the file is damaged, delete it and download it "
                    "again"
                ) from None
            values = np.ma.filled(data, np.nan).astype("float32")
            return mask_fill(values, [], _FILL_THRESHOLD)
        values = self._axes.take(self._var, slice(row0, row1), slice(col0, col1)).values
        return mask_fill(values, self._fills, _FILL_THRESHOLD)

    def window_for(self, bounds_4326: tuple[float, float, float, float]) -> RioWindow | None:
        """Source pixels needed for a destination box (EPSG:4326 bounds), with a margin."""
        try:
            bounds = transform_bounds("EPSG:4326", self.crs, *bounds_4326, densify_pts=21)
        except Exception:  # noqa: BLE001 - projection failure: fall back to the whole source
            bounds = None
        if bounds is None or not all(math.isfinite(b) for b in bounds):
            return RioWindow(0, 0, self.width, self.height)
        left, bottom, right, top = bounds
        inverse = ~self.transform
        corners = [inverse @ (x, y) for x in (left, right) for y in (bottom, top)]
        cols = [c for c, _ in corners]
        rows = [r for _, r in corners]
        col0 = max(math.floor(min(cols)) - SOURCE_MARGIN, 0)
        row0 = max(math.floor(min(rows)) - SOURCE_MARGIN, 0)
        col1 = min(math.ceil(max(cols)) + SOURCE_MARGIN, self.width)
        row1 = min(math.ceil(max(rows)) + SOURCE_MARGIN, self.height)
        if col1 <= col0 or row1 <= row0:
            return None
        return RioWindow(col0, row0, col1 - col0, row1 - row0)

    def resampling(self, grid: Grid) -> Resampling:
        """Bilinear/nearest, or average/mode when the source is finer than ``grid``."""
        window = self.window_for(grid.bounds)
        finer = False
        if window is not None:
            try:
                src_bounds = _window_bounds(window, self.transform)
                with warnings.catch_warnings():  # rasterio's own use of Affine `*`
                    warnings.simplefilter("ignore", PendingDeprecationWarning)
                    transform, _, _ = calculate_default_transform(
                        self.crs, "EPSG:4326", int(window.width), int(window.height), *src_bounds
                    )
                finer = abs(transform.a) < grid.res * 0.99
            except Exception:  # noqa: BLE001 - keep the default
                finer = False
        if self.layer.kind == "categorical":
            return Resampling.mode if finer else Resampling.nearest
        return Resampling.average if finer else Resampling.bilinear

    def warp(self, grid: Grid, row0: int, row1: int, resampling: Resampling) -> np.ndarray:
        """Rows ``row0:row1`` of ``grid`` filled from this source (float32, NaN = no data)."""
        dst_transform = grid.transform @ Affine.translation(0, row0)
        out = np.full((row1 - row0, grid.width), np.nan, dtype="float32")
        box = (grid.west, grid.north - row1 * grid.res, grid.east, grid.north - row0 * grid.res)
        window = self.window_for(box)
        if window is None:
            return out
        values = self.read(window)
        reproject(
            source=values,
            destination=out,
            src_transform=_window_transform(window, self.transform),
            src_crs=self.crs,
            src_nodata=np.nan,
            dst_transform=dst_transform,
            dst_crs="EPSG:4326",
            dst_nodata=np.nan,
            resampling=resampling,
        )
        return out


class _Stats:
    def __init__(self) -> None:
        self.total = 0.0
        self.total_sq = 0.0
        self.count = 0
        self.checked = 0
        self.missing = 0

    def add(self, values: np.ndarray, land: np.ndarray, checked: np.ndarray) -> None:
        """Accumulate stats over ``land``; count missing values over ``checked`` pixels."""
        self.checked += int(checked.sum())
        self.missing += int(np.isnan(values[checked]).sum())
        picked = values[land].astype("float64")
        finite = np.isfinite(picked)
        picked = picked[finite]
        self.total += float(picked.sum())
        self.total_sq += float(np.square(picked).sum())
        self.count += int(picked.size)

    def mean_std(self) -> tuple[float, float]:
        if self.count == 0:
            return 0.0, 1.0
        mean = self.total / self.count
        var = max(self.total_sq / self.count - mean * mean, 0.0)
        std = math.sqrt(var)
        return mean, (std if std > 1e-12 else 1.0)


def water_codes(config) -> list[int]:
    """Fine classes fed by the coarse water variable (inland water: static layers may lack data)."""
    water = config.datasets.coarse.water_variable
    return sorted({c for g in config.datasets.coarse.groups.values() if water in g.variables
                   for c in g.classes})


def _static_layout(sources: list[LayerSource], methods, *, fine,
                   names: list[str]) -> tuple[dict, list[tuple[str, LayerSource, str]]]:
    """The store's variables, and the layers to write: (variable, source, value or slope)."""
    chunks = (TILE_CHUNK, TILE_CHUNK)
    variables: dict = {}
    outputs: list[tuple[str, LayerSource, str]] = []  # (variable, source, what)
    for src, method in zip(sources, methods, strict=True):
        layer = src.layer
        variables[layer.name] = (("lat", "lon"), fine.shape, "float32", chunks, {
            "long_name": layer.name, "units": src.units or "unknown", "source": src.path,
            "source_variable": src.variable, "resampling": method.name,
        })
        outputs.append((layer.name, src, "value"))
        if layer.derive_slope:
            name = slope_name(layer.name)
            if name in variables or name in names:
                raise ConfigError(
                    f"datasets.static: derived layer {name!r} clashes with another layer"
                )
            variables[name] = (("lat", "lon"), fine.shape, "float32", chunks, {
                "long_name": f"slope of {layer.name}", "units": "degree", "source": src.path,
            })
            outputs.append((name, src, "slope"))
    variables[LAND_MASK] = (("lat", "lon"), fine.shape, "uint8", chunks, {
        "long_name": "land mask (1 = not ocean in any observed year)",
        "flag_values": [0, 1], "flag_meanings": "ocean land",
    })
    return variables, outputs


def _check_coverage(sources: list[LayerSource], stats: dict, fine) -> None:
    """InputDataError for a layer with no data on more than COVERAGE_TOLERANCE of the
    land-use pixels."""
    for src in sources:
        missing = stats[src.layer.name].missing
        land_total = stats[src.layer.name].checked
        if land_total and missing / land_total > COVERAGE_TOLERANCE:
            raise InputDataError(
                f"{src.path}: {src.variable} has no data on {missing} of {land_total} land "
                f"pixels ({100 * missing / land_total:.1f}%) of the region "
                f"{tuple(round(b, 4) for b in fine.bounds)}; use a source covering region.bbox"
            )


def prepare_static(config, *, progress: bool = True) -> Path:
    """Write ``static.zarr`` (one float32 variable per layer, slope, land_mask); return its path."""
    config = stage_config(config, "prepare_static")  # reads only its slice
    paths = cube_paths(config)
    fine, _, _ = read_grids(config)
    lulc = open_store(paths.target)[TARGET_VARIABLE]
    if (lulc.sizes["lat"], lulc.sizes["lon"]) != fine.shape:
        raise InputDataError(f"{paths.target}: shape does not match {paths.grids}; "
                             "rerun `ai4land prepare target`")
    ocean = config.classes.ocean
    no_land_use = [ocean, config.classes.nodata, *water_codes(config)]

    names = [layer.name for layer in config.datasets.static]
    if len(set(names)) != len(names):
        raise ConfigError(f"datasets.static lists a layer name twice: {names}")
    sources: list[LayerSource] = []
    try:
        for layer in config.datasets.static:
            sources.append(LayerSource(layer))
        methods = [src.resampling(fine) for src in sources]

        variables, outputs = _static_layout(sources, methods, fine=fine, names=names)
        stats = {name: _Stats() for name, _, _ in outputs}

        with gdal_env(), atomic_path(paths.static) as tmp:
            group = create_store(tmp, variables, coords=latlon_coords(fine),
                                 attrs={"title": "ai4land static features", "Conventions": "CF-1.8",
                                        "crs": "EPSG:4326"})
            strips = range(0, fine.height, STATIC_ROWS)
            for row0 in progress_bar(strips, desc="static layers", enabled=progress):
                row1 = min(row0 + STATIC_ROWS, fine.height)
                land = np.zeros((row1 - row0, fine.width), dtype=bool)
                checked = np.zeros((row1 - row0, fine.width), dtype=bool)
                for index in range(lulc.sizes["year"]):
                    codes = np.asarray(lulc.isel(year=index, lat=slice(row0, row1)).values)
                    land |= codes != ocean
                    checked |= ~np.isin(codes, no_land_use)
                # Coverage is checked on pixels of a land-use class in some year (soil maps
                # skip lakes and ice, which are water or no data in the fine maps).
                group[LAND_MASK][row0:row1, :] = land.astype("uint8")
                for src, method in zip(sources, methods, strict=True):
                    if src.layer.derive_slope:
                        top, bottom = max(row0 - 1, 0), min(row1 + 1, fine.height)
                        wide = src.warp(fine, top, bottom, method)
                        values = wide[row0 - top : row0 - top + (row1 - row0)]
                        slope = slope_degrees(wide, lat=fine.lat[top:bottom], res=fine.res)
                        slope = slope[row0 - top : row0 - top + (row1 - row0)]
                        name = slope_name(src.layer.name)
                        group[name][row0:row1, :] = slope
                        stats[name].add(slope, land, checked)
                    else:
                        values = src.warp(fine, row0, row1, method)
                    group[src.layer.name][row0:row1, :] = values
                    stats[src.layer.name].add(values, land, checked)

            _check_coverage(sources, stats, fine)
            for name, _, _ in outputs:
                mean, std = stats[name].mean_std()
                group[name].attrs.update({"mean": mean, "std": std})
            finish_store(tmp)
    finally:
        for src in sources:
            src.close()
    return paths.static
