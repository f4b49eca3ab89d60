"""What adjoint matching and the time-reversed BSDE share (docs/soc.md sections 1-3).

Units: the library's objective is l = -E[r(x_K)] + lam * KL(P || P_base); the control
problem is its rescaling J = l / lam = E[-r(x_K) / lam + sum_k |u_k|^2 dt_k / 2], whose
value function V(t, x) = -log E_base[exp(r(X_T) / lam) | X_t = x] and co-state
Y = grad_x V. The discrete control of step k of a tuned chain against its base is
d_k = (m(x, k) - m_base(x, k)) / s_k (= u sqrt(dt_k)), its co-state phi_k = -d_k / s_k
(= -u / g), and the optimal control is u = -g grad V.
"""

from __future__ import annotations

import torch
from torch.func import grad as _grad

from sampleopt.errors import UsageError
from sampleopt.samplers.chain import GaussianChain
from sampleopt.samplers.initial import InitialLaw, initial_kl


def check_soc(name: str, sampler: GaussianChain, objective, allow_memory: bool) -> None:
    """lam > 0 with a path KL to the base, and a memoryless base, a learned initial law, or
    the fixed-initial-law optimum accepted (``allow_memory``)."""
    if objective.lam <= 0:
        raise UsageError(
            f"the {name} estimator solves -E[r] + lam * KL with lam > 0 (the control cost is "
            f"the lam-weighted path KL); got lam = {objective.lam:g}. For lam = 0 use a "
            "pathwise estimator (adjoint, unrolled)"
        )
    base = objective.path_kl.reference
    learns = bool(getattr(sampler, "learns_initial_law", False))
    if learns:
        if not isinstance(getattr(base, "initial", None), InitialLaw):
            raise UsageError(
                f"the {name} estimator learns the initial law, so it needs the base's initial "
                f"law (an InitialLaw at base.initial) for the KL between them; "
                f"{type(base).__name__} has none"
            )
        return
    if not getattr(base, "memoryless", False) and not allow_memory:
        raise UsageError(
            f"the base {type(base).__name__} is not memoryless (x_K depends on x_0), so with "
            "a fixed initial law the optimum of -E[r] + lam KL is not the tilted law "
            "p_base exp(r / lam). Learn the initial law (ControlledChain(..., "
            "initial=Gaussian(..., learnable=True))), or pass allow_memory=True to the "
            f"{name} estimator to solve the fixed-initial-law problem (docs/soc.md section 1)"
        )


def terminal_costate(objective, x: torch.Tensor, checked_rewards) -> torch.Tensor:
    """grad_x V(T, x) = -grad r(x) / lam per sample (rewards checked by the estimator)."""
    with torch.enable_grad():
        xk = x.detach().requires_grad_(True)
        r = checked_rewards(objective, xk)
        (g,) = torch.autograd.grad(r.sum(), xk)
    return -g / objective.lam


def terminal_costate_fn(objective):
    """x -> -grad r(x) / lam as a torch.func-transformable function (for the Ito terms)."""
    lam = objective.lam
    g = _grad(lambda x: objective.reward(x).sum())
    return lambda x: -g(x) / lam


def costate_fn(sampler, reference, k: int):
    """x -> phi_k(x) = -(m(x, k) - m_base(x, k)) / s_k^2 (the sampler's own co-state
    network when it has one)."""
    if getattr(sampler, "parameterization", None) == "costate":
        return lambda x: sampler.costate(x, k)
    s2 = float(sampler.noise_scale(k)) ** 2
    if s2 == 0:
        raise UsageError(f"step {k} adds no noise, so it has no control and no co-state")
    return lambda x: -(sampler.mean(x, k) - reference.mean(x, k)) / s2


def lean_adjoint(reference, path: torch.Tensor, a_K: torch.Tensor):
    """The discrete lean adjoint along a stored path x_0 .. x_K (K + 1, n, ...):
    a_k = J_x m_base(x_k, k)^T a_{k+1} from a_K, vector-Jacobian products of the *base*
    step only (docs/soc.md section 2). Returns (a_0 .. a_K stacked, m_base(x_k, k) for
    k < K stacked), both detached."""
    K = path.shape[0] - 1
    adj = torch.empty_like(path)
    means = torch.empty_like(path[:-1])
    adj[K] = a_K
    for k in reversed(range(K)):
        with torch.enable_grad():
            x = path[k].detach().requires_grad_(True)
            m = reference.mean(x, k)
            (adj[k],) = torch.autograd.grad(m, x, grad_outputs=adj[k + 1])
        means[k] = m.detach()
    return adj, means


def initial_law_surrogate(sampler, reference, x0: torch.Tensor, costate0: torch.Tensor):
    """lam-free surrogate whose gradient in a learned initial law q is that of
    KL(q || p_base,0) + E_q[V(0, x_0)]: the Monte-Carlo KL at reparameterised draws x0 plus
    <x0, grad V(0, x0)> with the co-state estimate held fixed (docs/soc.md section 1)."""
    kl = initial_kl(sampler.initial, reference.initial, x0)
    return (kl + (x0 * costate0.detach()).flatten(1).sum(1)).mean()


def choose_steps(K: int, steps: int | None, keep_last: int, generator, device) -> list[int]:
    """All K steps, or ``steps`` of them: the last ``keep_last`` always, the rest drawn
    uniformly without replacement (adjoint matching's subset of time steps)."""
    if steps is None or steps >= K:
        return list(range(K))
    last = list(range(K - keep_last, K)) if keep_last else []
    pool = K - len(last)
    where = generator.device if generator is not None else "cpu"
    picks = torch.randperm(pool, generator=generator, device=where)[: steps - len(last)]
    return sorted(int(i) for i in picks) + last
