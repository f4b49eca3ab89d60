"""The memoryless SDE of a flow-matching model (docs/soc.md section 1).

A flow-matching model has a velocity v(x, t) for the linear interpolant

    x_t = t x_1 + (1 - t) x_0,   x_0 ~ N(0, I) (noise),  x_1 ~ data,  t in [0, 1],

and its probability-flow ODE dX = v dt carries N(0, I) at t = 0 to the data at t = 1.
For this interpolant the score is score(x, t) = (t v(x, t) - x) / (1 - t). For any noise
schedule g(t) the SDE

    dX = [v + g^2 / 2 score] dt + g dW

has the same marginals as the ODE (its Fokker-Planck equation differs from the ODE's by
the term g^2 / 2 (Laplacian p - div(p score)), which vanishes because p score = grad p).
The memoryless schedule of Adjoint Matching (Domingo-Enrich et al., ICLR 2025) is

    g(t) = sqrt(2 (1 - t) / t),

and with it g^2 / 2 score = ((1 - t) / t) (t v - x) / (1 - t) = v - x / t, so

    dX = [2 v(x, t) - x / t] dt + g(t) dW.

Under it X_1 is independent of X_0: the noise is so strong near t = 0 that the end
forgets the start, which is what makes the optimum of reward fine-tuning with a path KL
the tilted law p_base exp(r / lam) (docs/soc.md section 1).

The discretisation. g blows up at t = 0, so the chain runs on the uniform grid
t_0 < .. < t_K = t1 with t_0 > 0, as plain Euler-Maruyama (an :class:`SDEChain` with drift
2 v - x / t and g evaluated at the left end t_k of each step). The start is

    x_{t_0} ~ N(0, (1 - t_0)^2 I),

the law of (1 - t_0) x_0, which differs from the true marginal of t_0 x_1 + (1 - t_0) x_0
by the t_0 x_1 part only. With memoryless noise the start hardly matters: for Gaussian
data N(mu, c^2 I) the correlation of X_{t_0} and X_1 is c t_0 / sd(X_{t_0}), O(t_0).

The default t_0 is one step size, t_0 = t1 / (steps + 1), so that the grid is
t_k = (k + 1) t1 / (steps + 1): Euler's factor 1 - dt / t_0 on x in the first step is
then exactly 0, and that step already forgets x_{t_0} up to the O(dt) term dt 2 v. A
t_0 much smaller than the step overshoots (the factor is 1 - dt / t_0 << -1) and sends
the early states far outside the marginals (variance about (dt / t_0)^2) before the noise
forgets them; refine the grid rather than shrinking t_0 alone.

The end. The default is t1 = 1: the last step starts at t_{K-1} < 1, where g > 0, so
every step of the chain adds noise and the path KL to it is finite, and neither v nor the
score is evaluated at t = 1. Stopping earlier, at t1 = 1 - h, ends at the marginal of
x_{1-h} (for Gaussian data: mean (1 - h) mu, variance (1 - h)^2 c^2 + h^2), a bias of
order h; pass t1 < 1 if the velocity must not be evaluated close to 1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from sampleopt.errors import UsageError
from sampleopt.samplers.initial import Gaussian
from sampleopt.samplers.sde import SDEChain


def memoryless_diffusion(t: float) -> float:
    """g(t) = sqrt(2 (1 - t) / t), the memoryless noise schedule of the linear
    interpolant (docs/soc.md section 1); t in (0, 1]."""
    return math.sqrt(2.0 * (1.0 - t) / t)


class MemorylessDrift(nn.Module):
    """n(x, t) = 2 v(x, t) - x / t for a python-float t, from a velocity v(x, t) that takes
    t as a (n,) tensor (docs/soc.md section 1). A velocity that is a module becomes a
    submodule, so it moves with the chain."""

    def __init__(self, velocity: Callable):
        super().__init__()
        self.velocity = velocity

    def forward(self, x: torch.Tensor, t: float) -> torch.Tensor:
        tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        v = self.velocity(x, tt)
        if not isinstance(v, torch.Tensor) or v.shape != x.shape:
            got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
            raise UsageError(
                f"the velocity must return the state's shape {tuple(x.shape)}, got {got}"
            )
        return 2.0 * v - x / t


def _dim(shape) -> int:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    ok = isinstance(shape, Sequence) and len(shape) == 1
    ok = ok and isinstance(shape[0], int) and not isinstance(shape[0], bool) and shape[0] >= 1
    if not ok:
        raise UsageError(
            f"dim_or_shape must be a positive int or a one-entry shape (d,) (SDE chains run "
            f"on flat vectors), got {shape!r}"
        )
    return shape[0]


def _time(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise UsageError(f"{name} must be finite, got {value}")
    return value


class MemorylessFlowSDE(SDEChain):
    """The memoryless SDE dX = [2 v - x / t] dt + sqrt(2 (1 - t) / t) dW of a flow-matching
    velocity v, as an :class:`SDEChain` (see the module doc; docs/soc.md section 1).

    ``velocity``: a callable or module v(x (n, d), t (n,)) -> (n, d), the velocity of
    x_t = t x_1 + (1 - t) x_0 with x_0 the noise. ``dim_or_shape``: d or (d,).
    ``steps``: K Euler-Maruyama steps on the uniform grid from ``t0`` to ``t1``.
    ``t0``: the start, in (0, t1); default t1 / (steps + 1), one step size. ``t1``: the
    end, in (t0, 1]; default 1. The chain starts from N(0, (1 - t0)^2 I) and is
    ``memoryless``.
    """

    def __init__(
        self,
        velocity: Callable,
        dim_or_shape: int | Sequence[int],
        *,
        steps: int = 100,
        t0: float | None = None,
        t1: float = 1.0,
    ):
        if not callable(velocity):
            raise UsageError(f"velocity must be a callable v(x, t), got {type(velocity).__name__}")
        d = _dim(dim_or_shape)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise UsageError(f"steps must be a positive integer, got {steps!r}")
        t1 = _time("t1", t1)
        if not 0.0 < t1 <= 1.0:
            raise UsageError(f"t1 must be in (0, 1] (the data are at t = 1), got {t1}")
        t0 = t1 / (steps + 1) if t0 is None else _time("t0", t0)
        if not 0.0 < t0 < t1:
            raise UsageError(
                f"t0 must be in (0, t1) = (0, {t1}): the memoryless noise "
                f"sqrt(2 (1 - t) / t) is infinite at t = 0, got t0 = {t0}"
            )
        times = torch.linspace(t0, t1, steps + 1, dtype=torch.float64)
        initial = Gaussian(torch.zeros(d), 1.0 - t0)
        super().__init__(
            initial,
            times,
            drift=MemorylessDrift(velocity),
            diffusion=memoryless_diffusion,
            memoryless=True,
        )
        self.t0, self.t1 = t0, t1

    @property
    def velocity(self) -> Callable:
        """The flow-matching velocity v(x, t) the chain was built from."""
        return self.drift.velocity

    def score(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """score(x, t) = (t v(x, t) - x) / (1 - t), the score of the marginal at t < 1
        implied by the velocity (docs/soc.md section 1)."""
        if not 0.0 < t < 1.0:
            raise UsageError(f"the score needs t in (0, 1), got {t}")
        tt = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        return (t * self.velocity(x, tt) - x) / (1.0 - t)
