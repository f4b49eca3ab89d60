"""``sampleopt compare TASK``: every method on one task at an equal budget of network
evaluations, scored by its gap to the task's known optimum (docs/leaderboard.md).

The run folder holds one unit per (method, seed). A unit builds the method on a fresh
copy of the base model (:mod:`sampleopt.compare.methods`), runs it until its network
evaluations reach ``budget``, scoring it on ``curve_n`` held-out paths each time it
passes another 1 / ``curve_points`` of the budget (the gap-against-evaluations curve),
and at the end on ``eval_n`` held-out paths: J = -E[r] + lam KL with its standard
error, E[r], the path KL, the gap J - J*, the Frechet distance of the samples'
features to the optimum's (``fd_star``, the quality metric; features per task in
:mod:`sampleopt.compare.tasks`), the evaluations and updates made, the wall
time of the training (evaluations excluded) and the process's peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``, the peak of the whole process so far:
an upper bound of the unit's own). Every unit is scored on the same held-out draws.

The optimum is computed once, at the start, and kept in the checkpoint, as is the base
model's own score on the same held-out paths (``base``: the tables' reference row, what
a method gains over not fine-tuning; its path KL is 0). A checkpoint
follows every unit, so a kill loses at most the unit in progress; every unit seeds its
own random streams (the global generator, the method's seed), so ``sampleopt resume
DIR`` ends with the numbers an uninterrupted run has (wall times and memory aside). A
method that cannot run on the task is reported with the reason instead of a result; a
method whose training stops on a non-finite value is reported as failed, with the error.

Under ``accelerate launch`` with P processes the units are split between them
(:mod:`sampleopt.compare.parallel`); the numbers are those of one process.
"""

from __future__ import annotations

import math
import resource
import time
from dataclasses import dataclass, field

import torch

from sampleopt.compare import parallel
from sampleopt.compare.methods import METHODS, start
from sampleopt.compare.problem import Problem
from sampleopt.compare.report import report_markdown, summarise, write_plots
from sampleopt.compare.tasks import TASKS, get_task
from sampleopt.config import SEED_MAX, to_dict
from sampleopt.errors import SampleoptError, UsageError, describe_error
from sampleopt.experiments.runner import Runner
from sampleopt.rundir import RunDir

# network evaluations per (method, seed) when --budget is not given: the whole bimodal
# comparison (9 methods, 3 seeds) takes under 10 minutes on 2 CPU cores (subspace's
# network is 4x larger); on mnist, 10,000 is where the probes of docs/leaderboard.md
# section 4 had the pathwise methods within 0.005 of J*
DEFAULT_BUDGETS = {"bimodal": 300_000, "hex": 300_000, "subspace": 100_000, "mnist": 10_000}
# held-out paths (final score, each curve point) when eval_n / curve_n are 0: a path of
# the MNIST UNet costs as much as ~1000 of the MLPs', so its evaluation is smaller
DEFAULT_EVAL = {"mnist": (512, 96)}
SYNTHETIC_EVAL = (1024, 256)
POLL_S = 2.0  # process 0 looks for the other processes' unit files this often
FINAL = ("objective", "objective_se", "reward", "reward_se", "kl", "kl_se", "fd_star",
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
    eval_n: int = field(
        default=0, metadata={"help": "held-out paths, final score (0: the task's default)"}
    )
    curve_n: int = field(
        default=0, metadata={"help": "held-out paths per curve point (0: the task's default)"}
    )
    curve_points: int = field(
        default=4, metadata={"help": "curve points over the budget", "min": 1, "max": 100}
    )

    @property
    def resolved_budget(self) -> int:
        return self.budget or DEFAULT_BUDGETS[self.task]

    @property
    def units(self) -> list[tuple[str, int]]:
        """The (method, seed) units, seed by seed."""
        return [(m, self.seed + s) for s in range(self.seeds) for m in self.methods]

    @property
    def resolved_eval_n(self) -> int:
        return self.eval_n or DEFAULT_EVAL.get(self.task, SYNTHETIC_EVAL)[0]

    @property
    def resolved_curve_n(self) -> int:
        return self.curve_n or DEFAULT_EVAL.get(self.task, SYNTHETIC_EVAL)[1]

    def check(self):
        if self.budget < 0:
            raise UsageError(f"the budget must be > 0 network evaluations, got {self.budget}")
        for name in ("eval_n", "curve_n"):
            if getattr(self, name) == 1 or getattr(self, name) < 0:
                raise UsageError(f"{name} must be 0 (the task's default) or >= 2 held-out paths")
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise UsageError(f"methods must be distinct and at least one, got {self.methods}")


class CompareRunner(Runner):
    """The comparison's run (see the module docstring); process 0 of a multi-process
    launch (:mod:`sampleopt.compare.parallel`) when ``store`` is given."""

    def __init__(self, cfg: CompareConfig, rd: RunDir, progress: bool, resume: bool, store=None):
        super().__init__("compare", cfg, rd, progress=progress, resume=resume)
        self.task = get_task(cfg.task)
        self.units = cfg.units
        U, P = len(self.units), cfg.curve_points
        self.results = {
            "status": torch.zeros(U, dtype=torch.long),
            "final": torch.full((U, len(FINAL)), math.nan, dtype=torch.float64),
            "curve": torch.full((U, P + 1, 3), math.nan, dtype=torch.float64),
        }
        self.reasons: dict[str, str] = {}
        self.optimum: dict | None = None
        self.base: dict | None = None  # the base model's own score, the table's reference row
        self.store = store
        saved = self.read_checkpoint()
        if saved is not None:
            tensors, meta = saved
            self.restore(self.results, tensors)
            self.reasons = dict(meta.get("reasons", {}))
            self.optimum = meta.get("optimum")
            self.base = meta.get("base")
            self.rd.keep_metrics(lambda row: self.finished(row.get("unit", U)))
        self.problem: Problem | None = None

    def finished(self, u: int) -> bool:
        return 0 <= u < len(self.units) and int(self.results["status"][u]) != PENDING

    @property
    def done(self) -> int:
        """The number of finished units."""
        return int((self.results["status"] != PENDING).sum())

    def checkpoint(self) -> None:
        self.save_checkpoint(
            {"done": torch.tensor(self.done), **self.results},
            reasons=self.reasons,
            optimum=self.optimum,
            base=self.base,
        )

    def execute(self) -> None:
        if self.optimum is None:
            with self.timed("optimum"):
                self.optimum = self.task.optimum().as_dict()
            self.checkpoint()
        self.summary["optimum"] = {k: v for k, v in self.optimum.items() if "feature" not in k}
        self.take_in_unit_files()
        pending = [u for u in range(len(self.units)) if not self.finished(u)]
        mine, world = pending, 1
        if self.store is not None:
            _, world = parallel.launched()
            plan = parallel.Plan(str(self.rd.path), to_dict(self.cfg), self.optimum, pending)
            plan.share(self.store)
            mine = plan.mine(0, world)
        self.summary["processes"] = world
        self.problem = Problem(self.task)
        if self.base is None:  # the base model on the same held-out paths, not fine-tuned
            with self.timed("base"):
                self.base = self.problem.evaluate(self.problem.reference,
                                                  self.cfg.resolved_eval_n, EVAL_SEED,
                                                  target=self.optimum)  # fmt: skip
            self.checkpoint()
        self.summary["base"] = {**self.base, "gap": self.base["objective"]
                                - self.optimum["objective"]}  # fmt: skip
        bar = self.bar(len(self.units), unit="unit")
        bar.update(self.done)
        with self.timed("units"):
            for u in mine:
                if self.finished(u):  # taken in from another process's file meanwhile
                    continue
                self.apply(u, run_unit(self.problem, self.cfg, self.units[u], self.optimum,
                                       self.live_log(u)))  # fmt: skip
                bar.update(1 + self.take_in_unit_files(save=False))
                self.checkpoint()
            while world > 1 and self.done < len(self.units):  # the other processes' units
                time.sleep(POLL_S)
                bar.update(self.take_in_unit_files())
        self.summary.update(summarise(self))

    def live_log(self, u: int):
        name, seed = self.units[u]
        return lambda rows: self.rd.log_metrics([{"unit": u, "method": name, "seed": seed, **r}
                                                 for r in rows])  # fmt: skip

    def apply(self, u: int, record: dict, *, log_rows: bool = False) -> None:
        """Put unit u's record (:func:`run_unit`) into the results."""
        res = self.results
        if log_rows:
            self.live_log(u)(record["rows"])
        if record["final"] is not None:
            res["final"][u] = torch.tensor(record["final"], dtype=torch.float64)
        if record["curve"] is not None:
            res["curve"][u] = torch.tensor(record["curve"], dtype=torch.float64)
        if record["reason"] is not None:
            self.reasons[str(u)] = record["reason"]
        res["status"][u] = record["status"]

    def take_in_unit_files(self, save: bool = True) -> int:
        """Take in the units other processes committed (and a killed launch left); a
        checkpoint follows when there were any and ``save``. Returns how many."""
        new = {u: r for u, r in parallel.read_units(self.rd.path).items() if not self.finished(u)}
        for u, record in sorted(new.items()):
            self.apply(u, record, log_rows=True)
        if new and save:
            self.checkpoint()
        return len(new)

    def report(self) -> str:
        return report_markdown(self.summary, self.cfg, write_plots(self))


def run_unit(problem: Problem, cfg: CompareConfig, unit: tuple[str, int], optimum: dict,
             log) -> dict:  # fmt: skip
    """Run and score one (method, seed) unit (see the module docstring); ``log(rows)``
    receives its metrics rows as they come. Returns its record: status, final, curve,
    reason and the rows."""
    name, seed = unit
    budget, P, j_star = cfg.resolved_budget, cfg.curve_points, optimum["objective"]
    rows: list[dict] = []

    def emit(row):
        rows.append(row)
        log([row])

    record = {"status": PENDING, "final": None, "curve": None, "reason": None, "rows": rows}
    torch.manual_seed(seed)
    try:
        run = start(name, problem, seed)
    except UsageError as exc:
        emit({"status": "unavailable", "reason": str(exc)})
        return {**record, "status": UNAVAILABLE, "reason": str(exc)}
    curve = [[math.nan] * 3 for _ in range(P + 1)]
    curve[0] = curve_point(problem, cfg, run, 0)
    seconds, mark = 0.0, 1
    try:
        while run.network_evals < budget:
            t0 = time.perf_counter()
            run.step()
            seconds += time.perf_counter() - t0
            while mark <= P and run.network_evals >= budget * mark / P:
                point = curve_point(problem, cfg, run, run.network_evals)
                curve[mark] = point
                emit({"network_evals": point[0], "objective": point[1],
                      "gap": point[1] - j_star})  # fmt: skip
                mark += 1
    except SampleoptError as exc:
        reason = f"failed after {run.network_evals} evaluations: " + describe_error(exc)
        emit({"status": "failed", "reason": reason})
        return {**record, "status": FAILED, "reason": reason, "curve": curve}
    ev = problem.evaluate(run.chain(), cfg.resolved_eval_n, EVAL_SEED, target=optimum)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    values = {**ev, "network_evals": run.network_evals, "updates": run.rounds,
              "seconds": seconds, "peak_rss_mb": rss_mb}  # fmt: skip
    emit({"status": "done", "gap": ev["objective"] - j_star, **values})
    final = [float(values[k]) for k in FINAL]
    return {**record, "status": DONE, "final": final, "curve": curve}


def curve_point(problem: Problem, cfg: CompareConfig, run, evals: int) -> list[float]:
    ev = problem.evaluate(run.chain(), cfg.resolved_curve_n, EVAL_SEED)
    return [float(evals), ev["objective"], ev["objective_se"]]


def work(store, rank: int, world: int) -> None:
    """Process ``rank`` > 0 of a multi-process launch: wait for process 0's plan, run
    this process's share of its units and commit each to its unit file."""
    from sampleopt.config import from_dict

    plan = parallel.Plan.receive(store)
    cfg = from_dict(CompareConfig, plan.config)
    units = cfg.units
    problem = Problem(get_task(cfg.task))
    for u in plan.mine(rank, world):
        name, seed = units[u]
        record = run_unit(problem, cfg, units[u], plan.optimum, lambda rows: None)
        record["rows"] = [{"unit": u, "method": name, "seed": seed, **r} for r in record["rows"]]
        parallel.write_unit(plan.folder, u, record)


def run(cfg: CompareConfig, rd: RunDir, progress: bool = True, resume: bool = False,
        store=None) -> dict:  # fmt: skip
    """Run the comparison into ``rd`` (resume: run the units not finished yet); with
    ``store``, as process 0 of a multi-process launch."""
    return CompareRunner(cfg, rd, progress, resume, store).run()
