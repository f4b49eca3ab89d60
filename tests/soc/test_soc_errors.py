"""Bad input to the stochastic-optimal-control pieces: one clear UsageError each, raised
before any parameter's gradient changes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import sampleopt as so
from sampleopt.estimators import AdjointMatching, TimeReversedBSDE
from sampleopt.samplers import ControlledChain, Gaussian, SDEChain
from sampleopt.soc import TimeField

TIMES = torch.linspace(0, 1, 6).tolist()
ESTIMATORS = [AdjointMatching, TimeReversedBSDE]


def base(memoryless=False):
    return SDEChain(Gaussian([0.0, 0.0], 1.0), TIMES, diffusion=1.0, memoryless=memoryless)


def reward(x):
    return -(x**2).sum(1)


class Wrong(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3))

    def forward(self, x, t):
        return self.w.expand(x.shape[0], 3)


def untouched(chain):
    for p in chain.parameters():
        p.grad = torch.full_like(p, 7.0)
    return lambda: all(bool((p.grad == 7).all()) for p in chain.parameters())


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_a_control_of_the_wrong_shape(cls):
    b = base(memoryless=True)
    chain = ControlledChain(b, Wrong())
    check = untouched(chain)
    objective = so.Objective(reward, lam=0.5, divergence=so.PathKL(b))
    with pytest.raises(so.UsageError, match=r"network must return the state's shape \(4, 2\)"):
        cls().loss(chain, objective, n=4)
    assert check()


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_a_base_that_is_not_memoryless_is_refused_by_name(cls):
    b = base()
    chain = ControlledChain(b, TimeField(2))
    objective = so.Objective(reward, lam=0.5, divergence=so.PathKL(b))
    with pytest.raises(so.UsageError, match="SDEChain is not memoryless.*allow_memory=True"):
        cls().loss(chain, objective, n=4)
    cls(allow_memory=True).loss(chain, objective, n=4)  # the fixed-initial-law problem
    learned = ControlledChain(b, TimeField(2), initial=Gaussian([0.0, 0.0], 1.0, learnable=True))
    loss = cls().loss(learned, objective, n=4)  # the initial-law correction applied
    loss.backward()
    assert learned.initial.mean.grad is not None


@pytest.mark.parametrize("cls", ESTIMATORS)
@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan")])
def test_lam_must_be_positive(cls, lam):
    b = base(memoryless=True)
    chain = ControlledChain(b, TimeField(2))
    with pytest.raises(so.UsageError, match="lam"):
        cls().loss(chain, so.Objective(reward, lam=lam, divergence=so.PathKL(b)), n=4)


def test_a_score_network_of_the_wrong_shape():
    b = base(memoryless=True)
    chain = ControlledChain(b, TimeField(2), parameterization="costate")
    check = untouched(chain)
    objective = so.Objective(reward, lam=0.5, divergence=so.PathKL(b))
    est = TimeReversedBSDE(score=Wrong(), warmup_rounds=0)
    with pytest.raises(so.UsageError, match="score"):
        est.loss(chain, objective, n=4)
    assert check()


def test_other_estimators_refuse_a_learned_initial_law():
    b = base(memoryless=True)
    chain = ControlledChain(b, TimeField(2), initial=Gaussian([0.0, 0.0], 1.0, learnable=True))
    objective = so.Objective(reward, lam=0.5, divergence=so.PathKL(b))
    with pytest.raises(so.UsageError, match="does not train a learned initial law"):
        so.make_estimator("adjoint").loss(chain, objective, n=4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"times": [0.0]}, "strictly increasing"),
        ({"times": [0.0, 0.5, 0.5]}, "strictly increasing"),
        ({"diffusion": -1.0}, "diffusion"),
        ({"linear": torch.zeros(3, 3)}, r"\(2, 2\) matrix"),
    ],
)
def test_bad_sde_chains(kwargs, match):
    args = {"times": TIMES, **kwargs}
    with pytest.raises(so.UsageError, match=match):
        SDEChain(Gaussian([0.0, 0.0], 1.0), args.pop("times"), **args)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"target": "adapted"}, "target"),
        ({"trace": "approx"}, "trace"),
        ({"probes": 0}, "probes"),
        ({"huber": -1.0}, "huber"),
        ({"round_length": 0}, "round_length"),
        ({"increment": "euler"}, "increment"),
    ],
)
def test_bad_tr_bsde_options(kwargs, match):
    with pytest.raises(so.UsageError, match=match):
        so.make_estimator("tr-bsde", **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 0}, "steps"),
        ({"clip_quantile": 1.5}, "clip_quantile"),
        ({"keep_last": -1}, "keep"),
    ],
)
def test_bad_adjoint_matching_options(kwargs, match):
    with pytest.raises(so.UsageError, match=match):
        so.make_estimator("adjoint-matching", **kwargs)
