"""Directional derivatives of a vector field f: R^{n x state} -> R^{n x state} acting
row-wise, for the Ito terms of the time-reversed BSDE (docs/soc.md section 3).

* :func:`jvp`: J_f(x) v, one forward-mode pass (torch.func.jvp).
* :func:`laplacian`: the vector (tr Hess f_i(x))_i, by reverse-over-reverse autodiff
  (which every module with a double backward supports; nested forward mode does not
  cover SiLU): ``"exact"`` takes d_i^2 f_i / dx_j^2 for every pair (d^2 double-backward
  passes, for low dimension); ``"hutchinson"`` draws Rademacher vectors u and v and uses
  u_i * v^T Hess(u . f) v, whose expectation over u and v is tr Hess f_i (independent
  signs make the cross terms vanish): one backward and one double-backward pass per probe,
  in any dimension.
"""

from __future__ import annotations

import torch
from torch.func import jvp as _jvp

from sampleopt.errors import UsageError

TRACES = ("exact", "hutchinson")


def _fail(exc):
    return UsageError(
        f"could not differentiate the co-state in x: {exc}. Its network and the reward must "
        "be differentiable torch operations (twice, for the trace term)"
    )


def jvp(f, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """J_f(x) v for every sample at once (f acts row-wise)."""
    try:
        return _jvp(f, (x,), (v,))[1]
    except UsageError:
        raise
    except RuntimeError as exc:
        raise _fail(exc) from None


def _rademacher(like, generator):
    v = torch.randint(0, 2, like.shape, generator=generator, device=like.device)
    return (2 * v - 1).to(like.dtype)


def laplacian(
    f, x: torch.Tensor, *, trace: str = "exact", probes: int = 1, generator=None
) -> torch.Tensor:
    """(tr Hess f_i(x))_i, shape like x: exact or Hutchinson's estimate (module doc)."""
    if trace not in TRACES:
        raise UsageError(f"trace must be one of {', '.join(TRACES)}, got {trace!r}")
    try:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            y = f(xg)
            if not y.requires_grad:  # f does not depend on x: no curvature
                return torch.zeros_like(x)
            if trace == "exact":
                return _exact(y, xg)
            return _hutchinson(y, xg, probes, generator)
    except UsageError:
        raise
    except RuntimeError as exc:
        raise _fail(exc) from None


def _exact(y, x):
    n = x.shape[0]
    yf, out = y.reshape(n, -1), torch.zeros(n, y[0].numel(), dtype=x.dtype, device=x.device)
    for i in range(yf.shape[1]):
        (g,) = torch.autograd.grad(yf[:, i].sum(), x, create_graph=True, allow_unused=True)
        if g is None or not g.requires_grad:  # f_i is affine in x
            continue
        gf = g.reshape(n, -1)
        for j in range(gf.shape[1]):
            (h,) = torch.autograd.grad(gf[:, j].sum(), x, retain_graph=True, allow_unused=True)
            if h is not None:
                out[:, i] += h.reshape(n, -1)[:, j]
    return out.reshape(x.shape)


def _hutchinson(y, x, probes, generator):
    out = torch.zeros_like(x)
    for p in range(probes):
        u, v = _rademacher(y, generator), _rademacher(x, generator)
        (g,) = torch.autograd.grad((y * u).sum(), x, create_graph=True, allow_unused=True)
        if g is None or not g.requires_grad:  # f is affine in x
            return out
        (hv,) = torch.autograd.grad(
            (g * v).sum(), x, retain_graph=p < probes - 1, allow_unused=True
        )
        if hv is None:
            return out
        quad = (hv * v).flatten(1).sum(1).reshape(-1, *([1] * (x.ndim - 1)))
        out = out + u * quad
    return out / probes
