"""The nested loop: a fresh K-step sampling run for every theta update, any estimator.

Each update draws new x_0, runs the sampler's K steps and takes one step of the
:class:`~sampleopt.algorithms.update.Update` core on the estimator's surrogate loss
(docs/methods.md section 4, the baselines). With the covariance estimator on a long
Langevin run it is the implicit gradient at (approximately) stationary samples; with
the unrolled or adjoint estimator it is backpropagation through the K steps; with the
score-function estimator it is DDPO-style policy gradient. Each update costs K sampling
steps per sample, so at equal sampling budget it makes K times fewer theta steps than
Implicit Diffusion's single loop.

:class:`FineTuner` is the same loop with the defaults of reward fine-tuning of a
diffusion model (Adam, small batches, no per-update copy of the weights): the estimator
is one argument, ``FineTuner(sampler, objective, so.AdjointEstimator())``.

**Random streams.** With ``generator`` every update draws from that one stream. Without
it, micro-batch m of update u draws from a generator seeded by (seed, u, m), and under
``accelerate launch`` (any initialised ``torch.distributed`` group) process r takes
micro-batches r * accumulate .. (r + 1) * accumulate - 1, so P processes with
``accumulate=a`` compute the same update as one process with ``accumulate=P * a``
(tested). :meth:`NestedLoop.state_tensors` holds everything a bit-identical resume needs.
"""

from __future__ import annotations

import torch

from sampleopt.algorithms.base import Algorithm, positive_int
from sampleopt.algorithms.history import History
from sampleopt.algorithms.step_size import StepSize
from sampleopt.estimators.base import Estimator
from sampleopt.objectives.objective import Objective
from sampleopt.samplers.chain import GaussianChain


class NestedLoop(Algorithm):
    """Outer loop over theta; inner loop: one full sampling run per micro-batch.

    Args:
        sampler, objective: what is tuned and for what.
        estimator: an :class:`~sampleopt.estimators.Estimator` object
            (``so.make_estimator(name)`` builds one by its registry name).
        batch_size: samples per micro-batch; ``accumulate`` micro-batches per update.
        lr: a number or a :class:`StepSize` schedule; ``optimizer``: "sgd" (in place),
            "adam" or a torch optimiser (see :class:`~sampleopt.algorithms.update.Update`).
        params: the parameters to train (default: all the sampler's trainable ones).
        generator / seed: the random stream (see the module docstring).
        record_theta: keep the flattened parameters after every update in the history
            (for small models).
    """

    def __init__(
        self,
        sampler: GaussianChain,
        objective: Objective,
        estimator: Estimator,
        *,
        batch_size: int = 1000,
        lr: float | StepSize = 0.1,
        optimizer="sgd",
        accumulate: int = 1,
        params=None,
        generator: torch.Generator | None = None,
        seed: int = 0,
        record_theta: bool = True,
    ):
        self.accumulate = positive_int("accumulate", accumulate)
        self._setup(
            sampler, objective, estimator, batch_size, lr, optimizer, params, seed, record_theta
        )
        self._params_arg = None if params is None else self.params  # None: all of them
        self.generator = generator

    def step(self) -> History:
        """One theta update; returns its one-row history. Raises
        :class:`~sampleopt.errors.NonFiniteError` before updating anything if the reward
        or the gradient is not finite."""
        for p in self.params:
            p.grad = None
        rewards, value = [], 0.0
        rank = self.update.rank
        for a in range(self.accumulate):
            loss = self.estimator.loss(
                self.sampler,
                self.objective,
                n=self.n,
                generator=self.generator or self._micro_generator(rank * self.accumulate + a),
                params=self._params_arg,
            )
            (loss / self.accumulate).backward()
            rewards.append(self.estimator.last_rewards.mean())
            value += float(loss.detach()) / self.accumulate
            self.network_evals += self.estimator.network_evals(self.sampler, self.n)
        self.update.apply()
        steps = self.update.count * self.sampler.num_steps * self.accumulate
        return self._record(steps, torch.stack(rewards).mean(), value)

    def run(self, steps: int, *, callback=None) -> History:
        """``steps`` more updates; ``callback(history_row, self)`` after each."""
        parts = []
        for _ in range(steps):
            parts.append(self.step())
            if callback is not None:
                callback(parts[-1], self)
        return History.cat(parts) if parts else self._empty()

    def _micro_generator(self, m: int) -> torch.Generator:
        """The generator of micro-batch m of the coming update (see the module docstring)."""
        seed = (self.seed * 1_000_003 + self.updates) * 65_537 + m
        return torch.Generator(device=self.params[0].device).manual_seed(seed % 2**62)

    # -- state for checkpoints -----------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything a resume needs, as a flat dict of tensors (safetensors)."""
        out = {k: v.clone() for k, v in self.update.state_tensors().items()}
        out["network_evals"] = torch.tensor(self.network_evals, dtype=torch.long)
        if self.generator is not None:
            out["generator_state"] = self.generator.get_state()
        return out

    def load_state_tensors(self, t: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_tensors` (same model, estimator and settings)."""
        self.update.load_state_tensors(t)
        self.network_evals = int(t["network_evals"])
        if self.generator is not None:
            self.generator.set_state(t["generator_state"])


class FineTuner(NestedLoop):
    """The nested loop with fine-tuning defaults: Adam at ``lr`` 1e-4, 16 samples per
    micro-batch, no copy of the weights per update. See the module docstring."""

    def __init__(
        self,
        sampler: GaussianChain,
        objective: Objective,
        estimator: Estimator,
        *,
        batch_size: int = 16,
        lr: float | StepSize = 1e-4,
        optimizer="adam",
        accumulate: int = 1,
        params=None,
        generator: torch.Generator | None = None,
        seed: int = 0,
        record_theta: bool = False,
    ):
        super().__init__(
            sampler,
            objective,
            estimator,
            batch_size=batch_size,
            lr=lr,
            optimizer=optimizer,
            accumulate=accumulate,
            params=params,
            generator=generator,
            seed=seed,
            record_theta=record_theta,
        )
