"""sampleopt samplers built from diffusers schedulers reproduce diffusers' own loop.

A tiny randomly initialised ``UNet2DModel`` is sampled (a) by the diffusers loop
``set_timesteps; for t: x = scheduler.step(unet(x, t).sample, t, x, ...).prev_sample``
and (b) by the sampler :func:`sampler_from_diffusers` returns, from the same x_T and
with generators in the same state. Everything runs in float32; the two results must
agree elementwise to a relative tolerance of 1e-5, with an absolute floor of 1e-5
times the largest |entry| of the reference (they differ only by float32 rounding:
the two compute the same update in different orders). With an eps- or x0-predicting
random UNet the samples reach |x| ~ 300 (x0hat = (x - s eps) / a divides by a_T ~ 0.01),
so the floor is relative to that scale; the observed gaps are below 1e-6 of it.
"""

from __future__ import annotations

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    PNDMScheduler,
    UNet2DModel,
)

from sampleopt.errors import UsageError
from sampleopt.models.diffusers_adapter import (
    DiffusersDDPMSampler,
    DiffusersDenoiser,
    ScheduleFromAlphabar,
    sampler_from_diffusers,
    schedule_from_diffusers,
)
from sampleopt.samplers.diffusion import DDIMSampler, DDPMSampler

RTOL = 1e-5


def assert_matches(got, ref):
    torch.testing.assert_close(got, ref, rtol=RTOL, atol=RTOL * ref.abs().max().item())


N_SAMPLES = 4
N_STEPS = 10


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )
    return model.eval().requires_grad_(False)


def x_T(seed=1):
    return torch.randn(N_SAMPLES, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def diffusers_loop(unet, scheduler, num_steps, x, seed, **step_kw):
    """diffusers' own sampling loop, the reference."""
    scheduler.set_timesteps(num_steps)
    g = torch.Generator().manual_seed(seed)
    for t in scheduler.timesteps:
        out = unet(x, t).sample
        x = scheduler.step(out, t, x, generator=g, **step_kw).prev_sample
    return x


def sampleopt_run(sampler, x, seed):
    with torch.no_grad():
        return sampler.sample(x.shape[0], x0=x, generator=torch.Generator().manual_seed(seed))


def expected_timesteps(scheduler, num_steps):
    scheduler.set_timesteps(num_steps)
    return [int(t) + 1 for t in scheduler.timesteps] + [0]


# -- schedule -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "scheduler",
    [
        DDPMScheduler(num_train_timesteps=1000, clip_sample=False),
        DDIMScheduler(num_train_timesteps=500, beta_schedule="scaled_linear", clip_sample=False),
        DDIMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2"),
    ],
    ids=["ddpm-linear", "ddim-scaled-linear", "ddim-cosine"],
)
def test_schedule_matches_alphas_cumprod_exactly(scheduler):
    sched = schedule_from_diffusers(scheduler)
    ab = sched.alphabar()
    assert sched.num_train_steps == scheduler.config.num_train_timesteps
    assert ab.shape == (scheduler.config.num_train_timesteps + 1,)
    assert ab[0].item() == 1.0
    assert ab.dtype == scheduler.alphas_cumprod.dtype == torch.float32
    assert torch.equal(ab[1:], scheduler.alphas_cumprod)
    # the shift t_d -> t_d + 1 also carries the betas (up to float32 rounding)
    torch.testing.assert_close(sched.betas(), scheduler.betas, rtol=1e-4, atol=1e-6)


def test_schedule_from_alphabar_rejects_bad_values():
    with pytest.raises(UsageError, match=r"alphabar\[0\] must be 1"):
        ScheduleFromAlphabar(torch.tensor([0.9, 0.5]))
    with pytest.raises(UsageError, match="non-increasing"):
        ScheduleFromAlphabar(torch.tensor([1.0, 0.5, 0.6]))
    with pytest.raises(UsageError, match="zero terminal SNR"):
        ScheduleFromAlphabar(torch.tensor([1.0, 0.5, 0.0]))
    with pytest.raises(UsageError, match="1-D float"):
        ScheduleFromAlphabar(torch.tensor([1, 0]))


# -- denoiser -----------------------------------------------------------------------


def test_denoiser_shifts_time_and_maps_prediction(unet):
    x = x_T()
    t = torch.tensor([1, 10, 500, 1000])
    den = DiffusersDenoiser(unet, "v_prediction")
    assert den.prediction == "v"
    assert DiffusersDenoiser(unet, "epsilon").prediction == "eps"
    assert DiffusersDenoiser(unet, "sample").prediction == "x0"
    assert DiffusersDenoiser(unet, "x0").prediction == "x0"
    with torch.no_grad():
        got = den(x, t)
        torch.testing.assert_close(got, unet(x, t - 1).sample, rtol=0, atol=0)
        assert not torch.allclose(got, unet(x, t).sample, atol=1e-4)
    with pytest.raises(UsageError, match="1 .. T"):
        den(x, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(UsageError, match="unknown prediction"):
        DiffusersDenoiser(unet, "velocity")
    # the UNet is a submodule: a sampler built on it can be fine-tuned
    assert {id(p) for p in den.parameters()} == {id(p) for p in unet.parameters()}


# -- samplers against diffusers' loop -------------------------------------------------


@pytest.mark.parametrize(
    ("prediction", "variance_type", "spacing"),
    [
        ("epsilon", "fixed_small", "leading"),
        ("v_prediction", "fixed_small", "leading"),
        ("epsilon", "fixed_large", "leading"),
        ("sample", "fixed_large", "trailing"),
        ("v_prediction", "fixed_small_log", "linspace"),
    ],
)
def test_ddpm_matches_diffusers_loop(unet, prediction, variance_type, spacing):
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        clip_sample=False,
        prediction_type=prediction,
        variance_type=variance_type,
        timestep_spacing=spacing,
    )
    sampler = sampler_from_diffusers(unet, scheduler, N_STEPS)
    assert isinstance(sampler, DDPMSampler)
    assert sampler.variance == ("beta" if variance_type == "fixed_large" else "posterior")
    assert sampler.timesteps == expected_timesteps(scheduler, N_STEPS)
    xT = x_T()
    with torch.no_grad():
        ref = diffusers_loop(unet, scheduler, N_STEPS, xT.clone(), seed=7)
    got = sampleopt_run(sampler, xT.clone(), seed=7)
    assert_matches(got, ref)
    # the noise matters: another seed is far away (so the match above is not vacuous)
    other = sampleopt_run(sampler, xT.clone(), seed=8)
    assert (other - ref).abs().max() > 1e-2


@pytest.mark.parametrize(
    ("prediction", "eta", "spacing"),
    [
        ("epsilon", 0.0, "leading"),
        ("v_prediction", 0.0, "leading"),
        ("epsilon", 1.0, "leading"),
        ("v_prediction", 1.0, "trailing"),
        ("sample", 0.5, "leading"),
    ],
)
def test_ddim_matches_diffusers_loop(unet, prediction, eta, spacing):
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        clip_sample=False,
        set_alpha_to_one=True,
        prediction_type=prediction,
        timestep_spacing=spacing,
    )
    sampler = sampler_from_diffusers(unet, scheduler, N_STEPS, eta=eta)
    assert isinstance(sampler, DDIMSampler) and sampler.eta == eta
    assert sampler.timesteps == expected_timesteps(scheduler, N_STEPS)
    xT = x_T()
    with torch.no_grad():
        ref = diffusers_loop(unet, scheduler, N_STEPS, xT.clone(), seed=7, eta=eta)
    got = sampleopt_run(sampler, xT.clone(), seed=7)
    assert_matches(got, ref)
    if eta > 0:
        other = sampleopt_run(sampler, xT.clone(), seed=8)
        assert (other - ref).abs().max() > 1e-2


def test_ddim_with_explicit_variance_noise(unet):
    """diffusers' ``variance_noise=`` argument against the sampler's ``step`` with the
    same standard normal draws (common random numbers), step by step."""
    scheduler = DDIMScheduler(num_train_timesteps=1000, clip_sample=False)
    sampler = sampler_from_diffusers(unet, scheduler, N_STEPS, eta=1.0)
    scheduler.set_timesteps(N_STEPS)
    noises = torch.randn(N_STEPS, N_SAMPLES, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    x_ref = x_so = x_T()
    with torch.no_grad():
        for k, t in enumerate(scheduler.timesteps):
            out = unet(x_ref, t).sample
            x_ref = scheduler.step(out, t, x_ref, eta=1.0, variance_noise=noises[k]).prev_sample
            x_so = sampler.step(x_so, k, noises[k])
            assert_matches(x_so, x_ref)


def test_fixed_large_final_step_noise_follows_diffusers(unet):
    """diffusers adds no noise at t_d = 0 (leading spacing) but does at t_d > 0."""
    leading = DDPMScheduler(clip_sample=False, variance_type="fixed_large")
    trailing = DDPMScheduler(
        clip_sample=False, variance_type="fixed_large", timestep_spacing="trailing"
    )
    s_lead = sampler_from_diffusers(unet, leading, N_STEPS)
    s_trail = sampler_from_diffusers(unet, trailing, N_STEPS)
    assert isinstance(s_lead, DiffusersDDPMSampler)
    assert s_lead.noise_scale(N_STEPS - 1) == 0.0
    assert s_trail.noise_scale(N_STEPS - 1) == pytest.approx(
        (1 - trailing.alphas_cumprod[99].item()) ** 0.5, rel=1e-6
    )
    assert s_lead.noise_scale(0) == pytest.approx(
        (1 - leading.alphas_cumprod[900].item() / leading.alphas_cumprod[800].item()) ** 0.5,
        rel=1e-5,
    )


# -- unsupported settings -----------------------------------------------------------


@pytest.mark.parametrize(
    ("scheduler", "kw", "setting"),
    [
        (DDPMScheduler(), {}, "clip_sample=True"),
        (DDIMScheduler(clip_sample=True), {}, "clip_sample=True"),
        (DDIMScheduler(thresholding=True, clip_sample=False), {}, "thresholding=True"),
        (DDPMScheduler(clip_sample=False, variance_type="learned_range"), {}, "variance_type"),
        (DDPMScheduler(clip_sample=False, variance_type="fixed_large_log"), {}, "variance_type"),
        (
            DDIMScheduler(clip_sample=False, rescale_betas_zero_snr=True),
            {},
            "rescale_betas_zero_snr=True",
        ),
        (DDIMScheduler(clip_sample=False, set_alpha_to_one=False), {}, "set_alpha_to_one=False"),
        (DDIMScheduler(clip_sample=False, timestep_spacing="linspace"), {}, "timestep_spacing"),
        (DDIMScheduler(clip_sample=False, steps_offset=100), {}, "timestep_spacing"),
        (DDPMScheduler(clip_sample=False), {"eta": 0.5}, "eta"),
        (DDIMScheduler(clip_sample=False), {"eta": 2.0}, "eta"),
        (PNDMScheduler(), {}, "DDPMScheduler or DDIMScheduler"),
    ],
)
def test_unsupported_settings_raise_one_line_usage_error(unet, scheduler, kw, setting):
    with pytest.raises(UsageError) as info:
        sampler_from_diffusers(unet, scheduler, N_STEPS, **kw)
    msg = str(info.value)
    assert setting in msg and "\n" not in msg


def test_ddim_trailing_with_uneven_steps_is_rejected(unet):
    # T / N = 333.3: diffusers' timesteps 999, 666, 332 but steps of 333 (666 -> 333)
    scheduler = DDIMScheduler(clip_sample=False, timestep_spacing="trailing")
    with pytest.raises(UsageError, match="timestep_spacing='trailing'"):
        sampler_from_diffusers(unet, scheduler, 3)


def test_bad_num_steps_and_zero_snr_schedule(unet):
    scheduler = DDPMScheduler(num_train_timesteps=100, clip_sample=False)
    for n in (0, 101, 2.0):
        with pytest.raises(UsageError, match="num_inference_steps"):
            sampler_from_diffusers(unet, scheduler, n)
    with pytest.raises(UsageError, match="rescale_betas_zero_snr=True"):
        schedule_from_diffusers(DDPMScheduler(rescale_betas_zero_snr=True))


def test_scheduler_is_left_unchanged(unet):
    scheduler = DDIMScheduler(clip_sample=False)
    before = scheduler.timesteps.clone()
    sampler_from_diffusers(unet, scheduler, N_STEPS)
    assert scheduler.num_inference_steps is None
    assert torch.equal(scheduler.timesteps, before)
