"""Experiment ``guidance-subspace``: the linear-subspace simulation of gradient guidance
(Guo, Yuan, Yang, Chen, Wang 2024; docs/guidance-subspace.md).

Data x = A u, u ~ N(0, I_16), A a (64, 16) orthonormal basis
(:class:`~sampleopt.data.SubspaceGaussian` (64, 16, seed 0), the shipped ``subspace``
model's data). Two models of it: ``exact``, the exact denoiser
(:class:`~sampleopt.diffusion.SubspaceGaussianDenoiser`, float64; Algorithm 2 adapts its
latent mean), and ``learned``, the shipped MLP (``load_base_model("subspace")``; Algorithm 2
takes Adam steps on all its weights). Two concave objectives, each with its optimum over
span(A) in closed form:

* f1(x) = 10 - (theta^T x - 3)^2, |theta| = 1, |theta_perp| / |theta_par| = ``ratio``:
  the subspace optimum 10 (where theta_par^T x = 3);
* f2(x) = 5 - |x - b| / 2: the subspace optimum 5 - |b_perp| / 2 at x = A A^T b.

theta and b are drawn once from ``problem_seed`` (docs page). Each (model, f, guidance,
algorithm, run) is one unit: ``rounds`` of :class:`~sampleopt.algorithms.GuidedOptimization`
(DDPM with ``steps`` respaced steps of the cosine schedule, T = 1000), recording per round
the mean and top f of the batch, f at the batch mean and the off-support ratio
|x_perp| / |x_par| (mean over samples). A checkpoint follows each unit, so a kill loses at
most the unit in progress; every unit draws from its own generators (seeded by (seed,
run)), so a resumed experiment ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from sampleopt.algorithms.guided import GuidedOptimization
from sampleopt.config import SEED_MAX
from sampleopt.data import SubspaceGaussian
from sampleopt.diffusion import CosineSchedule
from sampleopt.diffusion.subspace_denoiser import SubspaceGaussianDenoiser
from sampleopt.errors import UsageError
from sampleopt.experiments.base import Experiment
from sampleopt.experiments.guidance_subspace_report import report_markdown, write_plots
from sampleopt.experiments.runner import Runner
from sampleopt.guidance import GuidedDenoiser, make_guidance
from sampleopt.models.pretrained import load_base_model
from sampleopt.rundir import RunDir
from sampleopt.samplers import DDPMSampler

MODELS = ("exact", "learned")
OBJECTIVES = ("f1", "f2")
GUIDANCE_NAMES = ("naive", "look-ahead")
ALGORITHMS = (1, 2)
RECORDS = ("mean_f", "top_f", "point_f", "ratio")


def _names(what):
    return {"help": f"subset of {', '.join(what)}"}


@dataclass
class GuidanceSubspaceConfig:
    seed: int = field(default=0, metadata={"help": "random seed", "min": 0, "max": SEED_MAX})
    runs: int = field(default=5, metadata={"help": "runs (seeds) per setting", "min": 1, "max": 99})
    models: tuple[str, ...] = field(default=MODELS, metadata=_names(MODELS))
    objectives: tuple[str, ...] = field(default=OBJECTIVES, metadata=_names(OBJECTIVES))
    guidances: tuple[str, ...] = field(default=GUIDANCE_NAMES, metadata=_names(GUIDANCE_NAMES))
    algorithms: tuple[float, ...] = field(
        default=ALGORITHMS, metadata={"help": "1 (fixed model) and/or 2 (adapted model)"}
    )
    problem_seed: int = field(
        default=0, metadata={"help": "seed of theta and b", "min": 0, "max": SEED_MAX}
    )
    ratio: float = field(
        default=9.0, metadata={"help": "|theta_perp| / |theta_par| of f1", "min": 0.0, "max": 1e3}
    )
    steps: int = field(
        default=50, metadata={"help": "DDPM steps (of T = 1000)", "min": 1, "max": 1000}
    )
    batch: int = field(default=32, metadata={"help": "samples per round", "min": 2, "max": 4096})
    top_k: int = field(default=4, metadata={"help": "top f = mean of the k largest", "min": 1})
    sigma_y: float = field(default=0.1, metadata={"help": "guidance sigma_y", "min": 1e-6})
    rounds_f1: int = field(default=120, metadata={"help": "rounds, f1, exact model", "min": 1})
    rounds_f1_learned: int = field(
        default=60, metadata={"help": "rounds, f1, learned model", "min": 1}
    )
    rounds_f2: int = field(default=40, metadata={"help": "rounds, f2 (both models)", "min": 1})
    delta_f1_naive: float = field(default=0.9, metadata={"help": "delta, f1, naive", "min": 0.0})
    delta_f1_lookahead: float = field(
        default=0.2, metadata={"help": "delta, f1, look-ahead", "min": 0.0}
    )
    delta_f2: float = field(default=1.0, metadata={"help": "delta, f2", "min": 0.0})
    exact_lr: float = field(
        default=0.2, metadata={"help": "Alg. 2 Adam lr, exact model", "min": 1e-12, "max": 10.0}
    )
    exact_adapt_steps: int = field(
        default=5, metadata={"help": "Alg. 2 Adam steps a round, exact", "min": 1, "max": 1000}
    )
    exact_factor: bool = field(
        default=False, metadata={"help": "Alg. 2 also adapts the exact model's latent factor B"}
    )
    learned_lr: float = field(
        default=1e-4, metadata={"help": "Alg. 2 Adam lr, learned model", "min": 1e-12, "max": 1.0}
    )
    learned_adapt_steps: int = field(
        default=1, metadata={"help": "Alg. 2 Adam steps a round, learned", "min": 1, "max": 1000}
    )
    fit_from: int = field(default=10, metadata={"help": "slope fit: first round", "min": 1})
    fit_to: int = field(default=100, metadata={"help": "slope fit: last round", "min": 2})

    def check(self):
        for key, allowed in (
            ("models", MODELS), ("objectives", OBJECTIVES), ("guidances", GUIDANCE_NAMES),
            ("algorithms", ALGORITHMS),
        ):  # fmt: skip
            v = getattr(self, key)
            if not v or any(x not in allowed for x in v) or len(set(v)) != len(v):
                raise UsageError(
                    f"config key '{key}' must name distinct values among "
                    f"{', '.join(map(str, allowed))}, got {v}"
                )
        if self.fit_to <= self.fit_from:
            raise UsageError(
                f"config key 'fit_to' must be > fit_from ({self.fit_from}), got {self.fit_to}"
            )
        if self.top_k > self.batch:
            raise UsageError(
                f"config key 'top_k' must be <= batch ({self.batch}), got {self.top_k}"
            )


def problem(cfg: GuidanceSubspaceConfig) -> dict:
    """theta (unit norm, |theta_perp| / |theta_par| = ratio), b, and both subspace
    optima, in float64, from ``problem_seed``."""
    data = SubspaceGaussian(64, 16, seed=0, dtype=torch.float64)
    gen = torch.Generator().manual_seed(cfg.problem_seed)
    v = torch.randn(64, generator=gen, dtype=torch.float64)
    b = torch.randn(64, generator=gen, dtype=torch.float64)
    P = data.A @ data.A.T
    par, perp = P @ v, v - P @ v
    theta = par / par.norm() + cfg.ratio * perp / perp.norm()
    theta = theta / theta.norm()
    b_perp = b - P @ b
    return {
        "data": data, "theta": theta, "b": b, "P": P,
        "optimum": {"f1": 10.0, "f2": 5.0 - 0.5 * float(b_perp.norm())},
        "argmax_f2": P @ b,
    }  # fmt: skip


def objective(name: str, prob: dict, dtype: torch.dtype):
    theta, b = prob["theta"].to(dtype), prob["b"].to(dtype)
    if name == "f1":
        return lambda x: 10.0 - (x @ theta - 3.0) ** 2
    return lambda x: 5.0 - 0.5 * (x - b).norm(dim=1)


class _Runner(Runner):
    """One guidance-subspace experiment, in the shared runner skeleton."""

    def __init__(self, cfg: GuidanceSubspaceConfig, rd: RunDir, progress: bool, resume: bool):
        super().__init__("guidance-subspace", cfg, rd, progress=progress, resume=resume)
        self.prob = problem(cfg)
        self.units = [
            (m, f, g, a, r)
            for m in cfg.models for f in cfg.objectives for g in cfg.guidances
            for a in map(int, cfg.algorithms) for r in range(cfg.runs)
        ]  # fmt: skip
        U, R = len(self.units), max(self.rounds(m, f) for m, f, *_ in self.units)
        self.results = {k: torch.full((U, R + 1), math.nan, dtype=torch.float64) for k in RECORDS}
        meta = self.resume_units(self.results, U, unit="run")
        self.seconds = list(meta.get("seconds", []))[: self.done]

    def rounds(self, model: str, f: str) -> int:
        cfg = self.cfg
        if f == "f2":
            return cfg.rounds_f2
        return cfg.rounds_f1 if model == "exact" else cfg.rounds_f1_learned

    def delta(self, f: str, guidance: str) -> float:
        cfg = self.cfg
        if f == "f2":
            return cfg.delta_f2
        return cfg.delta_f1_naive if guidance == "naive" else cfg.delta_f1_lookahead

    def build(self, model: str, f: str, guidance: str, alg: int, run: int) -> GuidedOptimization:
        cfg = self.cfg
        if model == "exact":
            schedule = CosineSchedule(1000).double()
            net = SubspaceGaussianDenoiser(self.prob["data"].A, schedule)
            net.factor.requires_grad_(cfg.exact_factor)
            lr, adapt_steps, dtype = cfg.exact_lr, cfg.exact_adapt_steps, torch.float64
        else:
            base = load_base_model("subspace")  # a fresh copy: Algorithm 2 changes it
            net, schedule = base.denoiser, base.schedule
            lr, adapt_steps, dtype = cfg.learned_lr, cfg.learned_adapt_steps, torch.float32
        guided = GuidedDenoiser(net, schedule, make_guidance(guidance, sigma_y=cfg.sigma_y))
        sampler = DDPMSampler(guided, schedule, cfg.steps, data_shape=(64,))
        return GuidedOptimization(
            sampler, objective(f, self.prob, dtype), delta=self.delta(f, guidance),
            batch_size=cfg.batch, adapt_from=0 if alg == 2 else None, adapt_lr=lr,
            adapt_steps=adapt_steps, top_k=cfg.top_k, seed=cfg.seed * 1000 + run,
        )  # fmt: skip

    def record(self, u: int, r: int, opt: GuidedOptimization, f) -> dict:
        z = opt.z
        row = {
            "mean_f": float(opt.values.double().mean()),
            "top_f": opt.top(),
            "point_f": float(f(z.mean(0, keepdim=True))[0]),
            "ratio": float(self.prob["data"].off_support_ratio(z.double()).mean()),
        }
        for k, v in row.items():
            self.results[k][u, r] = v
        return row

    def unit(self, u: int) -> None:
        model, f, guidance, alg, run = self.units[u]
        opt = self.build(model, f, guidance, alg, run)
        fstar = self.prob["optimum"][f]
        opt.start()
        fn = objective(f, self.prob, opt.z.dtype)
        self.record(u, 0, opt, fn)
        rows = []
        for r in range(1, self.rounds(model, f) + 1):
            opt.step()
            row = self.record(u, r, opt, fn)
            rows.append({"unit": u, "round": r, "gap": fstar - row["mean_f"], **row})
        self.rd.log_metrics(rows)

    # -- the experiment --------------------------------------------------------------
    def execute(self) -> None:
        with self.timed("runs"):
            for u in range(self.done, len(self.units)):
                w0 = time.perf_counter()
                self.unit(u)
                wall = round(time.perf_counter() - w0, 3)
                model, f, guidance, alg, run = self.units[u]
                self.rd.log_metrics(
                    [{"unit": u, "model": model, "objective": f, "guidance": guidance,
                      "algorithm": alg, "run": run, "seconds": wall}]
                )  # fmt: skip
                self.done = u + 1
                self.seconds.append(wall)
                self.save_checkpoint(
                    {"done": torch.tensor(self.done), **self.results}, seconds=self.seconds
                )
                self.progress_bar.update(1)
        self.summarise()

    def slope(self, gap: torch.Tensor, lo: int, hi: int) -> float:
        """Least-squares slope of log gap on log round over rounds lo .. hi (nan when a
        gap there is not positive or the range has fewer than 2 rounds)."""
        hi = min(hi, gap.shape[0] - 1)
        k = torch.arange(lo, hi + 1, dtype=torch.float64)
        y = gap[lo : hi + 1]
        if k.numel() < 2 or not bool((y > 0).all()):
            return math.nan
        x, y = k.log(), y.log()
        x = x - x.mean()
        return float((x * (y - y.mean())).sum() / (x * x).sum())

    def summarise(self) -> None:
        cfg, table = self.cfg, []
        settings = dict.fromkeys((m, f, g, a) for m, f, g, a, _ in self.units)
        for m, f, g, a in settings:
            us = [u for u, key in enumerate(self.units) if key[:4] == (m, f, g, a)]
            K, fstar = self.rounds(m, f), self.prob["optimum"][f]
            res = {k: v[us, : K + 1] for k, v in self.results.items()}
            gap = fstar - res["mean_f"]
            late = (max(1, K // 2), K)
            fit = (cfg.fit_from, min(cfg.fit_to, K))
            row = {"model": m, "objective": f, "guidance": g, "algorithm": a, "rounds": K,
                   "delta": self.delta(f, g), "optimum": fstar}  # fmt: skip
            stats = {
                "mean_f": res["mean_f"][:, K], "top_f": res["top_f"][:, K],
                "gap": gap[:, K], "top_gap": fstar - res["top_f"][:, K],
                "point_gap": fstar - res["point_f"][:, K],
                "ratio_final": res["ratio"][:, K], "ratio_max": res["ratio"][:, 1:].amax(1),
                "ratio_start": res["ratio"][:, 0],
                "slope": torch.tensor([self.slope(x, *fit) for x in gap]),
                "slope_late": torch.tensor([self.slope(x, *late) for x in gap]),
            }  # fmt: skip
            for k, v in stats.items():
                n = len(us)
                se = float(v.std() / math.sqrt(n)) if n > 1 else math.nan
                row[k] = {"mean": float(v.mean()), "se": se, "runs": [float(x) for x in v]}
            row["fit_range"], row["late_range"] = list(fit), list(late)
            row["gap_curve"] = gap.mean(0).tolist()
            row["ratio_curve"] = res["ratio"].mean(0).tolist()
            row["seconds_mean"] = sum(self.seconds[u] for u in us) / len(us)
            table.append(row)
        self.summary.update(
            {
                "theta": self.prob["theta"].tolist(), "b": self.prob["b"].tolist(),
                "theta_par_norm": float((self.prob["P"] @ self.prob["theta"]).norm()),
                "b_perp_norm": float((self.prob["b"] - self.prob["P"] @ self.prob["b"]).norm()),
                "optimum": self.prob["optimum"], "table": table, "runs_done": self.done,
                "seconds_total": round(sum(self.seconds), 3),
            }
        )  # fmt: skip

    def report(self) -> str:
        return report_markdown(self.summary, self.cfg, write_plots(self))


def run(cfg: GuidanceSubspaceConfig, rd: RunDir, progress: bool = True, resume: bool = False):
    """Run guidance-subspace into ``rd``; with ``resume``, continue after the last
    finished unit (bit-identical to an uninterrupted experiment)."""
    return _Runner(cfg, rd, progress, resume).run()


GUIDANCE_SUBSPACE = Experiment(
    name="guidance-subspace",
    description="gradient guidance on 16-dim subspace data in R^64 (Guo et al. 2024): naive "
    "vs look-ahead, Algorithm 1 vs 2, exact and learned model, gap to the subspace optimum",
    config_cls=GuidanceSubspaceConfig,
    run=run,
)
