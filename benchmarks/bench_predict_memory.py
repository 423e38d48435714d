"""predict_global_memory: peak RSS of one predict job on a global-width region.

A full global year (36000 x 18000) takes far longer than a benchmark may on 2 CPU
cores, so this measures global-width bands, 36000 x 1000, 2000 and 3000 pixels
(25-pixel coarse cells), each job in its own process: generated cube (the target and
static layers written chunk by chunk with dask, never whole), a tiny U-Net, tile 256.
Streaming bounds the peak whatever the height (it levels off once the pipeline of row
bands is full), so the same peak is what a global year needs; ``ours`` is the tallest
band's peak, ``reference`` the shortest one's (ratio ~1: no growth with height).

``predict_global_memory_production`` repeats it (same heights) with the
production model and predict settings of ``config/config.yaml`` (U-Net base 32, depth 4,
untrained; tile 512, overlap 64, batch 2): larger windows, activations and row bands.

``python -m benchmarks.bench_predict_memory --full-year`` runs the production job on a
whole global year, 36000 x 18000 pixels with the Earth's land and ocean (the
``global-land-mask`` package's 30 arc-second mask: 28.9 % of the area is land, and the
1436 of 3321 windows that see only ocean coarse cells are skipped, as in a real year),
then the model's forward passes alone over the same windows (``predict_global_year``:
``ours`` the job's wall seconds, target < 300 s and < 4 GiB on 2 cores; the job /
forward ratio at production size; ~25 minutes on 2 quiet cores, with generation and the
forward reference, so ``make bench`` leaves it out). The machine's load averages go into
its params: wall seconds are only meaningful on a quiet machine.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from benchmarks.common import run_child, write_result

WIDTH, FACTOR, HEIGHTS = 36000, 25, (1000, 2000, 3000)
PREDICT = {"tile_size": 256, "overlap": 32, "batch_size": 4, "device": "cpu"}
TINY = {"base_channels": 4, "depth": 2}

GENERATE = r'''
import json, sys, warnings
from pathlib import Path
import dask.array as da, numpy as np, xarray as xr
from ai4land.config import LUH2_FRACTIONS
from ai4land.grid import Grid
root, width, height, factor = Path(sys.argv[1]), *map(int, sys.argv[2:5])
layout = sys.argv[5]
warnings.filterwarnings("ignore", message="Consolidated metadata")
fine = Grid(west=-180.0, north=90.0, res=0.01, width=width, height=height)
coarse = fine.coarsened(factor)
root.mkdir(parents=True, exist_ok=True)
(root / "grids.json").write_text(json.dumps(
    {"fine": fine.to_dict(), "coarse": coarse.to_dict(), "factor": factor}))
coords = {"lat": fine.lat, "lon": fine.lon}
if layout == "earth":
    # the Earth's land (global-land-mask: GLOBE's 30 arc-second mask, True = ocean),
    # nearest-sampled at the grid's pixel centres
    from global_land_mask import globe
    ocean = globe._mask
    step = 1 / (globe._lat[0] - globe._lat[1])  # mask pixels per degree
    mask_rows = ((np.arange(height) + 0.5) * fine.res * step).astype(np.int64)
    mask_cols = ((np.arange(width) + 0.5) * fine.res * step).astype(np.int64)
    def is_land(r0, r1, c0, c1):
        return ~ocean[mask_rows[r0:r1]][:, mask_cols[c0:c1]]
else:  # a regular pattern of ocean rectangles over ~20 % of the pixels
    def is_land(r0, r1, c0, c1):
        rows, cols = np.arange(r0, r1)[:, None], np.arange(c0, c1)[None, :]
        return ((rows // 500 + cols // 700) % 5) != 0
def pattern(block, block_info=None):
    (r0, r1), (c0, c1) = block_info[None]["array-location"][-2:]
    rows = np.arange(r0, r1)[:, None]
    cols = np.arange(c0, c1)[None, :]
    codes = np.array([11, 22, 33, 44, 55, 66], dtype="uint8")
    out = codes[((rows // 37) * 7 + cols // 53) % 6]
    out[~is_land(r0, r1, c0, c1)] = 0  # ocean
    return out.reshape(block.shape)
shape, chunks = (height, width), (256, 256)
codes = da.zeros(shape, dtype="uint8", chunks=chunks).map_blocks(pattern, dtype="uint8")
lulc = xr.DataArray(codes[None], dims=("year", "lat", "lon"),
                    coords={"year": np.array([1960]), **coords})
lulc.encoding["chunks"] = (1, 256, 256)
xr.Dataset({"lulc": lulc}).to_zarr(root / "target.zarr", mode="w", consolidated=True)
land = (codes != 0).astype("uint8")
static = {name: xr.DataArray((codes.astype("float32") * k), dims=("lat", "lon"),
                             attrs={"mean": 40.0 * k, "std": 20.0 * k})
          for name, k in (("elevation", 10.0), ("clay", 0.5))}
static["land_mask"] = xr.DataArray(land, dims=("lat", "lon"))
xr.Dataset(static, coords=coords).to_zarr(root / "static.zarr", mode="w", consolidated=True)
rng = np.random.default_rng(0)
cshape = (1, coarse.height, coarse.width)
frac = rng.dirichlet(np.ones(len(LUH2_FRACTIONS)), size=(2, *cshape[1:])).astype("float32")
water = np.zeros(cshape[1:], dtype="float32")
if layout == "earth":  # LUH2's layout: land fractions sum to 1 - icwtr, ocean cells NaN
    share = np.empty(cshape[1:])
    band = max(1, 1000 // factor)  # coarse rows at a time
    for i in range(0, coarse.height, band):
        rows = slice(i * factor, min(i + band, coarse.height) * factor)
        land_rows = is_land(rows.start, rows.stop, 0, width)
        share[i:i + band] = land_rows.reshape(-1, factor, coarse.width, factor).mean(axis=(1, 3))
    frac *= share.astype("float32")[None, :, :, None]
    frac[:, share == 0] = np.nan
    water = (1 - share).astype("float32")
data = {n: (("year", "lat", "lon"), frac[..., i]) for i, n in enumerate(LUH2_FRACTIONS)}
data["icwtr"] = (("lat", "lon"), water)
(root / "coarse").mkdir(exist_ok=True)
xr.Dataset(data, coords={"year": np.array([1959, 1960]), "lat": coarse.lat, "lon": coarse.lon}
           ).to_zarr(root / "coarse" / "historical.zarr", mode="w", consolidated=True)
'''

JOB = r'''
import json, resource, sys, time
from pathlib import Path
import torch
from ai4land.config import parse_config
from ai4land.io.cube import Cube
from ai4land.models import ModelCard, UNet, save_model
from ai4land.predict.run import run_predict
from ai4land.samples.features import input_channel_names
torch.set_num_threads(2)
root, predict, architecture = Path(sys.argv[1]), *map(json.loads, sys.argv[2:4])
config = parse_config({
    "paths": {"raw": str(root / "raw"), "cube": str(root / "cube"),
              "results": str(root / "results")},
    "datasets": {"coarse": {"historical": "unused.nc"},
                 "fine": {"pattern": "unused_{year}.tif", "years": [1960, 1960]}},
    "years": {"train": [1960, 1960], "test": [1960, 1960], "backward": [1959, 1959]},
    "predict": predict}, source="benchmark")
names = input_channel_names(Cube.from_config(config), list(config.classes.predicted))
torch.manual_seed(0)
model = UNet(len(names), 7, **architecture)
save_model(root / "model", model, ModelCard(input_channels=names, tile_size=predict["tile_size"],
           classes=list(config.classes.predicted), architecture=model.config))
start = time.perf_counter()
report = run_predict(config, scenario="historical", year=1959, model_dir=root / "model",
                     prior_path=None, output=root / "maps" / "x.tif",
                     store=root / "product.zarr", progress=False)
result = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "wall_s": time.perf_counter() - start, "timings_s": report["timings_s"]}
if sys.argv[4:] == ["forward"]:
    # The model's forward passes alone over the job's windows, as the job runs them (one
    # single-threaded stream per core, free-running), a row of windows at a time with
    # its inputs built beforehand (untimed; a row of a global year is ~2 GB of inputs).
    from concurrent.futures import ThreadPoolExecutor
    from ai4land.grid import Window
    from ai4land.predict.inference import _intra_op_threads, plan_batches, tile_rows
    from ai4land.predict.probabilities import plan_prediction
    from benchmarks.bench_predict_overhead import input_batch, model_forward
    cube = Cube.from_config(config)
    forward = model_forward(root / "model")
    streams = torch.get_num_threads()
    cells = cube.coarse_cells("historical", 1959, Window(0, 0, *cube.fine_grid.shape))
    forward_s = 0.0
    windows, skip = plan_prediction(config, cube=cube, cells=cells)  # the job's windows
    with _intra_op_threads(1), ThreadPoolExecutor(streams) as pool:
        for row in tile_rows([w for w in windows if w not in skip]):
            band = cube.target_window(  # the job's anchor (first observed year)
                1960, Window(row[0].row, 0, row[0].height, cube.fine_grid.width))
            xs = [input_batch(cube, batch, predicted=list(config.classes.predicted),
                              year=1959, prior=lambda w: band[:, w.col:w.col + w.width],
                              pad_multiple=2 ** architecture["depth"], coarse_cells=cells)
                  for batch in plan_batches(row, -(-predict["batch_size"] // streams))]
            t0 = time.perf_counter()
            list(pool.map(forward, xs))
            forward_s += time.perf_counter() - t0
    result.update(forward_s=forward_s, ratio=result["wall_s"] / forward_s, windows=len(windows),
                  windows_skipped=len(skip))
print(json.dumps(result))
'''


def generate(root: Path, height: int, *, layout: str = "pattern") -> None:
    """The generated cube under ``root`` (``WIDTH`` x ``height``): ``layout`` "pattern"
    (regular ocean rectangles, no ocean coarse cell) or "earth" (the Earth's land)."""
    run_child([sys.executable, "-c", GENERATE, str(root), str(WIDTH), str(height),
                    str(FACTOR), layout], check=True)


def run(height: int, *, predict: dict = PREDICT, architecture: dict = TINY,
        forward: bool = False, layout: str = "pattern") -> dict:
    """Peak memory and wall time of the job (in its own process) on a generated cube of
    ``height`` rows (:func:`generate`); with ``forward``, also the model's forward passes
    alone over the same windows afterwards (``forward_s``, ``ratio``)."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root / "cube", height, layout=layout)
        done = run_child([sys.executable, "-c", JOB, str(root), json.dumps(predict),
                               json.dumps(architecture), *(["forward"] if forward else [])],
                              capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"predict job failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def height_sweep(name: str, *, predict: dict, architecture: dict, model: str,
                 **params) -> None:
    """Peak memory of the job at each of ``HEIGHTS``; ours = the tallest, reference = the
    shortest (a ratio ~1 means no growth with height)."""
    results = {h: run(h, predict=predict, architecture=architecture) for h in HEIGHTS}
    small, large = (results[h]["peak_rss_mib"] for h in (HEIGHTS[0], HEIGHTS[-1]))
    write_result(
        name, metric="peak_rss_mib", ours=large, reference=small,
        reference_name=f"same job, {WIDTH} x {HEIGHTS[0]} (growth check)",
        target="peak < 4096 MiB, independent of height", meets_target=large < 4096,
        params={"width": WIDTH, "heights": list(HEIGHTS), "factor": FACTOR, **predict,
                "model": model, "runs": {str(h): r for h, r in results.items()}, **params},
    )


def main() -> None:
    height_sweep("predict_global_memory", predict=PREDICT, architecture=TINY,
                 model="UNet base 4, depth 2",
                 note="global-width bands, not a full 36000 x 18000 year (too slow on 2 "
                      "cores); streamed memory does not depend on height")
    production()


def production() -> None:
    from benchmarks.bench_predict_overhead import production_settings

    architecture, predict = production_settings()
    height_sweep("predict_global_memory_production", predict=predict,
                 architecture=architecture,
                 model=f"UNet {architecture} (config/config.yaml), untrained")


def load_average() -> list[float]:
    """The machine's 1, 5 and 15 minute load averages (``uptime``)."""
    import os

    return [round(x, 2) for x in os.getloadavg()]


def full_year() -> None:
    """``predict_global_year``: the production job on a whole global year with the
    Earth's land (``layout="earth"``); ours = its wall seconds, reference = the model's
    forward passes alone over the same windows, in the same process afterwards."""
    from benchmarks.bench_predict_overhead import production_settings

    try:
        import global_land_mask  # noqa: F401  (the generator's land layout)
    except ImportError:
        raise SystemExit("predict_global_year needs the global-land-mask package: "
                         "pip install -e '.[bench]' (or make install)") from None
    architecture, predict = production_settings()
    load_before = load_average()
    result = run(18000, predict=predict, architecture=architecture, forward=True,
                 layout="earth")
    wall, peak = result["wall_s"], result["peak_rss_mib"]
    write_result(
        "predict_global_year", metric="wall_s", ours=wall, reference=result["forward_s"],
        reference_name="the model's forward passes alone over the job's windows "
                       "(inputs built beforehand, untimed)",
        target="wall < 300 s and peak < 4096 MiB on 2 cores",
        meets_target=wall < 300 and peak < 4096,
        params={"width": WIDTH, "height": 18000, "factor": FACTOR, **predict,
                "model": f"UNet {architecture} (config/config.yaml), untrained",
                "layout": "the Earth's land (global-land-mask 1.0.0, GLOBE 30 arc-second "
                          "mask), 28.9 % of the area; coarse cells without land NaN",
                "load_average_before": load_before, "load_average_after": load_average(),
                **result},
    )


if __name__ == "__main__":
    if "--full-year" in sys.argv[1:]:
        full_year()
    elif "--production" in sys.argv[1:]:
        production()
    else:
        main()
