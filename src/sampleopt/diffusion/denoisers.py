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
    """The exact predictor for Gaussian data N(mean, scale^2 cov) (docs/methods.md section 2):

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
        tol = 1e-10 * max(float(evals.abs().max()), 1.0)  # rounding of a singular cov
        if bool((evals < -tol).any()):
            raise UsageError("cov must be positive semi-definite")
        evals = evals.clamp(min=0.0)
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


class LateStepDenoiser(Denoiser):
    """``tuned`` at the late, low-noise times t <= ``t_max`` and the frozen ``base``
    above: a fine-tuned model that may change only the last denoising steps.

    The early steps, which fix a sample's global layout (for MNIST: which digit, where),
    stay exactly the pretrained model's, so the path KL to the base accrues only on the
    late steps, and a reward can change only local appearance (stroke width, texture).
    Choose it when the evaluation punishes changes of the global composition (a
    classifier FID punishes a shifted class mix) more than the objective's path KL does;
    the optimum of -E[r] + lam * KL over all steps is the reward-tilted base law, which
    reweights whole samples. Both models must predict the same kind (eps, x0, v,
    score). Rows are routed by their own t (``t`` of shape (n,)), so a queue's batched
    call with mixed times is handled; ``base`` is frozen here.
    """

    def __init__(self, tuned: Denoiser, base: Denoiser, t_max: int):
        super().__init__()
        if getattr(tuned, "prediction", None) != getattr(base, "prediction", None):
            raise UsageError(
                f"tuned and base denoisers predict different kinds: "
                f"{getattr(tuned, 'prediction', None)!r} and {getattr(base, 'prediction', None)!r}"
            )
        if isinstance(t_max, bool) or not (isinstance(t_max, int) and t_max >= 1):
            raise UsageError(f"t_max must be an integer time >= 1, got {t_max!r}")
        self.prediction = tuned.prediction
        self.tuned = tuned
        self.base = base.requires_grad_(False)
        self.t_max = t_max

    def forward(self, x, t):
        late = t <= self.t_max
        if bool(late.all()):
            return self.tuned(x, t)
        if not bool(late.any()):
            return self.base(x, t)
        out = torch.empty_like(x)
        out[late] = self.tuned(x[late], t[late])
        out[~late] = self.base(x[~late], t[~late])
        return out
