"""Both stochastic-optimal-control estimators learn the closed-form optimal control of a
linear SDE with a quadratic terminal cost (docs/soc.md section 4).

Base dX = a X dt + g dW on [0, T], reward r(x) = -q (x - z)^2 / 2, weight lam. Under the
base X_T | X_t = x ~ N(c x, v) with c = e^{a (T - t)}, v = g^2 (c^2 - 1) / (2 a), so
V(t, x) = q (c x - z)^2 / (2 (lam + q v)) + const (the Riccati solution) and the optimal
control is u*(t, x) = -g dV/dx = -g c q (c x - z) / (lam + q v). The initial law is fixed
and the base is not memoryless, so ``allow_memory=True``: the optimum is this u*.

Tolerance: the learned control's RMS error over the controlled chain's own states, at
every fifth step, relative to the RMS of u* there. Measured after 400 Adam steps:
adjoint matching 3-17% (the largest at t = 0, where the lean adjoint carries the noise of
the whole horizon), the time-reversed BSDE 12-35% (the largest at t = 0, where the
marginal is narrow and the fitted score, which steers the reversal, is least accurate).
The bounds, 20% and 40%, add the O(dt) gap between the discrete and continuous-time
optima (2-3% at dt = 0.05); the base's own control (u = 0) is 100% off.
"""

from __future__ import annotations

import math

import pytest
import torch

import sampleopt as so
from sampleopt.estimators import AdjointMatching, TimeReversedBSDE
from sampleopt.samplers import ControlledChain, Gaussian, SDEChain
from sampleopt.soc import TimeField

A, G, T, K, Q, Z, LAM = -1.0, 1.0, 1.0, 20, 2.0, 1.0, 0.5
TIMES = torch.linspace(0, T, K + 1).tolist()


def reward(x):
    return -Q * (x[:, 0] - Z) ** 2 / 2


def optimal_control(x, k):
    c = math.exp(A * (T - TIMES[k]))
    v = G * G * (c * c - 1) / (2 * A)
    return -G * c * Q * (c * x - Z) / (LAM + Q * v)


def train(estimator, parameterization, iterations=400):
    torch.manual_seed(0)
    base = SDEChain(Gaussian([0.5], [0.3]), TIMES, diffusion=G, linear=A)
    chain = ControlledChain(base, TimeField(1, horizon=T), parameterization=parameterization)
    objective = so.Objective(reward, lam=LAM, divergence=so.PathKL(base))
    opt = torch.optim.Adam(chain.parameters(), lr=5e-3)
    decay = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 1 - i / iterations)
    gen = torch.Generator().manual_seed(1)
    for _ in range(iterations):
        opt.zero_grad()
        estimator.loss(chain, objective, n=512, generator=gen).backward()
        opt.step()
        decay.step()
    return base, chain


def relative_errors(base, chain):
    with torch.no_grad():
        path = chain.sample(4000, generator=torch.Generator().manual_seed(2), return_path=True)
        out = []
        for k in range(0, K, 5):
            x = path[k]
            u = (chain.mean(x, k) - base.mean(x, k)) / (base.noise_scale(k) * math.sqrt(T / K))
            exact = optimal_control(x, k)
            out.append(float(((u - exact) ** 2).mean().sqrt() / (exact**2).mean().sqrt()))
    return out


@pytest.mark.parametrize(
    ("estimator", "parameterization", "bound"),
    [
        (AdjointMatching(allow_memory=True), "control", 0.2),
        (
            TimeReversedBSDE(allow_memory=True, round_length=20, score_iterations=100),
            "costate",
            0.4,
        ),
    ],
    ids=["adjoint-matching", "tr-bsde"],
)
def test_the_learned_control_is_the_riccati_control(estimator, parameterization, bound):
    errors = relative_errors(*train(estimator, parameterization))
    assert max(errors) <= bound, errors


def test_an_untrained_control_is_far_from_it():
    """The tolerance can fail: the base's own control (u = 0) is 100% off."""
    base = SDEChain(Gaussian([0.5], [0.3]), TIMES, diffusion=G, linear=A)
    chain = ControlledChain(base, TimeField(1, horizon=T))
    assert min(relative_errors(base, chain)) > 0.99
