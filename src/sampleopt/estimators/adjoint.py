"""The discrete adjoint: the unrolled gradient with O(K x state) memory.

Forward without a graph, storing x_0 .. x_K (methods.md 3.3). Backward from
a_K = grad_x(-mean r(x_K)): for k = K-1 .. 0, one vector-Jacobian product of the
step's mean at the stored x_k gives

    g_theta += J_theta m(x_k)^T a_{k+1},     a_k = J_x m(x_k)^T a_{k+1}

(x_{k+1} = m(x_k) + s_k xi_k with the noise fixed, so d x_{k+1} / d x_k = J_x m). A
path-KL running cost c_k = mean |m(x_k) - m_ref(x_k)|^2 / (2 s_k^2) adds its own
gradients at each step, and a learnable noise scale adds <a_{k+1}, xi_k> d s_k / d theta
with xi_k recovered from the stored states. The result equals
:class:`UnrolledEstimator`'s gradient for the same noise to floating-point error,
but only the states are kept, never the network's
activations of all K steps: choose it for long chains and big networks.

The surrogate loss is sum_p <p, g_p> (shifted to the objective's value), whose
gradient in the parameters is exactly the accumulated estimate, so it composes with
any optimiser, gradient accumulation and DDP like every other estimator.
"""

from __future__ import annotations

import torch

from sampleopt.estimators.common import (
    check_pathwise_call,
    checked_rewards,
    is_deterministic,
    kl_step_cost,
    path_kl_reference,
    require_reward_gradient,
    resolve_params,
    stochastic_scale,
    surrogate_from_grads,
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
        params=None,
    ) -> torch.Tensor:
        """Surrogate loss; ``params`` (default: all the sampler's trainable parameters)
        are the tensors that receive the gradient."""
        check_pathwise_call(self.name, objective, samples)
        params = resolve_params(self.name, sampler, params)
        reference = path_kl_reference(self.name, sampler, objective, self.reference)
        with torch.no_grad():  # forward: store the states only
            x = sampler.sample_x0(n, generator) if x0 is None else x0.detach()
            # one (K+1, n, ...) block: K small tensors would fragment the heap
            path = x.new_empty((sampler.num_steps + 1, *x.shape))
            path[0] = x
            for k in range(sampler.num_steps):
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                path[k + 1] = sampler.step(path[k], k, noise)
        with torch.enable_grad():
            xk = path[-1].detach().requires_grad_(True)
            r = checked_rewards(objective, xk)
            require_reward_gradient(self.name, r)
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
                s = sampler.noise_scale(k)
                if isinstance(s, torch.Tensor) and s.requires_grad and not is_deterministic(s):
                    xi = (path[k + 1] - m.detach()) / s.detach()  # the step's noise, recovered
                    total = total + s * (xi * a).sum()
                if reference is not None:
                    s = stochastic_scale(sampler, k)
                    c = kl_step_cost(m, reference.mean(xk, k), s).mean()
                    kl = kl + c.detach()
                    total = total + objective.lam * c
                out = torch.autograd.grad(total, [xk, *params], allow_unused=True)
            a = out[0]
            for g, gk in zip(grads, out[1:], strict=True):
                if gk is not None:
                    g.add_(gk)
        return surrogate_from_grads(params, grads, value.detach() + objective.lam * kl)
