"""Guided sampling with every sampler, targets from gradients, Algorithms 1 and 2, and
bad input (docs/guidance.md)."""

from __future__ import annotations

import pytest
import torch

import sampleopt as so
from sampleopt.data import SubspaceGaussian
from sampleopt.diffusion.denoisers import ExactGaussianDenoiser
from sampleopt.diffusion.schedules import CosineSchedule
from sampleopt.errors import NonFiniteError, UsageError
from sampleopt.guidance import (
    GuidedDenoiser,
    LookAheadGuidance,
    NaiveGuidance,
    ZerothOrderGradient,
    guidance_targets,
)
from sampleopt.models import TimeMLP
from tests.float64 import F64

T = 100


def samplers(denoiser, schedule, shape):
    yield so.DDPMSampler(denoiser, schedule, 10, data_shape=shape)
    yield so.DDPMSampler(denoiser, schedule, 10, data_shape=shape, variance="beta")
    yield so.DDIMSampler(denoiser, schedule, 10, data_shape=shape, eta=0.0)
    yield so.DDIMSampler(denoiser, schedule, 10, data_shape=shape, eta=0.5)
    yield so.ReverseSDESampler(denoiser, schedule, 10, data_shape=shape)
    yield so.ProbabilityFlowSampler(denoiser, schedule, 10, data_shape=shape)
    yield so.ProbabilityFlowSampler(denoiser, schedule, 10, data_shape=shape, method="heun")


def run(sampler, n=6, seed=0):
    with torch.no_grad():
        return sampler.sample(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("cls", [NaiveGuidance, LookAheadGuidance])
def test_strength_zero_is_bit_identical_with_every_sampler(cls, prediction):
    torch.manual_seed(0)
    schedule = CosineSchedule(T)
    net = TimeMLP(4, T, hidden=16, depth=2, prediction=prediction)
    guidance = cls(strength=0.0).set_target(torch.ones(6, 4), torch.ones(6))
    guided = GuidedDenoiser(net, schedule, guidance)
    for base, steered in zip(
        samplers(net, schedule, (4,)), samplers(guided, schedule, (4,)), strict=True
    ):
        assert torch.equal(run(base), run(steered)), type(base).__name__
    guidance.strength = 1.0  # and a nonzero strength does steer
    assert not torch.equal(
        run(so.DDPMSampler(net, schedule, 10, data_shape=(4,))),
        run(so.DDPMSampler(guided, schedule, 10, data_shape=(4,))),
    )


def test_guidance_runs_through_the_diffusers_adapter():
    diffusers = pytest.importorskip("diffusers")
    from sampleopt.models.diffusers_adapter import sampler_from_diffusers

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()
    base = sampler_from_diffusers(
        unet, diffusers.DDPMScheduler(num_train_timesteps=50, clip_sample=False), 5
    )
    n = 3
    g = torch.randn(n, 1, 8, 8)
    y = torch.full((n,), 2.0)
    for cls in (NaiveGuidance, LookAheadGuidance):
        guided_den = GuidedDenoiser(base.denoiser, base.schedule, cls(strength=0.0))
        guided = sampler_from_diffusers(
            unet, diffusers.DDPMScheduler(num_train_timesteps=50, clip_sample=False), 5
        )
        guided.denoiser = guided_den.requires_grad_(False)
        guided_den.guidance.set_target(g, y)
        assert torch.equal(run(base, n), run(guided, n))
        guided_den.guidance.strength = 1.0
        x = run(guided, n)
        assert x.shape == (n, 1, 8, 8) and bool(torch.isfinite(x).all())
        assert not torch.equal(x, run(base, n))


def quadratic(h, c):
    return lambda x: -(((x - c) @ h) * (x - c)).sum(1)


def test_zeroth_order_gradient_is_unbiased_for_a_quadratic():
    """For a quadratic f the central difference is exact, so the estimate is the mean of
    (grad f . u) u: within 4 standard errors of the autograd gradient per coordinate."""
    d = 5
    gen = torch.Generator().manual_seed(0)
    m = torch.randn(d, d, generator=gen, dtype=F64)
    f = quadratic(m @ m.T + torch.eye(d, dtype=F64), torch.randn(d, generator=gen, dtype=F64))
    z = torch.randn(3, d, generator=gen, dtype=F64)
    exact, _, _ = guidance_targets(f, z, 0.0)
    draws = torch.stack(
        [
            guidance_targets(f, z, 0.0, ZerothOrderGradient(directions=1, mu=0.1), gen)[0]
            for _ in range(4000)
        ]
    )
    se = draws.std(0) / 4000**0.5
    assert bool(((draws.mean(0) - exact).abs() < 4 * se).all())
    g, y, v = guidance_targets(f, z, 0.25, ZerothOrderGradient(directions=64), gen)
    torch.testing.assert_close(y, (g * z).sum(1) + 0.25)
    torch.testing.assert_close(v, f(z))


def subspace_problem(adapt_from=None, seed=0):
    sub = SubspaceGaussian(8, 2, seed=1, dtype=F64)
    schedule = CosineSchedule(T).double()
    den = ExactGaussianDenoiser(sub.mean, sub.covariance, schedule)
    theta = sub.A[:, 0]
    guided = GuidedDenoiser(den, schedule, LookAheadGuidance())
    sampler = so.DDPMSampler(guided, schedule, 20, data_shape=(8,))
    alg = so.GuidedOptimization(
        sampler,
        lambda x: 10 - (x @ theta - 3) ** 2,
        delta=0.3,
        batch_size=64,
        adapt_from=adapt_from,
        adapt_lr=1e-2,
        seed=seed,
    )
    return alg, den


def test_algorithm_1_improves_f_and_leaves_the_model_unchanged():
    alg, den = subspace_problem()
    before = [p.detach().clone() for p in den.parameters()]
    alg.start()
    f0, se0 = alg.values.mean(), alg.values.std() / 8
    hist = alg.run(25)
    f10, se10 = alg.values.mean(), alg.values.std() / 8
    assert float(f10 - f0) > 4 * float((se0**2 + se10**2) ** 0.5)
    assert all(torch.equal(a, b) for a, b in zip(before, den.parameters(), strict=True))
    assert hist.step.tolist() == list(range(1, 26))
    assert int(hist.network_evals[-1]) == 26 * 20 * 64  # z_0 and 25 guided runs


def test_algorithm_2_adapts_the_model_and_resumes_bit_identically():
    alg, den = subspace_problem(adapt_from=2)
    alg.run(2)
    mean_before = den.mean.detach().clone()
    alg.run(1)
    assert not torch.equal(mean_before, den.mean)  # the DSM step from round 2 on
    state = alg.state_tensors()
    alg.run(3)
    want, want_params = alg.z.clone(), [p.detach().clone() for p in den.parameters()]
    again, den2 = subspace_problem(adapt_from=2)
    again.load_state_tensors(state)
    again.run(3)
    assert torch.equal(again.z, want)
    assert all(torch.equal(a, b) for a, b in zip(want_params, den2.parameters(), strict=True))


# -- bad input ---------------------------------------------------------------------------
def test_bad_input_gets_clear_errors():
    schedule = CosineSchedule(T)
    net = TimeMLP(3, T, hidden=8, depth=1)
    with pytest.raises(UsageError, match="strength"):
        NaiveGuidance(strength=-0.1)
    with pytest.raises(UsageError, match="strength"):
        LookAheadGuidance(strength=float("nan"))
    with pytest.raises(UsageError, match="sigma_y"):
        LookAheadGuidance(sigma_y=0.0)
    with pytest.raises(UsageError, match="x0hat"):
        GuidedDenoiser(torch.nn.Linear(3, 3), schedule, NaiveGuidance())
    with pytest.raises(UsageError, match="Guidance object"):
        GuidedDenoiser(net, schedule, "naive")
    guided = GuidedDenoiser(net, schedule, LookAheadGuidance())
    x, t = torch.randn(4, 3), torch.full((4,), 10)
    with pytest.raises(UsageError, match="no target"):
        guided(x, t)
    with pytest.raises(UsageError, match="one target per sample"):
        guided.guidance.set_target(torch.ones(4, 3), torch.ones(3))
    with pytest.raises(NonFiniteError, match="gradient g"):
        guided.guidance.set_target(torch.full((4, 3), float("nan")), torch.ones(4))
    guided.guidance.set_target(torch.ones(2, 3), torch.ones(2))
    with pytest.raises(UsageError, match="rows must match"):
        guided(x, t)
    z = torch.randn(4, 3)
    with pytest.raises(UsageError, match=r"shape \(4,\)"):
        guidance_targets(lambda v: v.sum(), z, 0.1)
    with pytest.raises(UsageError, match=r"shape \(4,\)"):
        guidance_targets(lambda v: v, z, 0.1)
    with pytest.raises(NonFiniteError, match="gradient"):
        guidance_targets(lambda v: v.abs().sqrt().sum(1), torch.zeros(4, 3), 0.1)
    with pytest.raises(NonFiniteError, match="values"):
        guidance_targets(lambda v: v.sum(1) / 0.0, z, 0.1)
    with pytest.raises(UsageError, match="ZerothOrderGradient"):
        guidance_targets(lambda v: torch.ones(4), z, 0.1)
    with pytest.raises(UsageError, match="delta"):
        guidance_targets(lambda v: v.sum(1), z, float("inf"))
    sampler = so.DDPMSampler(guided, schedule, 5, data_shape=(3,))
    with pytest.raises(UsageError, match="GuidedDenoiser"):
        so.GuidedOptimization(so.DDPMSampler(net, schedule, 5, data_shape=(3,)), len, delta=1)
    with pytest.raises(UsageError, match="adapt_from"):
        so.GuidedOptimization(sampler, lambda v: v.sum(1), delta=1, adapt_from=-1)
    alg = so.GuidedOptimization(sampler, lambda v: v.sum(1)[:2], delta=1, batch_size=4)
    with pytest.raises(UsageError, match=r"shape \(4,\)"):
        alg.step()


def test_same_noise_redraws_round_zero():
    """noise="same": with strength 0 every round reproduces z_0 exactly; with fresh noise
    it does not."""
    for noise, same in (("same", True), ("fresh", False)):
        alg, _ = subspace_problem()
        alg.noise = noise
        alg.guided.guidance.strength = 0.0
        z0 = alg.start().clone()
        alg.run(2)
        assert torch.equal(alg.z, z0) == same
    with pytest.raises(UsageError, match="noise"):
        subspace_problem()[0].__class__(alg.sampler, alg.f, delta=1.0, noise="new")


def test_more_argument_checks_and_the_guided_x0hat():
    from sampleopt.guidance import make_guidance

    with pytest.raises(UsageError, match="unknown guidance"):
        make_guidance("classifier-free")
    for kw, what in (({"directions": 0}, "directions"), ({"mu": 0.0}, "mu"),
                     ({"mu": float("inf")}, "mu")):  # fmt: skip
        with pytest.raises(UsageError, match=what):
            ZerothOrderGradient(**kw)
    with pytest.raises(UsageError, match="gradient must be"):
        guidance_targets(lambda v: v.sum(1), torch.randn(4, 3), 0.1, gradient="autograd")
    schedule = CosineSchedule(T).double()
    sub = SubspaceGaussian(8, 2, seed=1, dtype=F64)
    den = ExactGaussianDenoiser(sub.mean, sub.covariance, schedule)
    guided = GuidedDenoiser(den, schedule, NaiveGuidance())
    g, y = torch.randn(3, 8, dtype=F64), torch.randn(3, dtype=F64)
    guided.guidance.set_target(g, y)
    x, t = torch.randn(3, 8, dtype=F64), torch.tensor([5, 50, 90])
    a, s = (v[t][:, None] for v in schedule.a_s())
    torch.testing.assert_close(guided.x0hat(x, t), (x - s * den(x, t)) / a)
    torch.testing.assert_close(guided.x0hat(x, t, guided=True), (x - s * guided(x, t)) / a)
    with pytest.raises(UsageError, match="1 .. 100"):
        guided(x, torch.tensor([0, 5, 5]))
    alg, _ = subspace_problem()
    for kw, what in (({"adapt_from": 0, "adapt_lr": 0.0}, "adapt_lr"),
                     ({"top_k": 0}, "top_k"), ({"delta": float("nan")}, "delta")):  # fmt: skip
        args = {"delta": 1.0, **kw}
        with pytest.raises(UsageError, match=what):
            so.GuidedOptimization(alg.sampler, alg.f, **args)
    frozen = ExactGaussianDenoiser(sub.mean, sub.covariance, schedule).requires_grad_(False)
    sampler = so.DDPMSampler(GuidedDenoiser(frozen, schedule, NaiveGuidance()), schedule, 5,
                             data_shape=(8,))  # fmt: skip
    with pytest.raises(UsageError, match="trainable"):
        so.GuidedOptimization(sampler, alg.f, delta=1.0, adapt_from=0)
