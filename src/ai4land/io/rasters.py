"""Reading gridded inputs (NetCDF and GeoTIFF) with their CRS, fill values and orientation.

Inputs arrive in many shapes: latitude running north or south, longitude 0..360 or
-180..180, fill values under misspelled attributes (LUH2's ``_Fillvalue``), time as
"years since 850-01-01" (which cftime cannot decode), CRS in the file or only implied by
lat/lon coordinates. Everything that copes with these lives here so that the stages
see one north-up, -180..180, NaN-masked picture.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr
from affine import Affine

from ai4land.errors import GridError, InputDataError
from ai4land.grid import Grid

LAT_NAMES = ("lat", "latitude", "y", "nav_lat")
LON_NAMES = ("lon", "longitude", "x", "nav_lon")
TIME_NAMES = ("time", "year", "years", "t")
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5")

_YEARS_SINCE = re.compile(
    r"^\s*(?:common_)?years?\s+since\s+(-?\d{1,5})(?:-(\d{1,2})(?:-(\d{1,2}))?)?", re.IGNORECASE
)


def is_netcdf(path: str | Path) -> bool:
    return Path(path).suffix.lower() in NETCDF_SUFFIXES


def open_netcdf(path: str | Path, *, chunks: dict | None = None) -> xr.Dataset:
    """Open a NetCDF lazily without decoding times (units like 'years since 850' break cftime)."""
    path = Path(path)
    if not path.is_file():
        raise InputDataError(
            f"{path}: file not found; run `ai4land download` (or demo-world) first"
        )
    last: Exception | None = None
    for engine in ("netcdf4", "h5netcdf"):
        try:
            return xr.open_dataset(path, engine=engine, decode_times=False, chunks=chunks)
        except (OSError, ValueError, ImportError) as exc:  # try the next engine
            last = exc
    raise InputDataError(f"{path}: cannot be read as NetCDF ({last}); re-download the file")


def find_coord(ds: xr.Dataset | xr.DataArray, names: Sequence[str], *, what: str, path) -> str:
    for name in ds.dims:
        if str(name).lower() in names:
            return str(name)
    for name in ds.coords:
        if str(name).lower() in names and ds[name].ndim == 1:
            return str(ds[name].dims[0])
    raise InputDataError(
        f"{path}: no {what} dimension (looked for {', '.join(names)}; found {list(ds.dims)})"
    )


def require_variable(ds: xr.Dataset, name: str, *, path) -> xr.DataArray:
    if name not in ds.variables:
        shown = ", ".join(sorted(str(v) for v in ds.data_vars))
        raise InputDataError(
            f"{path}: variable {name!r} not found (file holds: {shown}); fix the variable "
            "name in the config"
        )
    return ds[name]


def fill_values(var: xr.DataArray, attributes: Sequence[str]) -> list[float]:
    """Fill values declared under any of ``attributes`` in attrs or (decoded) encoding."""
    values: list[float] = []
    for source in (var.attrs, var.encoding):
        for name in attributes:
            if name in source and source[name] is not None:
                for value in np.atleast_1d(np.asarray(source[name], dtype="float64")):
                    if not math.isnan(value):
                        values.append(float(value))
    return values


def mask_fill(values: np.ndarray, fills: Sequence[float], threshold: float | None) -> np.ndarray:
    """float32 copy of ``values`` with fill values (and |v| >= threshold) set to NaN."""
    out = np.asarray(values, dtype="float32").copy()
    bad = np.zeros(out.shape, dtype=bool)
    for fill in fills:
        bad |= np.isclose(out, np.float32(fill), rtol=1e-6, atol=0)
    if threshold is not None:
        with np.errstate(invalid="ignore"):
            bad |= np.abs(out) >= threshold
    out[bad] = np.nan
    return out


def decode_years(ds: xr.Dataset, *, path, units: str | None = None) -> tuple[str, np.ndarray]:
    """The time dimension name and its integer calendar years.

    Handles "years since YYYY[-MM-DD]" itself (values must be whole years from Jan 1),
    "year(s)" (the values are calendar years), and CF "days/hours since" units via
    cftime. A time variable without a ``units`` attribute is read with ``units`` (the
    config's ``datasets.coarse.time_units``); without those it is an error, since its
    values could as well count years since any start.
    """
    dim = find_coord(ds, TIME_NAMES, what="time", path=path)
    if dim not in ds.variables:
        raise InputDataError(f"{path}: time dimension {dim!r} has no coordinate values")
    var = ds[dim]
    raw = np.asarray(var.values, dtype="float64")
    declared = str(var.attrs.get("units", "")).strip()
    if not declared and not units:
        shown = f"{raw[0]:g}..{raw[-1]:g}" if raw.size else "none"
        raise InputDataError(
            f"{path}: variable {dim!r} has no 'units' attribute (values {shown}), so they "
            "could be calendar years or years since any start; set "
            "datasets.coarse.time_units (e.g. 'years since 2015-01-01', or 'year' for "
            "calendar years) or add the units to the file"
        )
    units = declared or str(units).strip()
    match = _YEARS_SINCE.match(units)
    if match:
        start, month, day = match.group(1), match.group(2), match.group(3)
        if (month and int(month) != 1) or (day and int(day) != 1):
            raise InputDataError(
                f"{path}: variable {dim!r} has units {units!r}; only 'years since YYYY-01-01' "
                "can be read as whole calendar years"
            )
        years = int(start) + raw
    elif units.lower() in ("year", "years", "yr", "a", "1"):
        years = raw
    elif "since" in units:
        try:
            import cftime

            calendar = str(var.attrs.get("calendar", "standard"))
            dates = cftime.num2date(raw, units, calendar=calendar)
            years = np.array([d.year for d in np.atleast_1d(dates)], dtype="float64")
        except Exception as exc:  # noqa: BLE001 - any decoding failure is a bad input
            raise InputDataError(
                f"{path}: variable {dim!r} has undecodable units {units!r} ({exc})"
            ) from None
    else:
        raise InputDataError(f"{path}: variable {dim!r} has unknown time units {units!r}")
    if not np.allclose(years, np.round(years), atol=1e-6):
        raise InputDataError(
            f"{path}: variable {dim!r} ({units}) does not fall on whole years; "
            "annual data are expected"
        )
    years = np.round(years).astype("int64")
    if len(np.unique(years)) != len(years):
        raise InputDataError(f"{path}: variable {dim!r} repeats a year")
    return dim, years


@dataclass(frozen=True)
class LatLonAxes:
    """Index arrays that put a lat/lon file in north-up, -180..180 order."""

    lat_dim: str
    lon_dim: str
    lat_index: np.ndarray  # file row for each north-up row
    lon_index: np.ndarray  # file column for each west-to-east column
    grid: Grid

    def take(
        self, var: xr.DataArray, rows: slice = slice(None), cols: slice = slice(None)
    ) -> xr.DataArray:
        """Lazily select north-up rows/cols of ``var`` (a contiguous run where possible)."""
        return var.isel({self.lat_dim: _as_indexer(self.lat_index[rows]),
                         self.lon_dim: _as_indexer(self.lon_index[cols])})


def _as_indexer(index: np.ndarray):
    """A slice for a contiguous run of indices (either direction), else the index array."""
    if index.size > 1:
        step = np.diff(index)
        if np.all(step == 1):
            return slice(int(index[0]), int(index[-1]) + 1)
        if np.all(step == -1):
            stop = int(index[-1]) - 1
            return slice(int(index[0]), stop if stop >= 0 else None, -1)
    if index.size == 1:
        return slice(int(index[0]), int(index[0]) + 1)
    return index


def latlon_axes(ds: xr.Dataset | xr.DataArray, *, path, crs: str = "EPSG:4326",
                geographic: bool = True) -> LatLonAxes:
    """North-up, -180..180 ordering of a regular lat/lon grid, whichever way the file runs.

    With ``geographic=False`` (projected x/y) only the row order is normalised.
    """
    lat_dim = find_coord(ds, LAT_NAMES, what="latitude", path=path)
    lon_dim = find_coord(ds, LON_NAMES, what="longitude", path=path)
    lat = np.asarray(ds[lat_dim].values, dtype="float64")
    lon = np.asarray(ds[lon_dim].values, dtype="float64")
    if geographic and lon.max() > 180.0 + 1e-9:
        lon = np.where(lon >= 180.0 - 1e-9, lon - 360.0, lon)
    lat_index = np.argsort(-lat, kind="stable")
    lon_index = np.argsort(lon, kind="stable")
    try:
        grid = Grid.from_coords(lat=lat[lat_index], lon=lon[lon_index], crs=crs)
    except GridError as exc:
        raise GridError(f"{path}: {exc}") from None
    if not np.allclose(np.diff(lat[lat_index]), -grid.res, atol=grid.res * 1e-3):
        raise GridError(f"{path}: latitude is not regularly spaced")
    return LatLonAxes(lat_dim, lon_dim, lat_index, lon_index, grid)


def netcdf_crs(ds: xr.Dataset, var: xr.DataArray) -> str:
    """CRS of a NetCDF variable: its grid_mapping's WKT if declared, else EPSG:4326."""
    mapping = var.attrs.get("grid_mapping") or var.encoding.get("grid_mapping")
    if mapping and mapping in ds.variables:
        attrs = ds[mapping].attrs
        for key in ("crs_wkt", "spatial_ref"):
            if attrs.get(key):
                return str(attrs[key])
    return "EPSG:4326"


def grid_window(outer: Grid, inner_bounds: tuple[float, float, float, float], *, margin: int = 0):
    """(row0, row1, col0, col1) of ``outer`` covering ``inner_bounds``, plus a margin, clipped."""
    west, south, east, north = inner_bounds
    col0 = math.floor((west - outer.west) / outer.res) - margin
    col1 = math.ceil((east - outer.west) / outer.res) + margin
    row0 = math.floor((outer.north - north) / outer.res) - margin
    row1 = math.ceil((outer.north - south) / outer.res) + margin
    return (max(row0, 0), min(row1, outer.height), max(col0, 0), min(col1, outer.width))


def affine_of(grid: Grid, row0: int = 0, col0: int = 0) -> Affine:
    return grid.transform @ Affine.translation(col0, row0)


@contextmanager
def open_class_map(path: Path, *, hint: str = "") -> Iterator[tuple]:
    """An open class-map GeoTIFF (a prior map) and the grid it is on; one-line errors when
    it is missing or unreadable (``hint`` follows 'not found')."""
    import rasterio

    if not path.is_file():
        raise InputDataError(f"{path}: prior map not found{hint}")
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise InputDataError(f"{path}: cannot read prior map ({exc})") from None
    with src:
        crs = src.crs.to_string() if src.crs else "unknown CRS"
        yield src, Grid.from_transform(src.transform, width=src.width, height=src.height, crs=crs)


def require_class_codes(src, path: Path) -> None:
    """InputDataError unless the open raster is one uint8 band (class codes)."""
    if src.count != 1 or src.dtypes[0] != "uint8":
        raise InputDataError(f"{path}: prior map must be one uint8 band of class codes, "
                             f"got {src.count} band(s) of {src.dtypes[0]}")
