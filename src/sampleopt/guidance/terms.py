"""Gradient guidance terms: what is added to the score at sampling time (Guo et al. 2024;
docs/guidance.md section 1).

Guided sampling replaces the base score s(x_t, t) by s + G(x_t, t) with G built from a
gradient g of the objective at a point and a target value y, one (g, y) pair per sample.
With x0hat(x_t) the base denoiser's prediction of the clean sample (Tweedie), a_t and s_t
the schedule's signal and noise scales, sigma_y the assumed noise of y = g^T x_0 + noise
and ``strength`` a user-set multiplier (0: no guidance):

* :class:`NaiveGuidance` (the paper's G, its Proposition 3 with identity covariance)::

      G = strength * beta_t * (y - g^T x0hat) * g,   beta_t = a_t / (sigma_y^2 + s_t^2 |g|^2)

  It always points along g, so on data supported on a subspace it pushes samples off it.
  It costs nothing beyond the base network call. Choose it when the data fill the space
  (or as the baseline).

* :class:`LookAheadGuidance` (the paper's G_loss, Definition 1 with the beta_t of its
  Lemma 1's variant)::

      G = -strength * beta_t * grad_{x_t} (y - g^T x0hat(x_t))^2
        = strength * 2 beta_t (y - g^T x0hat) J^T g,        J = d x0hat / d x_t,
      beta_t = (a_t^2 / 2) / (a_t^2 sigma_y^2 + s_t^2 |J^T g|^2)

  The gradient is taken through the network (one backward pass per step). For data on a
  subspace span(A) the Jacobian of an exact x0hat maps into span(A), so G stays on it.
  Choose it whenever the data have structure the reward does not know about.

For Gaussian data both are the exact conditional score grad log p(y | x_t) (docs/guidance.md
derives it); beyond that they are the paper's approximations.

A target is set with :meth:`Guidance.set_target` (g of shape (n, *data_shape), y of shape
(n,)); a single row (n = 1) applies to every sample. Each sample gets its own g and y:
nothing is averaged over the batch.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from sampleopt.checks import check_finite
from sampleopt.errors import UsageError


def _number(name: str, v, *, positive: bool) -> float:
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or (v <= 0 if positive else v < 0):
        bound = "> 0" if positive else ">= 0"
        raise UsageError(f"{name} must be a finite number {bound}, got {v!r}")
    return float(v)


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product over every non-batch dimension, shape (n,)."""
    return (a * b).flatten(1).sum(1)


def _col(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(n,) -> (n, 1, ..., 1) to broadcast against ``like``."""
    return v.reshape((-1,) + (1,) * (like.ndim - 1))


class Guidance:
    """Base class: strength, sigma_y and the per-sample target (g, y)."""

    name: ClassVar[str] = ""
    #: True when the term needs the Jacobian of x0hat (a backward pass per step)
    needs_jacobian: ClassVar[bool] = False

    def __init__(self, *, strength: float = 1.0, sigma_y: float = 0.1):
        self.strength = _number("guidance strength", strength, positive=False)
        self.sigma_y = _number("sigma_y", sigma_y, positive=True)
        self.g: torch.Tensor | None = None
        self.y: torch.Tensor | None = None

    def __repr__(self) -> str:
        n = None if self.g is None else self.g.shape[0]
        return (
            f"{type(self).__name__}(strength={self.strength:g}, sigma_y={self.sigma_y:g}, "
            f"targets={n})"
        )

    @property
    def active(self) -> bool:
        """False when the strength is 0: the guided denoiser is then the base one."""
        return self.strength != 0.0

    def set_target(self, g: torch.Tensor, y: torch.Tensor) -> Guidance:
        """Set the per-sample gradient ``g`` (n, *data_shape) and target ``y`` (n,);
        returns self. Both are detached (guidance steers, it is not differentiated in
        g or y) and checked finite."""
        if not isinstance(g, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise UsageError(
                "guidance targets must be tensors: g of shape (n, *data_shape) and y of "
                f"shape (n,), got {type(g).__name__} and {type(y).__name__}"
            )
        if not (g.is_floating_point() and y.is_floating_point()):
            raise UsageError(f"guidance targets must be floating tensors, got {g.dtype}, {y.dtype}")
        if g.ndim < 2 or y.shape != (g.shape[0],):
            raise UsageError(
                "guidance targets need g of shape (n, *data_shape) and y of shape (n,) "
                f"(one target per sample), got g {tuple(g.shape)} and y {tuple(y.shape)}"
            )
        check_finite(g, "the guidance gradient g")
        check_finite(y, "the guidance target y")
        self.g, self.y = g.detach(), y.detach()
        return self

    def _targets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.g is None:
            raise UsageError(
                f"{type(self).__name__} has no target: call set_target(g, y) before sampling "
                "(or set strength=0 for unguided sampling)"
            )
        n = x.shape[0]
        if self.g.shape[1:] != x.shape[1:] or self.g.shape[0] not in (1, n):
            raise UsageError(
                f"guidance targets are set for g of shape {tuple(self.g.shape)}; the sampler "
                f"called the denoiser on x of shape {tuple(x.shape)} (the rows must match, "
                "or set one row for all)"
            )
        g = self.g.to(dtype=x.dtype, device=x.device)
        y = self.y.to(dtype=x.dtype, device=x.device)
        if g.shape[0] != n:
            g, y = g.expand(n, *g.shape[1:]), y.expand(n)
        return g, y

    def term(self, x, predict, a_t, s_t) -> tuple[torch.Tensor, torch.Tensor]:
        """(G, pred): the guidance G at x (n, ...), to be added to the score, and the base
        network's output at x. ``predict(x)`` returns (the network's output, x0hat);
        ``a_t``, ``s_t`` have shape (n,)."""
        raise NotImplementedError


class NaiveGuidance(Guidance):
    """G = strength * a_t / (sigma_y^2 + s_t^2 |g|^2) * (y - g^T x0hat) * g (see the module
    docstring). ``x0hat`` here is the base's own prediction, computed once."""

    name: ClassVar[str] = "naive"

    def term(self, x, predict, a_t, s_t):
        g, y = self._targets(x)
        pred, x0 = predict(x)
        beta = a_t / (self.sigma_y**2 + s_t**2 * _rowdot(g, g))
        return _col(self.strength * beta * (y - _rowdot(g, x0)), x) * g, pred


class LookAheadGuidance(Guidance):
    """G_loss = -strength * beta_t * grad_{x_t} (y - g^T x0hat(x_t))^2 through the network,
    beta_t = (a_t^2 / 2) / (a_t^2 sigma_y^2 + s_t^2 |J^T g|^2) (see the module docstring).

    The gradient is one vector-Jacobian product per step, per sample (the rows of a batch
    are independent for every denoiser sampleopt ships; a network that mixes rows, such
    as one with batch normalisation in training mode, would mix the samples' guidance).
    It keeps the autograd graph (for differentiating through guided sampling) when the
    caller has gradients enabled.
    """

    name: ClassVar[str] = "look-ahead"
    needs_jacobian: ClassVar[bool] = True

    def term(self, x, predict, a_t, s_t):
        g, y = self._targets(x)
        outer = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            pred, x0 = predict(xg)
            value = _rowdot(g, x0)  # g^T x0hat, (n,)
            (jtg,) = torch.autograd.grad(value.sum(), xg, create_graph=outer)
        if not outer:
            pred, value = pred.detach(), value.detach()
        a2 = a_t**2
        beta = 0.5 * a2 / (a2 * self.sigma_y**2 + s_t**2 * _rowdot(jtg, jtg))
        return _col(self.strength * 2.0 * beta * (y - value), x) * jtg, pred


GUIDANCES: dict[str, type[Guidance]] = {c.name: c for c in (NaiveGuidance, LookAheadGuidance)}


def make_guidance(name: str, **options) -> Guidance:
    """A guidance object by its name ("naive" or "look-ahead")."""
    if name not in GUIDANCES:
        raise UsageError(f"unknown guidance {name!r}; choose one of {', '.join(GUIDANCES)}")
    return GUIDANCES[name](**options)
