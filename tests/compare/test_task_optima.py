"""Each comparison task's optimum agrees with an independent computation: another
quadrature or a closed form exactly, importance weights over base or data samples within
4 of their standard errors (docs/leaderboard.md section 1)."""

from __future__ import annotations

import math

import pytest
import torch

from sampleopt.compare import TASKS, get_task, tilt_by_importance, tilt_on_grid
from sampleopt.compare.tasks import _F1, bimodal_closed_form, hex_optimum, mnist_optimum
from sampleopt.data import SubspaceGaussian
from sampleopt.data.toy import bimodal_1d, hex_mixture
from sampleopt.errors import UsageError
from sampleopt.objectives import HexReward


def assert_within(importance, exact, k=4.0):
    assert abs(importance.objective - exact.objective) < k * importance.objective_se, (
        importance,
        exact,
    )


def test_bimodal_quadrature_is_the_closed_form_and_importance_weights_agree():
    task = TASKS["bimodal"]
    quad, closed = task.optimum(), bimodal_closed_form(task.lam)
    assert quad.objective == pytest.approx(closed.objective, abs=1e-9)
    assert quad.reward == pytest.approx(closed.reward, abs=1e-9)
    assert quad.kl == pytest.approx(closed.kl, abs=1e-9)
    assert quad.objective == pytest.approx(-quad.reward + task.lam * quad.kl, abs=1e-12)
    x = bimodal_1d(200_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert_within(tilt_by_importance(task.reward()(x), task.lam), quad)


def test_hex_quadrature_is_stable_and_importance_weights_agree():
    task = TASKS["hex"]
    fine, coarse = task.optimum(), hex_optimum(step=0.05)
    assert fine.objective == pytest.approx(coarse.objective, abs=1e-6)
    x = hex_mixture(400_000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        r = HexReward(smooth=True).double()(x)
    importance = tilt_by_importance(r, task.lam)
    assert importance.ess > 1000
    assert_within(importance, fine)


def test_subspace_closed_form_matches_quadrature_and_importance_weights():
    task = TASKS["subspace"]
    closed = task.optimum()
    f1 = _F1()
    assert float(f1.theta.norm()) == pytest.approx(1.0)
    s = torch.linspace(-12.0, 12.0, 240_001, dtype=torch.float64)  # theta^T x ~ N(0, 1)
    log_p = -0.5 * s**2 - 0.5 * math.log(2 * math.pi)
    quad = tilt_on_grid(log_p, 10.0 - (s - 3.0) ** 2, task.lam, 24.0 / 240_000)
    assert quad.objective == pytest.approx(closed.objective, abs=1e-9)
    assert quad.kl == pytest.approx(closed.kl, abs=1e-9)
    data = SubspaceGaussian(64, 16, seed=0, dtype=torch.float64)
    x = data.sample(200_000, generator=torch.Generator().manual_seed(1))
    assert_within(tilt_by_importance(f1(x), task.lam), closed)


def test_mnist_importance_weights_agree_across_independent_pools():
    """Two independent pools (small and short here, so only the estimator's consistency
    is tested: the task's own optimum uses 4096 samples of 20 steps)."""
    a = mnist_optimum(pool=96, steps=2, seed=0)
    b = mnist_optimum(pool=96, steps=2, seed=1)
    assert a.method == "importance weights" and a.ess is not None and a.ess > 1
    se = math.hypot(a.objective_se, b.objective_se)
    assert abs(a.objective - b.objective) < 4 * se


def test_bad_input():
    with pytest.raises(UsageError, match="unknown task"):
        get_task("cifar")
    x = torch.linspace(-1.0, 1.0, 101, dtype=torch.float64)
    with pytest.raises(UsageError, match="mass"):
        tilt_on_grid(-0.5 * x**2 - 0.5 * math.log(2 * math.pi), x, 1.0, 0.02)
    for lam in (0.0, -1.0, float("nan")):
        with pytest.raises(UsageError, match="lam"):
            tilt_by_importance(x, lam)


def test_closed_form_and_grid_argument_checks():
    from sampleopt.compare import gaussian_quadratic_tilt

    with pytest.raises(UsageError, match=r"\|w\|\^2"):
        gaussian_quadratic_tilt(1.0, 0.0, 1.0, 1.0)
    with pytest.raises(UsageError, match="same shape"):
        tilt_on_grid(torch.zeros(3), torch.zeros(4), 1.0, 0.1)
