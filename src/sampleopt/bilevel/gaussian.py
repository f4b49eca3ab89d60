"""The exact test bed of the KL-strength problem (docs/bilevel.md section 4).

p_base = N(0, 1), lower reward r2(x) = x, upper reward r1(x) = -(x - a)^2. Then

* p*_lam = p_base exp(r2 / lam) / Z = N(1 / lam, 1) and KL(p*_lam || p_base) = 1 / (2 lam^2);
* the upper loss F(lam) = -E_{p*_lam}[r1] = (1 / lam - a)^2 + 1, minimised at lam* = 1 / a
  for a > 0 (for a <= 0 it decreases toward lam -> infinity);
* p_gamma = p_base exp((r1 / gamma + r2) / lam) / Z_gamma = N(m, v) with
  v = gamma lam / (gamma lam + 2), m = v (1 + 2 a / gamma) / lam;
* the penalty function L_gamma(lam) = gamma lam (log Z_0 - log Z_gamma), with
  log Z_0 = 1 / (2 lam^2) and the Gaussian integral log Z_gamma below; its derivative is
  gamma (KL(p_gamma || p_base) - KL(p*_lam || p_base)), and it tends to F(lam) and F'(lam)
  as gamma -> infinity.
"""

from __future__ import annotations

import math

import torch


def _kl_normal(m: float, v: float) -> float:
    """KL(N(m, v) || N(0, 1))."""
    return 0.5 * (v + m * m - 1.0 - math.log(v))


class GaussianTestBed:
    """Closed forms for one value of ``a`` (see the module docstring)."""

    def __init__(self, a: float):
        self.a = float(a)

    def r1(self, x: torch.Tensor) -> torch.Tensor:
        return -((x.reshape(x.shape[0], -1)[:, 0] - self.a) ** 2)

    @staticmethod
    def r2(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)[:, 0].clone()

    @staticmethod
    def sample_base(n: int, generator=None) -> torch.Tensor:
        return torch.randn(n, 1, generator=generator, dtype=torch.float64)

    @property
    def lam_star(self) -> float:
        """The minimiser of F (infinity for a <= 0)."""
        return 1.0 / self.a if self.a > 0 else math.inf

    def upper_loss(self, lam: float) -> float:
        """F(lam) = -E_{p*_lam}[r1]."""
        return (1.0 / lam - self.a) ** 2 + 1.0

    def upper_loss_grad(self, lam: float) -> float:
        return -2.0 * (1.0 / lam - self.a) / lam**2

    @staticmethod
    def kl_star(lam: float) -> float:
        return 0.5 / lam**2

    def p_gamma(self, lam: float, gamma: float) -> tuple[float, float]:
        """(mean, variance) of p_gamma."""
        if math.isinf(gamma):
            return 1.0 / lam, 1.0
        v = gamma * lam / (gamma * lam + 2.0)
        return v * (1.0 + 2.0 * self.a / gamma) / lam, v

    def kl_gamma(self, lam: float, gamma: float) -> float:
        return _kl_normal(*self.p_gamma(lam, gamma))

    def penalty(self, lam: float, gamma: float) -> float:
        """L_gamma(lam) (F(lam) when gamma is infinite)."""
        if math.isinf(gamma):
            return self.upper_loss(lam)
        alpha = 1.0 / (gamma * lam)
        beta = (1.0 + 2.0 * self.a / gamma) / lam
        kappa = -(self.a**2) / (gamma * lam)
        log_z_gamma = -0.5 * math.log1p(2 * alpha) + beta**2 / (2 * (1 + 2 * alpha)) + kappa
        return gamma * lam * (0.5 / lam**2 - log_z_gamma)

    def penalty_grad(self, lam: float, gamma: float) -> float:
        """dL_gamma / dlam = gamma (KL(p_gamma) - KL(p*_lam)) (F'(lam) when infinite)."""
        if math.isinf(gamma):
            return self.upper_loss_grad(lam)
        return gamma * (self.kl_gamma(lam, gamma) - self.kl_star(lam))
