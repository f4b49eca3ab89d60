"""The penalty hypergradient of the KL-strength problem from base samples
(docs/bilevel.md section 3).

Upper: maximise E_{p*_lam}[r1] over lam > 0, i.e. minimise F(lam) = -E_{p*_lam}[r1].
Lower: p*_lam = argmin_p -E_p[r2] + lam KL(p || p_base) = p_base exp(r2 / lam) / Z_0.
The first-order penalty method (Xiao et al. 2025) minimises

    L_gamma(lam) = min_p [-E_p[r1] + gamma (g(lam, p) - g*(lam))],
    g(lam, p) = -E_p[r2] + lam KL(p || p_base),

whose minimiser in p is p_gamma = p_base exp((r1 / gamma + r2) / lam) / Z_gamma. By the
envelope theorem (no Hessian, no derivative of the samples):

    dL_gamma / dlam = gamma [KL(p_gamma || p_base) - KL(p*_lam || p_base)],

and as gamma -> infinity, L_gamma -> F and the derivative tends to the true hypergradient

    dF / dlam = Cov_{p*_lam}(r1, r2) / lam^2.

Both are estimated here from one set of base samples (common random numbers: the two KL
estimates share their samples, so their difference is not swamped by their noise), with
self-normalised importance weights (:class:`~sampleopt.bilevel.importance.Tilt`), a standard
error from the influence function, and the effective sample sizes of both tilts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from sampleopt.bilevel.importance import Tilt
from sampleopt.errors import UsageError


def check_lam(lam) -> float:
    """lam must be a finite number > 0 (the KL strength)."""
    if isinstance(lam, bool) or not (isinstance(lam, int | float) and math.isfinite(lam)):
        raise UsageError(f"lam must be a finite number > 0, got {lam!r}")
    if lam <= 0:
        raise UsageError(f"lam must be > 0 (the KL strength), got {lam!r}")
    return float(lam)


def check_gamma(gamma) -> float:
    if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not gamma > 0:
        raise UsageError(f"gamma must be a number > 0 or math.inf, got {gamma!r}")
    return float(gamma)


@dataclass
class Hypergradient:
    """dL_gamma / dlam (``value``) with its standard error, the effective sample sizes of
    p*_lam and p_gamma (``ess_star``, ``ess_gamma``; equal for gamma = inf), the upper
    reward's estimate E_{p*_lam}[r1] with its standard error, and the KL estimates."""

    value: float
    se: float
    lam: float
    gamma: float
    upper: float
    upper_se: float
    kl_star: float
    kl_gamma: float
    ess_star: float
    ess_gamma: float

    @property
    def log_lam_value(self) -> float:
        """The derivative in u = log lam: lam dL / dlam."""
        return self.lam * self.value


def penalty_hypergradient(
    r1: torch.Tensor, r2: torch.Tensor, lam: float, gamma: float, *, min_ess: float | None = None
) -> Hypergradient:
    """The estimate of dL_gamma / dlam from the upper and lower rewards r1, r2 (N,) of N
    base samples (see the module docstring); ``gamma = math.inf`` gives dF / dlam."""
    lam, gamma = check_lam(lam), check_gamma(gamma)
    r1 = r1.detach().to(torch.float64)
    r2 = r2.detach().to(torch.float64)
    star = Tilt(r2 / lam, min_ess=min_ess, what=f"p*_lam at lam = {lam:.4g}")
    upper, upper_se, _ = star.mean(r1)
    kl_star, _, infl_star = star.kl()
    if math.isinf(gamma):
        value, se, _ = star.cov(r1, r2)
        return Hypergradient(
            value / lam**2, se / lam**2, lam, gamma, upper, upper_se, kl_star, kl_star,
            star.ess, star.ess,
        )  # fmt: skip
    tilt = Tilt((r1 / gamma + r2) / lam, min_ess=min_ess, what=f"p_gamma at gamma = {gamma:.4g}")
    kl_gamma, _, infl_gamma = tilt.kl()
    infl = gamma * (infl_gamma - infl_star)
    return Hypergradient(
        gamma * (kl_gamma - kl_star), float(infl.std() / math.sqrt(star.n)), lam, gamma,
        upper, upper_se, kl_star, kl_gamma, star.ess, tilt.ess,
    )  # fmt: skip
