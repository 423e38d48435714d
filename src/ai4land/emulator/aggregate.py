"""Fine class maps to fractions on an Earth-system model's grid, in LUH layout.

The target grid is rectilinear in latitude/longitude: regular (a resolution and an
extent) or read from a grid file (its lat/lon coordinates, with ``lat_bnds``/``lon_bnds``
when present, else edges halfway between centres), so Gaussian grids work too.

Each fine pixel adds its area on the sphere to the target cells it overlaps: the
overlap is separable, (longitude overlap) x (overlap of sin(latitude)), so the area of
a pixel's share of a cell is exact for any pair of rectilinear grids: where cells nest
every pixel lies in one cell whole; elsewhere it is split by area. Pixel areas shrink
with cos(latitude), which the sin(latitude) overlap accounts for.

Output (:func:`aggregate_maps`), per year and target cell, as fractions of the part of
the cell the maps cover:

* one variable per class (``aggregate.class_names``), e.g. ``cropland``;
* one per plant functional type, ``pft_<name>``: each class's area shared out by
  ``aggregate.crosswalk``;
* ``ocean`` and ``nodata``: with the classes they sum to 1;
* ``coverage``: the share of the cell's area the maps cover;
* heterogeneity the coarse data cannot hold: ``class_entropy`` (Shannon entropy of the
  class fractions over land with data, divided by ln of the number of classes) and
  ``n_classes`` (classes present in the cell).

:func:`write_fractions` writes it as CF NetCDF in LUH layout: (time, lat, lon) float32
variables, fill value 1e20, ``time`` in "days since 1850-01-01" (Jan 1 of each year,
with bounds), lat/lon with bounds.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np
import xarray as xr

from ai4land.errors import GridError, InputDataError
from ai4land.grid import Grid

FILL = 1e20  # LUH2's fill value
TIME_UNITS = "days since 1850-01-01 00:00:00"
CALENDAR = "proleptic_gregorian"


@dataclass(frozen=True)
class TargetGrid:
    """A rectilinear lat/lon grid by its cell edges: ``lat_edges`` north to south,
    ``lon_edges`` west to east (degrees)."""

    lat_edges: np.ndarray
    lon_edges: np.ndarray

    @property
    def lat(self) -> np.ndarray:
        return (self.lat_edges[:-1] + self.lat_edges[1:]) / 2

    @property
    def lon(self) -> np.ndarray:
        return (self.lon_edges[:-1] + self.lon_edges[1:]) / 2

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.lat_edges) - 1, len(self.lon_edges) - 1

    @classmethod
    def regular(cls, res: float, bbox: tuple[float, float, float, float]) -> TargetGrid:
        """Cells of ``res`` degrees covering ``bbox`` (west, south, east, north), edges on
        multiples of ``res`` (as global grids have them)."""
        if not res > 0:
            raise InputDataError(f"grid resolution must be positive, got {res}")
        west, south, east, north = bbox
        if not (west < east and south < north):
            raise InputDataError(f"grid extent {list(bbox)} must be [west, south, east, north]")
        snap = 1e-6
        w, e = math.floor(west / res + snap), math.ceil(east / res - snap)
        s, n = math.floor(south / res + snap), math.ceil(north / res - snap)
        return cls(lat_edges=np.arange(n, s - 1, -1) * float(res),
                   lon_edges=np.arange(w, e + 1) * float(res))

    @classmethod
    def of(cls, grid: Grid) -> TargetGrid:
        return cls(lat_edges=grid.north - np.arange(grid.height + 1) * grid.res,
                   lon_edges=grid.west + np.arange(grid.width + 1) * grid.res)

    @classmethod
    def from_file(cls, path: str | Path) -> TargetGrid:
        """The lat/lon grid of a NetCDF file (e.g. one of the model's own outputs)."""
        from ai4land.io.rasters import LAT_NAMES, LON_NAMES, find_coord, open_netcdf

        path = Path(path)
        ds = open_netcdf(path)
        try:
            edges = []
            for names, what in ((LAT_NAMES, "latitude"), (LON_NAMES, "longitude")):
                dim = find_coord(ds, names, what=what, path=path)
                centres = np.asarray(ds[dim].values, dtype="float64")
                bounds = ds[dim].attrs.get("bounds")
                if bounds in ds.variables:
                    b = np.asarray(ds[bounds].values, dtype="float64")
                    edge = np.append(b[:, 0], b[-1, 1])
                elif centres.size >= 2:
                    mid = (centres[:-1] + centres[1:]) / 2
                    edge = np.concatenate([[2 * centres[0] - mid[0]], mid,
                                           [2 * centres[-1] - mid[-1]]])
                else:
                    raise InputDataError(f"{path}: {what} {dim!r} has one value and no bounds; "
                                         "a grid file needs cell bounds or two cells a side")
                edges.append(edge)
        finally:
            ds.close()
        lat, lon = edges
        if lat[0] < lat[-1]:
            lat = lat[::-1]
        if lon[0] > lon[-1]:
            lon = lon[::-1]
        if not (np.all(np.diff(lat) < 0) and np.all(np.diff(lon) > 0)):
            raise GridError(f"{path}: latitude and longitude must be monotonic")
        if lon.min() >= 180.0:  # a grid east of 180 in 0..360 longitudes
            lon = lon - 360.0
        return cls(lat_edges=np.clip(lat, -90.0, 90.0), lon_edges=lon)

    def to_dict(self) -> dict:
        return {"lat_edges": self.lat_edges.tolist(), "lon_edges": self.lon_edges.tolist()}


def target_grid(grid, *, maps_bounds: tuple[float, float, float, float]) -> TargetGrid:
    """A :class:`TargetGrid` from what a user gives: a TargetGrid, a :class:`Grid`, a
    grid file, a resolution (over the maps' extent), or ``{"res": r, "bbox": [...]}``."""
    if isinstance(grid, TargetGrid):
        return grid
    if isinstance(grid, Grid):
        return TargetGrid.of(grid)
    if isinstance(grid, str | Path):
        return TargetGrid.from_file(grid)
    if isinstance(grid, int | float):
        return TargetGrid.regular(float(grid), maps_bounds)
    if isinstance(grid, dict) and "res" in grid:
        return TargetGrid.regular(float(grid["res"]), tuple(grid.get("bbox") or maps_bounds))
    raise InputDataError(f"cannot make a target grid of {grid!r}; pass a resolution, "
                         "{'res': r, 'bbox': [w, s, e, n]}, a Grid or a grid file")


def _overlaps(src: np.ndarray, dst: np.ndarray,
              measure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR lists (pointers, target index, weight) of each source interval's overlap
    with the target intervals, both given by ascending edges; the weight of an overlap
    [a, b] is ``measure(b) - measure(a)``."""
    pointers, targets, weights = [0], [], []
    for i in range(len(src) - 1):
        lo, hi = src[i], src[i + 1]
        j0 = max(int(np.searchsorted(dst, lo, side="right")) - 1, 0)
        j1 = min(int(np.searchsorted(dst, hi, side="left")), len(dst) - 1)
        for j in range(j0, j1):
            a, b = max(lo, dst[j]), min(hi, dst[j + 1])
            if b - a > 1e-9 * (hi - lo):  # not a sliver of float rounding of the edges
                targets.append(j)
                weights.append(measure(b) - measure(a))
        pointers.append(len(targets))
    return (np.asarray(pointers, dtype="int64"), np.asarray(targets, dtype="int64"),
            np.asarray(weights, dtype="float64"))


@numba.njit(cache=True, nogil=True)
def _accumulate(codes, slot_of, row_ptr, row_dst, row_w, col_ptr, col_dst, col_w,
                acc):  # pragma: no cover - compiled
    height, width = codes.shape
    for i in range(height):
        for a in range(row_ptr[i], row_ptr[i + 1]):
            target_row, wy = row_dst[a], row_w[a]
            for j in range(width):
                slot = slot_of[codes[i, j]]
                for b in range(col_ptr[j], col_ptr[j + 1]):
                    acc[target_row, col_dst[b], slot] += wy * col_w[b]


def _class_types(classes_config, aggregate_config) -> tuple[list[int], list[str]]:
    codes = list(classes_config.predicted)
    return codes, [aggregate_config.class_names.get(c, f"class_{c}") for c in codes]


def _as_maps(maps) -> xr.DataArray:
    """``lulc`` (year, lat, lon) of a Dataset, DataArray or file written by emulate."""
    if isinstance(maps, str | Path):
        return read_maps([maps])
    if isinstance(maps, list | tuple):
        return read_maps(maps)
    if isinstance(maps, xr.Dataset):
        if "lulc" not in maps:
            raise InputDataError(f"maps hold no 'lulc' variable (have {list(maps.data_vars)})")
        maps = maps["lulc"]
    if "year" not in maps.dims:
        raise InputDataError("maps need a 'year' axis (as emulate writes them)")
    return maps.transpose("year", "lat", "lon")


def read_maps(paths) -> xr.DataArray:
    """Class maps from files: NetCDF/Zarr written by ``ai4land emulate`` (``lulc`` with a
    ``year`` axis), or class COGs (one year each, from their ``AI4LAND_YEAR`` tag)."""
    import rasterio

    arrays = []
    for path in map(Path, paths):
        if not path.exists():
            raise InputDataError(f"{path}: maps not found")
        if path.suffix.lower() in (".tif", ".tiff"):
            with rasterio.open(path) as src:
                year = src.tags().get("AI4LAND_YEAR")
                if year is None:
                    raise InputDataError(f"{path}: no AI4LAND_YEAR tag; pass maps written by "
                                         "ai4land predict or emulate")
                grid = Grid.from_transform(src.transform, width=src.width, height=src.height,
                                           crs=src.crs.to_string() if src.crs else "EPSG:4326")
                arrays.append(xr.DataArray(src.read(1)[None], dims=("year", "lat", "lon"),
                                           coords={"year": [int(year)], "lat": grid.lat,
                                                   "lon": grid.lon}))
        else:
            ds = (xr.open_zarr(path, chunks=None) if path.is_dir()
                  else xr.open_dataset(path, mask_and_scale=False))
            arrays.append(_as_maps(ds).load())
    maps = xr.concat(arrays, dim="year") if len(arrays) > 1 else arrays[0]
    return maps.sortby("year")


def aggregate_maps(maps, grid, *, classes, aggregate) -> xr.Dataset:
    """Fractions of ``maps`` (``lulc`` codes with year, lat, lon) on ``grid`` (see
    :func:`target_grid`), as described in the module's doc. ``classes``: the
    ``ClassesConfig`` (codes, ocean, nodata); ``aggregate``: the ``AggregateConfig``."""
    lulc = _as_maps(maps)
    fine = Grid.from_coords(lat=lulc["lat"].values, lon=lulc["lon"].values)
    target = target_grid(grid, maps_bounds=fine.bounds)
    codes, names = _class_types(classes, aggregate)
    k = len(codes)
    slot_of = np.full(256, k + 1, dtype="int64")  # unknown codes count as no data
    slot_of[codes] = np.arange(k)
    slot_of[classes.ocean] = k
    fine_lat = fine.north - np.arange(fine.height + 1) * fine.res
    fine_lon = fine.west + np.arange(fine.width + 1) * fine.res
    # rows run north to south: negated latitudes ascend with the same indices, and
    # sin(-lat) differences are the (unit-sphere) area per radian of longitude
    rows = _overlaps(-fine_lat, -target.lat_edges, lambda x: math.sin(math.radians(x)))
    cols = _overlaps(fine_lon, target.lon_edges, math.radians)
    if len(rows[1]) == 0 or len(cols[1]) == 0:
        raise GridError(f"the target grid does not overlap the maps' extent {list(fine.bounds)}")
    # the full cell areas (unit sphere), for the covered share
    cell_area = np.outer(np.abs(np.diff(np.sin(np.radians(target.lat_edges)))),
                         np.radians(np.diff(target.lon_edges)))
    shares = np.zeros((k, len(aggregate.pfts)))
    for i, code in enumerate(codes):
        for pft, share in aggregate.crosswalk.get(code, {}).items():
            shares[i, aggregate.pfts.index(pft)] = share

    years = [int(y) for y in lulc["year"].values]
    out = {name: [] for name in [*names, *(f"pft_{p}" for p in aggregate.pfts), "ocean",
                                 "nodata", "coverage", "class_entropy", "n_classes"]}
    for index in range(len(years)):
        values = np.ascontiguousarray(lulc.isel(year=index).values, dtype="uint8")
        acc = np.zeros((*target.shape, k + 2), dtype="float64")
        _accumulate(values, slot_of, *rows, *cols, acc)
        covered = acc.sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            fractions = acc / covered[..., None]
            land = fractions[..., :k].sum(axis=-1)
            class_share = fractions[..., :k] / land[..., None]
            terms = np.where(class_share > 0, class_share * np.log(class_share), 0.0)
            entropy = -terms.sum(axis=-1) / math.log(k) if k > 1 else np.zeros(target.shape)
        empty = covered <= 0
        no_land = empty | (land <= 0)
        for i, name in enumerate(names):
            out[name].append(np.where(empty, np.nan, fractions[..., i]))
        pft = fractions[..., :k] @ shares
        for i, name in enumerate(aggregate.pfts):
            out[f"pft_{name}"].append(np.where(empty, np.nan, pft[..., i]))
        out["ocean"].append(np.where(empty, np.nan, fractions[..., k]))
        out["nodata"].append(np.where(empty, np.nan, fractions[..., k + 1]))
        out["coverage"].append(np.minimum(covered / cell_area, 1.0))
        out["class_entropy"].append(np.where(no_land, np.nan, entropy))
        out["n_classes"].append(np.where(empty, np.nan,
                                         (acc[..., :k] > 0).sum(axis=-1).astype("float64")))

    long_names = {
        **{name: f"fraction of covered grid cell area: {classes.legend.get(c, name)}"
           for c, name in zip(codes, names, strict=True)},
        **{f"pft_{p}": f"fraction of covered grid cell area: plant functional type {p}"
           for p in aggregate.pfts},
        "ocean": "fraction of covered grid cell area: ocean",
        "nodata": "fraction of covered grid cell area: land without data",
        "coverage": "share of the grid cell area covered by the fine maps",
        "class_entropy": "Shannon entropy of the class fractions over land / ln(number of classes)",
        "n_classes": "number of classes present in the grid cell",
    }
    data = {name: (("time", "lat", "lon"), np.stack(arrays).astype("float32"),
                   {"long_name": long_names[name], "units": "1"})
            for name, arrays in out.items()}
    ds = xr.Dataset(data, coords=_coords(target, years))
    ds.attrs = {
        "title": "ai4land land-use fractions aggregated from fine maps (LUH layout)",
        "Conventions": "CF-1.8",
        "source": f"ai4land aggregate of {fine.width} x {fine.height} maps at {fine.res:g} degree",
        "class_types": json.dumps({str(c): n for c, n in zip(codes, names, strict=True)}),
        "pft_crosswalk": json.dumps({str(c): aggregate.crosswalk[c] for c in codes
                                     if c in aggregate.crosswalk}),
    }
    return ds


def _coords(target: TargetGrid, years: list[int]) -> dict:
    import cftime

    def days(year: int) -> float:
        return float(cftime.date2num(cftime.datetime(year, 1, 1, calendar=CALENDAR),
                                     TIME_UNITS, calendar=CALENDAR))

    time = [days(y) for y in years]
    bounds = [[days(y), days(y + 1)] for y in years]
    return {
        "time": ("time", np.asarray(time), {"standard_name": "time", "units": TIME_UNITS,
                                            "calendar": CALENDAR, "axis": "T",
                                            "bounds": "time_bnds"}),
        "time_bnds": (("time", "bnds"), np.asarray(bounds)),
        "year": ("time", np.asarray(years, dtype="int32"), {"long_name": "calendar year"}),
        "lat": ("lat", target.lat, {"standard_name": "latitude", "units": "degrees_north",
                                    "axis": "Y", "bounds": "lat_bnds"}),
        "lat_bnds": (("lat", "bnds"), np.stack([target.lat_edges[:-1], target.lat_edges[1:]], 1)),
        "lon": ("lon", target.lon, {"standard_name": "longitude", "units": "degrees_east",
                                    "axis": "X", "bounds": "lon_bnds"}),
        "lon_bnds": (("lon", "bnds"), np.stack([target.lon_edges[:-1], target.lon_edges[1:]], 1)),
    }


def write_fractions(ds: xr.Dataset, out: str | Path) -> Path:
    """``ds`` of :func:`aggregate_maps` as CF NetCDF (LUH layout), atomically."""
    from ai4land.io.atomic import atomic_path

    out = Path(out)
    if out.suffix.lower() != ".nc":
        raise InputDataError(f"{out}: fractions are written as NetCDF; name the output *.nc")
    encoding = {name: {"_FillValue": np.float32(FILL), "dtype": "float32", "zlib": True,
                       "complevel": 4} for name in ds.data_vars}
    encoding.update({name: {"_FillValue": None}
                     for name in ("time", "time_bnds", "lat", "lat_bnds", "lon", "lon_bnds")})
    with atomic_path(out) as tmp:
        ds.to_netcdf(tmp, encoding=encoding, format="NETCDF4")
    return out
