"""Denoising diffusion: noise schedules, model parameterisations and denoisers.

The samplers built on them (DDPM, DDIM, reverse SDE, probability-flow ODE) live in
:mod:`sampleopt.samplers.diffusion` as Gaussian chains.
"""

from sampleopt.diffusion.denoisers import Denoiser, ExactGaussianDenoiser, LateStepDenoiser
from sampleopt.diffusion.parameterization import PREDICTIONS, convert
from sampleopt.diffusion.schedules import (
    CosineSchedule,
    ExponentialSchedule,
    LearnableCosineSchedule,
    LinearSchedule,
    NoiseSchedule,
)
from sampleopt.diffusion.subspace_denoiser import SubspaceGaussianDenoiser

__all__ = [
    "PREDICTIONS",
    "CosineSchedule",
    "Denoiser",
    "ExactGaussianDenoiser",
    "ExponentialSchedule",
    "LateStepDenoiser",
    "LearnableCosineSchedule",
    "LinearSchedule",
    "NoiseSchedule",
    "SubspaceGaussianDenoiser",
    "convert",
]
