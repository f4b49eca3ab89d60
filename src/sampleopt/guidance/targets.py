"""The gradient of the objective at the current samples, and the targets it gives
(docs/guidance.md section 2).

A round of guided optimisation needs, for each sample z_i, the gradient g_i = grad f(z_i)
and the target y_i = g_i^T z_i + delta (the value a first-order model of f predicts one
step of size delta up the gradient). Two gradient strategies, passed as one argument:

* :class:`AutogradGradient`: autograd of f at each sample (f differentiable, as every
  sampleopt reward is);
* :class:`ZerothOrderGradient`: a black-box f, through two-point Gaussian smoothing per
  sample, g_i = mean_j (f(z_i + mu u_ij) - f(z_i - mu u_ij)) / (2 mu) u_ij with
  u_ij ~ N(0, I). It is unbiased for the gradient of the smoothed f and exact for a
  quadratic f; its variance grows with the dimension, so choose ``directions`` of the
  order of the dimension for a sharp gradient (or fewer for a cheap, noisy one).

f is a per-sample callable: f(z) of shape (n,) for z of shape (n, ...). Its values and
gradients are checked (shape, finiteness) here, once per round.
"""

from __future__ import annotations

import math

import torch

from sampleopt.checks import check_finite, check_per_sample
from sampleopt.errors import UsageError


def _evaluate(f, z: torch.Tensor, what: str = "the objective f") -> torch.Tensor:
    if not callable(f):
        raise UsageError(f"the objective must be a callable f(x) -> (n,), got {f!r}")
    value = check_per_sample(f(z), z.shape[0], what)
    check_finite(value.detach(), f"{what}'s values")
    return value


class AutogradGradient:
    """g = grad f(z) per sample, by autograd of sum_i f(z_i) (rows independent)."""

    name = "autograd"

    def __call__(self, f, z: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            zg = z.detach().requires_grad_(True)
            value = _evaluate(f, zg)
            if not value.requires_grad:
                raise UsageError(
                    "the objective f does not depend differentiably on x (its value has no "
                    "gradient); use ZerothOrderGradient() for a black-box f"
                )
            (grad,) = torch.autograd.grad(value.sum(), zg)
        check_finite(grad, "the objective's gradient")
        return grad.detach(), value.detach()

    def __repr__(self) -> str:
        return "AutogradGradient()"


class ZerothOrderGradient:
    """Two-point Gaussian-smoothing gradient of a black-box f, per sample (see the module
    docstring). ``directions`` u per sample, smoothing radius ``mu``; 2 * directions + 1
    evaluations of f per sample."""

    name = "zeroth-order"

    def __init__(self, *, directions: int = 32, mu: float = 1e-2):
        if isinstance(directions, bool) or not (isinstance(directions, int) and directions >= 1):
            raise UsageError(f"directions must be an integer >= 1, got {directions!r}")
        if isinstance(mu, bool) or not (
            isinstance(mu, int | float) and math.isfinite(mu) and mu > 0
        ):
            raise UsageError(f"mu must be a finite number > 0, got {mu!r}")
        self.directions, self.mu = directions, float(mu)

    def __call__(self, f, z: torch.Tensor, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        n, m = z.shape[0], self.directions
        with torch.no_grad():
            value = _evaluate(f, z)
            u = torch.randn((m, *z.shape), generator=generator, dtype=z.dtype, device=z.device)
            zz = torch.cat([z[None] + self.mu * u, z[None] - self.mu * u]).reshape(-1, *z.shape[1:])
            fz = _evaluate(f, zz, "the objective f (at the perturbed points)").reshape(2, m, n)
            slope = (fz[0] - fz[1]) / (2 * self.mu)  # (m, n)
            grad = (slope.reshape(m, n, *(1,) * (z.ndim - 1)) * u).mean(0)
        check_finite(grad, "the objective's zeroth-order gradient")
        return grad, value

    def __repr__(self) -> str:
        return f"ZerothOrderGradient(directions={self.directions}, mu={self.mu:g})"


def guidance_targets(
    f, z: torch.Tensor, delta: float, gradient=None, generator=None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(g, y, f(z)) with g_i = grad f(z_i) by ``gradient`` (default autograd) and
    y_i = g_i^T z_i + delta: the targets of one round of Algorithm 1 (Guo et al. 2024)."""
    if not isinstance(z, torch.Tensor) or z.ndim < 2 or not z.is_floating_point():
        raise UsageError(
            f"samples z must be a floating tensor of shape (n, ...), got {getattr(z, 'shape', z)!r}"
        )
    if isinstance(delta, bool) or not (isinstance(delta, int | float) and math.isfinite(delta)):
        raise UsageError(f"delta must be a finite number, got {delta!r}")
    gradient = AutogradGradient() if gradient is None else gradient
    if not isinstance(gradient, AutogradGradient | ZerothOrderGradient):
        raise UsageError(
            f"gradient must be AutogradGradient() or ZerothOrderGradient(...), got {gradient!r}"
        )
    g, value = gradient(f, z, generator)
    y = (g * z.detach()).flatten(1).sum(1) + float(delta)
    return g, y, value
