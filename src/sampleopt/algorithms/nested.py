"""The nested-loop baseline: a fresh sampling run for every theta step.

Each outer step draws new x_0, runs the sampler's K steps, and takes one optimiser
step on the estimator's surrogate loss (methods.md 4, "Baselines"). With the
covariance estimator this is the implicit gradient at (approximately) stationary
samples; with the unrolled estimator it is backpropagation through the K steps.
Each outer step costs K sampling steps, so at equal sampling budget it takes K
times fewer theta steps than :class:`ImplicitDiffusion`.
"""

from __future__ import annotations

import torch

from sampleopt.algorithms.history import History, flat_params, raise_non_finite
from sampleopt.algorithms.implicit_diffusion import Callback, trainable
from sampleopt.algorithms.step_size import StepSize
from sampleopt.errors import UsageError
from sampleopt.objectives.objective import Objective
from sampleopt.samplers.chain import GaussianChain


class NestedLoop:
    """Outer loop over theta; inner loop: one full sampling run per step."""

    def __init__(
        self,
        sampler: GaussianChain,
        objective: Objective,
        estimator,
        *,
        n_samples: int = 1000,
        step_size: StepSize | float = 0.1,
        optimizer: torch.optim.Optimizer | None = None,
        generator: torch.Generator | None = None,
    ):
        if int(n_samples) < 2:
            raise UsageError(f"n_samples must be >= 2, got {n_samples}")
        if not hasattr(estimator, "loss"):
            raise UsageError(f"estimator must have a .loss(...) method, got {estimator!r}")
        self.sampler = sampler
        self.objective = objective
        self.estimator = estimator
        self.n = int(n_samples)
        self.step_size = step_size if isinstance(step_size, StepSize) else StepSize(step_size)
        self.generator = generator
        self.params = trainable(sampler)
        # None: plain SGD applied in place (as in ImplicitDiffusion; a torch.optim
        # optimiser's first step also imports torch._dynamo, about a second)
        self.optimizer = optimizer
        self.iteration = 0

    def run(self, steps: int, *, callback: Callback | None = None) -> History:
        K = self.sampler.num_steps
        rec_r, rec_t = [], []
        k0 = self.iteration
        for i in range(steps):
            lr = self.step_size(k0 + i)
            if self.optimizer is not None:
                for g in self.optimizer.param_groups:
                    g["lr"] = lr
            for p in self.params:
                p.grad = None
            loss = self.estimator.loss(
                self.sampler, self.objective, n=self.n, generator=self.generator
            )
            loss.backward()
            rec_r.append(self.estimator.last_rewards.mean())
            grads_ok = all(torch.isfinite(p.grad).all() for p in self.params if p.grad is not None)
            if not (grads_ok and torch.isfinite(loss)):
                rec_t.append(torch.full_like(flat_params(self.params), float("nan")))
            else:
                if self.optimizer is not None:
                    self.optimizer.step()
                else:
                    with torch.no_grad():
                        for p in self.params:
                            if p.grad is not None:
                                p.sub_(p.grad, alpha=lr)
                rec_t.append(flat_params(self.params))
            hist = self._history(k0 + i, k0 + i + 1, rec_r[-1:], rec_t[-1:], K)
            bad = hist.first_non_finite()
            if bad is not None:
                raise_non_finite(hist, *bad)
            self.iteration = k0 + i + 1
            if callback is not None:
                callback(hist, self)
        return self._history(k0, k0 + steps, rec_r, rec_t, K)

    @staticmethod
    def _history(a, b, rec_r, rec_t, K) -> History:
        step = torch.arange(a + 1, b + 1)
        if not rec_r:
            return History(step, step * K, torch.empty(0), torch.empty(0, 0))
        return History(step, step * K, torch.stack(rec_r), torch.stack(rec_t))
