"""Diffusion samplers against closed forms (methods.md 2).

With the exact eps-predictor of Gaussian data N(mu, Sigma),
eps(x, t) = s_t M_t (x - a_t mu), M_t = (a_t^2 Sigma + s_t^2 I)^{-1}, every sampler
step is affine, x_s = P x_t + q + sigma xi, so the output law is Gaussian with
moments given by m' = P m + q, S' = P S P^T + sigma^2 I from x_0 ~ N(0, I). The
coefficients P, q, sigma are derived here by hand from each sampler's published
update (not read from the implementation), and the sampled output's mean and
covariance must match them within 4 standard errors.
"""

from __future__ import annotations

import math

import pytest
import torch

from sampleopt.diffusion import (
    CosineSchedule,
    ExactGaussianDenoiser,
    LearnableCosineSchedule,
    LinearSchedule,
    convert,
)
from sampleopt.errors import UsageError
from sampleopt.samplers import (
    DDIMSampler,
    DDPMSampler,
    ProbabilityFlowSampler,
    ReverseSDESampler,
    respaced_timesteps,
)

F64 = torch.float64
MU = torch.tensor([1.0, -2.0, 0.5], dtype=F64)
_R = torch.tensor([[1.0, 0.3, 0.0], [0.3, 0.8, -0.2], [0.0, -0.2, 0.5]], dtype=F64)
SIGMA = _R @ _R.T + 0.1 * torch.eye(3, dtype=F64)
Z = 4.0


def exact_denoiser(schedule, prediction="eps"):
    den = ExactGaussianDenoiser(MU.float(), SIGMA.float(), schedule, prediction).double()
    den.mean.data = MU.clone()
    evals, evecs = torch.linalg.eigh(SIGMA)
    den.evals.data, den.evecs.data = evals, evecs
    return den


def coefficients(kind, ab, t, s, **kw):
    """(P, q, sigma) of one step t -> s for the exact Gaussian eps, by hand."""
    eye = torch.eye(3, dtype=F64)
    ab_t, ab_s = ab[t], ab[s]
    a_t, s_t, a_s = ab_t.sqrt(), (1 - ab_t).sqrt(), ab_s.sqrt()
    M = torch.linalg.inv(ab_t * SIGMA + (1 - ab_t) * eye)
    if kind == "ddpm":  # m = (x - beta/s_t eps) / sqrt(1 - beta)
        beta = 1 - ab_t / ab_s
        P = (eye - beta * M) / (1 - beta).sqrt()
        q = beta * a_t * M @ MU / (1 - beta).sqrt()
        if kw.get("variance") == "beta":  # beta, none on the final step (Ho et al. Alg. 2)
            sigma = beta.sqrt() if s > 0 else torch.zeros((), dtype=F64)
        else:
            sigma = (beta * (1 - ab_s) / (1 - ab_t)).sqrt()
        return P, q, sigma
    if kind == "ddim":  # m = a_s x0hat + sqrt(1 - ab_s - sigma^2) eps
        eta = kw["eta"]
        sigma = eta * ((1 - ab_s) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_s).sqrt()
        c = (1 - ab_s - sigma**2).sqrt()
        P = (a_s / a_t) * (eye - s_t**2 * M) + c * s_t * M
        q = (a_s * s_t**2 - c * s_t * a_t) * M @ MU
        return P, q, sigma
    B = torch.log(ab_s / ab_t)
    if kind == "sde":  # m = (1 + B/2) x + B score
        return (1 + B / 2) * eye - B * M, B * a_t * M @ MU, B.sqrt()
    # probability-flow ODE: dx/dB = x/2 + score/2 = D x + e
    D_t, e_t = eye / 2 - M / 2, a_t * M @ MU / 2
    if kw["method"] == "euler" or s == 0:
        return eye + B * D_t, B * e_t, torch.zeros((), dtype=F64)
    M_s = torch.linalg.inv(ab_s * SIGMA + (1 - ab_s) * eye)
    D_s, e_s = eye / 2 - M_s / 2, a_s * M_s @ MU / 2
    P = eye + B / 2 * (D_t + D_s @ (eye + B * D_t))
    q = B / 2 * (e_t + D_s @ (B * e_t) + e_s)
    return P, q, torch.zeros((), dtype=F64)


def closed_form_law(kind, schedule, timesteps, **kw):
    ab = schedule.alphabar().detach().double()
    m, S = torch.zeros(3, dtype=F64), torch.eye(3, dtype=F64)
    for t, s in zip(timesteps, timesteps[1:], strict=False):
        P, q, sigma = coefficients(kind, ab, t, s, **kw)
        m, S = P @ m + q, P @ S @ P.T + sigma**2 * torch.eye(3, dtype=F64)
    return m, S


CASES = [
    ("ddpm", DDPMSampler, {}),
    ("ddpm", DDPMSampler, {"variance": "beta"}),
    ("ddim", DDIMSampler, {"eta": 0.0}),
    ("ddim", DDIMSampler, {"eta": 0.5}),
    ("ddim", DDIMSampler, {"eta": 1.0}),
    ("sde", ReverseSDESampler, {}),
    ("ode", ProbabilityFlowSampler, {"method": "euler"}),
    ("ode", ProbabilityFlowSampler, {"method": "heun"}),
]


@pytest.mark.parametrize("schedule_cls", [LinearSchedule, CosineSchedule])
@pytest.mark.parametrize("kind, cls, kw", CASES)
def test_sampler_moments_match_closed_form_recursion(kind, cls, kw, schedule_cls):
    schedule = schedule_cls(1000).double()
    sampler = cls(exact_denoiser(schedule), schedule, 20, data_shape=(3,), **kw)
    n = 40000
    with torch.no_grad():
        x = sampler.sample(n, generator=torch.Generator().manual_seed(0))
    m, S = closed_form_law(kind, schedule, sampler.timesteps, **kw)
    se_mean = (S.diagonal() / n).sqrt()
    assert ((x.mean(0) - m).abs() <= Z * se_mean).all(), (x.mean(0), m)
    cov = torch.cov(x.T)
    se_cov = ((S.diagonal()[:, None] * S.diagonal()[None, :] + S**2) / n).sqrt()
    assert ((cov - S).abs() <= Z * se_cov).all(), (cov, S)


@pytest.mark.parametrize(
    "kind, kw",
    [
        ("ddpm", {}),
        ("sde", {}),
        ("ddim", {"eta": 0.0}),
        ("ode", {"method": "euler"}),
        ("ode", {"method": "heun"}),
    ],
)
def test_closed_form_law_approaches_the_data_law(kind, kw):
    """The recursion is the right sampler: its output law tends to the data law
    N(mu, Sigma) as K grows (deterministic). The error in mean and covariance shrinks
    from K = 50 to 200 to 1000 and is below 1% of the data's scale at K = 1000."""
    schedule = CosineSchedule(1000).double()
    scale = max(float(MU.abs().max()), float(SIGMA.abs().max()))
    errors = []
    for steps in (50, 200, 1000):
        m, S = closed_form_law(kind, schedule, respaced_timesteps(1000, steps), **kw)
        errors.append(max(float((m - MU).abs().max()), float((S - SIGMA).abs().max())) / scale)
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.01, errors


@pytest.mark.parametrize("prediction", ["x0", "v", "score"])
def test_other_parameterisations_give_the_same_sampler(prediction):
    schedule = LinearSchedule(1000).double()
    x0 = torch.randn(64, 3, dtype=F64, generator=torch.Generator().manual_seed(3))
    outs = []
    for pred in ("eps", prediction):
        sampler = DDIMSampler(
            exact_denoiser(schedule, pred), schedule, 10, data_shape=(3,), eta=0.3
        )
        with torch.no_grad():
            outs.append(sampler.sample(64, x0=x0, generator=torch.Generator().manual_seed(1)))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-9, atol=1e-9)


def test_conversions_round_trip():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 3, generator=g, dtype=F64), torch.randn(5, 3, generator=g, dtype=F64)
    a, s = math.sqrt(0.3), math.sqrt(0.7)
    xt = a * x0 + s * eps
    truth = {"eps": eps, "x0": x0, "v": a * eps - s * x0, "score": -eps / s}
    for src, value in truth.items():
        for dst, expected in truth.items():
            torch.testing.assert_close(convert(value, src, dst, xt, a, s), expected)


@pytest.mark.parametrize(
    "cls, kw",
    [
        (DDIMSampler, {"eta": 0.0}),
        (ProbabilityFlowSampler, {"method": "heun"}),
        (ProbabilityFlowSampler, {"method": "euler"}),
    ],
)
def test_deterministic_samplers_ignore_the_noise(cls, kw):
    schedule = CosineSchedule(1000).double()
    sampler = cls(exact_denoiser(schedule), schedule, 15, data_shape=(3,), **kw)
    x0 = torch.randn(32, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = sampler.sample(32, x0=x0, generator=torch.Generator().manual_seed(1))
        b = sampler.sample(32, x0=x0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    stochastic = DDIMSampler(exact_denoiser(schedule), schedule, 15, data_shape=(3,), eta=0.5)
    with torch.no_grad():
        c = stochastic.sample(32, x0=x0, generator=torch.Generator().manual_seed(1))
        d = stochastic.sample(32, x0=x0, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(c, d)


def test_learnable_schedule_has_gradients_and_reduces_to_cosine():
    sched = LearnableCosineSchedule(100, start=0.1, end=0.9, tau=1.5, eps=0.05).double()
    ab = sched.alphabar()
    assert ab[0] == 1 and bool((ab[1:] < ab[:-1]).all())
    ab.sum().backward()
    for name in ("start", "end", "tau", "eps"):
        g = getattr(sched, name).grad
        assert g is not None and g != 0, name
    torch.testing.assert_close(
        LearnableCosineSchedule(1000).double().alphabar().detach(),
        CosineSchedule(1000).double().alphabar(),
    )


def test_learnable_schedule_clamps():
    sched = LearnableCosineSchedule(50, start=-0.5, end=2.0, tau=0.2, eps=3.0).double()
    start, end, tau, eps = sched.clamped()
    assert [float(v.detach()) for v in (start, end, tau, eps)] == [0.0, 1.0, 1.0, 1.0]
    sched.alphabar().sum().backward()  # gradients are zero outside the box
    assert all(float(getattr(sched, p).grad) == 0 for p in ("start", "end", "tau", "eps"))
    ab = LearnableCosineSchedule(50, start=0.6, end=0.2).double().alphabar()
    assert torch.allclose(ab, torch.ones_like(ab))  # end clamped to start: no noise at all


def test_sampler_output_is_differentiable_in_a_learnable_schedule():
    schedule = LearnableCosineSchedule(100, end=0.95).double()
    den = exact_denoiser(schedule)
    sampler = DDPMSampler(den, schedule, 10, data_shape=(3,))
    x = sampler.sample(16, generator=torch.Generator().manual_seed(0))
    (x**2).mean().backward()
    assert all(getattr(schedule, p).grad is not None for p in ("start", "end", "tau", "eps"))
    assert den.mean.grad is not None and bool(den.mean.grad.abs().sum() > 0)


def test_respacing():
    assert respaced_timesteps(1000, 4) == [751, 501, 251, 1, 0]
    assert respaced_timesteps(10, 10) == list(range(10, -1, -1))
    assert respaced_timesteps(1000, 3) == [668, 334, 1, 0]
    with pytest.raises(UsageError, match="num_steps must be an integer in 1 .. 10"):
        respaced_timesteps(10, 11)


def test_bad_sampler_input():
    schedule = LinearSchedule(100)
    den = ExactGaussianDenoiser(torch.zeros(3), torch.eye(3), schedule)
    with pytest.raises(UsageError, match=r"timesteps must decrease strictly"):
        DDPMSampler(den, schedule, data_shape=(3,), timesteps=[100, 100, 0])
    with pytest.raises(UsageError, match="eta must be a number in"):
        DDIMSampler(den, schedule, 10, data_shape=(3,), eta=2.0)
    sampler = DDPMSampler(den, schedule, 10, data_shape=(3,))
    with pytest.raises(UsageError, match=r"expects x of shape \(n, 3\), got \(4, 2\)"):
        sampler.step(torch.zeros(4, 2), 0, torch.zeros(4, 2))
    with pytest.raises(UsageError, match="unknown prediction type"):
        convert(torch.zeros(1), "noise", "eps", torch.zeros(1), 1.0, 0.0)
