"""Sample plans (where) and the dataset (what): leak-free, deterministic, sharded."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from tiny_cube import tiny_config, write_tiny_cube  # noqa: E402

from ai4land.config import PriorMaskConfig  # noqa: E402
from ai4land.errors import InputDataError, OutputError  # noqa: E402
from ai4land.io.cube import Cube  # noqa: E402
from ai4land.samples.arrays import TrainingArrays  # noqa: E402
from ai4land.samples.dataset import (  # noqa: E402
    WindowDataset,
    max_hidden,
    max_mask_blocks,
    prior_mask_draw,
)
from ai4land.samples.features import (  # noqa: E402
    BatchInputs,
    build_inputs,
    codes_to_index,
    group_channels,
    input_channel_names,
    prior_keep,
)
from ai4land.samples.plan import (  # noqa: E402
    SamplePlanner,
    largest_tile,
    shard,
    valid_corners,
)
from ai4land.samples.split import make_split  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    write_tiny_cube(root / "cube")
    config = tiny_config(root / "cube")
    cube = Cube.from_config(config)
    land = np.asarray(cube.static["land_mask"].values).astype(bool)
    split = make_split(land, block_size=16, n_test=2, n_val=2, buffer=1,
                       train_years=config.years.train, test_years=config.years.test, seed=0)
    return config, cube, split, land


@pytest.fixture(scope="module")
def arrays(world):
    _, cube, _, _ = world
    return TrainingArrays.from_cube(cube, cube.target_years)


def prior_keep_masks(rngs, shape, config):
    """The keep masks of samples' draws (``None``: no prior), made as one batch."""
    draws = [prior_mask_draw(rng, shape, config) for rng in rngs]
    made = [d for d in draws if d is not None]
    blocks = np.full((len(made), max_mask_blocks(shape, config), 2), -1)
    for i, (_, corners, _) in enumerate(made):
        blocks[i, : len(corners)] = corners
    hidden = torch.tensor([d[0] for d in made], dtype=torch.int64)
    keep = iter(prior_keep(hidden, torch.tensor(blocks),
                           torch.tensor([d[2] for d in made], dtype=torch.int64), shape=shape,
                           block_size=config.block_size).numpy())
    out = [None if d is None else next(keep) for d in draws]
    # exactly the drawn count is hidden, overlapping blocks or not
    assert [(~k).sum() for k in out if k is not None] == hidden.tolist()
    assert max(hidden.tolist(), default=0) <= max_hidden(shape[0] * shape[1], config)
    return out


def prior_keep_mask(rng, shape, config):
    return prior_keep_masks([rng], shape, config)[0]


def built(dataset, predicted, indices=None):
    """The dataset's samples as the training loop sees them: collated raw windows
    built into inputs by ``BatchInputs`` (on the CPU), one dict per sample."""
    indices = list(range(len(dataset)) if indices is None else indices)
    batch = torch.utils.data.default_collate([dataset[i] for i in indices])
    out = BatchInputs.of(dataset.arrays, predicted=predicted, augment=dataset.augment,
                         prior_mask=dataset.prior_mask)(batch)
    return [{key: value[j] for key, value in out.items()} for j in range(len(indices))]


def test_valid_corners_match_brute_force():
    rng = np.random.default_rng(0)
    mask = rng.random((20, 23)) < 0.9
    mask[5:15, 3:18] = True
    for tile in (1, 3, 8):
        corners = {tuple(c) for c in valid_corners(mask, tile)}
        brute = {(r, c) for r in range(20 - tile + 1) for c in range(23 - tile + 1)
                 if mask[r : r + tile, c : c + tile].all()}
        assert corners == brute
    assert len(valid_corners(mask, 30)) == 0
    land = np.zeros_like(mask)
    land[0, 0] = True
    assert {tuple(c) for c in valid_corners(np.ones_like(mask), 2, land_mask=land)} == {(0, 0)}
    assert largest_tile(mask, multiple=4, at_most=16) == 8


def test_plan_windows_lie_inside_allowed_pixels_and_are_deterministic(world):
    config, cube, split, land = world
    allowed = split.role_mask("train")
    years = list(split.train_years)
    planner = SamplePlanner(allowed, tile_size=32, years=years, seed=7,
                            scenario_for_year=cube.scenario_for_year)
    plan = planner.epoch(0, 200)
    for spec in plan:
        assert allowed[spec.window.slices].all()
        assert spec.window.height == spec.window.width == 32
        assert spec.year in years and spec.prior_year in years
        assert spec.direction in (1, -1)
        assert spec.scenario == "historical"
    assert {s.direction for s in plan} == {1, -1}
    assert [s.index for s in plan] == list(range(200))
    assert plan == SamplePlanner(allowed, tile_size=32, years=years, seed=7,
                                 scenario_for_year=cube.scenario_for_year).epoch(0, 200)
    assert plan != planner.epoch(1, 200)
    assert plan != SamplePlanner(allowed, tile_size=32, years=years, seed=8).epoch(0, 200)


def test_rank_shards_are_disjoint_and_cover_the_plan(world):
    _, _, split, _ = world
    plan = SamplePlanner(split.role_mask("train"), tile_size=16, years=list(split.train_years),
                         seed=1).epoch(3, 24)
    shards = [shard(plan, r, 3) for r in range(3)]
    indices = [{s.index for s in part} for part in shards]
    assert all(not (a & b) for i, a in enumerate(indices) for b in indices[i + 1 :])
    assert set().union(*indices) == set(range(24))
    # Per-rank batches of 2 make the global batch of step s equal plan[6s:6s+6].
    step1 = sorted(s.index for part in shards for s in part[2:4])
    assert step1 == list(range(6, 12))
    with pytest.raises(ValueError):
        shard(plan, 3, 3)


def test_planner_errors_clearly(world):
    _, _, split, _ = world
    with pytest.raises(InputDataError, match="no 64x64 window fits inside the val blocks"):
        SamplePlanner(split.role_mask("val"), tile_size=64, years=[1960, 1961], seed=0, role="val")
    with pytest.raises(InputDataError, match="no train year has an observed prior"):
        SamplePlanner(split.role_mask("train"), tile_size=16, years=[1960, 1962], seed=0)
    # Only the forward direction has a prior inside the allowed prior years.
    planner = SamplePlanner(split.role_mask("train"), tile_size=16, years=[1961],
                            prior_years=[1960], seed=0)
    assert {s.direction for s in planner.epoch(0, 20)} == {1}


def test_no_test_or_val_pixel_in_any_training_window(world):
    _, _, split, land = world
    forbidden = split.role_mask("test") | split.role_mask("buffer") | split.role_mask("val")
    planner = SamplePlanner(split.role_mask("train"), tile_size=32, years=list(split.train_years),
                            seed=0, land_mask=land, min_land_fraction=0.1)
    seen = np.zeros_like(forbidden)
    for epoch in range(5):
        for spec in planner.epoch(epoch, 400):
            seen[spec.window.slices] = True
    assert seen.any()
    assert not (seen & forbidden).any()
    # Every valid corner is reachable: the whole plan covers the allowed region well.
    assert seen.sum() > 0.5 * (split.role_mask("train") & land).sum()


def _dataset(world, arrays, plan, **prior):
    config, _, _, _ = world
    mask = PriorMaskConfig(**prior) if prior else config.train.prior_mask
    return WindowDataset(arrays, plan, prior_mask=mask, seed=3)


def test_dataset_sample_shapes_dtypes_and_ocean(world, arrays):
    config, cube, split, land = world
    predicted = config.classes.predicted
    plan = SamplePlanner(split.role_mask("train"), tile_size=32, years=list(split.train_years),
                         seed=0).epoch(0, 40)
    data = _dataset(world, arrays, plan, p_none=0.0, max_fraction=0.0)
    names = input_channel_names(cube, predicted)
    ocean_seen = False
    for i, item in enumerate(built(data, predicted)):
        spec = plan[i]
        assert item["inputs"].dtype == torch.float32
        assert item["inputs"].shape == (len(names), 32, 32)
        assert item["target"].dtype == torch.int64 and item["target"].shape == (32, 32)
        codes = cube.target_window(spec.year, spec.window)
        target = item["target"].numpy()
        assert (target[(codes == 0) | (codes == 99)] == -1).all()
        assert (target[np.isin(codes, predicted)] >= 0).all()
        assert target.max() < len(predicted)
        ocean_seen |= bool((codes == 0).any())
        # The prior is the adjacent year's map, fully shown here.
        assert item["prior_keep_fraction"] == 1.0
        prior = cube.target_window(spec.prior_year, spec.window)
        known = item["inputs"][names.index("prior:known")].numpy().astype(bool)
        assert (known == np.isin(prior, predicted)).all()
        assert (item["inputs"][names.index("direction")] == spec.direction).all()
    assert ocean_seen
    raw = data[0]
    assert raw["target"].dtype == np.uint8 and raw["prior"].dtype == np.uint8  # as stored
    assert raw["cells"].shape[1:] == (5, 5)  # coarse: 32 pixels touch at most 5 cells of 8
    # Loading is a pure function of (seed, epoch, index).
    masked = _dataset(world, arrays, plan)
    torch.testing.assert_close(built(masked, predicted, [5])[0]["inputs"],
                               built(_dataset(world, arrays, plan), predicted, [5])[0]["inputs"])


def test_prior_masking_statistics():
    config = PriorMaskConfig(p_none=0.25, max_fraction=0.5, block_size=8)
    keeps, nones = [], 0
    for keep in prior_keep_masks([np.random.default_rng([1, i]) for i in range(800)], (32, 32),
                                 config):
        if keep is None:
            nones += 1
        else:
            keeps.append(keep.mean())
    assert abs(nones / 800 - 0.25) < 0.05
    keeps = np.asarray(keeps)
    assert keeps.min() >= 0.5 - 1e-9 and keeps.max() <= 1.0
    assert abs(keeps.mean() - 0.75) < 0.02  # hidden fraction ~ U[0, 0.5]
    assert abs(np.median(keeps) - 0.75) < 0.03
    # Blocks are used: some masks have a fully hidden block_size square.
    keep = prior_keep_mask(np.random.default_rng(5), (64, 64),
                           PriorMaskConfig(p_none=0.0, max_fraction=1.0, block_size=8))
    assert keep is not None
    windows = np.lib.stride_tricks.sliding_window_view(~keep, (8, 8))
    assert windows.all(axis=(2, 3)).any()
    never = prior_keep_mask(np.random.default_rng(0), (16, 16),
                            PriorMaskConfig(p_none=1.0, max_fraction=0.5, block_size=4))
    assert never is None


def test_dataset_p_none_drops_the_whole_prior(world, arrays):
    config, cube, split, _ = world
    predicted = config.classes.predicted
    names = input_channel_names(cube, predicted)
    plan = SamplePlanner(split.role_mask("train"), tile_size=16, years=list(split.train_years),
                         seed=0).epoch(0, 6)
    data = _dataset(world, arrays, plan, p_none=1.0)
    first_prior = names.index(f"prior:{predicted[0]}")
    for item in built(data, predicted):
        assert item["prior_keep_fraction"] == 0.0
        assert (item["inputs"][first_prior:names.index("direction")] == 0).all()
    half = _dataset(world, arrays, plan, p_none=0.0, max_fraction=1.0, block_size=4)
    fractions = [float(item["prior_keep_fraction"]) for item in built(half, predicted)]
    assert all(0.0 <= f <= 1.0 for f in fractions) and len(set(fractions)) > 1


def test_input_dropout_zeroes_exactly_that_group_in_about_p_of_samples(world, arrays):
    config, cube, split, _ = world
    predicted = config.classes.predicted
    names = input_channel_names(cube, predicted)
    static = [i for i, n in enumerate(names) if n.startswith("static:")]
    prior = [i for i, n in enumerate(names) if n.startswith("prior:") or n == "direction"]
    plan = SamplePlanner(split.role_mask("train"), tile_size=16, years=list(split.train_years),
                         seed=0).epoch(2, 200)

    def dataset(**dropout):
        return WindowDataset(arrays, plan,
                             prior_mask=PriorMaskConfig(p_none=0.0, max_fraction=0.0), seed=3,
                             input_dropout=dropout)

    plain, dropped = built(dataset(), predicted), built(dataset(static=0.4, prior=0.2), predicted)
    zeroed = {"static": 0, "prior": 0}
    for i in range(len(plan)):
        a, b = plain[i], dropped[i]
        flags = dict(zip(("coarse", "static", "prior"), b["inputs_zeroed"].tolist(), strict=True))
        assert not flags["coarse"] and not plain[i]["inputs_zeroed"].any()
        assert a["inputs"][static].abs().sum() > 0  # something to zero
        expected = a["inputs"].clone()
        for group, channels in (("static", static), ("prior", prior)):
            if flags[group]:
                zeroed[group] += 1
                expected[channels] = 0.0
        torch.testing.assert_close(b["inputs"], expected, rtol=0, atol=0)
        assert b["prior_keep_fraction"] == (0.0 if flags["prior"] else 1.0)
        torch.testing.assert_close(b["target"], a["target"])
    assert 0.3 < zeroed["static"] / len(plan) < 0.5
    assert 0.12 < zeroed["prior"] / len(plan) < 0.28
    # Deterministic for one seed, different for another; the prior mask draws are unchanged.
    again = built(dataset(static=0.4, prior=0.2), predicted)
    assert all(torch.equal(again[i]["inputs"], dropped[i]["inputs"]) for i in range(0, 200, 7))
    other = WindowDataset(arrays, plan,
                          prior_mask=PriorMaskConfig(p_none=0.0, max_fraction=0.0), seed=4,
                          input_dropout={"static": 0.4, "prior": 0.2})
    assert ([other[i]["inputs_zeroed"].tolist() for i in range(40)]
            != [dropped[i]["inputs_zeroed"].tolist() for i in range(40)])
    masked = built(_dataset(world, arrays, plan[:20]), predicted)
    masked_dropout = built(WindowDataset(arrays, plan[:20], prior_mask=config.train.prior_mask,
                                         seed=3, input_dropout={"static": 0.5}), predicted)
    for i in range(20):
        assert masked[i]["prior_keep_fraction"] == masked_dropout[i]["prior_keep_fraction"]
    with pytest.raises(ValueError, match="unknown input group"):
        dataset(terrain=0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        dataset(static=1.0)


def test_training_arrays_read_each_year_once_and_match_the_cube(world, tmp_path, monkeypatch):
    """The coarse store is read once per (scenario, year) for a whole run (every epoch's
    dataset slices the same arrays); in memory and memory-mapped copies hold the cube's
    values, and a changed cube is copied again."""
    from ai4land.grid import Window

    config, cube, split, land = world
    reads = []
    real = cube.coarse_cells
    monkeypatch.setattr(cube, "coarse_cells", lambda *a: reads.append(a[:2]) or real(*a))
    years = list(split.train_years)
    arrays = TrainingArrays.from_cube(cube, years)
    planner = SamplePlanner(split.role_mask("train"), tile_size=16, years=years, seed=0,
                            land_mask=land)
    for epoch in range(2):  # a fresh dataset per epoch, as training builds them
        dataset = WindowDataset(arrays, planner.epoch(epoch, 12),
                                prior_mask=config.train.prior_mask, seed=3)
        built(dataset, config.classes.predicted)
    assert reads and len(reads) == len(set(reads)) == len(years)  # each year read once
    mapped = TrainingArrays.from_cube(cube, years, directory=tmp_path / "cache")
    assert isinstance(mapped.target, np.memmap)
    whole = Window(0, 0, *cube.fine_grid.shape)
    for copy in (arrays, mapped):
        for year in years:
            np.testing.assert_array_equal(copy.target_window(year, whole),
                                          cube.target_window(year, whole))
            np.testing.assert_array_equal(copy.cells[copy.year_index(year)],
                                          real(cube.scenario_for_year(year), year, whole))
        for s, name in enumerate(cube.static_names):
            np.testing.assert_array_equal(copy.static[s], cube.static_values(name, whole))
    before = (tmp_path / "cache" / "target.npy").stat().st_mtime_ns
    TrainingArrays.from_cube(cube, years, directory=tmp_path / "cache")
    assert (tmp_path / "cache" / "target.npy").stat().st_mtime_ns == before  # reused
    with pytest.raises(InputDataError, match="did not write them"):
        TrainingArrays.from_cube(cube, years[:2], directory=tmp_path / "cache", write=False)
    TrainingArrays.from_cube(cube, years[:2], directory=tmp_path / "cache")
    assert np.load(tmp_path / "cache" / "target.npy", mmap_mode="r").shape[0] == 2
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "cells.npy", "meta.json", "static.npy", "target.npy"]  # no temporaries left
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(OutputError, match=r"a-file/cache: cannot write the training arrays"):
        TrainingArrays.from_cube(cube, years, directory=blocker / "cache")


def test_augment_turns_inputs_and_target_together_by_each_symmetry(world, arrays):
    config, cube, split, _ = world
    predicted = config.classes.predicted
    plan = SamplePlanner(split.role_mask("train"), tile_size=16, years=list(split.train_years),
                         seed=0).epoch(1, 120)

    def dataset(augment: bool, seed: int = 3):
        return WindowDataset(arrays, plan, prior_mask=config.train.prior_mask, seed=seed,
                             augment=augment)

    turned_data = dataset(True)
    plain, turned = built(dataset(False), predicted), built(turned_data, predicted)
    seen = set()
    for i in range(len(plan)):
        a, b = plain[i], turned[i]
        turns, flip = turned_data.symmetry(plan[i])
        seen.add((turns, flip))
        expected = [torch.rot90(a[key], turns, dims=(-2, -1)) for key in ("inputs", "target")]
        if flip:
            expected = [torch.flip(x, dims=(-1,)) for x in expected]
        # the same pixels, prior mask included, moved by the drawn symmetry
        torch.testing.assert_close(b["inputs"], expected[0], rtol=0, atol=0)
        torch.testing.assert_close(b["target"], expected[1], rtol=0, atol=0)
        assert b["prior_keep_fraction"] == a["prior_keep_fraction"]
    assert len(seen) == 8  # every symmetry occurs, the identity included
    assert [x["inputs"].sum() for x in built(dataset(True), predicted, range(10))] == \
        [turned[i]["inputs"].sum() for i in range(10)]
    assert ([dataset(True, seed=4).symmetry(spec) for spec in plan[:30]]
            != [turned_data.symmetry(spec) for spec in plan[:30]])


@pytest.mark.parametrize("smooth", [False, True])
def test_batched_training_inputs_equal_the_per_window_inputs(world, arrays, smooth):
    """The training batch built on the device holds, sample by sample, what
    ``build_inputs`` (prediction's definition of the input, read from the cube) gives for
    the same window, year, prior, prior mask, zeroed groups and symmetry: windows not
    aligned to coarse cells, ocean (NaN) cells, both directions, no prior, turned; with
    the smooth coarse channels too (cells past the grid's edge, ocean neighbours)."""
    from ai4land.predict.harmonize import class_groups
    from ai4land.samples.smooth import group_matrix, smooth_groups

    config, cube, split, _ = world
    predicted = config.classes.predicted
    groups = class_groups(config.datasets.coarse.groups, predicted) if smooth else None
    matrix = (group_matrix(groups, cube.coarse_channel_names, smooth_groups(groups))
              if smooth else None)
    names = input_channel_names(cube, predicted, smooth=groups)
    plan = SamplePlanner(split.role_mask("train"), tile_size=24, years=list(split.train_years),
                         seed=0).epoch(3, 48)
    dataset = WindowDataset(arrays, plan, seed=5, augment=True,
                            prior_mask=PriorMaskConfig(p_none=0.2, max_fraction=0.6, block_size=5),
                            input_dropout={"static": 0.3, "prior": 0.2, "coarse": 0.1},
                            smooth=smooth)
    raw = torch.utils.data.default_collate([dataset[i] for i in range(len(plan))])
    out = BatchInputs.of(arrays, predicted=predicted, augment=True,
                         prior_mask=dataset.prior_mask, smooth_matrix=matrix)(raw)
    assert out["inputs"].shape[1] == len(names)
    keep = prior_keep(raw["prior_hidden"], raw["mask_blocks"], raw["mask_key"],
                      shape=(24, 24), block_size=5).numpy()
    cases = set()
    for i, spec in enumerate(plan):
        zeroed = dataset.zeroed_groups(spec)
        has_prior = bool(raw["has_prior"][i])
        expected = build_inputs(
            cube, scenario=spec.scenario, year=spec.year, window=spec.window,
            predicted=predicted, direction=spec.direction, prior_keep=keep[i],
            prior=cube.target_window(spec.prior_year, spec.window) if has_prior else None,
            smooth=groups)
        target = codes_to_index(cube.target_window(spec.year, spec.window), predicted)
        for group in zeroed:
            expected[group_channels(names, [group])] = 0.0
        turns, flip = dataset.symmetry(spec)
        expected, target = (np.rot90(x, turns, axes=(-2, -1)) for x in (expected, target))
        if flip:
            expected, target = expected[..., ::-1], target[..., ::-1]
        np.testing.assert_allclose(out["inputs"][i].numpy(), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(out["target"][i].numpy(), target)
        assert float(out["prior_keep_fraction"][i]) == pytest.approx(
            keep[i].mean() if has_prior else 0.0, rel=1e-6)
        cases.add((has_prior, spec.window.row % cube.factor > 0, turns, flip))
    assert {c[0] for c in cases} == {True, False} and {c[1] for c in cases} == {True, False}
    assert len({c[2:] for c in cases}) >= 6 and not keep.all()


def test_inputs_built_channels_last_equal_the_planar_inputs(world):
    """A predict job builds each window straight into a channels_last batch slot: the
    same values as the planar array, with and without a prior, a prior mask, windows not
    aligned to coarse cells, and NaN (ocean) cells."""
    from ai4land.grid import Window
    from ai4land.samples.features import build_inputs

    config, cube, _, _ = world
    predicted = list(config.classes.predicted)
    year = cube.target_years[0]
    scenario = cube.scenario_for_year(year)
    whole = Window(0, 0, *cube.fine_grid.shape)
    cells = cube.coarse_cells(scenario, year, whole)
    rng = np.random.default_rng(0)
    prior_map = cube.target_window(year, whole)
    for trial in range(6):
        h, w = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        row = int(rng.integers(0, cube.fine_grid.height - h + 1))
        col = int(rng.integers(0, cube.fine_grid.width - w + 1))
        window = Window(row, col, h, w)
        prior = None if trial % 3 == 0 else prior_map[window.slices]
        keep = rng.random((h, w)) > 0.5 if trial % 3 == 2 else None
        kwargs = {"scenario": scenario, "year": year, "window": window,
                  "predicted": predicted, "prior": prior, "prior_keep": keep,
                  "direction": -1 if trial % 2 else 1}
        planar = build_inputs(cube, **kwargs, coarse_cells=cells if trial % 2 else None)
        slot = torch.full((1, *planar.shape), np.nan).contiguous(
            memory_format=torch.channels_last)[0].numpy()
        out = build_inputs(cube, **kwargs, coarse_cells=cells, out=slot)
        assert np.shares_memory(out, slot)
        np.testing.assert_array_equal(out, planar)
    assert np.isnan(cells).any()  # the world has ocean cells: NaN read as 0 on both paths


def test_cube_reads_windows_past_xarray_only_when_values_are_unchanged(world, tmp_path):
    """Target, land mask and static windows read from the zarr arrays directly equal
    xarray's decoded values; a variable xarray would rescale is read through xarray."""
    import xarray as xr

    from ai4land.grid import Window
    from ai4land.io.cube import LAND_MASK, _direct_array

    _, cube, _, _ = world
    assert cube._target_array is not None
    assert all(array is not None for array in cube._static_arrays.values())
    rng = np.random.default_rng(3)
    for _ in range(5):
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        window = Window(int(rng.integers(0, cube.fine_grid.height - h + 1)),
                        int(rng.integers(0, cube.fine_grid.width - w + 1)), h, w)
        rows, cols = window.slices
        for i, year in enumerate(cube.target_years):
            np.testing.assert_array_equal(
                cube.target_window(year, window),
                cube.target.isel(year=i, lat=rows, lon=cols).values)
        np.testing.assert_array_equal(
            cube.land_mask_window(window),
            cube.static[LAND_MASK].isel(lat=rows, lon=cols).values.astype(bool))
        for name in cube.static_names:
            np.testing.assert_array_equal(
                cube._static_window(name, window),
                cube.static[name].isel(lat=rows, lon=cols).values)
    packed = xr.Dataset({"v": (("lat", "lon"), np.ones((4, 4), "float32"))})
    packed["v"].encoding.update(scale_factor=0.5, dtype="int16", _FillValue=-1)
    packed.to_zarr(tmp_path / "packed.zarr", zarr_format=2, consolidated=False)
    opened = xr.open_zarr(tmp_path / "packed.zarr", chunks=None, consolidated=False)
    assert _direct_array(tmp_path / "packed.zarr", opened["v"]) is None


def test_predict_inputs_built_on_the_device_equal_the_per_window_inputs(world):
    """What a GPU job builds on the device from raw arrays (``DeviceInputs``, here on the
    CPU) equals ``build_inputs`` window by window: windows not aligned to coarse cells,
    ocean (NaN) cells, both directions, with and without a prior; and a stream built that
    way blends to the same probabilities as one built window by window."""
    from ai4land.grid import Window
    from ai4land.predict.inference import plan_windows, predict_probabilities
    from ai4land.predict.probabilities import DeviceInputs
    from ai4land.samples.features import build_inputs

    config, cube, _, _ = world
    predicted = list(config.classes.predicted)
    year = cube.target_years[0]
    scenario = cube.scenario_for_year(year)
    whole = Window(0, 0, *cube.fine_grid.shape)
    cells = cube.coarse_cells(scenario, year, whole)
    prior_map = cube.target_window(year, whole)
    windows = plan_windows(cube.fine_grid.shape, tile_size=28, overlap=5)
    assert len({w.row % cube.factor for w in windows}) > 1
    for prior, direction in ((None, 1), (lambda w: prior_map[w.slices], -1)):
        device_inputs = DeviceInputs(cube, cells=cells, predicted=predicted, prior=prior,
                                     direction=direction, device="cpu")

        def per_window(w, out=None, prior=prior, direction=direction):
            return build_inputs(cube, scenario=scenario, year=year, window=w,
                                predicted=predicted, prior=None if prior is None else prior(w),
                                direction=direction, coarse_cells=cells, out=out)

        for start in range(0, len(windows), 3):
            group = windows[start : start + 3]
            built = device_inputs(group)
            assert built.is_contiguous(memory_format=torch.channels_last)
            np.testing.assert_array_equal(built.numpy(), np.stack([per_window(w) for w in group]))
        torch.manual_seed(0)
        model = torch.nn.Conv2d(built.shape[1], len(predicted), 3, padding=1)
        kwargs = {"shape": cube.fine_grid.shape, "windows": windows, "batch_size": 2,
                  "device": "cpu", "load_window": per_window, "pad_multiple": 4}
        calls = []

        def load_batch(group, calls=calls, build=device_inputs):
            calls.append(group)
            return build(group)

        np.testing.assert_array_equal(
            predict_probabilities(model, **kwargs, load_batch=load_batch),
            predict_probabilities(model, **kwargs))
        assert sum(map(len, calls)) == len(windows)
    assert np.isnan(cells).any()


def test_inputs_are_built_on_the_device_only_for_channels_it_builds():
    from ai4land.predict.probabilities import builds_inputs_on_device

    demand = np.zeros((2, 3, 3), dtype="float32")
    assert builds_inputs_on_device("cuda")
    assert not builds_inputs_on_device("cpu")
    # a demand or smooth-coarse model gets its channels from the host's builder
    assert not builds_inputs_on_device("cuda", demand=demand)
    assert not builds_inputs_on_device("cuda", smooth=["crops"])
