"""Exact closed forms of the 1-D bimodal stochastic-optimal-control benchmark.

The benchmark of docs/soc.md section 5, in float64 throughout.

Data and base. The data law is p_data = 1/2 N(-3, 1) + 1/2 N(3, 1). The forward noising
is the OU process dX = -2 X ds + 2 dW on s in [0, 1], so x_s | x_data ~ N(a_s x_data,
1 - a_s^2) with a_s = e^{-2s}. Each component keeps variance 1 (a_s^2 + 1 - a_s^2 = 1),
so the forward marginal is 1/2 N(-3 a_s, 1) + 1/2 N(3 a_s, 1). Generative time is
t = 1 - s (t = 0 noise, t = 1 data). The base generative SDE is the exact time reversal

    dX = [2 X + 4 score_t(X)] dt + 2 dW,    X_0 ~ p_0 = 1/2 N(-3e^{-2}, 1) + 1/2 N(3e^{-2}, 1),

where score_t is the score of the forward marginal at level s = 1 - t.

Control problem. Terminal cost l(x) = (x - 3)^2 / 2 (reward r = -l), temperature lam.
The cost is J = E[l(X_1) / lam + int_0^1 |u|^2 / 2 dt] with controlled drift b + 2 u; the
value is V(t, x) = -log E_base[exp(-l(X_1) / lam) | X_t = x] and u* = -2 dV/dx.

Posterior. Given X_t = x (level s = 1 - t, a = a_s) the data is a Gaussian mixture:
component j (mean mu_j = -3 or 3) has weight w_j(x) proportional to 1/2 N(x; a mu_j, 1)
and conditional law N(m_j, v) with m_j = mu_j + a (x - a mu_j) and v = 1 - a^2. With the
Gaussian integral E[exp(-(z - 3)^2 / (2 lam))] = sqrt(lam / (lam + v)) exp(-(m - 3)^2 /
(2 (lam + v))) for z ~ N(m, v), V is a log-sum-exp of two closed-form terms; every
derivative below is written out from it (d m_j / dx = a, d log N(x; a mu_j, 1) / dx =
a mu_j - x).

Optimal marginals. Under u* with the initial law fixed to p_0, the optimal path measure
is the base reweighted by exp(-l(X_1)/lam + V(0, X_0)); by the Markov property its
marginal is p*_t(x) = p_t(x) exp(-V(t, x)) E[exp(V(0, X_0)) | X_t = x], and under the base
X_0 | X_t = x is the forward OU from level 1 - t to level 1, N(e^{-2t} x, 1 - e^{-4t}).
That expectation is taken by Gauss-Hermite quadrature. When the initial law is learned as
well, the optimal path measure is the base tilted by exp(-l/lam) / Z, Z = exp(-J_learned).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sampleopt.errors import UsageError
from sampleopt.samplers import GaussianMixture, SDEChain

F64 = torch.float64
MEANS = (-3.0, 3.0)
TARGET = 3.0
_LOG_HALF = math.log(0.5)
_LOG_2PI = math.log(2 * math.pi)
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)
_GH_NODES = torch.tensor(_NODES, dtype=F64)
# hermegauss integrates against exp(-z^2 / 2); dividing by sqrt(2 pi) gives E over N(0, 1)
_GH_LOGW = torch.tensor(np.log(_WEIGHTS) - 0.5 * _LOG_2PI, dtype=F64)


def _check_t(t) -> float:
    t = float(t)
    if not (0.0 <= t <= 1.0):
        raise UsageError(f"t must be a generative time in [0, 1], got {t}")
    return t


def _flat(x) -> tuple[torch.Tensor, tuple[int, ...]]:
    x = torch.as_tensor(x, dtype=F64)
    if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[1] != 1):
        raise UsageError(f"x must have shape (n,) or (n, 1), got {tuple(x.shape)}")
    return x.reshape(-1), tuple(x.shape)


def _alpha(t: float) -> float:
    """a_s = e^{-2s} at the forward level s = 1 - t of generative time t."""
    return math.exp(-2.0 * (1.0 - t))


def _component_terms(x: torch.Tensor, t: float):
    """log(1/2 N(x; a mu_j, 1)) and its x-derivative a mu_j - x, each (n, 2)."""
    mu = torch.tensor(MEANS, dtype=F64)
    d = _alpha(t) * mu - x[:, None]
    return _LOG_HALF - 0.5 * (d * d + _LOG_2PI), d


def _marginal_score_flat(x: torch.Tensor, t: float) -> torch.Tensor:
    logc, dlogc = _component_terms(x, t)
    return (torch.softmax(logc, 1) * dlogc).sum(1)


def _gaussian_log_prob(x: torch.Tensor, shift: float) -> torch.Tensor:
    """log(1/2 N(x; -shift, 1) + 1/2 N(x; shift, 1))."""
    d = x[:, None] - torch.tensor([-shift, shift], dtype=F64)
    return torch.logsumexp(_LOG_HALF - 0.5 * (d * d + _LOG_2PI), 1)


def base_chain(steps: int = 50, score=None) -> SDEChain:
    """The base generative SDE on a uniform grid of ``steps`` steps: linear part 2 x
    (integrated exactly), nonlinear drift 4 score(x, t), diffusion 2, from p_0.
    ``score``: an optional replacement (x (n, 1), t float) -> (n, 1), e.g. a learned one."""
    if int(steps) < 1:
        raise UsageError(f"steps must be >= 1, got {steps}")
    fn = score if score is not None else marginal_score

    def drift(x, t):
        return 4.0 * fn(x, t)

    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)  # the mixture's buffers are built in the default dtype
    try:
        a1 = _alpha(0.0)
        p0 = GaussianMixture([-3.0 * a1, 3.0 * a1], 1.0)
    finally:
        torch.set_default_dtype(old)
    times = torch.linspace(0.0, 1.0, int(steps) + 1, dtype=F64)
    return SDEChain(p0, times, drift=drift, diffusion=2.0, linear=2.0, memoryless=False)


def marginal_score(x, t: float) -> torch.Tensor:
    """Score of the base's marginal at generative time t: sum_j w_j(x) (a mu_j - x)."""
    flat, shape = _flat(x)
    return _marginal_score_flat(flat, _check_t(t)).reshape(shape)


class BimodalOU:
    """The benchmark at temperature ``lam`` (beta = 1 / lam); see the module docstring.

    Methods take x of shape (n,) or (n, 1) and a float t in [0, 1] and return float64
    tensors shaped like x."""

    def __init__(self, lam: float):
        try:
            lam = float(lam)
        except (TypeError, ValueError):
            raise UsageError(f"lam must be a finite number > 0, got {lam!r}") from None
        if not math.isfinite(lam) or lam <= 0:
            raise UsageError(f"lam must be a finite number > 0, got {lam!r}")
        self.lam = lam

    # ----- data and base -------------------------------------------------------------
    def cost(self, y) -> torch.Tensor:
        """The terminal cost l(y) = (y - 3)^2 / 2."""
        flat, shape = _flat(y)
        return (0.5 * (flat - TARGET) ** 2).reshape(shape)

    def data_log_prob(self, x) -> torch.Tensor:
        flat, shape = _flat(x)
        return _gaussian_log_prob(flat, 3.0).reshape(shape)

    def sample_data(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws of p_data, shape (n, 1)."""
        sign = 2.0 * torch.randint(0, 2, (n, 1), generator=generator).to(F64) - 1.0
        return 3.0 * sign + torch.randn((n, 1), generator=generator, dtype=F64)

    def marginal_score(self, x, t: float) -> torch.Tensor:
        return marginal_score(x, t)

    def base_drift(self, x, t: float) -> torch.Tensor:
        """The nonlinear part 4 score_t(x) of the base drift (the linear part is 2 x)."""
        return 4.0 * marginal_score(x, t)

    def base_chain(self, steps: int = 50, score=None) -> SDEChain:
        return base_chain(steps, score)

    # ----- value, co-state, control ----------------------------------------------------
    def _posterior(self, x: torch.Tensor, t: float):
        """Unnormalised log weights, their x-derivatives, the means m_j and variance v."""
        a = _alpha(t)
        logc, dlogc = _component_terms(x, t)
        mu = torch.tensor(MEANS, dtype=F64)
        m = mu + a * (x[:, None] - a * mu)
        return logc, dlogc, m, 1.0 - a * a

    def _log_k(self, m: torch.Tensor, v: float) -> torch.Tensor:
        """log E[exp(-l(z)/lam)] for z ~ N(m, v)."""
        s = self.lam + v
        return 0.5 * math.log(self.lam / s) - (m - TARGET) ** 2 / (2.0 * s)

    def _value_flat(self, x: torch.Tensor, t: float) -> torch.Tensor:
        logc, _, m, v = self._posterior(x, t)
        logw = torch.log_softmax(logc, 1)
        return -torch.logsumexp(logw + self._log_k(m, v), 1)

    def value(self, x, t: float) -> torch.Tensor:
        """V(t, x) = -log sum_j w_j(x) sqrt(lam/(lam+v)) exp(-(m_j-3)^2 / (2 (lam+v)))."""
        flat, shape = _flat(x)
        return self._value_flat(flat, _check_t(t)).reshape(shape)

    def costate(self, x, t: float) -> torch.Tensor:
        """dV/dx in closed form. With c_j = 1/2 N(x; a mu_j, 1) and K_j the Gaussian
        integral, V = -log sum c_j K_j + log sum c_j, so dV/dx = -sum rho_j (a mu_j - x -
        a (m_j - 3) / (lam + v)) + score, rho_j proportional to c_j K_j."""
        flat, shape = _flat(x)
        t = _check_t(t)
        logc, dlogc, m, v = self._posterior(flat, t)
        rho = torch.softmax(logc + self._log_k(m, v), 1)
        dlogk = -_alpha(t) * (m - TARGET) / (self.lam + v)
        out = -(rho * (dlogc + dlogk)).sum(1) + _marginal_score_flat(flat, t)
        return out.reshape(shape)

    def optimal_control(self, x, t: float) -> torch.Tensor:
        """u*(t, x) = -g dV/dx with g = 2."""
        return -2.0 * self.costate(x, t)

    def evaluation_costate(self, x, t: float) -> torch.Tensor:
        """d/dx E_base[l(X_1)/lam | X_t = x] with E = sum_j w_j f_j, f_j = ((m_j - 3)^2 +
        v) / (2 lam): dE/dx = sum_j w_j [(a mu_j - x - score) f_j + a (m_j - 3) / lam]."""
        flat, shape = _flat(x)
        t = _check_t(t)
        logc, dlogc, m, v = self._posterior(flat, t)
        w = torch.softmax(logc, 1)
        score = (w * dlogc).sum(1, keepdim=True)
        f = ((m - TARGET) ** 2 + v) / (2.0 * self.lam)
        out = (w * ((dlogc - score) * f + _alpha(t) * (m - TARGET) / self.lam)).sum(1)
        return out.reshape(shape)

    # ----- optimal laws ------------------------------------------------------------------
    def _log_mean_exp_v0(self, mean: torch.Tensor, var: float) -> torch.Tensor:
        """log E[exp(V(0, z))] for z ~ N(mean, var), 80-node Gauss-Hermite."""
        z = mean[:, None] + math.sqrt(max(var, 0.0)) * _GH_NODES
        v0 = self._value_flat(z.reshape(-1), 0.0).reshape(z.shape)
        return torch.logsumexp(_GH_LOGW + v0, 1)

    def J_learned(self) -> float:
        """-log E_data[exp(-l/lam)] = -log sum_j 1/2 sqrt(lam/(lam+1)) exp(-(mu_j-3)^2 /
        (2 (lam + 1))): the optimal cost when the initial law is learned too."""
        mu = torch.tensor(MEANS, dtype=F64)
        return float(-torch.logsumexp(_LOG_HALF + self._log_k(mu, 1.0), 0))

    def J_fixed(self) -> float:
        """E_{X_0 ~ p_0}[V(0, X_0)]: Gauss-Hermite over each unit-variance component."""
        a = _alpha(0.0)
        z = torch.cat([a * mu + _GH_NODES for mu in MEANS])
        w = torch.cat([0.5 * _GH_LOGW.exp()] * 2)
        return float((w * self._value_flat(z, 0.0)).sum())

    def optimal_marginal_log_density(self, x, t: float, fixed_initial: bool = True):
        """log p*_t(x): log p_t - V(t, x) + log E[exp(V(0, X_0)) | X_t = x] with the initial
        law fixed, log p_t - V(t, x) + J_learned with it learned (both normalised)."""
        flat, shape = _flat(x)
        t = _check_t(t)
        out = _gaussian_log_prob(flat, 3.0 * _alpha(t)) - self._value_flat(flat, t)
        if fixed_initial:
            out = out + self._log_mean_exp_v0(math.exp(-2 * t) * flat, 1 - math.exp(-4 * t))
        else:
            out = out + self.J_learned()
        return out.reshape(shape)

    def optimal_marginal_score(self, x, t: float, fixed_initial: bool = True) -> torch.Tensor:
        """d/dx log p*_t(x): autograd of the fixed-initial density, and score - dV/dx in
        closed form with the initial law learned."""
        flat, shape = _flat(x)
        t = _check_t(t)
        if not fixed_initial:
            return self.marginal_score(flat, t).reshape(shape) - self.costate(flat, t).reshape(
                shape
            )
        with torch.enable_grad():
            xg = flat.detach().clone().requires_grad_(True)
            logp = self.optimal_marginal_log_density(xg, t, True)
            (g,) = torch.autograd.grad(logp.sum(), xg)
        return g.reshape(shape)

    def tilted_density(self, y) -> torch.Tensor:
        """p_data(y) exp(-l(y)/lam) / Z: the optimal terminal law, initial law learned."""
        flat, shape = _flat(y)
        out = _gaussian_log_prob(flat, 3.0) - 0.5 * (flat - TARGET) ** 2 / self.lam
        return (out + self.J_learned()).exp().reshape(shape)

    def fixed_optimal_density(self, y) -> torch.Tensor:
        """p_data(y) exp(-l(y)/lam) E_{z ~ N(e^{-2} y, 1 - e^{-4})}[exp(V(0, z))]: the
        terminal law under u* from the fixed p_0 (it integrates to 1 exactly)."""
        flat, shape = _flat(y)
        out = _gaussian_log_prob(flat, 3.0) - 0.5 * (flat - TARGET) ** 2 / self.lam
        out = out + self._log_mean_exp_v0(math.exp(-2.0) * flat, 1.0 - math.exp(-4.0))
        return out.exp().reshape(shape)

    def optimal_initial_log_density(self, x) -> torch.Tensor:
        """log[p_0(x) exp(-V(0, x)) / exp(-J_learned)]: the optimal learned initial law."""
        flat, shape = _flat(x)
        out = _gaussian_log_prob(flat, 3.0 * _alpha(0.0)) - self._value_flat(flat, 0.0)
        return (out + self.J_learned()).reshape(shape)
