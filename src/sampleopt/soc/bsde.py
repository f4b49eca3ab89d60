"""The time-reversed BSDE's regression targets (docs/soc.md section 3).

For the co-state Y = grad V of the control problem (units: soc/common.py), along the
controlled process dX = f dt + g dW with f = b + g u, Ito's formula in reverse time,
with the marginal score s = grad log p_t of the controlled process, gives (docs/soc.md
eq. (3.3))

    X_k = c_k^{-1} (X_{k+1} - rest_k(X_{k+1})) + s_k^2 s(X_{k+1}) + s_k xi_k,
    Y_k = J_x m_base(X_k, k)^T Y_{k+1}
          + s_k^2 [ (tr Hess phi_{k+1,i}(X_{k+1}))_i + J phi_{k+1}(X_{k+1}) s(X_{k+1}) ]
          + s_k J phi_{k+1}(X_{k+1}) xi_k,

from X_K (the forward samples) and Y_K = -grad r(X_K) / lam, with m(x, k) = c_k x +
rest_k(x) the controlled chain's step (its linear part c_k inverted exactly, the
exponential integrator), xi_k fresh backward noise used in *both* lines, phi_{k+1} the
current co-state estimate and J_x m_base^T Y one vector-Jacobian product of the base
step (its exact linear part again). If phi is the true co-state, Y_k = phi(t_k, X_k) on
every path: the target is adapted and carries no martingale noise, unlike the lean
adjoint, whose conditional mean is the same co-state. :class:`CostateTargets` builds
(X_k, Y_k) for a batch of forward paths (or the lean adjoint's (x_k, a_k), the
non-adapted baseline); :func:`costate_loss` regresses phi on them with a Huber loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sampleopt.errors import UsageError
from sampleopt.samplers.sde import grid_of
from sampleopt.soc.common import costate_fn, lean_adjoint
from sampleopt.soc.derivatives import TRACES, jvp, laplacian
from sampleopt.soc.networks import TimeField
from sampleopt.soc.score import DenoiserScore, TransitionScore

TARGETS = ("tr-bsde", "lean")
INCREMENTS = ("milstein", "ito")


def _apply_inverse(c, x: torch.Tensor) -> torch.Tensor:
    if isinstance(c, torch.Tensor) and c.ndim == 2:
        flat = x.reshape(x.shape[0], -1)
        return torch.linalg.solve(c.to(x.dtype), flat.T).T.reshape(x.shape)
    return x / c


def _apply(c, x: torch.Tensor) -> torch.Tensor:
    if isinstance(c, torch.Tensor) and c.ndim == 2:
        return (x.reshape(x.shape[0], -1) @ c.to(x.dtype).T).reshape(x.shape)
    return x * c


class CostateTargets:
    """Regression targets for the co-state of ``sampler`` (the controlled chain) against
    its ``reference`` (the base): see the module docstring.

    ``terminal``: x -> Y_K(x) = grad of the terminal cost, torch.func-transformable.
    ``score``: None (a :class:`~sampleopt.soc.TimeField` fitted on the rollouts), a
    module (fitted, warm-started across rounds) or a plain function s(x, t) (used as
    given, e.g. an exact score). ``trace``: "exact" (one second derivative per
    coordinate) or "hutchinson" (``probes`` Rademacher probes); "auto" picks exact up to
    8 coordinates.
    """

    def __init__(
        self,
        sampler,
        reference,
        terminal,
        *,
        target: str = "tr-bsde",
        trace: str = "auto",
        probes: int = 1,
        score=None,
        score_iterations: int = 200,
        score_lr: float = 1e-3,
        score_batch: int = 512,
        increment: str = "milstein",
    ):
        if target not in TARGETS:
            raise UsageError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        dim = 1
        for v in sampler.state_shape:
            dim *= int(v)
        if trace == "auto":
            trace = "exact" if dim <= 8 else "hutchinson"
        if trace not in TRACES:
            raise UsageError(f"trace must be auto, exact or hutchinson, got {trace!r}")
        if isinstance(probes, bool) or not isinstance(probes, int) or probes < 1:
            raise UsageError(f"probes must be a positive integer, got {probes!r}")
        self.sampler, self.reference, self.terminal = sampler, reference, terminal
        if increment not in INCREMENTS:
            raise UsageError(f"increment must be one of {', '.join(INCREMENTS)}, got {increment!r}")
        self.target, self.trace, self.probes = target, trace, probes
        self.increment = increment
        self.times = grid_of(sampler)
        self.scales = [float(sampler.noise_scale(k)) for k in range(sampler.num_steps)]
        self.score_iterations = int(score_iterations)
        if score is None and hasattr(reference, "schedule") and hasattr(reference, "eps"):
            score = DenoiserScore(reference)
        if score is None:
            p = next(iter(sampler.parameters()), None)
            score = TimeField(dim, hidden=64, blocks=2, zero_init=False).to(
                dtype=p.dtype if p is not None else torch.get_default_dtype(),
                device=p.device if p is not None else None,
            )
        if isinstance(score, torch.nn.Module):
            self.score = TransitionScore(score, lr=score_lr, batch=score_batch)
        elif callable(score):
            self.score, self.score_iterations = score, 0
        else:
            raise UsageError(f"score must be None, a module or a function s(x, t), got {score!r}")
        self.score_loss = float("nan")

    def lean(self, path: torch.Tensor, y_K: torch.Tensor):
        """The non-adapted baseline: (x_k, a_k) for k < K along the forward paths."""
        adj, _ = lean_adjoint(self.reference, path, y_K)
        return path[:-1], adj[:-1]

    def __call__(self, path, noises, y_K, generator=None, *, lean: bool = False):
        """(X_k, Y_k) for k = 0 .. K-1, each (K, n, ...), from forward ``path`` (K + 1, n,
        ...) with its ``noises`` (K, n, ...) and terminal co-states ``y_K``."""
        if lean or self.target == "lean":
            return self.lean(path, y_K)
        if isinstance(self.score, TransitionScore) and self.score_iterations:
            self.score_loss = self.score.fit(
                path, noises, self.scales, self.times, self.score_iterations, generator
            )
        K = path.shape[0] - 1
        xs, ys = torch.empty_like(path[:-1]), torch.empty_like(path[:-1])
        x, y = path[K], y_K
        for k in reversed(range(K)):
            x, y = self.step(x, y, k, generator)
            xs[k], ys[k] = x, y
        return xs, ys

    def step(self, x1, y1, k: int, generator=None):
        """One reversed step: (X_{k+1}, Y_{k+1}) -> (X_k, Y_k)."""
        s = self.scales[k]
        sampler = self.sampler
        with torch.no_grad():
            c = sampler.linear_coefficient(k)
            rest = sampler.mean(x1, k) - _apply(c, x1)
            x0 = _apply_inverse(c, x1 - rest)
            corr = torch.zeros_like(x1)
            if s > 0:
                xi = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
                sc = self.score_at(x1, k + 1)
                x0 = x0 + s * s * sc + s * xi
                phi = (
                    self.terminal
                    if k + 1 == sampler.num_steps
                    else costate_fn(sampler, self.reference, k + 1)
                )
                move = s * xi + s * s * sc
                lap = laplacian(phi, x1, trace=self.trace, probes=self.probes, generator=generator)
                if self.increment == "ito":  # J phi move + s^2 tr Hess phi
                    corr = jvp(phi, x1, move) + s * s * lap
                else:  # phi(x1 + move) - phi(x1) + s^2 / 2 tr Hess phi (see the docstring)
                    corr = phi(x1 + move) - phi(x1) + 0.5 * s * s * lap
        with torch.enable_grad():
            xk = x0.detach().requires_grad_(True)
            m = self.reference.mean(xk, k)
            (y0,) = torch.autograd.grad(m, xk, grad_outputs=y1)
        return x0.detach(), (y0 + corr).detach()

    def score_at(self, x: torch.Tensor, k: int) -> torch.Tensor:
        t = self.times[k]
        if isinstance(self.score, TransitionScore):
            return self.score(x, t)
        out = self.score(x, t)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UsageError(f"the score must return the state's shape {tuple(x.shape)}, got {got}")
        return out


def costate_loss(sampler, reference, xs, ys, steps, huber: float | None) -> torch.Tensor:
    """mean over the chosen steps and the paths of sum_dims Huber(phi_k(X_k) - Y_k)
    (squared error / 2 when ``huber`` is None)."""
    total = xs.new_zeros(())
    for k in steps:
        pred = costate_fn(sampler, reference, k)(xs[k])
        if huber is None:
            err = 0.5 * (pred - ys[k]) ** 2
        else:
            err = F.huber_loss(pred, ys[k], delta=huber, reduction="none")
        total = total + err.flatten(1).sum(1).mean()
    return total / len(steps)
