"""Toy laws with exact densities: the 2-D six-Gaussian "hex" mixture and a 1-D
two-Gaussian mixture.

* :func:`hex_mixture` — sum_i w_i N(c_i, I_2), c_i = radius (cos(i pi/3), sin(i pi/3)),
  i = 0..5: the law of Implicit Diffusion's experiment 5.1 (docs/methods.md section 4) with
  mixture weights ``w`` (uniform by default). Its centres are those of
  :func:`sampleopt.samplers.hex_centres`.
* :func:`bimodal_1d` — 1/2 N(-3, 1) + 1/2 N(3, 1), the data of the toy fine-tuning
  benchmark of the time-reversed BSDE paper (docs/methods.md section 5).

Samplers draw with a ``torch.Generator`` (the global torch RNG when it is None)
and return float32 by default (``dtype=``); log densities are exact and computed in
the dtype of ``x``.
"""

from __future__ import annotations

import math

import torch

from sampleopt.errors import UsageError

N_COMPONENTS = 6
BIMODAL_MEANS = (-3.0, 3.0)


def _centres(radius: float, dtype: torch.dtype) -> torch.Tensor:
    ang = torch.arange(N_COMPONENTS, dtype=torch.float64) * math.pi / 3
    return (radius * torch.stack([ang.cos(), ang.sin()], 1)).to(dtype)


def _weights(weights, dtype: torch.dtype) -> torch.Tensor:
    """Mixture weights as a normalised (6,) tensor (uniform when None)."""
    if weights is None:
        return torch.full((N_COMPONENTS,), 1.0 / N_COMPONENTS, dtype=dtype)
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != (N_COMPONENTS,):
        raise UsageError(
            f"hex mixture weights must have shape ({N_COMPONENTS},), got {tuple(w.shape)}"
        )
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise UsageError(
            f"hex mixture weights must be finite, >= 0 and not all 0, got {w.tolist()}"
        )
    return (w / w.sum()).to(dtype)


def _check_n(n: int, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UsageError(f"{what}: n must be an integer >= 0, got {n!r}")
    return n


def _check_points(x: torch.Tensor, dim: int, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise UsageError(
            f"{what} expects a torch.Tensor of shape (n, {dim}), got {type(x).__name__}"
        )
    if x.ndim != 2 or x.shape[1] != dim:
        raise UsageError(f"{what} expects x of shape (n, {dim}), got {tuple(x.shape)}")
    return x if x.is_floating_point() else x.to(torch.get_default_dtype())


def hex_mixture(
    n: int,
    *,
    generator: torch.Generator | None = None,
    radius: float = 4.0,
    weights=None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``n`` samples, shape (n, 2), of sum_i w_i N(c_i, I_2) with the six hex centres
    c_i = radius (cos(i pi/3), sin(i pi/3)) and weights ``w`` (uniform when None;
    any non-negative 6-vector, normalised here).

    With uniform weights the mean is 0 and the covariance (1 + radius^2 / 2) I.
    """
    _check_n(n, "hex_mixture")
    w = _weights(weights, torch.float64)
    idx = torch.multinomial(w, n, replacement=True, generator=generator) if n else w.new_zeros(0)
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    return (_centres(radius, torch.float64)[idx.long()] + noise).to(dtype)


def hex_mixture_log_prob(x: torch.Tensor, radius: float = 4.0, weights=None) -> torch.Tensor:
    """Exact log density, shape (n,), of :func:`hex_mixture` at ``x`` of shape (n, 2):
    log sum_i w_i exp(-|x - c_i|^2 / 2) - log(2 pi)."""
    x = _check_points(x, 2, "hex_mixture_log_prob")
    c = _centres(radius, x.dtype).to(x.device)
    logw = _weights(weights, x.dtype).to(x.device).log()
    sq = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)  # (n, 6)
    return torch.logsumexp(logw - 0.5 * sq, dim=1) - math.log(2 * math.pi)


def bimodal_1d(
    n: int, *, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """``n`` samples, shape (n, 1), of 1/2 N(-3, 1) + 1/2 N(3, 1) (mean 0, variance 10)."""
    _check_n(n, "bimodal_1d")
    sign = torch.randint(0, 2, (n, 1), generator=generator, dtype=torch.float64) * 2 - 1
    noise = torch.randn(n, 1, generator=generator, dtype=torch.float64)
    return (3.0 * sign + noise).to(dtype)


def bimodal_1d_log_prob(x: torch.Tensor) -> torch.Tensor:
    """Exact log density, shape (n,), of :func:`bimodal_1d` at ``x`` of shape (n, 1)."""
    x = _check_points(x, 1, "bimodal_1d_log_prob")
    m = torch.tensor(BIMODAL_MEANS, dtype=x.dtype, device=x.device)
    sq = (x - m[None, :]) ** 2  # (n, 2)
    return torch.logsumexp(-0.5 * sq, dim=1) - math.log(2.0) - 0.5 * math.log(2 * math.pi)
