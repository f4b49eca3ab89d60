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
but only the states are kept, never the network's activations of all K steps: choose it
for long chains and big networks. Its time is one sampling pass plus, per step, a
recomputed forward and its vector-Jacobian product (about 4 sampling passes for the
2-D MLP of the bench, against about 3.3 for unrolling). With ``states="sqrt"`` only
about 2 sqrt(K) states are kept (the rest replayed from the generator's state, one more
forward pass), so memory hardly grows with K.

The surrogate loss is sum_p <p, g_p> (shifted to the objective's value), whose
gradient in the parameters is exactly the accumulated estimate, so it composes with
any optimiser, gradient accumulation and DDP like every other estimator.
"""

from __future__ import annotations

import math

import torch

from sampleopt.errors import UsageError
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

STATE_STORAGE = ("all", "sqrt")


class AdjointEstimator:
    """Adjoint gradient of -mean r(x_K) (+ lam * path KL to ``reference``).

    ``states="all"`` keeps x_0 .. x_K (K + 1 states); ``states="sqrt"`` keeps about
    sqrt(K) of them with the random generator's state there, and recomputes each
    segment's states (the same noise, replayed) in the backward sweep: about 2 sqrt(K)
    states in memory for one more forward pass. Choose "sqrt" when K x state no longer
    fits beside one step's activations (long chains of images).
    """

    name = "adjoint"
    last_rewards: torch.Tensor | None = None

    def __init__(self, reference: GaussianChain | None = None, *, states: str = "all"):
        if states not in STATE_STORAGE:
            raise UsageError(f"states must be one of {', '.join(STATE_STORAGE)}, got {states!r}")
        self.reference = reference
        self.states = states

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
        K = sampler.num_steps
        length = K if self.states == "all" else max(1, math.isqrt(K))
        if self.states == "sqrt" and generator is None:  # a generator whose state can replay
            generator = torch.Generator(device=params[0].device)
            generator.manual_seed(int(torch.randint(0, 2**62, ())))
        with torch.no_grad():  # forward: keep the states (or every length-th one)
            x = sampler.sample_x0(n, generator) if x0 is None else x0.detach()
            starts = list(range(0, K, length))
            marks = {}
            block = None
            if self.states == "all":  # one (K+1, n, ...) block: K small tensors fragment the heap
                block = x.new_empty((K + 1, *x.shape))
                block[0] = x
            for k in range(K):
                if self.states == "sqrt" and k % length == 0:
                    marks[k] = (x.clone(), generator.get_state())
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                x = sampler.step(x, k, noise)
                if block is not None:
                    block[k + 1] = x
        a, value, r = _terminal_adjoint(self.name, objective, x)
        self.last_rewards = r
        grads = [torch.zeros_like(p) for p in params]
        kl = torch.zeros((), dtype=value.dtype, device=value.device)
        for c in reversed(starts):
            if block is None:  # replay the segment c .. c + length from its mark
                seg = self._replay(sampler, c, min(c + length, K), *marks.pop(c))
            else:
                seg = block
            a, cost = _sweep(sampler, reference, objective.lam, seg, c, a, params, grads)
            kl = kl + cost
        return surrogate_from_grads(params, grads, value + objective.lam * kl)

    @staticmethod
    def _replay(sampler, start, end, x, state):
        generator = torch.Generator(device=x.device)
        generator.set_state(state)
        block = x.new_empty((end - start + 1, *x.shape))
        block[0] = x
        with torch.no_grad():
            for k in range(start, end):
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                block[k - start + 1] = sampler.step(block[k - start], k, noise)
        return block


def _terminal_adjoint(name, objective, x):
    """a_K = grad_x(-mean r(x_K)), the value -mean r and the rewards (checked)."""
    with torch.enable_grad():
        xk = x.detach().requires_grad_(True)
        r = checked_rewards(objective, xk)
        require_reward_gradient(name, r)
        value = -r.mean()
        (a,) = torch.autograd.grad(value, xk)
    return a, value.detach(), r.detach()


def _step_vjp(sampler, reference, lam, xs, k, a, params, grads):
    """One backward step at the stored (x_k, x_{k+1}): accumulate J_theta^T a into
    grads; return a_k = J_x^T a_{k+1} (+ the path-KL cost's gradient) and the cost."""
    cost = 0.0
    with torch.enable_grad():
        xk = xs[0].detach().requires_grad_(True)
        m = sampler.mean(xk, k)
        total = (m * a).sum()
        s = sampler.noise_scale(k)
        if isinstance(s, torch.Tensor) and s.requires_grad and not is_deterministic(s):
            xi = (xs[1] - m.detach()) / s.detach()  # the step's noise, recovered
            total = total + s * (xi * a).sum()
        if reference is not None:
            s = stochastic_scale(sampler, k)
            c = kl_step_cost(m, reference.mean(xk, k), s).mean()
            cost = c.detach()
            total = total + lam * c
        out = torch.autograd.grad(total, [xk, *params], allow_unused=True)
    for g, gk in zip(grads, out[1:], strict=True):
        if gk is not None:
            g.add_(gk)
    return out[0], cost


def path_gradient(
    sampler: GaussianChain,
    objective: Objective,
    path: torch.Tensor,
    *,
    params=None,
    reference: GaussianChain | None = None,
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """The adjoint gradient along a stored path ``path`` = x_0 .. x_K, shape
    (K + 1, n, ...), with the sampler's *current* parameters: the vector-Jacobian
    products of every step are taken at the stored states (methods.md 3.3 and 4,
    finite time). Returns (gradients of ``params``, the objective's value on the path,
    the rewards). Finite-time Implicit Diffusion uses it on paths sampled while theta
    moved; on a path sampled at the current theta it is :class:`AdjointEstimator`'s
    gradient."""
    params = resolve_params("adjoint", sampler, params)
    check_pathwise_call("adjoint", objective, None)
    reference = path_kl_reference("adjoint", sampler, objective, reference)
    K = sampler.num_steps
    if path.shape[0] != K + 1:
        raise UsageError(f"the path has {path.shape[0]} states; a {K}-step sampler needs {K + 1}")
    a, value, r = _terminal_adjoint("adjoint", objective, path[-1])
    grads = [torch.zeros_like(p) for p in params]
    _, kl = _sweep(sampler, reference, objective.lam, path, 0, a, params, grads)
    return grads, value + objective.lam * kl, r


def _sweep(sampler, reference, lam, block, start, a, params, grads):
    """The backward sweep over the steps start .. start + len(block) - 2 whose states
    block holds: accumulates into grads; returns a_start and the path-KL cost."""
    kl = 0.0
    for k in reversed(range(start, start + block.shape[0] - 1)):
        xs = (block[k - start], block[k - start + 1])
        a, cost = _step_vjp(sampler, reference, lam, xs, k, a, params, grads)
        kl = kl + cost
    return a, kl
