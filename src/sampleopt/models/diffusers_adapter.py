"""Interoperability with Hugging Face ``diffusers``: schedules, denoisers and samplers.

Use this module to run or fine-tune a pretrained diffusers model with sampleopt's
samplers and estimators. Three pieces, from the smallest to the most convenient:

* :func:`schedule_from_diffusers` (or :class:`ScheduleFromAlphabar` for any
  alphabar you already have): a sampleopt :class:`~sampleopt.diffusion.NoiseSchedule`
  holding a scheduler's ``alphas_cumprod``. Use it when you want sampleopt's own
  sampler choices (SDE, probability-flow ODE, your own timesteps) on a diffusers noise
  schedule.
* :class:`DiffusersDenoiser`: wraps a diffusers ``UNet2DModel`` (or any module called
  as ``unet(x, t).sample``) as a sampleopt :class:`~sampleopt.diffusion.Denoiser`,
  shifting the time by one. Its parameters are the UNet's, so samplers built on it
  can be fine-tuned.
* :func:`sampler_from_diffusers`: a DDPM or DDIM sampler that reproduces a
  ``DDPMScheduler`` / ``DDIMScheduler`` sampling loop step for step (same timesteps,
  same means, same noise scales). Use it when results must agree with the diffusers
  pipeline the model was trained for.

Time convention. sampleopt schedules index t = 0 .. T with alphabar[0] = 1 (clean
data), and diffusers' timestep t_d = 0 .. T-1 has ``alphas_cumprod[t_d]`` =
alphabar[t_d + 1]. So a diffusers timestep t_d is sampleopt time t_d + 1, and
diffusers' "previous timestep -1" (``alpha_prod_t_prev = 1``) is sampleopt time 0.

diffusers is an optional dependency, imported only when a scheduler is converted.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from sampleopt.diffusion.denoisers import Denoiser
from sampleopt.diffusion.parameterization import PREDICTIONS
from sampleopt.diffusion.schedules import NoiseSchedule
from sampleopt.errors import UsageError
from sampleopt.samplers.diffusion import DDIMSampler, DDPMSampler

#: diffusers ``prediction_type`` -> sampleopt ``prediction``
DIFFUSERS_PREDICTIONS = {"epsilon": "eps", "sample": "x0", "v_prediction": "v"}

#: diffusers DDPM ``variance_type`` -> sampleopt ``DDPMSampler(variance=...)``.
#: "fixed_small_log" is "fixed_small" computed as exp(log(var) / 2): the same variance.
DDPM_VARIANCES = {"fixed_small": "posterior", "fixed_small_log": "posterior", "fixed_large": "beta"}


# -- schedule ------------------------------------------------------------------------


class ScheduleFromAlphabar(NoiseSchedule):
    """A fixed schedule given by its alphabar values at t = 0 .. T (alphabar[0] = 1).

    Use it to give sampleopt any schedule you have as numbers, e.g. a diffusers
    scheduler's ``alphas_cumprod`` with a 1 prepended (what
    :func:`schedule_from_diffusers` does). The values are stored as a buffer (moved by
    ``.to()``, not trained) in ``dtype`` (default: torch's default dtype), so
    float32 values are kept exactly.
    """

    def __init__(self, alphabar, dtype: torch.dtype | None = None):
        super().__init__()
        ab = torch.as_tensor(alphabar).detach()
        if not (ab.is_floating_point() and ab.ndim == 1 and ab.shape[0] >= 2):
            raise UsageError(
                f"alphabar must be a 1-D float tensor of length T + 1 >= 2, got dtype {ab.dtype} "
                f"and shape {tuple(ab.shape)}"
            )
        ab = ab.to(torch.get_default_dtype() if dtype is None else dtype)
        if not bool(torch.isfinite(ab).all()):
            raise UsageError("alphabar contains NaN or inf")
        if float(ab[0]) != 1.0:
            raise UsageError(
                f"alphabar[0] must be 1 (clean data at t = 0), got {float(ab[0])!r}; "
                "prepend a 1 to a diffusers alphas_cumprod (or use schedule_from_diffusers)"
            )
        if not bool((ab[1:] > 0).all() and (ab[1:] <= 1).all()):
            raise UsageError(
                "alphabar[1:] must lie in (0, 1]; a zero (zero terminal SNR) makes the "
                "samplers divide by a_t = 0"
            )
        if not bool((ab[1:] <= ab[:-1]).all()):
            raise UsageError("alphabar must be non-increasing in t")
        self.num_train_steps = int(ab.shape[0] - 1)
        self.register_buffer("_alphabar", ab.clone())

    def alphabar(self) -> torch.Tensor:
        return self._alphabar


def schedule_from_diffusers(scheduler, dtype: torch.dtype | None = None) -> ScheduleFromAlphabar:
    """The sampleopt schedule of a diffusers scheduler: alphabar = [1, *alphas_cumprod].

    Works for any scheduler with an ``alphas_cumprod`` tensor (DDPM, DDIM, PNDM, ...);
    T is the scheduler's ``num_train_timesteps``. Raises :class:`UsageError` for
    ``rescale_betas_zero_snr=True`` (alphabar_T = 0 is not supported).
    """
    config = getattr(scheduler, "config", None)
    if config is not None and getattr(config, "rescale_betas_zero_snr", False):
        raise UsageError(
            "rescale_betas_zero_snr=True is not supported (alphabar_T = 0); "
            "set rescale_betas_zero_snr=False"
        )
    ac = getattr(scheduler, "alphas_cumprod", None)
    if not isinstance(ac, torch.Tensor):
        raise UsageError(
            f"expected a diffusers scheduler with an alphas_cumprod tensor, got {type(scheduler)!r}"
        )
    ac = ac.detach().cpu()
    one = torch.ones(1, dtype=ac.dtype)
    return ScheduleFromAlphabar(torch.cat([one, ac]), dtype=dtype)


# -- denoiser ------------------------------------------------------------------------


class DiffusersDenoiser(Denoiser):
    """A diffusers UNet as a sampleopt denoiser: ``forward(x, t)`` returns
    ``unet(x, t - 1).sample``.

    ``unet`` is a ``diffusers.UNet2DModel`` or any module called as ``unet(x, t_d)``
    returning an object with a ``.sample`` tensor, a tuple whose first entry is the
    output, or the output tensor itself. ``prediction`` says what it predicts, in
    sampleopt's names ("eps", "x0", "v", "score") or diffusers' ``prediction_type``
    names ("epsilon", "sample", "v_prediction"); take it from the scheduler the model
    was trained with (``scheduler.config.prediction_type``). Unets with a learned
    variance (2x the channels out) are not supported.

    The UNet is a submodule: the denoiser's parameters are the UNet's.
    """

    def __init__(self, unet: nn.Module, prediction: str = "eps"):
        super().__init__()
        if not isinstance(unet, nn.Module):
            raise UsageError(f"unet must be a torch.nn.Module, got {type(unet)!r}")
        kind = DIFFUSERS_PREDICTIONS.get(prediction, prediction)
        if kind not in PREDICTIONS:
            names = ", ".join([*PREDICTIONS, *DIFFUSERS_PREDICTIONS])
            raise UsageError(f"unknown prediction {prediction!r}; choose one of {names}")
        self.unet = unet
        self.prediction = kind

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.is_floating_point() or bool((t < 1).any()):
            raise UsageError(
                "DiffusersDenoiser takes integer sampleopt times t in 1 .. T "
                "(diffusers timestep t - 1); t = 0 is clean data"
            )
        out = self.unet(x, t - 1)
        if hasattr(out, "sample"):
            out = out.sample
        elif isinstance(out, tuple | list):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise UsageError(
                f"unet(x, t) must return a tensor, a tuple or an object with .sample, "
                f"got {type(out)!r}"
            )
        return out

    def extra_repr(self):
        return f"prediction={self.prediction!r}"


# -- samplers ------------------------------------------------------------------------


class DiffusersDDPMSampler(DDPMSampler):
    """A :class:`DDPMSampler` whose final step adds noise exactly when diffusers does.

    diffusers' ``DDPMScheduler.step`` adds no noise at timestep t_d = 0 (Ho et al.
    2020, Algorithm 2: z = 0 at t = 1), as sampleopt's ``variance="beta"`` does on its
    step to clean data, but it adds sqrt(beta) noise whenever the last timestep is > 0
    (e.g. ``timestep_spacing="trailing"``). With ``final_noise`` this subclass adds that
    noise on the last step too. :func:`sampler_from_diffusers` builds it only for
    ``variance_type="fixed_large"`` (the posterior variance is 0 there anyway).
    """

    def __init__(self, *args, final_noise: bool = True, **kwargs):
        super().__init__(*args, **kwargs)
        self.final_noise = bool(final_noise)

    def noise_scale(self, k):
        if k == self.num_steps - 1:
            if not self.final_noise:
                return 0.0
            ab_t, ab_s = self._ab(k)
            beta = 1 - ab_t / ab_s
            var = beta * (1 - ab_s) / (1 - ab_t) if self.variance == "posterior" else beta
            return float(var.clamp_min(0).sqrt())
        return super().noise_scale(k)


def _config_get(config, name, default=None):
    return getattr(config, name, config.get(name, default) if hasattr(config, "get") else default)


def _check_common(config) -> None:
    """Settings both schedulers share that sampleopt does not model."""
    if _config_get(config, "thresholding", False):
        raise UsageError(
            "thresholding=True (dynamic thresholding of x0hat) is not supported; "
            "set thresholding=False"
        )
    if _config_get(config, "clip_sample", False):
        raise UsageError(
            "clip_sample=True (clipping x0hat to [-clip_sample_range, clip_sample_range]) "
            "is not supported; set clip_sample=False"
        )
    if _config_get(config, "rescale_betas_zero_snr", False):
        raise UsageError(
            "rescale_betas_zero_snr=True is not supported (alphabar_T = 0); "
            "set rescale_betas_zero_snr=False"
        )
    kind = _config_get(config, "prediction_type", "epsilon")
    if kind not in DIFFUSERS_PREDICTIONS:
        raise UsageError(
            f"prediction_type={kind!r} is not supported; "
            f"set one of {', '.join(DIFFUSERS_PREDICTIONS)}"
        )


def _chain(timesteps: Sequence[int], prev: Sequence[int], spacing) -> list[int]:
    """sampleopt timesteps from diffusers' timesteps and each step's previous timestep.

    Each step must end where the next one starts, and the last must end at clean
    data (previous timestep < 0); then the chain is [t_d + 1 ...] + [0].
    """
    ok = all(p == t for p, t in zip(prev[:-1], timesteps[1:], strict=True)) and prev[-1] < 0
    if not ok:
        raise UsageError(
            f"timestep_spacing={spacing!r} with these steps gives timesteps {list(timesteps)} "
            f"but steps that end at {list(prev)} (not a chain ending at clean data); "
            "set timestep_spacing='leading' (steps_offset=0) or 'trailing' with "
            "num_train_timesteps divisible by num_inference_steps"
        )
    return [t + 1 for t in timesteps] + [0]


def _data_shape(unet, data_shape):
    if data_shape is not None:
        return tuple(int(v) for v in data_shape)
    config = getattr(unet, "config", None)
    channels = None if config is None else _config_get(config, "in_channels")
    size = None if config is None else _config_get(config, "sample_size")
    if channels is None or size is None:
        raise UsageError(
            "cannot read in_channels and sample_size from unet.config; pass data_shape=(C, H, W)"
        )
    if isinstance(size, int):
        size = (size, size)
    return (int(channels), *(int(v) for v in size))


def sampler_from_diffusers(
    unet: nn.Module,
    scheduler,
    num_inference_steps: int,
    *,
    eta: float | None = None,
    data_shape: Sequence[int] | None = None,
) -> DDPMSampler | DDIMSampler:
    """A sampleopt sampler that reproduces a diffusers scheduler's sampling loop.

    ``scheduler`` is a ``diffusers.DDPMScheduler`` or ``DDIMScheduler``;
    ``num_inference_steps`` is what you would pass to its ``set_timesteps`` (called
    here on a copy; the scheduler is not changed). Returns

    * for ``DDPMScheduler``: a :class:`DDPMSampler` with ``variance="posterior"``
      (``variance_type`` "fixed_small" or "fixed_small_log") or ``"beta"``
      ("fixed_large"; a :class:`DiffusersDDPMSampler` that adds no noise on the final
      step to t_d = 0, as diffusers does);
    * for ``DDIMScheduler``: a :class:`DDIMSampler` with ``eta`` (default 0), the
      value you would pass to ``scheduler.step(..., eta=eta)``.

    Its ``timesteps`` are diffusers' ``scheduler.timesteps`` + 1 followed by 0, and its
    denoiser is ``DiffusersDenoiser(unet, scheduler.config.prediction_type)``.
    ``data_shape`` defaults to (in_channels, sample_size, sample_size) from
    ``unet.config``.

    To draw the same samples as the diffusers loop, start both from the same x_T
    (``sampler.sample(n, x0=x_T, generator=g)``) and give the sampler a generator in
    the same state as the one passed to ``scheduler.step``: sampleopt draws one
    ``torch.randn(x.shape)`` per step and diffusers one per noisy step, in the same
    order (DDPM draws none at t_d = 0, which is only ever the last step).

    Settings sampleopt does not model raise :class:`UsageError`: ``clip_sample=True``,
    ``thresholding=True``, ``rescale_betas_zero_snr=True``, DDPM variance types other
    than fixed_small(_log)/fixed_large, DDIM ``set_alpha_to_one=False``, and timestep
    spacings whose steps do not chain down to clean data (e.g. "linspace" for DDIM).
    Note that diffusers' default is ``clip_sample=True``.
    """
    try:
        from diffusers import DDIMScheduler, DDPMScheduler
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("sampler_from_diffusers needs diffusers: pip install diffusers") from err

    if not isinstance(scheduler, DDPMScheduler | DDIMScheduler):
        raise UsageError(
            f"scheduler must be a diffusers DDPMScheduler or DDIMScheduler, got "
            f"{type(scheduler).__name__}; for other schedulers build a sampler from "
            "schedule_from_diffusers(scheduler) and DiffusersDenoiser(unet, prediction)"
        )
    config = scheduler.config
    _check_common(config)
    T = int(config.num_train_timesteps)
    if not (
        isinstance(num_inference_steps, int)
        and not isinstance(num_inference_steps, bool)
        and 1 <= num_inference_steps <= T
    ):
        raise UsageError(
            f"num_inference_steps must be an integer in 1 .. {T} (num_train_timesteps), "
            f"got {num_inference_steps!r}"
        )
    spacing = _config_get(config, "timestep_spacing", "leading")

    sched = copy.deepcopy(scheduler)
    sched.set_timesteps(num_inference_steps)
    ts = [int(t) for t in sched.timesteps]
    denoiser = DiffusersDenoiser(unet, config.prediction_type)
    schedule = schedule_from_diffusers(scheduler)
    shape = _data_shape(unet, data_shape)

    if isinstance(scheduler, DDIMScheduler):
        if not config.set_alpha_to_one:
            raise UsageError(
                "set_alpha_to_one=False (the last DDIM step ends at alphas_cumprod[0], "
                "not at clean data) is not supported; set set_alpha_to_one=True"
            )
        # DDIMScheduler.step: prev_timestep = timestep - T // num_inference_steps
        ratio = T // num_inference_steps
        timesteps = _chain(ts, [t - ratio for t in ts], spacing)
        return DDIMSampler(
            denoiser,
            schedule,
            data_shape=shape,
            timesteps=timesteps,
            eta=0.0 if eta is None else eta,
        )

    # DDPMScheduler
    if eta is not None:
        raise UsageError("eta is a DDIM setting; DDPMScheduler takes no eta (leave it out)")
    vtype = config.variance_type
    if vtype not in DDPM_VARIANCES:
        raise UsageError(
            f"variance_type={vtype!r} is not supported; set variance_type='fixed_small' "
            "(posterior variance) or 'fixed_large' (beta)"
        )
    prev = [int(sched.previous_timestep(t)) for t in sched.timesteps]
    timesteps = _chain(ts, prev, spacing)
    variance = DDPM_VARIANCES[vtype]
    if variance == "beta":
        # diffusers adds noise only at t_d > 0 (see DiffusersDDPMSampler)
        return DiffusersDDPMSampler(
            denoiser,
            schedule,
            data_shape=shape,
            timesteps=timesteps,
            variance=variance,
            final_noise=ts[-1] > 0,
        )
    return DDPMSampler(denoiser, schedule, data_shape=shape, timesteps=timesteps, variance=variance)


__all__ = [
    "DDPM_VARIANCES",
    "DIFFUSERS_PREDICTIONS",
    "DiffusersDDPMSampler",
    "DiffusersDenoiser",
    "ScheduleFromAlphabar",
    "sampler_from_diffusers",
    "schedule_from_diffusers",
]
