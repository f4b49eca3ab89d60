"""Implicit Diffusion for finite-horizon samplers: one loop, a queue of K batches.

Marion et al. (2025, section 3, finite time; methods.md 4) run sampling and
optimisation in one loop instead of nesting a K-step sampling run inside every theta
step. The queue holds up to K batches, batch j having taken j sampling steps. Each
iteration:

1. push a fresh batch x_0 ~ p_0;
2. advance every queued batch by one step with the *current* theta, all in one
   batched network call (:meth:`GaussianChain.mean_batched`);
3. pop the batch that has taken its K steps and update theta with the adjoint
   gradient along its stored path, evaluated with the current theta
   (:func:`sampleopt.estimators.path_gradient`).

The first K - 1 iterations only fill the queue; from then on every iteration makes one
theta step at the cost of one batched sampling step plus one adjoint sweep. A finished
path was sampled while theta moved (its step j used theta from j iterations ago), so
the gradient is that of a slowly moving target; with learning rate 0 it is exactly the
nested-loop adjoint gradient of the same path (tested). Batch b draws x_0 and its noise
from its own generator, seeded from (seed, b), so runs are reproducible and a batch's
path is the one ``AdjointEstimator().loss(n=..., generator=...)`` would draw.

Choose it over the nested loop when the sampler's steps are cheap to batch (a GPU, or
small batches on a CPU): it makes K times more theta steps per sequential network call
at the same number of network evaluations per theta step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from sampleopt.checks import check_finite
from sampleopt.errors import UsageError
from sampleopt.estimators.adjoint import path_gradient
from sampleopt.estimators.common import path_kl_reference, resolve_params
from sampleopt.objectives.objective import Objective
from sampleopt.samplers.chain import GaussianChain


@dataclass
class _Batch:
    index: int  # the batch's number (its generator's seed)
    path: torch.Tensor  # (K + 1, n, ...): x_0 .. x_j filled
    j: int  # steps taken
    generator: torch.Generator


def batch_generator(seed: int, index: int, device=None) -> torch.Generator:
    """The generator batch ``index`` of a run seeded ``seed`` draws x_0 and its noise from."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + index)


class QueuedImplicitDiffusion:
    """Finite-time Implicit Diffusion (a queue of K batches at different stages).

    ``optimizer``: a torch optimiser over the parameters (default: plain SGD with
    ``lr``, applied in place). ``reference``: the frozen chain of the path KL when
    ``objective.lam > 0``. ``params``: the parameters to train (default: all the
    sampler's trainable ones).
    """

    def __init__(
        self,
        sampler: GaussianChain,
        objective: Objective,
        *,
        batch_size: int,
        lr: float = 1e-3,
        optimizer: torch.optim.Optimizer | None = None,
        reference: GaussianChain | None = None,
        params=None,
        seed: int = 0,
    ):
        if isinstance(batch_size, bool) or not (isinstance(batch_size, int) and batch_size >= 1):
            raise UsageError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not (isinstance(lr, int | float) and lr >= 0):
            raise UsageError(f"lr must be a number >= 0, got {lr!r}")
        self.sampler = sampler
        self.objective = objective
        self.n = batch_size
        self.lr = float(lr)
        self.optimizer = optimizer
        self.params = resolve_params("finite-time Implicit Diffusion", sampler, params)
        self.reference = path_kl_reference("adjoint", sampler, objective, reference)
        self.seed = int(seed)
        self.queue: deque[_Batch] = deque()
        self.batches_started = 0
        self.iteration = 0
        self.updates = 0
        self.network_rows = 0  # rows through the network: sampling steps + adjoint sweeps
        self.last_grads: list[torch.Tensor] | None = None
        self.reduce_grads = None  # set by FineTuner under torch.distributed

    def _push(self) -> None:
        device = self.params[0].device
        gen = batch_generator(self.seed, self.batches_started, device)
        x0 = self.sampler.sample_x0(self.n, gen)
        path = x0.new_zeros((self.sampler.num_steps + 1, *x0.shape))  # zeros: reproducible
        path[0] = x0
        self.queue.append(_Batch(self.batches_started, path, 0, gen))
        self.batches_started += 1

    def step(self) -> dict | None:
        """One iteration; returns the update's record (value, reward mean, batch) or
        None while the queue fills."""
        sampler = self.sampler
        self._push()
        with torch.no_grad():
            means = sampler.mean_batched(
                [b.path[b.j] for b in self.queue], [b.j for b in self.queue]
            )
            for b, m in zip(self.queue, means, strict=True):
                noise = torch.randn(m.shape, generator=b.generator, dtype=m.dtype, device=m.device)
                b.path[b.j + 1] = sampler.add_noise(m, b.j, noise)
                b.j += 1
        self.network_rows += self.n * len(self.queue)
        self.iteration += 1
        if self.queue[0].j < sampler.num_steps:
            return None
        done = self.queue[0]
        grads, value, rewards = path_gradient(
            sampler, self.objective, done.path, params=self.params, reference=self.reference
        )
        self.network_rows += self.n * sampler.num_steps
        for g in grads:  # nothing is updated (and the batch stays queued) if this fails
            check_finite(g, "the gradient")
        self.queue.popleft()
        self.last_grads = grads
        self._apply(grads)
        self.updates += 1
        return {
            "update": self.updates,
            "iteration": self.iteration,
            "value": float(value),
            "reward_mean": float(rewards.mean()),
            "batch": done.index,
            "network_rows": self.network_rows,
        }

    def _apply(self, grads) -> None:
        if self.reduce_grads is not None:  # several processes: average their gradients
            grads = self.reduce_grads(grads)
        if self.optimizer is not None:
            for p, g in zip(self.params, grads, strict=True):
                p.grad = g
            self.optimizer.step()
            return
        if self.lr == 0:
            return
        with torch.no_grad():
            for p, g in zip(self.params, grads, strict=True):
                p.sub_(g, alpha=self.lr)

    def state_tensors(self, prefix: str = "queue.") -> dict[str, torch.Tensor]:
        """The counters and every queued batch (path, steps taken, generator state)."""
        out = {
            f"{prefix}counters": torch.tensor(
                [self.batches_started, self.iteration, self.updates, self.network_rows],
                dtype=torch.long,
            )
        }
        for i, b in enumerate(self.queue):
            out[f"{prefix}{i}.path"] = b.path.clone()
            out[f"{prefix}{i}.meta"] = torch.tensor([b.index, b.j], dtype=torch.long)
            out[f"{prefix}{i}.generator"] = b.generator.get_state()
        return out

    def load_state_tensors(self, t: dict[str, torch.Tensor], prefix: str = "queue.") -> None:
        """Restore :meth:`state_tensors`."""
        self.batches_started, self.iteration, self.updates, self.network_rows = (
            int(v) for v in t[f"{prefix}counters"]
        )
        self.queue.clear()
        i = 0
        while f"{prefix}{i}.path" in t:
            index, j = (int(v) for v in t[f"{prefix}{i}.meta"])
            gen = torch.Generator(device=self.params[0].device)
            gen.set_state(t[f"{prefix}{i}.generator"])
            self.queue.append(_Batch(index, t[f"{prefix}{i}.path"].clone(), j, gen))
            i += 1

    def run(self, updates: int, *, callback=None) -> list[dict]:
        """Iterate until ``updates`` more theta updates have been made."""
        records = []
        target = self.updates + updates
        while self.updates < target:
            rec = self.step()
            if rec is not None:
                records.append(rec)
                if callback is not None:
                    callback(rec, self)
        return records
