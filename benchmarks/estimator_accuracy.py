"""Part 1 of ``benchmarks/estimators.py``: the gradient estimators' accuracy against the
exact oracle (float64, CPU).

Three linear-Gaussian chains on which :func:`sampleopt.estimators.exact_objective` gives
l(theta) in closed form, so autograd through it gives the exact gradient
(docs/methods.md section 2; the test beds of :mod:`sampleopt.testing`):

* ``affine``: ``AffineChain.random(4, 10, seed=0)`` (200 parameters), lam = 0;
* ``ddpm``: the exact DDPM sampler (posterior variance, K = 10, CosineSchedule(200)) of
  Gaussian data N(mu, Sigma), theta = (mu, log scale) of ExactGaussianDenoiser, lam = 0;
* ``sde+kl``: the exact ReverseSDESampler of the same data, lam = 0.5, with the path KL
  to a frozen copy of it at another mu (``divergence=PathKL(reference)``).

Reward r(x) = a^T x + x^T Q x (fixed a, negative-definite Q). Estimators, built by name
from the registry (``so.make_estimator``): unrolled, truncated(1) (DRaFT-1),
truncated(K/2), adjoint, score-function (leave-one-out baseline and none), zeroth-order
(delta = 1e-3, one direction), and any other registered estimator that applies to these
chains, with its defaults (the covariance estimator needs a Langevin sampler's
stationary law and is left out). Each gives R gradients (seeds 0 .. R-1) of n = 64
samples. Reported: relative bias |mean - exact| / |exact| with its noise scale
|SE| / |exact| (SE the per-coordinate standard error over the R repeats) and their
ratio ``bias/SE`` (about 1 for an unbiased estimator, much larger for a biased one), max
|z| over the coordinates with SE > 0 (z = (mean - exact) / SE; coordinates whose
estimate never varies are skipped and counted in the JSON), and the relative standard
deviation of one gradient per sample, sqrt(n) |std over repeats| / |exact|. An
estimator that refuses a chain (the score-function estimator on DDPM, whose last step is
deterministic) is recorded as "refused" with its message.
"""

from __future__ import annotations

import math
import time

import torch

import sampleopt as so
from sampleopt.estimators import Estimator
from sampleopt.testing import (
    OracleCase,
    QuadraticReward,
    exact_gaussian_sampler,
    negative_definite,
)

F64 = torch.float64
N_ACCURACY = 64
ZO_DELTA = 1e-3
K_ACCURACY = 10  # sampling steps of the three chains
DATA_MEAN, REFERENCE_MEAN = (0.5, -1.0), (0.0, 0.2)
A2, Q2 = (1.0, -0.5), ((-0.3, 0.1), (0.1, -0.2))  # the 2-D chains' reward


def with_registry(variants: list[tuple[str, str, dict]]) -> list[tuple[str, str, dict]]:
    """``variants`` (label, registry name, options), then every other registered
    estimator with its defaults, except those that need a Langevin sampler."""
    covered = {name for _, name, _ in variants}
    extra = [
        (name, name, {})
        for name, cls in so.ESTIMATORS.items()
        if name not in covered and not cls.needs_langevin
    ]
    return [*variants, *extra]


def accuracy_estimators(K: int) -> dict[str, Estimator]:
    """label -> estimator, for a chain of K steps."""
    half = max(1, K // 2)
    variants = [
        ("unrolled", "unrolled", {}),
        ("truncated(1)", "truncated", {"steps": 1}),
        (f"truncated({half})", "truncated", {"steps": half}),
        ("adjoint", "adjoint", {}),
        ("score-function", "score-function", {}),
        ("score-function (no baseline)", "score-function", {"baseline": "none"}),
        ("zeroth-order", "zeroth-order", {"delta": ZO_DELTA, "directions": 1}),
    ]
    return {label: so.make_estimator(name, **opts) for label, name, opts in with_registry(variants)}


def accuracy_cases() -> list[OracleCase]:
    """The three chains (see the module docstring), as exact-oracle cases."""
    reward2 = QuadraticReward(torch.tensor(A2, dtype=F64), torch.tensor(Q2, dtype=F64))
    reward4 = QuadraticReward(*negative_definite(4, seed=1))
    affine = so.AffineChain.random(4, K_ACCURACY, seed=0)
    ddpm = exact_gaussian_sampler(DATA_MEAN, so.DDPMSampler, K_ACCURACY)
    sde = exact_gaussian_sampler(DATA_MEAN, so.ReverseSDESampler, K_ACCURACY)
    reference = exact_gaussian_sampler(REFERENCE_MEAN, so.ReverseSDESampler, K_ACCURACY)
    sde_objective = so.Objective(reward2, lam=0.5, divergence=so.PathKL(reference))
    return [
        OracleCase("affine", affine, so.Objective(reward4), reward4, [affine.bias]),
        OracleCase("ddpm", ddpm, so.Objective(reward2), reward2, [ddpm.denoiser.mean]),
        OracleCase("sde+kl", sde, sde_objective, reward2, [sde.denoiser.mean]),
    ]


def flat_gradient(est, sampler, objective, params, n: int, seed: int) -> torch.Tensor:
    for p in params:
        p.grad = None
    loss = est.loss(sampler, objective, n=n, generator=torch.Generator().manual_seed(seed))
    loss.backward()
    return torch.cat(
        [(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in params]
    )


def accuracy_stats(draws: torch.Tensor, exact: torch.Tensor, n: int) -> dict:
    R = draws.shape[0]
    mean, std = draws.mean(0), draws.std(0)
    se = std / math.sqrt(R)
    err = mean - exact
    norm = float(exact.norm())
    ok = se > 0
    z = err[ok] / se[ok]
    return {
        "status": "ok",
        "rel_bias": float(err.norm()) / norm,
        "rel_se": float(se.norm()) / norm,
        "bias_over_se": float(err.norm() / se.norm()) if float(se.norm()) > 0 else math.inf,
        "max_abs_z": float(z.abs().max()) if z.numel() else None,
        "coords": int(exact.numel()),
        "coords_zero_se": int((~ok).sum()),
        "max_abs_error_zero_se": float(err[~ok].abs().max()) if bool((~ok).any()) else 0.0,
        "rel_std_per_sample": math.sqrt(n) * float(std.norm()) / norm,
        "exact_norm": norm,
        "mean": mean.tolist(),
        "exact": exact.tolist(),
        "se": se.tolist(),
    }


def run_accuracy(R: int, n: int) -> list[dict]:
    rows = []
    for case in accuracy_cases():
        sampler, objective = case.sampler, case.objective
        params = [p for p in sampler.parameters() if p.requires_grad]
        exact = case.exact_gradient(params)
        for label, est in accuracy_estimators(sampler.num_steps).items():
            row = {"chain": case.name, "estimator": label, "n": n, "repeats": R}
            t0 = time.perf_counter()
            try:
                draws = torch.stack(
                    [flat_gradient(est, sampler, objective, params, n, s) for s in range(R)]
                )
            except so.UsageError as e:
                row.update(status="refused", message=str(e))
            else:
                row.update(accuracy_stats(draws, exact, n))
                row["ms_per_gradient"] = 1e3 * (time.perf_counter() - t0) / R
            rows.append(row)
            print(f"  accuracy: {case.name:7s} {label:29s} {row['status']}", flush=True)
    return rows
