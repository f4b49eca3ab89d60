"""The time-reversed BSDE estimator (Mei & Taghvaei 2026): regress the co-state onto an
*adapted* target built by running the sampled paths backward (docs/soc.md section 3).

Each round samples paths from the current chain, refits the score of its marginals on
them, reverses them from x_K with fresh noise and propagates Y from
Y_K = -grad r(x_K) / lam with the Ito correction terms (:mod:`sampleopt.soc.bsde`). The
loss regresses the tuned chain's co-state phi_k = -(m(x, k) - m_base(x, k)) / s_k^2 (or
a :class:`~sampleopt.samplers.ControlledChain`'s co-state network) onto Y_k at every
step with a Huber loss. The next round's targets use the updated phi: the fixed-point
iteration of the paper (its control is u = -g phi). ``round_length`` calls share one
round's targets; ``warmup_rounds`` rounds use the lean adjoint (phi starts far from the
co-state, and the Ito terms are only as good as phi). ``target="lean"`` regresses onto
the lean adjoint at every round: the non-adapted baseline of the paper.

Choose it over adjoint matching when the noise level or the horizon is large (the lean
adjoint's noise grows with both); it costs a score fit and, per reversed step, the
trace term: exact (one second derivative per coordinate) in low dimension, Hutchinson's
estimate (``trace="hutchinson"``, ``probes``) above.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from sampleopt.errors import UsageError
from sampleopt.estimators.base import Call, Estimator
from sampleopt.soc.bsde import INCREMENTS, TARGETS, CostateTargets, costate_loss
from sampleopt.soc.common import (
    check_soc,
    choose_steps,
    costate_fn,
    initial_law_surrogate,
    terminal_costate,
    terminal_costate_fn,
)


def _count(name, v, low=1):
    if isinstance(v, bool) or not isinstance(v, int) or v < low:
        raise UsageError(f"{name} must be an integer >= {low}, got {v!r}")
    return v


class TimeReversedBSDE(Estimator):
    """Huber regression of the co-state onto the time-reversed BSDE's target."""

    name: ClassVar[str] = "tr-bsde"
    needs_reward_gradient: ClassVar[bool] = True
    needs_noise: ClassVar[bool] = True
    needs_kl: ClassVar[bool] = True
    supports_initial_law: ClassVar[bool] = True
    evals_per_step: ClassVar[int] = 8

    def __init__(
        self,
        *,
        target: str = "tr-bsde",
        trace: str = "auto",
        probes: int = 1,
        score=None,
        score_iterations: int = 200,
        score_lr: float = 1e-3,
        score_batch: int = 512,
        round_length: int = 1,
        warmup_rounds: int = 1,
        huber: float | None = 1.0,
        steps: int | None = None,
        allow_memory: bool = False,
        increment: str = "milstein",
    ):
        if target not in TARGETS:
            raise UsageError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
        if trace not in ("auto", "exact", "hutchinson"):
            raise UsageError(f"trace must be auto, exact or hutchinson, got {trace!r}")
        if huber is not None and not (isinstance(huber, int | float) and huber > 0):
            raise UsageError(f"huber must be a positive number or None, got {huber!r}")
        if steps is not None:
            _count("steps", steps)
        if increment not in INCREMENTS:
            raise UsageError(f"increment must be one of {', '.join(INCREMENTS)}, got {increment!r}")
        self.target, self.trace, self.probes = target, trace, _count("probes", probes)
        self.increment = increment
        self.score, self.score_lr = score, float(score_lr)
        self.score_batch = _count("score_batch", score_batch)
        self.score_iterations = _count("score_iterations", score_iterations, 0)
        self.round_length = _count("round_length", round_length)
        self.warmup_rounds = _count("warmup_rounds", warmup_rounds, 0)
        self.huber, self.steps, self.allow_memory = huber, steps, bool(allow_memory)
        self._targets: CostateTargets | None = None
        self._round = None  # (xs, ys) of the current round
        self.calls = self.rounds = 0

    def options(self) -> dict:
        return {
            "target": self.target,
            "trace": self.trace,
            "probes": self.probes,
            "score_iterations": self.score_iterations,
            "score_batch": self.score_batch,
            "round_length": self.round_length,
            "warmup_rounds": self.warmup_rounds,
            "huber": self.huber,
            "steps": self.steps,
            "allow_memory": self.allow_memory,
            "increment": self.increment,
        }

    def check_setup(self, sampler, objective) -> None:
        super().check_setup(sampler, objective)
        check_soc(self.name, sampler, objective, self.allow_memory)

    def network_evals(self, sampler, n: int) -> int:
        K = sampler.num_steps
        used = K if self.steps is None else min(self.steps, K)
        trace = self.probes if self.trace != "exact" else 1
        reversal = (6 + 4 * trace) * (self.target == "tr-bsde")
        per_round = K * (3 + reversal) * n  # sampling, base VJPs, the reversal
        if self.target == "tr-bsde":
            per_round += 3 * self.score_iterations * min(self.score_batch, K * n)  # score fit
        return per_round // self.round_length + 3 * used * n

    def targets_for(self, call: Call) -> CostateTargets:
        sampler, ref = call.sampler, call.path_kl.reference
        t = self._targets
        if t is None or t.sampler is not sampler or t.reference is not ref:
            t = CostateTargets(
                sampler,
                ref,
                terminal_costate_fn(call.objective),
                target=self.target,
                trace=self.trace,
                probes=self.probes,
                score=self.score,
                score_iterations=self.score_iterations,
                score_lr=self.score_lr,
                score_batch=self.score_batch,
                increment=self.increment,
            )
            self._targets, self._round = t, None
        return t

    def _new_round(self, call: Call):
        sampler = call.sampler
        K = sampler.num_steps
        with torch.no_grad():
            x = call.start()
            if getattr(sampler, "learns_initial_law", False):
                x = sampler.initial.sample(call.n, call.generator)
            path = x.new_empty((K + 1, *x.shape))
            noises = x.new_empty((K, *x.shape))
            path[0] = x
            for k in range(K):
                noises[k] = call.noise(x)
                path[k + 1] = sampler.step(path[k], k, noises[k])
        y_K = terminal_costate(call.objective, path[K], self.rewards)
        targets = self.targets_for(call)
        lean = self.rounds < self.warmup_rounds
        self._round = targets(path, noises, y_K, call.generator, lean=lean)
        self.rounds += 1

    def _loss(self, call: Call) -> torch.Tensor:
        sampler, ref = call.sampler, call.path_kl.reference
        self.targets_for(call)
        stale = self._round is None or self._round[0].shape[1] != call.n
        if stale or self.calls % self.round_length == 0:
            self._new_round(call)
        self.calls += 1
        xs, ys = self._round
        K = sampler.num_steps
        chosen = choose_steps(K, self.steps, 0, call.generator, xs.device)
        loss = costate_loss(sampler, ref, xs, ys, chosen, self.huber)
        if getattr(sampler, "learns_initial_law", False):
            x0 = sampler.initial.sample(call.n, call.generator)
            with torch.no_grad():
                phi0 = costate_fn(sampler, ref, 0)(x0)
            loss = loss + call.lam * initial_law_surrogate(sampler, ref, x0, phi0)
        return loss
