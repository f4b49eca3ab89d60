"""Potentials V_theta(x): energies whose Gibbs law exp(-V_theta) Langevin samples.

A :class:`Potential` is a ``torch.nn.Module`` whose parameters are theta. It maps a
batch ``x`` of shape ``(n, d)`` to energies of shape ``(n,)``. Two derivatives are
what the samplers and estimators need, and both default to autograd:

* :meth:`Potential.grad_x` — ``grad_x V(x)``, shape ``(n, d)``, for the Langevin step;
* :meth:`Potential.param_vjp` — ``sum_i w_i grad_theta V(x_i)`` for weights ``w``,
  the one product every covariance (implicit) estimator reduces to.

Subclasses with closed forms override them (the Gaussian mixture below does):
that is the fast path; the tests check each override against autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from sampleopt.checks import check_per_sample
from sampleopt.errors import UsageError


def as_float_tensor(value, dtype=None) -> torch.Tensor:
    """A floating tensor: keeps a floating input's dtype, else ``dtype`` or the default."""
    t = torch.as_tensor(value)
    if dtype is not None:
        return t.to(dtype)
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


class Potential(nn.Module):
    """Base class: subclasses define :meth:`energy` and set :attr:`dim`."""

    dim: int

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise UsageError(
                f"{type(self).__name__} expects x of shape (n, {self.dim}), got {tuple(x.shape)}"
            )
        return check_per_sample(self.energy(x), x.shape[0], f"{type(self).__name__}.energy")

    def grad_x(self, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """grad_x V(x), shape (n, d). With ``create_graph`` the result is differentiable
        in x and theta (unrolled estimators need this)."""
        with torch.enable_grad():
            xg = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(self(xg).sum(), xg, create_graph=create_graph)
        return g

    def param_vjp(self, x: torch.Tensor, weights: torch.Tensor) -> list[torch.Tensor]:
        """``sum_i weights_i * grad_theta V(x_i)`` for every trainable parameter, in
        ``self.parameters()`` order (x and weights are treated as constants)."""
        params = [p for p in self.parameters() if p.requires_grad]
        with torch.enable_grad():
            surrogate = (weights.detach() * self(x.detach())).sum()
            grads = torch.autograd.grad(surrogate, params, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]

    def grad_x_and_param_vjp(
        self, x: torch.Tensor, weights: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """:meth:`grad_x` and :meth:`param_vjp` at the same (x, theta), sharing one
        evaluation of the potential (one forward pass, two backward passes)."""
        params = [p for p in self.parameters() if p.requires_grad]
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            energy = self(xg)
            (gx,) = torch.autograd.grad(energy.sum(), xg, retain_graph=True)
            grads = torch.autograd.grad(
                (weights.detach() * energy).sum(), params, allow_unused=True
            )
        return gx, [
            torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)
        ]


class FunctionPotential(Potential):
    """Wrap a user function ``V(x, theta) -> (n,)`` with a trainable ``theta``.

    ``dim`` is the dimension of x (not of theta).

    >>> pot = FunctionPotential(lambda x, th: ((x - th) ** 2).sum(1) / 2, torch.zeros(2), dim=2)
    """

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], theta, dim: int):
        super().__init__()
        if not callable(fn):
            raise UsageError(f"FunctionPotential needs a callable V(x, theta), got {fn!r}")
        if not (isinstance(dim, int) and dim > 0):
            raise UsageError(
                f"FunctionPotential: dim (the dimension of x) must be > 0, got {dim!r}"
            )
        self.fn = fn
        self.theta = nn.Parameter(as_float_tensor(theta).detach().clone())
        self.dim = dim

    def energy(self, x):
        return self.fn(x, self.theta)


class QuadraticPotential(Potential):
    """V_theta(x) = (x - theta)^T P (x - theta) / 2: Gibbs law N(theta, P^{-1}).

    The ULA chain on it is linear-Gaussian, so its stationary law is known exactly
    (:meth:`ula_stationary`): the closed form the estimators are tested against.
    """

    def __init__(self, theta, precision):
        super().__init__()
        self.theta = nn.Parameter(as_float_tensor(theta).detach().clone())
        precision = as_float_tensor(precision, self.theta.dtype)
        d = self.theta.shape[0]
        if precision.shape != (d, d) or not torch.allclose(precision, precision.T):
            raise UsageError(f"precision must be a symmetric ({d}, {d}) matrix")
        self.register_buffer("precision", precision.clone())
        self.dim = d

    def energy(self, x):
        y = x - self.theta
        return 0.5 * ((y @ self.precision) * y).sum(1)

    def grad_x(self, x, create_graph=False):
        return (x - self.theta) @ self.precision

    def param_vjp(self, x, weights):
        # grad_theta V(x) = -P (x - theta)
        with torch.no_grad():
            return [-(weights @ (x - self.theta)) @ self.precision]

    def grad_x_and_param_vjp(self, x, weights):
        return self.grad_x(x), self.param_vjp(x, weights)

    @torch.no_grad()
    def ula_stationary(self, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and covariance of the ULA chain's stationary law at step ``gamma``.

        x' = x - gamma P (x - theta) + sqrt(2 gamma) xi is linear-Gaussian, so its
        invariant law is N(theta, S) with S = A S A^T + 2 gamma I, A = I - gamma P
        (docs/methods.md section 2): not P^{-1}, ULA is biased by O(gamma).
        """
        d = self.dim
        eye = torch.eye(d, dtype=torch.float64)
        a = eye - gamma * self.precision.double()
        lhs = torch.eye(d * d, dtype=torch.float64) - torch.kron(a, a)
        s = torch.linalg.solve(lhs, (2 * gamma * eye).reshape(-1)).reshape(d, d)
        return self.theta.detach().double().clone(), s


def hex_centres(radius: float = 4.0) -> torch.Tensor:
    """The six centres radius * (cos(i pi/3), sin(i pi/3)), i = 0..5 (docs/methods.md section 4)."""
    ang = torch.arange(6, dtype=torch.float64) * math.pi / 3
    return (radius * torch.stack([ang.cos(), ang.sin()], 1)).to(torch.get_default_dtype())


class GaussianMixturePotential(Potential):
    """V_theta(x) = -log sum_i softmax(theta)_i exp(-|x - c_i|^2 / (2 sigma^2)).

    The mixture logits theta are trained; the centres c_i and the width sigma are
    fixed. This is the energy of Implicit Diffusion's experiment 5.1 (Marion et al.
    2025, section 5.1, with the hex centres). Its gradients have closed forms: with
    responsibilities R_i(x) = softmax_i(log w_i - |x - c_i|^2 / (2 sigma^2)),

        grad_x V = (x - sum_i R_i c_i) / sigma^2,   grad_theta V = softmax(theta) - R(x).
    """

    def __init__(self, centres, logits, sigma: float = 1.0):
        super().__init__()
        centres = as_float_tensor(centres)
        logits = as_float_tensor(logits, centres.dtype)
        if centres.ndim != 2 or logits.shape != (centres.shape[0],):
            raise UsageError(
                f"centres must be (m, d) and logits (m,), got {tuple(centres.shape)} "
                f"and {tuple(logits.shape)}"
            )
        if not sigma > 0:
            raise UsageError(f"sigma must be positive, got {sigma}")
        self.logits = nn.Parameter(logits.clone())
        self.register_buffer("centres", centres.clone())
        self.sigma = float(sigma)
        self.dim = centres.shape[1]
        self.register_buffer("_half_sq_norms", self._compute_half_sq_norms(), persistent=False)

    def _compute_half_sq_norms(self):
        return 0.5 * (self.centres * self.centres).sum(1) / self.sigma**2

    def _apply(self, fn, *args, **kwargs):
        # recompute the derived buffer after .double()/.to(): converting it would keep
        # the rounding of the old dtype
        out = super()._apply(fn, *args, **kwargs)
        self._half_sq_norms = self._compute_half_sq_norms()
        return out

    def weights(self) -> torch.Tensor:
        """The mixture weights softmax(theta)."""
        return torch.softmax(self.logits, 0)

    def _logits_t(self, x):
        """log w_i - |x - c_i|^2 / (2 sigma^2) + |x|^2 / (2 sigma^2), laid out (m, n).

        Component-major: softmax and logsumexp then reduce over the outer axis, which
        is several times faster on CPU than over a short inner axis of size m.
        """
        c = self.centres if self.sigma == 1.0 else self.centres / self.sigma**2
        bias = torch.log_softmax(self.logits, 0) - self._half_sq_norms
        return torch.addmm(bias.unsqueeze(1), c, x.T)

    def responsibilities(self, x):
        """R_i(x), shape (n, m)."""
        return torch.softmax(self._logits_t(x), 0).T

    def energy(self, x):
        return 0.5 * (x * x).sum(1) / self.sigma**2 - torch.logsumexp(self._logits_t(x), 0)

    def grad_x(self, x, create_graph=False):
        g = x - torch.mm(self.responsibilities(x), self.centres)
        return g if self.sigma == 1.0 else g / self.sigma**2

    def param_vjp(self, x, weights):
        resp_t = torch.softmax(self._logits_t(x), 0)
        return [torch.addmv(self.weights() * weights.sum(), resp_t, weights, alpha=-1.0)]

    def grad_x_and_param_vjp(self, x, weights):
        resp_t = torch.softmax(self._logits_t(x), 0)  # shared by both
        g = x - torch.mm(resp_t.T, self.centres)
        if self.sigma != 1.0:
            g = g / self.sigma**2
        return g, [torch.addmv(self.weights() * weights.sum(), resp_t, weights, alpha=-1.0)]
