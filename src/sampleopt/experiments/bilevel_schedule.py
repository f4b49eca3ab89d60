"""Experiment ``bilevel-schedule``: the noise schedule learned while a diffusion model
trains from scratch (generative bilevel optimisation, Xiao et al. 2025, scenario 2;
docs/bilevel-schedule.md), against fixed cosine, fixed linear and Bayesian optimisation.

Per data set (``hex``, ``digits``) and run r, every method trains a fresh network from
the same initial weights and data stream for ``steps`` DSM steps:

* ``cosine`` / ``linear``: the fixed schedules (Nichol & Dhariwal; Ho et al. 1e-4..0.02);
* ``bilevel``: a learnable cosine schedule started at the cosine, updated by the
  penalty method (:mod:`sampleopt.bilevel_schedule.penalty`) every ``upper_every``
  steps after ``warmup``;
* ``bo``: Bayesian optimisation (TPE) over the four parameters, each trial a whole
  training under a fixed schedule, as many trials as the bilevel run's compute
  (network passes, :class:`~sampleopt.bilevel_schedule.runs.TrainOptions`) pays for
  (``bo_trials`` = 0), the trial with the best validation score kept.

Every trained model is scored on held-out test data (never seen by any method). One unit
of work is one training; a checkpoint is committed after each, so a kill loses at most
the training in progress, and a resumed experiment ends bit-identical to an
uninterrupted one (each training draws only from generators seeded by (seed, data set,
run), and a BO suggestion depends only on the seed and the finished trials).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from sampleopt.bilevel_schedule.bayesian import suggest
from sampleopt.bilevel_schedule.domain import BOX, PARAMETERS, learnable, values_of
from sampleopt.bilevel_schedule.penalty import PenaltyOptions
from sampleopt.bilevel_schedule.problems import PROBLEMS, get_problem
from sampleopt.bilevel_schedule.runs import TrainOptions, evaluate, train
from sampleopt.config import SEED_MAX
from sampleopt.diffusion.schedules import CosineSchedule, LinearSchedule
from sampleopt.errors import UsageError
from sampleopt.experiments.base import Experiment
from sampleopt.experiments.bilevel_schedule_report import report_markdown, write_plots
from sampleopt.experiments.runner import Runner
from sampleopt.rundir import RunDir

METHODS = ("cosine", "linear", "bilevel", "bo")
KEPT = 256
METRICS = {"hex": ("sw", "mmd"), "digits": ("feature_mmd", "feature_fd")}


def _box(name: str, help_: str, default: float) -> float:
    lo, hi = BOX[name]
    return field(default=default, metadata={"help": help_, "min": lo, "max": hi})


@dataclass
class BilevelScheduleConfig:
    seed: int = field(default=0, metadata={"help": "random seed", "min": 0, "max": SEED_MAX})
    datasets: tuple[str, ...] = field(
        default=PROBLEMS, metadata={"help": "data sets", "choices": PROBLEMS}
    )
    runs: int = field(default=3, metadata={"help": "runs (seeds) per data set", "min": 1})
    steps: int = field(default=1200, metadata={"help": "DSM steps of every training", "min": 1})
    batch: int = field(default=256, metadata={"help": "DSM batch size", "min": 2})
    lr: float = field(default=1e-3, metadata={"help": "Adam step of the network", "min": 1e-8})
    ema_decay: float = field(default=0.995, metadata={"help": "EMA decay", "min": 0, "max": 1})
    num_train_steps: int = field(default=1000, metadata={"help": "T", "min": 2, "max": 10000})
    sample_steps: int = field(default=50, metadata={"help": "DDPM sampling steps", "min": 1})
    warmup: int = field(default=240, metadata={"help": "DSM steps before learning", "min": 0})
    upper_every: int = field(default=20, metadata={"help": "DSM steps a schedule step", "min": 1})
    gamma: float = field(default=1.0, metadata={"help": "penalty constant", "min": 1e-6})
    delta: float = field(default=0.01, metadata={"help": "zeroth-order radius", "min": 1e-6})
    directions: int = field(default=1, metadata={"help": "zeroth-order directions", "min": 1})
    z_steps: int = field(default=1, metadata={"help": "theta_z / theta_y' SGD steps", "min": 1})
    lr_z: float = field(default=0.01, metadata={"help": "their SGD step", "min": 0.0})
    truncation: int = field(default=3, metadata={"help": "DDPM steps backpropagated", "min": 0})
    upper_batch: int = field(default=128, metadata={"help": "samples per f value", "min": 2})
    lr_start: float = field(default=0.005, metadata={"help": "Adam step of start", "min": 0.0})
    lr_end: float = field(default=0.005, metadata={"help": "Adam step of end", "min": 0.0})
    lr_tau: float = field(default=0.02, metadata={"help": "Adam step of tau", "min": 0.0})
    lr_eps: float = field(default=0.002, metadata={"help": "Adam step of eps", "min": 0.0})
    init_start: float = _box("start", "initial start of the learned schedule", 0.0)
    init_end: float = _box("end", "initial end", 1.0)
    init_tau: float = _box("tau", "initial tau", 1.0)
    init_eps: float = _box("eps", "initial eps", 0.008)
    bo_trials: int = field(default=0, metadata={"help": "BO trials (0: equal compute)", "min": 0})
    bo_startup: int = field(default=2, metadata={"help": "TPE's random trials", "min": 1})
    eval_samples: int = field(default=1000, metadata={"help": "samples scored", "min": 10})

    def check(self):
        if not self.datasets or len(set(self.datasets)) != len(self.datasets):
            raise UsageError(
                f"config key 'datasets' must name distinct data sets, got {self.datasets}"
            )
        if self.sample_steps > self.num_train_steps:
            raise UsageError("config key 'sample_steps' must be <= num_train_steps")
        if self.truncation > self.sample_steps:
            raise UsageError("config key 'truncation' must be <= sample_steps")
        if self.init_end < self.init_start:
            raise UsageError(
                f"config key 'init_end' must be >= init_start, got {self.init_end} < "
                f"{self.init_start}"
            )

    def options(self) -> TrainOptions:
        penalty = PenaltyOptions(
            gamma=self.gamma, delta=self.delta, directions=self.directions,
            z_steps=self.z_steps, lr_z=self.lr_z, truncation=self.truncation,
            upper_batch=self.upper_batch, sample_steps=self.sample_steps, batch=self.batch,
            lr=(self.lr_start, self.lr_end, self.lr_tau, self.lr_eps),
        )  # fmt: skip
        return TrainOptions(
            steps=self.steps, batch=self.batch, lr=self.lr, ema_decay=self.ema_decay,
            num_train_steps=self.num_train_steps, sample_steps=self.sample_steps,
            warmup=self.warmup, upper_every=self.upper_every, penalty=penalty,
        )  # fmt: skip

    def bo_trial_count(self) -> int:
        if self.bo_trials > 0:
            return self.bo_trials
        o = self.options()
        trial = o.training_cost() + self.eval_samples * self.sample_steps  # + its validation
        return max(1, round(o.bilevel_cost() / trial))


class _Runner(Runner):
    def __init__(self, cfg: BilevelScheduleConfig, rd: RunDir, progress: bool, resume: bool):
        super().__init__("bilevel-schedule", cfg, rd, progress=progress, resume=resume)
        self.opts, self.n_bo = cfg.options(), cfg.bo_trial_count()
        methods = ["cosine", "linear", "bilevel"] + [f"bo-{i}" for i in range(self.n_bo)]
        self.units = [(d, r, m) for d in cfg.datasets for r in range(cfg.runs) for m in methods]
        U, T1, S = len(self.units), cfg.num_train_steps + 1, self.opts.upper_steps()
        nan = math.nan
        self.results = {
            "heldout": torch.full((U, 2), nan, dtype=torch.float64),
            "validation": torch.full((U,), nan, dtype=torch.float64),
            "params": torch.full((U, 4), nan, dtype=torch.float64),
            "alphabar": torch.full((U, T1), nan, dtype=torch.float64),
            "trajectory": torch.full((U, S, 4), nan, dtype=torch.float64),
            "compute": torch.full((U,), nan, dtype=torch.float64),
            "samples": torch.full((U, KEPT, 64), nan),  # the first KEPT, for the plots
        }
        meta = self.resume_units(self.results, U, unit="training")
        self.seconds = list(meta.get("seconds", []))[: self.done]

    def unit_seed(self, dataset: str, run: int) -> int:
        return self.cfg.seed * 10**6 + PROBLEMS.index(dataset) * 10**4 + run

    def _bo_history(self, u: int) -> list[tuple[dict, float]]:
        d, r, _ = self.units[u]
        out = []
        for v, (d2, r2, m2) in enumerate(self.units[:u]):
            if (d2, r2) == (d, r) and m2.startswith("bo-"):
                p = self.results["params"][v].tolist()
                out.append(
                    (dict(zip(PARAMETERS, p, strict=True)), float(self.results["validation"][v]))
                )
        return out

    def fit(self, u: int) -> None:
        cfg, opts = self.cfg, self.opts
        dataset, run, method = self.units[u]
        seed = self.unit_seed(dataset, run)
        problem = get_problem(dataset, seed)
        T = cfg.num_train_steps
        compute = opts.training_cost()
        learn = method == "bilevel"
        if method == "cosine":
            schedule = CosineSchedule(T)
        elif method == "linear":
            schedule = LinearSchedule(T)
        elif learn:
            init = dict(
                zip(
                    PARAMETERS,
                    (cfg.init_start, cfg.init_end, cfg.init_tau, cfg.init_eps),
                    strict=True,
                )
            )
            schedule = learnable(T, init)
            compute = opts.bilevel_cost()
        else:
            schedule = learnable(T, suggest(self._bo_history(u), seed, cfg.bo_startup))
            compute += cfg.eval_samples * cfg.sample_steps
        row = {"unit": u, "dataset": dataset, "run": run, "method": method}

        def on_upper(step: int, diag: dict) -> None:
            i = (step - opts.warmup) // opts.upper_every
            self.results["trajectory"][u, i] = torch.tensor([diag[n] for n in PARAMETERS])
            self.rd.log_metrics([{**row, "step": step, **diag}])

        training = train(problem, schedule, opts, seed, learn=learn, on_upper=on_upper)
        heldout, validation, x = evaluate(
            training, problem, cfg.eval_samples, cfg.sample_steps, seed + 7
        )
        names = METRICS[dataset]
        self.results["heldout"][u] = torch.tensor([heldout[n] for n in names], dtype=torch.float64)
        self.results["validation"][u] = validation
        self.results["compute"][u] = compute
        with torch.no_grad():
            self.results["alphabar"][u] = schedule.alphabar().detach().double()
        if hasattr(schedule, "tau"):
            self.results["params"][u] = torch.tensor([values_of(schedule)[n] for n in PARAMETERS])
        self.results["samples"][u, : min(KEPT, len(x)), : x.shape[1]] = x[:KEPT]
        self.rd.log_metrics([{**row, **heldout, "validation": validation, "compute": compute}])

    def execute(self) -> None:
        with self.timed("trainings"):
            for u in range(self.done, len(self.units)):
                w0 = time.perf_counter()
                self.fit(u)
                self.done = u + 1
                self.seconds.append(round(time.perf_counter() - w0, 3))
                self.save_checkpoint(
                    {"done": torch.tensor(self.done), **self.results}, seconds=self.seconds
                )
                self.progress_bar.update(1)
        self.summarise()

    def best_bo(self, dataset: str, run: int) -> int:
        us = [
            u
            for u, (d, r, m) in enumerate(self.units)
            if (d, r) == (dataset, run) and m.startswith("bo-")
        ]
        return min(us, key=lambda u: float(self.results["validation"][u]))

    def method_units(self, dataset: str, method: str) -> list[int]:
        if method == "bo":
            return [self.best_bo(dataset, r) for r in range(self.cfg.runs)]
        return [self.units.index((dataset, r, method)) for r in range(self.cfg.runs)]

    def summarise(self) -> None:
        cfg, table = self.cfg, []
        one = self.opts.training_cost()
        for d in cfg.datasets:
            row = {"dataset": d, "metrics": list(METRICS[d])}
            for m in METHODS:
                us = self.method_units(d, m)
                h, v = self.results["heldout"][us], self.results["validation"][us]
                n = len(us)
                se = (h.std(0) / math.sqrt(n)).tolist() if n > 1 else [math.nan, math.nan]
                spent = [
                    u
                    for u, (d2, _, m2) in enumerate(self.units)
                    if d2 == d and m2.split("-")[0] == m
                ]
                row[m] = {
                    "mean": h.mean(0).tolist(), "se": se, "runs": h.tolist(),
                    "validation_mean": float(v.mean()),
                    "params": self.results["params"][us].tolist(),
                    "compute_per_run": float(self.results["compute"][spent].sum()) / n / one,
                    "seconds_per_run": sum(self.seconds[u] for u in spent) / n,
                }  # fmt: skip
            table.append(row)
        self.summary.update(
            {
                "table": table, "bo_trials": self.n_bo, "trainings_done": self.done,
                "upper_steps": self.opts.upper_steps(),
                "compute_unit": "network passes of one training's DSM steps (3 x batch x steps)",
                "seconds_total": round(sum(self.seconds), 3),
                "notes": {d: get_problem(d, 0).notes for d in cfg.datasets},
            }
        )  # fmt: skip

    def report(self) -> str:
        return report_markdown(self.summary, self.cfg, write_plots(self))


def run(cfg: BilevelScheduleConfig, rd: RunDir, progress: bool = True, resume: bool = False):
    """Run bilevel-schedule into ``rd``; with ``resume``, continue after the last finished
    training (bit-identical to an uninterrupted experiment)."""
    return _Runner(cfg, rd, progress, resume).run()


BILEVEL_SCHEDULE = Experiment(
    name="bilevel-schedule",
    description="noise schedule learned while training from scratch (generative bilevel, "
    "Xiao et al. 2025, scenario 2) vs fixed cosine, linear and Bayesian optimisation; "
    "held-out sample quality on hex and digits",
    config_cls=BilevelScheduleConfig,
    run=run,
)
