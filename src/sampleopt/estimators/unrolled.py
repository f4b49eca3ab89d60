"""Pathwise gradients by unrolling: backpropagate r(x_K) through all K steps.

Sample x_0 and the noise, run the chain with autograd on, and differentiate
-mean r(x_K) (methods.md 3.1). With the noise fixed this is the exact gradient of
the Monte-Carlo loss, so it is unbiased for l(theta) of the *finite-K* chain (not
of the stationary law). Memory grows as O(K x activations); the reward must be
differentiable (use the covariance estimator otherwise).

With ``lam > 0`` it adds the path KL between the chain and the same chain on the
reference potential (discrete Girsanov, methods.md 1), an upper bound on
KL(pi_theta || pi_ref) of the outputs:

    KL(P_theta || P_ref) = sum_k E || m_theta(x_k) - m_ref(x_k) ||^2 / (2 s^2)

Choose it for short chains and smooth rewards, or as the reference the cheaper
estimators are compared against.
"""

from __future__ import annotations

import torch

from sampleopt.errors import UsageError
from sampleopt.estimators.pathwise import (
    check_pathwise_call,
    path_kl_reference,
    stochastic_scale,
)
from sampleopt.objectives.objective import Objective
from sampleopt.samplers.chain import GaussianChain


class UnrolledEstimator:
    """Backpropagation through the whole sampling chain."""

    name = "unrolled"
    last_rewards: torch.Tensor | None = None  # rewards of the samples of the last call

    def __init__(self, reference=None):
        self.reference = reference  # the reference chain of the path KL (Langevin: derived)

    def loss(
        self,
        sampler: GaussianChain,
        objective: Objective,
        *,
        n: int,
        generator: torch.Generator | None = None,
        x0: torch.Tensor | None = None,
        samples: torch.Tensor | None = None,
        reference_samples: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_pathwise_call("unrolled", objective, samples)
        reference = path_kl_reference("unrolled", sampler, objective, self.reference)
        with torch.enable_grad():
            x = sampler.sample_x0(n, generator) if x0 is None else x0
            kl = x.new_zeros(())
            for k in range(sampler.num_steps):
                m = sampler.mean(x, k)
                s = sampler.noise_scale(k)
                if reference is not None:
                    stochastic_scale(sampler, k)
                    diff = (m - reference.mean(x, k)).flatten(1)
                    kl = kl + (diff**2).sum(1).mean() / (2 * s * s)
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                x = m + s * noise
            r = objective.rewards(x)
            if not r.requires_grad:
                raise UsageError(
                    "the reward returned no gradient (is it computed outside torch, or "
                    "detached?); the unrolled estimator needs a differentiable reward — use "
                    "the covariance estimator for non-differentiable rewards"
                )
            self.last_rewards = r.detach()
            return -r.mean() + objective.lam * kl
