"""Denoising-diffusion samplers as Gaussian chains over a denoiser.

Each sampler runs K steps down a decreasing list of integer times
tau_0 > tau_1 > ... > tau_K = 0 (:func:`respaced_timesteps`) of a
:class:`~sampleopt.diffusion.NoiseSchedule` (respacing: K may be far smaller than
T). Step k goes from t = tau_k to s = tau_{k+1} and has the Gaussian-chain form
x_s = m_theta(x_t, k) + sigma_k xi (docs/methods.md section 2), with theta the denoiser's (and a
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


def _sqrt0(v: torch.Tensor) -> torch.Tensor:
    """sqrt(max(v, 0)) with gradient 0, not inf or NaN, where v <= 0 (a step without
    noise under a learnable schedule would otherwise poison every gradient)."""
    positive = v > 0
    return torch.where(positive, torch.where(positive, v, torch.ones_like(v)).sqrt(), 0.0)


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

    @property
    def state_shape(self) -> tuple[int, ...]:
        return self.data_shape

    # -- helpers -----------------------------------------------------------------
    def coefficients(self, k: int) -> tuple[torch.Tensor, ...]:
        """Step k's coefficients; the mean is c_x x + c_eps eps and the noise scale
        sigma: (c_x, c_eps, sigma, a_t, s_t) (subclasses may append more)."""
        raise NotImplementedError

    def _coef(self, k: int) -> tuple:
        """:meth:`coefficients` as Python floats, cached, when the schedule has no
        parameters (most steps then cost one fused tensor op); as tensors that carry
        gradients when it has (a learnable schedule)."""
        if next(self.schedule.parameters(), None) is not None:
            return self.coefficients(k)
        key = (k, self.schedule.alphabar().dtype)
        cache = self.__dict__.setdefault("_coef_cache", {})
        if key not in cache:
            cache[key] = tuple(float(v) for v in self.coefficients(k))
        return cache[key]

    def _ab(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        ab = self.schedule.alphabar()
        return ab[self.timesteps[k]], ab[self.timesteps[k + 1]]

    def eps(self, x: torch.Tensor, t: int, a_t=None, s_t=None) -> torch.Tensor:
        """eps(x_t, t) from the denoiser, whatever it predicts (a_t, s_t: the schedule's
        scales at t, needed to convert other predictions)."""
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
        kind = self.denoiser.prediction
        if kind == "eps":
            return pred
        if a_t is None:
            ab = self.schedule.alphabar()[t]
            a_t, s_t = ab.sqrt(), (1 - ab).sqrt()
        return to_eps(pred, kind, x, a_t, s_t)

    def mean(self, x, k):
        c_x, c_eps, _, a_t, s_t = self._coef(k)[:5]
        eps = self.eps(x, self.timesteps[k], a_t, s_t)
        if isinstance(c_x, float) and isinstance(c_eps, float):
            return torch.add(x * c_x, eps, alpha=c_eps)
        return c_x * x + c_eps * eps

    def mean_batched(self, xs, ks):
        """The means of batches at different steps from one network call: the batches
        are concatenated with per-row times and coefficients."""
        if len(xs) <= 1 or any(tuple(b.shape[1:]) != self.data_shape for b in xs):
            return [self.mean(x, k) for x, k in zip(xs, ks, strict=True)]  # (shape errors there)
        x = torch.cat(xs)
        sizes = [len(b) for b in xs]
        shape = (-1,) + (1,) * (x.ndim - 1)

        def rows(i):  # coefficient i of each batch's step, repeated over its rows
            vals = [self._coef(k)[i] for k in ks]
            col = torch.stack([torch.as_tensor(v, dtype=x.dtype, device=x.device) for v in vals])
            return col.repeat_interleave(torch.tensor(sizes, device=x.device)).reshape(shape)

        c_x, c_eps, a_t, s_t = rows(0), rows(1), rows(3), rows(4)
        t = torch.tensor(
            [self.timesteps[k] for k in ks], dtype=torch.long, device=x.device
        ).repeat_interleave(torch.tensor(sizes, device=x.device))
        pred = self.denoiser(x, t)
        kind = self.denoiser.prediction
        eps = pred if kind == "eps" else to_eps(pred, kind, x, a_t, s_t)
        return list((c_x * x + c_eps * eps).split(sizes))

    def noise_scale(self, k):
        return self._coef(k)[2]

    def linear_coefficient(self, k):
        return self._coef(k)[0]

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

    @property
    def memoryless(self) -> bool:
        return self.variance == "posterior"

    def coefficients(self, k):
        ab_t, ab_s = self._ab(k)
        beta = 1 - ab_t / ab_s
        s_t = (1 - ab_t).sqrt()
        c_x = 1 / (1 - beta).sqrt()  # m = (x - beta / s_t eps) / sqrt(1 - beta)
        if self.variance == "beta":  # none on the step to clean data (Ho et al. Alg. 2)
            var = beta if self.timesteps[k + 1] > 0 else torch.zeros_like(beta)
        else:
            var = beta * (1 - ab_s) / (1 - ab_t)
        return c_x, -beta / s_t * c_x, _sqrt0(var), ab_t.sqrt(), s_t


class DDIMSampler(DiffusionSampler):
    """DDIM with stochasticity ``eta`` in [0, 1] (0: deterministic)."""

    def __init__(
        self, denoiser, schedule, num_steps=None, *, data_shape, timesteps=None, eta: float = 0.0
    ):
        super().__init__(denoiser, schedule, num_steps, data_shape=data_shape, timesteps=timesteps)
        if not (isinstance(eta, int | float) and 0.0 <= eta <= 1.0):
            raise UsageError(f"eta must be a number in [0, 1], got {eta!r}")
        self.eta = float(eta)

    @property
    def memoryless(self) -> bool:
        return self.eta == 1.0  # DDPM's posterior variance

    def coefficients(self, k):
        ab_t, ab_s = self._ab(k)
        a_t, s_t, a_s = ab_t.sqrt(), (1 - ab_t).sqrt(), ab_s.sqrt()
        sigma = self.eta * _sqrt0((1 - ab_s) / (1 - ab_t)) * _sqrt0(1 - ab_t / ab_s)
        direction = _sqrt0(1 - ab_s - sigma**2)
        # m = a_s x0hat + direction eps with x0hat = (x - s_t eps) / a_t
        return a_s / a_t, direction - a_s * s_t / a_t, sigma, a_t, s_t


class ReverseSDESampler(DiffusionSampler):
    """Euler-Maruyama on the reverse-time VP SDE (memoryless, like DDPM)."""

    memoryless = True

    def coefficients(self, k):
        ab_t, ab_s = self._ab(k)
        B, s_t = torch.log(ab_s / ab_t), (1 - ab_t).sqrt()
        # m = (1 + B/2) x + B score = (1 + B/2) x - (B / s_t) eps
        return 1 + B / 2, -B / s_t, _sqrt0(B), ab_t.sqrt(), s_t


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

    def coefficients(self, k):
        ab_t, ab_s = self._ab(k)
        B, s_t = torch.log(ab_s / ab_t), (1 - ab_t).sqrt()
        zero = torch.zeros_like(B)
        # Euler: m = x + B (x/2 - eps/(2 s_t)); extra entries for Heun's second stage
        return 1 + B / 2, -B / (2 * s_t), zero, ab_t.sqrt(), s_t, B, ab_s.sqrt(), (1 - ab_s).sqrt()

    def mean_batched(self, xs, ks):
        if self.method == "heun":  # two network calls per step: batch per step instead
            return [self.mean(x, k) for x, k in zip(xs, ks, strict=True)]
        return super().mean_batched(xs, ks)

    def mean(self, x, k):
        c_x, c_eps, _, a_t, s_t, B, a_s, s_s = self._coef(k)
        eps = self.eps(x, self.timesteps[k], a_t, s_t)
        euler = c_x * x + c_eps * eps
        s = self.timesteps[k + 1]
        if self.method == "euler" or s == 0:
            return euler
        # Heun: average the drift x/2 - eps/(2 s) at both ends of the step
        eps2 = self.eps(euler, s, a_s, s_s)
        return x + 0.5 * B * ((0.5 * x - eps / (2 * s_t)) + (0.5 * euler - eps2 / (2 * s_s)))


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
