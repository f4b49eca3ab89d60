"""Pathwise gradients by unrolling: backpropagate r(x_K) through the K steps.

Sample x_0 and the noise, run the chain with autograd on, and differentiate
-mean r(x_K) (docs/methods.md section 3.1). With the noise fixed this is the exact gradient of
the Monte-Carlo loss, so it is unbiased for l(theta) of the *finite-K* chain (not
of the stationary law). The reward must be differentiable (use the score-function,
zeroth-order or covariance estimator otherwise).

With ``lam > 0`` it adds the objective's path KL (:class:`~sampleopt.PathKL`) to a
frozen reference chain with the same noise (discrete Girsanov, docs/methods.md section
1), an upper bound on the KL of the outputs:

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

from typing import ClassVar

import torch
from torch.utils.checkpoint import checkpoint as _checkpoint

from sampleopt.errors import UsageError
from sampleopt.estimators.base import Call, Estimator, restricted


class UnrolledEstimator(Estimator):
    """Backpropagation through the whole sampling chain.

    ``checkpoint``: recompute each step in the backward pass instead of storing its
    activations.
    """

    name: ClassVar[str] = "unrolled"
    needs_reward_gradient: ClassVar[bool] = True

    def __init__(self, *, checkpoint: bool = False):
        if not isinstance(checkpoint, bool):
            raise UsageError(f"checkpoint must be True or False, got {checkpoint!r}")
        self.checkpoint = checkpoint

    def options(self) -> dict:
        return {"checkpoint": self.checkpoint}

    def _first_differentiated_step(self, num_steps: int) -> int:
        return 0

    def _loss(self, call: Call) -> torch.Tensor:
        sampler, path_kl = call.sampler, call.path_kl
        start = self._first_differentiated_step(sampler.num_steps)
        with torch.enable_grad():
            x = call.start()
            kl = x.new_zeros(())
            for k in range(sampler.num_steps):
                if k <= start and start > 0:  # truncated: x_start and before carry no gradient
                    x = x.detach()
                if k < start and path_kl is None:  # nothing to differentiate here
                    with torch.no_grad():
                        m, c = self._step(sampler, path_kl, x, k)
                elif self.checkpoint:
                    m, c = _checkpoint(self._step, sampler, path_kl, x, k, use_reentrant=False)
                else:
                    m, c = self._step(sampler, path_kl, x, k)
                if c is not None:
                    kl = kl + c.mean()
                x = m + sampler.noise_scale(k) * call.noise(x)
            r = self.rewards(call.objective, x)
            value = -r.mean() + call.lam * kl
            return restricted(call, value)

    @staticmethod
    def _step(sampler, path_kl, x, k):
        m = sampler.mean(x, k)
        c = None if path_kl is None else path_kl.cost(sampler, x, k, m)
        return m, c


class TruncatedEstimator(UnrolledEstimator):
    """DRaFT-K: backpropagate through the last ``steps`` steps only (biased;
    docs/methods.md section 3.2).

    The path-KL running cost keeps its direct dependence on theta at every step; only
    the dependence through the states before the last ``steps`` steps is dropped.
    """

    name: ClassVar[str] = "truncated"

    def __init__(self, steps: int = 1, *, checkpoint: bool = False):
        if not (isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1):
            raise UsageError(f"steps must be an integer >= 1, got {steps!r}")
        super().__init__(checkpoint=checkpoint)
        self.steps = steps

    def options(self) -> dict:
        return {"steps": self.steps, **super().options()}

    def _first_differentiated_step(self, num_steps: int) -> int:
        return max(0, num_steps - self.steps)
