"""Every unbiased finite-horizon estimator against the exact oracle (docs/methods.md
section 2): its average over R repeats is within 4 standard errors of the exact
gradient on three linear-Gaussian chains (a random affine chain, the exact DDPM /
reverse-SDE sampler of Gaussian data, and the reverse-SDE sampler with the path KL
active), the test beds of :func:`sampleopt.testing.oracle_case`. The truncated
estimator's bias is measured against the oracle of the truncated gradient."""

from __future__ import annotations

import copy

import pytest
import torch

import sampleopt as so
from sampleopt import testing
from sampleopt.diffusion import CosineSchedule
from sampleopt.estimators import (
    AdjointEstimator,
    ScoreFunctionEstimator,
    TruncatedEstimator,
    UnrolledEstimator,
    ZerothOrderEstimator,
    exact_objective,
)
from sampleopt.objectives import PathKL
from sampleopt.samplers import AffineChain, GaussianChain

F64 = torch.float64
Z = 4.0
R = 300  # repeats
N = 50  # samples per gradient


def flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


def estimate(est, sampler, objective, seed, params=None, n=N):
    chosen = params or [p for p in sampler.parameters() if p.requires_grad]
    for p in sampler.parameters():
        p.grad = None
    est.loss(
        sampler, objective, n=n, generator=torch.Generator().manual_seed(seed), params=params
    ).backward()
    return flat([p.grad for p in chosen])


def mean_and_se(est, sampler, objective, params=None, repeats=R):
    draws = torch.stack([estimate(est, sampler, objective, s, params) for s in range(repeats)])
    return draws.mean(0), draws.std(0) / repeats**0.5


def assert_within(mean, se, truth):
    z = (mean - truth).abs() / se
    assert ((mean - truth).abs() <= Z * se + 1e-12).all(), f"max |z| = {float(z.max()):.2f}"


# -- the three chains (sampleopt.testing.oracle_case) --------------------------------
# the oracle cases' reward r(x) = a^T x + x^T Q x, kept importable for other tests
DIM = 2
A_VEC = torch.tensor([1.0, -0.5], dtype=F64)
Q_MAT = torch.tensor([[-0.3, 0.1], [0.1, -0.2]], dtype=F64)
quad_reward = testing.QuadraticReward(A_VEC, Q_MAT)
exact_gaussian = testing.exact_gaussian_sampler  # (mean, cls=DDPMSampler, steps=8)


def exact_gradient(sampler, objective, params=None):
    """The exact gradient of ``objective`` (the quadratic reward, and its path KL when
    lam > 0) for ``sampler``, flattened over ``params`` (default: all trainable)."""
    params = params or [p for p in sampler.parameters() if p.requires_grad]
    kl = objective.path_kl
    value = exact_objective(
        sampler,
        DIM,
        a=A_VEC,
        Q=Q_MAT,
        lam=objective.lam,
        reference=None if kl is None else kl.reference,
    )
    return flat(torch.autograd.grad(value, params))


PATHWISE_CHAINS = ["random-affine", "ddpm", "sde+path-kl"]
# the DDPM chain's last step is deterministic: the score function runs on the SDE one
SCORE_CHAINS = ["random-affine", "sde", "sde+path-kl"]


@pytest.mark.parametrize("chain", PATHWISE_CHAINS)
@pytest.mark.parametrize("kind", ["unrolled", "adjoint"])
def test_pathwise_estimators_are_unbiased(kind, chain):
    case = testing.oracle_case(chain)
    est = {"unrolled": UnrolledEstimator, "adjoint": AdjointEstimator}[kind]()
    mean, se = mean_and_se(est, case.sampler, case.objective)
    assert_within(mean, se, case.exact_gradient())


@pytest.mark.parametrize("chain", SCORE_CHAINS)
@pytest.mark.parametrize("baseline", ["loo", "none"])
def test_score_function_estimator_is_unbiased(baseline, chain):
    case = testing.oracle_case(chain)
    est = ScoreFunctionEstimator(baseline=baseline)
    mean, se = mean_and_se(est, case.sampler, case.objective)
    assert_within(mean, se, case.exact_gradient())


@pytest.mark.parametrize("chain", PATHWISE_CHAINS)
def test_zeroth_order_estimator_is_unbiased_where_the_loss_is_quadratic(chain):
    """In the means (affine chain's biases, the data mean) l is quadratic, where the
    two-point estimate is unbiased for the gradient itself, not only the smoothed one."""
    case = testing.oracle_case(chain)
    params = case.quadratic_params
    est = ZerothOrderEstimator(delta=0.05)
    mean, se = mean_and_se(est, case.sampler, case.objective, params)
    assert_within(mean, se, case.exact_gradient(params))


def test_the_leave_one_out_baseline_removes_the_rewards_offset():
    """Adding a constant to the reward changes nothing with the leave-one-out baseline
    (same seed, float tolerance) while plain REINFORCE's spread grows with it."""
    case = testing.oracle_case("random-affine")
    sampler, obj = case.sampler, case.objective
    shifted = so.Objective(lambda x: case.reward(x) + 20.0)
    loo = ScoreFunctionEstimator(baseline="loo")
    for seed in range(3):
        torch.testing.assert_close(
            estimate(loo, sampler, shifted, seed), estimate(loo, sampler, obj, seed)
        )
    none = ScoreFunctionEstimator(baseline="none")
    spread = {
        name: torch.stack([estimate(e, sampler, shifted, s) for s in range(60)]).std(0).norm()
        for name, e in (("loo", loo), ("none", none))
    }
    assert spread["none"] > 3 * spread["loo"], spread


# -- exact identities with the same noise ----------------------------------------------
def neural_sde():
    torch.manual_seed(0)
    net = so.models.TimeMLP(2, 100, hidden=16, depth=2).double()
    return so.ReverseSDESampler(net, CosineSchedule(100).double(), 6, data_shape=(2,))


def smooth_reward(x):
    return -((x - torch.tensor([1.0, 0.5], dtype=x.dtype)) ** 2).sum(1) + torch.sin(x[:, 0])


@pytest.mark.parametrize("lam", [0.0, 0.4])
def test_checkpointing_and_full_truncation_equal_unrolled(lam):
    sampler = neural_sde()
    reference = PathKL(sampler)  # a frozen copy, taken before the perturbation
    with torch.no_grad():
        for p in sampler.parameters():
            p.add_(0.05 * torch.randn_like(p))
    obj = so.Objective(smooth_reward, lam=lam, divergence=reference)
    base = estimate(UnrolledEstimator(), sampler, obj, 7)
    for est in (
        UnrolledEstimator(checkpoint=True),
        TruncatedEstimator(sampler.num_steps),
        TruncatedEstimator(sampler.num_steps + 5, checkpoint=True),
    ):
        torch.testing.assert_close(estimate(est, sampler, obj, 7), base, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("lam", [0.0, 0.4])
@pytest.mark.parametrize("steps", [1, 6, 10])
def test_adjoint_with_sqrt_k_stored_states_equals_storing_all(lam, steps):
    """Replaying each segment from its stored generator state gives the same noise, so
    the same gradient (K = 1: one segment; 10: a short last segment)."""
    sampler = so.ReverseSDESampler(
        neural_sde().denoiser, CosineSchedule(100).double(), steps, data_shape=(2,)
    )
    reference = PathKL(sampler)  # a frozen copy, taken before the perturbation
    with torch.no_grad():
        for p in sampler.parameters():
            p.add_(0.05 * torch.randn_like(p))
    obj = so.Objective(smooth_reward, lam=lam, divergence=reference)
    full = estimate(AdjointEstimator(), sampler, obj, 4)
    sqrt = estimate(AdjointEstimator(states="sqrt"), sampler, obj, 4)
    torch.testing.assert_close(sqrt, full, rtol=1e-12, atol=1e-14)
    unrolled = estimate(UnrolledEstimator(), sampler, obj, 4)
    torch.testing.assert_close(sqrt, unrolled, rtol=1e-9, atol=1e-12)
    AdjointEstimator(states="sqrt").loss(sampler, obj, n=4).backward()  # no generator


def test_adjoint_equals_unrolled_with_a_learnable_noise_schedule():
    """The noise scale s_k(theta) of a learnable schedule carries a gradient too."""
    torch.manual_seed(1)
    net = so.models.TimeMLP(2, 100, hidden=16, depth=2).double()
    sched = so.diffusion.LearnableCosineSchedule(100, 0.05, 0.95, 1.3, 0.02).double()
    sampler = so.DDIMSampler(net, sched, 6, data_shape=(2,), eta=0.7)
    obj = so.Objective(smooth_reward)
    a = estimate(AdjointEstimator(), sampler, obj, 3)
    u = estimate(UnrolledEstimator(), sampler, obj, 3)
    torch.testing.assert_close(a, u, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(estimate(AdjointEstimator(states="sqrt"), sampler, obj, 3), a)
    assert flat([sched.tau.grad]).abs().sum() > 0  # the schedule's own parameters


def test_zeroth_order_uses_common_random_numbers():
    """With the same x_0 and noise at theta +- delta u, the difference of an affine
    chain's quadratic loss along u is exact: g = (grad l_hat . u) u with l_hat the loss
    of that very noise, which the unrolled estimator gives for the same seed."""
    case = testing.oracle_case("random-affine")
    sampler, obj, params = case.sampler, case.objective, case.quadratic_params
    n, seed = 16, 11
    g_hat = estimate(UnrolledEstimator(), sampler, obj, seed, params, n=n)
    zo = estimate(ZerothOrderEstimator(delta=0.3), sampler, obj, seed, params, n=n)
    gen = torch.Generator().manual_seed(seed)  # replay the estimator's draws to get u
    torch.randn(n, case.dim, generator=gen, dtype=F64)
    for _ in range(sampler.num_steps):
        torch.randn(n, case.dim, generator=gen, dtype=F64)
    u = flat([torch.randn(p.shape, generator=gen, dtype=F64) for p in params])
    torch.testing.assert_close(zo, (g_hat @ u) * u, rtol=1e-9, atol=1e-12)


def test_zeroth_order_restores_the_parameters_exactly():
    case = testing.oracle_case("random-affine")
    sampler = case.sampler
    before = [p.detach().clone() for p in sampler.parameters()]
    ZerothOrderEstimator(delta=0.1, directions=3).loss(sampler, case.objective, n=8)
    for b, p in zip(before, sampler.parameters(), strict=True):
        assert torch.equal(b, p)


# -- the truncated estimator's bias ------------------------------------------------
class _FrozenPrefix(GaussianChain):
    """The chain whose first ``start`` steps use frozen parameters: the exact expected
    value of DRaFT-K's gradient is this chain's exact gradient."""

    def __init__(self, live, start):
        super().__init__()
        self.live, self.frozen = live, copy.deepcopy(live).requires_grad_(False)
        self.start, self.num_steps = start, live.num_steps

    def mean(self, x, k):
        return (self.frozen if k < self.start else self.live).mean(x, k)

    def noise_scale(self, k):
        return self.live.noise_scale(k)


@pytest.mark.parametrize("chain", ["random-affine", "ddpm"])
@pytest.mark.parametrize("steps", [1, 3])
def test_truncated_estimator_bias_is_the_oracles(chain, steps):
    """DRaFT-K averages to the gradient through the last K steps only (within 4 SE of
    the oracle of that truncated gradient), which differs from the true gradient by
    many standard errors: the bias is real and measured, here and in the bench."""
    case = testing.oracle_case(chain)
    sampler = case.sampler
    params = [p for p in sampler.parameters() if p.requires_grad]
    mean, se = mean_and_se(TruncatedEstimator(steps), sampler, case.objective, repeats=150)
    split = _FrozenPrefix(sampler, sampler.num_steps - steps)
    truncated = flat(torch.autograd.grad(case.exact_value(split), params))
    assert_within(mean, se, truncated)
    full = case.exact_gradient()
    bias = (truncated - full).norm()
    assert bias > 10 * se.norm(), (bias, se.norm())


# -- PPO clipping (DDPO) -------------------------------------------------------------
def test_ppo_clip_on_its_own_rollout_is_the_plain_estimator():
    case = testing.oracle_case("sde")
    sampler, obj = case.sampler, case.objective
    plain, clipped = ScoreFunctionEstimator(), ScoreFunctionEstimator(clip=0.2)
    a = estimate(plain, sampler, obj, 5)
    b = estimate(clipped, sampler, obj, 5)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_ppo_epochs_on_reused_rollouts_improve_the_exact_objective():
    """DDPO-style: each rollout serves 4 optimiser steps; the clipped ratio keeps the
    reused steps safe and the exact loss decreases."""
    case = testing.oracle_case("random-affine")
    sampler, obj = case.sampler, case.objective
    params = list(sampler.parameters())
    est = ScoreFunctionEstimator(clip=0.2)
    opt = torch.optim.SGD(params, lr=0.01)
    with torch.no_grad():
        start = float(case.exact_value())
    gen = torch.Generator().manual_seed(0)
    for _ in range(15):
        rollout = est.rollout(sampler, obj, n=128, generator=gen)
        for _ in range(4):
            opt.zero_grad()
            est.loss(sampler, obj, rollout=rollout).backward()
            opt.step()
    with torch.no_grad():
        end = float(case.exact_value())
    assert end < start - 0.5, (start, end)


def test_clipped_ratios_stop_the_gradient():
    """Far from the rollout's parameters every ratio is clipped on the side the
    advantage pushes toward, so the clipped surrogate's gradient vanishes."""
    case = testing.oracle_case("random-affine")
    sampler, obj = case.sampler, case.objective
    est = ScoreFunctionEstimator(clip=0.2)
    rollout = est.rollout(sampler, obj, n=64, generator=torch.Generator().manual_seed(0))
    est.loss(sampler, obj, rollout=rollout).backward()
    g = flat([p.grad for p in sampler.parameters()])
    with torch.no_grad():  # many plain steps along the estimate
        for p in sampler.parameters():
            p.sub_(50.0 * p.grad)
    for p in sampler.parameters():
        p.grad = None
    est.loss(sampler, obj, rollout=rollout).backward()
    g_far = flat([p.grad for p in sampler.parameters()])
    assert g.norm() > 0
    assert g_far.norm() < 0.05 * g.norm(), (g.norm(), g_far.norm())


def test_the_path_kl_estimate_matches_the_oracle():
    from sampleopt.objectives import estimate_path_kl

    sampler = AffineChain.random(DIM, 5, seed=3)
    ref = copy.deepcopy(sampler)
    with torch.no_grad():  # other weights: the cost depends on the state
        ref.weight.mul_(0.7)
        ref.bias.add_(0.3)
    exact = float(exact_objective(sampler, DIM, lam=1.0, reference=ref).detach())
    mean, se = estimate_path_kl(sampler, ref, 4000, torch.Generator().manual_seed(0))
    assert se > 0 and abs(mean - exact) <= Z * se, (mean, exact, se)
    # the method of the divergence object is the same estimate
    same = PathKL(ref).estimate(sampler, 4000, torch.Generator().manual_seed(0))
    assert same == (mean, se)
    assert estimate_path_kl(sampler, sampler, 10)[0] == 0.0
    with pytest.raises(so.UsageError, match="reference chain has 6 steps, the sampler 5"):
        estimate_path_kl(sampler, AffineChain.random(DIM, 6), 10)
