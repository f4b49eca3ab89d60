"""The optimum of -E_p[r] + lam KL(p || p_base) when it is the tilted base law
p* = p_base exp(r / lam) / Z (docs/leaderboard.md section 1).

For a memoryless base sampler (or one with a learned initial law) the optimum over path
laws has this terminal law and the path KL equals the terminal KL, so

    J* = -lam log Z,     E_{p*}[r],     KL(p* || p_base) = E_{p*}[r] / lam - log Z,

and J* = -E_{p*}[r] + lam KL(p* || p_base). Three ways to compute them, one per kind of
task:

* :func:`tilt_on_grid`: quadrature of a known base density on a regular grid (1-D, 2-D);
* :func:`tilt_by_importance`: self-normalised importance weights over base samples
  (:class:`~sampleopt.bilevel.Tilt`), with standard errors and the effective sample size;
* closed forms where the task has them (a Gaussian base with a quadratic reward).

Each can also return the mean and covariance of features of p* (``features`` of the
grid points or of the samples; the task's closed form), from which the comparison
scores a method's samples by their Frechet distance to p* (docs/leaderboard.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch

from sampleopt.bilevel.hypergradient import check_lam
from sampleopt.bilevel.importance import Tilt
from sampleopt.checks import check_finite
from sampleopt.errors import UsageError


@dataclass(frozen=True)
class Optimum:
    """The tilted optimum: J* (``objective``) with its standard error (0 for quadrature
    and closed forms), E_{p*}[r] (``reward``), KL(p* || p_base) (``kl``), the effective
    sample size (importance weights only) and how it was computed (``method``); with
    features, their mean and covariance under p* (nested lists, for JSON)."""

    objective: float
    objective_se: float
    reward: float
    kl: float
    method: str
    ess: float | None = None
    feature_mean: list | None = field(default=None, repr=False)
    feature_cov: list | None = field(default=None, repr=False)

    def as_dict(self) -> dict:
        return asdict(self)

    def with_moments(self, mean: torch.Tensor, cov: torch.Tensor) -> Optimum:
        """The optimum with p*'s feature mean (d,) and covariance (d, d)."""
        return replace(self, feature_mean=mean.tolist(), feature_cov=cov.tolist())


def weighted_moments(features: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (d,) and covariance (d, d) of ``features`` (m, d) under weights ``w`` (m,)
    that sum to 1, in float64."""
    f, w = features.reshape(features.shape[0], -1).double(), w.double()
    if f.shape[0] != w.shape[0]:
        raise UsageError(f"features have {f.shape[0]} rows for {w.shape[0]} weights")
    check_finite(f, "the features")
    mean = w @ f
    centred = f - mean
    return mean, (centred * w[:, None]).T @ centred


def tilt_on_grid(
    log_p: torch.Tensor, r: torch.Tensor, lam: float, cell: float, features=None
) -> Optimum:
    """The optimum by quadrature: ``log_p`` and ``r`` on the points of a regular grid
    whose cells have volume ``cell`` (the grid must cover the mass of both laws); with
    ``features`` (m, d) of the points, p*'s feature moments."""
    lam = check_lam(lam)
    if log_p.shape != r.shape or log_p.ndim != 1:
        raise UsageError(f"log_p and r must have the same shape (m,), got {log_p.shape}, {r.shape}")
    log_p, r = log_p.double(), r.double()
    check_finite(r, "the reward on the grid")
    log_mass = torch.logsumexp(log_p, 0) + math.log(cell)
    if abs(float(log_mass)) > 1e-3:
        raise UsageError(
            f"the grid holds mass {math.exp(float(log_mass)):.5f} of the base law, not 1: "
            "widen or refine it"
        )
    log_w = log_p + r / lam
    log_z = float(torch.logsumexp(log_w, 0)) + math.log(cell)
    p_star = torch.exp(log_w - log_z) * cell
    reward = float((p_star * r).sum())
    opt = Optimum(-lam * log_z, 0.0, reward, reward / lam - log_z, "quadrature")
    return opt if features is None else opt.with_moments(*weighted_moments(features, p_star))


def tilt_by_importance(
    r: torch.Tensor, lam: float, min_ess: float | None = None, features=None
) -> Optimum:
    """The optimum from the rewards ``r`` (N,) of N base samples: J* = -lam log mean
    exp(r / lam) with its delta-method standard error, E_{p*}[r] and the KL by
    self-normalised weights, and their effective sample size; with ``features`` (N, d)
    of the samples, p*'s feature moments by the same weights."""
    lam = check_lam(lam)
    tilt = Tilt(r.double() / lam, min_ess=min_ess, what=f"the tilted optimum at lam = {lam:g}")
    reward, _, _ = tilt.mean(r.double())
    # d(-lam log mean e^h) / d(mean e^h) = -lam / Z; influence of the mean: e^{h_i} - Z
    se = lam * float((tilt.n * tilt.w - 1).std()) / math.sqrt(tilt.n)
    kl, _, _ = tilt.kl()
    opt = Optimum(-lam * tilt.log_z, se, reward, kl, "importance weights", tilt.ess)
    return opt if features is None else opt.with_moments(*weighted_moments(features, tilt.w))


def gaussian_quadratic_tilt(c: float, w_norm2: float, target: float, lam: float) -> Optimum:
    """Closed form for r(x) = c - (w^T z - target)^2 with z ~ N(0, I): s = w^T z is
    N(0, |w|^2), and the tilt keeps it Gaussian with precision 1/|w|^2 + 2/lam."""
    lam = check_lam(lam)
    if not w_norm2 > 0:
        raise UsageError(f"|w|^2 must be > 0, got {w_norm2!r}")
    prec = 1.0 / w_norm2 + 2.0 / lam
    var, mean = 1.0 / prec, (2.0 * target / lam) / prec
    log_z = c / lam - 0.5 * math.log1p(2.0 * w_norm2 / lam) - target**2 / (lam + 2.0 * w_norm2)
    reward = c - ((mean - target) ** 2 + var)
    return Optimum(-lam * log_z, 0.0, reward, reward / lam - log_z, "closed form")
