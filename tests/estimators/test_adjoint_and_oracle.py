"""The discrete adjoint against unrolled backpropagation (same noise, float tolerance;
docs/methods.md section 3.3); the oracle's moments (docs/methods.md section 2) and what
it refuses."""

from __future__ import annotations

import pytest
import torch

import sampleopt as so
from sampleopt.diffusion import CosineSchedule
from sampleopt.errors import UsageError
from sampleopt.estimators import AdjointEstimator, UnrolledEstimator
from sampleopt.models import TimeMLP
from sampleopt.objectives import GibbsKL, PathKL
from sampleopt.testing import DATA_COV, exact_gaussian_sampler, oracle_case

F64 = torch.float64
Z = 4.0


def grads_of(estimator, sampler, objective, n, seed):
    for p in sampler.parameters():
        p.grad = None
    loss = estimator.loss(sampler, objective, n=n, generator=torch.Generator().manual_seed(seed))
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in sampler.parameters() if p.requires_grad]


def langevin_chain():
    def energy(x, th):  # a nonlinear, non-Gaussian potential
        return ((x - th[:2]) ** 2).sum(1) / 2 + th[2] * torch.cos(x).sum(1) + 0.1 * (x**4).sum(1)

    pot = so.FunctionPotential(energy, torch.tensor([0.3, -0.2, 0.5], dtype=F64), dim=2)
    return so.LangevinSampler(pot, 0.05, num_steps=15)


def mlp_chain(cls=so.DDPMSampler):
    torch.manual_seed(0)
    net = TimeMLP(2, 100, hidden=16, depth=2).double()
    return cls(net, CosineSchedule(100).double(), 10, data_shape=(2,))


@pytest.mark.parametrize("lam", [0.0, 0.7])
def test_adjoint_equals_unrolled_on_a_nonlinear_langevin_chain(lam):
    sampler = langevin_chain()
    ref = so.FunctionPotential(
        sampler.potential.fn, torch.tensor([0.0, 0.1, 0.2], dtype=F64), dim=2
    )
    # the path KL to the same Langevin chain on the reference potential
    obj = so.Objective(
        so.HexReward(smooth=True).double(),
        lam=lam,
        divergence=PathKL(sampler.with_potential(ref)),
    )
    la, ga = grads_of(AdjointEstimator(), sampler, obj, 64, 3)
    lu, gu = grads_of(UnrolledEstimator(), sampler, obj, 64, 3)
    torch.testing.assert_close(la, lu, rtol=1e-10, atol=1e-12)
    for a, u in zip(ga, gu, strict=True):
        torch.testing.assert_close(a, u, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("lam", [0.0, 0.3])
def test_adjoint_equals_unrolled_on_a_neural_diffusion_sampler(lam):
    sampler = mlp_chain(so.ReverseSDESampler)  # noise at every step: the path KL is finite
    reference = PathKL(sampler)  # a frozen copy, taken before the perturbation
    with torch.no_grad():
        for p in sampler.parameters():
            p.add_(0.05 * torch.randn_like(p))
    obj = so.Objective(lambda x: -(x**2).sum(1), lam=lam, divergence=reference)
    la, ga = grads_of(AdjointEstimator(), sampler, obj, 32, 5)
    lu, gu = grads_of(UnrolledEstimator(), sampler, obj, 32, 5)
    torch.testing.assert_close(la, lu, rtol=1e-10, atol=1e-12)
    for a, u in zip(ga, gu, strict=True):
        torch.testing.assert_close(a, u, rtol=1e-8, atol=1e-12)


def test_oracle_matches_the_closed_form_moments():
    """Oracle moments vs the hand recursion of tests/samplers/test_diffusion_samplers (via the
    exact sampler's own law at many steps ~ data law)."""
    sampler = exact_gaussian_sampler([0.5, -1.0], so.DDPMSampler, steps=200)
    m, S = so.estimators.exact_moments(sampler, 2)
    assert torch.allclose(m, torch.tensor([0.5, -1.0], dtype=F64), atol=0.02)
    cov = torch.tensor(DATA_COV, dtype=F64)
    assert torch.allclose(S, cov, atol=0.03)


def test_the_exact_denoiser_keeps_a_float64_mean_in_float64():
    den = exact_gaussian_sampler([0.5, -1.0], so.DDPMSampler).denoiser
    assert den.mean.dtype == den.evals.dtype == den.log_scale.dtype == F64
    cov = torch.tensor(DATA_COV, dtype=F64)
    torch.testing.assert_close(den.covariance(), cov, rtol=1e-14, atol=1e-15)
    assert so.diffusion.ExactGaussianDenoiser([0.0, 1.0], torch.eye(2), None).mean.dtype == (
        torch.get_default_dtype()
    )


def test_oracle_refuses_a_nonlinear_chain():
    with pytest.raises(UsageError, match="affine in x"):
        so.estimators.exact_moments(mlp_chain(), 2)


def test_path_kl_over_a_deterministic_step_is_refused():
    case = oracle_case("ddpm")  # DDPM's last step adds no noise
    sampler = case.sampler
    obj = so.Objective(case.reward, lam=1.0, divergence=PathKL(sampler))
    for est in (AdjointEstimator(), UnrolledEstimator()):
        with pytest.raises(UsageError, match="path KL is infinite over step 7"):
            est.loss(sampler, obj, n=4)


def test_adjoint_bad_input():
    sampler = langevin_chain()
    with pytest.raises(UsageError, match="no gradient"):
        AdjointEstimator().loss(sampler, so.Objective(lambda x: (x[:, 0] > 0).double()), n=4)
    # lam > 0 without a reference chain: refused when the objective is built, and a
    # Gibbs KL (a reference potential) is not the path KL the adjoint differentiates
    with pytest.raises(UsageError, match="lam > 0 needs a divergence"):
        so.Objective(lambda x: x[:, 0], lam=1.0)
    pot = so.QuadraticPotential(torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    gibbs = so.Objective(lambda x: x[:, 0], lam=1.0, divergence=GibbsKL(pot))
    with pytest.raises(
        UsageError, match="adjoint estimator differentiates a PathKL, not a GibbsKL"
    ):
        AdjointEstimator().loss(mlp_chain(), gibbs, n=4)
