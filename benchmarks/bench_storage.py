"""storage_per_year: bytes on disk of one (scenario, year) product.

One predict job of ``bench_predict_overhead`` (1800 x 1800 generated pixels, the
production U-Net trained briefly on them, production predict settings): the class COG,
probability and entropy COGs, and the job's Zarr chunks (lulc, probability, entropy).
The global figure scales bytes per pixel to 36000 x 18000; real maps (~70 % ocean that
compresses to almost nothing, more detail on land) will differ, so it is an estimate.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from benchmarks.bench_predict_overhead import SIZE, predict_job, trained_world
from benchmarks.common import write_result

GLOBAL_PIXELS = 36000 * 18000


def main() -> None:
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config, model_dir, _ = trained_world(root)
        report = predict_job(config, root, model_dir)
        maps = root / "results" / "maps" / model_dir.name
        cogs = {p.name: p.stat().st_size for p in sorted(maps.glob("*.tif"))}
        store = root / "results" / model_dir.name / "ai4land.zarr"
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
                "compress_level": config.predict.compress_level,
                "uncertainty_compress_level": config.predict.uncertainty_compress_level,
                "note": "generated world, briefly trained production model; global value = "
                        "bytes per pixel x 36000 x 18000 (estimate)"},
    )


if __name__ == "__main__":
    main()
