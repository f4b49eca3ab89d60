"""The one record type of every algorithm: :class:`History`, a column per quantity and
a row per theta update.

Every algorithm's ``run`` returns one, ``step()`` returns a one-row one, and every
callback is ``callback(history, algorithm)`` with the rows made since the last call.
Cost columns make fair comparisons: ``sampling_steps`` (per-sample sampling steps spent
so far) and ``network_evals`` (rows through the model: sampling and recomputation
alike). ``value`` (the objective's estimate on the update's samples) and ``theta`` (all
trainable parameters, flattened, after the update) are recorded where the algorithm
can afford them, else None.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from sampleopt.errors import NonFiniteError


@dataclass
class History:
    step: torch.Tensor  # theta-update index, from 1
    sampling_steps: torch.Tensor
    reward_mean: torch.Tensor
    theta: torch.Tensor | None = None
    value: torch.Tensor | None = None
    network_evals: torch.Tensor | None = None

    def __len__(self):
        return self.step.shape[0]

    def __getitem__(self, sl: slice) -> History:
        return History(**{k: None if v is None else v[sl] for k, v in self._columns().items()})

    def _columns(self) -> dict[str, torch.Tensor | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @staticmethod
    def cat(parts: list[History]) -> History:
        if not parts:
            raise ValueError("History.cat needs at least one part")
        out = {}
        for f in fields(History):
            cols = [getattr(p, f.name) for p in parts]
            out[f.name] = None if any(c is None for c in cols) else torch.cat(cols)
        return History(**out)

    @staticmethod
    def empty(n_theta: int | None = None) -> History:
        """No rows (``theta`` with ``n_theta`` columns when it is recorded)."""
        e = torch.empty(0, dtype=torch.long)
        theta = None if n_theta is None else torch.empty(0, n_theta)
        return History(e, e.clone(), torch.empty(0), theta, torch.empty(0), e.clone())

    def rows(self) -> list[dict]:
        """One plain dict per update (for metrics.jsonl)."""
        cols = {k: v.tolist() for k, v in self._columns().items() if v is not None}
        return [{k: v[i] for k, v in cols.items()} for i in range(len(self))]

    def first_non_finite(self) -> tuple[int, str] | None:
        """(row, what) of the first NaN/inf in the rewards or parameters, or None."""
        bad_r = ~torch.isfinite(self.reward_mean)
        bad = bad_r
        if self.theta is not None:
            bad = bad | ~torch.isfinite(self.theta).all(1)
        if not bool(bad.any()):
            return None
        i = int(bad.nonzero()[0, 0])
        what = "the rewards" if bool(bad_r[i]) else "the gradient estimate (parameters)"
        return i, what


def raise_non_finite(hist: History, row: int, what: str) -> None:
    raise NonFiniteError(
        f"{what} contain NaN or inf at step {int(hist.step[row])}; everything before it was kept"
    )


def flat_params(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])
