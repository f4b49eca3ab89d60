"""The four schedule parameters: their search box, projection onto it, and frozen copies.

The domain of :class:`~sampleopt.diffusion.LearnableCosineSchedule` is start in [0, 1],
end in [start, 1], tau >= 1, eps in [0, 1]; its ``alphabar`` clamps raw values into it.
Learning and Bayesian optimisation search the bounded box :data:`BOX` inside that
domain (tau needs an upper bound for a search; end >= 0.5 keeps at least half of the
cosine's noise range). :func:`project_` puts raw parameters back into the box after an
optimiser step, so they never sit where the clamps make their gradient 0.
"""

from __future__ import annotations

import math

import torch

from sampleopt.diffusion.schedules import LearnableCosineSchedule, NoiseSchedule
from sampleopt.errors import UsageError

PARAMETERS = ("start", "end", "tau", "eps")
#: the search box of the learned schedule and of Bayesian optimisation
BOX = {"start": (0.0, 0.5), "end": (0.5, 1.0), "tau": (1.0, 3.0), "eps": (0.0, 0.5)}
#: the standard cosine schedule (Nichol & Dhariwal 2021) in these parameters
COSINE = {"start": 0.0, "end": 1.0, "tau": 1.0, "eps": 0.008}


def check_values(values: dict[str, float], what: str = "schedule parameters") -> dict:
    """``values`` as floats, checked to lie in :data:`BOX`: a :class:`UsageError` naming
    each parameter outside it (nothing is clamped silently)."""
    if set(values) != set(PARAMETERS):
        raise UsageError(f"{what} must name exactly {', '.join(PARAMETERS)}, got {sorted(values)}")
    out, bad = {}, []
    for name in PARAMETERS:
        v = values[name]
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise UsageError(f"{what}: {name} must be a finite number, got {v!r}")
        lo, hi = BOX[name]
        if not lo <= v <= hi:
            bad.append(f"{name}={v:g} not in [{lo:g}, {hi:g}]")
        out[name] = float(v)
    if bad:
        raise UsageError(f"{what} outside the search box: " + "; ".join(bad))
    return out


def learnable(num_train_steps: int, values: dict[str, float]) -> LearnableCosineSchedule:
    """A learnable cosine schedule at ``values`` (checked to lie in the box)."""
    return LearnableCosineSchedule(num_train_steps, **check_values(values))


def values_of(schedule: LearnableCosineSchedule) -> dict[str, float]:
    return {name: float(getattr(schedule, name).detach()) for name in PARAMETERS}


@torch.no_grad()
def project_(schedule: LearnableCosineSchedule) -> None:
    """Clamp the raw parameters into :data:`BOX` in place (end also to >= start)."""
    for name in PARAMETERS:
        getattr(schedule, name).clamp_(*BOX[name])
    schedule.end.clamp_(min=float(schedule.start))


class FrozenSchedule(NoiseSchedule):
    """A fixed copy of another schedule's alphabar (no parameters): samplers then cache
    their coefficients as numbers, and nothing differentiates into the original."""

    def __init__(self, schedule: NoiseSchedule):
        super().__init__()
        self.num_train_steps = schedule.num_train_steps
        with torch.no_grad():
            self.register_buffer("_alphabar", schedule.alphabar().detach().clone())

    def alphabar(self):
        return self._alphabar


@torch.no_grad()
def perturbed(schedule: LearnableCosineSchedule, direction: torch.Tensor, scale: float):
    """A frozen copy of ``schedule`` with raw parameters moved by scale * direction
    (ordered as :data:`PARAMETERS`; the schedule's own clamps apply to the result)."""
    scratch = LearnableCosineSchedule(schedule.num_train_steps).to(schedule.start.dtype)
    for i, name in enumerate(PARAMETERS):
        getattr(scratch, name).copy_(getattr(schedule, name) + scale * direction[i])
    return FrozenSchedule(scratch)
