"""Files in the exact LUH2 v2h/v2f and HILDA+ layouts, laid out as their servers publish them.

``write_server_tree(root, production, bbox=...)`` takes the production config (a dict,
``config/config.yaml``) and writes, under ``root``, every file its ``sources`` name at
``<host>/<url path>`` (so ``root`` can be served over HTTP): the demo world generator
(``ai4land.demo_world``) writes them with the real names, dims, `_Fillvalue` quirk and
time units ("years since 850-01-01" for ``states.nc``, "years since 2015-01-01" for each
v2f file, chunked one year per chunk), for the small region ``bbox``.

On top of the generated world it carves the cases real regions have (``lake``, ``ice``):

- a large lake: a block of 2 x 2 LUH2 cells that are all water (every fine pixel 77,
  ``icwtr`` = 1 and every state variable at the fill value 1e20, as in LUH2);
- an ice cell: ``icwtr`` = 1, every state at the fill value, and the fine maps hold
  no data (99) there, with a strip of water (77).

``source_url(production, key, base)`` gives the URL of a source on a server at ``base``.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from urllib.parse import urlsplit

import netCDF4
import numpy as np
import rasterio
from rasterio.io import MemoryFile

from ai4land.config import parse_config
from ai4land.demo_world import FILL, HILDA_COLORS, NODATA, WATER, _geotiff_bytes, write_demo_world

COARSE_RES = 0.25
FINE_RES = 0.01
FACTOR = round(COARSE_RES / FINE_RES)


def served_path(url: str) -> str:
    """Where a URL's file lies under the served root: ``<host>/<path>``."""
    parts = urlsplit(url)
    return f"{parts.hostname}{parts.path}"


def source_url(production: dict, key: str, base: str) -> str:
    return f"{base}/{served_path(production['sources'][key]['url'])}"


def _demo_config(root: Path, production: dict, bbox, historical_years, future_years, seed):
    """A demo-world config writing each production source's file at its served path."""
    served = {
        src["path"]: str(root / served_path(src["url"])) for src in production["sources"].values()
    }
    datasets = production["datasets"]
    coarse, fine = datasets["coarse"], datasets["fine"]
    return parse_config({
        "demo_world": True,
        "seed": seed,
        "demo": {"bbox": list(bbox), "fine_res": FINE_RES, "coarse_res": COARSE_RES,
                 "historical_years": list(historical_years), "future_years": list(future_years)},
        "datasets": {
            "coarse": {"historical": served[coarse["historical"]],
                       "scenarios": {k: served[v] for k, v in coarse["scenarios"].items()},
                       "static": served[coarse["static"]]},
            "fine": {**fine, "archive": served[fine["archive"]]},
            "static": [{**layer, "path": served[layer["path"]]} for layer in datasets["static"]],
        },
        "years": {"train": list(fine["years"]), "test": list(fine["years"])},
    }, source="real-format test world")


def _land_everywhere(archive: Path) -> np.ndarray:
    """(cells_y, cells_x) True where every fine pixel of the cell is land in every year."""
    ok = None
    with zipfile.ZipFile(archive) as zf:
        for name in zf.namelist():
            with MemoryFile(zf.read(name)) as mem, mem.open() as src:
                codes = src.read(1)
            land = (codes != 0) & (codes != NODATA) & (codes != WATER)
            cells = land.reshape(land.shape[0] // FACTOR, FACTOR, land.shape[1] // FACTOR, FACTOR)
            cells = cells.all(axis=(1, 3))
            ok = cells if ok is None else ok & cells
    return ok


def _pick_cells(land: np.ndarray) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """A 2 x 2 block of all-land cells for the lake and one more for the ice, apart, both
    off the region's edge where there is room."""
    ny, nx = land.shape
    for i in [*range(1, ny - 2), 0, ny - 2]:
        for j in [*range(1, nx - 2), 0, nx - 2]:
            lake = [(i, j), (i, j + 1), (i + 1, j), (i + 1, j + 1)]
            if not all(land[c] for c in lake):
                continue
            for a in [*range(1, ny - 1), 0, ny - 1]:
                for b in [*range(1, nx - 1), 0, nx - 1]:
                    if land[a, b] and min(abs(a - r) + abs(b - c) for r, c in lake) >= 2:
                        return lake, (a, b)
    raise AssertionError("the generated world has no room for the lake and the ice cell")


def _carve_netcdf(path: Path, cells: list[tuple[int, int]], *, water: bool) -> None:
    """Every variable at the fill value in ``cells`` (``icwtr`` 1 and ``fstnf`` 0 if ``water``)."""
    with netCDF4.Dataset(path, "a") as ds:
        for name, var in ds.variables.items():
            if name in ("time", "lat", "lon"):
                continue
            var.set_auto_maskandscale(False)
            for i, j in cells:
                if water and name == "icwtr":
                    value = 1.0
                elif water and name == "fstnf":
                    value = 0.0
                elif water and name == "carea":
                    continue
                else:
                    value = FILL
                if var.ndim == 3:
                    var[:, i, j] = value
                else:
                    var[i, j] = value


def _carve_archive(archive: Path, lake, ice) -> None:
    """Rewrite every yearly GeoTIFF with the lake (77) and the ice cell (99, a strip of 77)."""
    out = io.BytesIO()
    with zipfile.ZipFile(archive) as zf, zipfile.ZipFile(out, "w") as dst:
        for info in zf.infolist():
            with MemoryFile(zf.read(info)) as mem, mem.open() as src:
                codes, crs, transform = src.read(1), src.crs, src.transform
                assert src.nodata == NODATA
            for i, j in lake:
                codes[i * FACTOR:(i + 1) * FACTOR, j * FACTOR:(j + 1) * FACTOR] = WATER
            if ice is not None:
                a, b = ice
                codes[a * FACTOR:(a + 1) * FACTOR, b * FACTOR:(b + 1) * FACTOR] = NODATA
                codes[a * FACTOR:(a + 1) * FACTOR, b * FACTOR:b * FACTOR + 3] = WATER
            dst.writestr(info, _geotiff_bytes(codes, crs=crs, transform=transform, nodata=NODATA,
                                              colormap=HILDA_COLORS))
    archive.write_bytes(out.getvalue())


def write_server_tree(root: Path, production: dict, *, bbox, historical_years=(1950, 2015),
                      future_years=(2015, 2100), seed: int = 42, lake: bool = True,
                      ice: bool = True) -> dict:
    """Write the served files; return {"lake": [(row, col), ...], "ice": (row, col) or None},
    the carved LUH2 cells counted from the north-west corner of ``bbox``."""
    config = _demo_config(root, production, bbox, historical_years, future_years, seed)
    write_demo_world(config, progress=False)
    lake_cells, ice_cell = _pick_cells(_land_everywhere(Path(config.datasets.fine.archive)))
    lake_cells = lake_cells if lake else []
    ice_cell = ice_cell if ice else None
    cells = [*lake_cells, *([ice_cell] if ice_cell else [])]
    if cells:
        coarse = config.datasets.coarse
        for path in [coarse.historical, *coarse.scenarios.values()]:
            _carve_netcdf(Path(path), cells, water=False)
        _carve_netcdf(Path(coarse.static), cells, water=True)
        _carve_archive(Path(config.datasets.fine.archive), lake_cells, ice_cell)
    return {"lake": lake_cells, "ice": ice_cell}


def read_map(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)
