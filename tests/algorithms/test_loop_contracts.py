"""The four loops share one contract: a bad argument is a UsageError and a NaN is a
NonFiniteError, each raised before any parameter or optimiser state changes."""

from __future__ import annotations

import pytest
import torch

import sampleopt as so
from sampleopt import testing


def langevin():
    pot = so.GaussianMixturePotential(so.hex_centres(), torch.tensor([1.5, 0, 1.5, 0, 1.5, 0]))
    return so.LangevinSampler(pot, gamma=0.1, num_steps=5)


def sde32():
    return testing.exact_gaussian_sampler([0.5, -1.0], so.ReverseSDESampler, steps=3).float()


def loops(reward, **kw):
    """(name, factory) of every loop over theta, on a float32 sampler."""
    pathwise = dict(batch_size=4, **kw)
    return {
        "implicit-diffusion": lambda: so.ImplicitDiffusion(
            langevin(), so.Objective(reward), n_particles=8, generator=torch.Generator(), **kw
        ),
        "nested": lambda: so.NestedLoop(
            sde32(), so.Objective(reward), so.AdjointEstimator(), **pathwise
        ),
        "fine-tuner": lambda: so.FineTuner(
            sde32(), so.Objective(reward), so.AdjointEstimator(), **pathwise
        ),
        "queue": lambda: so.QueuedImplicitDiffusion(sde32(), so.Objective(reward), **pathwise),
    }


def advance(alg):
    """One block of Implicit Diffusion (what a NaN rolls back), one update otherwise."""
    if isinstance(alg, so.ImplicitDiffusion):
        return alg.run(3, block=3)
    return alg.run(1)


def snapshot(alg):
    return {k: v.clone() for k, v in alg.update.state_tensors().items()}


NAMES = sorted(loops(None))
SUM = so.Objective(lambda x: x.sum(1))


@pytest.mark.parametrize("name", NAMES)
def test_a_float64_reward_on_float32_samples_is_a_usage_error(name):
    def reward(x):
        return x.double().sum(1)

    with pytest.raises(so.UsageError, match="torch.float64 for torch.float32 samples"):
        advance(loops(reward)[name]())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("lr", [float("inf"), float("nan"), -1.0])
def test_a_bad_learning_rate_is_refused_at_construction(name, lr):
    with pytest.raises(so.UsageError, match="step size"):
        loops(lambda x: x.sum(1), lr=lr)[name]()


@pytest.mark.parametrize("name", NAMES)
def test_nan_changes_no_parameter_and_no_optimiser_state(name):
    calls = [0]

    def reward(x):
        calls[0] += 1
        r = -(x**2).sum(1)
        return r * float("nan") if calls[0] > 3 else r

    alg = loops(reward, optimizer="adam")[name]()
    calls[0] = 0  # the construction's own check does not count
    with pytest.raises(so.NonFiniteError):
        for _ in range(10):
            before = snapshot(alg)
            advance(alg)
    after = snapshot(alg)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k


def test_particles_of_the_wrong_dimension_are_a_usage_error():
    with pytest.raises(so.UsageError, match=r"shape \(8, 3\)"):
        so.ImplicitDiffusion(
            langevin(), so.Objective(lambda x: x.sum(1)), particles=torch.zeros(8, 3)
        )


@pytest.mark.parametrize("optimizer", ["sgdd", 3, None])
def test_an_unknown_optimizer_is_refused(optimizer):
    if optimizer is None:  # None is the in-place SGD
        so.FineTuner(
            sde32(), so.Objective(lambda x: x.sum(1)), so.AdjointEstimator(), optimizer=None
        )
        return
    with pytest.raises(so.UsageError, match="unknown optimizer"):
        so.FineTuner(
            sde32(), so.Objective(lambda x: x.sum(1)), so.AdjointEstimator(), optimizer=optimizer
        )
