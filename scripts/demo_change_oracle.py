"""Diagnostic: how much can any scorer gain over neighbourhood density on a demo world?

An *oracle* scorer that knows the demo world's own yearly transition probabilities
(``demo_world._step``'s p of every process, computed from the chain's previous map and
the world's hidden landscape: suitabilities, regimes, natural vegetation) takes the
place of ``smooth_coarse`` in the evaluation's own runner, so it is finalised like the
allocation baselines (same delta target, change allocation, smoothing) on the same
chains and test blocks. Backward chains get the same forward-process scores (an
approximation). Prints the whole-period figure of merit per chain and pooled, and the
oracle minus neighbourhood density (paired block bootstrap). Uses private functions of
``ai4land.demo_world`` and ``ai4land.evaluate.run``: a diagnostic, not a product path.

    python scripts/demo_change_oracle.py config/demo.yaml results results/model
"""
import json
import sys
import time

import numpy as np
from scipy import ndimage

from ai4land import demo_world as W
from ai4land.config import load_config
from ai4land.evaluate import run as R
from ai4land.evaluate.bootstrap import BlockBootstrap
from ai4land.evaluate.scores import ModelScores

cfg_path, results, model_dir = sys.argv[1:4]
config = load_config(cfg_path)
grids = W._grids(config)
terrain = W._terrain(config.seed, grids)
scape, _ = W._landscape(config.seed, grids, terrain)


def oracle(prior_codes, outer, area, year, classes):
    sl = outer.slices
    S = prior_codes
    nb = {c: ndimage.uniform_filter((c == S).astype("float32"), size=7, mode="nearest")
          for c in (W.URBAN, W.CROP, W.PASTURE, W.FOREST)}

    def g(a):
        return a[sl]

    sig = W._sigmoid
    R_ = W.RATES
    a_urban = R_["urban"] * (0.5 + sig((year - 1975) / 8.0))
    a_ce = R_["crop_expand"] * (0.25 + 1.0 - sig((year - 1988) / 6.0))
    a_ca = R_["crop_abandon"] * (0.25 + sig((year - 1975) / 8.0))
    a_df = R_["deforest"] * (0.2 + 1.0 - sig((year - 1995) / 6.0))
    a_pa = R_["pasture_abandon"] * (0.25 + sig((year - 1985) / 8.0))
    p = {c: np.zeros(S.shape, "float32") for c in classes}
    p[W.FOREST] += (
        ((S == W.GRASS) & (g(scape.pnv) == W.FOREST)) * R_["regrowth"] * nb[W.FOREST] ** 1.5
    )
    p[W.GRASS] += (
        (S == W.CROP) * a_ca * g(scape.abandon) * (1.2 - nb[W.CROP]) * (1.3 - g(scape.crop_suit))
    )
    p[W.GRASS] += (
        (S == W.PASTURE)
        * a_pa
        * g(scape.abandon)
        * (1.2 - nb[W.PASTURE])
        * (1.3 - g(scape.pasture_suit))
    )
    p[W.PASTURE] += (
        (S == W.FOREST)
        * a_df
        * g(scape.expand)
        * nb[W.PASTURE]
        * (0.3 + 0.7 * g(scape.pasture_suit))
    )
    src = (S == W.FOREST) | (S == W.PASTURE) | (S == W.GRASS)
    p[W.CROP] += src * a_ce * g(scape.expand) * nb[W.CROP] * (0.2 + 0.8 * g(scape.crop_suit))
    edge = nb[W.CROP] * nb[W.PASTURE] * 4.0
    p[W.PASTURE] += (
        (S == W.CROP)
        * R_["rotation"]
        * edge
        * (g(scape.pasture_suit) - g(scape.crop_suit) + 0.2).clip(0)
    )
    p[W.CROP] += (
        (S == W.PASTURE)
        * R_["rotation"]
        * edge
        * (g(scape.crop_suit) - g(scape.pasture_suit) + 0.2).clip(0)
    )
    p[W.URBAN] += (
        (g(scape.land) & (S != W.URBAN) & (S != W.SPARSE))
        * a_urban
        * nb[W.URBAN]
        * (0.2 + g(scape.urban_suit))
    )
    out = np.stack([np.clip(p[c], 0, 1) for c in classes], axis=-1)
    own = np.zeros(S.shape, "float32")
    for k, c in enumerate(classes):
        own += (c == S) * out[..., k]
    for k, c in enumerate(classes):  # staying: 1 - the chances of leaving
        out[..., k] = np.where(c == S, np.clip(1.0 - out.sum(-1) + own, 0, 1), out[..., k])
    return out[area]


class Oracle(R._Runner):
    def _baseline_scores(self, at, name, prior, index):
        if name == "smooth_coarse" and prior is not None:
            return oracle(prior, at.site.outer, at.area, at.year, self.classes)
        return super()._baseline_scores(at, name, prior, index)


names = ("unet", "unet_raw", "random_change", "neighbourhood_density", "smooth_coarse")
setup = R._Setup.load(config, model_dir=model_dir, split_path=f"{results}/split/split.json")
runner = Oracle(
    config,
    cube=setup.cube,
    model=setup.model,
    gbm=None,
    sites=setup.sites,
    names=names,
    classes=setup.classes,
    blocks=setup.blocks,
    uses_demand=setup.uses_demand,
)
t = time.time()
out = {}
for chain in setup.chains:
    runner.run(chain)
    for name in names:
        rep = chain.scores[name].report()
        out.setdefault(chain.name, {})[name] = (
            round(rep["period"]["fom"], 4) if "period" in rep else None
        )
boot = BlockBootstrap(len(setup.blocks), n_replicates=1000, seed=config.seed, level=0.95)
inputs = {}
for name in names:
    pooled = ModelScores.pooled([c.scores[name] for c in setup.chains])
    inputs[name] = pooled.interval_inputs()
    out.setdefault("pooled", {})[name] = round(pooled.report()["period"]["fom"], 4)
stats, compute, _ = inputs["smooth_coarse"]["period_fom"]
d = boot.difference(stats, inputs["neighbourhood_density"]["period_fom"][0], compute).to_json()
out["oracle-neighbourhood_density"] = {
    k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()
}
out["s"] = round(time.time() - t)
print(json.dumps(out))
