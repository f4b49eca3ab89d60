"""Initial laws p_0 of continuous-time chains: what x_0 is drawn from.

A chain over an SDE (:class:`~sampleopt.samplers.sde.SDEChain`) starts from an
:class:`InitialLaw`: an ``nn.Module`` that draws ``sample(n, generator)`` and evaluates
``log_prob(x)`` (per sample, shape (n,)). :class:`Gaussian` with ``learnable=True`` is the
learnable initial law of stochastic-optimal-control fine-tuning with a base that is not
memoryless (docs/soc.md, "Two set-ups"): its draws are reparameterised (x_0 = mean + std
* z), so gradients reach its mean and log-std, and :func:`initial_kl` estimates its KL to
the base's initial law.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from sampleopt.errors import UsageError

_LOG_2PI = math.log(2 * math.pi)


class InitialLaw(nn.Module):
    """Base class: ``shape`` (one state's shape), ``sample`` and ``log_prob``."""

    shape: tuple[int, ...]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @property
    def learnable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    def _z(self, n, generator, like):
        return torch.randn(
            (n, *self.shape), generator=generator, dtype=like.dtype, device=like.device
        )


def _vector(name, value, dims=None) -> torch.Tensor:
    floating = isinstance(value, torch.Tensor) and value.is_floating_point()
    t = torch.as_tensor(value, dtype=value.dtype if floating else torch.get_default_dtype())
    t = t.reshape(-1) if t.ndim else t.reshape(1)
    if dims is not None and t.numel() == 1:
        t = t.expand(dims).clone()
    if not torch.isfinite(t).all():
        raise UsageError(f"the initial law's {name} must be finite, got {value!r}")
    return t


class Gaussian(InitialLaw):
    """N(mean, diag(std^2)); ``learnable=True`` makes the mean and log-std parameters."""

    def __init__(self, mean, std=1.0, *, learnable: bool = False):
        super().__init__()
        mean = _vector("mean", mean)
        std = _vector("std", std, mean.numel()).to(mean.dtype)
        if std.shape != mean.shape or (std <= 0).any():
            raise UsageError(
                f"std must be positive and match the mean's {mean.numel()} entries, got {std}"
            )
        self.shape = (mean.numel(),)
        if learnable:
            self.mean = nn.Parameter(mean)
            self.log_std = nn.Parameter(std.log())
        else:
            self.register_buffer("mean", mean)
            self.register_buffer("log_std", std.log())

    def sample(self, n, generator=None):
        return self.mean + self.log_std.exp() * self._z(n, generator, self.mean)

    def log_prob(self, x):
        z = (x - self.mean) / self.log_std.exp()
        return -0.5 * (z * z + _LOG_2PI).sum(1) - self.log_std.sum()


class GaussianMixture(InitialLaw):
    """sum_j w_j N(means_j, std_j^2 I) over vectors of ``dim`` entries (fixed)."""

    def __init__(self, means: Sequence, stds, weights=None):
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.get_default_dtype())
        if means.ndim == 1:
            means = means[:, None]
        j = means.shape[0]
        stds = torch.as_tensor(stds, dtype=means.dtype).reshape(-1).expand(j).clone()
        weights = torch.full((j,), 1.0 / j) if weights is None else torch.as_tensor(weights)
        weights = weights.to(means.dtype)
        if (stds <= 0).any() or (weights <= 0).any() or weights.shape != (j,):
            raise UsageError("a mixture needs positive stds and one positive weight per mean")
        self.shape = (means.shape[1],)
        self.register_buffer("means", means)
        self.register_buffer("stds", stds)
        self.register_buffer("log_weights", (weights / weights.sum()).log())

    def sample(self, n, generator=None):
        idx = torch.multinomial(self.log_weights.exp(), n, True, generator=generator)
        return self.means[idx] + self.stds[idx, None] * self._z(n, generator, self.means)

    def log_prob(self, x):
        d = x.shape[1]
        z2 = ((x[:, None, :] - self.means) ** 2).sum(2) / self.stds**2
        comp = -0.5 * (z2 + d * _LOG_2PI) - d * self.stds.log()
        return torch.logsumexp(comp + self.log_weights, 1)


def initial_kl(q: InitialLaw, p: InitialLaw, x0: torch.Tensor) -> torch.Tensor:
    """Per-sample Monte-Carlo terms log q(x_0) - log p(x_0) of KL(q || p) at draws x_0 of
    q (reparameterised draws carry the pathwise gradient)."""
    return q.log_prob(x0) - p.log_prob(x0)
