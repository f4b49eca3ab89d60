"""Gradient guidance (Guo et al. 2024; docs/guidance.md): guidance terms added to a
diffusion model's score at sampling time, the denoiser transform every sampler runs, and
the per-sample gradients and targets of guided optimisation."""

from sampleopt.guidance.denoiser import GuidedDenoiser
from sampleopt.guidance.targets import AutogradGradient, ZerothOrderGradient, guidance_targets
from sampleopt.guidance.terms import (
    GUIDANCES,
    Guidance,
    LookAheadGuidance,
    NaiveGuidance,
    make_guidance,
)

__all__ = [
    "GUIDANCES",
    "AutogradGradient",
    "Guidance",
    "GuidedDenoiser",
    "LookAheadGuidance",
    "NaiveGuidance",
    "ZerothOrderGradient",
    "guidance_targets",
    "make_guidance",
]
