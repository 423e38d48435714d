"""Models: the U-Net and its model card (weights + JSON description)."""

from ai4land.models.card import ModelCard, check_inputs, load_model, save_model
from ai4land.models.unet import UNet

__all__ = ["ModelCard", "UNet", "check_inputs", "load_model", "save_model"]
