"""The discrete adjoint: the unrolled gradient with O(K x state) memory.

Forward without a graph, storing x_0 .. x_K (methods.md 3.3). Backward from
a_K = grad_x(-mean r(x_K)): for k = K-1 .. 0, one vector-Jacobian product of the
step's mean at the stored x_k gives

    g_theta += J_theta m(x_k)^T a_{k+1},     a_k = J_x m(x_k)^T a_{k+1}

(x_{k+1} = m(x_k) + s_k xi_k with the noise fixed, so d x_{k+1} / d x_k = J_x m). A
path-KL running cost c_k = mean |m(x_k) - m_ref(x_k)|^2 / (2 s_k^2) adds its own
gradients at each step. The result equals :class:`UnrolledEstimator`'s gradient for
the same noise to floating-point error, but only the states are kept, never the
network's activations of all K steps: choose it for long chains and big networks.

The surrogate loss is sum_p <p, g_p> (shifted to the objective's value), whose
gradient in the parameters is exactly the accumulated estimate, so it composes with
any optimiser, gradient accumulation and DDP like every other estimator.
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


class AdjointEstimator:
    """Adjoint gradient of -mean r(x_K) (+ lam * path KL to ``reference``)."""

    name = "adjoint"
    last_rewards: torch.Tensor | None = None

    def __init__(self, reference: GaussianChain | None = None):
        self.reference = reference

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
        check_pathwise_call("adjoint", objective, samples)
        reference = path_kl_reference("adjoint", sampler, objective, self.reference)
        params = [p for p in sampler.parameters() if p.requires_grad]
        if not params:
            raise UsageError(f"{type(sampler).__name__} has no trainable parameters")
        with torch.no_grad():  # forward: store the states only
            x = sampler.sample_x0(n, generator) if x0 is None else x0
            path = [x]
            for k in range(sampler.num_steps):
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                x = sampler.step(x, k, noise)
                path.append(x)
        with torch.enable_grad():
            xk = path[-1].detach().requires_grad_(True)
            r = objective.rewards(xk)
            if not r.requires_grad:
                raise UsageError(
                    "the reward returned no gradient; the adjoint estimator needs a "
                    "differentiable reward (use the score-function or covariance estimator)"
                )
            value = -r.mean()
            (a,) = torch.autograd.grad(value, xk)
        self.last_rewards = r.detach()
        grads = [torch.zeros_like(p) for p in params]
        kl = torch.zeros((), dtype=value.dtype, device=value.device)
        for k in reversed(range(sampler.num_steps)):
            with torch.enable_grad():
                xk = path[k].detach().requires_grad_(True)
                m = sampler.mean(xk, k)
                total = (m * a).sum()
                if reference is not None:
                    s = stochastic_scale(sampler, k)
                    c = ((m - reference.mean(xk, k)) ** 2).flatten(1).sum(1).mean() / (2 * s * s)
                    kl = kl + c.detach()
                    total = total + objective.lam * c
                out = torch.autograd.grad(total, [xk, *params], allow_unused=True)
            a = out[0]
            for g, gk in zip(grads, out[1:], strict=True):
                if gk is not None:
                    g.add_(gk)
        value = value.detach() + objective.lam * kl
        surrogate = sum((p * g).sum() for p, g in zip(params, grads, strict=True))
        return surrogate - surrogate.detach() + value
