"""The estimator contract (docs/methods.md section 3.7), for every registered estimator.

Each bad input gets its documented error before the loss exists, so every ``.grad``
stays exactly as it was; what an estimator declares it needs (a reward gradient, noise
at every step, a Langevin sampler, a kind of divergence) is checked by the base class
with an error that names the estimator.
"""

from __future__ import annotations

import pytest
import torch

import sampleopt as so
from sampleopt import testing
from sampleopt.estimators import ESTIMATORS

NAMES = sorted(ESTIMATORS)
N = 6
F64 = torch.float64


def setup(name: str):
    """(estimator, sampler, reward) on a float64 chain where the estimator applies: the
    exact reverse-SDE sampler of Gaussian data for the pathwise ones, a short Langevin
    chain on a quadratic energy for the covariance one."""
    est = so.make_estimator(name)
    if est.needs_langevin:
        pot = so.QuadraticPotential(torch.tensor([0.3, -0.2], dtype=F64), torch.eye(2, dtype=F64))
        sampler = so.LangevinSampler(pot, gamma=0.1, num_steps=5)
    else:
        sampler = testing.exact_gaussian_sampler([0.5, -1.0], so.ReverseSDESampler, steps=4)
    a, Q = testing.negative_definite(2, seed=0)
    return est, sampler, testing.QuadraticReward(a, Q)


def objective(est, sampler, reward) -> so.Objective:
    """The objective of a call: lam = 0, or for the estimators that need a KL (the
    stochastic-optimal-control ones) lam = 0.5 with the path KL to the sampler itself."""
    if est.needs_kl:
        return so.Objective(reward, lam=0.5, divergence=so.PathKL(sampler))
    return so.Objective(reward)


def call(est, sampler, objective, *, x0=None, **kw):
    """est.loss(...), with x0 passed as the covariance estimator's ``samples``."""
    if x0 is not None:
        kw["samples" if est.needs_langevin else "x0"] = x0
    kw.setdefault("generator", torch.Generator().manual_seed(0))
    return est.loss(sampler, objective, **kw)


def states(sampler, n=N, dtype=F64, width=2):
    return torch.randn(n, width, dtype=dtype, generator=torch.Generator().manual_seed(1))


def mark_grads(sampler) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Give every parameter a sentinel .grad; return (parameter, a copy of it)."""
    out = []
    for p in sampler.parameters():
        p.grad = torch.full_like(p, 7.0)
        out.append((p, p.grad.clone()))
    return out


def assert_untouched(marks) -> None:
    for p, before in marks:
        assert p.grad is not None and torch.equal(p.grad, before)


def refused(name, error, make_call, match=None):
    est, sampler, reward = setup(name)
    marks = mark_grads(sampler)
    with pytest.raises(error, match=match):
        make_call(est, sampler, reward).backward()
    assert_untouched(marks)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_rewards_are_refused(name, bad):
    def poisoned(reward):
        def r(x):
            v = reward(x)
            return torch.cat([v[:1] * 0 + bad, v[1:]])

        return r

    refused(
        name,
        so.NonFiniteError,
        lambda est, s, r: call(est, s, objective(est, s, poisoned(r)), n=N),
        match="the reward contains",
    )


@pytest.mark.parametrize("name", NAMES)
def test_a_reward_of_the_wrong_shape_is_refused(name):
    refused(
        name,
        so.UsageError,
        lambda est, s, r: call(est, s, objective(est, s, lambda x: r(x)[:, None]), n=N),
        match=r"shape \(6,\)",
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", [torch.bool, torch.int64])
def test_boolean_and_integer_rewards(name, kind):
    """Taken as float by the estimators that need no reward gradient, refused by name by
    those that do."""
    est, sampler, reward = setup(name)
    obj = objective(est, sampler, lambda x: (reward(x) > 0).to(kind))
    if est.needs_reward_gradient:
        marks = mark_grads(sampler)
        with pytest.raises(so.UsageError, match=f"the {est.name} estimator differentiates"):
            call(est, sampler, obj, n=N)
        assert_untouched(marks)
    else:
        for p in sampler.parameters():
            p.grad = None
        loss = call(est, sampler, obj, n=N)
        loss.backward()
        assert loss.dtype == F64 and torch.isfinite(loss)
        assert est.last_rewards.dtype == F64
        assert all(torch.isfinite(p.grad).all() for p in sampler.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", NAMES)
def test_x0_of_the_wrong_width_is_refused(name):
    refused(
        name,
        so.UsageError,
        lambda est, s, r: call(est, s, objective(est, s, r), x0=states(s, width=3)),
        match=r"shape \(6, 3\)",
    )


@pytest.mark.parametrize("name", NAMES)
def test_n_disagreeing_with_x0_is_refused(name):
    refused(
        name,
        so.UsageError,
        lambda est, s, r: call(est, s, objective(est, s, r), x0=states(s), n=N + 1),
        match="disagrees",
    )


@pytest.mark.parametrize("name", NAMES)
def test_x0_of_another_dtype_is_refused(name):
    refused(
        name,
        so.UsageError,
        lambda est, s, r: call(est, s, objective(est, s, r), x0=states(s, dtype=torch.float32)),
        match="float32",
    )


@pytest.mark.parametrize("name", NAMES)
def test_a_reward_of_another_dtype_is_refused(name):
    refused(
        name,
        so.UsageError,
        lambda est, s, r: call(est, s, objective(est, s, lambda x: r(x).float()), n=N),
        match="torch.float32 for torch.float64 samples",
    )


@pytest.mark.parametrize("name", NAMES)
def test_duplicated_params_are_refused(name):
    def dup(est, s, r):
        p = next(q for q in s.parameters() if q.requires_grad)
        return call(est, s, objective(est, s, r), n=N, params=[p, p])

    refused(name, so.UsageError, dup, match="given twice")


@pytest.mark.parametrize("name", NAMES)
def test_foreign_params_are_refused(name):
    foreign = torch.nn.Parameter(torch.zeros(2, dtype=F64))
    refused(
        name,
        so.UsageError,
        lambda est, s, r: call(est, s, objective(est, s, r), n=N, params=[foreign]),
        match="is not a parameter of",
    )


@pytest.mark.parametrize("name", NAMES)
def test_frozen_and_empty_params_are_refused(name):
    def frozen(est, s, r):
        p = next(q for q in s.parameters() if q.requires_grad)
        p.requires_grad_(False)
        return call(est, s, objective(est, s, r), n=N, params=[p])

    refused(name, so.UsageError, frozen, match="does not require a gradient")
    refused(
        name,
        so.UsageError,
        lambda est, s, r: call(est, s, objective(est, s, r), n=N, params=[]),
        match="empty",
    )


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_sample_counts_are_refused(name, n):
    refused(
        name,
        so.UsageError,
        lambda est, s, r: call(est, s, objective(est, s, r), n=n),
        match="positive integer",
    )


# -- what each estimator declares it needs ----------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_a_sampler_the_estimator_cannot_use_is_refused_by_name(name):
    """Langevin-only estimators refuse a diffusion sampler; noise-needing ones refuse a
    chain with a deterministic step (DDPM's last)."""
    est = so.make_estimator(name)
    ddpm = testing.exact_gaussian_sampler([0.5, -1.0], so.DDPMSampler, steps=4)
    if est.needs_kl:  # the path KL over DDPM's last step is refused first
        with pytest.raises(so.UsageError, match="the path KL is infinite over step 3"):
            call(est, ddpm, objective(est, ddpm, lambda x: x.sum(1)), n=N)
    elif est.needs_langevin or est.needs_noise:
        with pytest.raises(so.UsageError, match=f"the {est.name} estimator needs"):
            call(est, ddpm, objective(est, ddpm, lambda x: x.sum(1)), n=N)
    else:
        call(est, ddpm, objective(est, ddpm, lambda x: x.sum(1)), n=N).backward()


@pytest.mark.parametrize("name", NAMES)
def test_a_divergence_the_estimator_cannot_differentiate_is_refused_by_name(name):
    est, sampler, reward = setup(name)
    pot = so.QuadraticPotential(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    wrong = (
        so.PathKL(so.LangevinSampler(pot, gamma=0.1, num_steps=5))
        if est.needs_langevin
        else so.GibbsKL(pot)
    )
    with pytest.raises(so.UsageError, match=f"the {est.name} estimator differentiates a"):
        call(est, sampler, so.Objective(reward, lam=0.5, divergence=wrong), n=N)


@pytest.mark.parametrize("name", NAMES)
def test_every_registered_estimator_declares_its_cost(name):
    est = so.make_estimator(name)
    assert isinstance(est, so.Estimator) and est.name == name
    _, sampler, _ = setup(name)
    assert est.network_evals(sampler, 4) >= sampler.num_steps * 4


def test_unknown_names_and_options_are_refused():
    with pytest.raises(so.UsageError, match="unknown estimator 'reinforce'"):
        so.make_estimator("reinforce")
    with pytest.raises(so.UsageError, match="does not take these options"):
        so.make_estimator("adjoint", steps=3)
