"""Cloud-Optimized GeoTIFF writer.

COGs are staged row block by row block in a tiled GTiff (:class:`CogLayer`), then
converted with GDAL's COG driver (through rasterio) into a temporary sibling and
renamed, so memory stays bounded and a killed job never leaves a file that looks
complete. Bytes are deterministic: no TIFFTAG_DATETIME, no software/time tags, fixed
creation options. Overviews are streamed while rows are written
(:mod:`ai4land.io.overviews`).
"""

from __future__ import annotations

import functools
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numba
import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp
from rasterio.windows import Window

from ai4land.encoding import NODATA, QUANT_NODATA, QUANT_SCALE, colour_table, legend_tags, quantise
from ai4land.errors import OutputError
from ai4land.grid import Grid
from ai4land.io.locks import held_staging_dir
from ai4land.io.overviews import RESAMPLINGS, StreamedOverviews, overview_shapes

COG_BLOCKSIZE = 256


# DEFLATE 6 (zlib's default): a class map takes ~6x less time than at 9 for ~15 %
# more bytes (benchmarks/bench_cog.py); predict.compress_level sets it.
COMPRESS_LEVEL = 6


def _cog_options(*, nodata: int, blocksize: int, compress: str, level: int, resampling: str,
                 shape: tuple[int, int]) -> dict:
    """Creation options of the COG driver (fixed, so the bytes are deterministic)."""
    return {
        "blocksize": blocksize,
        "compress": compress,
        "predictor": "NO",
        "level": level,
        "overviews": "AUTO",
        "overview_resampling": resampling,
        "overview_count": overview_count(shape),
        "bigtiff": "IF_SAFER",
        "num_threads": "ALL_CPUS",
    }


# GDAL's block cache while streaming and converting: bounded, whatever the raster size.
# The COG driver's temporary overview file is left uncompressed: the same COG bytes,
# ~20 % less conversion time (it was compressed only to be read back at once).
GDAL_ENV = {"GDAL_TIFF_INTERNAL_MASK": "YES", "TIFF_USE_OVR": "NO", "GDAL_CACHEMAX": 256,
            "COG_TMP_COMPRESSION": "NONE"}


class CogLayer:
    """One uint8 COG written row block by row block, so memory does not grow with size.

    The GDAL COG driver cannot write incrementally: rows go to a tiled, uncompressed
    GTiff in ``workdir`` (:meth:`write`), then :meth:`finish` converts it with the COG
    driver (overviews, compression, ghost header) into a temporary sibling of ``path``
    and renames it. Until then ``path`` does not exist, so a killed job leaves no COG
    that looks complete. Use as a context manager; :meth:`finish` inside it.

    MODE and AVERAGE overviews are built as the rows arrive
    (:class:`ai4land.io.overviews.StreamedOverviews`, GDAL's values) and handed to the
    driver through a VRT, so the conversion only copies them; if rows were written out
    of order, GDAL computes them as usual.
    """

    def __init__(self, path: str | Path, grid: Grid, *, workdir: str | Path, nodata: int,
                 resampling: str, tags: Mapping[str, str], description: str,
                 band_tags: Mapping[str, str] | None = None, colormap: dict | None = None,
                 scale: float | None = None, blocksize: int = COG_BLOCKSIZE,
                 compress: str = "DEFLATE", level: int = COMPRESS_LEVEL):
        self.path = Path(path)
        self.grid = grid
        self.options = _cog_options(nodata=nodata, blocksize=blocksize, compress=compress,
                                    level=level, resampling=resampling, shape=grid.shape)
        self.staging = Path(workdir) / f"{self.path.stem}.staging.tif"
        self._converted: Path | None = None
        self._env = rasterio.Env(**GDAL_ENV)
        self._env.__enter__()
        self._dst = rasterio.open(
            self.staging, "w", driver="GTiff", width=grid.width, height=grid.height,
            count=1, dtype="uint8", crs=grid.crs, transform=grid.transform, nodata=nodata,
            tiled=True, blockxsize=blocksize, blockysize=blocksize, compress="NONE",
            bigtiff="IF_SAFER",
        )
        self._dst.set_band_description(1, description)
        self._dst.update_tags(**{k: str(v) for k, v in tags.items()})
        if band_tags:
            self._dst.update_tags(1, **{k: str(v) for k, v in band_tags.items()})
        if scale is not None:  # GDAL's own scale/offset: QGIS, rasterio and xarray apply it
            self._dst.scales, self._dst.offsets = (scale,), (0.0,)
        if colormap is not None:
            self._dst.write_colormap(1, colormap)
            self._dst.colorinterp = [ColorInterp.palette]
        self._levels: list = []
        self._overviews: StreamedOverviews | None = None
        count = self.options["overview_count"]
        if resampling.upper() in RESAMPLINGS and count > 0:
            for k, (height, width) in enumerate(overview_shapes(grid.shape, count), 1):
                self._levels.append(rasterio.open(
                    Path(workdir) / f"{self.path.stem}.overview{k}.tif", "w", driver="GTiff",
                    width=width, height=height, count=1, dtype="uint8", tiled=True,
                    blockxsize=blocksize, blockysize=blocksize, compress="NONE", crs=grid.crs,
                    transform=grid.transform @ Affine.scale(grid.width / width,
                                                            grid.height / height)))
            self._overviews = StreamedOverviews(
                grid.shape, resampling=resampling.upper(), nodata=nodata,
                sinks=[functools.partial(_write_rows, level) for level in self._levels])

    def write(self, row: int, data: np.ndarray) -> None:
        """Write full-width rows ``row .. row + len(data)`` (uint8)."""
        data = np.asarray(data)
        if data.dtype != np.uint8:
            raise ValueError(f"COG layers are uint8, got {data.dtype}")
        if data.ndim != 2 or data.shape[1] != self.grid.width or row + len(data) > self.grid.height:
            raise ValueError(f"rows {row}..{row + len(data)} of width {data.shape[-1]} do not "
                             f"fit grid {self.grid.shape}")
        self._dst.write(data, 1, window=Window(0, row, self.grid.width, len(data)))
        if self._overviews is not None:
            self._overviews.add(row, data)

    def finish(self) -> Path:
        """Convert the staged rows to the COG at ``path`` (atomically)."""
        self.convert()
        return self.publish()

    def convert(self) -> Path:
        """Convert the staged rows to a COG under a hidden temporary name beside ``path``
        (thread-safe: layers of a job convert side by side); :meth:`publish` renames it."""
        from rasterio.shutil import copy as gdal_copy

        self._dst.close()
        for level in self._levels:
            level.close()
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        self._converted = tmp
        source, options = str(self.staging), self.options
        with rasterio.Env(**GDAL_ENV):  # GDAL options are per thread
            if self._overviews is not None and self._overviews.complete:
                source = str(self.staging.with_suffix(".vrt"))
                gdal_copy(str(self.staging), source, driver="VRT")
                _add_vrt_overviews(Path(source), [Path(level.name) for level in self._levels])
                options = {key: value for key, value in self.options.items()
                           if key not in ("overview_resampling", "overview_count")}
                options["overviews"] = "FORCE_USE_EXISTING"
            gdal_copy(source, str(tmp), driver="COG", **options)
        self._remove_staging()
        return tmp

    def _remove_staging(self) -> None:
        self.staging.unlink(missing_ok=True)
        self.staging.with_suffix(".vrt").unlink(missing_ok=True)
        for level in self._levels:
            Path(level.name).unlink(missing_ok=True)

    def publish(self) -> Path:
        """Rename the converted COG onto ``path``."""
        if self._converted is None:
            raise RuntimeError(f"{self.path}: publish() before convert()")
        os.replace(self._converted, self.path)
        self._converted = None
        return self.path

    def close(self) -> None:
        for dataset in (self._dst, *self._levels):
            if not dataset.closed:
                dataset.close()
        self._env.__exit__(None, None, None)

    def __enter__(self) -> CogLayer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        self._remove_staging()
        if self._converted is not None:  # converted but never published: not a product
            self._converted.unlink(missing_ok=True)


def _write_rows(dataset, row: int, rows: np.ndarray) -> None:
    dataset.write(rows, 1, window=Window(0, row, rows.shape[1], len(rows)))


def _add_vrt_overviews(vrt: Path, levels: list[Path]) -> None:
    """Give the (single) band of ``vrt`` the overview files ``levels``, finest first."""
    from xml.etree import ElementTree

    tree = ElementTree.parse(vrt)
    band = tree.getroot().find("VRTRasterBand")
    for level in levels:
        overview = ElementTree.SubElement(band, "Overview")
        source = ElementTree.SubElement(overview, "SourceFilename", relativeToVRT="0")
        source.text = str(level)
        ElementTree.SubElement(overview, "SourceBand").text = "1"
    tree.write(vrt)


def _write_cog(path: Path, data: np.ndarray, grid: Grid, **layer) -> Path:
    """Write a whole array as a COG (one :class:`CogLayer`, staged next to ``path``)."""
    data = np.asarray(data)
    if data.shape != grid.shape:
        raise ValueError(f"array shape {data.shape} does not match grid {grid.shape}")
    if data.dtype != np.uint8:
        raise ValueError(f"COG layers are uint8, got {data.dtype}")
    path = Path(path)
    with staging_dir(path) as workdir, CogLayer(path, grid, workdir=workdir, **layer) as cog:
        cog.write(0, data)
        return cog.finish()


@contextmanager
def staging_dir(path: str | Path) -> Iterator[Path]:
    """A hidden temporary directory beside ``path`` (same file system), removed on exit;
    those a killed job left for ``path`` are removed first (:mod:`ai4land.io.locks`)."""
    path = Path(path)
    require_writable(path.parent)
    with held_staging_dir(path) as tmp:
        yield tmp


def require_writable(directory: str | Path) -> Path:
    """Create ``directory`` if needed and prove it writable by creating a file in it.

    ``os.access`` says yes to root for read-only directories, so this really writes.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".ai4land-write-test."):
            pass
    except OSError as exc:
        raise OutputError(f"{directory}: output directory is not writable ({exc.strerror}); "
                          "choose another output path or fix its permissions") from None
    return directory


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


def class_layer(legend: Mapping[int, str], *, colours: Mapping[int, tuple] | None = None,
                tags: Mapping[str, object] | None = None, nodata: int = NODATA,
                blocksize: int = COG_BLOCKSIZE, compress: str = "DEFLATE",
                level: int = COMPRESS_LEVEL) -> dict:
    """:class:`CogLayer` settings of the class map: mode overviews, palette, legend tags.

    ``tags`` carry provenance (config hash, model hash, scenario, year, code version);
    they are written sorted, as strings, after the legend. No time stamp is written.
    """
    all_tags = {**legend_tags(legend), **{k: str(v) for k, v in sorted((tags or {}).items())}}
    return {"nodata": nodata, "resampling": "MODE", "tags": all_tags, "description": "lulc",
            "colormap": colour_table(legend, colours),
            "band_tags": {"LAYER": "class code (HILDA+ legend)"}, "blocksize": blocksize,
            "compress": compress, "level": level}


@numba.njit(cache=True, nogil=True)
def _mark_codes(flat, present):  # pragma: no cover - compiled
    for value in flat:
        present[value] = True


def codes_present(codes: np.ndarray) -> np.ndarray:
    """(256,) bool: which uint8 codes occur in ``codes`` (one pass; ``np.unique`` sorts
    or hashes, ~10x slower on a map)."""
    present = np.zeros(256, dtype=np.bool_)
    _mark_codes(np.asarray(codes, dtype=np.uint8).reshape(-1), present)
    return present


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
    level: int = COMPRESS_LEVEL,
) -> Path:
    """Write the class map as a COG: uint8 codes, nodata 99, mode overviews, palette.

    Two runs with the same inputs give the same bytes (see :func:`class_layer`).
    """
    codes = np.asarray(codes)
    present = (np.flatnonzero(codes_present(codes)) if codes.dtype == np.uint8
               else np.unique(codes))
    unknown = sorted(set(present.tolist()) - set(legend) - {nodata})
    if unknown:
        raise ValueError(f"codes {unknown} are not in the class legend")
    return _write_cog(Path(path), codes, grid, **class_layer(
        legend, colours=colours, tags=tags, nodata=nodata, blocksize=blocksize,
        compress=compress, level=level))


QUANTISED_LAYERS = {
    "probability": "probability of the mapped class",
    "entropy": "class entropy / log(K): 0 certain, 1 uniform",
    "spread": "ensemble spread: std over members of the mapped class's probability",
}


def layer_path(class_cog: str | Path, layer: str) -> Path:
    """``X.tif`` → ``X_<layer>.tif`` (the class map itself for ``lulc``)."""
    class_cog = Path(class_cog)
    if layer == "lulc":
        return class_cog
    return class_cog.with_name(f"{class_cog.stem}_{layer}.tif")


def quantised_layer(name: str, *, tags: Mapping[str, object] | None = None,
                    blocksize: int = COG_BLOCKSIZE, compress: str = "DEFLATE",
                    level: int = COMPRESS_LEVEL) -> dict:
    """:class:`CogLayer` settings of a [0, 1] layer stored as round(x × 254), nodata 255,
    with GDAL scale 1/254 and offset 0 on the band (readers that unscale see [0, 1])."""
    base = {k: str(v) for k, v in sorted((tags or {}).items())}
    return {"nodata": QUANT_NODATA, "resampling": "AVERAGE",
            "tags": {**base, "LAYER": name, "SCALE": f"1/{QUANT_SCALE}",
                     "DESCRIPTION": QUANTISED_LAYERS[name]},
            "scale": 1 / QUANT_SCALE, "description": name, "blocksize": blocksize,
            "compress": compress, "level": level}


def write_probability_cogs(
    class_cog: str | Path,
    probability: np.ndarray,
    entropy: np.ndarray,
    grid: Grid,
    *,
    tags: Mapping[str, object] | None = None,
    blocksize: int = COG_BLOCKSIZE,
    compress: str = "DEFLATE",
    level: int = COMPRESS_LEVEL,
) -> tuple[Path, Path]:
    """Chosen-class probability and normalised entropy beside ``class_cog`` (uint8 COGs).

    Inputs are float [0, 1] (NaN = no data) or already quantised uint8; stored as
    round(x × 254), nodata 255, average-resampled overviews.
    """
    for name, values in (("probability", probability), ("entropy", entropy)):
        data = values if np.asarray(values).dtype == np.uint8 else quantise(values)
        _write_cog(layer_path(class_cog, name), data, grid,
                   **quantised_layer(name, tags=tags, blocksize=blocksize, compress=compress,
                                     level=level))
    return layer_path(class_cog, "probability"), layer_path(class_cog, "entropy")


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
