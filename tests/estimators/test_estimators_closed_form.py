"""Closed-form checks of the covariance and unrolled gradient estimators
(docs/methods.md sections 3.5 and 3.1).

Everything runs in float64 with seeded generators. Statistical assertions compare a
mean over independent repeats with a closed form, with a tolerance of 4 standard
errors per coordinate (SE = sample std / sqrt(R), estimated from the repeats), and
check that the test has the power to reject the nearest wrong answer.

The potentials' constructors take no dtype: they build in
``torch.get_default_dtype()``. The default stays float32 for the session; every
module here is built inside :func:`float64_modules`, which switches the default to
float64 for the construction only and restores it on exit. (Building in float32
and calling ``.double()`` is not equivalent: float32-rounded parameters, and the
mixture's precomputed ``|c_i|^2 / (2 sigma^2)`` stays float32-accurate.)
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from sampleopt import (
    CovarianceEstimator,
    FunctionPotential,
    GaussianMixturePotential,
    GibbsKL,
    HexReward,
    LangevinSampler,
    Objective,
    PathKL,
    QuadraticPotential,
    UnrolledEstimator,
    hex_centres,
)
from sampleopt.testing import QuadraticReward
from tests.float64 import F64, build64  # noqa: E402

Z = 4.0  # tolerance, in standard errors


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def quadratic_problem(d: int = 3, seed: int = 0):
    """A random SPD precision P, centre theta and quadratic reward r = a^T x + x^T Q x."""
    g = gen(seed)
    m = torch.randn(d, d, generator=g, dtype=F64)
    p = m @ m.T / d + 0.5 * torch.eye(d, dtype=F64)
    p = (p + p.T) / 2  # exactly symmetric
    theta = torch.randn(d, generator=g, dtype=F64)
    a = torch.randn(d, generator=g, dtype=F64)
    b = torch.randn(d, d, generator=g, dtype=F64)
    q = (b + b.T) / 4
    return p, theta, a, q


def quad_potential(theta, p) -> QuadraticPotential:
    pot = build64(QuadraticPotential, theta, p)
    assert torch.equal(pot.theta.detach(), theta) and torch.equal(pot.precision, p)
    return pot


def gaussian_batches(mean, cov, r: int, n: int, g: torch.Generator) -> torch.Tensor:
    """R independent batches of n samples of N(mean, cov), shape (R, n, d)."""
    chol = torch.linalg.cholesky(cov)
    return mean + torch.randn(r, n, mean.shape[0], generator=g, dtype=F64) @ chol.T


def mean_and_se(estimates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over the repeats (first axis) and its standard error."""
    r = estimates.shape[0]
    return estimates.mean(0), estimates.std(0) / math.sqrt(r)


def assert_within(mean, se, target, what: str) -> None:
    dev = (mean - target).abs()
    assert bool((dev <= Z * se).all()), (
        f"{what}: mean {mean.tolist()} vs closed form {target.tolist()}; "
        f"|dev| / SE = {(dev / se).tolist()} (allowed {Z})"
    )


def assert_resolves(mean, se, wrong, what: str) -> None:
    """Power check: the test rejects ``wrong`` (some coordinate is > 4 SE away)."""
    dev = (mean - wrong).abs()
    assert bool((dev > Z * se).any()), f"{what}: the test cannot tell {wrong.tolist()} apart"


def sample_cross_cov(h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Unbiased sample covariance of the scalar h with the vector x, shape (d,)."""
    return (h - h.mean()) @ (x - x.mean(0)) / (x.shape[0] - 1)


def covariance_estimates(pot, objective, xs, refs=None) -> torch.Tensor:
    est = CovarianceEstimator()
    out = []
    with torch.no_grad():
        for i in range(xs.shape[0]):
            ref = None if refs is None else refs[i]
            (grad,) = est.gradient(pot, objective, xs[i], reference_samples=ref)
            out.append(grad)
    return torch.stack(out)


# --------------------------------------------------------------------------- 1, 2


def test_covariance_exact_gibbs_law_matches_gradient_of_expected_reward():
    """x ~ N(theta, P^{-1}) (the Gibbs law): E[estimate] = -P S (a + 2 Q theta) with
    S = P^{-1}, i.e. exactly grad_theta(-E[r]) = -(a + 2 Q theta)."""
    p, theta, a, q = quadratic_problem(d=3, seed=1)
    pot = quad_potential(theta, p)
    reward = QuadraticReward(a, q)
    xs = gaussian_batches(theta, torch.linalg.inv(p), r=200, n=500, g=gen(11))
    estimates = covariance_estimates(pot, Objective(reward), xs)
    # per batch it is exactly -P times the unbiased (1/(n-1)) sample Cov(r, x)
    for x, e in zip(xs[:5], estimates[:5], strict=True):
        torch.testing.assert_close(e, -p @ sample_cross_cov(reward(x), x), rtol=1e-10, atol=1e-12)
    mean, se = mean_and_se(estimates)
    target = -(a + 2 * q @ theta)
    assert_within(mean, se, target, "Gibbs-law covariance estimate")
    assert_resolves(mean, se, -target, "Gibbs-law covariance estimate (sign)")


def test_covariance_on_ula_stationary_law_has_explicit_bias():
    """x ~ N(theta, S_ULA) with S = A S A^T + 2 gamma I, A = I - gamma P (gamma = 0.1):
    E[estimate] = -P S (a + 2 Q theta); the O(gamma) gap to -(a + 2 Q theta) is resolved."""
    p, theta, a, q = quadratic_problem(d=3, seed=2)
    gamma = 0.1
    pot = quad_potential(theta, p)
    mu, s = pot.ula_stationary(gamma)
    eye = torch.eye(3, dtype=F64)
    amat = eye - gamma * p
    assert torch.equal(mu, theta)
    torch.testing.assert_close(amat @ s @ amat.T + 2 * gamma * eye, s, rtol=1e-12, atol=1e-12)
    xs = gaussian_batches(theta, s, r=200, n=2000, g=gen(12))
    mean, se = mean_and_se(covariance_estimates(pot, Objective(QuadraticReward(a, q)), xs))
    assert_within(mean, se, -p @ s @ (a + 2 * q @ theta), "ULA-law covariance estimate")
    assert_resolves(mean, se, -(a + 2 * q @ theta), "ULA-law covariance estimate vs Gibbs law")


def test_covariance_on_langevin_samples_matches_ula_closed_form():
    """Samples from running LangevinSampler (gamma = 0.1, 300 steps from N(0, I), so
    the start is forgotten to ~1e-7): E[estimate] = -P S_ULA (a + 2 Q theta)."""
    p, theta, a, q = quadratic_problem(d=3, seed=2)
    gamma, r, n, steps = 0.1, 200, 1000, 300
    pot = quad_potential(theta, p)
    eye = torch.eye(3, dtype=F64)
    # the chain's transient decays like rho(A)^k; make sure 300 steps are enough
    rho = torch.linalg.eigvalsh(eye - gamma * p).abs().max().item()
    assert rho**steps < 1e-6
    sampler = LangevinSampler(pot, gamma, num_steps=steps)
    with torch.no_grad():
        xs = sampler.sample(r * n, generator=gen(13)).reshape(r, n, 3)
    mean, se = mean_and_se(covariance_estimates(pot, Objective(QuadraticReward(a, q)), xs))
    _, s = pot.ula_stationary(gamma)
    assert_within(mean, se, -p @ s @ (a + 2 * q @ theta), "Langevin-sample covariance estimate")
    assert_resolves(mean, se, -(a + 2 * q @ theta), "Langevin-sample estimate vs Gibbs law")


# --------------------------------------------------------------------------- 3, 4


def mixture_energy(centres: torch.Tensor, sigma: float):
    """V(x, logits) = -log sum_i softmax(logits)_i exp(-|x - c_i|^2 / (2 sigma^2)),
    written with plain autograd ops (no closed-form derivatives)."""

    def fn(x, logits):
        sq = ((x[:, None, :] - centres) ** 2).sum(-1)
        return -torch.logsumexp(torch.log_softmax(logits, 0) - sq / (2 * sigma**2), 1)

    return fn


def quadratic_energy(p: torch.Tensor):
    def fn(x, theta):
        y = x - theta
        return 0.5 * ((y @ p) * y).sum(1)

    return fn


def mixture_pair(sigma: float, seed: int):
    """The closed-form mixture and the same energy through FunctionPotential (autograd)."""
    centres = build64(hex_centres)
    logits = torch.randn(6, generator=gen(seed), dtype=F64)
    closed = build64(GaussianMixturePotential, centres, logits, sigma=sigma)
    auto = build64(FunctionPotential, mixture_energy(centres, sigma), logits, dim=2)
    assert torch.equal(closed.logits.detach(), auto.theta.detach())
    return closed, auto


def quadratic_pair(seed: int):
    p, theta, _, _ = quadratic_problem(d=3, seed=seed)
    auto = build64(FunctionPotential, quadratic_energy(p), theta, dim=3)
    return quad_potential(theta, p), auto


def points(pot, n: int, seed: int) -> torch.Tensor:
    scale = 3.0 if isinstance(pot, GaussianMixturePotential) else 1.5
    return scale * torch.randn(n, pot.dim, generator=gen(seed), dtype=F64)


PAIRS = {
    "mixture-sigma1": lambda: mixture_pair(1.0, seed=3),
    "mixture-sigma0.7": lambda: mixture_pair(0.7, seed=4),
    "quadratic": lambda: quadratic_pair(seed=5),
}
TIGHT = {"rtol": 1e-11, "atol": 1e-12}


@pytest.mark.parametrize("kind", list(PAIRS))
def test_closed_form_derivatives_match_autograd(kind):
    """Overridden grad_x and param_vjp (sum_i w_i grad_theta V(x_i)) equal autograd on the
    same energy, with and without grad mode (the mixture caches its bias under no_grad)
    and after an in-place parameter step."""
    closed, auto = PAIRS[kind]()
    x = points(closed, 257, seed=21)
    w = torch.randn(257, generator=gen(22), dtype=F64)
    for step in range(2):
        for grad_mode in (False, True):
            with torch.set_grad_enabled(grad_mode):
                torch.testing.assert_close(closed(x), auto(x), **TIGHT)
                torch.testing.assert_close(closed.grad_x(x), auto.grad_x(x), **TIGHT)
                (vjp_closed,) = closed.param_vjp(x, w)
                (vjp_auto,) = auto.param_vjp(x, w)
                torch.testing.assert_close(vjp_closed.detach(), vjp_auto, **TIGHT)
        # the same in-place step on both (as ImplicitDiffusion's SGD update does)
        (theta_closed,) = [prm for prm in closed.parameters() if prm.requires_grad]
        delta = 0.3 * torch.randn(theta_closed.shape, generator=gen(23 + step), dtype=F64)
        with torch.no_grad():
            theta_closed.sub_(delta)
            auto.theta.sub_(delta)


@pytest.mark.parametrize("kind", list(PAIRS))
def test_closed_form_grad_x_is_differentiable_like_autograd(kind):
    """The unrolled estimator differentiates grad_x(x, create_graph=True) in x and theta:
    the closed-form grad_x has the same first derivatives (Hessian-vector products)."""
    closed, auto = PAIRS[kind]()
    x = points(closed, 64, seed=24)
    v = torch.randn(x.shape, generator=gen(25), dtype=F64)
    derivs = []
    for pot in (closed, auto):
        xg = x.clone().requires_grad_(True)
        gx = pot.grad_x(xg, create_graph=True)
        (theta,) = [prm for prm in pot.parameters() if prm.requires_grad]
        derivs.append(torch.autograd.grad((gx * v).sum(), [xg, theta]))
    for dc, da in zip(*derivs, strict=True):
        torch.testing.assert_close(dc, da, **TIGHT)


def surrogate_grads(estimator, sampler, objective, x, x_ref):
    sampler.zero_grad(set_to_none=True)
    estimator.loss(sampler, objective, samples=x, reference_samples=x_ref).backward()
    return [prm.grad.clone() for prm in sampler.parameters() if prm.requires_grad]


SURROGATE_POTENTIALS = {
    "quadratic": lambda: quadratic_pair(seed=6),
    "mixture": lambda: mixture_pair(1.0, seed=7),
}


@pytest.mark.parametrize("kl", [None, "forward", "reverse"])
@pytest.mark.parametrize("kind", list(SURROGATE_POTENTIALS))
def test_surrogate_loss_backward_equals_gradient(kind, kl):
    """loss(samples=x).backward() leaves exactly gradient(x) in .grad — for the closed-form
    potential and for FunctionPotential (autograd param_vjp), with and without KL terms;
    both potentials of a pair (same energy) give the same estimate."""
    closed, auto = SURROGATE_POTENTIALS[kind]()
    x = points(closed, 300, seed=31)
    x_ref = points(closed, 200, seed=32) + 0.5
    reward = build64(HexReward) if kind == "mixture" else lambda x: (x**2).sum(1) + x[:, 0]
    results = []
    for pot in (closed, auto):
        if kl is None:
            objective = Objective(reward)
        else:
            # reference: the same energy at other parameters (not a pure logit shift,
            # which would leave the mixture unchanged)
            reference = copy.deepcopy(pot)
            with torch.no_grad():
                for prm in reference.parameters():
                    prm.add_(torch.linspace(-0.5, 1.0, prm.numel(), dtype=F64))
            objective = Objective(reward, lam=0.8, divergence=GibbsKL(reference, kl))
        ref = x_ref if kl == "reverse" else None
        est = CovarianceEstimator()
        with torch.no_grad():
            direct = est.gradient(pot, objective, x, reference_samples=ref)
        surrogate = surrogate_grads(est, LangevinSampler(pot, 0.1), objective, x, ref)
        assert len(direct) == len(surrogate) == 1
        torch.testing.assert_close(surrogate[0], direct[0], **TIGHT)
        assert direct[0].abs().max() > 1e-3  # a non-trivial estimate
        results.append(direct[0])
    torch.testing.assert_close(results[0], results[1], **TIGHT)


# --------------------------------------------------------------------------- 5


@pytest.mark.parametrize("same_precision", [True, False])
def test_forward_kl_covariance_estimate_closed_form(same_precision):
    """Forward KL, r = 0, x ~ N(theta, S_ULA): the estimate Cov(lam (V_theta - V_ref),
    grad_theta V_theta) has mean lam P S P_ref (theta - theta_ref); for P_ref = P this is
    lam P S P (theta - theta_ref). Also with the reward on: -P S (a + 2 Q theta) is added."""
    p, theta, a, q = quadratic_problem(d=3, seed=8)
    theta_ref = theta + torch.tensor([1.0, -2.0, 0.5], dtype=F64)
    p_ref = p if same_precision else (p + 0.3 * torch.eye(3, dtype=F64))
    lam = 0.7
    pot = quad_potential(theta, p)
    reference = quad_potential(theta_ref, p_ref)
    _, s = pot.ula_stationary(0.1)
    xs = gaussian_batches(theta, s, r=200, n=500, g=gen(41))
    zero = lambda x: torch.zeros(x.shape[0], dtype=x.dtype)  # noqa: E731
    kl_target = lam * p @ s @ p_ref @ (theta - theta_ref)
    objective = Objective(zero, lam=lam, divergence=GibbsKL(reference, "forward"))
    estimates = covariance_estimates(pot, objective, xs)
    if same_precision:
        # V_theta - V_ref is linear in x: per batch the estimate is exactly
        # lam P S_hat P (theta - theta_ref), S_hat the unbiased sample covariance
        for x, e in zip(xs[:5], estimates[:5], strict=True):
            s_hat = torch.cov(x.T)
            expected = lam * p @ s_hat @ p @ (theta - theta_ref)
            torch.testing.assert_close(e, expected, rtol=1e-10, atol=1e-12)
    mean, se = mean_and_se(estimates)
    assert_within(mean, se, kl_target, "forward-KL estimate")
    assert_resolves(mean, se, -kl_target, "forward-KL estimate (sign)")
    if not same_precision:
        objective = Objective(
            QuadraticReward(a, q), lam=lam, divergence=GibbsKL(reference, "forward")
        )
        mean, se = mean_and_se(covariance_estimates(pot, objective, xs))
        target = kl_target - p @ s @ (a + 2 * q @ theta)
        assert_within(mean, se, target, "reward + forward-KL estimate")
        assert_resolves(mean, se, kl_target + p @ s @ (a + 2 * q @ theta), "reward sign")


def test_reverse_kl_covariance_estimate_closed_form():
    """Reverse KL, r = 0, x ~ N(theta, S), x_ref ~ N(theta_ref, S): the estimate
    lam (mean_ref grad V_theta - mean grad V_theta) = lam P (xbar - xbar_ref) has mean
    lam P (theta - theta_ref) (the sign the official code gets wrong)."""
    p, theta, _, _ = quadratic_problem(d=3, seed=9)
    theta_ref = theta + torch.tensor([-1.5, 1.0, 0.75], dtype=F64)
    lam = 0.7
    pot = quad_potential(theta, p)
    _, s = pot.ula_stationary(0.1)
    xs = gaussian_batches(theta, s, r=200, n=500, g=gen(51))
    refs = gaussian_batches(theta_ref, s, r=200, n=400, g=gen(52))
    zero = lambda x: torch.zeros(x.shape[0], dtype=x.dtype)  # noqa: E731
    objective = Objective(
        zero, lam=lam, divergence=GibbsKL(quad_potential(theta_ref, p), "reverse")
    )
    estimates = covariance_estimates(pot, objective, xs, refs)
    # per batch it is exactly lam P (xbar - xbar_ref)
    torch.testing.assert_close(
        estimates, lam * (xs.mean(1) - refs.mean(1)) @ p, rtol=1e-10, atol=1e-12
    )
    mean, se = mean_and_se(estimates)
    target = lam * p @ (theta - theta_ref)
    assert_within(mean, se, target, "reverse-KL estimate")
    assert_resolves(mean, se, -target, "reverse-KL estimate (sign)")


# --------------------------------------------------------------------------- 6


def unrolled_loss_fn(sampler, objective, n: int, seed: int):
    """theta -> unrolled loss with common random numbers (the same seed every call)."""
    (theta,) = [prm for prm in sampler.parameters() if prm.requires_grad]

    def loss(value: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            theta.copy_(value)
        return UnrolledEstimator().loss(sampler, objective, n=n, generator=gen(seed))

    return theta, loss


def central_differences(loss, theta0: torch.Tensor, eps: float) -> torch.Tensor:
    out = torch.empty_like(theta0)
    with torch.no_grad():
        for i in range(theta0.numel()):
            e = torch.zeros_like(theta0)
            e[i] = eps
            out[i] = (loss(theta0 + e) - loss(theta0 - e)) / (2 * eps)
    return out


UNROLLED_POTENTIALS = {
    "function-mixture": lambda logits: build64(
        FunctionPotential, mixture_energy(build64(hex_centres), 1.0), logits, dim=2
    ),
    "closed-mixture": lambda logits: build64(
        GaussianMixturePotential, build64(hex_centres), logits
    ),
}


@pytest.mark.parametrize("lam", [0.0, 0.5])
@pytest.mark.parametrize("kind", list(UNROLLED_POTENTIALS))
def test_unrolled_gradient_matches_finite_differences(kind, lam):
    """With fixed seeds the unrolled loss is a smooth deterministic function of theta
    (K = 20 Langevin steps on a mixture energy, smooth hex reward, and with lam > 0 the
    path KL to a reference chain): its autograd gradient equals central differences
    (eps = 1e-5; truncation O(eps^2) ~ 1e-10, rounding O(1e-16 / eps) ~ 1e-11)."""
    logits0 = torch.randn(6, generator=gen(61), dtype=F64)
    pot = UNROLLED_POTENTIALS[kind](logits0)
    sampler = LangevinSampler(pot, 0.1, num_steps=20, init_scale=2.0)
    reward = build64(HexReward, smooth=True)
    reference = UNROLLED_POTENTIALS[kind](torch.linspace(-1, 1, 6, dtype=F64))
    # the path KL to the same Langevin chain on the reference potential
    objective = Objective(reward, lam=lam, divergence=PathKL(sampler.with_potential(reference)))
    theta, loss = unrolled_loss_fn(sampler, objective, n=64, seed=62)
    base = loss(logits0)
    assert torch.equal(loss(logits0), base)  # common random numbers: deterministic
    pot.zero_grad(set_to_none=True)
    base.backward()
    grad = theta.grad.clone()
    fd = central_differences(loss, logits0, eps=1e-5)
    assert grad.abs().max() > 1e-3
    torch.testing.assert_close(grad, fd, rtol=1e-7, atol=1e-9 * grad.abs().max().item())
    if lam > 0:
        # the path-KL term contributes: the gradient differs from the reward-only one
        objective0 = Objective(reward)
        _, loss0 = unrolled_loss_fn(sampler, objective0, n=64, seed=62)
        pot.zero_grad(set_to_none=True)
        loss0(logits0).backward()
        assert (theta.grad - grad).abs().max() > 1e-3


def test_unrolled_path_kl_on_quadratic_is_exact():
    """Quadratic V with the same P as the reference: m_theta(x) - m_ref(x) =
    gamma P (theta - theta_ref) for every x, so the path KL sum_k |m - m_ref|^2 / (2 s^2)
    with s^2 = 2 gamma is K gamma |P (theta - theta_ref)|^2 / 4 for every seed, and its
    gradient is lam K gamma P^T P (theta - theta_ref) / 2."""
    p, theta, _, _ = quadratic_problem(d=3, seed=10)
    theta_ref = theta + torch.tensor([0.5, -1.0, 2.0], dtype=F64)
    gamma, k, lam = 0.1, 7, 0.3
    pot = quad_potential(theta, p)
    sampler = LangevinSampler(pot, gamma, num_steps=k)
    # a reward that is identically 0 but carries a graph (the estimator requires one)
    objective = Objective(
        lambda x: 0.0 * x.sum(1),
        lam=lam,
        divergence=PathKL(sampler.with_potential(quad_potential(theta_ref, p))),
    )
    delta = theta - theta_ref
    for seed in range(3):
        pot.zero_grad(set_to_none=True)
        loss = UnrolledEstimator().loss(sampler, objective, n=40, generator=gen(seed))
        loss.backward()
        torch.testing.assert_close(
            loss.detach(), lam * k * gamma * (p @ delta).pow(2).sum() / 4, rtol=1e-12, atol=0.0
        )
        torch.testing.assert_close(
            pot.theta.grad, lam * k * gamma * p.T @ p @ delta / 2, rtol=1e-12, atol=1e-14
        )


def test_unrolled_linear_reward_on_quadratic_is_exact():
    """Quadratic V, r = a^T x: x_K = A^K x_0 + (I - A^K) theta + noise (A = I - gamma P),
    so every seed's unrolled gradient is exactly -(I - A^K)^T a (zero variance)."""
    p, theta, a, _ = quadratic_problem(d=3, seed=10)
    gamma, k = 0.1, 10
    pot = quad_potential(theta, p)
    sampler = LangevinSampler(pot, gamma, num_steps=k)
    amat_k = torch.linalg.matrix_power(torch.eye(3, dtype=F64) - gamma * p, k)
    target = -(torch.eye(3, dtype=F64) - amat_k).T @ a
    for seed in range(3):
        pot.zero_grad(set_to_none=True)
        UnrolledEstimator().loss(
            sampler, Objective(lambda x: x @ a), n=50, generator=gen(seed)
        ).backward()
        torch.testing.assert_close(pot.theta.grad, target, rtol=1e-12, atol=1e-13)


def test_unrolled_quadratic_reward_on_quadratic_matches_closed_form():
    """Quadratic V, r = a^T x + x^T Q x, x_0 ~ N(0, I): E[x_K] = m_K = (I - A^K) theta and
    Cov(x_K) does not depend on theta, so grad(-E r(x_K)) = -(I - A^K)^T (a + 2 Q m_K);
    the mean of the unrolled gradient over 200 seeds is within 4 SE of it."""
    p, theta, a, q = quadratic_problem(d=3, seed=10)
    gamma, k, r = 0.1, 10, 200
    pot = quad_potential(theta, p)
    sampler = LangevinSampler(pot, gamma, num_steps=k)
    objective = Objective(QuadraticReward(a, q))
    grads = []
    for seed in range(r):
        pot.zero_grad(set_to_none=True)
        UnrolledEstimator().loss(sampler, objective, n=100, generator=gen(1000 + seed)).backward()
        grads.append(pot.theta.grad.clone())
    mean, se = mean_and_se(torch.stack(grads))
    eye = torch.eye(3, dtype=F64)
    b = eye - torch.linalg.matrix_power(eye - gamma * p, k)
    target = -b.T @ (a + 2 * q @ b @ theta)
    assert_within(mean, se, target, "unrolled gradient")
    # the stationary-law answer -(a + 2 Q theta) is a different quantity: resolved
    assert_resolves(mean, se, -(a + 2 * q @ theta), "unrolled (finite K) vs stationary")


@pytest.mark.parametrize("kind", ["quadratic", "mixture", "function"])
def test_grad_x_and_param_vjp_equals_the_separate_derivatives(kind):
    """The shared evaluation used by Implicit Diffusion's parallel update gives exactly
    grad_x and param_vjp (closed-form overrides and the autograd default)."""
    g = torch.Generator().manual_seed(7)
    x = 2 * torch.randn(40, 2, generator=g, dtype=torch.float64)
    w = torch.randn(40, generator=g, dtype=torch.float64)
    if kind == "quadratic":
        pot = QuadraticPotential(
            torch.tensor([0.3, -0.2], dtype=torch.float64),
            torch.tensor([[2.0, 0.3], [0.3, 1.0]], dtype=torch.float64),
        )
    elif kind == "mixture":
        pot = GaussianMixturePotential(
            hex_centres().double(), torch.randn(6, generator=g, dtype=torch.float64), sigma=0.8
        )
    else:
        pot = FunctionPotential(
            lambda x, th: ((x - th) ** 4).sum(1),
            torch.tensor([0.1, 0.2], dtype=torch.float64),
            dim=2,
        )
    gx, grads = pot.grad_x_and_param_vjp(x, w)
    torch.testing.assert_close(gx, pot.grad_x(x), rtol=1e-12, atol=1e-12)
    for a, b in zip(grads, pot.param_vjp(x, w), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
