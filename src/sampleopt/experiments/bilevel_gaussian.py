"""Experiment ``bilevel-gaussian``: the KL-strength problem on the exact Gaussian test bed
(docs/bilevel-gaussian.md, docs/bilevel.md section 4).

p_base = N(0, 1), r2 = x, r1 = -(x - a)^2: the upper loss F(lam) = (1 / lam - a)^2 + 1 is
known in closed form, so each method's chosen lam is scored exactly (its F and its
distance to lam* = 1 / a), not by a noisy estimate. Methods, each with ``budget``
lower-level solves of ``n`` fresh base samples:

* ``bilevel``: descent on log lam with the penalty hypergradient and the schedule
  gamma_k = gamma0 growth^k (capped at gamma_max); the choice is the averaged iterate;
* ``bilevel-limit``: the same with gamma = inf (the hypergradient Cov(r1, r2) / lam^2);
* ``grid``, ``random``, ``bayesian`` (optuna's GP sampler): the trial with the best
  estimated upper reward.

A unit is one (a, method, run); a checkpoint follows each, and every unit draws from
generators seeded by (seed, a, run), the same for every method (common random numbers).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import torch

from sampleopt.algorithms.step_size import StepSize
from sampleopt.bilevel import (
    SEARCHES,
    CollapsedWeightsWarning,
    GaussianTestBed,
    ImportanceLowerLevel,
    KLStrengthBilevel,
    KLStrengthProblem,
    PenaltySchedule,
    search,
)
from sampleopt.config import SEED_MAX
from sampleopt.errors import UsageError
from sampleopt.experiments.base import Experiment
from sampleopt.experiments.bilevel_gaussian_report import report_markdown, write_plots
from sampleopt.experiments.runner import Runner
from sampleopt.rundir import RunDir

METHODS = ("bilevel", "bilevel-limit", *SEARCHES)


@dataclass
class BilevelGaussianConfig:
    seed: int = field(default=0, metadata={"help": "random seed", "min": 0, "max": SEED_MAX})
    a: tuple[float, ...] = field(
        default=(0.5, 1.0, 2.0, -1.0),
        metadata={"help": "upper targets a (r1 = -(x - a)^2)", "min": -10.0, "max": 10.0},
    )
    methods: tuple[str, ...] = field(
        default=METHODS, metadata={"help": "methods compared", "choices": METHODS}
    )
    runs: int = field(default=5, metadata={"help": "runs per (a, method)", "min": 1, "max": 999})
    budget: int = field(
        default=40, metadata={"help": "lower-level solves per run", "min": 2, "max": 100_000}
    )
    n: int = field(default=4096, metadata={"help": "base samples per solve", "min": 2})
    low: float = field(default=0.05, metadata={"help": "smallest lam searched", "min": 1e-6})
    high: float = field(default=20.0, metadata={"help": "largest lam searched", "min": 1e-6})
    lam0: float = field(default=1.0, metadata={"help": "bilevel: the first lam", "min": 1e-6})
    lr: float = field(
        default=1.0, metadata={"help": "bilevel: SGD step on log lam, / sqrt(k + 1)", "min": 1e-8}
    )
    gamma0: float = field(default=1.0, metadata={"help": "bilevel: first gamma", "min": 1e-8})
    growth: float = field(
        default=1.15, metadata={"help": "bilevel: gamma growth per iteration", "min": 1.0}
    )
    gamma_max: float = field(default=1e4, metadata={"help": "bilevel: largest gamma", "min": 1e-8})

    def check(self):
        if not self.a or len(set(self.a)) != len(self.a):
            raise UsageError(f"config key 'a' needs distinct values, got {self.a}")
        if any(v == 0 for v in self.a):
            raise UsageError("config key 'a' must not contain 0 (F is then flat in lam)")
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise UsageError(f"config key 'methods' needs distinct methods, got {self.methods}")
        if not self.low < self.lam0 < self.high:
            raise UsageError(
                f"config keys need low < lam0 < high, got {self.low}, {self.lam0}, {self.high}"
            )


class _Runner(Runner):
    def __init__(self, cfg: BilevelGaussianConfig, rd: RunDir, progress: bool, resume: bool):
        super().__init__("bilevel-gaussian", cfg, rd, progress=progress, resume=resume)
        self.units = [(a, m, r) for a in cfg.a for m in cfg.methods for r in range(cfg.runs)]
        U, B = len(self.units), cfg.budget
        nan = math.nan
        self.results = {
            "lam": torch.full((U,), nan, dtype=torch.float64),
            "path": torch.full((U, B), nan, dtype=torch.float64),  # lam by solve
            "estimate": torch.full((U, B), nan, dtype=torch.float64),  # upper estimate
            "ess": torch.full((U, B), nan, dtype=torch.float64),
            "seconds": torch.full((U,), nan, dtype=torch.float64),
            "collapsed": torch.zeros(U, dtype=torch.long),
        }
        self.resume_units(self.results, U, unit="run")

    def unit_seed(self, a: float, run: int) -> int:
        return (self.cfg.seed * 1_000_003 + round(a * 1000) * 1009 + run) % 2**62

    def one(self, u: int) -> None:
        cfg, res = self.cfg, self.results
        a, method, run = self.units[u]
        tb = GaussianTestBed(a)
        problem = KLStrengthProblem(tb.r1, tb.r2, ImportanceLowerLevel(tb.sample_base, n=cfg.n))
        seed = self.unit_seed(a, run)
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", CollapsedWeightsWarning)
            if method in SEARCHES:
                out = search(method, problem, cfg.budget, low=cfg.low, high=cfg.high, seed=seed)
                lam = out.lam
                for i, t in enumerate(out.trials):
                    res["path"][u, i], res["estimate"][u, i] = t["lam"], t["upper"]
                    res["ess"][u, i] = t["ess"]
            else:
                gamma0 = math.inf if method == "bilevel-limit" else cfg.gamma0
                alg = KLStrengthBilevel(
                    problem, lam0=cfg.lam0, lr=StepSize(cfg.lr, "inverse_sqrt"),
                    optimizer="sgd", penalty=PenaltySchedule(gamma0, cfg.growth, cfg.gamma_max),
                    lam_min=cfg.low, lam_max=cfg.high, seed=seed,
                )  # fmt: skip
                for i, row in enumerate(alg.run(cfg.budget)):
                    res["path"][u, i], res["estimate"][u, i] = row["lam"], row["upper"]
                    res["ess"][u, i] = row["ess_star"]
                lam = alg.averaged_lam()
        res["seconds"][u] = time.perf_counter() - t0
        res["lam"][u] = lam
        res["collapsed"][u] = sum(issubclass(w.category, CollapsedWeightsWarning) for w in caught)
        self.rd.log_metrics(
            [
                {
                    "unit": u, "a": a, "method": method, "run": run, "lam": lam,
                    "upper_loss": tb.upper_loss(lam), "solves": problem.solves,
                    "collapsed_solves": int(res["collapsed"][u]),
                    "seconds": round(float(res["seconds"][u]), 3),
                }
            ]
        )  # fmt: skip

    def execute(self) -> None:
        with self.timed("runs"):
            for u in range(self.done, len(self.units)):
                self.one(u)
                self.done = u + 1
                self.save_checkpoint({"done": torch.tensor(self.done), **self.results})
                self.progress_bar.update(1)
        self.summarise()

    def summarise(self) -> None:
        cfg, res, table = self.cfg, self.results, []
        for a in cfg.a:
            tb = GaussianTestBed(a)
            best = 1.0 if a > 0 else 1.0 + a * a  # inf of F over lam > 0
            for m in cfg.methods:
                us = [u for u, (aa, mm, _) in enumerate(self.units) if aa == a and mm == m]
                lams = res["lam"][us]
                gaps = torch.tensor([tb.upper_loss(float(v)) - best for v in lams])

                def ms(v):
                    se = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else math.nan
                    return float(v.mean()), se

                row = {"a": a, "method": m, "lam_star": tb.lam_star}
                row["lam_mean"], row["lam_se"] = ms(lams)
                row["gap_mean"], row["gap_se"] = ms(gaps)
                if a > 0:
                    row["rel_err_mean"], row["rel_err_se"] = ms((lams * a - 1).abs())
                row.update(
                    lams=[float(v) for v in lams], solves=cfg.budget,
                    seconds_mean=float(res["seconds"][us].mean()),
                    collapsed_solves=int(res["collapsed"][us].sum()),
                    min_ess=float(res["ess"][us].nan_to_num(math.inf).min()),
                )  # fmt: skip
                table.append(row)
        self.summary.update({"table": table, "runs_done": self.done, "n": cfg.n})

    def report(self) -> str:
        return report_markdown(self.summary, self.cfg, write_plots(self))


def run(cfg: BilevelGaussianConfig, rd: RunDir, progress: bool = True, resume: bool = False):
    """Run bilevel-gaussian into ``rd`` (resume: bit-identical continuation)."""
    return _Runner(cfg, rd, progress, resume).run()


BILEVEL_GAUSSIAN = Experiment(
    name="bilevel-gaussian",
    description="KL-strength bilevel optimisation on the exact Gaussian test bed: penalty "
    "hypergradient descent vs grid, random and Bayesian search at equal lower-level solves",
    config_cls=BilevelGaussianConfig,
    run=run,
)
