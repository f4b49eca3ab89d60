"""Choosing the KL strength lam by first-order bilevel optimisation (Xiao et al. 2025,
scenario 1; docs/bilevel.md section 3).

* :class:`ImportanceLowerLevel`: the lower level without training. A *solve* draws base
  samples (fresh from a sampler, or a fixed pool) and evaluates both rewards on them;
  p*_lam and p_gamma are then importance weightings of those samples.
* :class:`KLStrengthProblem`: the upper reward r1, the lower reward r2 (per-sample
  callables) and the lower level; it counts solves and gives the upper estimate
  E_{p*_lam}[r1] (what the search baselines evaluate) and the penalty hypergradient.
* :class:`PenaltySchedule`: gamma_k = min(gamma_max, gamma_0 growth^k); gamma_0 = inf
  uses the exact limit dF / dlam from the first iteration.
* :class:`KLStrengthBilevel`: gradient descent on u = log lam (Adam or SGD from torch) with
  the penalty hypergradient lam dL_gamma / dlam, one solve per iteration.

Choose the bilevel method when lower-level solves are expensive and the upper objective
is smooth in lam: each iteration uses the gradient, where a search only uses values.
"""

from __future__ import annotations

import math

import torch

from sampleopt.algorithms.step_size import StepSize
from sampleopt.bilevel.hypergradient import Hypergradient, check_lam, penalty_hypergradient
from sampleopt.bilevel.importance import Tilt
from sampleopt.checks import check_finite, check_per_sample
from sampleopt.errors import NonFiniteError, UsageError


def _positive_int(name, v):
    if isinstance(v, bool) or not (isinstance(v, int) and v >= 1):
        raise UsageError(f"{name} must be an integer >= 1, got {v!r}")
    return v


class ImportanceLowerLevel:
    """Base samples for importance weighting: ``sample_base(n, generator)`` draws ``n``
    fresh ones per solve, or ``pool`` (a tensor of base samples) is reused by every solve
    (its rewards computed once). ``min_ess``: the collapse-warning threshold."""

    def __init__(self, sample_base=None, *, n: int = 4096, pool=None, min_ess=None):
        if (sample_base is None) == (pool is None):
            raise UsageError("ImportanceLowerLevel needs exactly one of sample_base or pool")
        if pool is not None and (not isinstance(pool, torch.Tensor) or pool.shape[0] < 2):
            raise UsageError("pool must be a tensor of at least 2 base samples (n, ...)")
        if sample_base is not None and not callable(sample_base):
            raise UsageError(
                f"sample_base must be a callable (n, generator) -> x, got {sample_base!r}"
            )
        self.sample_base, self.pool = sample_base, pool
        self.n = pool.shape[0] if pool is not None else _positive_int("n", n)
        self.min_ess = min_ess
        self._cache = None

    def solve(self, r1, r2, generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x, r1(x), r2(x)) for one solve."""
        if self.pool is not None and self._cache is not None:
            return self._cache
        x = self.pool if self.pool is not None else self.sample_base(self.n, generator)
        with torch.no_grad():
            v1 = check_per_sample(r1(x), x.shape[0], "the upper reward r1")
            v2 = check_per_sample(r2(x), x.shape[0], "the lower reward r2")
        check_finite(v1, "the upper reward r1")
        check_finite(v2, "the lower reward r2")
        out = (x, v1.detach().double(), v2.detach().double())
        if self.pool is not None:
            self._cache = out
        return out


class KLStrengthProblem:
    """Upper reward ``r1`` (maximised through lam), lower reward ``r2`` and the lower
    level; ``solves`` counts the lower-level solves made."""

    def __init__(self, r1, r2, lower: ImportanceLowerLevel):
        if not (callable(r1) and callable(r2)):
            raise UsageError("r1 and r2 must be per-sample callables x -> (n,)")
        if not isinstance(lower, ImportanceLowerLevel):
            raise UsageError(f"lower must be an ImportanceLowerLevel, got {lower!r}")
        self.r1, self.r2, self.lower = r1, r2, lower
        self.solves = 0

    def _solve(self, generator):
        self.solves += 1
        return self.lower.solve(self.r1, self.r2, generator)

    def upper(self, lam: float, generator=None) -> tuple[float, float, float]:
        """(E_{p*_lam}[r1], its standard error, the effective sample size): one solve."""
        lam = check_lam(lam)
        _, v1, v2 = self._solve(generator)
        tilt = Tilt(v2 / lam, min_ess=self.lower.min_ess, what=f"p*_lam at lam = {lam:.4g}")
        mean, se, _ = tilt.mean(v1)
        return mean, se, tilt.ess

    def hypergradient(self, lam: float, gamma: float, generator=None) -> Hypergradient:
        """dL_gamma / dlam at lam: one solve."""
        _, v1, v2 = self._solve(generator)
        return penalty_hypergradient(v1, v2, lam, gamma, min_ess=self.lower.min_ess)


class PenaltySchedule:
    """gamma_k = min(gamma_max, gamma_0 growth^k) for iteration k = 0, 1, ...; gamma_0 =
    inf is the limit problem (dF / dlam)."""

    def __init__(self, gamma0: float = 1.0, growth: float = 1.1, gamma_max: float = 1e4):
        for name, v in (("gamma0", gamma0), ("gamma_max", gamma_max)):
            if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
                raise UsageError(f"{name} must be a number > 0 or math.inf, got {v!r}")
        if isinstance(growth, bool) or not (
            isinstance(growth, int | float) and 1 <= growth < math.inf
        ):
            raise UsageError(f"growth must be a finite number >= 1, got {growth!r}")
        self.gamma0, self.growth, self.gamma_max = float(gamma0), float(growth), float(gamma_max)

    def __call__(self, k: int) -> float:
        if math.isinf(self.gamma0):
            return math.inf
        return min(self.gamma_max, self.gamma0 * self.growth ** min(k, 10_000))

    def __repr__(self):
        g0, gr, gm = self.gamma0, self.growth, self.gamma_max
        return f"PenaltySchedule(gamma0={g0:g}, growth={gr:g}, gamma_max={gm:g})"


class KLStrengthBilevel:
    """Descent on u = log lam with the penalty hypergradient (see the module docstring).

    ``lam0``: the start; ``lr`` (a number or a :class:`StepSize`; default 0.1 / sqrt(k + 1))
    and ``optimizer`` ("adam" or "sgd", torch's); ``lam_min``,
    ``lam_max``: u is kept in [log lam_min, log lam_max]; ``seed``: iteration k's solve
    draws from a generator seeded by (seed, k), so :meth:`state_tensors` resumes
    bit-identically. :meth:`step` returns the iteration's row (lam before the update,
    gamma, the hypergradient and its SE, the upper estimate, both ESS, the solves)."""

    def __init__(
        self,
        problem: KLStrengthProblem,
        *,
        lam0: float = 1.0,
        lr: float | StepSize | None = None,
        optimizer: str = "adam",
        penalty: PenaltySchedule | None = None,
        lam_min: float = 1e-4,
        lam_max: float = 1e4,
        seed: int = 0,
    ):
        if not isinstance(problem, KLStrengthProblem):
            raise UsageError(f"problem must be a KLStrengthProblem, got {problem!r}")
        lam0, lam_min, lam_max = check_lam(lam0), check_lam(lam_min), check_lam(lam_max)
        if not lam_min <= lam0 <= lam_max:
            raise UsageError(
                f"lam0 = {lam0:g} must lie in [lam_min, lam_max] = [{lam_min:g}, {lam_max:g}]"
            )
        if lr is None:
            lr = StepSize(0.1, "inverse_sqrt")
        if not isinstance(lr, StepSize):
            if isinstance(lr, bool) or not (isinstance(lr, int | float) and lr > 0):
                raise UsageError(f"lr must be a finite number > 0 or a StepSize, got {lr!r}")
            lr = StepSize(float(lr))
        if optimizer not in ("adam", "sgd"):
            raise UsageError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
        self.problem, self.seed = problem, int(seed)
        self.penalty = PenaltySchedule() if penalty is None else penalty
        self.bounds = (math.log(lam_min), math.log(lam_max))
        self.u = torch.nn.Parameter(torch.tensor(math.log(lam0), dtype=torch.float64))
        opt = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
        self.lr = lr
        self.optimizer = opt([self.u], lr=lr(0))
        self.k = 0
        self.log_lams: list[float] = []  # u after each iteration (for the averaged choice)

    @property
    def lam(self) -> float:
        return math.exp(float(self.u.detach()))

    def averaged_lam(self, fraction: float = 0.5) -> float:
        """exp of the mean of log lam over the last ``fraction`` of the iterates (Polyak
        averaging: the choice to report when the hypergradient is noisy)."""
        if not self.log_lams:
            return self.lam
        tail = self.log_lams[int(len(self.log_lams) * (1 - fraction)) :]
        return math.exp(sum(tail) / len(tail))

    def step(self) -> dict:
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + self.k) % 2**62)
        gamma = self.penalty(self.k)
        hg = self.problem.hypergradient(self.lam, gamma, gen)
        if not (math.isfinite(hg.value) and math.isfinite(hg.se)):
            raise NonFiniteError(
                f"the hypergradient is not finite at lam = {self.lam:.4g} (iteration "
                f"{self.k + 1}); lam is unchanged"
            )
        row = {
            "iteration": self.k + 1, "lam": hg.lam, "gamma": gamma, "hypergradient": hg.value,
            "hypergradient_se": hg.se, "upper": hg.upper, "upper_se": hg.upper_se,
            "ess_star": hg.ess_star, "ess_gamma": hg.ess_gamma, "solves": self.problem.solves,
        }  # fmt: skip
        self.optimizer.zero_grad()
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr(self.k)
        self.u.grad = torch.tensor(hg.log_lam_value, dtype=torch.float64)
        self.optimizer.step()
        with torch.no_grad():
            self.u.clamp_(*self.bounds)
        self.log_lams.append(float(self.u.detach()))
        self.k += 1
        return row

    def run(self, iterations: int, *, callback=None) -> list[dict]:
        rows = []
        for _ in range(_positive_int("iterations", iterations)):
            rows.append(self.step())
            if callback is not None:
                callback(rows[-1], self)
        return rows

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {"u": self.u.detach().clone(), "k": torch.tensor(self.k),
               "solves": torch.tensor(self.problem.solves),
               "log_lams": torch.tensor(self.log_lams, dtype=torch.float64)}  # fmt: skip
        for key, v in self.optimizer.state_dict()["state"].get(0, {}).items():
            out[f"opt.{key}"] = torch.as_tensor(v).clone()
        return out

    def load_state_tensors(self, t: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            self.u.copy_(t["u"])
        self.k, self.problem.solves = int(t["k"]), int(t["solves"])
        self.log_lams = t["log_lams"].tolist()
        state = self.optimizer.state_dict()
        st = {key[4:]: v.clone() for key, v in t.items() if key.startswith("opt.")}
        if st:
            state["state"][0] = st
        self.optimizer.load_state_dict(state)
