"""The objective l(theta) = -E_{pi_theta}[r(x)] + lam * D(pi_theta, pi_ref)
(docs/methods.md section 1).

An objective is a reward, a weight ``lam >= 0`` and a divergence object that holds its
own reference (:class:`~sampleopt.objectives.divergences.PathKL` for finite-horizon
samplers, :class:`~sampleopt.objectives.divergences.GibbsKL` for Langevin samplers of an
energy). Objectives know nothing of how samples were made; estimators combine them with
a sampler.
"""

from __future__ import annotations

import math

import torch

from sampleopt.errors import UsageError
from sampleopt.objectives.divergences import Divergence, GibbsKL, PathKL
from sampleopt.objectives.rewards import Reward, evaluate_reward


class Objective:
    """A reward to maximise and an optional divergence penalty of weight ``lam``.

    ``divergence`` is needed when ``lam > 0``: ``PathKL(reference_chain)`` or
    ``GibbsKL(reference_potential, direction="forward" | "reverse")``.
    """

    def __init__(self, reward: Reward, *, lam: float = 0.0, divergence: Divergence | None = None):
        if not callable(reward):
            raise UsageError(f"reward must be a callable r(x) -> (n,), got {reward!r}")
        if isinstance(lam, bool) or not (
            isinstance(lam, int | float) and math.isfinite(lam) and lam >= 0
        ):
            raise UsageError(f"lam must be a finite number >= 0, got {lam!r}")
        if divergence is not None and not isinstance(divergence, Divergence):
            raise UsageError(
                "divergence must be a sampleopt divergence (PathKL(reference_chain) or "
                f"GibbsKL(reference_potential, direction)), got {type(divergence).__name__}"
            )
        if lam > 0 and divergence is None:
            raise UsageError(
                "lam > 0 needs a divergence: divergence=PathKL(reference_sampler) or "
                "GibbsKL(reference_potential)"
            )
        self.reward = reward
        self.lam = float(lam)
        self.divergence = divergence

    @property
    def path_kl(self) -> PathKL | None:
        """The path KL when it is active (lam > 0), else None."""
        return self.divergence if self.lam > 0 and isinstance(self.divergence, PathKL) else None

    @property
    def gibbs_kl(self) -> GibbsKL | None:
        """The Gibbs KL when it is active (lam > 0), else None."""
        return self.divergence if self.lam > 0 and isinstance(self.divergence, GibbsKL) else None

    @property
    def needs_reference_samples(self) -> bool:
        kl = self.gibbs_kl
        return kl is not None and kl.needs_reference_samples

    def rewards(self, x: torch.Tensor) -> torch.Tensor:
        return evaluate_reward(self.reward, x)

    def __repr__(self) -> str:
        div = "" if self.divergence is None else f", divergence={self.divergence.describe()}"
        return f"Objective({self.reward!r}, lam={self.lam:g}{div})"
