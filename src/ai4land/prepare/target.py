"""Fine target maps: per-year categorical rasters -> ``target.zarr`` + ``grids.json``."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioIOError
from rasterio.windows import Window as RioWindow

from ai4land.config import stage_config
from ai4land.errors import ConfigError, GridError, InputDataError
from ai4land.grid import Grid
from ai4land.io.atomic import atomic_path
from ai4land.io.cube import TARGET_VARIABLE, TILE_CHUNK
from ai4land.io.rasters import latlon_axes, open_netcdf
from ai4land.io.tiff import require_complete
from ai4land.prepare._common import (
    STRIP_ROWS,
    create_store,
    cube_paths,
    finish_store,
    gdal_env,
    latlon_coords,
    progress_bar,
    write_grids,
)

_WGS84 = CRS.from_epsg(4326)


# --- locating the fine maps ------------------------------------------------------------


def fine_member(config, year: int) -> str:
    return config.datasets.fine.pattern.replace("{year}", str(year))


def fine_sources(config) -> dict[int, str]:
    """Year -> a path rasterio can open (``/vsizip/...`` inside the archive, or a plain file).

    Raises InputDataError listing every configured year whose map is missing.
    """
    fine = config.datasets.fine
    years = config.observed_years
    if fine.archive:
        archive = Path(fine.archive)
        if not archive.is_file():
            raise InputDataError(
                f"{archive}: fine-map archive not found; run `ai4land download` first"
            )
        try:
            with zipfile.ZipFile(archive) as zf:
                names = set(zf.namelist())
        except zipfile.BadZipFile:
            raise InputDataError(
                f"{archive}: is not a valid zip file; delete it and download again"
            ) from None
        found = {y: f"/vsizip/{archive.resolve()}/{fine_member(config, y)}" for y in years
                 if fine_member(config, y) in names}
        where = f"{archive} (members {fine.pattern})"
    else:
        found = {y: fine_member(config, y) for y in years if Path(fine_member(config, y)).is_file()}
        where = fine.pattern
    missing = [y for y in years if y not in found]
    if missing:
        raise InputDataError(
            f"{where}: no fine map for year(s) {_year_list(missing)}; "
            f"datasets.fine.years is {list(fine.years)}, shrink it or add the files"
        )
    return found


def _year_list(years: list[int]) -> str:
    runs: list[str] = []
    start = prev = years[0]
    for y in [*years[1:], None]:
        if y is not None and y == prev + 1:
            prev = y
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if y is not None:
            start = prev = y
    return ", ".join(runs)


def _open(path: str):
    """The fine map at ``path``, opened; a truncated file is refused whatever part is used."""
    require_complete(path, what="fine map")
    try:
        return rasterio.open(path)
    except RasterioIOError as exc:
        raise InputDataError(
            f"{path}: cannot be read as a raster ({exc}); re-download it"
        ) from None


def read_window(src, window: RioWindow, *, path: str) -> np.ndarray:
    """Band 1 of ``window``, decoded; one line naming the file and rows if a block is damaged."""
    try:
        return src.read(1, window=window)
    except RasterioIOError as exc:
        detail = exc.__cause__ or exc
        rows = f"{int(window.row_off)}-{int(window.row_off + window.height) - 1}"
        raise InputDataError(
            f"{path}: band 1 rows {rows} cannot be decoded ({detail}); the file is damaged, "
            "delete it and download it again"
        ) from None


def _fine_grid(src, path: str) -> Grid:
    if src.crs is None:
        raise InputDataError(f"{path}: has no CRS; fine maps must be in EPSG:4326 (lat/lon)")
    if not (src.crs == _WGS84 or src.crs.to_epsg(confidence_threshold=70) == 4326):
        raise InputDataError(
            f"{path}: CRS is {src.crs.to_string()}, fine maps must be in EPSG:4326; "
            "warp them with gdalwarp -t_srs EPSG:4326 first"
        )
    try:
        return Grid.from_transform(
            src.transform, width=src.width, height=src.height, crs="EPSG:4326"
        )
    except GridError as exc:
        raise GridError(f"{path}: {exc}") from None


def coarse_source_grid(config) -> Grid:
    """The full grid of the historical coarse file, north-up, lon -180..180."""
    path = config.datasets.coarse.historical
    with open_netcdf(path) as ds:
        return latlon_axes(ds, path=path).grid


def _snap_outward(bbox, grid: Grid) -> tuple[float, float, float, float]:
    west, south, east, north = bbox
    tol = 1e-6
    col0 = math.floor((west - grid.west) / grid.res + tol)
    col1 = math.ceil((east - grid.west) / grid.res - tol)
    row0 = math.floor((grid.north - north) / grid.res + tol)
    row1 = math.ceil((grid.north - south) / grid.res - tol)
    return (grid.west + col0 * grid.res, grid.north - row1 * grid.res,
            grid.west + col1 * grid.res, grid.north - row0 * grid.res)


def cube_grids(
    config, fine_full: Grid, *, fine_path: str
) -> tuple[Grid, Grid, int, tuple[int, int]]:
    """Fine grid of the cube, its coarse grid, the nest factor and the fine-file offset.

    The cube covers ``region.bbox`` (snapped outward to coarse cells) or the whole fine
    extent; either way it is a whole number of coarse cells of the historical file.
    """
    coarse_path = config.datasets.coarse.historical
    coarse_full = coarse_source_grid(config)
    offset = (0, 0)
    fine = fine_full
    if config.region.bbox is not None:
        bbox = _snap_outward(config.region.bbox, coarse_full)
        try:
            fine, offset = fine_full.subset(bbox)
        except GridError as exc:
            raise GridError(f"{fine_path}: {exc}") from None
    try:
        factor = fine.nest_factor(coarse_full)
    except GridError as exc:
        raise GridError(
            f"{fine_path} does not nest in the grid of {coarse_path}: {exc}; "
            "the fine maps must subdivide the coarse cells exactly"
        ) from None
    # Snap float32 rounding of the file transform onto the exact coarse subdivision.
    res = coarse_full.res / factor
    fine = Grid(
        west=coarse_full.west + round((fine.west - coarse_full.west) / res) * res,
        north=coarse_full.north - round((coarse_full.north - fine.north) / res) * res,
        res=res, width=fine.width, height=fine.height, crs="EPSG:4326",
    )
    if fine.width % factor or fine.height % factor:
        raise GridError(
            f"{fine_path}: the fine extent {tuple(round(b, 6) for b in fine.bounds)} "
            f"({fine.height} x {fine.width} pixels) is not a whole number of "
            f"{coarse_full.res} degree coarse cells ({factor} pixels each); "
            "set region.bbox to a region inside the maps"
        )
    coarse = fine.coarsened(factor)
    try:
        coarse_full.subset(coarse.bounds)
    except GridError:
        raise GridError(
            f"{coarse_path}: does not cover the fine extent {coarse.bounds} "
            f"(holds {coarse_full.bounds}); set region.bbox inside both"
        ) from None
    return fine, coarse, factor, offset


# --- code mapping ----------------------------------------------------------------------


def _lookup_table(config) -> tuple[np.ndarray, np.ndarray]:
    mapping = config.datasets.fine.code_mapping
    legend = config.classes.legend
    bad = sorted({v for v in mapping.values() if v not in legend})
    if bad:
        raise ConfigError(
            f"datasets.fine.code_mapping maps to codes {bad} that classes.legend lacks"
        )
    size = max(256, max(mapping) + 1)
    table = np.zeros(size, dtype="uint8")
    known = np.zeros(size, dtype=bool)
    for source, target in mapping.items():
        if source < 0:
            raise ConfigError(f"datasets.fine.code_mapping has a negative source code {source}")
        table[source] = target
        known[source] = True
    return table, known


def map_codes(values: np.ndarray, table: np.ndarray, known: np.ndarray, *, path: str,
              year: int, row0: int = 0, col0: int = 0) -> np.ndarray:
    """Source codes -> class codes; raises naming the file and the first unknown code."""
    if values.dtype.kind not in "iu":
        raise InputDataError(
            f"{path}: band 1 has type {values.dtype}, expected integer class codes"
        )
    if values.size == 0:
        return values.astype("uint8")
    low, high = int(values.min()), int(values.max())
    if low < 0 or high >= table.size:
        bad = low if low < 0 else high
    else:
        listed = np.take(known, values)
        if listed.all():
            return np.take(table, values)
        bad = int(values[~listed][0])
    row, col = (int(i) for i in np.argwhere(values == bad)[0])
    raise InputDataError(
        f"{path}: year {year} holds class code {bad} (first at row {row0 + row}, "
        f"col {col0 + col}) that datasets.fine.code_mapping does not list; add it to the mapping"
    )


def flag_attrs(config) -> dict:
    legend = config.classes.legend
    codes = sorted(legend)
    return {
        "long_name": "land use / land cover class",
        "flag_values": codes,
        "flag_meanings": " ".join(
            "_".join(legend[c].replace("/", "_or_").split()) for c in codes
        ),
        "ocean": config.classes.ocean,
        "nodata": config.classes.nodata,
        "crs": "EPSG:4326",
    }


# --- the step --------------------------------------------------------------------------


def prepare_target(config, *, progress: bool = True) -> Path:
    """Write ``target.zarr`` (lulc per observed year) and ``grids.json``; return the store path."""
    config = stage_config(config, "prepare_target")  # reads only its slice
    paths = cube_paths(config)
    sources = fine_sources(config)
    years = sorted(sources)
    table, known = _lookup_table(config)

    first_path = sources[years[0]]
    with _open(first_path) as src:
        fine_full = _fine_grid(src, first_path)
    fine, coarse, factor, (row_off, col_off) = cube_grids(config, fine_full, fine_path=first_path)

    coords = {"year": ("year", np.asarray(years, dtype="int64"), {"long_name": "calendar year"}),
              **latlon_coords(fine)}
    chunks = (1, TILE_CHUNK, TILE_CHUNK)
    variables = {
        TARGET_VARIABLE: (("year", "lat", "lon"), (len(years), *fine.shape), "uint8", chunks,
                          flag_attrs(config)),
    }
    attrs = {
        "title": "ai4land target maps",
        "Conventions": "CF-1.8",
        "source": config.datasets.fine.archive or config.datasets.fine.pattern,
        "crs": "EPSG:4326",
    }
    with gdal_env(), atomic_path(paths.target) as tmp:
        group = create_store(tmp, variables, coords=coords, attrs=attrs)
        lulc = group[TARGET_VARIABLE]
        for index, year in enumerate(progress_bar(years, desc="target maps", enabled=progress)):
            path = sources[year]
            with _open(path) as src:
                grid = _fine_grid(src, path)
                if not grid.same_as(fine_full):
                    raise GridError(
                        f"{path}: grid {grid.to_dict()} differs from the {years[0]} map "
                        f"{fine_full.to_dict()}; all years must share one grid"
                    )
                for row0 in range(0, fine.height, STRIP_ROWS):
                    height = min(STRIP_ROWS, fine.height - row0)
                    window = RioWindow(col_off=col_off, row_off=row_off + row0,
                                       width=fine.width, height=height)
                    values = read_window(src, window, path=path)
                    lulc[index, row0 : row0 + height, :] = map_codes(
                        values, table, known, path=path, year=year,
                        row0=row_off + row0, col0=col_off,
                    )
        finish_store(tmp)
    write_grids(paths.grids, fine=fine, coarse=coarse, factor=factor)
    return paths.target
