"""Whole trainings: a fixed schedule, or the schedule learned by the penalty method while
the network trains; the held-out evaluation of a trained model; and the compute of each,
counted in network passes so that methods can be compared at equal compute.

Compute unit: one network evaluation on one sample (a forward pass); a backward pass
counts as two, so a DSM step on a batch of B costs 3 B and a DDPM chain of K steps on n
samples costs n K (3 n per step that keeps a graph).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from sampleopt.bilevel_schedule.domain import COSINE, learnable, values_of
from sampleopt.bilevel_schedule.penalty import PenaltyOptions, PenaltyScheduleUpdate
from sampleopt.bilevel_schedule.problems import Problem
from sampleopt.bilevel_schedule.training import ScheduleTraining
from sampleopt.diffusion.schedules import NoiseSchedule
from sampleopt.objectives.batch import evaluate_batch_objective


@dataclass
class TrainOptions:
    steps: int = 2000
    batch: int = 256
    lr: float = 1e-3
    ema_decay: float = 0.995
    num_train_steps: int = 1000
    sample_steps: int = 50
    warmup: int = 400  # DSM steps before the first upper step
    upper_every: int = 20  # DSM steps between upper steps
    penalty: PenaltyOptions = field(default_factory=PenaltyOptions)

    def upper_steps(self) -> int:
        if self.steps <= self.warmup:
            return 0
        return (self.steps - self.warmup - 1) // self.upper_every + 1

    def training_cost(self) -> int:
        return 3 * self.batch * self.steps

    def upper_cost(self) -> int:
        """Network passes of one upper step (:class:`PenaltyScheduleUpdate`)."""
        p, K = self.penalty, self.penalty.sample_steps
        chain = p.upper_batch * (K - p.truncation) + 3 * p.upper_batch * p.truncation
        inner = p.z_steps * (2 * 3 * p.batch + chain)
        return inner + p.directions * 2 * p.upper_batch * K + 2 * 3 * p.batch

    def bilevel_cost(self) -> int:
        return self.training_cost() + self.upper_steps() * self.upper_cost()


def train(
    problem: Problem,
    schedule: NoiseSchedule,
    opts: TrainOptions,
    seed: int,
    *,
    learn: bool = False,
    on_upper: Callable[[int, dict], None] | None = None,
) -> ScheduleTraining:
    """Train a fresh network (initialised from ``seed``) for ``opts.steps`` DSM steps
    under ``schedule``; with ``learn`` the schedule (a learnable cosine) is updated by the
    penalty method every ``upper_every`` steps after ``warmup``, and ``on_upper(step,
    diagnostics)`` is called after each upper step."""
    net = problem.network(seed, opts.num_train_steps)
    training = ScheduleTraining(net, schedule, lr=opts.lr, ema_decay=opts.ema_decay)
    gen = torch.Generator().manual_seed(seed)
    upper_gen = torch.Generator().manual_seed(seed + 1)
    update = None
    if learn:
        p = dataclasses.replace(opts.penalty, sample_steps=opts.sample_steps)
        update = PenaltyScheduleUpdate(training, problem.upper, problem.train_batch, p)
    for step in range(opts.steps):
        if (
            update is not None
            and step >= opts.warmup
            and (step - opts.warmup) % opts.upper_every == 0
        ):
            diagnostics = update.step(upper_gen)
            if on_upper is not None:
                on_upper(step, diagnostics)
        training.step(problem.train_batch(opts.batch, gen), gen)
    return training


def fresh_learnable(opts: TrainOptions, values: dict | None = None):
    return learnable(opts.num_train_steps, values or COSINE)


@torch.no_grad()
def evaluate(training: ScheduleTraining, problem: Problem, n: int, sample_steps: int, seed: int):
    """Held-out metrics of ``n`` EMA samples against the test set, and the upper objective
    of ``n`` EMA samples (another draw) against the validation set: (heldout, validation)."""
    x = training.sample(n, sample_steps, torch.Generator().manual_seed(seed))
    heldout = problem.heldout(x)
    v = training.sample(n, sample_steps, torch.Generator().manual_seed(seed + 1))
    return heldout, float(evaluate_batch_objective(problem.upper, v)), x


def schedule_values(schedule: NoiseSchedule) -> dict | None:
    return values_of(schedule) if hasattr(schedule, "tau") else None
