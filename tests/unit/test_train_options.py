"""Training options: input ablation, single-year (no prior) mode, change-balanced
sampling, group norm, the model card's contents, TensorBoard and the prefetch thread."""

from __future__ import annotations

import json
import logging
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from tiny_cube import tiny_config, write_tiny_cube  # noqa: E402

from ai4land.config import parse_config, slice_hash  # noqa: E402
from ai4land.errors import ConfigError, InputDataError  # noqa: E402
from ai4land.io.cube import Cube  # noqa: E402
from ai4land.io.prefetch import Prefetch  # noqa: E402
from ai4land.models import UNet, load_model  # noqa: E402
from ai4land.samples.features import (  # noqa: E402
    INPUT_GROUPS,
    channel_group,
    codes_to_index,
    group_channels,
    input_channel_names,
)
from ai4land.samples.plan import FORWARD, SamplePlanner, change_counts  # noqa: E402
from ai4land.samples.split import make_split  # noqa: E402
from ai4land.train.loop import run_training  # noqa: E402


def _write_split(cube: Cube, path: Path, years: tuple[int, int], test_years: tuple[int, int]):
    land = np.asarray(cube.static["land_mask"].values).astype(bool)
    split = make_split(land, block_size=16, n_test=2, n_val=2, buffer=1, train_years=years,
                       test_years=test_years, seed=0)
    path.write_text(json.dumps(split.to_json()))
    return split


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("options")
    write_tiny_cube(root / "cube")
    config = tiny_config(root / "cube", results=root / "results")
    split = _write_split(Cube.from_config(config), root / "split.json", config.years.train,
                         config.years.test)
    return root, root / "split.json", split


def _config(root: Path, **train):
    return tiny_config(root / "cube", results=root / "results", train=train)


def _names(config) -> list[str]:
    return input_channel_names(Cube.from_config(config), config.classes.predicted)


# --- config ---------------------------------------------------------------------------


def test_train_config_knobs_validate(tiny):
    root, _, _ = tiny
    config = _config(root, norm="group", min_land_fraction=0.3, change_balanced=0.5,
                     drop_inputs=["static"], tensorboard=True)
    assert config.train.norm == "group" and config.train.dropped_inputs == ["static"]
    assert _config(root, prior=False).train.dropped_inputs == ["prior"]
    assert not _config(root, drop_inputs=["prior"]).train.uses_prior
    with pytest.raises(ConfigError, match="lists a group twice"):
        _config(root, drop_inputs=["static", "static"])
    with pytest.raises(ConfigError, match="drops every input group"):
        _config(root, prior=False, drop_inputs=["coarse", "static"])
    with pytest.raises(ConfigError, match="change_balanced .* needs the prior"):
        _config(root, prior=False, change_balanced=0.5)
    with pytest.raises(ConfigError, match="train.drop_inputs.0"):
        _config(root, drop_inputs=["terrain"])
    with pytest.raises(ConfigError, match="train.norm"):
        _config(root, norm="layer")


def test_input_groups_cover_every_channel(tiny):
    root, _, _ = tiny
    names = _names(_config(root))
    assert {channel_group(n) for n in names} == set(INPUT_GROUPS)
    prior = group_channels(names, ["prior"])
    assert [names[i] for i in prior][-2:] == ["prior:known", "direction"]
    everything = sorted(group_channels(names, INPUT_GROUPS))
    assert everything == list(range(len(names)))
    assert group_channels(names, []) == []
    with pytest.raises(ValueError, match="unknown input group"):
        group_channels(names, ["terrain"])


# --- the model zeroes dropped channels --------------------------------------------------


def test_unet_zero_channels_ignore_those_inputs_and_keep_the_state_dict():
    torch.manual_seed(0)
    plain = UNet(5, 3, base_channels=4, depth=2)
    masked = UNet(5, 3, base_channels=4, depth=2, zero_channels=[3, 1])
    assert masked.config["zero_channels"] == [1, 3]
    assert set(masked.state_dict()) == set(plain.state_dict())
    masked.load_state_dict(plain.state_dict())
    masked.eval()
    plain.eval()
    x = torch.randn(2, 5, 16, 16)
    noisy = x.clone()
    noisy[:, [1, 3]] = torch.randn(2, 2, 16, 16) * 10
    with torch.no_grad():
        torch.testing.assert_close(masked(x), masked(noisy))
        zeroed = x.clone()
        zeroed[:, [1, 3]] = 0
        torch.testing.assert_close(masked(x), plain(zeroed))
        assert not torch.allclose(plain(x), plain(noisy))
    with pytest.raises(ValueError, match="outside 0..4"):
        UNet(5, 3, zero_channels=[5])


def test_drop_inputs_are_in_the_card_and_applied_by_the_loaded_model(tiny, tmp_path):
    root, split_path, _ = tiny
    config = _config(root, epochs=1, steps_per_epoch=2, val_batches=1,
                     drop_inputs=["static", "coarse"], norm="group")
    run_training(config, output_dir=tmp_path, split_path=split_path)
    model, card = load_model(tmp_path)
    names = _names(config)
    assert card.dropped_inputs == ["coarse", "static"]
    dropped = [i for i, n in enumerate(names) if n.split(":")[0] in ("coarse", "static")]
    assert card.architecture["zero_channels"] == dropped
    assert card.architecture["norm"] == "group"
    x = torch.randn(1, len(names), 32, 32)
    noisy = x.clone()
    noisy[:, dropped] += 5.0
    kept = [i for i in range(len(names)) if i not in dropped]
    changed = x.clone()
    changed[:, kept[0]] += 5.0
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(noisy))
        assert not torch.allclose(model(x), model(changed))


def test_prior_skip_adds_a_learned_persistence_path_that_the_card_rebuilds(tiny, tmp_path):
    root, split_path, _ = tiny
    config = _config(root, epochs=1, steps_per_epoch=2, val_batches=1, prior_skip=True)
    run_training(config, output_dir=tmp_path, split_path=split_path)
    model, card = load_model(tmp_path)
    names = _names(config)
    skip = card.architecture["prior_skip"]
    assert [names[i] for i in skip] == [f"prior:{c}" for c in config.classes.predicted]
    x = torch.randn(1, len(names), 32, 32)
    x[:, skip] = 0.0
    shown = x.clone()
    shown[:, skip[2]] = 1.0  # the prior shows class 2 everywhere
    gain = model.prior_gain.detach()
    assert gain.shape == (len(skip),) and torch.all(gain > 0)
    with torch.no_grad():
        without, with_prior = model(x), model(shown)
    # the class's logit rises by its gain on top of whatever the convolutions make of it
    assert float((with_prior[:, 2] - without[:, 2]).mean()) > float(gain[2]) / 2
    # a model without the prior has no persistence path (the default is on)
    no_prior = _config(root, epochs=1, steps_per_epoch=1, val_batches=1, prior=False)
    run_training(no_prior, output_dir=tmp_path / "no-prior", split_path=split_path)
    model, card = load_model(tmp_path / "no-prior")
    assert "prior_skip" not in card.architecture and not hasattr(model, "prior_gain")


# --- model card --------------------------------------------------------------------------


def test_model_card_holds_normalisation_hash_version_and_loads_weights_only(tiny, tmp_path):
    root, split_path, _ = tiny
    config = _config(root, epochs=1, steps_per_epoch=2, val_batches=1)
    run_training(config, output_dir=tmp_path, split_path=split_path)
    card = json.loads((tmp_path / "model_card.json").read_text())
    cube = Cube.from_config(config)
    assert card["input_channels"] == _names(config)
    assert card["classes"] == config.classes.predicted
    assert card["config_hash"] == slice_hash(config, "train") and len(card["config_hash"]) == 64
    assert card["code_version"].startswith("0.")
    assert card["dropped_inputs"] == [] and card["architecture"]["zero_channels"] == []
    static = card["normalisation"]["static"]
    assert list(static) == cube.static_names and set(static) == {"elevation", "clay"}
    for name in static:
        assert static[name]["mean"] == pytest.approx(float(cube.static[name].attrs["mean"]))
        assert static[name]["std"] == pytest.approx(float(cube.static[name].attrs["std"]))
    assert {"coarse", "prior", "direction"} <= set(card["normalisation"])
    assert card["metrics"]["val_tile_size"] == 16  # the largest that fits the 16-px val blocks
    assert 0.0 <= card["metrics"]["data_wait"] <= 1.0
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


# --- single-year data: spatial split only, no prior ---------------------------------------


@pytest.fixture(scope="module")
def single_year(tmp_path_factory):
    root = tmp_path_factory.mktemp("single")
    write_tiny_cube(root / "cube", years=[1970])
    data = tiny_config(root / "cube", results=root / "results").model_dump(mode="json")
    data["datasets"]["fine"]["years"] = [1970, 1970]
    data["years"] = {"train": [1970, 1970], "test": [1970, 1970]}
    data["train"].update(epochs=1, steps_per_epoch=3, val_batches=1)
    return root, data


def test_single_year_trains_without_prior(single_year, tmp_path):
    root, data = single_year
    with_prior = parse_config(data)
    cube = Cube.from_config(with_prior)
    split = _write_split(cube, tmp_path / "split.json", (1970, 1970), (1970, 1970))
    assert split.train_years == split.test_years == (1970,)
    with pytest.raises(InputDataError, match="set train.prior: false for single-year data"):
        run_training(with_prior, output_dir=tmp_path / "refused",
                     split_path=tmp_path / "split.json")
    data = {**data, "train": {**data["train"], "prior": False}}
    config = parse_config(data)
    summary = run_training(config, output_dir=tmp_path / "m", split_path=tmp_path / "split.json")
    assert summary["global_step"] == 3 and summary["finished"]
    model, card = load_model(tmp_path / "m")
    assert card.dropped_inputs == ["prior"] and card.trained_years == [1970]
    names = card.input_channels
    prior = [i for i, n in enumerate(names) if n.startswith("prior:") or n == "direction"]
    assert card.architecture["zero_channels"] == prior
    assert card.metrics["val_miou"] is not None
    # Whatever prior and direction a predict job passes, the model ignores them.
    x = torch.randn(1, len(names), 32, 32)
    other = x.clone()
    other[:, prior] = torch.rand(1, len(prior), 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(other))


def test_planner_without_prior_uses_every_year_forward(tiny):
    _, _, split = tiny
    planner = SamplePlanner(split.role_mask("train"), tile_size=16, years=[1962], seed=0,
                            with_prior=False)
    plan = planner.epoch(0, 30)
    assert {s.year for s in plan} == {1962} and {s.direction for s in plan} == {FORWARD}


# --- change-balanced sampling -----------------------------------------------------------------


def test_change_counts_match_brute_force():
    rng = np.random.default_rng(0)
    maps = {y: rng.integers(-1, 3, size=(10, 13)) for y in (2000, 2001, 2002, 2004)}
    allowed = rng.random((10, 13)) < 0.8
    counts = change_counts(maps.__getitem__, list(maps), block_size=4, allowed=allowed)
    assert counts.first_years == (2000, 2001)  # 2002 -> 2003 is missing
    assert counts.counts.shape == (2, 3, 4)
    for i, first in enumerate(counts.first_years):
        a, b = maps[first], maps[first + 1]
        changed = allowed & (a >= 0) & (b >= 0) & (a != b)
        for r in range(3):
            for c in range(4):
                expected = changed[r * 4 : r * 4 + 4, c * 4 : c * 4 + 4].sum()
                assert counts.counts[i, r, c] == expected


def test_change_balanced_plans_see_more_change(tiny):
    root, _, split = tiny
    config = _config(root)
    cube = Cube.from_config(config)
    predicted = config.classes.predicted
    years = list(split.train_years)
    allowed = split.role_mask("train")
    whole_maps = {y: codes_to_index(cube.target.sel(year=y).values, predicted) for y in years}
    change = change_counts(whole_maps.__getitem__, years, block_size=16, allowed=allowed)
    kwargs = dict(tile_size=16, years=years, seed=3)
    uniform = SamplePlanner(allowed, **kwargs).epoch(0, 400)
    same = SamplePlanner(allowed, **kwargs, change=change, change_share=0.0).epoch(0, 400)
    assert same == uniform  # share 0 leaves the plan untouched
    planner = SamplePlanner(allowed, **kwargs, change=change, change_share=0.8)
    balanced = planner.epoch(0, 400)
    assert balanced == SamplePlanner(allowed, **kwargs, change=change,
                                     change_share=0.8).epoch(0, 400)
    assert balanced != planner.epoch(1, 400)
    assert [s.index for s in balanced] == list(range(400))

    def changed_share(plan) -> float:
        total = 0.0
        for spec in plan:
            a = whole_maps[spec.year][spec.window.slices]
            b = whole_maps[spec.prior_year][spec.window.slices]
            total += ((a != b) & (a >= 0) & (b >= 0)).mean()
        return total / len(plan)

    for spec in balanced:
        assert allowed[spec.window.slices].all()
        assert spec.year in years and spec.prior_year in years
    assert changed_share(balanced) > 1.5 * changed_share(uniform)


def test_change_balanced_training_runs(tiny, tmp_path):
    root, split_path, _ = tiny
    config = _config(root, epochs=1, steps_per_epoch=2, val_batches=1, change_balanced=0.5)
    summary = run_training(config, output_dir=tmp_path, split_path=split_path)
    assert summary["global_step"] == 2 and np.isfinite(summary["step_losses"]).all()


# --- TensorBoard and the prefetch thread -------------------------------------------------------


def test_tensorboard_scalars_when_installed(tiny, tmp_path, monkeypatch):
    root, split_path, _ = tiny
    written = []

    class FakeWriter:
        def __init__(self, log_dir, purge_step):
            written.append(("open", log_dir, purge_step))

        def add_scalar(self, tag, value, step):
            written.append((tag, float(value), step))

        def flush(self):
            pass

        def close(self):
            written.append(("close",))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)
    config = _config(root, epochs=2, steps_per_epoch=2, val_batches=1, tensorboard=True)
    run_training(config, output_dir=tmp_path, split_path=split_path)
    assert written[0] == ("open", str(tmp_path / "tensorboard"), 1)
    assert [w[2] for w in written if w[0] == "step/loss"] == [1, 2, 3, 4]
    assert [w[2] for w in written if w[0] == "epoch/val_loss"] == [2, 4]
    assert written[-1] == ("close",)


def test_tensorboard_missing_warns_and_trains(tiny, tmp_path, monkeypatch, caplog):
    root, split_path, _ = tiny
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    config = _config(root, epochs=1, steps_per_epoch=2, val_batches=1, tensorboard=True)
    with caplog.at_level(logging.WARNING, logger="ai4land.train"):
        summary = run_training(config, output_dir=tmp_path, split_path=split_path)
    assert summary["finished"]
    assert "tensorboard package is not installed" in caplog.text


def test_prefetch_keeps_order_raises_and_stops_early():
    assert list(Prefetch(range(50), 3)) == list(range(50))

    def broken():
        yield 1
        raise RuntimeError("bad window")

    with pytest.raises(RuntimeError, match="bad window"):
        list(Prefetch(broken(), 2))
    prefetch = Prefetch(iter(range(10**9)), 2)
    assert next(iter(prefetch)) == 0
    prefetch.close()  # returns although the producer never ends
    assert not prefetch._thread.is_alive()
    with pytest.raises(ValueError, match="depth"):
        Prefetch(range(3), 0)


@pytest.mark.parametrize("depth", [1, 2])
def test_prefetch_produces_at_most_depth_items_ahead_of_the_consumer(depth):
    produced = []

    def items():
        for i in range(8):
            produced.append(i)
            yield i

    ahead = []
    with Prefetch(items(), depth) as prefetch:
        for taken, item in enumerate(prefetch):
            time.sleep(0.05)  # the producer has time to run ahead, as far as allowed
            ahead.append(len(produced) - 1 - taken)
            last = item
        assert last == 7
    # the consumer's item plus at most `depth` more (one of them in the making), and
    # the producer does use that room
    assert max(ahead) == depth, ahead


# --- input dropout -----------------------------------------------------------------------


def test_input_dropout_validates(tiny):
    root, _, _ = tiny
    config = _config(root, input_dropout={"static": 0.5, "coarse": 0.0})
    assert config.train.input_dropout == {"static": 0.5, "coarse": 0.0}
    assert _config(root).train.input_dropout == {}
    assert _config(root, drop_inputs=["coarse"], input_dropout={"static": 0.3}).train.input_dropout
    with pytest.raises(ConfigError, match=r"input_dropout lists \['static'\], which drop_inputs"):
        _config(root, drop_inputs=["static"], input_dropout={"static": 0.5})
    with pytest.raises(ConfigError, match=r"input_dropout lists \['prior'\]"):
        _config(root, prior=False, input_dropout={"prior": 0.5})
    with pytest.raises(ConfigError, match="train.input_dropout.terrain"):
        _config(root, input_dropout={"terrain": 0.5})
    with pytest.raises(ConfigError, match="train.input_dropout.static must be less than 1"):
        _config(root, input_dropout={"static": 1.0})
    with pytest.raises(ConfigError, match="train.input_dropout.static must be greater than"):
        _config(root, input_dropout={"static": -0.1})


def test_input_dropout_and_augment_reach_training_only_and_resume_exactly(tiny, tmp_path,
                                                                         monkeypatch):
    import ai4land.train.loop as train_module

    root, split_path, _ = tiny
    seen = []

    class Recording(train_module.WindowDataset):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            seen.append((self.stream, dict(self.input_dropout), self.augment))

    monkeypatch.setattr(train_module, "WindowDataset", Recording)
    short = dict(epochs=2, steps_per_epoch=2, checkpoint_every=1, val_batches=1)
    config = _config(root, **short, input_dropout={"static": 0.5, "coarse": 0.3}, augment=True)

    def steps(directory):
        return [json.loads(x)["loss"] for x in (directory / "steps.jsonl").read_text().splitlines()]

    run_training(config, output_dir=tmp_path / "whole", split_path=split_path)
    assert {s for s, d, _ in seen if d} == {"load"} and ("val-load", {}, False) in seen
    assert all(d == {"static": 0.5, "coarse": 0.3} and a for s, d, a in seen if s == "load")
    first = run_training(config, output_dir=tmp_path / "parts", split_path=split_path, max_steps=3)
    assert first["global_step"] == 3 and not first["finished"]
    run_training(config, output_dir=tmp_path / "parts", split_path=split_path)
    assert len(steps(tmp_path / "whole")) == 4
    assert steps(tmp_path / "parts") == steps(tmp_path / "whole")  # bit for bit
    plain = _config(root, **short)
    run_training(plain, output_dir=tmp_path / "plain", split_path=split_path)
    assert steps(tmp_path / "plain") != steps(tmp_path / "whole")


def test_validation_poses_the_task_predict_runs_the_whole_prior_shown(tiny, tmp_path,
                                                                       monkeypatch):
    """Training hides parts of the prior (train.prior_mask); predict never does, so the
    validation that picks the model and stops training shows every sample's prior whole."""
    import ai4land.train.loop as train_module
    from ai4land.samples.dataset import NO_MASK

    root, split_path, _ = tiny
    datasets = {}

    class Recording(train_module.WindowDataset):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            datasets[self.stream] = self

    monkeypatch.setattr(train_module, "WindowDataset", Recording)
    config = _config(root, epochs=1, steps_per_epoch=2, val_batches=2,
                     prior_mask={"p_none": 0.5, "max_fraction": 0.5, "block_size": 4})
    run_training(config, output_dir=tmp_path / "run", split_path=split_path)
    val = [datasets["val-load"][i] for i in range(len(datasets["val-load"]))]
    assert val and all(item["has_prior"] and item["prior_hidden"] == NO_MASK for item in val)
    train = [datasets["load"][i] for i in range(len(datasets["load"]))]
    assert any(not item["has_prior"] or item["prior_hidden"] > 0 for item in train)


def test_loader_processes_and_memory_mapped_arrays_train_the_same_steps(tiny, tmp_path):
    """Loader worker processes reading memory-mapped training arrays give the run of
    the in-process loader over in-memory arrays, bit for bit (samples are pure
    functions of seed, epoch and index), and a resume may change both settings."""
    root, split_path, _ = tiny
    short = dict(epochs=2, steps_per_epoch=2, checkpoint_every=1, val_batches=1, augment=True,
                 input_dropout={"static": 0.5})

    def steps(directory):
        return [json.loads(x)["loss"] for x in (directory / "steps.jsonl").read_text().splitlines()]

    run_training(_config(root, **short), output_dir=tmp_path / "thread", split_path=split_path)
    workers = _config(root, **short, num_workers=2, cache_dir=str(tmp_path / "cache"))
    first = run_training(workers, output_dir=tmp_path / "workers", split_path=split_path,
                         max_steps=3)
    assert first["global_step"] == 3
    assert np.load(tmp_path / "cache" / "target.npy", mmap_mode="r").dtype == np.uint8
    run_training(_config(root, **short), output_dir=tmp_path / "workers", split_path=split_path)
    assert len(steps(tmp_path / "thread")) == 4
    assert steps(tmp_path / "workers") == steps(tmp_path / "thread")
