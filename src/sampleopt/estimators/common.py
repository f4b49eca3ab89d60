"""Checks and helpers shared by the finite-horizon estimators (unrolled, truncated,
adjoint, score-function, zeroth-order): which parameters to differentiate, the
reward with its checks, the reference chain of the path KL and its running cost,
and the surrogate loss built from an explicit gradient."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from sampleopt.checks import check_finite
from sampleopt.errors import UsageError
from sampleopt.objectives.objective import Objective


def check_no_given_samples(name: str, samples) -> None:
    if samples is not None:
        raise UsageError(
            f"the {name} estimator draws its own path; it cannot use given samples "
            "(use the covariance estimator for persistent particles)"
        )


def check_path_kl(name: str, objective: Objective) -> None:
    if objective.lam > 0 and objective.kl != "forward":
        raise UsageError(
            f"the {name} estimator supports the path KL(P_theta || P_ref) only (kl='forward')"
        )


def check_pathwise_call(name: str, objective: Objective, samples) -> None:
    check_no_given_samples(name, samples)
    check_path_kl(name, objective)


def resolve_params(
    name: str, sampler: torch.nn.Module, params: Iterable[torch.Tensor] | None
) -> list[torch.Tensor]:
    """The parameters to differentiate: ``params`` (each must be a trainable parameter
    of ``sampler``) or, by default, all the sampler's trainable parameters."""
    if params is None:
        out = [p for p in sampler.parameters() if p.requires_grad]
        if not out:
            raise UsageError(f"{type(sampler).__name__} has no trainable parameters")
        return out
    if isinstance(params, torch.Tensor):
        params = [params]
    out = list(params)
    if not out:
        raise UsageError(f"the {name} estimator was given an empty list of parameters")
    owned = {id(p): pname for pname, p in sampler.named_parameters()}
    for i, p in enumerate(out):
        if not isinstance(p, torch.Tensor):
            raise UsageError(f"params[{i}] is not a tensor (got {type(p).__name__})")
        if id(p) not in owned:
            raise UsageError(
                f"params[{i}] (shape {tuple(p.shape)}) is not a parameter of "
                f"{type(sampler).__name__}; pass tensors from sampler.parameters() "
                "(a copy or a parameter of another module gets no gradient)"
            )
        if not p.requires_grad:
            raise UsageError(f"params[{i}] ({owned[id(p)]}) does not require a gradient")
    return out


def checked_rewards(objective: Objective, x: torch.Tensor) -> torch.Tensor:
    """r(x_K): shape (n,) and finite, or a clear error (nothing is updated)."""
    r = objective.rewards(x)
    check_finite(r.detach(), "the reward")
    return r


def require_reward_gradient(name: str, r: torch.Tensor) -> None:
    if not r.requires_grad:
        raise UsageError(
            f"the reward returned no gradient (computed outside torch, detached, or piecewise "
            f"constant?); the {name} estimator differentiates the reward — use the "
            "score-function, zeroth-order or covariance estimator for such rewards"
        )


def path_kl_reference(name: str, sampler, objective: Objective, given):
    """The reference chain of the path KL: ``given``, else (Langevin) the sampler on
    the objective's reference potential; None when lam = 0."""
    if objective.lam == 0:
        return None
    if given is not None:
        if getattr(given, "num_steps", None) != sampler.num_steps:
            raise UsageError(
                f"the reference chain has {getattr(given, 'num_steps', '?')} steps, the sampler "
                f"{sampler.num_steps}; the path KL compares the two step by step"
            )
        return given
    if hasattr(sampler, "with_potential") and objective.reference is not None:
        return sampler.with_potential(objective.reference)
    raise UsageError(
        f"lam > 0 needs a reference chain: {name.capitalize()}Estimator(reference=...)"
    )


def is_deterministic(s) -> bool:
    """Whether a noise scale s_k (float or tensor) is 0: a step without noise."""
    return float(s.detach() if isinstance(s, torch.Tensor) else s) == 0


def stochastic_scale(sampler, k: int):
    """s_k, refusing a step without noise (the path KL over it is infinite)."""
    s = sampler.noise_scale(k)
    if is_deterministic(s):
        raise UsageError(
            f"the path KL is infinite over step {k}, which adds no noise; use a sampler with "
            "noise at every step (e.g. ReverseSDESampler) for lam > 0"
        )
    return s


def kl_step_cost(m: torch.Tensor, m_ref: torch.Tensor, s) -> torch.Tensor:
    """Per-sample running cost of the path KL at one step, |m - m_ref|^2 / (2 s^2),
    shape (n,) (methods.md 1)."""
    return ((m - m_ref) ** 2).flatten(1).sum(1) / (2 * s * s)


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


def run_with_path_cost(sampler, reference, x, noises) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the chain from x with the given standard-normal ``noises`` (one per step);
    return x_K and each path's KL cost sum_k |m(x_k) - m_ref(x_k)|^2 / (2 s_k^2)
    (zeros without a reference)."""
    cost = x.new_zeros(x.shape[0])
    for k, noise in enumerate(noises):
        m = sampler.mean(x, k)
        if reference is not None:
            cost = cost + kl_step_cost(m, reference.mean(x, k), stochastic_scale(sampler, k))
        x = sampler.add_noise(m, k, noise)
    return x, cost


@torch.no_grad()
def estimate_path_kl(
    sampler, reference, n: int, generator: torch.Generator | None = None
) -> tuple[float, float]:
    """Monte-Carlo path KL(P_sampler || P_reference) (methods.md 1) from n paths of the
    sampler: the mean over paths of sum_k |m(x_k) - m_ref(x_k)|^2 / (2 s_k^2), and its
    standard error. Both chains must have the same steps and noise scales."""
    if reference.num_steps != sampler.num_steps:
        raise UsageError(
            f"the reference chain has {reference.num_steps} steps, the sampler {sampler.num_steps}"
        )
    x = sampler.sample_x0(n, generator)
    noises = (
        torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        for _ in range(sampler.num_steps)
    )
    _, total = run_with_path_cost(sampler, reference, x, noises)
    return float(total.mean()), float(total.std() / total.numel() ** 0.5)
