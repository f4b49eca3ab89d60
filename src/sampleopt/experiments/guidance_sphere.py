"""Experiment ``guidance-sphere``: gradient guidance on data on the unit sphere (Guo et al.
2024, the "unit ball" experiment of its reference code; docs/guidance-sphere.md).

The base is the shipped model ``sphere`` (an MLP trained by ``sampleopt train`` on the
uniform law on the unit sphere in R^4, docs/base-models.md). The objective is linear,
f(x) = theta^T x with theta = (1, ..., 1) / sqrt(D) a fixed unit vector; over the sphere
it is largest at x = theta, where f = |theta| = 1. Algorithm 1 of the paper
(:class:`~sampleopt.algorithms.GuidedOptimization` with ``adapt_from=None``,
docs/guidance.md section 3): round k sets, for every sample i, the gradient g_i = theta
and the target y_i = theta^T z_k,i + delta, and draws the next batch with naive guidance
(the paper's G, its Proposition 3) or look-ahead guidance (G_loss, its Definition 1).
Each round records mean f, top f (mean of the ``top_k`` largest), and the distance to
the data's support, mean | |x| - 1 |; round 0 is the unguided base.

One unit of work is one (guidance, delta, run) optimisation; a checkpoint is committed
after each, so a kill loses at most the unit in progress, and a resumed experiment ends
bit-identical to an uninterrupted one (a unit draws only from the generators
GuidedOptimization seeds by (seed * 1000 + run, round): both guidances and every delta
of one run share round 0's samples and the per-round noise seeds).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from sampleopt.algorithms.guided import GuidedOptimization
from sampleopt.config import SEED_MAX
from sampleopt.data.sphere import sphere_distance
from sampleopt.errors import NonFiniteError, UsageError
from sampleopt.experiments.base import Experiment
from sampleopt.experiments.guidance_sphere_report import report_markdown, write_plots
from sampleopt.experiments.runner import Runner
from sampleopt.guidance import GUIDANCES, GuidedDenoiser, make_guidance
from sampleopt.models.pretrained import load_base_model
from sampleopt.rundir import RunDir
from sampleopt.samplers import SAMPLERS

MODEL = "sphere"  # the shipped base model (docs/base-models.md)
GOAL = 0.05  # the bound on mean | |x| - 1 | under look-ahead guidance
METRICS = ("f_mean", "f_top", "dist", "norm")  # per unit and round


@dataclass
class GuidanceSphereConfig:
    seed: int = field(default=0, metadata={"help": "random seed", "min": 0, "max": SEED_MAX})
    deltas: tuple[float, ...] = field(
        default=(0.02, 0.12, 0.22, 0.32, 0.42, 0.52),
        metadata={"help": "target steps delta (y = theta^T z + delta)", "min": 0.0, "max": 100.0},
    )
    guidances: tuple[str, ...] = field(
        default=("naive", "look-ahead"),
        metadata={"help": "guidance terms compared", "choices": tuple(GUIDANCES)},
    )
    runs: int = field(
        default=3, metadata={"help": "runs (seeds) per delta and guidance", "min": 1, "max": 999}
    )
    rounds: int = field(
        default=25, metadata={"help": "rounds of Algorithm 1", "min": 1, "max": 10000}
    )
    batch_size: int = field(
        default=256, metadata={"help": "samples a round", "min": 2, "max": 100000}
    )
    sampler: str = field(
        default="ddpm", metadata={"help": "diffusion sampler", "choices": ("ddpm", "ddim")}
    )
    steps: int = field(default=50, metadata={"help": "sampling steps", "min": 1, "max": 1000})
    sigma_y: float = field(
        default=0.1, metadata={"help": "sigma_y of the guidance", "min": 1e-6, "max": 100.0}
    )
    strength: float = field(
        default=1.0, metadata={"help": "guidance strength", "min": 0.0, "max": 1000.0}
    )
    top_k: int = field(default=4, metadata={"help": "top f = mean of the k largest", "min": 1})
    floor_samples: int = field(
        default=2048,
        metadata={"help": "unguided samples measuring the base's own distance", "min": 2},
    )

    def check(self):
        if not self.deltas:
            raise UsageError("config key 'deltas' needs at least one value")
        if len(set(self.deltas)) != len(self.deltas):
            raise UsageError(f"config key 'deltas' has a repeated value: {self.deltas}")
        if not self.guidances:
            raise UsageError("config key 'guidances' needs at least one guidance")
        if len(set(self.guidances)) != len(self.guidances):
            raise UsageError(f"config key 'guidances' has a repeated value: {self.guidances}")
        if self.top_k > self.batch_size:
            raise UsageError(
                f"config key 'top_k' must be <= batch_size ({self.batch_size}), got {self.top_k}"
            )


def theta_vector(dim: int) -> torch.Tensor:
    """theta = (1, ..., 1) / sqrt(dim): the fixed unit direction of f (float32)."""
    return torch.full((dim,), 1.0 / math.sqrt(dim))


def sample_stats(x: torch.Tensor, theta: torch.Tensor, top_k: int) -> dict[str, float]:
    """mean f, top f (mean of the top_k largest), mean | |x| - 1 | and mean |x| of x."""
    f = (x.double() @ theta.double()).reshape(-1)
    return {
        "f_mean": float(f.mean()),
        "f_top": float(f.topk(min(top_k, f.numel())).values.mean()),
        "dist": float(sphere_distance(x).mean()),
        "norm": float(x.double().norm(dim=1).mean()),
    }


def mean_se(v: torch.Tensor) -> tuple[float, float]:
    """Mean and standard error (nan for one value) of a 1-D tensor."""
    se = float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else math.nan
    return float(v.mean()), se


class _Runner(Runner):
    """One guidance-sphere experiment, in the shared runner skeleton."""

    def __init__(self, cfg: GuidanceSphereConfig, rd: RunDir, progress: bool, resume: bool):
        super().__init__("guidance-sphere", cfg, rd, progress=progress, resume=resume)
        self.base = load_base_model(MODEL)
        for p in self.base.denoiser.parameters():
            p.requires_grad_(False)  # Algorithm 1 never changes the model
        self.theta = theta_vector(self.base.data_shape[0])
        self.units = [(d, r, g) for d in cfg.deltas for r in range(cfg.runs) for g in cfg.guidances]
        U, R = len(self.units), cfg.rounds + 1
        self.results = {k: torch.full((U, R), math.nan, dtype=torch.float64) for k in METRICS}
        meta = self.resume_units(self.results, U, unit="run")
        self.seconds = list(meta.get("seconds", []))[: self.done]

    # -- one unit ----------------------------------------------------------------------
    def f(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.theta.to(x.dtype)

    def build(self, guidance: str, delta: float, run: int) -> GuidedOptimization:
        cfg, base = self.cfg, self.base
        term = make_guidance(guidance, strength=cfg.strength, sigma_y=cfg.sigma_y)
        guided = GuidedDenoiser(base.denoiser, base.schedule, term)
        sampler = SAMPLERS[cfg.sampler](
            guided, base.schedule, cfg.steps, data_shape=base.data_shape
        )
        return GuidedOptimization(
            sampler, self.f, delta=delta, batch_size=cfg.batch_size, adapt_from=None,
            top_k=cfg.top_k, seed=cfg.seed * 1000 + run,
        )  # fmt: skip

    def record(self, u: int, k: int, z: torch.Tensor) -> dict[str, float]:
        stats = sample_stats(z, self.theta, self.cfg.top_k)
        if not all(math.isfinite(v) for v in stats.values()):
            raise NonFiniteError(f"unit {u}, round {k}: the samples' statistics are {stats}")
        for key, v in stats.items():
            self.results[key][u, k] = v
        return stats

    def optimise(self, u: int, delta: float, run: int, guidance: str) -> None:
        opt = self.build(guidance, delta, run)
        head = {"unit": u, "delta": delta, "run": run, "guidance": guidance}
        rows = [{**head, "round": 0, **self.record(u, 0, opt.start())}]
        for k in range(1, self.cfg.rounds + 1):
            opt.step()
            rows.append({**head, "round": k, **self.record(u, k, opt.z)})
            self.rd.log_metrics(rows)
            rows = []

    # -- the experiment ----------------------------------------------------------------
    def execute(self) -> None:
        with self.timed("runs"):
            for u in range(self.done, len(self.units)):
                delta, run, guidance = self.units[u]
                w0 = time.perf_counter()
                self.optimise(u, delta, run, guidance)
                self.done = u + 1
                self.seconds.append(round(time.perf_counter() - w0, 3))
                self.save_checkpoint(
                    {"done": torch.tensor(self.done), **self.results}, seconds=self.seconds
                )
                self.progress_bar.update(1)
        with self.timed("floor"):
            self.summarise()

    def floor(self) -> dict[str, float]:
        """The base's own samples (unguided, ``floor_samples`` of them, seed-fixed)."""
        cfg, base = self.cfg, self.base
        sampler = SAMPLERS[cfg.sampler](
            base.denoiser, base.schedule, cfg.steps, data_shape=base.data_shape
        )
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + 999)
        with torch.no_grad():
            x = sampler.sample(cfg.floor_samples, generator=gen)
        d = sphere_distance(x)
        return {
            "n": cfg.floor_samples, "dist_mean": float(d.mean()),
            "dist_se": float(d.std() / math.sqrt(d.numel())),
            "dist_q90": float(d.quantile(0.9)),
            **{k: v for k, v in sample_stats(x, self.theta, cfg.top_k).items() if k != "dist"},
        }  # fmt: skip

    def summarise(self) -> None:
        cfg, res, table, curves = self.cfg, self.results, [], {}
        for delta in cfg.deltas:
            row = {"delta": delta}
            for g in cfg.guidances:
                us = [u for u, (d, _, gg) in enumerate(self.units) if d == delta and gg == g]
                cell = {}
                for key in METRICS:
                    cell[key], cell[key + "_se"] = mean_se(res[key][us, -1])
                gain = res["f_mean"][us, -1] - res["f_mean"][us, 0]
                cell["f_gain"], cell["f_gain_se"] = mean_se(gain)
                cell["gap"] = 1.0 - cell["f_mean"]
                cell["dist_max_round"] = float(res["dist"][us].mean(0).max())
                se = 0.0 if math.isnan(cell["f_gain_se"]) else cell["f_gain_se"]
                cell["f_improves"] = bool(cell["f_gain"] > 2 * se)
                cell["meets_goal"] = cell["f_improves"] and cell["dist"] <= GOAL
                cell["seconds_mean"] = sum(self.seconds[u] for u in us) / len(us)
                row[g] = cell
                curves[f"{g}|{delta:g}"] = {
                    key: [mean_se(res[key][us, k]) for k in range(cfg.rounds + 1)]
                    for key in METRICS
                }
            table.append(row)
        self.summary.update(
            {
                "model": MODEL,
                "dim": self.base.data_shape[0],
                "theta": "(1, ..., 1) / sqrt(D)",
                "f_optimum": 1.0,
                "goal_dist": GOAL,
                "floor": self.floor(),
                "table": table,
                "curves": curves,
                "runs_done": self.done,
                "seconds_total": round(sum(self.seconds), 3),
            }
        )

    def report(self) -> str:
        return report_markdown(self.summary, self.cfg, write_plots(self.summary, self.cfg, self.rd))


def run(cfg: GuidanceSphereConfig, rd: RunDir, progress: bool = True, resume: bool = False) -> dict:
    """Run guidance-sphere into ``rd``; with ``resume``, continue after the last finished
    unit (bit-identical to an uninterrupted experiment)."""
    return _Runner(cfg, rd, progress, resume).run()


GUIDANCE_SPHERE = Experiment(
    name="guidance-sphere",
    description="naive vs look-ahead gradient guidance (Guo et al. 2024, Algorithm 1) on "
    "unit-sphere data, f = theta^T x: mean f and mean | |x| - 1 | per round, over delta",
    config_cls=GuidanceSphereConfig,
    run=run,
)
