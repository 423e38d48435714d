"""reproject_static: our static reprojection of one layer vs the ``gdalwarp`` CLI.

Input: a generated 30 arc-second elevation GeoTIFF (2400 x 2400, 20 x 20 degrees,
float32) warped to a 0.01 degree grid (2000 x 2000) with average resampling (the source
is finer) by both: ours is the strip loop of ``prepare_static`` for one layer
(``LayerSource.warp`` per ``STATIC_ROWS`` rows, in memory), the reference is ``gdalwarp
-r average`` single-threaded to an uncompressed GeoTIFF on the same extent and grid.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import rasterio

from ai4land.config import StaticLayer
from ai4land.grid import Grid
from ai4land.prepare.static import STATIC_ROWS, LayerSource
from benchmarks.common import best_of, write_result

SOURCE = Grid(west=0.0, north=50.0, res=1 / 120, width=2400, height=2400)
TARGET = Grid(west=0.0, north=50.0, res=0.01, width=2000, height=2000)


def write_elevation(path: Path) -> Path:
    rows, cols = np.mgrid[0 : SOURCE.height, 0 : SOURCE.width].astype("float32")
    z = 500 + 300 * np.sin(rows / 97.0) * np.cos(cols / 131.0) + 0.05 * rows
    profile = {"driver": "GTiff", "width": SOURCE.width, "height": SOURCE.height, "count": 1,
               "dtype": "float32", "crs": "EPSG:4326", "transform": SOURCE.transform,
               "nodata": -9999.0, "tiled": True}
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(z.astype("float32"), 1)
    return path


def ours(source: LayerSource) -> np.ndarray:
    method = source.resampling(TARGET)
    out = np.empty(TARGET.shape, dtype="float32")
    for row0 in range(0, TARGET.height, STATIC_ROWS):
        row1 = min(row0 + STATIC_ROWS, TARGET.height)
        out[row0:row1] = source.warp(TARGET, row0, row1, method)
    return out


def gdalwarp(src: Path, dst: Path) -> None:
    west, south, east, north = TARGET.bounds
    subprocess.run(["gdalwarp", "-q", "-overwrite", "-r", "average", "-t_srs", "EPSG:4326",
                    "-te", str(west), str(south), str(east), str(north),
                    "-ts", str(TARGET.width), str(TARGET.height), "-ot", "Float32",
                    "-dstnodata", "nan", "-wm", "256", str(src), str(dst)], check=True)


def main() -> dict:
    if shutil.which("gdalwarp") is None:
        raise SystemExit("gdalwarp not found; run scripts/install-system-deps.sh")
    with tempfile.TemporaryDirectory(prefix="bench_reproject_") as tmp:
        src_path = write_elevation(Path(tmp) / "elevation_30s.tif")
        dst_path = Path(tmp) / "gdalwarp.tif"
        source = LayerSource(StaticLayer(name="elevation", path=str(src_path)))
        try:
            assert source.resampling(TARGET).name == "average"
            ours_s = best_of(lambda: ours(source))
            reference_s = best_of(lambda: gdalwarp(src_path, dst_path))
            mine = ours(source)
        finally:
            source.close()
        with rasterio.open(dst_path) as dst:
            theirs = dst.read(1)
    max_diff = float(np.nanmax(np.abs(mine - theirs)))
    ratio = ours_s / reference_s
    return write_result(
        "reproject_static",
        metric="wall_s",
        ours=ours_s,
        reference=reference_s,
        reference_name="gdalwarp -r average",
        target="ratio <= 1.5",
        meets_target=ratio <= 1.5,
        params={
            "source": "30 arc-second float32 GeoTIFF 2400 x 2400",
            "target_grid": "0.01 deg 2000 x 2000",
            "resampling": "average",
            "strip_rows": STATIC_ROWS,
            "threads": 1,
            "max_abs_diff_m": round(max_diff, 4),
            "timing": "best of 3",
        },
    )


if __name__ == "__main__":
    main()
