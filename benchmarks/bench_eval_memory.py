"""eval_memory: peak RSS of ``ai4land evaluate`` on a global-width region, two heights.

The evaluation streams test block by test block (predict's windows around each block,
finalised by predict's code), so its memory should not grow with the region. Each run
is its own process: a generated cube 36000 pixels wide (25-pixel coarse cells, five
observed years 1958-1962, the target and static layers written chunk by chunk with
dask, never whole), the split written beforehand (8 test blocks of 100 pixels; train
1958-1959, test 1960-1961: a forward chain from 1959 and a backward chain from 1962), a
tiny untrained U-Net, tile 256. ``ours`` is the taller region's peak, ``reference`` the
shorter one's (ratio ~1: no growth with height); the target is the evaluate rule's
memory (``mem_mb`` 8000 in workflow/rules/evaluate.smk; the Slurm profile gives 16000).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from benchmarks.common import run_child, write_result

WIDTH, FACTOR, HEIGHTS = 36000, 25, (1000, 3000)
YEARS = (1958, 1962)
RULE_MEM_MIB = 8000
PREDICT = {"tile_size": 256, "overlap": 32, "batch_size": 4, "device": "cpu"}
TINY = {"base_channels": 4, "depth": 2}
SPLIT = {"block_size": 100, "n_test_blocks": 8, "n_val_blocks": 2, "buffer_blocks": 1}
EVALUATE = {"gbm_samples": 20000, "gbm_years": 2, "gbm_max_iter": 20, "figure_tiles": 2,
            "bootstrap_replicates": 200}

GENERATE = r'''
import json, sys, warnings
from pathlib import Path
import dask.array as da, numpy as np, xarray as xr
from ai4land.config import LUH2_FRACTIONS
from ai4land.grid import Grid
root, width, height, factor, first, last = Path(sys.argv[1]), *map(int, sys.argv[2:7])
years = np.arange(first, last + 1)
warnings.filterwarnings("ignore", message="Consolidated metadata")
fine = Grid(west=-180.0, north=90.0, res=0.01, width=width, height=height)
coarse = fine.coarsened(factor)
root.mkdir(parents=True, exist_ok=True)
(root / "grids.json").write_text(json.dumps(
    {"fine": fine.to_dict(), "coarse": coarse.to_dict(), "factor": factor}))
coords = {"lat": fine.lat, "lon": fine.lon}
def pattern(block, block_info=None):
    (t0, _), (r0, _), (c0, _) = block_info[None]["array-location"]
    rows = np.arange(r0, r0 + block.shape[-2])[:, None]
    cols = np.arange(c0, c0 + block.shape[-1])[None, :]
    codes = np.array([11, 22, 33, 44, 55, 66], dtype="uint8")
    out = np.empty(block.shape, dtype="uint8")
    for t in range(block.shape[0]):  # fields drift east a little every year
        out[t] = codes[((rows // 37) * 7 + (cols + 3 * (t0 + t)) // 53) % 6]
        out[t][((rows // 500 + cols // 700) % 5) == 0] = 0  # some ocean
    return out
shape, chunks = (len(years), height, width), (1, 256, 256)
codes = da.zeros(shape, dtype="uint8", chunks=chunks).map_blocks(pattern, dtype="uint8")
lulc = xr.DataArray(codes, dims=("year", "lat", "lon"), coords={"year": years, **coords})
lulc.encoding["chunks"] = chunks
xr.Dataset({"lulc": lulc}).to_zarr(root / "target.zarr", mode="w", consolidated=True)
land = (codes[0] != 0).astype("uint8")
static = {name: xr.DataArray((codes[0].astype("float32") * k), dims=("lat", "lon"),
                             attrs={"mean": 40.0 * k, "std": 20.0 * k})
          for name, k in (("elevation", 10.0), ("clay", 0.5))}
static["land_mask"] = xr.DataArray(land, dims=("lat", "lon"))
xr.Dataset(static, coords=coords).to_zarr(root / "static.zarr", mode="w", consolidated=True)
rng = np.random.default_rng(0)
cshape = (len(years), coarse.height, coarse.width)
frac = rng.dirichlet(np.ones(len(LUH2_FRACTIONS)), size=cshape).astype("float32")
data = {n: (("year", "lat", "lon"), frac[..., i]) for i, n in enumerate(LUH2_FRACTIONS)}
data["icwtr"] = (("lat", "lon"), np.zeros(cshape[1:], dtype="float32"))
(root / "coarse").mkdir(exist_ok=True)
xr.Dataset(data, coords={"year": years, "lat": coarse.lat, "lon": coarse.lon}
           ).to_zarr(root / "coarse" / "historical.zarr", mode="w", consolidated=True)
'''

SETUP = r'''
import json, sys
from pathlib import Path
import torch
from ai4land.config import parse_config
from ai4land.io.cube import Cube
from ai4land.models import ModelCard, UNet, save_model
from ai4land.samples.features import input_channel_names
from ai4land.samples.split import run_split
root = Path(sys.argv[1])
config = parse_config(json.loads((root / "config.json").read_text()), source="benchmark")
run_split(config, output=root / "split.json", figure=root / "split.png")
names = input_channel_names(Cube.from_config(config), list(config.classes.predicted))
torch.manual_seed(0)
model = UNet(len(names), 7, **json.loads(sys.argv[2]))
save_model(root / "model", model, ModelCard(input_channels=names, tile_size=256,
           classes=list(config.classes.predicted), architecture=model.config))
'''

JOB = r'''
import json, resource, sys, time
from pathlib import Path
import torch
from ai4land.config import parse_config
from ai4land.evaluate import run_evaluate
torch.set_num_threads(2)
root = Path(sys.argv[1])
config = parse_config(json.loads((root / "config.json").read_text()), source="benchmark")
start = time.perf_counter()
metrics = run_evaluate(config, model_dir=root / "model", split_path=root / "split.json",
                       output=root / "eval" / "metrics.json")
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "wall_s": time.perf_counter() - start,
                  "test_pixels": metrics["split"]["test_pixels"],
                  "unet_oa": metrics["models"]["unet"]["oa"]}))
'''


def _config(root: Path) -> dict:
    return {
        "paths": {"raw": str(root / "raw"), "cube": str(root / "cube"),
                  "results": str(root / "results")},
        "datasets": {"coarse": {"historical": "unused.nc"},
                     "fine": {"pattern": "unused_{year}.tif", "years": list(YEARS)}},
        "years": {"train": [1958, 1959], "test": [1960, 1961]},
        "split": SPLIT, "predict": PREDICT, "evaluate": EVALUATE,
    }


def run(height: int) -> dict:
    """Peak memory and wall time of ``run_evaluate`` (its own process) on a generated
    global-width cube of ``height`` rows."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run_child([sys.executable, "-c", GENERATE, str(root / "cube"), str(WIDTH),
                        str(height), str(FACTOR), *map(str, YEARS)], check=True)
        (root / "config.json").write_text(json.dumps(_config(root)))
        run_child([sys.executable, "-c", SETUP, str(root), json.dumps(TINY)], check=True)
        done = run_child([sys.executable, "-c", JOB, str(root)], capture_output=True,
                              text=True)
        if done.returncode:
            raise SystemExit(f"evaluate failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    results = {h: run(h) for h in HEIGHTS}
    small, large = (results[h]["peak_rss_mib"] for h in (HEIGHTS[0], HEIGHTS[-1]))
    write_result(
        "eval_memory", metric="peak_rss_mib", ours=large, reference=small,
        reference_name=f"same evaluation, {WIDTH} x {HEIGHTS[0]} (growth check)",
        target=f"peak < {RULE_MEM_MIB} MiB (the evaluate rule's mem_mb), not growing with "
               "height (ratio < 1.2)",
        meets_target=large < RULE_MEM_MIB and large / small < 1.2,
        params={"width": WIDTH, "heights": list(HEIGHTS), "factor": FACTOR,
                "years": list(YEARS), **PREDICT, "split": SPLIT, "evaluate": EVALUATE,
                "model": "UNet base 4, depth 2, untrained",
                "runs": {str(h): r for h, r in results.items()}},
    )


if __name__ == "__main__":
    main()
