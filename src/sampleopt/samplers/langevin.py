"""The unadjusted Langevin algorithm (ULA) as a Gaussian chain.

x_{k+1} = x_k - gamma * grad_x V_theta(x_k) + sqrt(2 gamma) * xi_k   (docs/methods.md section 2)

Its stationary law approaches pi_theta ∝ exp(-V_theta) as gamma -> 0; at finite
gamma it is biased by O(gamma) (for a quadratic V the bias is exact:
:meth:`QuadraticPotential.ula_stationary`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from sampleopt.errors import UsageError
from sampleopt.samplers.chain import GaussianChain
from sampleopt.samplers.potentials import Potential


class LangevinSampler(GaussianChain):
    """ULA on ``potential`` with step ``gamma`` for ``num_steps`` steps.

    ``x0`` draws the starting points: a callable ``(n, generator) -> (n, d)``; the
    default is N(0, init_scale^2 I).
    """

    def __init__(
        self,
        potential: Potential,
        gamma: float,
        num_steps: int = 100,
        *,
        init_scale: float = 1.0,
        x0: Callable[[int, torch.Generator | None], torch.Tensor] | None = None,
    ):
        super().__init__()
        if not isinstance(potential, Potential):
            raise UsageError(
                "LangevinSampler needs a sampleopt Potential; wrap a function V(x, theta) "
                "in FunctionPotential(fn, theta, dim)"
            )
        if not (isinstance(gamma, int | float) and gamma > 0 and math.isfinite(gamma)):
            raise UsageError(f"Langevin step gamma must be a positive number, got {gamma!r}")
        if int(num_steps) < 0:
            raise UsageError(f"num_steps must be >= 0, got {num_steps}")
        self.potential = potential
        self.gamma = float(gamma)
        self.num_steps = int(num_steps)
        self.init_scale = float(init_scale)
        self._x0 = x0
        self._s = math.sqrt(2.0 * self.gamma)

    @property
    def dim(self) -> int:
        return self.potential.dim

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    def mean(self, x, k=0):
        create = torch.is_grad_enabled() and (
            x.requires_grad or any(p.requires_grad for p in self.potential.parameters())
        )
        return torch.add(x, self.potential.grad_x(x, create_graph=create), alpha=-self.gamma)

    def step_with_grad(self, x, grad_x, noise):
        """One ULA step given grad_x V(x) already computed (shared with an estimator)."""
        return torch.add(x, grad_x, alpha=-self.gamma).add_(noise, alpha=self._s)

    def noise_scale(self, k=0):
        return self._s

    def sample_x0(self, n, generator=None):
        if self._x0 is not None:
            return self._x0(n, generator)
        p = next(self.potential.parameters(), None)
        dtype = p.dtype if p is not None else torch.get_default_dtype()
        device = p.device if p is not None else None
        return self.init_scale * torch.randn(
            n, self.dim, generator=generator, dtype=dtype, device=device
        )

    def with_potential(self, potential: Potential) -> LangevinSampler:
        """The same chain (step, length, start) on another potential, e.g. the reference."""
        return LangevinSampler(
            potential, self.gamma, self.num_steps, init_scale=self.init_scale, x0=self._x0
        )
