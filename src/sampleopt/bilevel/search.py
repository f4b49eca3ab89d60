"""The baselines of the KL-strength problem: grid, random and Bayesian search over lam,
each trial one lower-level solve (docs/bilevel.md section 3).

All three search log lam in [log low, log high] and keep the trial with the largest
estimated upper reward E_{p*_lam}[r1]. Trial i draws its solve from a generator seeded by
(seed, i), as the bilevel method's iteration i does, so a comparison at an equal number of
solves uses the same random streams. Bayesian optimisation is optuna's Gaussian-process
sampler (``GPSampler``, seeded); no Gaussian process is written here.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from sampleopt.bilevel.hypergradient import check_lam
from sampleopt.bilevel.kl_strength import KLStrengthProblem
from sampleopt.errors import UsageError

SEARCHES = ("grid", "random", "bayesian")


@dataclass
class SearchResult:
    """The trials (lam, estimate, standard error, effective sample size) in order, the
    chosen lam, the solves and the wall time."""

    method: str
    trials: list[dict] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def best(self) -> dict:
        return max(self.trials, key=lambda t: t["upper"])

    @property
    def lam(self) -> float:
        return self.best["lam"]


def _generator(seed: int, i: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + i) % 2**62)


def _trial(problem: KLStrengthProblem, lam: float, i: int, seed: int) -> dict:
    upper, se, ess = problem.upper(lam, _generator(seed, i))
    return {"trial": i + 1, "lam": lam, "upper": upper, "upper_se": se, "ess": ess}


def search(
    method: str, problem: KLStrengthProblem, budget: int, *, low: float, high: float, seed: int = 0
) -> SearchResult:
    """Run ``method`` ("grid", "random" or "bayesian") with ``budget`` solves over
    lam in [low, high] (log scale)."""
    if method not in SEARCHES:
        raise UsageError(f"unknown search {method!r}; choose one of {', '.join(SEARCHES)}")
    if isinstance(budget, bool) or not (isinstance(budget, int) and budget >= 1):
        raise UsageError(f"budget must be an integer >= 1, got {budget!r}")
    low, high = check_lam(low), check_lam(high)
    if not low < high:
        raise UsageError(f"need low < high, got {low:g} and {high:g}")
    lo, hi = math.log(low), math.log(high)
    result = SearchResult(method)
    t0 = time.perf_counter()
    if method == "grid":
        for i in range(budget):
            u = lo + (hi - lo) * (i / (budget - 1) if budget > 1 else 0.5)
            result.trials.append(_trial(problem, math.exp(u), i, seed))
    elif method == "random":
        draws = torch.rand(budget, generator=_generator(seed, -1), dtype=torch.float64)
        for i in range(budget):
            u = lo + (hi - lo) * float(draws[i])
            result.trials.append(_trial(problem, math.exp(u), i, seed))
    else:
        result.trials = _bayesian(problem, budget, lo, hi, seed)
    result.seconds = time.perf_counter() - t0
    return result


def _bayesian(problem, budget, lo, hi, seed) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.GPSampler(seed=seed % 2**32, n_startup_trials=min(4, budget)),
    )
    trials: list[dict] = []

    def objective(trial):
        u = trial.suggest_float("log_lam", lo, hi)
        trials.append(_trial(problem, math.exp(u), trial.number, seed))
        return trials[-1]["upper"]

    study.optimize(objective, n_trials=budget)
    return trials
