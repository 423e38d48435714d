"""Whole-period figure of merit of one model's harmonised U-Net chains against the cheap
allocation baselines (the evaluation's own runner, test blocks and chains; no gradient
boosting), with the paired block-bootstrap difference to each baseline and the final-year
OA / mIoU per chain: the ablation runs of docs/quality.md.

    python scripts/chain_ablation.py config/demo.yaml results results/model
"""
import json
import sys
import time

from ai4land.config import load_config
from ai4land.evaluate import run as R
from ai4land.evaluate.bootstrap import BlockBootstrap
from ai4land.evaluate.scores import ModelScores

cfg_path, results, model_dir = sys.argv[1:4]
names = tuple(sys.argv[4:]) or (
    "unet",
    "unet_raw",
    "persistence",
    "random_change",
    "neighbourhood_density",
)
config = load_config(cfg_path)
setup = R._Setup.load(config, model_dir=model_dir, split_path=f"{results}/split/split.json")
runner = R._Runner(config, cube=setup.cube, model=setup.model, gbm=None, sites=setup.sites,
                   names=names, classes=setup.classes, blocks=setup.blocks,
                   uses_demand=setup.uses_demand)
t = time.time()
for chain in setup.chains:
    runner.run(chain)
boot = BlockBootstrap(len(setup.blocks), n_replicates=1000, seed=config.seed, level=0.95)
out = {"model": model_dir, "demand": setup.uses_demand}
inputs = {}
for name in names:
    pooled = ModelScores.pooled([c.scores[name] for c in setup.chains])
    inputs[name] = pooled.interval_inputs()
    rep = pooled.report()
    final = {}
    for c in setup.chains:
        y = c.scores[name].report()["by_year"][str(c.years[-1])]
        final[c.name] = {k: round(y[k], 4) for k in ("oa", "miou") if k in y}
    stab = rep.get("stability", {})
    out[name] = {
        "fom": round(rep["period"]["fom"], 4) if "period" in rep else None,
        "iso": stab.get("isolated_share") if isinstance(stab, dict) else None,
        "oa": round(rep.get("oa", float("nan")), 4),
        "miou": round(rep.get("miou", float("nan")), 4),
        "final": final,
    }
for name in names:
    if name in ("unet", "unet_raw", "persistence") or "period_fom" not in inputs[name]:
        continue
    stats, compute, _ = inputs["unet"]["period_fom"]
    d = boot.difference(stats, inputs[name]["period_fom"][0], compute).to_json()
    out["unet-" + name] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}
out["s"] = round(time.time() - t)
print(json.dumps(out))
