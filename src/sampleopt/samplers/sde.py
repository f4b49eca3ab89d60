"""Continuous time: an SDE on a time grid, and the same SDE with a control.

:class:`SDEChain` discretises

    dX = [L X + n(X, t)] dt + g(t) dW,   X_{t_0} ~ p_0,   on t_0 < t_1 < .. < t_K,

as a Gaussian chain (docs/methods.md section 1; docs/soc.md section 1) with the linear
part integrated exactly (an exponential integrator) and the rest by Euler-Maruyama:

    m(x, k) = e^{L dt_k} x + dt_k n(x, t_k),     s_k = g(t_k) sqrt(dt_k).

With L = 0 this is plain Euler-Maruyama. Every estimator of the library applies to it.
``memoryless`` states whether X_{t_K} is independent of X_{t_0} under the chain (the
reverse SDE of a VP diffusion run to full noise is; an OU noising stopped early is not).

:class:`ControlledChain` adds a control to any base chain that has a time grid:

    m_u(x, k) = m_base(x, k) + s_k sqrt(dt_k) u(x, t_k)       (drift b + g u),

so its path KL to the base is sum_k |u(x_k, t_k)|^2 dt_k / 2: the control cost of
stochastic optimal control is the library's path KL (docs/soc.md section 1). With
``parameterization="costate"`` the network is a co-state phi and u = -g phi (the
time-reversed BSDE's parameterisation), and ``feedback=False`` switches the control off
while phi is still fitted (policy evaluation of the base, the linear benchmark).
``initial=`` a learnable :class:`~sampleopt.samplers.initial.InitialLaw` replaces the
base's initial law; its KL to the base's is then part of the cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from sampleopt.errors import UsageError
from sampleopt.samplers.chain import GaussianChain
from sampleopt.samplers.initial import InitialLaw

PARAMETERIZATIONS = ("control", "costate")


def _time_grid(times) -> torch.Tensor:
    t = torch.as_tensor(times, dtype=torch.float64).reshape(-1)
    if t.numel() < 2 or not torch.isfinite(t).all() or not (t.diff() > 0).all():
        raise UsageError(
            f"times must be a strictly increasing grid of at least 2 finite values, got {times}"
        )
    return t


class SDEChain(GaussianChain):
    """dX = [L X + n(X, t)] dt + g(t) dW on ``times`` from ``initial`` (see module doc).

    ``drift``: n(x, t) -> like x, with t a float (None: no nonlinear part); ``diffusion``:
    g as a number or a function of t; ``linear``: L as a number or a (d, d) matrix (None:
    0).
    """

    def __init__(
        self,
        initial: InitialLaw,
        times: Sequence[float],
        *,
        drift: Callable | None = None,
        diffusion: float | Callable[[float], float] = 1.0,
        linear=None,
        memoryless: bool = False,
    ):
        super().__init__()
        if not isinstance(initial, InitialLaw):
            raise UsageError(f"initial must be an InitialLaw, got {type(initial).__name__}")
        self.initial = initial
        self.grid = _time_grid(times)
        self.num_steps = self.grid.numel() - 1
        self.drift = drift
        self.memoryless = bool(memoryless)
        g = diffusion if callable(diffusion) else (lambda t, c=float(diffusion): c)
        self._g = [float(g(float(t))) for t in self.grid[:-1]]
        if any(not math.isfinite(v) or v < 0 for v in self._g):
            raise UsageError(f"the diffusion g(t) must be finite and >= 0 on the grid: {self._g}")
        d = initial.shape[0]
        self._linear = self._exp_linear(linear, d)

    def _exp_linear(self, linear, d):
        if linear is None:
            return None
        L = torch.as_tensor(linear, dtype=torch.float64)
        if L.ndim == 0:
            return [math.exp(float(L) * dt) for dt in self.dts()]
        if L.shape != (d, d):
            raise UsageError(
                f"linear must be a number or a ({d}, {d}) matrix, got {tuple(L.shape)}"
            )
        mats = torch.stack([torch.linalg.matrix_exp(L * dt) for dt in self.dts()])
        self.register_buffer("_expL", mats)  # float64; cast to the state's dtype in mean()
        return "matrix"

    @property
    def state_shape(self):
        return self.initial.shape

    def dts(self) -> list[float]:
        return self.grid.diff().tolist()

    def times(self) -> list[float]:
        """t_0 .. t_K."""
        return self.grid.tolist()

    def diffusion(self, k: int) -> float:
        """g(t_k)."""
        return self._g[k]

    def linear_coefficient(self, k: int):
        """e^{L dt_k} (a number, or a (d, d) tensor), the linear part of step k's mean."""
        if self._linear is None:
            return 1.0
        if self._linear == "matrix":
            return self._expL[k]
        return self._linear[k]

    def mean(self, x, k):
        c = self.linear_coefficient(k)
        m = x @ c.to(x.dtype).T if isinstance(c, torch.Tensor) else x * c
        if self.drift is not None:
            t = float(self.grid[k])
            m = m + self.dts()[k] * self.drift(x, t)
        return m

    def noise_scale(self, k):
        return self._g[k] * math.sqrt(self.dts()[k])

    def sample_x0(self, n, generator=None):
        return self.initial.sample(n, generator)


def grid_of(chain: GaussianChain) -> list[float]:
    """The time grid t_0 .. t_K of a chain that has one (SDE chains; diffusion samplers
    run from t = 0, noise, to t = 1, data, t_k = 1 - tau_k / T)."""
    times = getattr(chain, "times", None)
    if callable(times):
        return list(times())
    if hasattr(chain, "timesteps") and hasattr(chain, "schedule"):
        T = chain.schedule.num_train_steps
        return [1 - tau / T for tau in chain.timesteps]
    raise UsageError(
        f"{type(chain).__name__} has no time grid; a controlled chain needs a base with one "
        "(an SDEChain or a diffusion sampler)"
    )


class ControlledChain(GaussianChain):
    """A base chain plus a control network (see the module docstring).

    ``control``: a module (x (n, *state), t (n,) float) -> like x. The base is frozen;
    the trainable parameters are the control's (and a learnable initial law's).
    """

    def __init__(
        self,
        base: GaussianChain,
        control: nn.Module,
        *,
        parameterization: str = "control",
        feedback: bool = True,
        initial: InitialLaw | None = None,
    ):
        super().__init__()
        if not isinstance(base, GaussianChain):
            raise UsageError(f"base must be a sampler (a GaussianChain), got {type(base).__name__}")
        if not callable(control):
            raise UsageError(f"control must be a network u(x, t), got {type(control).__name__}")
        if parameterization not in PARAMETERIZATIONS:
            raise UsageError(
                f"parameterization must be one of {', '.join(PARAMETERIZATIONS)}, "
                f"got {parameterization!r}"
            )
        if initial is not None and not isinstance(initial, InitialLaw):
            raise UsageError(f"initial must be an InitialLaw, got {type(initial).__name__}")
        self.base = base.requires_grad_(False)
        self.control = control
        self.parameterization = parameterization
        self.feedback = bool(feedback)
        self.initial = initial
        self.num_steps = base.num_steps
        self.grid = torch.tensor(grid_of(base), dtype=torch.float64)
        self._scale = [  # s_k sqrt(dt_k) = g dt, what multiplies u in the mean
            float(base.noise_scale(k)) * math.sqrt(float(dt))
            for k, dt in enumerate(self.grid.diff().tolist())
        ]
        if initial is not None and tuple(initial.shape) != tuple(base.state_shape):
            raise UsageError(
                f"the initial law draws states of shape {tuple(initial.shape)}, the base "
                f"{tuple(base.state_shape)}"
            )

    @property
    def memoryless(self) -> bool:
        return bool(getattr(self.base, "memoryless", False))

    @property
    def learns_initial_law(self) -> bool:
        return self.initial is not None and self.initial.learnable

    @property
    def state_shape(self):
        return self.base.state_shape

    def times(self):
        return self.grid.tolist()

    def linear_coefficient(self, k):
        return getattr(self.base, "linear_coefficient", lambda k: 1.0)(k)

    def network(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """The control (or co-state) network at (x, t_k), shape-checked."""
        t = torch.full((x.shape[0],), float(self.grid[k]), dtype=x.dtype, device=x.device)
        out = self.control(x, t)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise UsageError(
                f"the {self.parameterization} network must return the state's shape "
                f"{tuple(x.shape)}, got {got}"
            )
        return out

    def costate(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """phi(x, t_k) of the costate parameterisation (docs/soc.md section 3)."""
        if self.parameterization != "costate":
            raise UsageError("costate() needs parameterization='costate'")
        return self.network(x, k)

    def mean(self, x, k):
        m = self.base.mean(x, k)
        if not self.feedback:
            return m
        out = self.network(x, k)
        s = float(self.base.noise_scale(k))
        if self.parameterization == "costate":  # u = -g phi: g dt u = -s_k^2 phi
            return m - (s * s) * out
        return m + self._scale[k] * out

    def noise_scale(self, k):
        return self.base.noise_scale(k)

    def sample_x0(self, n, generator=None):
        law = self.initial if self.initial is not None else None
        return law.sample(n, generator) if law is not None else self.base.sample_x0(n, generator)
