"""A vanilla U-Net: double 3x3 conv-norm-ReLU blocks, max-pool down, transpose-conv up.

``zero_channels`` lists input channels the network multiplies by 0 before its first
layer (input ablation, or a model trained without a prior): they are part of the
architecture, so every caller (training, evaluation, prediction) gets the same.

``prior_skip`` lists the input channels of the prior map's one-hot classes, one per
output class in the same order: each class's logit then gets a learned gain times its
prior channel (a persistence path past the convolutions). Most pixels keep their class
from one year to the next, so the network starts from persistence for every class,
rare ones too, and its convolutions learn the change; a hidden or absent prior (all
zero channels) adds nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NORMS = ("batch", "group")
# Initial gain of the persistence path (``prior_skip``): a shown prior class starts
# e^3 ~ 20 times likelier than each other class.
PRIOR_GAIN_INIT = 3.0


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = next(g for g in (8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    raise ValueError(f"unknown norm {kind!r}; use one of {NORMS}")


class DoubleConv(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int, *, norm: str, dropout: float):
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class UNet(nn.Module):
    """U-Net returning logits (B, num_classes, H, W); H and W must divide by 2**depth."""

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        base_channels: int = 16,
        depth: int = 3,
        norm: str = "batch",
        dropout: float = 0.0,
        zero_channels: Sequence[int] = (),
        prior_skip: Sequence[int] = (),
    ):
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r}; use one of {NORMS}")
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        zero_channels = sorted({int(c) for c in zero_channels})
        if zero_channels and not (zero_channels[0] >= 0 and zero_channels[-1] < in_channels):
            raise ValueError(f"zero_channels {zero_channels} outside 0..{in_channels - 1}")
        self.config = {
            "in_channels": int(in_channels),
            "num_classes": int(num_classes),
            "base_channels": int(base_channels),
            "depth": int(depth),
            "norm": norm,
            "dropout": float(dropout),
            "zero_channels": zero_channels,
        }
        prior_skip = [int(c) for c in prior_skip]
        if prior_skip:
            if len(prior_skip) != num_classes or not all(0 <= c < in_channels for c in prior_skip):
                raise ValueError(f"prior_skip needs one input channel (0..{in_channels - 1}) per "
                                 f"class ({num_classes}), got {prior_skip}")
            self.config["prior_skip"] = prior_skip
            self.register_buffer("prior_index", torch.tensor(prior_skip, device="cpu"),
                                 persistent=False)
            self.prior_gain = nn.Parameter(torch.full((num_classes,), PRIOR_GAIN_INIT))
        else:
            self.prior_index = None
        self.depth = depth
        scale = None
        if zero_channels:
            # on the CPU even when the layers are built on the meta device (load_model)
            scale = torch.ones(1, in_channels, 1, 1, device="cpu")
            scale[:, zero_channels] = 0.0
        # Derived from the config, not learned: kept out of the state_dict.
        self.register_buffer("input_scale", scale, persistent=False)
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        channels = in_channels
        for width in widths[:-1]:
            self.down.append(DoubleConv(channels, width, norm=norm, dropout=0.0))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DoubleConv(channels, widths[-1], norm=norm, dropout=dropout)
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose2d(width * 2, width, 2, stride=2))
            self.up_conv.append(DoubleConv(width * 2, width, norm=norm, dropout=0.0))
        self.head = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        multiple = 2**self.depth
        if x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise ValueError(
                f"input {tuple(x.shape[-2:])} must be a multiple of {multiple} (2**depth) "
                "in height and width"
            )
        if self.input_scale is not None:
            x = x * self.input_scale.to(x.dtype)
        prior = None if self.prior_index is None else x.index_select(1, self.prior_index)
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for up, conv, skip in zip(self.up, self.up_conv, reversed(skips), strict=True):
            x = conv(torch.cat([up(x), skip], dim=1))
        logits = self.head(x)
        if prior is not None:
            logits = logits + self.prior_gain.to(logits.dtype)[:, None, None] * prior.to(
                logits.dtype)
        return logits
