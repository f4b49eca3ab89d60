"""LateStepDenoiser: fine-tuning only the last sampling steps. Rows are routed by t,
the early steps stay the base's exactly, and because they hold no parameter the
adjoint gradient equals DRaFT-M (truncation at the switch loses nothing) and the
oracle's gradient within 4 SE."""

from __future__ import annotations

import copy

import pytest
import torch

import sampleopt as so
from sampleopt import testing
from sampleopt.diffusion import LateStepDenoiser
from sampleopt.errors import UsageError
from sampleopt.estimators import AdjointEstimator, TruncatedEstimator
from sampleopt.objectives import PathKL
from tests.estimators.test_adjoint_and_oracle import grads_of
from tests.estimators.test_estimators_oracle import assert_within, mean_and_se

K, M = 8, 3  # steps, of which the last M are tuned
F64 = torch.float64
# the oracle's quadratic reward r(x) = a^T x + x^T Q x (sampleopt.testing's default)
REWARD = testing.QuadraticReward(
    torch.tensor([1.0, -0.5], dtype=F64), torch.tensor([[-0.3, 0.1], [0.1, -0.2]], dtype=F64)
)


def late_chain():
    """Reverse SDE on Gaussian data: the tuned denoiser's mean is moved from the base's,
    and it drives only the last M steps."""
    base = testing.exact_gaussian_sampler([0.0, 0.2], so.ReverseSDESampler, steps=K)
    base.requires_grad_(False)
    sampler = testing.exact_gaussian_sampler([0.5, -1.0], so.ReverseSDESampler, steps=K)
    t_max = sampler.timesteps[K - M]
    sampler.denoiser = LateStepDenoiser(sampler.denoiser, base.denoiser, t_max)
    return sampler, base


def test_rows_are_routed_by_their_own_time():
    sampler, base = late_chain()
    den = sampler.denoiser
    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.tensor([den.t_max + 5, den.t_max, 1, den.t_max + 1, 2, 150])
    out = den(x, t)
    late = t <= den.t_max
    torch.testing.assert_close(out[late], den.tuned(x[late], t[late]), rtol=0, atol=0)
    torch.testing.assert_close(out[~late], den.base(x[~late], t[~late]), rtol=0, atol=0)
    assert not torch.equal(den.tuned(x, t)[~late], out[~late])  # the two models differ


def test_early_steps_are_the_base_and_late_steps_are_tuned():
    sampler, base = late_chain()
    x = torch.randn(5, 2, dtype=torch.float64)
    for k in range(K):
        same = torch.equal(sampler.mean(x, k), base.mean(x, k))
        assert same == (k < K - M), k
    assert [p for p in sampler.parameters() if p.requires_grad] == list(
        sampler.denoiser.tuned.parameters()
    )


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_the_adjoint_equals_truncation_at_the_switch(lam):
    """Steps before the switch hold no parameter, so DRaFT-M is exact here."""
    sampler, base = late_chain()
    obj = so.Objective(REWARD, lam=lam, divergence=PathKL(base) if lam > 0 else None)
    la, ga = grads_of(AdjointEstimator(), sampler, obj, 32, 4)
    lt, gt = grads_of(TruncatedEstimator(M), sampler, obj, 32, 4)
    torch.testing.assert_close(la, lt, rtol=1e-12, atol=1e-12)
    for a, b in zip(ga, gt, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_the_adjoint_is_unbiased_for_the_late_step_model():
    sampler, base = late_chain()
    obj = so.Objective(REWARD, lam=0.5, divergence=PathKL(base))
    mean, se = mean_and_se(AdjointEstimator(), sampler, obj)
    truth = testing.OracleCase("late-step", sampler, obj, REWARD, []).exact_gradient()
    assert truth.abs().max() > 10 * se.max()  # a test that could fail
    assert_within(mean, se, truth)


def test_bad_input():
    sampler, base = late_chain()
    other = copy.deepcopy(base.denoiser)
    other.prediction = "x0"
    with pytest.raises(UsageError, match="predict different kinds"):
        LateStepDenoiser(sampler.denoiser.tuned, other, 10)
    for bad in (0, -3, True, 2.5):
        with pytest.raises(UsageError, match="t_max"):
            LateStepDenoiser(sampler.denoiser.tuned, base.denoiser, bad)


@pytest.mark.parametrize("method", ["implicit", "adjoint"])
def test_fine_tuning_moves_only_the_late_steps(method):
    from tests.algorithms.test_finetune import make_tuner, update
    from tests.algorithms.test_finite_time import neural, reward

    sampler = neural()
    base = copy.deepcopy(sampler).requires_grad_(False)
    k_switch = sampler.num_steps - 2
    sampler.denoiser = LateStepDenoiser(
        sampler.denoiser, base.denoiser, sampler.timesteps[k_switch]
    )
    ft = make_tuner(method, sampler, so.Objective(reward), batch_size=4, lr=1e-2)
    for _ in range(3):
        update(ft)
    x = torch.randn(5, 2, dtype=torch.float64)
    with torch.no_grad():
        for k in range(sampler.num_steps):
            assert torch.equal(sampler.mean(x, k), base.mean(x, k)) == (k < k_switch), k


def test_the_tune_steps_setting(tmp_path, capsys):
    from sampleopt.cli import main
    from tests.algorithms.test_finetune import MNIST_ARGS

    out = tmp_path / "late"
    assert main(["run", "mnist-brightness", "--out", str(out), *MNIST_ARGS,
                 "--set", "tune_steps=1"]) == 0  # fmt: skip
    assert (out / "report.md").is_file()
    assert main(["run", "mnist-brightness", "--out", str(tmp_path / "bad"), *MNIST_ARGS,
                 "--set", "tune_steps=3"]) == 2  # fmt: skip
    assert "config key 'tune_steps' must be at most steps = 2, got 3" in capsys.readouterr().err
