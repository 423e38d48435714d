"""Score the published maps: harmonised chains of the U-Net and of the baselines on
held-out blocks and years.

Chains (:mod:`ai4land.evaluate.chains`) run as ``predict`` runs them: *forward* from
the observed map of the year before the test years through the test years, and
*backward* from the observed map of the year after them down to the first test year
(each where that map is observed); every chain year is finalised by predict's own
:class:`~ai4land.predict.finalise.Finaliser` (harmonisation to the delta-method target anchored
at the start map, then the layers), streamed test block by test block. Each chain year
is scored, and so is the whole-period change (start map -> last chain year).

Models (``metrics.json`` ``models``; the keys are in docs/design.md):

* ``unet``: the U-Net's harmonised chain, what predict publishes (the headline);
* ``unet_raw``: the plain argmax of the same forward passes, before harmonisation;
* ``unet_teacher_forced``: harmonised, the prior the observed map of the chain's
  previous year (not a chain; ``drift`` is ``unet`` minus it per year);
* ``persistence``: the start map, unchanged; ``coarse_majority`` and
  ``random_allocation``: maps from the LUH-mapped coarse fractions, not harmonised;
* allocation baselines (:data:`ALLOCATION_BASELINES`), chained and finalised like the
  U-Net (same target, exact whole-pixel counts per cell): ``random_change``,
  ``neighbourhood_density``, ``gradient_boosting``, ``smooth_coarse``
  (:mod:`ai4land.evaluate.baselines`).

Single-year data (no observed map before or after the test years, e.g. one observed
map): no chain, no prior. Each test year is predicted on its own and harmonised to the
LUH-mapped fractions (the delta-method target has no other anchor than the map being
scored); no persistence, teacher forcing or persistence-preferring baselines, and the
change scores are undefined (null).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ai4land.config import stage_config
from ai4land.device import resolve_device
from ai4land.errors import GridError, InputDataError
from ai4land.evaluate.baselines import (
    GradientBoostingBaseline,
    coarse_majority,
    density_scores,
    gradient_boosting_sample,
    pixel_features,
    random_allocation,
    random_change_scores,
    smooth_scores,
)
from ai4land.evaluate.bootstrap import BlockBootstrap
from ai4land.evaluate.chains import Site, plan_sites, site_demand, site_probabilities
from ai4land.evaluate.models import (
    ALLOCATION_BASELINES,
    CHAINED,
    MODELS,
    SINGLE_YEAR_MODELS,
    Chain,
    plan_chains,
)
from ai4land.evaluate.report import compare, drift, finite, model_reports, write_report
from ai4land.evaluate.scores import ModelScores
from ai4land.evaluate.stability import stability_counts
from ai4land.grid import Window
from ai4land.io.cube import Cube
from ai4land.predict.finalise import Finaliser
from ai4land.predict.harmonize import (
    Groups,
    class_groups,
    conservation_error,
    map_group_fractions,
    offset_weight,
)
from ai4land.predict.probabilities import ensemble_seed
from ai4land.samples.features import (
    build_inputs,
    codes_to_index,
    demand_groups_of,
    input_channel_names,
    smooth_of,
)
from ai4land.samples.split import Block, Split, load_split

log = logging.getLogger(__name__)

# fed the observed map of each previous year: their end map holds the observed change
# of the period, so they have no whole-period change score
OBSERVED_PRIOR = ("unet_teacher_forced",)
TILE_PANELS = ("unet", "unet_raw", "neighbourhood_density", "gradient_boosting", "persistence")
LAYERS = ["lulc", "probability", "raw"]  # what the evaluation takes from the Finaliser


# The split roles whose blocks an evaluation can score.
SCORED_ROLES = ("test", "val")


def run_evaluate(config, *, model_dir: Path, split_path: Path, output: Path,
                 figures_dir: Path | None = None, blocks: str = "test") -> dict:
    """Score every model; write ``output`` (metrics.json), tables beside it, figures.

    ``blocks``: the split's blocks scored, "test" (the published quality) or "val" (to
    choose settings, e.g. allocation or training options, without looking at the test
    blocks; the same test years and chains)."""
    if blocks not in SCORED_ROLES:
        raise ValueError(f"blocks must be one of {SCORED_ROLES}, got {blocks!r}")
    config = stage_config(config, "evaluate")  # reads only its slice
    setup = _Setup.load(config, model_dir=model_dir, split_path=split_path, role=blocks)
    gbm, train_pixels = _fit_gradient_boosting(config, setup)
    runner = _Runner(config, cube=setup.cube, model=setup.model, gbm=gbm, sites=setup.sites,
                     names=setup.names, classes=setup.classes, blocks=setup.blocks,
                     uses_demand=setup.uses_demand, smooth=setup.smooth)
    tiles: list[dict] = []
    for chain in setup.chains:
        chain_tiles = runner.run(chain)
        tiles = tiles or chain_tiles

    settings = config.evaluate
    bootstrap = BlockBootstrap(len(setup.blocks), n_replicates=settings.bootstrap_replicates,
                               seed=config.seed, level=settings.confidence_level)
    models, pooled = model_reports(setup.names, setup.chains, bootstrap,
                                   single_year=setup.single_year)
    classes = setup.classes
    metrics = finite({
        "split": setup.split_report(test_pixels=sum(int(m.sum()) for m in runner.scored_pixels)),
        "scored_map": "harmonised" if config.predict.harmonize else "raw",
        "classes": classes,
        "legend": {str(c): config.classes.legend[c] for c in classes},
        "models": models,
        "comparison": compare(pooled, models, bootstrap),
        "drift": ({} if setup.single_year else
                  drift(models["unet"], models["unet_teacher_forced"])),
        "class_area": {chain.name: chain.area for chain in setup.chains},
        "gradient_boosting": {"train_pixels": train_pixels, "max_iter": settings.gbm_max_iter},
        "density_kernel": settings.density_kernel,
    })
    write_report(metrics, tiles, output, figures_dir=figures_dir, legend=config.classes.legend)
    return metrics


@dataclass
class _Setup:
    """What an evaluation scores: the cube, split, model, test years, chains and sites."""

    cube: Cube
    split: Split
    classes: list[int]
    model: object
    years: list[int]
    chains: list[Chain]
    sites: list[Site]
    uses_demand: bool = False  # the model has demand channels (train.demand)
    smooth: Groups | None = None  # the groups of its smooth channels (train.smooth_coarse)
    role: str = "test"  # the split's blocks scored (SCORED_ROLES)

    @classmethod
    def load(cls, config, *, model_dir: Path, split_path: Path, role: str = "test") -> _Setup:
        """Read and check the cube, split and model; plan the chains and sites."""
        from ai4land.models.card import check_inputs, load_model

        cube = Cube.from_config(config)
        split = load_split(split_path)
        classes = list(config.classes.predicted)
        if (split.height, split.width) != cube.fine_grid.shape:
            raise GridError(f"{split_path}: split is for a {split.height}x{split.width} grid, "
                            f"cube is {cube.fine_grid.shape}; rerun `ai4land split`")
        model, card = load_model(model_dir)
        uses_demand = bool(demand_groups_of(card.input_channels))
        groups = class_groups(config.datasets.coarse.groups, classes)
        demand = groups.names if uses_demand else ()
        smooth = smooth_of(card.input_channels, groups)
        check_inputs(card, input_channel_names(cube, classes, demand=demand, smooth=smooth))
        observed = cube.target_years
        years = [y for y in split.test_years if y in observed]
        if not years:
            raise InputDataError(f"{config.paths.cube}: holds no observed map of the test "
                                 f"years {list(split.test_years)}; check years.test")
        chains = plan_chains(years, observed)
        if chains[0].start is None:
            log.info("no observed map before or after the test years: single-year "
                     "evaluation (U-Net without prior; no persistence, chains or change "
                     "scores)")
        sites = plan_sites(config, shape=cube.fine_grid.shape, factor=cube.factor, split=split,
                           role=role)
        if not sites:
            raise InputDataError(f"{split_path}: the split has no {role} block to score")
        return cls(cube=cube, split=split, classes=classes, model=model, years=years,
                   chains=chains, sites=sites, uses_demand=uses_demand, smooth=smooth,
                   role=role)

    @property
    def single_year(self) -> bool:
        return self.chains[0].start is None

    @property
    def names(self) -> tuple[str, ...]:
        return SINGLE_YEAR_MODELS if self.single_year else MODELS

    @property
    def test_blocks(self) -> list[Block]:
        return [b for b in self.split.blocks if b.role == self.role]

    @property
    def blocks(self) -> list[dict]:
        return [{"id": b.id, "row": b.row, "col": b.col} for b in self.test_blocks]

    def split_report(self, *, test_pixels: int) -> dict:
        """``metrics.json`` ``split``."""
        test_blocks = self.test_blocks
        return {
            "scored_role": self.role,
            "test_blocks": len(test_blocks),
            "test_block_ids": [b.id for b in test_blocks],
            "block_size": self.split.block_size,
            "test_years": self.years,
            "test_pixels": test_pixels,
            "seed": self.split.seed,
            "mode": "single-year" if self.single_year else "multi-year",
            "chains": {c.name: {"direction": c.direction, "start": c.start, "years": c.years}
                       for c in self.chains},
        }


def _fit_gradient_boosting(config, setup: _Setup) -> tuple[GradientBoostingBaseline, int]:
    """The gradient-boosting baseline fitted on a sample of training pixels; the sample size."""
    settings = config.evaluate
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    features, targets = gradient_boosting_sample(
        setup.cube, split=setup.split, classes=setup.classes, max_samples=settings.gbm_samples,
        max_years=settings.gbm_years, rng=rng, with_prior=not setup.single_year)
    gbm = GradientBoostingBaseline(classes=setup.classes, max_iter=settings.gbm_max_iter,
                                   seed=config.seed).fit(features, targets)
    log.info("gradient boosting: %d pixels, %.1f s", len(targets), time.perf_counter() - started)
    return gbm, int(len(targets))


@dataclass
class _SiteYear:
    """One site and year of a chain while its models' maps are made."""

    chain: Chain
    year: int
    site: Site
    scenario: str
    cells: np.ndarray  # the region's coarse cells of the year
    finaliser: Finaliser
    state: dict  # chained model -> site label -> its map of the previous year (outer)
    area: tuple[slice, slice]  # site.area inside site.outer
    land: np.ndarray  # land over site.area
    previous_observed: np.ndarray | None  # the observed map of the previous year (outer)
    maps: dict[str, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)

    def prior(self, name: str) -> np.ndarray | None:
        """``name``'s prior over ``site.outer``: its own chain's map, or the observed map
        of the previous year (teacher forcing; None in single-year evaluations)."""
        if name in self.state:
            return self.state[name][self.site.label]
        return self.previous_observed


class _Runner:
    """Runs chains over the sites and scores every model's maps."""

    def __init__(self, config, *, cube: Cube, model, gbm, sites: list[Site], names,
                 classes: list[int], blocks: list[dict], uses_demand: bool = False,
                 smooth: Groups | None = None):
        self.config, self.cube, self.model, self.gbm = config, cube, model, gbm
        self.uses_demand = uses_demand  # the model has demand channels (train.demand)
        self.smooth = smooth  # the groups of its smooth coarse channels (or None)
        self.sites, self.names, self.classes, self.blocks = sites, names, classes, blocks
        self.groups = class_groups(config.datasets.coarse.groups, classes)
        self.code_of = np.asarray(classes, dtype="uint8")
        self.device = resolve_device(config.predict.device, key="predict.device")
        self.whole = Window(0, 0, *cube.fine_grid.shape)
        self.land = [cube.land_mask_window(site.outer) for site in sites]
        self.scored_pixels = [
            self.land[s.label][s.inside(s.scored)] for s in sites]

    def _rng(self, chain: Chain, year: int, site: Site, name: str) -> np.random.Generator:
        """A generator per (chain, year, site, model): maps do not depend on the order."""
        key = [self.config.seed, chain.direction + 1, year, site.label,
               sum(map(ord, name))]
        return np.random.default_rng(key)

    def run(self, chain: Chain) -> list[dict]:
        """Run ``chain`` for every model over every site; fill ``chain.scores`` and
        ``chain.area``; return the sample tiles of its last year."""
        cube, config, classes = self.cube, self.config, self.classes
        calibration_bins = config.evaluate.calibration_bins
        chain.scores = {name: ModelScores(classes=classes, blocks=self.blocks,
                                          calibration_bins=calibration_bins,
                                          group_names=self.groups.names)
                        for name in self.names}
        series = ("observed", "coarse", "target", *self.names)
        chain.area = {"groups": list(self.groups.names), "years": [],
                      "series": {s: {g: [] for g in self.groups.names} for s in series}}
        start = {site.label: (None if chain.start is None
                              else cube.target_window(chain.start, site.outer))
                 for site in self.sites}
        # single-year: no prior, so no state
        state = ({} if chain.start is None else
                 {name: dict(start) for name in CHAINED if name in self.names})
        # every model's map of the chain's previous year on each site's cells (stability)
        self.previous_maps = {name: {site.label: None if chain.start is None
                                     else start[site.label][site.inside(site.cells)]
                                     for site in self.sites} for name in self.names}
        tiles = []
        for year in tqdm(chain.years, desc=f"evaluate {chain.name}", unit="year", disable=None):
            started = time.perf_counter()
            scenario = cube.scenario_for_year(year)
            cells = cube.coarse_cells(scenario, year, self.whole)
            anchor = year if chain.start is None else chain.start
            weight = (0.0 if chain.start is None else offset_weight(
                year, anchor, decay_years=config.predict.harmonize_decay_years))
            anchor_scenario = cube.scenario_for_year(anchor, preferred=scenario)
            finaliser = Finaliser(
                config, cube=cube, anchor=anchor, classes=classes, groups=self.groups,
                weight=weight, layers=LAYERS, cells=cells,
                anchor_cells=(cells if anchor == year
                              else cube.coarse_cells(anchor_scenario, anchor, self.whole)))
            counts = {s: np.zeros(len(self.groups)) for s in series}
            for site in self.sites:
                maps = self._site_year(chain, year, site, scenario=scenario, cells=cells,
                                       finaliser=finaliser, state=state, start=start)
                self._score(chain, year, site, maps, finaliser=finaliser, counts=counts,
                            start=start[site.label])
                if year == chain.years[-1]:
                    tiles.append(self._tile(chain, year, site, maps, start[site.label]))
            log.info("%s chain, %d: %d test blocks, %.1f s", chain.name, year, len(self.sites),
                     time.perf_counter() - started)
            chain.area["years"].append(year)
            for s, values in counts.items():
                shares = values / max(values.sum(), 1)
                for group, value in zip(self.groups.names, shares, strict=True):
                    chain.area["series"][s][group].append(round(float(value), 6))
        chosen = sorted(tiles, key=lambda t: (-t["land"], t["id"]))
        return chosen[: config.evaluate.figure_tiles]

    def _site_year(self, chain: Chain, year: int, site: Site, *, scenario: str,
                   cells: np.ndarray, finaliser: Finaliser, state: dict,
                   start: dict) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        """Every model's (codes, confidence) over ``site.area`` for ``year``; updates the
        chained models' ``state`` (their next prior over ``site.outer``)."""
        area = site.inside(site.area)
        land = self.land[site.label][area]
        at = _SiteYear(
            chain=chain, year=year, site=site, scenario=scenario, cells=cells,
            finaliser=finaliser, state=state, area=area, land=land,
            previous_observed=(None if chain.start is None else self.cube.target_window(
                year - chain.direction, site.outer)))
        self._unet_maps(at)
        for name in ALLOCATION_BASELINES:
            if name in self.names:
                self._allocation_map(at, name)
        self._mapper_maps(at, start[site.label])
        return at.maps

    def _finalise(self, at: _SiteYear, name: str, scores: np.ndarray,
                  prior: np.ndarray | None) -> np.ndarray:
        """Finalise ``name``'s scores over ``site.area``: its map and confidence go to
        ``at.maps``; returns the layers."""
        area = at.site.area
        _, layers, _ = at.finaliser(area.row, scores, col=area.col,
                                    prior=None if prior is None else prior[at.area])
        quantised = layers[..., 1].astype("float32")
        confidence = np.where(quantised < 255, quantised / 254, 0).astype("float32")
        at.maps[name] = (layers[..., 0], confidence)
        return layers

    def _unet_maps(self, at: _SiteYear) -> None:
        """``unet`` (its own chain; ``unet_raw``: the argmax of the same passes) and
        ``unet_teacher_forced`` (prior: the observed previous year)."""
        config, site, k = self.config, at.site, len(self.classes)
        seed = ensemble_seed(config, at.scenario, at.year)
        for name in ("unet", "unet_teacher_forced"):
            if name not in self.names:
                continue
            prior = at.prior(name)
            demand = (site_demand(at.finaliser, site, prior, factor=self.cube.factor,
                                  shape=self.cube.fine_grid.shape) if self.uses_demand else None)
            probs = site_probabilities(config, cube=self.cube, model=self.model, site=site,
                                       scenario=at.scenario, year=at.year, prior=prior,
                                       direction=at.chain.direction, coarse_cells=at.cells,
                                       device=self.device, seed=seed, demand=demand,
                                       smooth=self.smooth)
            layers = self._finalise(at, name, probs[at.area], prior)
            if name == "unet":
                at.maps["unet_raw"] = (layers[..., 2], probs[at.area][..., :k].max(axis=-1))
                if name in at.state:  # next prior: the map; the argmax on the outer ring
                    ring = np.where(self.land[site.label], self.code_of[probs[..., :k].argmax(-1)],
                                    config.classes.ocean).astype("uint8")
                    ring[at.area] = layers[..., 0]
                    at.state[name][site.label] = ring

    def _allocation_map(self, at: _SiteYear, name: str) -> None:
        """An allocation baseline's scores, finalised like the U-Net's (and chained)."""
        prior = at.prior(name)
        index = (np.full(self.land[at.site.label].shape, -1) if prior is None
                 else codes_to_index(prior, self.classes))
        layers = self._finalise(at, name, self._baseline_scores(at, name, prior, index), prior)
        if name in at.state:
            updated = at.state[name][at.site.label].copy()
            updated[at.area] = layers[..., 0]
            at.state[name][at.site.label] = updated
        if name != "gradient_boosting":
            at.maps[name] = (at.maps[name][0], None)  # scores, not probabilities

    def _baseline_scores(self, at: _SiteYear, name: str, prior: np.ndarray | None,
                         index: np.ndarray) -> np.ndarray:
        """(h, w, K) scores of allocation baseline ``name`` over ``site.area``."""
        k = len(self.classes)
        rng = self._rng(at.chain, at.year, at.site, name)
        if name == "random_change":
            return random_change_scores(index[at.area], k, rng=rng)
        if name == "neighbourhood_density":
            return density_scores(index, k, kernel=self.config.evaluate.density_kernel,
                                  rng=rng)[at.area]
        if name == "gradient_boosting":
            inputs = build_inputs(self.cube, scenario=at.scenario, year=at.year,
                                  window=at.site.area, predicted=self.classes,
                                  prior=None if prior is None else prior[at.area],
                                  direction=at.chain.direction, coarse_cells=at.cells)
            scores = np.zeros((*at.land.shape, k), dtype="float32")
            scores[at.land] = self.gbm.probabilities(pixel_features(inputs, at.land))
            return scores
        return self._smooth(at.site, at.finaliser, index[at.area])  # smooth_coarse

    def _mapper_maps(self, at: _SiteYear, start: np.ndarray | None) -> None:
        """Maps without scores: ``persistence`` (the start map), ``coarse_majority`` and
        ``random_allocation`` (from the LUH-mapped fractions, not harmonised)."""
        if "persistence" in self.names:
            at.maps["persistence"] = (start[at.area], None)
        _, luh = at.finaliser.targets(at.site.area, land=at.land)
        ocean = self.config.classes.ocean
        if "coarse_majority" in self.names:
            at.maps["coarse_majority"] = (coarse_majority(
                luh, groups=self.groups, factor=self.cube.factor, ocean_mask=~at.land,
                ocean_code=ocean), None)
        if "random_allocation" in self.names:
            valid = at.finaliser.valid(at.site.area, land=at.land)
            at.maps["random_allocation"] = (random_allocation(
                luh, groups=self.groups, factor=self.cube.factor, valid=valid,
                rng=self._rng(at.chain, at.year, at.site, "random_allocation"),
                ocean_code=ocean), None)

    def _smooth(self, site: Site, finaliser: Finaliser, previous: np.ndarray) -> np.ndarray:
        """Scores of ``smooth_coarse`` over ``site.area``: the target fractions
        interpolated bilinearly between cell centres, as predict's ``smooth_weight``."""
        return smooth_scores(finaliser.interpolated_targets(site.area), previous,
                             groups=self.groups, classes=self.classes)

    def _score(self, chain: Chain, year: int, site: Site, maps: dict, *,
               finaliser: Finaliser, counts: dict, start: np.ndarray | None) -> None:
        """Add one site-year of every model to the chain's scores and class areas."""
        cube, classes, factor = self.cube, self.classes, self.cube.factor
        scored = site.inside(site.scored, site.area)
        in_cells = site.inside(site.cells, site.area)
        observed = cube.target_window(year, site.scored)
        target = codes_to_index(observed, classes)
        land = self.scored_pixels[site.label]
        labels = np.where(land, site.label, -1)
        if start is None:
            previous = np.full(target.shape, -1)
        else:
            previous = codes_to_index(cube.target_window(year - chain.direction, site.scored),
                                      classes)
            start_index = codes_to_index(start[site.inside(site.scored)], classes)
        cells_land = cube.land_mask_window(site.cells)
        cells_valid = finaliser.valid(site.cells, land=cells_land)
        goal, luh = finaliser.targets(site.cells, land=cells_land)
        # the scored pixels inside the cells' window (class areas count these)
        mask = np.zeros(cells_land.shape, dtype=bool)
        mask[site.inside(site.scored, site.cells)] = land & (target >= 0)
        observed_cells = np.zeros(cells_land.shape, dtype="uint8")
        observed_cells[site.inside(site.scored, site.cells)] = observed
        shares, n = map_group_fractions(observed_cells, self.groups, factor=factor, valid=mask)
        counts["observed"] += (shares * n).sum(axis=(1, 2))
        counts["coarse"] += (luh * n).sum(axis=(1, 2))
        counts["target"] += (goal * n).sum(axis=(1, 2))
        for name, (codes, confidence) in maps.items():
            before = self.previous_maps[name][site.label]
            period = (start is not None and year == chain.years[-1]
                      and name not in OBSERVED_PRIOR)
            chain.scores[name].add(
                year=year, target=target, prediction=codes_to_index(codes[scored], classes),
                previous=previous, labels=labels,
                confidence=None if confidence is None else confidence[scored],
                conservation_mae=conservation_error(codes[in_cells], self.groups, factor=factor,
                                                    valid=cells_valid, target=goal)["mae"],
                start=start_index if period else None, block=site.label,
                stability=None if before is None else stability_counts(
                    before, codes[in_cells], valid=cells_valid, groups=self.groups,
                    factor=factor, target=goal, origin=(site.cells.row, site.cells.col)))
            shares, n = map_group_fractions(codes[in_cells], self.groups, factor=factor,
                                            valid=mask)
            counts[name] += (shares * n).sum(axis=(1, 2))
            self.previous_maps[name][site.label] = codes[in_cells]

    def _tile(self, chain: Chain, year: int, site: Site, maps: dict,
              start: np.ndarray | None) -> dict:
        scored = site.inside(site.scored, site.area)
        observed = self.cube.target_window(year, site.scored)
        land = self.scored_pixels[site.label]
        return {"id": site.block.id, "land": site.block.land_fraction,
                "title": f"block {site.block.id}, {year} ({chain.name})",
                "target": observed,
                "start": None if start is None else start[site.inside(site.scored)],
                "scored": land & (codes_to_index(observed, self.classes) >= 0),
                "panels": {name: maps[name][0][scored] for name in TILE_PANELS
                           if name in maps}}


def score_maps(prediction: np.ndarray, target: np.ndarray, *, classes: list[int],
               previous: np.ndarray | None = None) -> dict:
    """The metrics.json keys of one model for two maps (change scores need ``previous``)."""
    scores = ModelScores(classes=classes, blocks=[{"id": 0, "row": 0, "col": 0}],
                         calibration_bins=1)
    scores.add(year=0, target=codes_to_index(target, classes),
               prediction=codes_to_index(prediction, classes),
               labels=np.zeros(np.shape(target), dtype="int64"),
               previous=None if previous is None else codes_to_index(previous, classes))
    return finite(scores.totals())


def score_files(prediction: Path, target: Path, *, previous: Path | None = None) -> dict:
    """Score two single-band class rasters that share one grid (and a previous map)."""
    import rasterio

    from ai4land.config import ClassesConfig

    paths = [prediction, target] + ([previous] if previous is not None else [])
    arrays, grids = [], []
    for path in paths:
        if not path.is_file():
            raise InputDataError(f"{path}: file not found")
        with rasterio.open(path) as src:
            arrays.append(src.read(1))
            grids.append((src.crs, src.transform, src.shape))
    for path, grid in zip(paths[1:], grids[1:], strict=True):
        if grid != grids[0]:
            raise GridError(
                f"{prediction} and {path} are on different grids "
                f"({grids[0][2]} {tuple(grids[0][1])[:6]} vs {grid[2]} {tuple(grid[1])[:6]}); "
                "resample one onto the other first"
            )
    return score_maps(arrays[0], arrays[1], classes=ClassesConfig().predicted,
                      previous=arrays[2] if previous is not None else None)
