"""The discrete adjoint: the unrolled gradient with O(K x state) memory.

Forward without a graph, storing x_0 .. x_K (docs/methods.md section 3.3). Backward from
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
from typing import ClassVar

import torch

from sampleopt.errors import UsageError
from sampleopt.estimators.base import Call, Estimator, surrogate_from_grads
from sampleopt.objectives.divergences import is_deterministic
from sampleopt.objectives.objective import Objective
from sampleopt.samplers.chain import GaussianChain

STATE_STORAGE = ("all", "sqrt")


class AdjointEstimator(Estimator):
    """Adjoint gradient of -mean r(x_K) (+ lam * the objective's path KL).

    ``states="all"`` keeps x_0 .. x_K (K + 1 states); ``states="sqrt"`` keeps about
    sqrt(K) of them with the random generator's state there, and recomputes each
    segment's states (the same noise, replayed) in the backward sweep: about 2 sqrt(K)
    states in memory for one more forward pass. Choose "sqrt" when K x state no longer
    fits beside one step's activations (long chains of images).

    :meth:`path_gradient` takes the same sweep along a path sampled earlier: the update
    of finite-time Implicit Diffusion (:class:`~sampleopt.QueuedImplicitDiffusion`).
    """

    name: ClassVar[str] = "adjoint"
    needs_reward_gradient: ClassVar[bool] = True
    evals_per_step: ClassVar[int] = 2  # sampling, then the recomputed step of the sweep
    supports_stored_paths: ClassVar[bool] = True

    def __init__(self, *, states: str = "all"):
        if states not in STATE_STORAGE:
            raise UsageError(f"states must be one of {', '.join(STATE_STORAGE)}, got {states!r}")
        self.states = states

    def options(self) -> dict:
        return {"states": self.states}

    def _loss(self, call: Call) -> torch.Tensor:
        sampler, params, generator = call.sampler, call.params, call.generator
        K = sampler.num_steps
        length = K if self.states == "all" else max(1, math.isqrt(K))
        if self.states == "sqrt" and generator is None:  # a generator whose state can replay
            generator = torch.Generator(device=params[0].device)
            generator.manual_seed(int(torch.randint(0, 2**62, ())))
            call.generator = generator
        with torch.no_grad():  # forward: keep the states (or every length-th one)
            x = call.start()
            starts = list(range(0, K, length))
            marks = {}
            block = None
            if self.states == "all":  # one (K+1, n, ...) block: K small tensors fragment the heap
                block = x.new_empty((K + 1, *x.shape))
                block[0] = x
            for k in range(K):
                if self.states == "sqrt" and k % length == 0:
                    marks[k] = (x.clone(), generator.get_state())
                x = sampler.step(x, k, call.noise(x))
                if block is not None:
                    block[k + 1] = x
        a, value = self._terminal_adjoint(call.objective, x)
        grads = [torch.zeros_like(p) for p in params]
        kl = torch.zeros((), dtype=value.dtype, device=value.device)
        for c in reversed(starts):
            if block is None:  # replay the segment c .. c + length from its mark
                seg = self._replay(sampler, c, min(c + length, K), *marks.pop(c))
            else:
                seg = block
            a, cost = _sweep(call, seg, c, a, grads)
            kl = kl + cost
        return surrogate_from_grads(params, grads, value + call.lam * kl)

    def path_gradient(
        self, sampler: GaussianChain, objective: Objective, path: torch.Tensor, *, params=None
    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """The adjoint gradient along a stored path ``path`` = x_0 .. x_K, shape
        (K + 1, n, ...), with the sampler's *current* parameters: the vector-Jacobian
        products of every step are taken at the stored states (docs/methods.md sections
        3.3 and 4, finite time). Returns (gradients of ``params``, the objective's value
        on the path, the rewards). On a path sampled at the current theta it is
        :meth:`loss`'s gradient."""
        K = sampler.num_steps
        if not isinstance(path, torch.Tensor) or path.ndim < 2 or path.shape[0] != K + 1:
            got = tuple(path.shape) if isinstance(path, torch.Tensor) else type(path).__name__
            raise UsageError(f"a {K}-step sampler's path is a (K + 1, n, ...) tensor, got {got}")
        call = self.check_call(sampler, objective, x0=path[0], params=params)
        a, value = self._terminal_adjoint(objective, path[-1])
        grads = [torch.zeros_like(p) for p in call.params]
        _, kl = _sweep(call, path, 0, a, grads)
        return grads, value + objective.lam * kl, self.last_rewards

    def _terminal_adjoint(self, objective, x):
        """a_K = grad_x(-mean r(x_K)) and the value -mean r (the rewards are checked)."""
        with torch.enable_grad():
            xk = x.detach().requires_grad_(True)
            value = -self.rewards(objective, xk).mean()
            (a,) = torch.autograd.grad(value, xk)
        return a, value.detach()

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


def _step_vjp(call: Call, xs, k, a, grads):
    """One backward step at the stored (x_k, x_{k+1}): accumulate J_theta^T a into
    grads; return a_k = J_x^T a_{k+1} (+ the path-KL cost's gradient) and the cost."""
    sampler, path_kl = call.sampler, call.path_kl
    cost = 0.0
    with torch.enable_grad():
        xk = xs[0].detach().requires_grad_(True)
        m = sampler.mean(xk, k)
        total = (m * a).sum()
        s = sampler.noise_scale(k)
        if isinstance(s, torch.Tensor) and s.requires_grad and not is_deterministic(s):
            xi = (xs[1] - m.detach()) / s.detach()  # the step's noise, recovered
            total = total + s * (xi * a).sum()
        if path_kl is not None:
            c = path_kl.cost(sampler, xk, k, m).mean()
            cost = c.detach()
            total = total + call.lam * c
        out = torch.autograd.grad(total, [xk, *call.params], allow_unused=True)
    for g, gk in zip(grads, out[1:], strict=True):
        if gk is not None:
            g.add_(gk)
    return out[0], cost


def _sweep(call: Call, block, start, a, grads):
    """The backward sweep over the steps start .. start + len(block) - 2 whose states
    block holds: accumulates into grads; returns a_start and the path-KL cost."""
    kl = 0.0
    for k in reversed(range(start, start + block.shape[0] - 1)):
        a, cost = _step_vjp(call, (block[k - start], block[k - start + 1]), k, a, grads)
        kl = kl + cost
    return a, kl
