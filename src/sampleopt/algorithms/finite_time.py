"""Implicit Diffusion for finite-horizon samplers: one loop, a queue of K batches.

Marion et al. (2025, section 3, finite time; docs/methods.md section 4) run sampling and
optimisation in one loop instead of nesting a K-step sampling run inside every theta
step. The queue holds up to K batches, batch j having taken j sampling steps. Each
iteration:

1. push a fresh batch x_0 ~ p_0;
2. advance every queued batch by one step with the *current* theta, all in one
   batched network call (:meth:`GaussianChain.mean_batched`);
3. pop the batch that has taken its K steps and update theta with the adjoint
   gradient along its stored path, evaluated with the current theta
   (:meth:`sampleopt.AdjointEstimator.path_gradient`), through the shared
   :class:`~sampleopt.algorithms.update.Update` core (SGD or Adam, several processes).

The first K - 1 iterations only fill the queue; from then on every iteration makes one
theta step at the cost of one batched sampling step plus one adjoint sweep. A finished
path was sampled while theta moved (its step j used theta from K - 1 - j updates
before the one it feeds), so
the gradient is that of a slowly moving target; with learning rate 0 it is exactly the
nested-loop adjoint gradient of the same path (tested). Batch b draws x_0 and its noise
from its own generator (:meth:`QueuedImplicitDiffusion.batch_generator`, seeded from the
seed, the process's rank and b), so runs are reproducible and a batch's path is the one
``AdjointEstimator().loss(n=..., generator=...)`` would draw.

Choose it over the nested loop when the sampler's steps are cheap to batch (a GPU, or
small batches on a CPU): it makes one theta step per batched sampling call instead of
one per K sequential sampling calls, at the same number of network evaluations per theta
step (the adjoint sweep itself is still K sequential vector-Jacobian products).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from sampleopt.algorithms.base import Algorithm
from sampleopt.algorithms.history import History
from sampleopt.algorithms.step_size import StepSize
from sampleopt.errors import UsageError
from sampleopt.estimators.adjoint import AdjointEstimator
from sampleopt.objectives.objective import Objective
from sampleopt.samplers.chain import GaussianChain


@dataclass
class _Batch:
    index: int  # the batch's number (its generator's seed)
    path: torch.Tensor  # (K + 1, n, ...): x_0 .. x_j filled
    j: int  # steps taken
    generator: torch.Generator


class QueuedImplicitDiffusion(Algorithm):
    """Finite-time Implicit Diffusion (a queue of K batches at different stages).

    ``estimator``: how a finished path becomes a gradient; it must take gradients along
    stored paths (``supports_stored_paths``: the :class:`AdjointEstimator`, the default).
    ``lr`` (a number or :class:`StepSize`) and ``optimizer`` ("sgd" in place, "adam" or a
    torch optimiser) configure the shared update core. ``params``: the parameters to
    train (default: all the sampler's trainable ones). ``record_theta``: keep the
    flattened parameters after each update in the history (small models).
    """

    def __init__(
        self,
        sampler: GaussianChain,
        objective: Objective,
        estimator: AdjointEstimator | None = None,
        *,
        batch_size: int,
        lr: float | StepSize = 1e-3,
        optimizer="sgd",
        params=None,
        seed: int = 0,
        record_theta: bool = False,
    ):
        estimator = AdjointEstimator() if estimator is None else estimator
        if not getattr(estimator, "supports_stored_paths", False):
            raise UsageError(
                f"finite-time Implicit Diffusion takes gradients along stored paths, which the "
                f"{getattr(estimator, 'name', estimator)!r} estimator cannot (it draws its own); "
                "use the adjoint estimator here, or the nested loop (FineTuner) for this one"
            )
        self._setup(
            sampler, objective, estimator, batch_size, lr, optimizer, params, seed, record_theta
        )
        self.queue: deque[_Batch] = deque()
        self.batches_started = 0
        self.iteration = 0
        self.last_grads: list[torch.Tensor] | None = None

    def batch_generator(self, index: int) -> torch.Generator:
        """The generator batch ``index`` draws x_0 and its noise from (per process)."""
        stream = self.seed * 7919 + self.update.rank
        device = self.params[0].device
        return torch.Generator(device=device).manual_seed((stream * 1_000_003 + index) % 2**62)

    def _push(self) -> None:
        gen = self.batch_generator(self.batches_started)
        x0 = self.sampler.sample_x0(self.n, gen)
        path = x0.new_zeros((self.sampler.num_steps + 1, *x0.shape))  # zeros: reproducible
        path[0] = x0
        self.queue.append(_Batch(self.batches_started, path, 0, gen))
        self.batches_started += 1

    def step(self) -> History | None:
        """One iteration; returns the update's one-row history, or None while the queue
        fills."""
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
        self.network_evals += self.n * len(self.queue)
        self.iteration += 1
        if self.queue[0].j < sampler.num_steps:
            return None
        done = self.queue[0]
        grads, value, rewards = self.estimator.path_gradient(
            sampler, self.objective, done.path, params=self.params
        )
        self.network_evals += self.n * sampler.num_steps
        self.update.apply(grads)  # checks first: nothing changes (the batch stays queued)
        self.queue.popleft()
        self.last_grads = grads
        return self._record(self.iteration, rewards.mean(), value)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Parameters, optimiser state, counters and every queued batch (path, steps
        taken, generator state)."""
        out = {k: v.clone() for k, v in self.update.state_tensors().items()}
        out["queue.counters"] = torch.tensor(
            [self.batches_started, self.iteration, self.network_evals], dtype=torch.long
        )
        for i, b in enumerate(self.queue):
            out[f"queue.{i}.path"] = b.path.clone()
            out[f"queue.{i}.meta"] = torch.tensor([b.index, b.j], dtype=torch.long)
            out[f"queue.{i}.generator"] = b.generator.get_state()
        return out

    def load_state_tensors(self, t: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_tensors`."""
        self.update.load_state_tensors(t)
        self.batches_started, self.iteration, self.network_evals = (
            int(v) for v in t["queue.counters"]
        )
        self.queue.clear()
        i = 0
        while f"queue.{i}.path" in t:
            index, j = (int(v) for v in t[f"queue.{i}.meta"])
            gen = torch.Generator(device=self.params[0].device)
            gen.set_state(t[f"queue.{i}.generator"])
            self.queue.append(_Batch(index, t[f"queue.{i}.path"].clone(), j, gen))
            i += 1

    def run(self, updates: int, *, callback=None) -> History:
        """Iterate until ``updates`` more theta updates have been made;
        ``callback(history_row, self)`` after each."""
        parts = []
        target = self.updates + updates
        while self.updates < target:
            rec = self.step()
            if rec is not None:
                parts.append(rec)
                if callback is not None:
                    callback(rec, self)
        return History.cat(parts) if parts else self._empty()
