"""What an algorithm records per theta step, and how it checks for NaN or inf."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sampleopt.errors import NonFiniteError


@dataclass
class History:
    """Per-step records: ``step`` (theta-step index), ``sampling_steps`` (cumulative
    Langevin steps, the cost axis for fair comparisons), ``reward_mean`` (mean reward
    of the samples the step used) and ``theta`` (all trainable parameters, flattened,
    after the step)."""

    step: torch.Tensor
    sampling_steps: torch.Tensor
    reward_mean: torch.Tensor
    theta: torch.Tensor

    def __len__(self):
        return self.step.shape[0]

    def __getitem__(self, sl: slice) -> History:
        return History(self.step[sl], self.sampling_steps[sl], self.reward_mean[sl], self.theta[sl])

    @staticmethod
    def cat(parts: list[History]) -> History:
        return History(*(torch.cat([getattr(p, f) for p in parts]) for f in History.fields()))

    @staticmethod
    def fields() -> tuple[str, ...]:
        return ("step", "sampling_steps", "reward_mean", "theta")

    def first_non_finite(self) -> tuple[int, str] | None:
        """(row, what) of the first NaN/inf in the rewards or parameters, or None."""
        bad_r = ~torch.isfinite(self.reward_mean)
        bad_t = ~torch.isfinite(self.theta).all(1)
        bad = bad_r | bad_t
        if not bool(bad.any()):
            return None
        i = int(bad.nonzero()[0, 0])
        what = "the rewards" if bool(bad_r[i]) else "the gradient estimate (parameters)"
        return i, what


def raise_non_finite(hist: History, row: int, what: str) -> None:
    raise NonFiniteError(
        f"{what} contain NaN or inf at step {int(hist.step[row])}; everything before it was kept"
    )


def flat_params(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])
