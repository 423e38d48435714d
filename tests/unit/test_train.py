"""Training: outputs, learning, exact resume, DDP (gloo) and a real SIGKILL resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
from tiny_cube import tiny_config, write_tiny_cube  # noqa: E402

from ai4land.config import parse_config, slice_hash  # noqa: E402
from ai4land.errors import ConfigError  # noqa: E402
from ai4land.io.cube import Cube  # noqa: E402
from ai4land.models import check_inputs, load_model  # noqa: E402
from ai4land.samples.features import input_channel_names  # noqa: E402
from ai4land.samples.split import make_split  # noqa: E402
from ai4land.train.loop import lr_factor, run_training  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    write_tiny_cube(root / "cube")
    config = tiny_config(root / "cube", results=root / "results")
    cube = Cube.from_config(config)
    land = np.asarray(cube.static["land_mask"].values).astype(bool)
    split = make_split(land, block_size=16, n_test=2, n_val=2, buffer=1,
                       train_years=config.years.train, test_years=config.years.test, seed=0)
    split_path = root / "split.json"
    split_path.write_text(json.dumps(split.to_json()))
    return root, split_path


def _config(root: Path, **train):
    return tiny_config(root / "cube", results=root / "results", train=train)


def _steps(directory: Path) -> list[float]:
    return [
        json.loads(line)["loss"] for line in (directory / "steps.jsonl").read_text().splitlines()
    ]


def _epochs(directory: Path) -> list[dict]:
    rows = [json.loads(line) for line in (directory / "metrics.jsonl").read_text().splitlines()]
    for row in rows:  # timings differ run to run
        for key in ("samples_per_s", "data_wait", "epoch_s"):
            row.pop(key)
    return rows


def test_lr_schedule_warms_up_then_decays():
    factors = [lr_factor(s, 100) for s in range(100)]
    assert factors[0] < factors[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[5:], factors[6:], strict=False))
    assert factors[-1] < 0.05


def test_short_run_writes_model_card_and_metrics(tiny, tmp_path):
    root, split_path = tiny
    config = _config(root)
    out = tmp_path / "model"
    summary = run_training(config, output_dir=out, split_path=split_path)
    assert summary["global_step"] == 8 and summary["finished"]
    for name in ("model.pt", "model_card.json", "metrics.csv", "metrics.jsonl", "steps.jsonl",
                 "checkpoints/last.pt", "checkpoints/best.pt"):
        assert (out / name).is_file(), name
    model, card = load_model(out)
    cube = Cube.from_config(config)
    check_inputs(card, input_channel_names(cube, config.classes.predicted))
    assert card.classes == config.classes.predicted
    assert card.tile_size == 32 and card.seed == config.seed
    # the card's hash is the train stage's config slice hash (its rerun trigger)
    assert card.config_hash == slice_hash(config, "train") != config.hash()
    # the card carries the resolved config itself (the emulator reads it back)
    assert parse_config(card.config).hash() == config.hash()
    assert card.trained_years == list(range(1960, 1964))
    assert card.metrics["val_miou"] is not None
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,step,lr,train_loss,train_acc,val_loss,val_oa,val_miou")
    assert len(lines) == 3
    assert len(_steps(out)) == 8
    x = torch.zeros(1, len(card.input_channels), 32, 32)
    assert model(x).shape == (1, len(card.classes), 32, 32)


def test_loss_decreases_when_overfitting(tiny, tmp_path):
    root, split_path = tiny
    config = _config(root, epochs=1, steps_per_epoch=40, lr=5e-3, batch_size=4, val_batches=1,
                     prior_mask={"p_none": 0.0, "max_fraction": 0.2, "block_size": 8})
    summary = run_training(config, output_dir=tmp_path / "m", split_path=split_path)
    losses = summary["step_losses"]
    assert len(losses) == 40
    assert np.mean(losses[-8:]) < 0.75 * np.mean(losses[:4])


def test_resume_reproduces_the_uninterrupted_run_exactly(tiny, tmp_path):
    root, split_path = tiny
    config = _config(root, epochs=2, steps_per_epoch=4, checkpoint_every=2, dropout=0.1)
    whole = tmp_path / "whole"
    run_training(config, output_dir=whole, split_path=split_path, max_steps=6)
    parts = tmp_path / "parts"
    first = run_training(config, output_dir=parts, split_path=split_path, max_steps=3)
    assert first["global_step"] == 3 and not first["finished"]
    assert not (parts / "metrics.jsonl").read_text()  # no epoch finished yet
    second = run_training(config, output_dir=parts, split_path=split_path, max_steps=6)
    assert second["global_step"] == 6 and len(second["step_losses"]) == 3
    assert _steps(parts) == _steps(whole)  # bit-for-bit equal losses
    assert _epochs(parts) == _epochs(whole)
    # And on to the end from the 6-step checkpoint: identical final weights.
    run_training(config, output_dir=whole, split_path=split_path)
    run_training(config, output_dir=parts, split_path=split_path)
    assert _steps(parts) == _steps(whole) and len(_steps(whole)) == 8
    a = torch.load(whole / "model.pt", weights_only=True)
    b = torch.load(parts / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A finished run resumes to nothing and leaves the logs alone.
    again = run_training(config, output_dir=parts, split_path=split_path)
    assert again["step_losses"] == [] and _steps(parts) == _steps(whole)


def test_resume_false_starts_afresh_and_changed_settings_are_refused_or_set_aside(tiny, tmp_path):
    root, split_path = tiny
    out = tmp_path / "m"
    config = _config(root, epochs=1, steps_per_epoch=2, val_batches=1)
    run_training(config, output_dir=out, split_path=split_path)
    with pytest.raises(ConfigError, match="other training settings"):
        run_training(_config(root, epochs=1, steps_per_epoch=2, val_batches=1, lr=1e-3),
                     output_dir=out, split_path=split_path)
    fresh = run_training(config, output_dir=out, split_path=split_path, resume=False)
    assert len(fresh["step_losses"]) == 2 and len(_steps(out)) == 2
    # The workflow's choice: changed settings set the old checkpoints aside, start afresh.
    old_last = (out / "checkpoints" / "last.pt").read_bytes()
    changed = _config(root, epochs=1, steps_per_epoch=2, val_batches=1, lr=1e-3)
    again = run_training(changed, output_dir=out, split_path=split_path, restart_if_changed=True)
    assert len(again["step_losses"]) == 2 and len(_steps(out)) == 2
    stale = list((out / "checkpoints").glob("stale-*"))
    assert len(stale) == 1 and (stale[0] / "last.pt").read_bytes() == old_last
    assert (stale[0] / "best.pt").exists() and (out / "checkpoints" / "last.pt").exists()
    # unchanged settings still resume (nothing left to do), whatever the flag
    done = run_training(changed, output_dir=out, split_path=split_path, restart_if_changed=True)
    assert done["step_losses"] == [] and len(list((out / "checkpoints").glob("stale-*"))) == 1


def test_bad_settings_give_clear_errors(tiny, tmp_path):
    root, split_path = tiny
    with pytest.raises(ConfigError, match="tile_size 18 must be a multiple of 2\\*\\*depth = 4"):
        run_training(_config(root, tile_size=18), output_dir=tmp_path, split_path=split_path)
    with pytest.raises(Exception, match="no 96x96 window fits inside the train blocks"):
        run_training(_config(root, tile_size=96), output_dir=tmp_path, split_path=split_path)


def test_module_entry_point_is_the_cli_command(tmp_path):
    """``python -m ai4land.train`` (what torchrun runs) is ``ai4land train``: the same
    flags (--config repeats, --split optional) and one-line errors."""
    missing = tmp_path / "missing.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "ai4land.train", "--config", str(missing), "--output",
         str(tmp_path / "model"), "--no-resume", "--max-steps", "1"],
        capture_output=True, text=True, timeout=120, env=_env(),
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("ai4land: error: ") and "missing.yaml" in lines[0]
    )
    usage = subprocess.run([sys.executable, "-m", "ai4land.train", "--help"],
                           capture_output=True, text=True, timeout=120, env=_env())
    assert usage.returncode == 0 and "usage: ai4land train" in usage.stdout
    assert "--restart-if-changed" in usage.stdout


# --- multi-process and kill tests (subprocesses) ---------------------------------------


def _write_config(root: Path, path: Path, **train) -> Path:
    data = _config(root, **train).model_dump(mode="json")
    path.write_text(yaml.safe_dump(data))
    return path


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONWARNINGS"] = "ignore"
    return env


@pytest.mark.slow
def test_torchrun_two_ranks_gloo_matches_one_process(tiny, tmp_path):
    root, split_path = tiny
    train = dict(epochs=1, steps_per_epoch=6, batch_size=4, val_batches=1, amp=False)
    cfg = _write_config(root, tmp_path / "c.yaml", **train)
    single = tmp_path / "single"
    run_training(_config(root, **train), output_dir=single, split_path=split_path)
    double = tmp_path / "double"
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "ai4land.train", "--config", str(cfg), "--output", str(double),
         "--split", str(split_path)],
        capture_output=True, text=True, timeout=300, env=_env(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (double / "model.pt").is_file() and (double / "model_card.json").is_file()
    one, two = _steps(single), _steps(double)
    assert len(two) == 6
    # Same global batches and the same global-mean loss; only BatchNorm statistics are
    # per rank (2 samples instead of 4), so the values agree closely, not exactly.
    np.testing.assert_allclose(two, one, rtol=0.1)
    assert json.loads((double / "model_card.json").read_text())["metrics"]["world_size"] == 2


@pytest.mark.slow
def test_sigkill_and_resume_matches_uninterrupted_run(tiny, tmp_path):
    root, split_path = tiny
    train = dict(epochs=3, steps_per_epoch=10, checkpoint_every=3, val_batches=1)
    cfg = _write_config(root, tmp_path / "c.yaml", **train)

    def command(out: Path) -> list[str]:
        return [sys.executable, "-m", "ai4land.train", "--config", str(cfg), "--output", str(out),
                "--split", str(split_path)]

    whole = tmp_path / "whole"
    subprocess.run(command(whole), check=True, capture_output=True, timeout=300, env=_env())
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env())
    steps_file = killed / "steps.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if steps_file.exists() and len(steps_file.read_text().splitlines()) >= 14:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(steps_file.read_text().splitlines())
    assert 14 <= done < 30
    subprocess.run(command(killed), check=True, capture_output=True, timeout=300, env=_env())
    assert _steps(killed) == _steps(whole)
    assert _epochs(killed) == _epochs(whole)
    a = torch.load(whole / "model.pt", weights_only=True)
    b = torch.load(killed / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
