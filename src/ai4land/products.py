"""Product writers: Cloud-Optimized GeoTIFFs and the product Zarr store.

COGs are written with GDAL's COG driver (through rasterio) into a temporary sibling and
renamed, so a killed job never leaves a file that looks complete. Bytes are
deterministic: no TIFFTAG_DATETIME, no software/time tags, fixed creation options.

The Zarr store holds one array per layer with dims (scenario, year, lat, lon) and
chunks (1, 1, tile, tile): every chunk belongs to exactly one (scenario, year), so
jobs writing different years never touch the same file. The store uses Zarr format 2
(fully specified for fixed-length string coordinates, read by GDAL, xarray, zarr-js);
``lulc`` is uint8 codes with fill 99 and CF flag_values/flag_meanings, probability and
entropy are uint8 packed with CF scale_factor 1/254 and fill 255. The store is created once
(:func:`init_store`, idempotent and race-safe) and filled by :func:`write_year`.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import ColorInterp

from ai4land.errors import OutputError
from ai4land.grid import Grid
from ai4land.io.atomic import atomic_path

NODATA = 99
QUANT_NODATA = 255
QUANT_SCALE = 254  # stored value = round(x * 254), x in [0, 1]
COG_BLOCKSIZE = 256

# HILDA+ legend colours (RGB), close to the colours used in the HILDA+ figures.
DEFAULT_COLOURS: dict[int, tuple[int, int, int]] = {
    0: (166, 206, 227),  # ocean
    11: (227, 26, 28),  # urban
    22: (255, 215, 0),  # cropland
    33: (178, 223, 138),  # pasture/rangeland
    44: (34, 139, 34),  # forest
    55: (191, 129, 45),  # unmanaged grass/shrubland
    66: (217, 217, 217),  # sparse/no vegetation
    77: (31, 120, 180),  # water
    99: (0, 0, 0),  # no data
}


def colour_table(legend: Mapping[int, str], colours: Mapping[int, tuple] | None = None) -> dict:
    """One RGBA entry per legend code (unknown codes get a grey derived from the code)."""
    colours = dict(DEFAULT_COLOURS if colours is None else colours)
    table = {}
    for code in sorted(legend):
        rgb = colours.get(code, (code, code, code))
        alpha = 0 if code == NODATA else 255
        table[int(code)] = (*(int(v) for v in rgb[:3]), alpha)
    return table


def _cog_profile(grid: Grid, *, nodata: int, blocksize: int, compress: str) -> dict:
    return {
        "driver": "COG",
        "width": grid.width,
        "height": grid.height,
        "count": 1,
        "dtype": "uint8",
        "crs": grid.crs,
        "transform": grid.transform,
        "nodata": nodata,
        "blocksize": blocksize,
        "compress": compress,
        "predictor": "NO",
        "level": 9 if compress.upper() == "DEFLATE" else 15,
        "overviews": "AUTO",
        "bigtiff": "IF_SAFER",
        "num_threads": "ALL_CPUS",
    }


def _write_cog(
    path: Path,
    data: np.ndarray,
    grid: Grid,
    *,
    nodata: int,
    resampling: str,
    tags: Mapping[str, str],
    band_tags: Mapping[str, str] | None = None,
    description: str,
    colormap: dict | None = None,
    blocksize: int = COG_BLOCKSIZE,
    compress: str = "DEFLATE",
) -> Path:
    data = np.asarray(data)
    if data.shape != grid.shape:
        raise ValueError(f"array shape {data.shape} does not match grid {grid.shape}")
    if data.dtype != np.uint8:
        raise ValueError(f"COG layers are uint8, got {data.dtype}")
    path = Path(path)
    profile = _cog_profile(grid, nodata=nodata, blocksize=blocksize, compress=compress)
    profile["overview_resampling"] = resampling
    profile["overview_count"] = overview_count(grid.shape)
    with atomic_path(path) as tmp:
        env = {"GDAL_TIFF_INTERNAL_MASK": "YES", "TIFF_USE_OVR": "NO"}
        with rasterio.Env(**env), rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data, 1)
            dst.set_band_description(1, description)
            dst.update_tags(**{k: str(v) for k, v in tags.items()})
            if band_tags:
                dst.update_tags(1, **{k: str(v) for k, v in band_tags.items()})
            if colormap is not None:
                dst.write_colormap(1, colormap)
                dst.colorinterp = [ColorInterp.palette]
    return path


def overview_count(shape: tuple[int, int], *, smallest: int = 64) -> int:
    """Halvings until the larger side drops below ``smallest`` pixels.

    GDAL's default stops once an overview fits in one tile, which leaves small regions
    with none; QGIS needs them to draw a coarse view quickly.
    """
    count, size = 0, max(shape)
    while size // 2 >= smallest:
        size //= 2
        count += 1
    return count


def legend_tags(legend: Mapping[int, str]) -> dict[str, str]:
    """Class names as GDAL metadata: one ``CLASS_<code>`` item each plus a JSON legend."""
    tags = {f"CLASS_{int(code)}": name for code, name in sorted(legend.items())}
    tags["CLASS_LEGEND"] = json.dumps({str(c): n for c, n in sorted(legend.items())})
    return tags


def write_cog(
    path: str | Path,
    codes: np.ndarray,
    grid: Grid,
    *,
    legend: Mapping[int, str],
    colours: Mapping[int, tuple] | None = None,
    tags: Mapping[str, object] | None = None,
    nodata: int = NODATA,
    blocksize: int = COG_BLOCKSIZE,
    compress: str = "DEFLATE",
) -> Path:
    """Write the class map as a COG: uint8 codes, nodata 99, mode overviews, palette.

    ``tags`` carry provenance (config hash, model hash, scenario, year, code version);
    they are written sorted, as strings. No time stamp is written, so two runs with the
    same inputs give the same bytes.
    """
    unknown = sorted(set(np.unique(codes).tolist()) - set(legend) - {nodata})
    if unknown:
        raise ValueError(f"codes {unknown} are not in the class legend")
    all_tags = {**legend_tags(legend), **{k: str(v) for k, v in sorted((tags or {}).items())}}
    return _write_cog(
        Path(path), codes, grid, nodata=nodata, resampling="MODE", tags=all_tags,
        description="lulc", colormap=colour_table(legend, colours),
        band_tags={"LAYER": "class code (HILDA+ legend)"}, blocksize=blocksize,
        compress=compress,
    )


def quantise(values: np.ndarray) -> np.ndarray:
    """[0, 1] floats → uint8 0..254 (value / 254); NaN → 255 (nodata)."""
    values = np.asarray(values, dtype="float32")
    out = np.full(values.shape, QUANT_NODATA, dtype="uint8")
    ok = np.isfinite(values)
    out[ok] = np.rint(np.clip(values[ok], 0.0, 1.0) * QUANT_SCALE).astype("uint8")
    return out


def dequantise(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values)
    out = values.astype("float32") / QUANT_SCALE
    out[values == QUANT_NODATA] = np.nan
    return out


def probability_paths(class_cog: str | Path) -> tuple[Path, Path]:
    """``X.tif`` → (``X_probability.tif``, ``X_entropy.tif``)."""
    class_cog = Path(class_cog)
    return (
        class_cog.with_name(f"{class_cog.stem}_probability.tif"),
        class_cog.with_name(f"{class_cog.stem}_entropy.tif"),
    )


def write_probability_cogs(
    class_cog: str | Path,
    probability: np.ndarray,
    entropy: np.ndarray,
    grid: Grid,
    *,
    tags: Mapping[str, object] | None = None,
    blocksize: int = COG_BLOCKSIZE,
    compress: str = "DEFLATE",
) -> tuple[Path, Path]:
    """Chosen-class probability and normalised entropy beside ``class_cog`` (uint8 COGs).

    Inputs are float [0, 1] (NaN = no data) or already quantised uint8; stored as
    round(x × 254), nodata 255, average-resampled overviews.
    """
    prob_path, ent_path = probability_paths(class_cog)
    base = {k: str(v) for k, v in sorted((tags or {}).items())}
    for path, values, name, meaning in (
        (prob_path, probability, "probability", "probability of the mapped class"),
        (ent_path, entropy, "entropy", "class entropy / log(K): 0 certain, 1 uniform"),
    ):
        data = values if np.asarray(values).dtype == np.uint8 else quantise(values)
        _write_cog(
            path, data, grid, nodata=QUANT_NODATA, resampling="AVERAGE",
            tags={**base, "LAYER": name, "SCALE": f"1/{QUANT_SCALE}",
                  "DESCRIPTION": meaning},
            band_tags={"scale_factor": repr(1 / QUANT_SCALE), "add_offset": "0"},
            description=name, blocksize=blocksize, compress=compress,
        )
    return prob_path, ent_path


def validate_cog(path: str | Path) -> list[str]:
    """Problems with the COG layout of ``path`` (an empty list means a valid COG).

    Checks: GeoTIFF, internally tiled, overviews present when the image is larger than
    one block (each overview tiled too), and GDAL's ``LAYOUT=COG`` marker, which GDAL
    only reports when the file starts with the COG ghost header written by the COG
    driver (IFDs first, overview data before full-resolution data, tile order).
    """
    problems = []
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        return [f"{path}: cannot open ({exc})"]
    with src:
        if src.driver != "GTiff":
            problems.append(f"driver is {src.driver}, not GTiff")
        structure = src.tags(ns="IMAGE_STRUCTURE")
        if structure.get("LAYOUT", "").upper() != "COG":
            problems.append("no LAYOUT=COG marker (not written by the COG driver or edited since)")
        block_h, block_w = src.block_shapes[0]
        tiled = bool(src.profile.get("tiled", False))
        if not tiled:
            problems.append("not internally tiled (striped)")
            block_h = block_w = COG_BLOCKSIZE
        elif block_h % 16 or block_w % 16:
            problems.append(f"block size {block_w}x{block_h} is not a multiple of 16")
        overviews = src.overviews(1)
        if max(src.width, src.height) > max(block_w, block_h) and not overviews:
            problems.append("no overviews although the image is larger than one block")
    return problems


# --- Zarr store ---------------------------------------------------------------------

LAYERS = {
    "lulc": {"fill": NODATA, "long_name": "land use / land cover class (HILDA+ codes)"},
    "probability": {"fill": QUANT_NODATA,
                    "long_name": "probability of the mapped class (value / 254)"},
    "entropy": {"fill": QUANT_NODATA,
                "long_name": "normalised class entropy (value / 254; 0 certain, 1 uniform)"},
}


def _crs_attrs(grid: Grid) -> dict:
    from rasterio.crs import CRS

    crs = CRS.from_user_input(grid.crs)
    attrs = {
        "crs_wkt": crs.to_wkt(),
        "spatial_ref": crs.to_wkt(),
        "GeoTransform": " ".join(repr(float(v)) for v in tuple(grid.transform)[:6]),
    }
    if crs.is_geographic:
        attrs["grid_mapping_name"] = "latitude_longitude"
    epsg = crs.to_epsg()
    if epsg:
        attrs["epsg"] = int(epsg)
    return attrs


def _store_dataset(grid: Grid, scenarios: Sequence[str], years: Sequence[int], tile: int,
                   legend: Mapping[int, str]):
    import dask.array as da
    import xarray as xr

    shape = (len(scenarios), len(years), grid.height, grid.width)
    chunks = (1, 1, min(tile, grid.height), min(tile, grid.width))
    codes = sorted(int(c) for c in legend)
    meanings = " ".join(legend[c].replace("/", "_or_").replace(" ", "_") for c in codes)
    data_vars = {}
    for name, spec in LAYERS.items():
        attrs = {"long_name": spec["long_name"], "grid_mapping": "crs"}
        if name == "lulc":
            attrs.update(flag_values=codes, flag_meanings=meanings,
                         legend=json.dumps({str(c): legend[c] for c in codes}))
        else:
            attrs.update(valid_range=[0, QUANT_SCALE])
        encoding = {"chunks": chunks, "_FillValue": np.uint8(spec["fill"]), "dtype": "uint8"}
        if name != "lulc":
            # CF packing: readers that decode (xarray) see floats in [0, 1].
            encoding.update(scale_factor=1.0 / QUANT_SCALE, add_offset=0.0)
        data_vars[name] = xr.Variable(
            ("scenario", "year", "lat", "lon"),
            da.full(shape, spec["fill"], dtype="uint8", chunks=chunks),
            attrs=attrs,
            encoding=encoding,
        )
    data_vars["crs"] = xr.Variable((), np.int32(0), attrs=_crs_attrs(grid))
    coords = {
        "scenario": ("scenario", np.asarray(list(scenarios), dtype="U")),
        "year": ("year", np.asarray(list(years), dtype="int32")),
        "lat": ("lat", grid.lat.astype("float64"),
                {"units": "degrees_north", "standard_name": "latitude", "axis": "Y"}),
        "lon": ("lon", grid.lon.astype("float64"),
                {"units": "degrees_east", "standard_name": "longitude", "axis": "X"}),
    }
    ds = xr.Dataset(data_vars, coords=coords)
    ds.attrs = {"title": "ai4land land-use maps", "Conventions": "CF-1.8",
                "grid": json.dumps(grid.to_dict(), sort_keys=True)}
    return ds


def init_store(
    path: str | Path,
    *,
    grid: Grid,
    scenarios: Sequence[str],
    years: Sequence[int],
    tile: int = COG_BLOCKSIZE,
    legend: Mapping[int, str],
) -> Path:
    """Create the product store (metadata and coordinates only); idempotent, race-safe.

    Written to a temporary sibling and renamed. If another process created the store
    first, ours is dropped and the existing one is checked for the same axes and grid.
    """
    path = Path(path)
    if path.exists():
        check_store(path, grid=grid, scenarios=scenarios, years=years)
        return path
    ds = _store_dataset(grid, scenarios, years, tile, legend)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        ds.to_zarr(tmp, mode="w", compute=False, consolidated=True, zarr_format=2)
        try:
            os.rename(tmp, path)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise OutputError(f"{path}: cannot create the product store ({exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check_store(path, grid=grid, scenarios=scenarios, years=years)
    return path


def _open_group(path: Path, mode: str = "r"):
    import zarr

    if not path.exists():
        raise OutputError(f"{path}: product store not found; create it with init_store first")
    return zarr.open_group(str(path), mode=mode)


def _axis_values(group, name: str) -> list:
    values = group[name][...]
    return [str(v) for v in values] if name == "scenario" else [int(v) for v in values]


def check_store(path: str | Path, *, grid: Grid, scenarios: Sequence[str],
                years: Sequence[int]) -> None:
    path = Path(path)
    group = _open_group(path)
    found = Grid.from_dict(json.loads(group.attrs["grid"]))
    if not found.same_as(grid):
        raise OutputError(f"{path}: existing store is on grid {found.to_dict()}, "
                          f"expected {grid.to_dict()}; remove it to rebuild")
    for name, want in (("scenario", [str(s) for s in scenarios]),
                       ("year", [int(y) for y in years])):
        have = _axis_values(group, name)
        if have != want:
            raise OutputError(f"{path}: existing store has {name} {have}, expected {want}; "
                              "remove it to rebuild")


def write_year(
    path: str | Path,
    *,
    scenario: str,
    year: int,
    codes: np.ndarray,
    probability: np.ndarray | None = None,
    entropy: np.ndarray | None = None,
) -> None:
    """Write one (scenario, year) slice; touches only that slice's chunks.

    ``probability``/``entropy`` may be float [0, 1] (NaN = no data) or quantised uint8.
    """
    path = Path(path)
    group = _open_group(path, mode="r+")
    scenarios = _axis_values(group, "scenario")
    years = _axis_values(group, "year")
    if scenario not in scenarios:
        raise OutputError(f"{path}: scenario {scenario!r} is not in the store ({scenarios})")
    if int(year) not in years:
        raise OutputError(f"{path}: year {year} is not in the store "
                          f"({years[0]}-{years[-1]})" if years else f"{path}: no years")
    s, y = scenarios.index(scenario), years.index(int(year))
    for name, values in (("lulc", codes), ("probability", probability), ("entropy", entropy)):
        if values is None:
            continue
        array = group[name]
        data = np.asarray(values)
        if data.dtype != np.uint8:
            if name == "lulc":
                raise ValueError(f"codes must be uint8, got {data.dtype}")
            data = quantise(data)
        if data.shape != tuple(array.shape[2:]):
            raise ValueError(f"{name} has shape {data.shape}, store expects {array.shape[2:]}")
        array[s, y] = data


def read_year(path: str | Path, *, scenario: str, year: int, layer: str = "lulc") -> np.ndarray:
    group = _open_group(Path(path))
    s = _axis_values(group, "scenario").index(scenario)
    y = _axis_values(group, "year").index(int(year))
    return np.asarray(group[layer][s, y])


def sha256_file(path: str | Path, *, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
