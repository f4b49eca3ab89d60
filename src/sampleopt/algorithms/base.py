"""What every algorithm's loop shares: the sampler, objective and estimator checked
together once, the parameters it trains, the one update core, the cost counter and the
one-row :class:`History` record each theta update returns."""

from __future__ import annotations

import torch

from sampleopt.algorithms.history import History, flat_params
from sampleopt.algorithms.update import Update
from sampleopt.errors import UsageError
from sampleopt.estimators.base import Estimator


def positive_int(name: str, v) -> int:
    if isinstance(v, bool) or not (isinstance(v, int) and v >= 1):
        raise UsageError(f"{name} must be an integer >= 1, got {v!r}")
    return v


class Algorithm:
    """Base class of the loops over theta (see the module docstring)."""

    def _setup(
        self, sampler, objective, estimator, batch_size, lr, optimizer, params, seed, record
    ):
        """Check and keep what every loop needs; ``batch_size`` samples per estimator call."""
        self.n = n = positive_int("batch_size", batch_size)
        if not isinstance(estimator, Estimator):
            raise UsageError(
                "estimator must be a sampleopt estimator object (e.g. so.AdjointEstimator() or "
                f"so.make_estimator('adjoint')), got {estimator!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise UsageError(f"seed must be an integer, got {seed!r}")
        call = estimator.check_call(sampler, objective, n=n, params=params)
        self.sampler, self.objective, self.estimator = sampler, objective, estimator
        self.params = call.params
        self.update = Update(self.params, lr, optimizer)
        self.seed, self.record_theta = seed, bool(record)
        self.network_evals = 0  # rows through the network: sampling and recomputation

    @property
    def updates(self) -> int:
        """Theta updates made so far."""
        return self.update.count

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        return self.update.optimizer

    def _record(self, sampling_steps: int, reward_mean: torch.Tensor, value) -> History:
        """The one-row history of the update just made."""
        return History(
            step=torch.tensor([self.update.count]),
            sampling_steps=torch.tensor([sampling_steps]),
            reward_mean=reward_mean.detach().reshape(1),
            theta=flat_params(self.params)[None] if self.record_theta else None,
            value=torch.as_tensor(value, dtype=torch.float64).detach().reshape(1),
            network_evals=torch.tensor([self.network_evals]),
        )

    def _empty(self) -> History:
        return History.empty(sum(p.numel() for p in self.params) if self.record_theta else None)
