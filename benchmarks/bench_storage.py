"""storage_per_year: bytes on disk of one (scenario, year) product.

One predict job on the demo-sized world (600 x 600 synthetic pixels, default U-Net with
random weights, so class maps are blotchier than a trained model's): the class COG,
probability and entropy COGs, and the job's Zarr chunks (lulc, probability, entropy).
The global figure scales bytes per pixel to 36000 x 18000; real maps (a trained model,
~70 % ocean that compresses to almost nothing) will differ, so it is an estimate only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks.bench_predict_overhead import SIZE, demo_job_world, predict_job
from benchmarks.common import write_result

GLOBAL_PIXELS = 36000 * 18000


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = demo_job_world(root)
        report = predict_job(config, root)
        maps = root / "results" / "maps" / "historical"
        cogs = {p.name: p.stat().st_size for p in sorted(maps.glob("*.tif"))}
        store = root / "results" / "product" / "ai4land.zarr"
        s = config.product_scenarios.index(report["scenario"])
        y = config.product_years.index(report["year"])
        chunks = {layer: sum(p.stat().st_size for p in (store / layer).glob(f"{s}.{y}.*"))
                  for layer in ("lulc", "probability", "entropy")}
    total = sum(cogs.values()) + sum(chunks.values())
    per_pixel = total / SIZE**2
    write_result(
        "storage_per_year", metric="bytes_per_scenario_year", ours=float(total),
        reference=None, reference_name=None, target=None, meets_target=None,
        params={"grid": [SIZE, SIZE], "cog_bytes": cogs, "zarr_chunk_bytes": chunks,
                "bytes_per_pixel": round(per_pixel, 4),
                "global_estimate_gib": round(per_pixel * GLOBAL_PIXELS / 2**30, 2),
                "note": "synthetic demo world, untrained model; global value = bytes per "
                        "pixel x 36000 x 18000 (estimate)"},
    )


if __name__ == "__main__":
    main()
