"""Denoising-diffusion samplers as Gaussian chains over a denoiser.

Each sampler runs K steps down a decreasing list of integer times
tau_0 > tau_1 > ... > tau_K = 0 (:func:`respaced_timesteps`) of a
:class:`~sampleopt.diffusion.NoiseSchedule` (respacing: K may be far smaller than
T). Step k goes from t = tau_k to s = tau_{k+1} and has the Gaussian-chain form
x_s = m_theta(x_t, k) + sigma_k xi (design.md), with theta the denoiser's (and a
learnable schedule's) parameters. With alphabar at t and s written ab_t, ab_s,
a = sqrt(ab), s_t = sqrt(1 - ab_t) and eps = eps(x_t, t):

* :class:`DDPMSampler` (Ho et al. 2020, eq. 11; respaced as in Nichol & Dhariwal
  2021): beta = 1 - ab_t / ab_s,
  m = (x_t - beta / s_t eps) / sqrt(1 - beta),
  sigma^2 = beta (1 - ab_s) / (1 - ab_t) ("posterior", default) or beta ("beta";
  none on the last step, to clean data, as in Ho et al.'s Algorithm 2).
  With the posterior variance it is memoryless (x_K independent of x_0).
* :class:`DDIMSampler` (Song et al. 2021, eq. 12): x0hat = (x_t - s_t eps) / a_t,
  sigma = eta sqrt((1 - ab_s) / (1 - ab_t)) sqrt(1 - ab_t / ab_s),
  m = a_s x0hat + sqrt(1 - ab_s - sigma^2) eps. eta = 0 is deterministic; eta = 1
  has DDPM's posterior variance.
* :class:`ReverseSDESampler`: Euler-Maruyama for the reverse VP SDE
  dx = [-beta/2 x - beta score] dt + sqrt(beta) dw-bar (Song et al. 2021), with the
  step's integrated beta B = log(ab_s / ab_t):
  m = (1 + B/2) x_t - (B / s_t) eps, sigma = sqrt(B).
* :class:`ProbabilityFlowSampler`: the probability-flow ODE dx = [-beta/2 x -
  beta/2 score] dt, Euler (m = (1 + B/2) x_t - B/(2 s_t) eps) or Heun (Euler then
  the trapezoid correction; the last step, whose end has s = 0 and no score, is
  Euler). Deterministic: sigma = 0.

Choose DDPM or the SDE for memoryless sampling (stochastic-optimal-control
fine-tuning needs it), DDIM with eta < 1 or the ODE for fewer steps, and the ODE
(Heun) when a deterministic map is needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sampleopt.diffusion.denoisers import Denoiser
from sampleopt.diffusion.parameterization import to_eps
from sampleopt.diffusion.schedules import NoiseSchedule
from sampleopt.errors import UsageError
from sampleopt.samplers.chain import GaussianChain


def respaced_timesteps(num_train_steps: int, num_steps: int) -> list[int]:
    """K times spaced by c = T / K as in DDIM (Song et al. 2021, section 4.2):
    tau_i = 1 + round(i c) for i = K-1 .. 0, then 0 (clean data). With K = T this is
    T, T-1, .., 1, 0. Starting at 1 + (K-1) c rather than T avoids the first step's
    division by a_T ~ 0 under the cosine schedule, which amplifies any error of the
    network there (diffusers calls this spacing "leading")."""
    if not (isinstance(num_steps, int) and 1 <= num_steps <= num_train_steps):
        raise UsageError(
            f"num_steps must be an integer in 1 .. {num_train_steps} (the schedule's T), "
            f"got {num_steps!r}"
        )
    c = num_train_steps / num_steps
    return [1 + round(i * c) for i in range(num_steps - 1, -1, -1)] + [0]


class DiffusionSampler(GaussianChain):
    """Base class: a denoiser, a schedule, a respaced list of times and a data shape."""

    def __init__(
        self,
        denoiser: Denoiser,
        schedule: NoiseSchedule,
        num_steps: int | None = None,
        *,
        data_shape: Sequence[int],
        timesteps: Sequence[int] | None = None,
    ):
        super().__init__()
        if not isinstance(schedule, NoiseSchedule):
            raise UsageError(f"schedule must be a sampleopt NoiseSchedule, got {schedule!r}")
        prediction = getattr(denoiser, "prediction", None)
        if not callable(denoiser) or prediction is None:
            raise UsageError(
                "denoiser must be a module called as denoiser(x_t, t) with a `prediction` "
                "attribute (eps, x0, v or score)"
            )
        T = schedule.num_train_steps
        if timesteps is None:
            timesteps = respaced_timesteps(T, T if num_steps is None else num_steps)
        timesteps = [int(t) for t in timesteps]
        if (
            len(timesteps) < 2
            or timesteps[-1] != 0
            or timesteps[0] > T
            or any(a <= b for a, b in zip(timesteps, timesteps[1:], strict=False))
        ):
            raise UsageError(
                f"timesteps must decrease strictly from at most T = {T} down to 0, got {timesteps}"
            )
        self.denoiser = denoiser
        self.schedule = schedule
        self.timesteps = timesteps
        self.num_steps = len(timesteps) - 1
        self.data_shape = tuple(int(v) for v in data_shape)

    # -- helpers -----------------------------------------------------------------
    def _ab(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        ab = self.schedule.alphabar()
        return ab[self.timesteps[k]], ab[self.timesteps[k + 1]]

    def _scalar(self, v: torch.Tensor):
        """A Python float when nothing needs its gradient (cheaper broadcasting)."""
        return v if v.requires_grad else float(v)

    def eps(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """eps(x_t, t) from the denoiser, whatever it predicts."""
        if tuple(x.shape[1:]) != self.data_shape:
            shape = ", ".join(map(str, self.data_shape))
            raise UsageError(
                f"{type(self).__name__} expects x of shape (n, {shape}), got {tuple(x.shape)}"
            )
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        pred = self.denoiser(x, tt)
        if pred.shape != x.shape:
            raise UsageError(
                f"the denoiser must return the shape of x, {tuple(x.shape)}, "
                f"got {tuple(pred.shape)}"
            )
        ab = self.schedule.alphabar()[t]
        return to_eps(pred, self.denoiser.prediction, x, ab.sqrt(), (1 - ab).sqrt())

    def sample_x0(self, n, generator=None):
        p = next(self.parameters(), None)
        dtype = p.dtype if p is not None else torch.get_default_dtype()
        device = p.device if p is not None else None
        return torch.randn(n, *self.data_shape, generator=generator, dtype=dtype, device=device)


class DDPMSampler(DiffusionSampler):
    """Ancestral DDPM sampling; ``variance`` "posterior" (default) or "beta"."""

    def __init__(
        self,
        denoiser,
        schedule,
        num_steps=None,
        *,
        data_shape,
        timesteps=None,
        variance: str = "posterior",
    ):
        super().__init__(denoiser, schedule, num_steps, data_shape=data_shape, timesteps=timesteps)
        if variance not in ("posterior", "beta"):
            raise UsageError(f"variance must be 'posterior' or 'beta', got {variance!r}")
        self.variance = variance

    def mean(self, x, k):
        ab_t, ab_s = self._ab(k)
        beta = 1 - ab_t / ab_s
        eps = self.eps(x, self.timesteps[k])
        return (x - self._scalar(beta / (1 - ab_t).sqrt()) * eps) / self._scalar((1 - beta).sqrt())

    def noise_scale(self, k):
        ab_t, ab_s = self._ab(k)
        beta = 1 - ab_t / ab_s
        if self.variance == "beta" and self.timesteps[k + 1] == 0:
            return 0.0  # no noise on the step to clean data (Ho et al. 2020, Algorithm 2)
        var = beta * (1 - ab_s) / (1 - ab_t) if self.variance == "posterior" else beta
        return self._scalar(var.clamp_min(0).sqrt())


class DDIMSampler(DiffusionSampler):
    """DDIM with stochasticity ``eta`` in [0, 1] (0: deterministic)."""

    def __init__(
        self, denoiser, schedule, num_steps=None, *, data_shape, timesteps=None, eta: float = 0.0
    ):
        super().__init__(denoiser, schedule, num_steps, data_shape=data_shape, timesteps=timesteps)
        if not (isinstance(eta, int | float) and 0.0 <= eta <= 1.0):
            raise UsageError(f"eta must be a number in [0, 1], got {eta!r}")
        self.eta = float(eta)

    def _sigma(self, k):
        ab_t, ab_s = self._ab(k)
        return self.eta * ((1 - ab_s) / (1 - ab_t)).sqrt() * (1 - ab_t / ab_s).clamp_min(0).sqrt()

    def mean(self, x, k):
        ab_t, ab_s = self._ab(k)
        eps = self.eps(x, self.timesteps[k])
        x0hat = (x - self._scalar((1 - ab_t).sqrt()) * eps) / self._scalar(ab_t.sqrt())
        sigma = self._sigma(k)
        direction = (1 - ab_s - sigma**2).clamp_min(0).sqrt()
        return self._scalar(ab_s.sqrt()) * x0hat + self._scalar(direction) * eps

    def noise_scale(self, k):
        return self._scalar(self._sigma(k))


class ReverseSDESampler(DiffusionSampler):
    """Euler-Maruyama on the reverse-time VP SDE (memoryless, like DDPM)."""

    def _B(self, k):
        ab_t, ab_s = self._ab(k)
        return torch.log(ab_s / ab_t), (1 - ab_t).sqrt()

    def mean(self, x, k):
        B, s_t = self._B(k)
        eps = self.eps(x, self.timesteps[k])
        return self._scalar(1 + B / 2) * x - self._scalar(B / s_t) * eps

    def noise_scale(self, k):
        return self._scalar(self._B(k)[0].clamp_min(0).sqrt())


class ProbabilityFlowSampler(DiffusionSampler):
    """The probability-flow ODE, ``method`` "euler" or "heun" (deterministic)."""

    def __init__(
        self,
        denoiser,
        schedule,
        num_steps=None,
        *,
        data_shape,
        timesteps=None,
        method: str = "heun",
    ):
        super().__init__(denoiser, schedule, num_steps, data_shape=data_shape, timesteps=timesteps)
        if method not in ("euler", "heun"):
            raise UsageError(f"method must be 'euler' or 'heun', got {method!r}")
        self.method = method

    def _drift(self, x, t: int):
        # dx/dB along the ODE, B the integrated beta: x/2 + score/2 = x/2 - eps/(2 s_t)
        s_t = (1 - self.schedule.alphabar()[t]).sqrt()
        return 0.5 * x - self._scalar(0.5 / s_t) * self.eps(x, t)

    def mean(self, x, k):
        ab_t, ab_s = self._ab(k)
        B = self._scalar(torch.log(ab_s / ab_t))
        d1 = self._drift(x, self.timesteps[k])
        euler = x + B * d1
        s = self.timesteps[k + 1]
        if self.method == "euler" or s == 0:
            return euler
        return x + 0.5 * B * (d1 + self._drift(euler, s))

    def noise_scale(self, k):
        return 0.0


SAMPLERS = {
    "ddpm": DDPMSampler,
    "ddim": DDIMSampler,
    "sde": ReverseSDESampler,
    "ode": ProbabilityFlowSampler,
}

__all__ = [
    "SAMPLERS",
    "DDIMSampler",
    "DDPMSampler",
    "DiffusionSampler",
    "ProbabilityFlowSampler",
    "ReverseSDESampler",
    "respaced_timesteps",
]
