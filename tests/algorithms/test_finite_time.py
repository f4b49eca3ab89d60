"""Finite-time Implicit Diffusion (the queue) against the nested-loop adjoint."""

from __future__ import annotations

import copy

import pytest
import torch

import sampleopt as so
from sampleopt import testing
from sampleopt.algorithms import QueuedImplicitDiffusion
from sampleopt.diffusion import CosineSchedule
from sampleopt.errors import NonFiniteError, UsageError
from sampleopt.estimators import AdjointEstimator
from sampleopt.models import TimeMLP
from sampleopt.objectives import PathKL

F64 = torch.float64


def neural(cls=so.ReverseSDESampler, steps=4, prediction="eps", **kw):
    torch.manual_seed(0)
    net = TimeMLP(2, 100, hidden=16, depth=2, prediction=prediction).double()
    return cls(net, CosineSchedule(100).double(), steps, data_shape=(2,), **kw)


def reward(x):
    return -((x - torch.tensor([1.0, 0.5], dtype=x.dtype)) ** 2).sum(1) + torch.sin(x[:, 0])


def flat(ts):
    return torch.cat([t.reshape(-1) for t in ts])


@pytest.mark.parametrize(
    "make",
    [
        lambda: neural(so.DDPMSampler),
        lambda: neural(so.DDIMSampler, eta=0.5, prediction="x0"),
        lambda: neural(so.ReverseSDESampler, prediction="v"),
        lambda: neural(so.ProbabilityFlowSampler, method="euler"),
        lambda: neural(so.ProbabilityFlowSampler, method="heun"),
        lambda: so.AffineChain.random(2, 4),
    ],
)
def test_one_batched_call_gives_each_batch_its_own_mean(make):
    sampler = make()
    xs = [torch.randn(n, 2, dtype=F64) for n in (3, 5, 1, 4)]
    ks = [0, 3, 1, 2]
    batched = sampler.mean_batched(xs, ks)
    for x, k, m in zip(xs, ks, batched, strict=True):
        torch.testing.assert_close(m, sampler.mean(x, k), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_with_learning_rate_zero_the_queue_gradient_is_the_nested_adjoint(lam):
    """Every finished batch's gradient equals AdjointEstimator's on the same x_0 and
    noise (the batch's own generator), to float tolerance."""
    sampler = neural()
    kl = PathKL(sampler)  # a frozen copy of the unperturbed sampler
    with torch.no_grad():
        for p in sampler.parameters():
            p.add_(0.05 * torch.randn_like(p))
    obj = so.Objective(reward, lam=lam, divergence=kl if lam else None)
    alg = QueuedImplicitDiffusion(sampler, obj, batch_size=6, lr=0.0, seed=3)
    K = sampler.num_steps
    for _ in range(K - 1):
        assert alg.step() is None  # the queue fills
    checked = 0
    for _ in range(3):
        batch = alg.queue[0].index  # the oldest batch finishes at this step
        rec = alg.step()
        assert rec is not None and len(rec) == 1
        est = AdjointEstimator()
        for p in sampler.parameters():
            p.grad = None
        gen = alg.batch_generator(batch)
        loss = est.loss(sampler, obj, n=6, generator=gen)
        loss.backward()
        torch.testing.assert_close(
            flat(alg.last_grads), flat(p.grad for p in sampler.parameters()), rtol=1e-10, atol=1e-12
        )
        assert rec.rows()[0]["value"] == pytest.approx(float(loss.detach()), rel=1e-10)
        checked += 1
    assert checked == 3 and alg.updates == 3 and alg.iteration == K + 2


def test_the_queue_improves_the_exact_objective():
    """On the exact reverse-SDE sampler of Gaussian data (theta = mean, log scale) the
    oracle's loss falls as the queue trains."""
    case = testing.oracle_case("sde")
    with torch.no_grad():
        before = float(case.exact_value())
    alg = QueuedImplicitDiffusion(case.sampler, case.objective, batch_size=32, lr=0.05)
    alg.run(60)
    with torch.no_grad():
        after = float(case.exact_value())
    assert after < before - 0.5, (before, after)


def path_kl(sampler, ref, n=256):
    """Monte-Carlo path KL(P_sampler || P_ref) (the adjoint loss with lam = 1 minus lam = 0,
    same noise)."""
    with_kl = AdjointEstimator().loss(
        sampler,
        so.Objective(reward, lam=1.0, divergence=PathKL(ref)),
        n=n,
        generator=torch.Generator().manual_seed(0),
    )
    without = AdjointEstimator().loss(
        sampler, so.Objective(reward), n=n, generator=torch.Generator().manual_seed(0)
    )
    return float((with_kl - without).detach())


def test_a_very_large_lam_keeps_the_model_at_the_base():
    """SGD on l / (1 + lam) (the step size scaled as the curvature grows with lam): with
    lam = 1e6 the weights and the path KL stay at the base while lam = 0 moves both."""
    base = neural()
    ref = copy.deepcopy(base).requires_grad_(False)
    moved, kl = {}, {}
    for lam in (0.0, 1e6):
        sampler = copy.deepcopy(base)
        obj = so.Objective(reward, lam=lam, divergence=PathKL(ref) if lam else None)
        alg = QueuedImplicitDiffusion(sampler, obj, batch_size=16, lr=0.01 / (1 + lam))
        alg.run(40)
        moved[lam] = max(
            float((p - q).detach().abs().max())
            for p, q in zip(sampler.parameters(), ref.parameters(), strict=True)
        )
        kl[lam] = path_kl(sampler, ref)
    assert moved[0.0] > 0.05 and kl[0.0] > 1e-3, (moved, kl)
    assert moved[1e6] < 1e-3 * moved[0.0] and kl[1e6] < 1e-6 * kl[0.0], (moved, kl)


def test_a_nan_reward_stops_with_nothing_lost():
    sampler = neural()
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        r = reward(x)
        return r * float("nan") if calls["n"] == 3 else r

    alg = QueuedImplicitDiffusion(sampler, so.Objective(flaky), batch_size=4, lr=0.1)
    alg.run(2)
    params = [p.detach().clone() for p in sampler.parameters()]
    queued = len(alg.queue)
    with pytest.raises(NonFiniteError, match="the reward contains NaN"):
        alg.step()
    assert all(torch.equal(a, b) for a, b in zip(params, sampler.parameters(), strict=True))
    assert len(alg.queue) == queued + 1  # the finished batch is still there
    assert alg.updates == 2


def test_bad_settings():
    with pytest.raises(UsageError, match="batch_size must be an integer >= 1"):
        QueuedImplicitDiffusion(neural(), so.Objective(reward), batch_size=0)
    with pytest.raises(UsageError, match="step size eta must be a finite number >= 0"):
        QueuedImplicitDiffusion(neural(), so.Objective(reward), batch_size=2, lr=-1.0)


@pytest.mark.parametrize(
    "estimator",
    [
        so.UnrolledEstimator(),
        so.TruncatedEstimator(2),
        so.ScoreFunctionEstimator(),
        so.ZerothOrderEstimator(),
    ],
    ids=lambda e: e.name,
)
def test_an_estimator_that_cannot_use_stored_paths_is_refused(estimator):
    sampler = neural()
    before = [p.detach().clone() for p in sampler.parameters()]
    with pytest.raises(UsageError, match=f"the '{estimator.name}' estimator cannot"):
        QueuedImplicitDiffusion(sampler, so.Objective(reward), estimator, batch_size=2)
    assert all(torch.equal(a, p) for a, p in zip(before, sampler.parameters(), strict=True))
    default = QueuedImplicitDiffusion(sampler, so.Objective(reward), batch_size=2)
    assert isinstance(default.estimator, so.AdjointEstimator)


def test_a_batch_of_the_wrong_shape_is_refused_by_the_batched_call():
    sampler = neural()
    xs = [torch.randn(3, 2, dtype=F64), torch.randn(2, 5, dtype=F64)]
    with pytest.raises(UsageError, match=r"expects x of shape \(n, 2\), got \(2, 5\)"):
        sampler.mean_batched(xs, [0, 1])
