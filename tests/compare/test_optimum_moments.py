"""p*'s feature moments, from which a method's samples get their Frechet distance to the
optimum (the comparison's quality metric), agree with independent computations: closed
forms exactly, other grids to quadrature error, importance weights within 4 standard
errors; and the distance of samples with known law is the closed-form distance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sampleopt.compare import TASKS, tilt_by_importance
from sampleopt.compare.problem import Problem, fd_to
from sampleopt.compare.tasks import (
    _F1,
    _subspace_theta,
    bimodal_closed_form,
    hex_optimum,
    mnist_optimum,
)
from sampleopt.data import SubspaceGaussian
from sampleopt.data.toy import hex_mixture
from sampleopt.metrics.distances import frechet_distance
from sampleopt.objectives import HexReward


def moments(opt):
    f64 = torch.float64
    return torch.tensor(opt.feature_mean, dtype=f64), torch.tensor(opt.feature_cov, dtype=f64)


def assert_mean_within(importance, exact_mean, x, k=4.0):
    """Each coordinate of the self-normalised weighted mean within k of its delta-method
    standard error sqrt(sum_i w_i^2 (x_i - m)^2)."""
    w = importance_weights(importance, x)
    m = w @ x
    se = torch.sqrt((w[:, None] ** 2 * (x - m) ** 2).sum(0))
    assert bool(((m - exact_mean).abs() < k * se).all()), (m, exact_mean, se)


def importance_weights(r_over_lam, x):
    return torch.softmax(r_over_lam, 0)


def test_bimodal_grid_moments_are_the_tilted_mixtures():
    quad, closed = TASKS["bimodal"].optimum(), bimodal_closed_form(1.0)
    for a, b in zip(moments(quad), moments(closed), strict=True):  # grid step 2e-4
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)


def test_hex_grid_moments_are_stable_and_match_importance_weights():
    fine, coarse = moments(TASKS["hex"].optimum()), moments(hex_optimum(step=0.05))
    for a, b in zip(fine, coarse, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    x = hex_mixture(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        r = HexReward(smooth=True).double()(x)
    opt = tilt_by_importance(r, 0.1, features=x)
    assert_mean_within(r / 0.1, fine[0], x)
    torch.testing.assert_close(moments(opt)[0], fine[0], rtol=0, atol=0.05)


def test_subspace_closed_form_moments():
    """Along theta the tilt is the 1-D Gaussian of the closed form (mean 2, variance 1/3
    at lam = 1); the other 15 directions of span(A) keep variance 1."""
    mean, cov = moments(TASKS["subspace"].optimum())
    theta = _subspace_theta()
    torch.testing.assert_close(mean, 2.0 * theta, rtol=0, atol=1e-12)
    torch.testing.assert_close(cov @ theta, theta / 3.0, rtol=0, atol=1e-12)
    assert float(torch.trace(cov)) == pytest.approx(15 + 1 / 3, abs=1e-12)
    data = SubspaceGaussian(64, 16, seed=0, dtype=torch.float64)
    x = data.sample(200_000, generator=torch.Generator().manual_seed(1))
    assert_mean_within(_F1()(x) / 1.0, mean, x, k=4.5)  # the largest of 64 coordinates


@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")  # rank-16 covariances
def test_fd_of_samples_of_known_law_is_the_closed_form_distance():
    """Base samples (N(0, A A^T)) against p*: the Frechet distance of the exact
    Gaussians, up to the estimator's O(d / n) bias."""
    target = TASKS["subspace"].optimum().as_dict()
    data = SubspaceGaussian(64, 16, seed=0, dtype=torch.float64)
    exact = frechet_distance(np.zeros(64), data.covariance.numpy(),
                             np.asarray(target["feature_mean"]),
                             np.asarray(target["feature_cov"]))  # fmt: skip
    assert exact == pytest.approx(4 + 16 + (15 + 1 / 3) - 2 * (15 + math.sqrt(1 / 3)), abs=1e-6)
    x = data.sample(100_000, generator=torch.Generator().manual_seed(2))
    assert fd_to(x, target) == pytest.approx(exact, rel=0.01)
    # samples of p* itself are at distance ~0
    mean, cov = moments(TASKS["subspace"].optimum())
    vals, vecs = torch.linalg.eigh(cov)  # rank 16: a square root, not a Cholesky factor
    root = vecs * vals.clamp(min=0).sqrt()
    eps = torch.randn(100_000, 64, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert fd_to(mean + eps @ root.T, target) < 0.01


def test_the_evaluation_scores_the_distance_to_the_optimum():
    problem = Problem(TASKS["bimodal"])
    target = TASKS["bimodal"].optimum().as_dict()
    ev = problem.evaluate(problem.reference, 256, 0, target=target)
    assert math.isfinite(ev["fd_star"]) and ev["fd_star"] > 1.0  # the base is far from p*
    assert "fd_star" not in problem.evaluate(problem.reference, 16, 0)


def test_mnist_moments_are_a_covariance_of_classifier_features():
    opt = mnist_optimum(pool=64, steps=2, seed=0)
    mean, cov = moments(opt)
    assert mean.shape == (128,) and cov.shape == (128, 128)
    torch.testing.assert_close(cov, cov.T)
    vals = torch.linalg.eigvalsh(cov)  # PSD up to the float32 features' rounding
    assert float(vals.min()) > -1e-6 * float(vals.max())
