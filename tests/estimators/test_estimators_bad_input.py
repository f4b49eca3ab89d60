"""Bad input to the finite-horizon estimators: one clear error each, parameters
untouched (the shared checks of the Estimator base class, docs/methods.md section 3.7)."""

from __future__ import annotations

import pytest
import torch

import sampleopt as so
from sampleopt.errors import NonFiniteError, UsageError
from sampleopt.estimators import (
    AdjointEstimator,
    ScoreFunctionEstimator,
    TruncatedEstimator,
    UnrolledEstimator,
    ZerothOrderEstimator,
)
from sampleopt.objectives import GibbsKL, PathKL
from sampleopt.samplers import AffineChain
from sampleopt.testing import oracle_case

ALL = [
    UnrolledEstimator,
    lambda: UnrolledEstimator(checkpoint=True),
    lambda: TruncatedEstimator(2),
    AdjointEstimator,
    ScoreFunctionEstimator,
    lambda: ScoreFunctionEstimator(clip=0.2),
    ZerothOrderEstimator,
]
PATHWISE = ALL[:4]
IDS = ["unrolled", "checkpointed", "truncated", "adjoint", "score", "ppo", "zeroth"]


def chain():
    return AffineChain.random(2, 4, seed=0)


def run(est, sampler, reward, **kw):
    return est.loss(sampler, so.Objective(reward), n=8, **kw)


def unchanged(sampler, before):
    return all(torch.equal(b, p) for b, p in zip(before, sampler.parameters(), strict=True))


def test_score_function_refuses_a_deterministic_step():
    sampler = oracle_case("ddpm").sampler  # DDPM's last step adds no noise
    for est in (ScoreFunctionEstimator(), ScoreFunctionEstimator(clip=0.2)):
        with pytest.raises(UsageError, match=r"step 7 of DDPMSampler is deterministic \(s_k = 0\)"):
            run(est, sampler, lambda x: x[:, 0])
    ode = AffineChain(torch.zeros(3, 2, 2), torch.zeros(3, 2), torch.tensor([0.5, 0.0, 0.5]))
    with pytest.raises(UsageError, match="step 1 of AffineChain is deterministic"):
        ScoreFunctionEstimator().rollout(ode, so.Objective(lambda x: x[:, 0]), n=4)


@pytest.mark.parametrize("make", PATHWISE, ids=IDS[:4])
def test_pathwise_estimators_refuse_a_reward_without_gradient(make):
    sampler = chain()
    for reward in (
        lambda x: (x[:, 0] > 0).double(),  # piecewise constant: no graph
        lambda x: torch.as_tensor(x.detach().numpy()[:, 0]),  # computed outside torch
    ):
        with pytest.raises(UsageError, match="reward returned no gradient"):
            run(make(), sampler, reward)


def test_non_differentiable_rewards_work_with_score_function_and_zeroth_order():
    sampler = chain()
    for est in (ScoreFunctionEstimator(), ZerothOrderEstimator()):
        loss = run(est, sampler, lambda x: (x[:, 0] > 0).double())
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in sampler.parameters())


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_a_reward_of_the_wrong_shape_is_refused(make):
    sampler = chain()
    before = [p.detach().clone() for p in sampler.parameters()]
    for reward, shape in ((lambda x: x, r"\(8, 2\)"), (lambda x: x.sum(), r"\(\)")):
        with pytest.raises(
            UsageError,
            match=rf"reward \(for the .* estimator\) must return shape \(8,\).*got {shape}",
        ):
            run(make(), sampler, reward)
    with pytest.raises(UsageError, match="must return a torch.Tensor"):
        run(make(), sampler, lambda x: x[:, 0].tolist())
    assert unchanged(sampler, before)


@pytest.mark.parametrize("make", ALL, ids=IDS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_non_finite_reward_is_refused_and_nothing_changes(make, bad):
    sampler = chain()
    before = [p.detach().clone() for p in sampler.parameters()]

    def reward(x):
        r = x[:, 0] * 1.0
        return torch.where(torch.arange(len(r)) == 3, torch.full_like(r, bad), r)

    word = "NaN" if bad != bad else "inf"
    with pytest.raises(NonFiniteError, match=f"the reward contains {word}"):
        run(make(), sampler, reward)
    assert unchanged(sampler, before)  # the zeroth-order estimator restores theta
    assert all(p.grad is None for p in sampler.parameters())


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_parameters_not_in_the_sampler_are_refused(make):
    sampler = chain()
    stranger = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    with pytest.raises(UsageError, match=r"params\[1\] \(shape \(2,\)\) is not a parameter of"):
        run(make(), sampler, lambda x: x[:, 0], params=[sampler.bias, stranger])
    copy_ = sampler.bias.detach().clone().requires_grad_(True)
    with pytest.raises(UsageError, match=r"params\[0\] .* is not a parameter of AffineChain"):
        run(make(), sampler, lambda x: x[:, 0], params=[copy_])
    sampler.weight.requires_grad_(False)
    with pytest.raises(UsageError, match=r"params\[0\] \(weight\) does not require a gradient"):
        run(make(), sampler, lambda x: x[:, 0], params=[sampler.weight])
    with pytest.raises(UsageError, match="empty list of parameters"):
        run(make(), sampler, lambda x: x[:, 0], params=[])


@pytest.mark.parametrize("make", ALL, ids=IDS)
def test_only_the_chosen_parameters_get_a_gradient(make):
    sampler = chain()
    run(make(), sampler, lambda x: x[:, 0] - x[:, 1] ** 2, params=[sampler.bias]).backward()
    assert sampler.weight.grad is None
    assert sampler.bias.grad is not None and sampler.bias.grad.abs().sum() > 0


def test_bad_estimator_settings():
    with pytest.raises(UsageError, match="steps must be an integer >= 1"):
        TruncatedEstimator(0)
    with pytest.raises(UsageError, match="unknown baseline 'mean'; choose one of loo, none"):
        ScoreFunctionEstimator(baseline="mean")
    with pytest.raises(UsageError, match=r"clip must be a number in \(0, 1\)"):
        ScoreFunctionEstimator(clip=1.5)
    with pytest.raises(UsageError, match="states must be one of all, sqrt, got 'none'"):
        AdjointEstimator(states="none")
    with pytest.raises(UsageError, match="delta must be a finite number > 0"):
        ZerothOrderEstimator(delta=0.0)
    with pytest.raises(UsageError, match="directions must be an integer >= 1"):
        ZerothOrderEstimator(directions=0)
    with pytest.raises(UsageError, match="score-function estimator needs at least 2 samples"):
        ScoreFunctionEstimator().loss(chain(), so.Objective(lambda x: x[:, 0]), n=1)


def test_a_rollout_that_does_not_fit_is_refused():
    est = ScoreFunctionEstimator(clip=0.2)
    obj = so.Objective(lambda x: x[:, 0])
    rollout = est.rollout(chain(), obj, n=4)
    with pytest.raises(UsageError, match="the rollout has 4 steps, the sampler 6"):
        est.loss(AffineChain.random(2, 6), obj, rollout=rollout)
    with pytest.raises(UsageError, match=r"needs n=\.\.\. \(or x0=\.\.\.\)"):
        est.loss(chain(), obj)


def test_a_reference_chain_of_another_length_is_refused():
    """The path KL's reference chain must take the sampler's steps (refused at loss
    time); lam > 0 without a reference chain is refused when the objective is built,
    and a reference potential (Gibbs KL) is not a path KL."""
    sampler = chain()
    reward = lambda x: x[:, 0]  # noqa: E731
    obj = so.Objective(reward, lam=0.5, divergence=PathKL(AffineChain.random(2, 6)))
    with pytest.raises(UsageError, match="lam > 0 needs a divergence"):
        so.Objective(reward, lam=0.5)
    pot = so.QuadraticPotential(
        torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    )
    gibbs = so.Objective(reward, lam=0.5, divergence=GibbsKL(pot))
    for make in (UnrolledEstimator, AdjointEstimator, ScoreFunctionEstimator, ZerothOrderEstimator):
        with pytest.raises(UsageError, match="reference chain has 6 steps, the sampler 4"):
            make().loss(sampler, obj, n=4)
        with pytest.raises(UsageError, match="differentiates a PathKL, not a GibbsKL"):
            make().loss(sampler, gibbs, n=4)
