"""``sampleopt compare TASK``: every method on one task at an equal budget of network
evaluations, scored by its gap to the task's known optimum (docs/leaderboard.md).

The run folder holds one unit per (method, seed). A unit builds the method on a fresh
copy of the base model (:mod:`sampleopt.compare.methods`), runs it until its network
evaluations reach ``budget``, scoring it on ``curve_n`` held-out paths each time it
passes another 1 / ``curve_points`` of the budget (the gap-against-evaluations curve),
and at the end on ``eval_n`` held-out paths: J = -E[r] + lam KL with its standard
error, E[r], the path KL, the gap J - J*, the evaluations and updates made, the wall
time of the training (evaluations excluded) and the process's peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the peak of the whole process so far:
an upper bound of the unit's own). Every unit is scored on the same held-out draws.

The optimum is computed once, at the start, and kept in the checkpoint. A checkpoint
follows every unit, so a kill loses at most the unit in progress; every unit seeds its
own random streams (the global generator, the method's seed), so ``sampleopt resume
DIR`` ends with the numbers an uninterrupted run has (wall times and memory aside). A
method that cannot run on the task is reported with the reason instead of a result; a
method whose training stops on a non-finite value is reported as failed, with the error.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass, field

import torch

from sampleopt.compare.methods import METHODS, start
from sampleopt.compare.problem import Problem
from sampleopt.compare.report import report_markdown, summarise, write_plots
from sampleopt.compare.tasks import TASKS, get_task
from sampleopt.config import SEED_MAX
from sampleopt.errors import SampleoptError, UsageError, describe_error
from sampleopt.experiments.runner import Runner
from sampleopt.rundir import RunDir

# network evaluations per (method, seed) when --budget is not given: the whole bimodal
# comparison (9 methods, 3 seeds) takes under 10 minutes on 2 CPU cores (subspace's
# network is 4x larger; mnist's are first guesses, not timed)
DEFAULT_BUDGETS = {"bimodal": 300_000, "hex": 300_000, "subspace": 100_000, "mnist": 20_000}
FINAL = ("objective", "objective_se", "reward", "reward_se", "kl", "kl_se",
         "network_evals", "updates", "seconds", "peak_rss_mb")  # fmt: skip
PENDING, DONE, UNAVAILABLE, FAILED = 0, 1, 2, 3
EVAL_SEED = 1_000_003  # the held-out paths, the same for every method and seed


@dataclass
class CompareConfig:
    task: str = field(default="bimodal", metadata={"help": "task", "choices": tuple(TASKS)})
    methods: tuple[str, ...] = field(
        default=tuple(METHODS), metadata={"help": "methods compared", "choices": tuple(METHODS)}
    )
    budget: int = field(
        default=0, metadata={"help": "network evaluations per unit (0: the task's default)"}
    )
    seeds: int = field(default=3, metadata={"help": "seeds per method", "min": 1, "max": 1000})
    seed: int = field(default=0, metadata={"help": "first seed", "min": 0, "max": SEED_MAX})
    eval_n: int = field(default=1024, metadata={"help": "held-out paths, final score", "min": 2})
    curve_n: int = field(default=256, metadata={"help": "held-out paths per curve point", "min": 2})
    curve_points: int = field(
        default=4, metadata={"help": "curve points over the budget", "min": 1, "max": 100}
    )

    @property
    def resolved_budget(self) -> int:
        return self.budget or DEFAULT_BUDGETS[self.task]

    def check(self):
        if self.budget < 0:
            raise UsageError(f"the budget must be > 0 network evaluations, got {self.budget}")
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise UsageError(f"methods must be distinct and at least one, got {self.methods}")


class CompareRunner(Runner):
    """The comparison's run (see the module docstring)."""

    def __init__(self, cfg: CompareConfig, rd: RunDir, progress: bool, resume: bool):
        super().__init__("compare", cfg, rd, progress=progress, resume=resume)
        self.task = get_task(cfg.task)
        self.units = [(m, cfg.seed + s) for s in range(cfg.seeds) for m in cfg.methods]
        U, P = len(self.units), cfg.curve_points
        self.results = {
            "status": torch.zeros(U, dtype=torch.long),
            "final": torch.full((U, len(FINAL)), math.nan, dtype=torch.float64),
            "curve": torch.full((U, P + 1, 3), math.nan, dtype=torch.float64),
        }
        self.reasons: dict[str, str] = {}
        self.optimum: dict | None = None
        self.done = 0
        saved = self.read_checkpoint()
        if saved is not None:
            tensors, meta = saved
            self.done = int(tensors["done"])
            self.restore(self.results, tensors)
            self.reasons = dict(meta.get("reasons", {}))
            self.optimum = meta.get("optimum")
            self.rd.keep_metrics(lambda row: row.get("unit", U) < self.done)
        self.problem: Problem | None = None

    def checkpoint(self) -> None:
        self.save_checkpoint(
            {"done": torch.tensor(self.done), **self.results},
            reasons=self.reasons,
            optimum=self.optimum,
        )

    def execute(self) -> None:
        if self.optimum is None:
            with self.timed("optimum"):
                self.optimum = self.task.optimum().as_dict()
            self.checkpoint()
        self.summary["optimum"] = self.optimum
        self.problem = Problem(self.task)
        bar = self.bar(len(self.units), unit="unit")
        bar.update(self.done)
        with self.timed("units"):
            for u in range(self.done, len(self.units)):
                self.one(u)
                self.done = u + 1
                self.checkpoint()
                bar.update(1)
        self.summary.update(summarise(self))

    def one(self, u: int) -> None:
        """Run and score unit u (see the module docstring)."""
        cfg, res, problem = self.cfg, self.results, self.problem
        name, seed = self.units[u]
        budget, P, j_star = cfg.resolved_budget, cfg.curve_points, self.optimum["objective"]
        row = {"unit": u, "method": name, "seed": seed}
        torch.manual_seed(seed)
        try:
            run = start(name, problem, seed)
        except UsageError as exc:
            res["status"][u] = UNAVAILABLE
            self.reasons[str(u)] = str(exc)
            self.rd.log_metrics([{**row, "status": "unavailable", "reason": str(exc)}])
            return
        res["curve"][u, 0] = torch.tensor(self.curve_point(run, 0))
        seconds, mark = 0.0, 1
        try:
            while run.network_evals < budget:
                t0 = time.perf_counter()
                run.step()
                seconds += time.perf_counter() - t0
                while mark <= P and run.network_evals >= budget * mark / P:
                    point = self.curve_point(run, run.network_evals)
                    res["curve"][u, mark] = torch.tensor(point)
                    gap = point[1] - j_star
                    self.rd.log_metrics(
                        [{**row, "network_evals": point[0], "objective": point[1], "gap": gap}]
                    )
                    mark += 1
        except SampleoptError as exc:
            res["status"][u] = FAILED
            self.reasons[str(u)] = f"failed after {run.network_evals} evaluations: " + (
                describe_error(exc)
            )
            self.rd.log_metrics([{**row, "status": "failed", "reason": self.reasons[str(u)]}])
            return
        ev = problem.evaluate(run.chain(), cfg.eval_n, EVAL_SEED)
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        values = {**ev, "network_evals": run.network_evals, "updates": run.rounds,
                  "seconds": seconds, "peak_rss_mb": rss_mb}  # fmt: skip
        res["final"][u] = torch.tensor([float(values[k]) for k in FINAL], dtype=torch.float64)
        res["status"][u] = DONE
        self.rd.log_metrics([{**row, "status": "done", "gap": ev["objective"] - j_star, **values}])

    def curve_point(self, run, evals: int) -> tuple[float, float, float]:
        ev = self.problem.evaluate(run.chain(), self.cfg.curve_n, EVAL_SEED)
        return float(evals), ev["objective"], ev["objective_se"]

    def report(self) -> str:
        return report_markdown(self.summary, self.cfg, write_plots(self))


def run(cfg: CompareConfig, rd: RunDir, progress: bool = True, resume: bool = False) -> dict:
    """Run the comparison into ``rd`` (resume: continue after the last finished unit)."""
    return CompareRunner(cfg, rd, progress, resume).run()
