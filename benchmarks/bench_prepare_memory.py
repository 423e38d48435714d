"""prepare_target_memory: peak RSS of preparing ONE global-size target year.

Input: a generated 36000 x 18000 uint8 class map (0.01 degree, global, DEFLATE, tiled;
~650 MB raw) as a plain GeoTIFF, and a global 0.25 degree coarse file (720 x 1440) for
the grid. Ours (``prepare_target``) and the reference (the naive full-band read, code
lookup and one Zarr write of the whole array) each run in a fresh subprocess that
reports its own ``ru_maxrss``. Target: ours under 2 GiB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ai4land.grid import Grid
from benchmarks.bench_target_cube import bench_config, write_coarse_file, write_map
from benchmarks.common import write_result

REPO = Path(__file__).resolve().parents[1]
GLOBAL_FINE = Grid(west=-180.0, north=90.0, res=0.01, width=36000, height=18000)
YEAR = 2000

_CHILD = """
import json, resource, sys, time
from pathlib import Path
from benchmarks.bench_target_cube import bench_config
root, what = Path(sys.argv[1]), sys.argv[2]
config = bench_config(root, years=[{year}], archive=None, pattern=str(root / "map_{{year}}.tif"),
                      coarse=root / "states.nc")
start = time.perf_counter()
if what == "ours":
    from ai4land.prepare import prepare_target
    prepare_target(config, progress=False)
else:
    import numpy as np, rasterio, zarr
    from ai4land.prepare.target import _lookup_table
    table, _ = _lookup_table(config)
    with rasterio.open(root / "map_{year}.tif") as src:
        codes = table[src.read(1)]
    array = zarr.create_array(store=str(root / "naive.zarr"), shape=(1, *codes.shape),
                              dtype="uint8", chunks=(1, 256, 256), fill_value=0, overwrite=True)
    array[0] = codes
wall = time.perf_counter() - start
print(json.dumps({{"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "wall_s": wall}}))
"""


def measure(root: Path, what: str) -> dict:
    result = subprocess.run([sys.executable, "-c", _CHILD.format(year=YEAR), str(root), what],
                            cwd=REPO, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> dict:
    with tempfile.TemporaryDirectory(prefix="bench_prepare_memory_") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        write_map(root / f"map_{YEAR}.tif", GLOBAL_FINE, seed=YEAR)
        write_coarse_file(root / "states.nc", GLOBAL_FINE.coarsened(25), years=[YEAR])
        generate_s = time.perf_counter() - start
        bench_config(root, years=[YEAR], archive=None, pattern=str(root / "map_{year}.tif"),
                     coarse=root / "states.nc")  # validate the config here, not in the child
        ours = measure(root, "ours")
        reference = measure(root, "naive")
        grids = json.loads((root / "cube" / "grids.json").read_text())
    return write_result(
        "prepare_target_memory",
        metric="peak_rss_mib",
        ours=ours["peak_rss_mib"],
        reference=reference["peak_rss_mib"],
        reference_name="naive full-band read + lookup + one Zarr write",
        target="< 2048 MiB",
        meets_target=ours["peak_rss_mib"] < 2048,
        params={
            "fine_grid": [GLOBAL_FINE.height, GLOBAL_FINE.width],
            "coarse_grid": [720, 1440],
            "factor": grids["factor"],
            "input": "uint8 DEFLATE tiled GeoTIFF, one year",
            "ours_wall_s": round(ours["wall_s"], 2),
            "reference_wall_s": round(reference["wall_s"], 2),
            "generate_input_s": round(generate_s, 1),
            "timing": "one run each, fresh process",
        },
    )


if __name__ == "__main__":
    main()
