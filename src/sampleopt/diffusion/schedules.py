"""Variance-preserving noise schedules on integer times t = 0 .. T.

q(x_t | x_0) = N(a_t x_0, s_t^2 I) with a_t^2 = alphabar_t and s_t^2 = 1 - alphabar_t
(docs/methods.md section 2). Index 0 is clean data (alphabar_0 = 1); beta_t = 1 - alphabar_t /
alphabar_{t-1} for t = 1 .. T. Note the shift against diffusers, whose timestep
t_d = 0 .. T-1 has alphas_cumprod[t_d] = alphabar_{t_d + 1} here.

A schedule is a ``torch.nn.Module``: the learnable one has parameters and its
alphabar is differentiable in them, so a schedule can be optimised like a model.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from sampleopt.errors import UsageError


class NoiseSchedule(nn.Module):
    """Base class: subclasses define :meth:`alphabar` (shape (T+1,), alphabar[0] = 1)."""

    num_train_steps: int

    def alphabar(self) -> torch.Tensor:
        raise NotImplementedError

    def betas(self) -> torch.Tensor:
        """beta_t for t = 1 .. T, shape (T,)."""
        ab = self.alphabar()
        return 1 - ab[1:] / ab[:-1]

    def a_s(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(a_t, s_t) for t = 0 .. T: signal and noise scales."""
        ab = self.alphabar()
        return ab.sqrt(), (1 - ab).clamp_min(0).sqrt()

    def extra_config(self) -> dict:
        """Constructor arguments beyond ``num_train_steps`` that a saved schedule entry
        must record for :func:`schedule_from_config` to rebuild it (none by default)."""
        return {}

    def extra_repr(self):
        return f"T={self.num_train_steps}"


def _check_steps(num_train_steps) -> int:
    if not (isinstance(num_train_steps, int) and num_train_steps >= 1):
        raise UsageError(f"num_train_steps must be an integer >= 1, got {num_train_steps!r}")
    return num_train_steps


class LinearSchedule(NoiseSchedule):
    """beta_t linear from ``beta_start`` to ``beta_end`` (Ho et al. 2020: 1e-4 .. 0.02
    over T = 1000), alphabar_t = prod_{i <= t} (1 - beta_i)."""

    def __init__(self, num_train_steps: int = 1000, beta_start=1e-4, beta_end=0.02):
        super().__init__()
        self.num_train_steps = _check_steps(num_train_steps)
        if not 0 < beta_start <= beta_end < 1:
            raise UsageError(f"need 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}")
        betas = torch.linspace(beta_start, beta_end, num_train_steps, dtype=torch.float64)
        ab = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])
        self.register_buffer("_alphabar", ab.to(torch.get_default_dtype()))

    def alphabar(self):
        return self._alphabar


def _cosine_f(u: torch.Tensor, eps, tau) -> torch.Tensor:
    return torch.cos((u + eps) / (1 + eps) * (math.pi / 2)).clamp_min(0) ** (2 * tau)


def _alphabar_from_f(f: torch.Tensor, max_beta: float = 0.999) -> torch.Tensor:
    # beta_t = clip(1 - f_t / f_{t-1}, 0, max_beta), alphabar = cumprod(1 - beta)
    ratio = f[1:] / f[:-1].clamp_min(1e-30)
    betas = (1 - ratio).clamp(0.0, max_beta)
    one = torch.ones(1, dtype=f.dtype, device=f.device)
    return torch.cat([one, torch.cumprod(1 - betas, 0)])


class CosineSchedule(NoiseSchedule):
    """Nichol & Dhariwal (2021) cosine schedule, f(u) = cos(((u + s)/(1 + s)) pi/2)^2,
    u = t / T, with betas clipped at 0.999."""

    def __init__(self, num_train_steps: int = 1000, s: float = 0.008):
        super().__init__()
        self.num_train_steps = _check_steps(num_train_steps)
        u = torch.arange(num_train_steps + 1, dtype=torch.float64) / num_train_steps
        ab = _alphabar_from_f(_cosine_f(u, s, 1.0))
        self.register_buffer("_alphabar", ab.to(torch.get_default_dtype()))

    def alphabar(self):
        return self._alphabar


class ScheduleDomainWarning(UserWarning):
    """A learnable schedule's parameter lies outside its domain and will be clamped."""


def _check_cosine_parameters(start, end, tau, eps) -> None:
    values = {"start": start, "end": end, "tau": tau, "eps": eps}
    for name, v in values.items():
        v = float(v.detach()) if isinstance(v, torch.Tensor) else v
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise UsageError(f"LearnableCosineSchedule: {name} must be a finite number, got {v!r}")
        values[name] = float(v)
    start, end, tau, eps = values.values()
    bad = []
    if not 0 <= start <= 1:
        bad.append(f"start={start:g} (domain [0, 1])")
    if not start <= end <= 1:
        bad.append(f"end={end:g} (domain [start, 1])")
    if tau < 1:
        bad.append(f"tau={tau:g} (domain tau >= 1)")
    if not 0 <= eps <= 1:
        bad.append(f"eps={eps:g} (domain [0, 1])")
    if bad:
        warnings.warn(
            "LearnableCosineSchedule: " + ", ".join(bad) + " outside the domain; the schedule "
            "uses the clamped value and the gradient in that parameter is 0 there",
            ScheduleDomainWarning,
            stacklevel=3,
        )


class LearnableCosineSchedule(NoiseSchedule):
    """The four-parameter cosine schedule of generative bilevel optimisation (Xiao et
    al. 2025, scenario 2; docs/methods.md section 7):

        u' = start + (t / T) (end - start),
        f(t) = cos(((u' + eps) / (1 + eps)) pi/2)^(2 tau),
        beta_t = clip(1 - f_t / f_{t-1}, 0, 0.999),

    with the clamps start in [0, 1], end in [start, 1], tau >= 1, eps in [0, 1]
    applied to the raw parameters on every call (so gradients are zero outside the
    box). start = 0, end = 1, tau = 1, eps = 0.008 is the standard cosine schedule.
    A non-finite value is a :class:`UsageError`; a value outside its domain is
    accepted (it is clamped as above) with a :class:`ScheduleDomainWarning`.
    """

    def __init__(self, num_train_steps: int = 1000, start=0.0, end=1.0, tau=1.0, eps=0.008):
        super().__init__()
        self.num_train_steps = _check_steps(num_train_steps)
        _check_cosine_parameters(start, end, tau, eps)
        dtype = torch.get_default_dtype()
        self.start = nn.Parameter(torch.tensor(float(start), dtype=dtype))
        self.end = nn.Parameter(torch.tensor(float(end), dtype=dtype))
        self.tau = nn.Parameter(torch.tensor(float(tau), dtype=dtype))
        self.eps = nn.Parameter(torch.tensor(float(eps), dtype=dtype))

    def clamped(self) -> tuple[torch.Tensor, ...]:
        start = self.start.clamp(0.0, 1.0)
        end = torch.maximum(self.end.clamp(max=1.0), start)
        return start, end, self.tau.clamp(min=1.0), self.eps.clamp(0.0, 1.0)

    def alphabar(self):
        start, end, tau, eps = self.clamped()
        u = torch.arange(self.num_train_steps + 1, dtype=start.dtype, device=start.device)
        u = start + u / self.num_train_steps * (end - start)
        return _alphabar_from_f(_cosine_f(u, eps, tau))


class ExponentialSchedule(NoiseSchedule):
    """The variance-preserving OU schedule, alphabar_t = exp(-rate t / T).

    In continuous time s = t / T in [0, 1] it is a constant beta = ``rate``: with rate
    4 it is the noising dX = -2 X ds + 2 dW of the 1-D bimodal control benchmark
    (:mod:`sampleopt.soc.bimodal`), x_s | x_0 ~ N(e^{-2s} x_0, 1 - e^{-4s}). Every
    discrete beta_t = 1 - exp(-rate / T) is the same. alphabar_T = exp(-rate) is not 0,
    so the terminal law is not exactly N(0, I): samplers started from N(0, I) carry that
    mismatch (e^{-4} = 0.018 with the default rate).
    """

    def __init__(self, num_train_steps: int = 1000, rate: float = 4.0):
        super().__init__()
        self.num_train_steps = _check_steps(num_train_steps)
        ok = isinstance(rate, int | float) and not isinstance(rate, bool)
        if not (ok and math.isfinite(rate) and rate > 0):
            raise UsageError(f"rate must be a finite number > 0, got {rate!r}")
        self.rate = float(rate)
        t = torch.arange(num_train_steps + 1, dtype=torch.float64)
        ab = torch.exp(-self.rate * t / num_train_steps)
        self.register_buffer("_alphabar", ab.to(torch.get_default_dtype()))

    def alphabar(self):
        return self._alphabar

    def extra_config(self) -> dict:
        return {"rate": self.rate}

    def extra_repr(self):
        return f"T={self.num_train_steps}, rate={self.rate}"


NOISE_SCHEDULES = {"linear": LinearSchedule, "cosine": CosineSchedule, "ou": ExponentialSchedule}


def schedule_config(kind: str, schedule: NoiseSchedule) -> dict:
    """The saved entry of ``schedule`` (registered as ``kind``): kind, T and its extras."""
    return {"kind": kind, "num_train_steps": schedule.num_train_steps, **schedule.extra_config()}


def schedule_from_config(config: dict) -> NoiseSchedule:
    """Rebuild a schedule from its saved entry ({"kind", "num_train_steps", extras})."""
    args = dict(config)
    kind = args.pop("kind", None)
    if kind not in NOISE_SCHEDULES:
        raise UsageError(
            f"unknown noise schedule {kind!r} in a saved schedule entry; "
            f"choose one of {', '.join(NOISE_SCHEDULES)}"
        )
    try:
        return NOISE_SCHEDULES[kind](**args)
    except TypeError as exc:
        raise UsageError(f"bad saved schedule entry {config!r}: {exc}") from None
