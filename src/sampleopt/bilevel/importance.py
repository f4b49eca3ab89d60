"""Self-normalised importance weights over base samples: the tilted law p_base exp(h) / Z
without training (docs/bilevel.md section 2).

Given base samples x_i ~ p_base and the log density ratio h_i = h(x_i) up to a constant
(for the KL-regularised optimum p*_lam, h = r2 / lam), the weights are
w_i = exp(h_i) / sum_j exp(h_j), computed with log-sum-exp so that no exponential
overflows. Every estimate comes with:

* its standard error from the influence function of the self-normalised estimator
  (delta method: SE = std_i(IF_i) / sqrt(N));
* the effective sample size ESS = 1 / sum_i w_i^2 (N for equal weights, 1 when one
  sample carries all the weight). When the ESS falls below ``min_ess`` a
  :class:`CollapsedWeightsWarning` says so: the estimates are then dominated by a few
  samples and their standard errors are unreliable. Draw more base samples or choose a
  larger lam.
"""

from __future__ import annotations

import math
import warnings

import torch

from sampleopt.checks import check_finite
from sampleopt.errors import UsageError


class CollapsedWeightsWarning(UserWarning):
    """The importance weights' effective sample size is below the threshold."""


class Tilt:
    """The weights of p_base exp(h) / Z on N base samples (see the module docstring).

    ``h`` (N,) is the log density ratio up to a constant; ``min_ess`` the warning
    threshold (default: 1% of N, at least 10); ``what`` names the law in messages.
    Attributes: ``w`` (N,) the normalised weights, ``log_z`` = log mean exp(h) (the
    estimate of log E_base[exp(h)]), ``ess``.
    """

    def __init__(self, h: torch.Tensor, *, min_ess: float | None = None, what: str = "tilt"):
        if not isinstance(h, torch.Tensor) or h.ndim != 1 or h.numel() < 2:
            raise UsageError(
                f"{what}: need a tensor of shape (N,) with N >= 2 log ratios, got "
                f"{getattr(h, 'shape', type(h).__name__)}"
            )
        check_finite(h, f"{what}: the log density ratios")
        h = h.detach().to(torch.float64)
        self.h, self.n, self.what = h, h.numel(), what
        log_norm = torch.logsumexp(h, 0)
        self.w = torch.exp(h - log_norm)
        self.log_z = float(log_norm) - math.log(self.n)
        self.ess = float(1.0 / (self.w**2).sum())
        self.min_ess = max(10.0, 0.01 * self.n) if min_ess is None else float(min_ess)
        if self.ess < self.min_ess:
            warnings.warn(
                f"{what}: the importance weights collapsed (effective sample size "
                f"{self.ess:.1f} of {self.n} samples, below {self.min_ess:g}); its estimates "
                "rest on a few samples: draw more base samples or use a larger lam",
                CollapsedWeightsWarning,
                stacklevel=2,
            )

    def _v(self, v: torch.Tensor) -> torch.Tensor:
        if not isinstance(v, torch.Tensor) or v.shape != (self.n,):
            raise UsageError(
                f"{self.what}: values must have shape ({self.n},), got "
                f"{getattr(v, 'shape', type(v).__name__)}"
            )
        return check_finite(v.detach().to(torch.float64), f"{self.what}: the values")

    def _se(self, influence: torch.Tensor) -> float:
        return float(influence.std() / math.sqrt(self.n))

    def mean(self, v: torch.Tensor) -> tuple[float, float, torch.Tensor]:
        """(E_tilt[v], its standard error, the per-sample influence values)."""
        v = self._v(v)
        mu = (self.w * v).sum()
        infl = self.n * self.w * (v - mu)
        return float(mu), self._se(infl), infl

    def cov(self, a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, torch.Tensor]:
        """(Cov_tilt(a, b), its standard error, the influence values)."""
        a, b = self._v(a), self._v(b)
        da, db = a - (self.w * a).sum(), b - (self.w * b).sum()
        c = (self.w * da * db).sum()
        infl = self.n * self.w * (da * db - c)
        return float(c), self._se(infl), infl

    def kl(self) -> tuple[float, float, torch.Tensor]:
        """(KL(tilt || base), its standard error, the influence values):
        KL = E_tilt[h] - log E_base[exp(h)]."""
        mu = (self.w * self.h).sum()
        nw = self.n * self.w
        infl = nw * (self.h - mu) - (nw - 1.0)
        return float(mu) - self.log_z, self._se(infl), infl
