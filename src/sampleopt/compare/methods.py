"""The compared methods, each with its own defaults, behind one interface (docs/leaderboard.md).

A :class:`Method` names an algorithm and its settings, tuned for the synthetic MLP
tasks (``overrides`` adjusts them per task: smaller steps on ``subspace``, the MNIST
UNet's settings on ``mnist``):

* ``implicit``: finite-time Implicit Diffusion (:class:`~sampleopt.QueuedImplicitDiffusion`,
  a queue of K batches, adjoint gradients along the stored paths);
* ``adjoint``, ``unrolled``, ``truncated``, ``score-function``, ``adjoint-matching``,
  ``tr-bsde``: the nested loop (:class:`~sampleopt.FineTuner`, a fresh path per update)
  with that estimator;
* ``ppo``: DDPO's PPO: the score-function estimator with ratio clipping, ``epochs`` Adam
  steps on each rollout (the clipped surrogate keeps them near the rollout's law);
* ``guidance``: Algorithm 1 of Guo et al. (2024) with look-ahead guidance
  (:class:`~sampleopt.GuidedOptimization`): no training, the budget is spent on guided
  sampling rounds; the method's law is its guided sampler with the last round's
  targets (held-out path i steered by target i mod n), a Gaussian chain scored like
  the others: its J conditions on the targets (an upper bound of the mixture's, by
  convexity of the KL), and on DDPM tasks it ends with the base's last step, as every
  method does (:mod:`sampleopt.compare.problem`). Its evaluation count is the
  algorithm's (forward rows; look-ahead's backward pass per row is not counted). On
  ``mnist`` its target step ``delta`` = 0.2 and ``sigma_y`` = 0.1 were probed
  (docs/leaderboard.md section 4): with the synthetic tasks' sigma_y = 3 the guidance
  term is too weak to move the UNet's samples at all.

:func:`start` builds a :class:`Run` on a :class:`~sampleopt.compare.problem.Problem`:
``step()`` until ``network_evals`` reaches the budget, then ``chain()`` is the law to
score. A method that cannot run on a task raises a UsageError whose message is the
reason (the runner reports it instead of a result).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from sampleopt.algorithms import FineTuner, GuidedOptimization, QueuedImplicitDiffusion
from sampleopt.compare.problem import NoisyPrefix, Problem
from sampleopt.errors import UsageError
from sampleopt.estimators import ScoreFunctionEstimator, make_estimator
from sampleopt.guidance import GuidedDenoiser, LookAheadGuidance


@dataclass(frozen=True)
class Method:
    """A compared method and its defaults (see the module docstring)."""

    name: str
    algorithm: str  # "queue", "nested", "ppo" or "guidance"
    description: str
    estimator: str | None = None
    options: dict = field(default_factory=dict)
    lr: float = 1e-3
    batch_size: int = 32
    epochs: int = 1  # ppo: Adam steps per rollout
    delta: float = 0.0  # guidance: the target's increase per round
    strength: float = 1.0  # guidance
    sigma_y: float = 0.1  # guidance
    overrides: dict = field(default_factory=dict)  # task name -> changed settings

    def for_task(self, task: str) -> Method:
        """The method with the task's overrides applied (subspace: a 64-D reward with a
        steep gradient, smaller steps; mnist: a UNet, not an MLP)."""
        if task not in self.overrides:
            return self
        from dataclasses import replace

        return replace(self, **self.overrides[task])


def _unet(lr: float, **more) -> dict:
    """The MNIST UNet's settings: batch 8 and the method's own learning rate, chosen by a
    probe at 8,000 evaluations over 5e-5 ... 2e-6 (docs/leaderboard.md section 4, the
    largest rate within 0.001 of the lowest gap): 1e-5 for the pathwise gradients, 5e-6
    for the regression losses, 2e-6 for the score function, whose larger steps blew the
    path KL up; truncated backpropagation moves little at any of them (5e-5)."""
    return {"lr": lr, "batch_size": 8, **more}


def _tasks(subspace_lr: float, mnist: dict) -> dict:
    """Per-task overrides: the subspace task's learning rate (tuned at 30k evaluations;
    larger ones blow the path KL up) and the MNIST settings."""
    return {"subspace": {"lr": subspace_lr}, "mnist": mnist}


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("implicit", "queue", "Implicit Diffusion: queue of K batches, adjoint",
               "adjoint", lr=1e-3, batch_size=16, overrides=_tasks(1e-5, _unet(1e-5))),
        Method("adjoint", "nested", "nested loop, adjoint gradients", "adjoint",
               lr=1e-3, batch_size=16, overrides=_tasks(1e-5, _unet(1e-5))),
        Method("unrolled", "nested", "nested loop, backpropagation through the K steps",
               "unrolled", lr=1e-3, batch_size=16, overrides=_tasks(1e-4, _unet(1e-5))),
        Method("truncated", "nested", "nested loop, DRaFT-1 (last step only)", "truncated",
               {"steps": 1}, lr=3e-3, batch_size=32, overrides=_tasks(1e-5, _unet(5e-5))),
        Method("score-function", "nested", "nested loop, REINFORCE, leave-one-out baseline",
               "score-function", lr=3e-3, batch_size=64, overrides=_tasks(1e-5, _unet(2e-6))),
        Method("ppo", "ppo", "DDPO-PPO: clipped score function, 4 steps a rollout",
               "score-function", {"clip": 0.2}, lr=1e-3, batch_size=64, epochs=4,
               overrides=_tasks(1e-5, _unet(2e-6))),
        Method("adjoint-matching", "nested", "nested loop, adjoint matching",
               "adjoint-matching", lr=1e-3, batch_size=16, overrides=_tasks(1e-5, _unet(5e-6))),
        Method("tr-bsde", "nested", "nested loop, time-reversed BSDE co-state regression",
               "tr-bsde", {"score_iterations": 5, "score_batch": 128, "round_length": 4},
               lr=3e-3, batch_size=16,
               overrides=_tasks(1e-5, _unet(5e-6, options={"score_iterations": 2,
                                                           "score_batch": 16}))),
        Method("guidance", "guidance", "Algorithm 1 (Guo et al.), look-ahead guidance, "
               "no training", delta=2.0, strength=1.0, sigma_y=3.0, batch_size=64,
               overrides={"mnist": {"delta": 0.2, "sigma_y": 0.1, "batch_size": 16}}),
    )
}  # fmt: skip


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise UsageError(f"unknown method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


class Run:
    """One method running on one problem with one seed (see the module docstring)."""

    def __init__(self, method: Method, problem: Problem, seed: int):
        self.method, self.problem, self.seed = method, problem, seed
        self.rounds = 0
        m = method
        if m.algorithm == "guidance":
            guided = GuidedDenoiser(
                copy.deepcopy(problem.base.denoiser).requires_grad_(False),
                problem.base.schedule,
                LookAheadGuidance(strength=m.strength, sigma_y=m.sigma_y),
            )
            self.sampler = problem.full_sampler(guided)
            self.algo = GuidedOptimization(
                self.sampler, problem.raw_reward, delta=m.delta, batch_size=m.batch_size, seed=seed
            )
            return
        chain = problem.tunable_chain()
        objective = problem.objective()
        kw = {"batch_size": m.batch_size, "lr": m.lr, "optimizer": "adam", "seed": seed}
        if m.algorithm == "queue":
            self.algo = QueuedImplicitDiffusion(
                chain, objective, make_estimator(m.estimator, **m.options), **kw
            )
        else:
            self.algo = FineTuner(chain, objective, make_estimator(m.estimator, **m.options), **kw)
        # a dry call checks everything the estimator needs (noise, reward gradient, ...)
        self.algo.estimator.check_call(chain, objective, n=m.batch_size)
        self.sampler = chain

    @property
    def network_evals(self) -> int:
        return self.algo.network_evals

    def step(self) -> None:
        """One update (one guided round for ``guidance``; one rollout and ``epochs``
        Adam steps for ``ppo``)."""
        if self.method.algorithm == "ppo":
            self._ppo_step()
        else:
            self.algo.step()
        self.rounds += 1

    def _ppo_step(self) -> None:
        algo, est = self.algo, self.algo.estimator
        assert isinstance(est, ScoreFunctionEstimator)
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + self.rounds) % 2**62)
        rollout = est.rollout(algo.sampler, algo.objective, n=algo.n, generator=gen)
        steps = algo.sampler.num_steps
        for _ in range(self.method.epochs):
            for p in algo.params:
                p.grad = None
            est.loss(algo.sampler, algo.objective, rollout=rollout).backward()
            algo.update.apply()
        algo.network_evals += algo.n * steps * (1 + self.method.epochs)

    def chain(self):
        """The method's current law, as a chain over the problem's tuned steps."""
        if self.method.algorithm != "guidance":
            return self.sampler
        return self._guided_chain()

    def _guided_chain(self):
        algo = self.algo
        if algo.z is None:  # no round yet: the base
            return self.problem.reference
        guidance = algo.guided.guidance
        g, y = guidance.g, guidance.y
        chain = self.problem.full_sampler(algo.guided)
        return _Targets(NoisyPrefix(chain) if self.problem.trimmed else chain, g, y)


class _Targets:
    """A guided chain whose i-th evaluation path is steered by target i mod n (the
    last round's n targets, cycled over the held-out paths)."""

    def __init__(self, chain, g, y):
        self.chain, self.g, self.y = chain, g, y
        self.num_steps = chain.num_steps
        self.guidance = (chain.chain if isinstance(chain, NoisyPrefix) else chain).denoiser.guidance

    def sample_x0(self, n, generator=None):
        idx = torch.arange(n) % self.g.shape[0]
        self.guidance.set_target(self.g[idx], self.y[idx])
        return self.chain.sample_x0(n, generator)

    def mean(self, x, k):
        return self.chain.mean(x, k)

    def noise_scale(self, k):
        return self.chain.noise_scale(k)


def start(name: str, problem: Problem, seed: int) -> Run:
    """A :class:`Run` of method ``name`` (with the task's overrides) on ``problem``;
    a UsageError says why the method cannot run on it."""
    return Run(get_method(name).for_task(problem.task.name), problem, seed)
