"""Checks and helpers shared by the pathwise estimators (unrolled and adjoint)."""

from __future__ import annotations

from sampleopt.errors import UsageError
from sampleopt.objectives.objective import Objective


def check_pathwise_call(name: str, objective: Objective, samples) -> None:
    if samples is not None:
        raise UsageError(
            f"the {name} estimator draws its own path; it cannot use given samples "
            "(use the covariance estimator for persistent particles)"
        )
    if objective.lam > 0 and objective.kl != "forward":
        raise UsageError(
            f"the {name} estimator supports the path KL(P_theta || P_ref) only (kl='forward')"
        )


def path_kl_reference(name: str, sampler, objective: Objective, given):
    """The reference chain of the path KL: ``given``, else (Langevin) the sampler on
    the objective's reference potential; None when lam = 0."""
    if objective.lam == 0:
        return None
    if given is not None:
        return given
    if hasattr(sampler, "with_potential") and objective.reference is not None:
        return sampler.with_potential(objective.reference)
    raise UsageError(
        f"lam > 0 needs a reference chain: {name.capitalize()}Estimator(reference=...)"
    )


def stochastic_scale(sampler, k: int):
    """s_k, refusing a step without noise (the path KL over it is infinite)."""
    s = sampler.noise_scale(k)
    if float(s) == 0:
        raise UsageError(
            f"the path KL is infinite over step {k}, which adds no noise; use a sampler with "
            "noise at every step (e.g. ReverseSDESampler) for lam > 0"
        )
    return s
