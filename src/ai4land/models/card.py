"""Model cards: a trained model is ``model.pt`` (state_dict) + ``model_card.json``.

The card says what the weights expect (input channels in order, predicted classes,
architecture, tile size, the input groups the model zeroes, the normalisation of each
input group with the static features' mean/std) and where they came from (config
hash, code version, seed, trained years, metrics). ``load_model`` rebuilds the U-Net
from the card and loads the weights with ``torch.load(weights_only=True)``: no
pickled code is ever executed.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import torch

import ai4land
from ai4land.errors import ModelCardError
from ai4land.io.atomic import atomic_path
from ai4land.models.unet import UNet

WEIGHTS = "model.pt"
CARD = "model_card.json"
CARD_FORMAT = 1


@dataclass
class ModelCard:
    input_channels: list[str]
    classes: list[int]
    architecture: dict
    tile_size: int
    # The hash of the train stage's config slice (ai4land.config.slice_hash): what the
    # train rule reruns on, so it changes exactly when the model is retrained.
    config_hash: str = ""
    code_version: str = ""
    seed: int = 0
    trained_years: list[int] = field(default_factory=list)
    # Input groups ('coarse', 'static', 'prior') zeroed by the model
    # (``architecture['zero_channels']`` holds their channel indices).
    dropped_inputs: list[str] = field(default_factory=list)
    # Per input group how it is scaled; static: {name: {"mean": m, "std": s}}.
    normalisation: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    # The whole resolved config of the run that trained the model: the emulator
    # (:mod:`ai4land.emulator`) takes the classes, coarse groups, predict settings and
    # ``paths.cube`` from it. Entries outside the train slice can be older than the
    # workflow's config (an edit of them does not retrain). Empty in cards written
    # before it existed.
    config: dict = field(default_factory=dict)
    format: int = CARD_FORMAT

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict, *, source: str = "model card") -> ModelCard:
        if not isinstance(data, dict):
            raise ModelCardError(f"{source}: expected a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise ModelCardError(f"{source}: missing field(s) {', '.join(missing)}")
        unknown = sorted(set(data) - names)
        if unknown:
            raise ModelCardError(f"{source}: unknown field(s) {', '.join(unknown)}")
        card = cls(**data)
        card.classes = [int(c) for c in card.classes]
        card.input_channels = [str(c) for c in card.input_channels]
        return card

    def build_model(self) -> UNet:
        arch = dict(self.architecture)
        if arch.get("in_channels") != len(self.input_channels):
            raise ModelCardError(
                f"model card: architecture.in_channels {arch.get('in_channels')} does not match "
                f"{len(self.input_channels)} input_channels"
            )
        if arch.get("num_classes") != len(self.classes):
            raise ModelCardError(
                f"model card: architecture.num_classes {arch.get('num_classes')} does not match "
                f"{len(self.classes)} classes"
            )
        try:
            return UNet(arch.pop("in_channels"), arch.pop("num_classes"), **arch)
        except (TypeError, ValueError) as exc:
            raise ModelCardError(
                f"model card: invalid architecture {self.architecture} ({exc})"
            ) from None


def code_version() -> str:
    """``ai4land.__version__``, plus ``git describe`` of the source tree when available."""
    version = ai4land.__version__
    try:
        described = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=Path(ai4land.__file__).parent, capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return version
    if described.returncode == 0 and described.stdout.strip():
        return f"{version}+git.{described.stdout.strip()}"
    return version


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)


def save_model(directory: str | Path, model: torch.nn.Module, card: ModelCard) -> None:
    """Write ``model.pt`` (state_dict, fp32, contiguous) and ``model_card.json`` atomically."""
    directory = Path(directory)
    state = {
        name: tensor.detach().to("cpu").contiguous()
        for name, tensor in _unwrap(model).state_dict().items()
    }
    # through a file handle, so the archive's internal name is fixed ("archive") rather
    # than the random temp name: identical weights give identical bytes
    with atomic_path(directory / WEIGHTS) as tmp, open(tmp, "wb") as handle:
        torch.save(state, handle)
    with atomic_path(directory / CARD) as tmp:
        tmp.write_text(json.dumps(card.to_json(), indent=1) + "\n")


def read_card(directory: str | Path) -> ModelCard:
    path = Path(directory) / CARD
    if not path.is_file():
        raise ModelCardError(f"{path}: model card not found; train a model first")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelCardError(f"{path}: not valid JSON (line {exc.lineno})") from None
    return ModelCard.from_json(data, source=str(path))


def load_model(directory: str | Path, *, map_location="cpu") -> tuple[UNet, ModelCard]:
    """Rebuild the U-Net described by the card and load its weights (eval mode)."""
    directory = Path(directory)
    card = read_card(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise ModelCardError(f"{weights}: weights not found next to {CARD}")
    try:
        state = torch.load(weights, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise ModelCardError(
            f"{weights}: cannot load weights ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(state, dict):
        raise ModelCardError(f"{weights}: expected a state_dict, got {type(state).__name__}")
    # Layers built on the meta device and given the loaded tensors: no random
    # initialisation that the weights would overwrite (it took half the load time).
    with torch.device("meta"):
        model = card.build_model()
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[-1].strip()
        raise ModelCardError(
            f"{weights}: weights do not match the card's architecture ({first})"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        what = (f"missing {result.missing_keys[:3]}" if result.missing_keys
                else f"unexpected {result.unexpected_keys[:3]}")
        raise ModelCardError(f"{weights}: weights do not match the card's architecture ({what})")
    model.to(map_location).float()  # the module's dtype, whatever the file held
    model.eval()
    return model, card


def check_inputs(card: ModelCard, channel_names: list[str]) -> None:
    """Raise ModelCardError unless ``channel_names`` equal the card's inputs, in order."""
    expected = list(card.input_channels)
    given = list(channel_names)
    for i, (want, got) in enumerate(zip(expected, given, strict=False)):
        if want != got:
            raise ModelCardError(
                f"input channel {i} is {got!r} but the model was trained with {want!r}"
            )
    if len(given) != len(expected):
        if len(given) < len(expected):
            raise ModelCardError(
                f"input channel {len(given)} ({expected[len(given)]!r}) is missing: the model "
                f"expects {len(expected)} channels, got {len(given)}"
            )
        raise ModelCardError(
            f"input channel {len(expected)} ({given[len(expected)]!r}) is extra: the model "
            f"expects {len(expected)} channels, got {len(given)}"
        )
