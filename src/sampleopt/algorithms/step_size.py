"""Step-size schedules for the outer (theta) updates."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sampleopt.errors import UsageError

SCHEDULES = ("constant", "inverse_sqrt")


@dataclass(frozen=True)
class StepSize:
    """eta_k = eta (``"constant"``) or eta / sqrt(k + 1) (``"inverse_sqrt"``, the
    schedule of Implicit Diffusion's convergence theorem, Marion et al. 2025, Thm 4.5)."""

    eta: float
    schedule: str = "constant"

    def __post_init__(self):
        if not (isinstance(self.eta, int | float) and math.isfinite(self.eta) and self.eta >= 0):
            raise UsageError(f"step size eta must be a finite number >= 0, got {self.eta!r}")
        if self.schedule not in SCHEDULES:
            choices = ", ".join(SCHEDULES)
            raise UsageError(
                f"unknown step-size schedule {self.schedule!r}; choose one of {choices}"
            )

    def __call__(self, k: int) -> float:
        if self.schedule == "constant":
            return self.eta
        return self.eta / math.sqrt(k + 1)
