"""Pathwise gradients by unrolling: backpropagate r(x_K) through the K steps.

Sample x_0 and the noise, run the chain with autograd on, and differentiate
-mean r(x_K) (methods.md 3.1). With the noise fixed this is the exact gradient of
the Monte-Carlo loss, so it is unbiased for l(theta) of the *finite-K* chain (not
of the stationary law). The reward must be differentiable (use the score-function,
zeroth-order or covariance estimator otherwise).

With ``lam > 0`` it adds the path KL between the chain and a frozen reference chain
with the same noise (discrete Girsanov, methods.md 1), an upper bound on the KL of
the outputs:

    KL(P_theta || P_ref) = sum_k E || m_theta(x_k) - m_ref(x_k) ||^2 / (2 s_k^2)

Memory grows as O(K x activations). ``checkpoint=True`` keeps only each step's input
and recomputes the step's activations during the backward pass (one extra forward
pass, memory O(K x state + one step's activations)); the gradient is unchanged. The
discrete adjoint (:class:`AdjointEstimator`) has the same memory without autograd
bookkeeping over the whole chain.

:class:`TruncatedEstimator` (DRaFT-K, Clark et al. 2023; AlignProp) stops the gradient
before the last ``steps`` steps: cheaper, and *biased* (it ignores how theta moves
x_{K - steps}); ``steps = 1`` is DRaFT-1.

Choose the unrolled estimator for short chains and smooth rewards, or as the
reference the cheaper estimators are compared against.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from sampleopt.errors import UsageError
from sampleopt.estimators.common import (
    check_pathwise_call,
    checked_rewards,
    kl_step_cost,
    path_kl_reference,
    require_reward_gradient,
    resolve_params,
    stochastic_scale,
    surrogate_from_grads,
)
from sampleopt.objectives.objective import Objective
from sampleopt.samplers.chain import GaussianChain


class UnrolledEstimator:
    """Backpropagation through the whole sampling chain.

    ``reference``: the frozen reference chain of the path KL (Langevin samplers derive
    it from the objective's reference potential). ``checkpoint``: recompute each step
    in the backward pass instead of storing its activations.
    """

    name = "unrolled"
    last_rewards: torch.Tensor | None = None  # rewards of the samples of the last call

    def __init__(self, reference: GaussianChain | None = None, *, checkpoint: bool = False):
        self.reference = reference
        self.checkpoint = bool(checkpoint)

    def _first_differentiated_step(self, num_steps: int) -> int:
        return 0

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
        params=None,
    ) -> torch.Tensor:
        """Surrogate loss; ``params`` (default: all the sampler's trainable parameters)
        are the tensors that receive the gradient."""
        check_pathwise_call(self.name, objective, samples)
        chosen = resolve_params(self.name, sampler, params)
        reference = path_kl_reference(self.name, sampler, objective, self.reference)
        start = self._first_differentiated_step(sampler.num_steps)
        with torch.enable_grad():
            x = sampler.sample_x0(n, generator) if x0 is None else x0
            kl = x.new_zeros(())
            for k in range(sampler.num_steps):
                if k <= start and start > 0:  # truncated: x_start and before carry no gradient
                    x = x.detach()
                s = sampler.noise_scale(k)
                if reference is not None:
                    stochastic_scale(sampler, k)
                if k < start and reference is None:  # nothing to differentiate here
                    with torch.no_grad():
                        m, c = self._step(sampler, reference, x, k, s)
                elif self.checkpoint:
                    m, c = _checkpoint(self._step, sampler, reference, x, k, s, use_reentrant=False)
                else:
                    m, c = self._step(sampler, reference, x, k, s)
                if c is not None:
                    kl = kl + c.mean()
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                x = m + s * noise
            r = checked_rewards(objective, x)
            require_reward_gradient(self.name, r)
            self.last_rewards = r.detach()
            value = -r.mean() + objective.lam * kl
            if params is None:
                return value
            # only the chosen parameters get a gradient
            grads = torch.autograd.grad(value, chosen, allow_unused=True)
        grads = [
            torch.zeros_like(p) if g is None else g for p, g in zip(chosen, grads, strict=True)
        ]
        return surrogate_from_grads(chosen, grads, value)

    @staticmethod
    def _step(sampler, reference, x, k, s):
        m = sampler.mean(x, k)
        c = None if reference is None else kl_step_cost(m, reference.mean(x, k), s)
        return m, c


class TruncatedEstimator(UnrolledEstimator):
    """DRaFT-K: backpropagate through the last ``steps`` steps only (biased).

    The path-KL running cost keeps its direct dependence on theta at every step; only
    the dependence through the states before the last ``steps`` steps is dropped.
    """

    name = "truncated"

    def __init__(
        self, steps: int = 1, reference: GaussianChain | None = None, *, checkpoint: bool = False
    ):
        if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
            raise UsageError(f"steps must be an integer >= 1, got {steps!r}")
        super().__init__(reference, checkpoint=checkpoint)
        self.steps = steps

    def _first_differentiated_step(self, num_steps: int) -> int:
        return max(0, num_steps - self.steps)
