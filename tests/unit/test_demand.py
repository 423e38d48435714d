"""Demand channels (train.demand): the same demand in training and in a chain, the same
channels in the training batch and in the per-window inputs, and the change weight."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from tiny_cube import tiny_config, write_tiny_cube  # noqa: E402

from ai4land.config import PriorMaskConfig  # noqa: E402
from ai4land.grid import Window  # noqa: E402
from ai4land.io.cube import Cube  # noqa: E402
from ai4land.predict.demand import training_demand  # noqa: E402
from ai4land.predict.finalise import Finaliser  # noqa: E402
from ai4land.predict.harmonize import class_groups, offset_weight  # noqa: E402
from ai4land.samples.arrays import TrainingArrays  # noqa: E402
from ai4land.samples.dataset import WindowDataset  # noqa: E402
from ai4land.samples.features import (  # noqa: E402
    BatchInputs,
    build_inputs,
    channel_group,
    codes_to_index,
    demand_groups_of,
    group_channels,
    input_channel_names,
)
from ai4land.samples.plan import SamplePlanner  # noqa: E402
from ai4land.samples.split import make_split  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-demand")
    write_tiny_cube(root / "cube")
    config = tiny_config(root / "cube", train={"demand": True})
    cube = Cube.from_config(config)
    land = np.asarray(cube.static["land_mask"].values).astype(bool)
    groups = class_groups(config.datasets.coarse.groups, config.classes.predicted)
    arrays = TrainingArrays.from_cube(cube, cube.target_years)
    arrays.demand = training_demand(
        arrays.target, arrays.cells, arrays.years, land=land, groups=groups,
        channel_names=cube.coarse_channel_names, n_variables=len(cube.coarse_variables),
        factor=cube.factor, nodata=config.classes.nodata,
        decay_years=config.predict.harmonize_decay_years)
    return config, cube, land, groups, arrays


def _finaliser(config, cube, groups, *, year, anchor):
    whole = Window(0, 0, *cube.fine_grid.shape)
    scenario = cube.scenario_for_year(year)
    return Finaliser(config, cube=cube, anchor=anchor, classes=list(config.classes.predicted),
                     groups=groups, layers=["lulc"],
                     weight=offset_weight(year, anchor,
                                          decay_years=config.predict.harmonize_decay_years),
                     cells=cube.coarse_cells(scenario, year, whole),
                     anchor_cells=cube.coarse_cells(scenario, anchor, whole))


def test_training_demand_is_the_chain_demand_of_a_one_year_chain(world):
    """Training's demand of (year, direction) is what a chain's finaliser computes when
    the chain starts at the prior year: the same target, the same prior fractions."""
    config, cube, _, groups, arrays = world
    years = arrays.years
    checked = 0
    for i, year in enumerate(years):
        for slot, direction in enumerate((1, -1)):
            prior_year = year - direction
            if prior_year not in years:
                assert not arrays.demand[i, slot].any()
                continue
            finaliser = _finaliser(config, cube, groups, year=year, anchor=prior_year)
            whole = Window(0, 0, *cube.fine_grid.shape)
            expected = finaliser.demand(cube.target_window(prior_year, whole))
            np.testing.assert_allclose(arrays.demand[i, slot], expected, atol=1e-6)
            # a reader of windows gives the same
            np.testing.assert_array_equal(
                finaliser.demand(lambda w, y=prior_year: cube.target_window(y, w)), expected)
            checked += 1
    assert checked >= 4
    assert np.abs(arrays.demand).max() > 0  # the tiny world changes
    # per cell, the demand moves fractions between groups: it sums to 0
    np.testing.assert_allclose(arrays.demand.sum(axis=2), 0.0, atol=1e-5)
    assert not _finaliser(config, cube, groups, year=years[1], anchor=years[0]).demand(None).any()


def test_demand_channels_are_named_grouped_and_gated(world):
    config, cube, _, groups, _ = world
    predicted = config.classes.predicted
    plain = input_channel_names(cube, predicted)
    names = input_channel_names(cube, predicted, demand=groups.names)
    assert not demand_groups_of(plain)
    assert demand_groups_of(names) == list(groups.names)
    demand = [i for i, n in enumerate(names) if n.startswith("demand:")]
    n_coarse = len(cube.coarse_channel_names)
    assert demand == list(range(n_coarse, n_coarse + len(groups)))
    assert [n for n in names if not n.startswith("demand:")] == plain
    assert {channel_group(names[i]) for i in demand} == {"coarse"}
    assert set(demand) <= set(group_channels(names, ["coarse"]))
    assert set(demand) <= set(group_channels(names, ["prior"]))
    assert not set(demand) & set(group_channels(names, ["static"]))


def test_batched_demand_channels_equal_the_per_window_inputs(world):
    """With demand, the training batch holds what ``build_inputs`` gives with the
    year's demand (zeros without a prior), windows off the cell grid, turned."""
    config, cube, land, groups, arrays = world
    predicted = config.classes.predicted
    names = input_channel_names(cube, predicted, demand=groups.names)
    split = make_split(land, block_size=16, n_test=2, n_val=2, buffer=1,
                       train_years=config.years.train, test_years=config.years.test, seed=0)
    plan = SamplePlanner(split.role_mask("train"), tile_size=24, years=list(split.train_years),
                         seed=0).epoch(1, 24)
    dataset = WindowDataset(arrays, plan, seed=3, augment=True,
                            prior_mask=PriorMaskConfig(p_none=0.3, max_fraction=0.5,
                                                       block_size=5))
    raw = torch.utils.data.default_collate([dataset[i] for i in range(len(plan))])
    out = BatchInputs.of(arrays, predicted=predicted, augment=True,
                         prior_mask=dataset.prior_mask)(raw)
    assert out["inputs"].shape[1] == len(names)
    demand_index = [i for i, n in enumerate(names) if n.startswith("demand:")]
    seen = set()
    for i, spec in enumerate(plan):
        has_prior = bool(raw["has_prior"][i])
        slot = 0 if spec.direction > 0 else 1
        demand = (arrays.demand[arrays.year_index(spec.year), slot] if has_prior
                  else np.zeros_like(arrays.demand[0, 0]))
        expected = build_inputs(
            cube, scenario=spec.scenario, year=spec.year, window=spec.window,
            predicted=predicted, direction=spec.direction, demand=demand,
            prior=cube.target_window(spec.prior_year, spec.window) if has_prior else None)
        turns, flip = dataset.symmetry(spec)
        expected = np.rot90(expected, turns, axes=(-2, -1))
        if flip:
            expected = expected[..., ::-1]
        got = out["inputs"][i].numpy()
        # the prior one-hot differs where the mask hides pixels; compare the rest
        for c in [*range(len(cube.coarse_channel_names)), *demand_index, len(names) - 1]:
            np.testing.assert_allclose(got[c], expected[c], rtol=1e-6, atol=1e-6)
        # changed: the target's class differs from the prior's (hidden or not)
        target = codes_to_index(cube.target_window(spec.year, spec.window), predicted)
        prior = codes_to_index(cube.target_window(spec.prior_year, spec.window), predicted)
        changed = (target != prior) & (prior >= 0) & has_prior
        changed = np.rot90(changed, turns)
        if flip:
            changed = changed[:, ::-1]
        np.testing.assert_array_equal(out["changed"][i].numpy(), changed)
        seen.add((has_prior, bool(np.abs(got[demand_index]).max() > 0)))
    assert (True, True) in seen and (False, False) in seen


def test_site_demand_is_predicts_demand_on_the_site_cells(world):
    """The evaluation's demand of a test site, from the prior over the site's windows
    only, equals predict's (the whole region's prior) on the cells it finalises."""
    from ai4land.evaluate.chains import plan_sites, site_demand

    config, cube, land, groups, _ = world
    split = make_split(land, block_size=16, n_test=2, n_val=2, buffer=1,
                       train_years=config.years.train, test_years=config.years.test, seed=0)
    config = config.model_copy(update={"predict": config.predict.model_copy(
        update={"tile_size": 16, "overlap": 4})})
    shape = cube.fine_grid.shape
    year = config.years.test[0]
    finaliser = _finaliser(config, cube, groups, year=year, anchor=year - 1)
    whole = Window(0, 0, *shape)
    prior = cube.target_window(year - 1, whole)
    expected = finaliser.demand(prior)
    sites = plan_sites(config, shape=shape, factor=cube.factor, split=split)
    assert sites
    for site in sites:
        got = site_demand(finaliser, site, prior[site.outer.slices], factor=cube.factor,
                          shape=shape)
        rows, cols = site.area.coarse_slices(cube.factor)
        np.testing.assert_array_equal(got[:, rows, cols], expected[:, rows, cols])
        assert not site_demand(finaliser, site, None, factor=cube.factor, shape=shape).any()
