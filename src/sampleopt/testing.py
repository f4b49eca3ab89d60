"""Exact Gaussian test beds, shared by the tests, the benchmarks and users.

Every estimator and algorithm in sampleopt is checked against closed forms
(docs/methods.md section 2): on a chain whose mean is affine in x, with a quadratic
reward, :func:`~sampleopt.estimators.exact_objective` is l(theta) as a deterministic,
differentiable function, so autograd through it is the exact gradient. This module
builds those cases, so a new estimator can be tested in a few lines::

    from sampleopt import testing
    case = testing.oracle_case("sde+path-kl")
    loss = MyEstimator().loss(case.sampler, case.objective, n=64)
    exact = case.exact_gradient()           # compare within standard errors

Cases (float64): ``"random-affine"`` (:meth:`AffineChain.random`, 2-D, 5 steps),
``"ddpm"`` and ``"sde"`` (the exact DDPM / reverse-SDE sampler of Gaussian data, the
data mean and log scale as parameters), ``"sde+path-kl"`` (the reverse-SDE one with
lam = 0.5 and the path KL to the same sampler at another mean). ``quadratic_params``
are the parameters in which l is quadratic (where the zeroth-order estimator is exact).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from sampleopt.diffusion import CosineSchedule, ExactGaussianDenoiser
from sampleopt.estimators.exact import exact_moments, exact_objective
from sampleopt.objectives import Objective, PathKL
from sampleopt.samplers import AffineChain, DDPMSampler, GaussianChain, ReverseSDESampler

F64 = torch.float64
CASES = ("random-affine", "ddpm", "sde", "sde+path-kl")
DATA_COV = ((1.0, 0.4), (0.4, 0.6))


class QuadraticReward(torch.nn.Module):
    """r(x) = a^T x + x^T Q x per sample, the reward the oracle integrates exactly."""

    def __init__(self, a, Q):
        super().__init__()
        self.register_buffer("a", torch.as_tensor(a))
        self.register_buffer("Q", torch.as_tensor(Q))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.a + ((x @ self.Q) * x).sum(1)


def exact_gaussian_sampler(mean, cls=DDPMSampler, steps: int = 8, cov=DATA_COV):
    """The exact ``cls`` sampler of N(mean, cov) data (CosineSchedule(200), float64): a
    linear-Gaussian chain whose parameters are the data mean and log scale."""
    sched = CosineSchedule(200).double()
    den = ExactGaussianDenoiser(
        torch.as_tensor(mean, dtype=F64), torch.as_tensor(cov, dtype=F64), sched
    )
    return cls(den, sched, steps, data_shape=(len(den.mean),))


def negative_definite(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A random linear term a and a negative-definite Q (eigenvalues in [-0.6, -0.1])."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, generator=g, dtype=F64)
    evecs = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))[0]
    return a, (evecs * -torch.linspace(0.1, 0.6, d, dtype=F64)) @ evecs.T


@dataclass
class OracleCase:
    """A sampler, a quadratic-reward objective and the oracle of its exact gradient."""

    name: str
    sampler: GaussianChain
    objective: Objective
    reward: QuadraticReward
    quadratic_params: list[torch.Tensor]

    @property
    def dim(self) -> int:
        return self.reward.a.shape[0]

    def exact_value(self, sampler: GaussianChain | None = None) -> torch.Tensor:
        """l(theta) exactly, differentiable in the parameters of ``sampler`` (default:
        the case's own)."""
        kl = self.objective.path_kl
        return exact_objective(
            self.sampler if sampler is None else sampler,
            self.dim,
            a=self.reward.a,
            Q=self.reward.Q,
            lam=self.objective.lam,
            reference=None if kl is None else kl.reference,
        )

    def exact_gradient(self, params=None) -> torch.Tensor:
        """The exact gradient in ``params`` (default: all trainable), flattened."""
        params = params or [p for p in self.sampler.parameters() if p.requires_grad]
        grads = torch.autograd.grad(self.exact_value(), params)
        return torch.cat([g.reshape(-1) for g in grads])


def oracle_case(name: str, *, a=(1.0, -0.5), Q=((-0.3, 0.1), (0.1, -0.2)), steps: int = 8):
    """One of :data:`CASES` (see the module docstring), built fresh in float64."""
    reward = QuadraticReward(torch.tensor(a, dtype=F64), torch.tensor(Q, dtype=F64))
    if name == "random-affine":
        sampler = AffineChain.random(len(a), 5, seed=3)
        return OracleCase(name, sampler, Objective(reward), reward, [sampler.bias])
    if name in ("ddpm", "sde"):
        cls = DDPMSampler if name == "ddpm" else ReverseSDESampler
        sampler = exact_gaussian_sampler([0.5, -1.0], cls, steps)
        return OracleCase(name, sampler, Objective(reward), reward, [sampler.denoiser.mean])
    if name == "sde+path-kl":
        sampler = exact_gaussian_sampler([0.5, -1.0], ReverseSDESampler, steps)
        reference = exact_gaussian_sampler([0.0, 0.2], ReverseSDESampler, steps)
        obj = Objective(reward, lam=0.5, divergence=PathKL(reference))
        return OracleCase(name, sampler, obj, reward, [sampler.denoiser.mean])
    raise KeyError(f"unknown oracle case {name!r}; choose one of {', '.join(CASES)}")


@contextlib.contextmanager
def float64_modules():
    """Build modules in float64 (constructors use the default dtype); the default is
    restored on exit, so nothing outside the ``with`` block sees the change."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


__all__ = [
    "CASES",
    "OracleCase",
    "QuadraticReward",
    "exact_gaussian_sampler",
    "exact_moments",
    "exact_objective",
    "float64_modules",
    "negative_definite",
    "oracle_case",
]
