"""cog_write: our class-map COG writer vs ``gdal_translate -of COG`` on the same array.

Ours: :func:`ai4land.io.cog.write_cog` from the in-memory array (stage a tiled GTiff,
convert with the COG driver, rename). Reference: the ``gdal_translate`` CLI converting a
plain GTiff of the same array (written beforehand, not timed) with the same creation
options (DEFLATE at the default ``predict.compress_level``, 256 blocks, mode
overviews). Array: a 4000 x 4000 class map with patches (smooth classes, as real
maps), uint8. The two run interleaved, 7 times each; the ratio is of medians (this
machine is shared: the load averages before and after go into the params).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio

from benchmarks.common import write_result

SIZE = 4000
REPEATS = 7


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def class_map(size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    coarse = rng.choice(np.array([11, 22, 33, 44, 55, 66, 77], dtype="uint8"),
                        size=(size // 40, size // 40))
    codes = np.repeat(np.repeat(coarse, 40, 0), 40, 1)
    noise = rng.random((size, size)) < 0.05
    codes[noise] = rng.choice(np.array([22, 44, 55], dtype="uint8"), size=int(noise.sum()))
    return codes


def main() -> None:
    from ai4land.config import ClassesConfig
    from ai4land.grid import Grid
    from ai4land.io.cog import COMPRESS_LEVEL, overview_count, write_cog

    gdal_translate = shutil.which("gdal_translate")
    if gdal_translate is None:
        raise SystemExit("gdal_translate not found: install gdal-bin")
    legend = ClassesConfig().legend
    grid = Grid(west=0.0, north=40.0, res=0.01, width=SIZE, height=SIZE)
    codes = class_map(SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        plain = tmp / "plain.tif"
        with rasterio.open(plain, "w", driver="GTiff", width=SIZE, height=SIZE, count=1,
                           dtype="uint8", crs=grid.crs, transform=grid.transform,
                           nodata=99) as dst:
            dst.write(codes, 1)
        command = [gdal_translate, "-q", "-of", "COG", "-co", "COMPRESS=DEFLATE",
                   "-co", f"LEVEL={COMPRESS_LEVEL}", "-co", "BLOCKSIZE=256", "-co", "PREDICTOR=NO",
                   "-co", "OVERVIEW_RESAMPLING=MODE",
                   "-co", f"OVERVIEW_COUNT={overview_count(grid.shape)}",
                   "-co", "NUM_THREADS=ALL_CPUS", str(plain), str(tmp / "reference.tif")]
        load_before = os.getloadavg()
        # interleaved (load from other processes hits both alike); medians of REPEATS
        runs = {"ours": [], "reference": []}
        for _ in range(REPEATS):
            runs["ours"].append(timed(lambda: write_cog(tmp / "ours.tif", codes, grid,
                                                        legend=legend)))
            runs["reference"].append(timed(lambda: subprocess.run(command, check=True)))
        ours, reference = (float(np.median(runs[k])) for k in ("ours", "reference"))
        sizes = {name: (tmp / f"{name}.tif").stat().st_size for name in ("ours", "reference")}
        version = subprocess.run([shutil.which("gdalinfo"), "--version"], capture_output=True,
                                 text=True).stdout.strip()
    ratio = ours / reference
    best_ratio = min(runs["ours"]) / min(runs["reference"])
    write_result(
        "cog_write", metric="wall_s", ours=ours, reference=reference,
        reference_name="gdal_translate -of COG (same options)",
        target="ours / gdal_translate <= 0.6", meets_target=ratio <= 0.6,
        params={"shape": [SIZE, SIZE], "bytes": sizes, "cli_gdal": version,
                "rasterio_gdal": rasterio.__gdal_version__, "repeats": REPEATS,
                "statistic": "medians of interleaved runs",
                "runs_s": {k: [round(x, 4) for x in v] for k, v in runs.items()},
                "best_ratio": round(best_ratio, 3),
                "load_average": [round(x, 2) for x in (*load_before, *os.getloadavg())]},
    )


if __name__ == "__main__":
    main()
