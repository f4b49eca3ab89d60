"""The bimodal OU benchmark (docs/soc.md section 5) against independent computations:
autograd of a mixture density written out separately, plain-grid and scipy quadrature of
the posterior, and Monte Carlo of the base chain."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from sampleopt.errors import UsageError
from sampleopt.soc.bimodal import BimodalOU, base_chain

F64 = torch.float64
X = torch.linspace(-6.0, 6.0, 41, dtype=F64)
# a fine uniform grid: the trapezoid rule on smooth, Gaussian-tailed integrands over it is
# exact to round-off, far below the 1e-6 tolerances used here
Y = np.linspace(-16.0, 16.0, 8001)
EXPECTED = {  # beta = 1 / lam: (J_learned, J_fixed), docs/soc.md section 5
    0.02: (0.171, 0.174),
    0.05: (0.364, 0.378),
    0.125: (0.625, 0.676),
    1 / 6: (0.697, 0.762),
    1.0: (1.04, 1.130),
}


def normal_pdf(x, mean, var):
    return np.exp(-((x - mean) ** 2) / (2 * var)) / np.sqrt(2 * np.pi * var)


def p_data(y):
    return 0.5 * normal_pdf(y, -3.0, 1.0) + 0.5 * normal_pdf(y, 3.0, 1.0)


def posterior_expectation(f, x, t):
    """E[f(X_1) | X_t = x] by Bayes on the grid Y: p_data(y) N(x; a y, 1 - a^2)."""
    a = math.exp(-2 * (1 - t))
    w = p_data(Y) * normal_pdf(x, a * Y, 1 - a * a)
    return np.trapezoid(w * f(Y), Y) / np.trapezoid(w, Y)


def value_by_grid(x, t, lam):
    return -math.log(posterior_expectation(lambda y: np.exp(-((y - 3) ** 2) / (2 * lam)), x, t))


def test_marginal_score_is_the_gradient_of_the_mixture_log_density():
    for t in (0.0, 0.3, 1.0):
        s = math.exp(-2 * (1 - t)) * 3.0
        xg = X.clone().requires_grad_(True)
        # the density itself, not its log: an independent route to the score
        dens = (torch.exp(-((xg - s) ** 2) / 2) + torch.exp(-((xg + s) ** 2) / 2)) / 2
        (g,) = torch.autograd.grad(dens.log().sum(), xg)
        got = BimodalOU(1.0).marginal_score(X[:, None], t)
        assert got.shape == (41, 1) and got.dtype == F64
        torch.testing.assert_close(got[:, 0], g, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(BimodalOU(2.0).base_drift(X, t), 4 * g, rtol=1e-12, atol=1e-12)


def test_value_at_the_end_is_the_cost_and_matches_the_posterior_on_a_grid():
    p = BimodalOU(1.5)
    torch.testing.assert_close(p.value(X, 1.0), (X - 3) ** 2 / 3.0, rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(p.costate(X, 1.0), (X - 3) / 1.5, rtol=1e-13, atol=1e-13)
    for t in (0.0, 0.4, 0.9):
        grid = torch.tensor([value_by_grid(x, t, 1.5) for x in X.tolist()], dtype=F64)
        torch.testing.assert_close(p.value(X, t), grid, rtol=0, atol=1e-9)


def test_value_at_start_matches_monte_carlo_of_the_base_chain():
    # 20000 paths of the 200-step chain from x0 = 0.5, lam = 1. Discretisation allowance:
    # with 2e6 paths the 50/100/200-step chains gave -log E - V = 0.015 / 0.009 / 0.004
    # (+- 0.0007), first order in dt; 0.01 covers the 200-step bias with room to spare.
    p, x0, n = BimodalOU(1.0), 0.5, 20000
    chain = base_chain(steps=200)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        x1 = chain.sample(n, x0=torch.full((n, 1), x0, dtype=F64), generator=gen)
    assert x1.shape == (n, 1) and x1.dtype == F64
    w = torch.exp(-p.cost(x1[:, 0]) / p.lam)
    est = -math.log(float(w.mean()))
    se = float(w.std()) / math.sqrt(n) / float(w.mean())  # delta method for -log(mean)
    exact = float(p.value(torch.tensor([x0]), 0.0))
    assert abs(est - exact) < 4 * se + 0.01, (est, exact, se)


def test_costates_against_autograd_and_finite_differences():
    p, h = BimodalOU(0.7), 1e-4
    torch.testing.assert_close(p.evaluation_costate(X, 1.0), (X - 3) / p.lam)
    for t in (0.0, 0.5, 0.95):
        xg = X.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(p.value(xg, t).sum(), xg)
        torch.testing.assert_close(p.costate(X, t), g, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(p.optimal_control(X, t), -2 * g, rtol=1e-10, atol=1e-10)
        # d/dx E[l/lam | X_t = x] by central differences of the grid posterior (error ~ h^2)
        cost = lambda y: (y - 3) ** 2 / (2 * p.lam)  # noqa: E731
        fd = [
            (posterior_expectation(cost, x + h, t) - posterior_expectation(cost, x - h, t))
            / (2 * h)
            for x in X.tolist()
        ]
        torch.testing.assert_close(
            p.evaluation_costate(X, t), torch.tensor(fd, dtype=F64), rtol=0, atol=1e-6
        )


@pytest.mark.parametrize("lam", [1.0, 6.0, 50.0])
def test_optimal_costs_against_quad(lam):
    p = BimodalOU(lam)
    z, _ = integrate.quad(lambda y: p_data(y) * math.exp(-((y - 3) ** 2) / (2 * lam)), -20, 20)
    assert abs(p.J_learned() - (-math.log(z))) < 1e-6
    a = math.exp(-2.0)

    def integrand(x0):  # p_0(x0) V(0, x0), V from the grid posterior
        p0 = 0.5 * normal_pdf(x0, -3 * a, 1.0) + 0.5 * normal_pdf(x0, 3 * a, 1.0)
        return p0 * value_by_grid(x0, 0.0, lam)

    j_fixed, _ = integrate.quad(integrand, -12, 12, epsabs=1e-10)
    assert abs(p.J_fixed() - j_fixed) < 1e-6
    assert p.J_fixed() > p.J_learned()  # fixing the initial law cannot lower the cost


@pytest.mark.parametrize("beta", sorted(EXPECTED))
def test_expected_figures(beta):
    p = BimodalOU(1 / beta)
    learned, fixed = EXPECTED[beta]
    assert abs(p.J_learned() - learned) < 0.01
    assert abs(p.J_fixed() - fixed) < 0.01


def _mass(fn):
    value, _ = integrate.quad(lambda y: float(fn(torch.tensor([y], dtype=F64))), -20, 20,
                              epsabs=1e-12, limit=200)  # fmt: skip
    return value


@pytest.mark.parametrize("lam", [0.3, 1.0])
def test_terminal_densities_integrate_to_one_and_differ(lam):
    p = BimodalOU(lam)
    assert abs(_mass(p.tilted_density) - 1) < 1e-6
    assert abs(_mass(p.fixed_optimal_density) - 1) < 1e-6
    assert abs(_mass(lambda x: p.optimal_initial_log_density(x).exp()) - 1) < 1e-6
    if lam == 1.0:
        y = torch.tensor(Y, dtype=F64)
        cdf = [integrate.cumulative_trapezoid(f(y).numpy(), Y, initial=0) for f in
               (p.tilted_density, p.fixed_optimal_density)]  # fmt: skip
        assert np.abs(cdf[0] - cdf[1]).max() > 0.01


def test_optimal_marginals():
    p = BimodalOU(1.0)
    # t = 1 with the initial law learned: the score of the tilted density
    xg = X.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(p.tilted_density(xg).log().sum(), xg)
    got = p.optimal_marginal_score(X[:, None], 1.0, fixed_initial=False)
    assert got.shape == (41, 1)
    torch.testing.assert_close(got[:, 0], g, rtol=1e-10, atol=1e-10)
    # t = 1 with the initial law fixed: the score of fixed_optimal_density
    xg = X.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(p.fixed_optimal_density(xg).log().sum(), xg)
    torch.testing.assert_close(p.optimal_marginal_score(X, 1.0), g, rtol=1e-10, atol=1e-10)
    # t = 0 with the initial law fixed: p*_0 = p_0, whose score is the base's
    torch.testing.assert_close(
        p.optimal_marginal_score(X, 0.0), p.marginal_score(X, 0.0), rtol=1e-9, atol=1e-9
    )
    # t = 0 with it learned: the optimal initial law
    torch.testing.assert_close(
        p.optimal_marginal_log_density(X, 0.0, fixed_initial=False),
        p.optimal_initial_log_density(X),
    )
    # every intermediate marginal is a probability density
    for fixed in (True, False):
        dens = lambda x, f=fixed: p.optimal_marginal_log_density(x, 0.5, f).exp()  # noqa: E731
        assert abs(_mass(dens) - 1) < 1e-6


def test_base_chain_and_a_replacement_score():
    chain = base_chain(steps=10)
    assert chain.initial.means.dtype == F64 and chain.num_steps == 10
    x = torch.randn(5, 1, dtype=F64)
    score = BimodalOU(1.0).marginal_score(x, 0.0)
    torch.testing.assert_close(chain.mean(x, 0), math.exp(0.2) * x + 0.1 * 4 * score)
    zero = base_chain(steps=10, score=lambda x, t: torch.zeros_like(x))
    assert chain.drift(x, 0.3).shape == (5, 1)
    torch.testing.assert_close(zero.mean(x, 3), math.exp(0.2) * x)
    assert BimodalOU(2.0).sample_data(7, torch.Generator().manual_seed(0)).shape == (7, 1)


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan"), float("inf"), "a"])
def test_invalid_lam_raises(lam):
    with pytest.raises(UsageError):
        BimodalOU(lam)
