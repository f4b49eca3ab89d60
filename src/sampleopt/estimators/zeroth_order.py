"""Zeroth-order gradients: two evaluations of the loss, no derivative of anything.

Two-point Gaussian smoothing (Nesterov & Spokoiny 2017; docs/methods.md section 3.6): with
u ~ N(0, I) over all the chosen parameters,

    g = (l_hat(theta + delta u) - l_hat(theta - delta u)) / (2 delta) * u,

averaged over ``directions`` draws of u. Both evaluations use the same x_0 and the
same noise (common random numbers), so the difference measures the change of theta
and not the sampling noise. g is unbiased for the gradient of the smoothed loss
E_u[l(theta + delta u)]; that equals grad l(theta) when l is quadratic in theta
(e.g. the mean of a linear-Gaussian chain under a quadratic reward) and differs from
it by O(delta^2) otherwise. The reported value (and ``last_rewards``) is the average
of the two evaluations, O(delta^2) from l(theta).

Its variance grows with the number of parameters: choose it for a handful of
parameters (a schedule, a guidance scale, the last layer) with a black-box reward or
sampler, never for a whole network.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from sampleopt.errors import UsageError
from sampleopt.estimators.base import Call, Estimator, surrogate_from_grads
from sampleopt.objectives.divergences import run_with_path_cost


class ZerothOrderEstimator(Estimator):
    """Two-point random-direction finite differences with common random numbers."""

    name: ClassVar[str] = "zeroth-order"

    def __init__(self, *, delta: float = 1e-2, directions: int = 1):
        if isinstance(delta, bool) or not (
            isinstance(delta, int | float) and math.isfinite(delta) and delta > 0
        ):
            raise UsageError(f"delta must be a finite number > 0, got {delta!r}")
        if not (
            isinstance(directions, int) and not isinstance(directions, bool) and directions >= 1
        ):
            raise UsageError(f"directions must be an integer >= 1, got {directions!r}")
        self.delta = float(delta)
        self.directions = directions

    def options(self) -> dict:
        return {"delta": self.delta, "directions": self.directions}

    def network_evals(self, sampler, n: int) -> int:
        return 2 * self.directions * sampler.num_steps * n  # two chains per direction

    def _loss(self, call: Call) -> torch.Tensor:
        params, generator = call.params, call.generator
        with torch.no_grad():
            x0 = call.start()
            noises = [call.noise(x0) for _ in range(call.sampler.num_steps)]  # common numbers
            originals = [p.detach().clone() for p in params]
            grads = [torch.zeros_like(p) for p in params]
            values, rewards = [], []
            try:
                for _ in range(self.directions):
                    us = [
                        torch.randn(p.shape, generator=generator, dtype=p.dtype, device=p.device)
                        for p in params
                    ]
                    pair = []
                    for sign in (1.0, -1.0):
                        for p, o, u in zip(params, originals, us, strict=True):
                            p.copy_(o + (sign * self.delta) * u)
                        value, r = self._evaluate(call, x0, noises)
                        pair.append(value)
                        values.append(value)
                        rewards.append(r)
                    slope = (pair[0] - pair[1]) / (2 * self.delta * self.directions)
                    for g, u in zip(grads, us, strict=True):
                        g.add_(slope * u)
            finally:
                for p, o in zip(params, originals, strict=True):
                    p.copy_(o)
        self.last_rewards = torch.stack(rewards).mean(0)
        return surrogate_from_grads(params, grads, torch.stack(values).mean())

    def _evaluate(self, call: Call, x, noises):
        """l_hat at the current parameters with the given x_0 and noise."""
        x, cost = run_with_path_cost(call.sampler, call.path_kl, x, noises)
        r = self.rewards(call.objective, x)
        return -r.mean() + call.lam * cost.mean(), r
