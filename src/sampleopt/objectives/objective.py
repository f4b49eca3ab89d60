"""The objective l(theta) = -E_{pi_theta}[r(x)] + lam * D(pi_theta, pi_ref)  (methods.md 1).

For Langevin samplers D is one of the two KL directions between Gibbs laws:

* ``"forward"``: KL(pi_theta || pi_ref), mode-seeking; its gradient needs only
  samples of pi_theta and the reference energy V_ref.
* ``"reverse"``: KL(pi_ref || pi_theta), mass-covering; its gradient needs samples
  of pi_ref as well (a second, frozen Langevin chain).

Objectives know nothing of how samples were made; estimators combine them with a
sampler.
"""

from __future__ import annotations

import copy
import math

import torch

from sampleopt.errors import UsageError
from sampleopt.objectives.rewards import Reward, evaluate_reward
from sampleopt.samplers.potentials import Potential

KL_DIRECTIONS = ("forward", "reverse")


class Objective:
    """A reward to maximise and an optional KL penalty of weight ``lam`` to ``reference``.

    ``reference`` is the reference potential V_ref (usually the pretrained one); it
    is frozen (deep-copied, no gradients). With ``lam = 0`` it is not needed.
    """

    def __init__(
        self,
        reward: Reward,
        *,
        lam: float = 0.0,
        kl: str = "forward",
        reference: Potential | None = None,
    ):
        if not callable(reward):
            raise UsageError(f"reward must be a callable r(x) -> (n,), got {reward!r}")
        if not (isinstance(lam, int | float) and math.isfinite(lam) and lam >= 0):
            raise UsageError(f"lam must be a finite number >= 0, got {lam!r}")
        if kl not in KL_DIRECTIONS:
            raise UsageError(
                f"unknown KL direction {kl!r}; choose one of {', '.join(KL_DIRECTIONS)}"
            )
        if lam > 0 and reference is None:
            raise UsageError("lam > 0 needs a reference potential (reference=...)")
        self.reward = reward
        self.lam = float(lam)
        self.kl = kl
        self.reference = None
        if reference is not None:
            self.reference = copy.deepcopy(reference).requires_grad_(False)

    @property
    def needs_reference_samples(self) -> bool:
        return self.lam > 0 and self.kl == "reverse"

    def rewards(self, x: torch.Tensor) -> torch.Tensor:
        return evaluate_reward(self.reward, x)
