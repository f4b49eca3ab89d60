"""The estimator contract: what every gradient estimator checks once, before any work.

An estimator turns (sampler, objective) into a *surrogate loss*: a scalar whose
``.backward()`` leaves the gradient estimate of l(theta) in the parameters' ``.grad``
(docs/methods.md section 3.7). :meth:`Estimator.loss` runs the shared prologue,
:meth:`Estimator.check_call`, then the estimator's own :meth:`Estimator._loss`:

* the parameters: ``params`` (default: all the sampler's trainable parameters), each a
  distinct, trainable parameter of the sampler; an empty, duplicated, foreign or frozen
  one is refused by name;
* the start: ``x0`` (a floating tensor of the sampler's state shape, dtype and device)
  and ``n`` (a positive count that agrees with ``x0``);
* what the estimator declares it needs, as class attributes: a reward gradient
  (:attr:`needs_reward_gradient`), noise at every step (:attr:`needs_noise`), samples of
  a Langevin sampler's stationary law (:attr:`needs_langevin`), the divergences it can
  differentiate (:attr:`divergences`); an unsupported combination is one
  :class:`~sampleopt.errors.UsageError` naming the estimator and the reason;
* the reward, once the samples exist (:meth:`Estimator.rewards`): shape ``(n,)``, the
  samples' floating dtype and device (a boolean or integer reward is taken as float by
  the estimators that need no reward gradient and refused by those that do), finite.

All of it runs before the loss exists, so a refused call leaves every ``.grad`` as it
was. :attr:`evals_per_step` (forward network evaluations per sample and sampling step)
is the cost unit the algorithms count to compare estimators at equal budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from sampleopt.checks import check_finite
from sampleopt.errors import UsageError
from sampleopt.objectives.divergences import Divergence, PathKL, is_deterministic
from sampleopt.objectives.objective import Objective
from sampleopt.samplers.chain import GaussianChain
from sampleopt.samplers.langevin import LangevinSampler


@dataclass
class Call:
    """One checked estimator call: what :meth:`Estimator.check_call` resolved."""

    sampler: GaussianChain
    objective: Objective
    params: list[torch.Tensor]
    explicit_params: bool  # params were chosen by the caller (a subset gets a gradient)
    n: int
    x0: torch.Tensor | None
    generator: torch.Generator | None

    @property
    def path_kl(self) -> PathKL | None:
        return self.objective.path_kl

    @property
    def lam(self) -> float:
        return self.objective.lam

    def start(self) -> torch.Tensor:
        """x_0: the given one (detached) or n fresh draws."""
        if self.x0 is not None:
            return self.x0.detach()
        return self.sampler.sample_x0(self.n, self.generator)

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(
            like.shape, generator=self.generator, dtype=like.dtype, device=like.device
        )


class Estimator:
    """Base class of the gradient estimators (see the module docstring)."""

    name: ClassVar[str] = "estimator"
    needs_reward_gradient: ClassVar[bool] = False
    needs_noise: ClassVar[bool] = False
    needs_langevin: ClassVar[bool] = False
    needs_kl: ClassVar[bool] = False  # lam > 0 with a path KL to a base (the SOC estimators)
    supports_initial_law: ClassVar[bool] = False  # trains a learned initial law's parameters
    divergences: ClassVar[tuple[type[Divergence], ...]] = (PathKL,)
    evals_per_step: ClassVar[int] = 1
    min_samples: ClassVar[int] = 1

    last_rewards: torch.Tensor | None = None  # rewards of the samples of the last call

    def loss(
        self,
        sampler: GaussianChain,
        objective: Objective,
        *,
        n: int | None = None,
        generator: torch.Generator | None = None,
        x0: torch.Tensor | None = None,
        params: Iterable[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Surrogate loss of ``n`` samples (or of the given ``x0``); ``params`` (default:
        all the sampler's trainable parameters) are the tensors that receive the gradient."""
        call = self.check_call(sampler, objective, n=n, x0=x0, params=params, generator=generator)
        return self._loss(call)

    def _loss(self, call: Call) -> torch.Tensor:
        raise NotImplementedError

    def network_evals(self, sampler: GaussianChain, n: int) -> int:
        """Forward network evaluations (rows through the model) of one call with n samples."""
        return self.evals_per_step * sampler.num_steps * n

    # -- the prologue ----------------------------------------------------------------
    def check_call(
        self,
        sampler: GaussianChain,
        objective: Objective,
        *,
        n: int | None = None,
        x0: torch.Tensor | None = None,
        params: Iterable[torch.Tensor] | None = None,
        generator: torch.Generator | None = None,
    ) -> Call:
        """Check everything about a call that can be checked before sampling."""
        self.check_setup(sampler, objective)
        chosen = resolve_params(self.name, sampler, params)
        n = self._check_start(sampler, n, x0)
        return Call(sampler, objective, chosen, params is not None, n, x0, generator)

    def check_setup(self, sampler: GaussianChain, objective: Objective) -> None:
        """The combination of this estimator, ``sampler`` and ``objective`` is supported."""
        if not isinstance(objective, Objective):
            raise UsageError(
                f"the {self.name} estimator needs a sampleopt Objective, got "
                f"{type(objective).__name__}"
            )
        if not isinstance(sampler, GaussianChain):
            raise UsageError(
                f"the {self.name} estimator needs a sampler (a GaussianChain), got "
                f"{type(sampler).__name__}"
            )
        if self.needs_langevin and not isinstance(sampler, LangevinSampler):
            raise UsageError(
                f"the {self.name} estimator needs samples of a Langevin sampler's stationary "
                f"law pi ∝ exp(-V_theta) (a LangevinSampler), got {type(sampler).__name__}; "
                "use a pathwise estimator (adjoint, unrolled) for finite-horizon samplers"
            )
        if getattr(sampler, "learns_initial_law", False) and not self.supports_initial_law:
            raise UsageError(
                f"the {self.name} estimator does not train a learned initial law; use "
                "adjoint-matching or tr-bsde, or a fixed initial law"
            )
        div = objective.divergence
        if objective.lam > 0 and not isinstance(div, self.divergences):
            names = " or ".join(d.__name__ for d in self.divergences)
            raise UsageError(
                f"the {self.name} estimator differentiates a {names}, not a "
                f"{type(div).__name__} (lam > 0)"
                + (
                    "; for a Langevin sampler's path use PathKL(sampler.with_potential(ref))"
                    if PathKL in self.divergences
                    else ""
                )
            )
        if objective.path_kl is not None:
            objective.path_kl.check(sampler)
        if self.needs_noise:
            for k in range(sampler.num_steps):
                if is_deterministic(sampler.noise_scale(k)):
                    raise UsageError(
                        f"the {self.name} estimator needs noise at every step, but step {k} of "
                        f"{type(sampler).__name__} is deterministic (s_k = 0): its transition "
                        "has no density to differentiate. Use a sampler with noise at every "
                        "step (ReverseSDESampler) or a pathwise estimator (unrolled, adjoint) "
                        "with a differentiable reward"
                    )

    def _check_start(self, sampler: GaussianChain, n, x0) -> int:
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise UsageError(f"n must be a positive integer, got {n!r}")
        if x0 is None:
            if n is None:
                raise UsageError(f"the {self.name} estimator needs n=... (or x0=...)")
        else:
            check_state(f"the {self.name} estimator's x0", sampler, x0)
            if n is not None and n != x0.shape[0]:
                raise UsageError(f"n = {n} disagrees with x0, which holds {x0.shape[0]} samples")
            n = x0.shape[0]
        if n < self.min_samples:
            raise UsageError(
                f"the {self.name} estimator needs at least {self.min_samples} samples, got {n}"
            )
        return n

    # -- the reward --------------------------------------------------------------------
    def rewards(self, objective: Objective, x: torch.Tensor) -> torch.Tensor:
        """r(x), checked: shape (n,), the samples' dtype and device, finite, and with a
        gradient when this estimator differentiates it. Sets :attr:`last_rewards`."""
        r = self.checked_rewards(objective.reward(x), x)
        check_finite(r.detach(), "the reward")
        if self.needs_reward_gradient and not r.requires_grad:
            raise UsageError(
                "the reward returned no gradient (computed outside torch, detached, or "
                f"piecewise constant?); the {self.name} estimator differentiates the reward — "
                "use the score-function, zeroth-order or covariance estimator for such rewards"
            )
        self.last_rewards = r.detach()
        return r

    def checked_rewards(self, r, x: torch.Tensor) -> torch.Tensor:
        """Rewards ``r`` of samples ``x`` with their type, shape, dtype and device checked
        (a boolean or integer reward cast to float when no reward gradient is needed);
        finiteness is the caller's (:meth:`rewards` checks it)."""
        what = f"the reward (for the {self.name} estimator)"
        if not isinstance(r, torch.Tensor):
            raise UsageError(f"{what} must return a torch.Tensor, got {type(r).__name__}")
        if r.shape != (x.shape[0],):
            raise UsageError(
                f"{what} must return shape ({x.shape[0]},) (one value per sample), got "
                f"{tuple(r.shape)}"
            )
        if not r.is_floating_point():
            if self.needs_reward_gradient:
                raise UsageError(
                    f"the reward returned {r.dtype} values, which carry no gradient, and the "
                    f"{self.name} estimator differentiates the reward; use the score-function, "
                    "zeroth-order or covariance estimator for such rewards"
                )
            r = r.to(x.dtype)
        if r.dtype != x.dtype:
            raise UsageError(
                f"{what} returned {r.dtype} for {x.dtype} samples; return the samples' dtype"
            )
        if r.device != x.device:
            raise UsageError(f"{what} returned a tensor on {r.device} for samples on {x.device}")
        return r

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"

    def options(self) -> dict:
        """The constructor's options (for reprs, configs and reports)."""
        return {}


def sampler_dtype_device(sampler: torch.nn.Module):
    """(dtype, device) of the sampler's first floating parameter or buffer, or (None, None)."""
    for t in (*sampler.parameters(), *sampler.buffers()):
        if t.is_floating_point():
            return t.dtype, t.device
    return None, None


def check_state(what: str, sampler: GaussianChain, x: torch.Tensor) -> None:
    """x is a batch of the sampler's states: a floating tensor of shape (n, *state_shape)
    with the sampler's dtype and device."""
    if not isinstance(x, torch.Tensor):
        raise UsageError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise UsageError(f"{what} must be a floating tensor, got {x.dtype}")
    shape = tuple(sampler.state_shape)
    if x.ndim != 1 + len(shape) or tuple(x.shape[1:]) != shape:
        want = ", ".join(["n", *map(str, shape)])
        raise UsageError(
            f"{what} has shape {tuple(x.shape)}; {type(sampler).__name__} states are ({want})"
        )
    if x.shape[0] < 1:
        raise UsageError(f"{what} holds no samples")
    dtype, device = sampler_dtype_device(sampler)
    if dtype is not None and x.dtype != dtype:
        raise UsageError(f"{what} is {x.dtype}, the sampler's parameters {dtype}")
    if device is not None and x.device != device:
        raise UsageError(f"{what} is on {x.device}, the sampler on {device}")


def resolve_params(
    name: str, sampler: torch.nn.Module, params: Iterable[torch.Tensor] | None
) -> list[torch.Tensor]:
    """The parameters to differentiate: ``params`` (distinct trainable parameters of
    ``sampler``) or, by default, all the sampler's trainable parameters."""
    if params is None:
        out = [p for p in sampler.parameters() if p.requires_grad]
        if not out:
            raise UsageError(f"{type(sampler).__name__} has no trainable parameters")
        return out
    if isinstance(params, torch.Tensor):
        params = [params]
    out = list(params)
    if not out:
        raise UsageError(f"{name} was given an empty list of parameters")
    owned = {id(p): pname for pname, p in sampler.named_parameters()}
    seen: set[int] = set()
    for i, p in enumerate(out):
        if not isinstance(p, torch.Tensor):
            raise UsageError(f"params[{i}] is not a tensor (got {type(p).__name__})")
        if id(p) not in owned:
            raise UsageError(
                f"params[{i}] (shape {tuple(p.shape)}) is not a parameter of "
                f"{type(sampler).__name__}; pass tensors from sampler.parameters() "
                "(a copy or a parameter of another module gets no gradient)"
            )
        if id(p) in seen:
            raise UsageError(f"params[{i}] ({owned[id(p)]}) is given twice")
        seen.add(id(p))
        if not p.requires_grad:
            raise UsageError(f"params[{i}] ({owned[id(p)]}) does not require a gradient")
    return out


def surrogate_from_grads(
    params: Sequence[torch.Tensor], grads: Sequence[torch.Tensor], value: torch.Tensor
) -> torch.Tensor:
    """A scalar equal to ``value`` whose gradient in ``params`` is ``grads``:
    sum_p <p, g_p> shifted, so an explicit estimate composes with any optimiser,
    gradient accumulation and DDP like an autograd loss."""
    for g in grads:
        check_finite(g, "the gradient estimate")
    surrogate = sum((p * g).sum() for p, g in zip(params, grads, strict=True))
    return surrogate - surrogate.detach() + value.detach()


def restricted(call: Call, value: torch.Tensor) -> torch.Tensor:
    """``value`` as the loss, or, when the caller chose ``params``, a surrogate whose
    gradient reaches only those (the others get none)."""
    if not call.explicit_params:
        return value
    with torch.enable_grad():
        grads = torch.autograd.grad(value, call.params, allow_unused=True)
    grads = [
        torch.zeros_like(p) if g is None else g for p, g in zip(call.params, grads, strict=True)
    ]
    return surrogate_from_grads(call.params, grads, value)
