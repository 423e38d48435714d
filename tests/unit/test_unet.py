"""U-Net shapes and gradients; model card round trip, weights-only loading, input checks."""

from __future__ import annotations

import json

import pytest
import torch

from ai4land.errors import ModelCardError
from ai4land.models import ModelCard, UNet, check_inputs, load_model, save_model


@pytest.mark.parametrize("norm", ["batch", "group"])
@pytest.mark.parametrize("depth", [1, 3])
def test_unet_output_shape_and_gradients(norm, depth):
    torch.manual_seed(0)
    model = UNet(5, 7, base_channels=8, depth=depth, norm=norm, dropout=0.1)
    x = torch.randn(2, 5, 32, 48, requires_grad=True)
    logits = model(x)
    assert logits.shape == (2, 7, 32, 48)
    logits.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is not None for p in model.parameters())


def test_unet_rejects_sizes_not_divisible_by_two_to_the_depth():
    model = UNet(3, 4, base_channels=4, depth=3)
    with pytest.raises(ValueError, match="multiple of 8"):
        model(torch.zeros(1, 3, 36, 32))
    with pytest.raises(ValueError, match="unknown norm"):
        UNet(3, 4, norm="layer")


def test_unet_channels_last_bf16_autocast_matches_shape():
    model = UNet(3, 4, base_channels=4, depth=2).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.shape == (2, 4, 16, 16)


def _card(model: UNet, channels: list[str]) -> ModelCard:
    return ModelCard(
        input_channels=channels, classes=[11, 22, 33, 44], architecture=model.config,
        tile_size=32, config_hash="abc", code_version="0.1.0", seed=3,
        trained_years=[1960, 1961], metrics={"val_miou": 0.5},
    )


def test_card_round_trip_and_weights_only_load(tmp_path):
    torch.manual_seed(1)
    model = UNet(3, 4, base_channels=4, depth=2)
    model.eval()
    card = _card(model, ["coarse:a", "static:b", "direction"])
    save_model(tmp_path, model, card)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "model_card.json"]
    # The weights are a plain state_dict: loadable without executing pickled code.
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(state) == set(model.state_dict())
    loaded, loaded_card = load_model(tmp_path)
    assert loaded_card == card
    assert ModelCard.from_json(json.loads((tmp_path / "model_card.json").read_text())) == card
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert not loaded.training


def test_check_inputs_names_first_differing_channel():
    card = _card(UNet(3, 4, base_channels=4, depth=1), ["coarse:a", "static:b", "direction"])
    check_inputs(card, ["coarse:a", "static:b", "direction"])
    with pytest.raises(ModelCardError, match=r"input channel 1 is 'static:c'.*'static:b'"):
        check_inputs(card, ["coarse:a", "static:c", "direction"])
    with pytest.raises(ModelCardError, match=r"input channel 2 \('direction'\) is missing"):
        check_inputs(card, ["coarse:a", "static:b"])
    with pytest.raises(ModelCardError, match=r"input channel 3 \('extra'\) is extra"):
        check_inputs(card, ["coarse:a", "static:b", "direction", "extra"])


def test_load_model_errors_are_one_clear_line(tmp_path):
    with pytest.raises(ModelCardError, match="model card not found"):
        load_model(tmp_path)
    model = UNet(3, 4, base_channels=4, depth=1)
    card = _card(model, ["a", "b", "c"])
    save_model(tmp_path, model, card)
    (tmp_path / "model.pt").unlink()
    with pytest.raises(ModelCardError, match="weights not found"):
        load_model(tmp_path)
    # Weights of another architecture.
    save_model(tmp_path, UNet(3, 4, base_channels=8, depth=1), card)
    with pytest.raises(ModelCardError, match="do not match the card's architecture"):
        load_model(tmp_path)
    # Card inconsistent with itself.
    bad = _card(model, ["a", "b"])
    save_model(tmp_path, model, bad)
    with pytest.raises(ModelCardError, match="in_channels 3 does not match 2"):
        load_model(tmp_path)
    (tmp_path / "model_card.json").write_text("{not json")
    with pytest.raises(ModelCardError, match="not valid JSON"):
        load_model(tmp_path)
    (tmp_path / "model_card.json").write_text(json.dumps({"classes": [1]}))
    with pytest.raises(ModelCardError, match="missing field"):
        load_model(tmp_path)


def test_saving_the_same_weights_twice_gives_identical_bytes(tmp_path):
    torch.manual_seed(0)
    model = UNet(4, 3, base_channels=4, depth=2)
    card = _card(model, [f"c{i}" for i in range(4)])
    save_model(tmp_path / "a", model, card)
    save_model(tmp_path / "b", model, card)
    assert (tmp_path / "a/model.pt").read_bytes() == (tmp_path / "b/model.pt").read_bytes()
