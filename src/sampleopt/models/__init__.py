"""Denoising networks: a time-conditioned MLP for low-dimensional data and a small
UNet for images (the diffusers adapter lives in :mod:`sampleopt.models.diffusers_adapter`)."""

from sampleopt.models.mlp import TimeMLP
from sampleopt.models.registry import MODELS, load_state_checked, model_from_config
from sampleopt.models.unet import SmallUNet

__all__ = ["MODELS", "SmallUNet", "TimeMLP", "load_state_checked", "model_from_config"]
