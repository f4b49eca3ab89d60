"""Implicit Diffusion with a KL penalty only (r = 0): theta must converge to theta_ref.

With r = 0, l(theta) = lam * KL is minimised at pi_theta = pi_ref, for both KL
directions; the single loop (one ULA step, one covariance-estimator step per
iteration) must drive theta there. A sign error in a KL term (the official
Implicit Diffusion code's reverse-KL term has one) makes theta run away instead.

Statistics: the tail of one run is stationary noise around the fixed point; its
mean is compared with theta_ref within 4 standard errors from batch means (20
batches), or, for the decaying inverse_sqrt step, from independent replicate runs.
Where the estimate vanishes identically at theta_ref (forward KL with the
reference in the model family: V_theta - V_ref = 0 there), the noise is
multiplicative and theta converges to rounding level; the tolerance then has a
floor of 64 float64 ulps of the target's scale.
"""

from __future__ import annotations

import math

import pytest
import torch

from sampleopt import (
    CovarianceEstimator,
    GaussianMixturePotential,
    GibbsKL,
    ImplicitDiffusion,
    LangevinSampler,
    Objective,
    QuadraticPotential,
    StepSize,
    hex_centres,
)
from tests.float64 import F64, build64, float64_modules

Z = 4.0  # tolerance, in standard errors
EPS = torch.finfo(F64).eps
GAMMA = 0.1
LAM = 1.0


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def zero_reward(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros(x.shape[0], dtype=x.dtype)


def run_single_loop(
    pot, reference, kl, *, eta, n, iters, seed, schedule="constant", order="parallel"
):
    objective = Objective(zero_reward, lam=LAM, divergence=GibbsKL(reference, kl))
    alg = ImplicitDiffusion(
        LangevinSampler(pot, GAMMA),
        objective,
        n_particles=n,
        lr=StepSize(eta, schedule),
        generator=gen(seed),
        order=order,
    )
    hist = alg.run(iters, block=1000)
    assert len(hist) == iters and bool(torch.isfinite(hist.theta).all())
    return hist.theta


def batch_means(tail: torch.Tensor, batches: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of a stationary series (first axis) and its batch-means standard error."""
    usable = tail.shape[0] - tail.shape[0] % batches
    bm = tail[:usable].reshape(batches, -1, *tail.shape[1:]).mean(1)
    return bm.mean(0), bm.std(0) / math.sqrt(batches)


def assert_converged(mean, se, target, what: str) -> None:
    floor = 64 * EPS * (1.0 + target.abs().max().item())
    dev = (mean - target).abs()
    assert bool((dev <= Z * se + floor).all()), (
        f"{what}: long-run mean {mean.tolist()} vs {target.tolist()}; "
        f"|dev| = {dev.tolist()}, SE = {se.tolist()} (allowed {Z} SE + {floor:.1e})"
    )


# --------------------------------------------------------------------------- quadratic

P = torch.tensor([[1.5, 0.4], [0.4, 0.8]], dtype=F64)
P_OTHER = torch.tensor([[1.0, -0.2], [-0.2, 1.3]], dtype=F64)
THETA0 = torch.tensor([2.0, -1.5], dtype=F64)
THETA_REF = torch.tensor([-1.0, 1.0], dtype=F64)

QUADRATIC_CASES = {
    # kl direction, reference precision
    "forward": ("forward", P),
    "reverse": ("reverse", P),
    # reference outside the model's precision: the forward estimate's noise no longer
    # vanishes at theta_ref, its mean P S P_ref (theta - theta_ref) still does
    "forward-other-precision": ("forward", P_OTHER),
}


@pytest.mark.parametrize("order", ["parallel", "sequential"])
@pytest.mark.parametrize("case", list(QUADRATIC_CASES))
def test_quadratic_theta_converges_to_reference(case, order):
    """Quadratic V_theta = (x - theta)^T P (x - theta) / 2, r = 0, lam = 1: the expected
    estimate is lam P S P_ref (theta - theta_ref) (forward) or lam P (theta - theta_ref)
    (reverse), so theta -> theta_ref; the reflection x -> 2 theta_ref - x maps the loop
    to itself, so the stationary mean of theta is exactly theta_ref."""
    kl, p_ref = QUADRATIC_CASES[case]
    pot = build64(QuadraticPotential, THETA0, P)
    reference = build64(QuadraticPotential, THETA_REF, p_ref)
    iters = 8000
    theta = run_single_loop(pot, reference, kl, eta=0.2, n=500, iters=iters, seed=1, order=order)
    tail = theta[iters // 2 :]
    mean, se = batch_means(tail)
    assert_converged(mean, se, THETA_REF, f"quadratic {case}")
    d0 = (THETA0 - THETA_REF).norm()
    tail_rms = (tail - THETA_REF).norm(dim=1).pow(2).mean().sqrt()
    assert tail_rms < d0 / 10, f"theta did not approach theta_ref: {tail_rms} vs {d0}"


# --------------------------------------------------------------------------- mixture

LOGITS0 = torch.zeros(6, dtype=F64)
LOGITS_REF = torch.tensor([1.5, 0.5, -1.0, 0.0, -1.25, 0.25], dtype=F64)


@pytest.mark.parametrize("kl", ["forward", "reverse"])
def test_mixture_weights_converge_to_reference(kl):
    """Hex Gaussian mixture with trained logits, r = 0, lam = 1: at softmax(theta) =
    softmax(theta_ref) the forward estimate vanishes identically and the reverse one in
    expectation (both particle sets follow the same ULA chain), so the long-run mean of
    the weights equals the reference weights. The estimate sum_i w_i (softmax - R(x_i))
    sums to zero over components, so sum(theta) is conserved."""
    pot = build64(GaussianMixturePotential, build64_centres(), LOGITS0)
    reference = build64(GaussianMixturePotential, build64_centres(), LOGITS_REF)
    w_ref = torch.softmax(LOGITS_REF, 0)
    iters = 10000
    theta = run_single_loop(pot, reference, kl, eta=0.2, n=1000, iters=iters, seed=2)
    torch.testing.assert_close(theta.sum(1), torch.full((iters,), LOGITS0.sum().item()).double())
    weights = torch.softmax(theta, 1)
    mean, se = batch_means(weights[iters // 2 :])
    assert_converged(mean, se, w_ref, f"mixture weights, {kl} KL")
    d0 = (torch.softmax(LOGITS0, 0) - w_ref).norm()
    assert (mean - w_ref).norm() < d0 / 10


def build64_centres() -> torch.Tensor:
    with float64_modules():
        centres = hex_centres()
    assert centres.dtype == F64
    return centres


# --------------------------------------------------------------------------- step size


@pytest.mark.parametrize("order", ["parallel", "sequential"])
def test_inverse_sqrt_schedule_is_applied_per_iteration_across_blocks(order):
    """eta_k = eta / sqrt(k + 1), k the global iteration: ImplicitDiffusion equals a
    hand-written loop (same noise stream) using that schedule, across block boundaries,
    for both update orders (parallel: gradient at x_k; sequential: at x_{k+1})."""
    eta, n, iters, block = 0.5, 64, 120, 50
    pot = build64(QuadraticPotential, THETA0, P)
    reference = build64(QuadraticPotential, THETA_REF, P_OTHER)
    objective = Objective(zero_reward, lam=LAM, divergence=GibbsKL(reference, "forward"))
    alg = ImplicitDiffusion(
        LangevinSampler(pot, GAMMA),
        objective,
        n_particles=n,
        lr=StepSize(eta, "inverse_sqrt"),
        generator=gen(3),
        order=order,
    )
    hist = alg.run(iters, block=block)

    # the same loop by hand, with the generator consumed in the same order
    twin = build64(QuadraticPotential, THETA0, P)
    sampler = LangevinSampler(twin, GAMMA)
    g = gen(3)
    est = CovarianceEstimator()
    expected = []
    with torch.no_grad():
        x = sampler.sample_x0(n, g)
        k = 0
        while k < iters:
            b = min(block, iters - k)
            noise = torch.randn((b, n, 2), generator=g, dtype=F64)
            for i in range(b):
                if order == "parallel":
                    (grad,) = est.gradient(twin, objective, x)
                    x = sampler.step(x, 0, noise[i])
                else:
                    x = sampler.step(x, 0, noise[i])
                    (grad,) = est.gradient(twin, objective, x)
                twin.theta.sub_(grad, alpha=eta / math.sqrt(k + 1))
                expected.append(twin.theta.clone())
                k += 1
    torch.testing.assert_close(hist.theta, torch.stack(expected), rtol=1e-12, atol=1e-12)


def test_inverse_sqrt_schedule_converges():
    """Reverse KL, quadratic V, eta_k = 0.5 / sqrt(k + 1): theta -> theta_ref. Each of
    R = 10 independent runs gives the mean of its last 500 iterates; their average is
    within 4 SE (across runs) of theta_ref and every run ends much closer than it began."""
    reps, iters, last = 10, 3000, 500
    finals, ends = [], []
    for seed in range(reps):
        pot = build64(QuadraticPotential, THETA0, P)
        reference = build64(QuadraticPotential, THETA_REF, P)
        theta = run_single_loop(
            pot,
            reference,
            "reverse",
            eta=0.5,
            n=200,
            iters=iters,
            seed=100 + seed,
            schedule="inverse_sqrt",
        )
        finals.append(theta[-last:].mean(0))
        ends.append((theta[-last:] - THETA_REF).norm(dim=1).max())
    finals = torch.stack(finals)
    mean, se = finals.mean(0), finals.std(0) / math.sqrt(reps)
    assert_converged(mean, se, THETA_REF, "inverse_sqrt, reverse KL")
    d0 = (THETA0 - THETA_REF).norm()
    assert max(ends) < d0 / 10, f"worst late distance {max(ends)} vs start {d0}"
