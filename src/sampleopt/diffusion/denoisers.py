"""Denoisers: networks that predict eps, x0, v or the score from (x_t, t).

A :class:`Denoiser` is a ``torch.nn.Module`` called as ``denoiser(x_t, t)`` with
``t`` an integer tensor of shape (n,) holding times in 1 .. T of the schedule
(0 is clean data); its attribute ``prediction`` says what it returns. The schedule
is not part of the denoiser (the model/scheduler split of diffusers).
"""

from __future__ import annotations

import torch
from torch import nn

from sampleopt.diffusion.parameterization import PREDICTIONS, from_eps
from sampleopt.diffusion.schedules import NoiseSchedule
from sampleopt.errors import UsageError


class Denoiser(nn.Module):
    """Base class. Subclasses implement ``forward(x_t, t)`` and set ``prediction``."""

    prediction: str = "eps"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.prediction not in PREDICTIONS:
            raise UsageError(f"{cls.__name__}.prediction must be one of {PREDICTIONS}")


class ExactGaussianDenoiser(Denoiser):
    """The exact predictor for Gaussian data N(mean, scale^2 cov) (methods.md 2):

        eps*(x, t) = s_t (a_t^2 Sigma + s_t^2 I)^{-1} (x - a_t mu),   Sigma = scale^2 cov,

    affine in x and in mu. ``mean`` and ``log_scale`` are trainable parameters, so a
    sampler built on it is a linear-Gaussian chain in theta = (mu, log scale): the
    ground truth the estimators are tested against. ``prediction`` may be any of
    the four kinds (the exact eps converted).
    """

    def __init__(self, mean, cov, schedule: NoiseSchedule, prediction: str = "eps"):
        super().__init__()
        mean = torch.as_tensor(mean)  # a floating tensor keeps its dtype (float64 oracles)
        if not mean.is_floating_point():
            mean = mean.to(torch.get_default_dtype())
        cov = torch.as_tensor(cov, dtype=mean.dtype)
        d = mean.shape[0]
        if mean.ndim != 1 or cov.shape != (d, d) or not torch.allclose(cov, cov.T):
            raise UsageError(
                f"need mean of shape (d,) and a symmetric (d, d) cov, got {tuple(mean.shape)} "
                f"and {tuple(cov.shape)}"
            )
        evals, evecs = torch.linalg.eigh(cov.double())
        if bool((evals < 0).any()):
            raise UsageError("cov must be positive semi-definite")
        if prediction not in PREDICTIONS:
            raise UsageError(f"unknown prediction type {prediction!r}")
        self.prediction = prediction
        self.schedule = schedule
        self.mean = nn.Parameter(mean.clone())
        self.log_scale = nn.Parameter(torch.zeros((), dtype=mean.dtype))
        self.register_buffer("evals", evals.to(mean.dtype))
        self.register_buffer("evecs", evecs.to(mean.dtype))
        self.dim = d

    def covariance(self) -> torch.Tensor:
        c = torch.exp(2 * self.log_scale)
        return c * (self.evecs * self.evals) @ self.evecs.T

    def forward(self, x, t):
        a, s = self.schedule.a_s()
        a_t, s_t = a[t].unsqueeze(1), s[t].unsqueeze(1)
        c = torch.exp(2 * self.log_scale)
        inv = 1.0 / (a_t**2 * c * self.evals + s_t**2)  # (n, d) in the eigenbasis
        u = (x - a_t * self.mean) @ self.evecs
        eps = s_t * (inv * u) @ self.evecs.T
        return from_eps(eps, self.prediction, x, a_t, s_t)
