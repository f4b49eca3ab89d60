"""Algorithm plumbing: the default in-place SGD equals torch.optim.SGD, and the
nested loop's budget accounting."""

from __future__ import annotations

import pytest
import torch

import sampleopt as so


def _mixture():
    return so.GaussianMixturePotential(so.hex_centres().double(), torch.zeros(6).double())


def _objective():
    return so.Objective(so.HexReward(smooth=True).double())


@pytest.mark.parametrize("schedule", ["constant", "inverse_sqrt"])
def test_implicit_diffusion_default_sgd_equals_torch_sgd(schedule):
    thetas = []
    for use_torch in (False, True):
        pot = _mixture()
        opt = torch.optim.SGD(pot.parameters(), lr=123.0) if use_torch else "sgd"  # lr is reset
        alg = so.ImplicitDiffusion(
            so.LangevinSampler(pot, 0.2),
            _objective(),
            n_particles=50,
            lr=so.StepSize(0.3, schedule),
            optimizer=opt,
            generator=torch.Generator().manual_seed(1),
        )
        thetas.append(alg.run(120, block=50).theta)
    torch.testing.assert_close(thetas[0], thetas[1], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("estimator", [so.CovarianceEstimator, so.UnrolledEstimator])
def test_nested_loop_default_sgd_equals_torch_sgd(estimator):
    hists = []
    for use_torch in (False, True):
        pot = _mixture()
        opt = torch.optim.SGD(pot.parameters(), lr=0.0) if use_torch else "sgd"
        loop = so.NestedLoop(
            so.LangevinSampler(pot, 0.2, num_steps=7),
            _objective(),
            estimator(),
            batch_size=40,
            lr=0.5,
            optimizer=opt,
            generator=torch.Generator().manual_seed(2),
        )
        hists.append(loop.run(6))
    torch.testing.assert_close(hists[0].theta, hists[1].theta, rtol=1e-12, atol=1e-12)
    assert hists[0].sampling_steps.tolist() == [7, 14, 21, 28, 35, 42]
    assert not torch.equal(hists[0].theta[0], hists[0].theta[-1])  # it did move
