"""Experiment ``soc-bimodal``: the 1-D fine-tuning benchmark of the time-reversed BSDE
paper (Mei & Taghvaei 2026), TR-BSDE against adjoint matching (docs/soc-bimodal.md).

Data 1/2 N(-3, 1) + 1/2 N(3, 1), OU noising with a = 2, sigma = 2 on [0, 1], the base
generative SDE of :mod:`sampleopt.soc.bimodal` on 50 steps (its exact score, or a
learned one with ``base=learned``), terminal cost (x - 3)^2 / 2 (reward r = -cost) and
temperature lam = 1 / beta. Each unit (set-up, beta, method) trains a control
network (:class:`~sampleopt.soc.TimeField`; a co-state network for TR-BSDE) with Adam,
then estimates the cost J = E[-r(x_K) / lam + sum_k |u_k|^2 dt / 2 (+ log q(x_0) -
log p_0(x_0))] on ``eval_n`` held-out paths (a seed no training used) with its standard
error, next to the exact optimum, and compares the terminal law with the exact optimal
one (Wasserstein-1 via CDFs, total variation on 0.1-wide bins).

Set-ups: ``learned`` (the initial law is a learnable Gaussian, its KL to the base's p_0
in the cost; optimum J_learned, optimal terminal law the tilted data law) and ``fixed``
(the base's own p_0; the base is not memoryless, so the optimum J_fixed is larger and
the optimal terminal law is not the tilted one).

A checkpoint is committed after each unit: a kill loses at most the unit in progress,
and each unit's seeds depend on (seed, set-up, beta, method) only, so a resumed run
ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import importlib.util
import math
import time
import zlib
from dataclasses import dataclass, field

import torch
from torch import nn

from sampleopt.checks import check_finite
from sampleopt.config import SEED_MAX, check_memory
from sampleopt.errors import UsageError
from sampleopt.estimators import AdjointMatching, TimeReversedBSDE
from sampleopt.experiments.base import Experiment
from sampleopt.experiments.runner import Runner
from sampleopt.experiments.soc_bimodal_report import (
    GRID,
    PAPER_BETAS,
    distances,
    goals,
    optimal_density,
    paper_cost,
    plots_and_report,
)
from sampleopt.objectives import Objective, PathKL
from sampleopt.rundir import RunDir
from sampleopt.samplers import ControlledChain, Gaussian
from sampleopt.samplers.initial import initial_kl
from sampleopt.soc import TimeField
from sampleopt.soc.bimodal import BimodalOU, base_chain

SETUPS = ("learned", "fixed")
METHODS = ("tr-bsde", "adjoint-matching")
BASES = ("exact", "learned")


def reward(x: torch.Tensor) -> torch.Tensor:
    """r(x) = -(x - 3)^2 / 2, one value per sample."""
    return -0.5 * ((x - 3.0) ** 2).sum(1)


class Float32Field(nn.Module):
    """A network run in float32 on the float64 states of the base chain (twice as fast
    here; the control needs no more precision)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x.float(), t.float()).to(x.dtype)


@dataclass
class SocBimodalConfig:
    seed: int = field(default=0, metadata={"help": "random seed", "min": 0, "max": SEED_MAX})
    base: str = field(
        default="exact",
        metadata={
            "help": "the base's score: exact or learned (a trained network)",
            "choices": BASES,
        },
    )
    setups: str = field(
        default=",".join(SETUPS),
        metadata={"help": "initial law learned (paper's set-up) and/or fixed to the base's"},
    )
    betas: tuple[float, ...] = field(
        default=PAPER_BETAS,
        metadata={"help": "inverse temperatures beta = 1 / lam", "min": 1e-3, "max": 100.0},
    )
    methods: str = field(
        default=",".join(METHODS), metadata={"help": "tr-bsde and/or adjoint-matching"}
    )
    steps: int = field(default=50, metadata={"help": "K: time steps", "min": 2, "max": 1000})
    batch: int = field(default=256, metadata={"help": "paths per iteration", "min": 2})
    lr: float = field(default=1e-2, metadata={"help": "Adam learning rate", "min": 0.0})
    lr_decay: float = field(
        default=0.1,
        metadata={"help": "last lr / first lr (exponential decay)", "min": 1e-4, "max": 1.0},
    )
    am_iterations: int = field(
        default=200,
        metadata={"help": "adjoint matching: iterations at all steps (the budget)", "min": 1},
    )
    am_steps: int = field(
        default=0,
        metadata={"help": "adjoint matching: steps regressed per iteration (0: all)", "min": 0},
    )
    am_clip_quantile: float = field(
        default=0.0,
        metadata={
            "help": "adjoint matching: drop paths above this loss quantile (0: off)",
            "min": 0.0,
            "max": 0.999,
        },
    )
    tr_iterations: int = field(default=640, metadata={"help": "TR-BSDE: gradient steps", "min": 1})
    tr_round_length: int = field(
        default=16, metadata={"help": "TR-BSDE: gradient steps per round of targets", "min": 1}
    )
    tr_score_iterations: int = field(
        default=20, metadata={"help": "TR-BSDE: score-fit steps per round", "min": 0}
    )
    tr_warmup_rounds: int = field(
        default=1, metadata={"help": "TR-BSDE: first rounds on the lean adjoint", "min": 0}
    )
    tr_huber: float = field(
        default=0.0,
        metadata={"help": "TR-BSDE: Huber threshold of the co-state loss (0: squared)", "min": 0.0},
    )
    eval_n: int = field(default=50_000, metadata={"help": "held-out paths per unit", "min": 100})
    log_every: int = field(default=10, metadata={"help": "iterations per metrics row", "min": 1})

    @property
    def setup_list(self) -> list[str]:
        return [v.strip() for v in self.setups.split(",")]

    @property
    def method_list(self) -> list[str]:
        return [v.strip() for v in self.methods.split(",")]

    def check(self):
        for key, values, allowed in (
            ("setups", self.setup_list, SETUPS),
            ("methods", self.method_list, METHODS),
        ):
            bad = [v for v in values if v not in allowed]
            if bad or len(set(values)) != len(values):
                raise UsageError(
                    f"config key '{key}' takes distinct names among {', '.join(allowed)}, "
                    f"got {values!r}"
                )
        if not self.betas or len(set(self.betas)) != len(self.betas):
            raise UsageError(f"config key 'betas' takes distinct numbers, got {self.betas!r}")
        if self.am_steps > self.steps:
            raise UsageError(
                f"config key 'am_steps' must be at most steps = {self.steps}, got {self.am_steps}"
            )
        if self.base == "learned" and importlib.util.find_spec(LEARNED) is None:
            raise UsageError(f"base=learned needs {LEARNED}.learned_score(), which is missing")
        # held-out paths and a stored batch of paths, targets and noises (float64)
        check_memory("eval_n, batch, steps", 8 * (4 * self.eval_n + 8 * self.batch * self.steps))


LEARNED = "sampleopt.soc.bimodal_learned"


def unit_id(setup: str, beta: float, method: str) -> str:
    return f"{setup}/{beta:.4g}/{method}"


@torch.no_grad()
def held_out_cost(chain, base, lam: float, n: int, gen: torch.Generator):
    """Per-path cost -r(x_K) / lam + sum_k |m - m_base|^2 / (2 s_k^2) (+ the initial
    law's log q(x_0) - log p_0(x_0) when it is learned), and the terminal states."""
    x0 = chain.sample_x0(n, gen)
    x, cost = x0, x0.new_zeros(n)
    for k in range(chain.num_steps):
        m, s = chain.mean(x, k), float(base.noise_scale(k))
        cost = cost + ((m - base.mean(x, k)) ** 2).sum(1) / (2 * s * s)
        x = m + s * torch.randn(x.shape, generator=gen, dtype=x.dtype)
    cost = cost - reward(x) / lam
    if chain.learns_initial_law:
        cost = cost + initial_kl(chain.initial, base.initial, x0)
    return cost, x[:, 0]


class _Runner(Runner):
    def __init__(self, cfg: SocBimodalConfig, rd: RunDir, progress: bool, resume: bool):
        super().__init__("soc-bimodal", cfg, rd, progress=progress, resume=resume)
        self.results: dict[str, dict] = {}
        self.tensors: dict[str, torch.Tensor] = {}

    def unit_seed(self, uid: str) -> int:
        return (self.cfg.seed * 1_000_003 + zlib.crc32(uid.encode())) % 2**62

    def estimator(self, method: str, chain) -> tuple:
        cfg = self.cfg
        if method == "tr-bsde":
            score = Float32Field(TimeField(1, hidden=64, blocks=2, zero_init=False))
            est = TimeReversedBSDE(
                score=score,
                score_iterations=cfg.tr_score_iterations,
                round_length=cfg.tr_round_length,
                warmup_rounds=cfg.tr_warmup_rounds,
                huber=cfg.tr_huber or None,
                allow_memory=True,
            )
            return est, cfg.tr_iterations
        est = AdjointMatching(
            steps=cfg.am_steps or None,
            clip_quantile=cfg.am_clip_quantile or None,
            allow_memory=True,
        )
        full = AdjointMatching(allow_memory=True).network_evals(chain, cfg.batch)
        # equal network evaluations: a subset of steps buys more iterations
        its = round(cfg.am_iterations * full / est.network_evals(chain, cfg.batch))
        return est, max(1, its)

    def train_unit(self, setup: str, beta: float, method: str, score) -> dict:
        cfg, uid = self.cfg, unit_id(setup, beta, method)
        lam, seed = 1.0 / beta, self.unit_seed(uid)
        torch.manual_seed(seed)  # network initialisations
        gen = torch.Generator().manual_seed(seed)
        base = base_chain(cfg.steps, score=score)
        net = Float32Field(TimeField(1))
        initial = Gaussian([0.0], [1.0], learnable=True).double() if setup == "learned" else None
        par = "costate" if method == "tr-bsde" else "control"
        chain = ControlledChain(base, net, parameterization=par, initial=initial)
        objective = Objective(reward, lam=lam, divergence=PathKL(base))
        est, iterations = self.estimator(method, chain)
        params = [p for p in chain.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=cfg.lr)
        t0 = time.perf_counter()
        for i in range(iterations):
            for group in opt.param_groups:
                group["lr"] = cfg.lr * cfg.lr_decay ** (i / max(iterations - 1, 1))
            opt.zero_grad(set_to_none=True)
            loss = est.loss(chain, objective, n=cfg.batch, generator=gen)
            check_finite(loss.detach(), f"the {method} loss of {uid} at iteration {i + 1}")
            loss.backward()
            opt.step()
            if (i + 1) % cfg.log_every == 0 or i + 1 == iterations:
                self.rd.log_metrics([{"run": uid, "step": i + 1, "loss": float(loss.detach())}])
        train_s = time.perf_counter() - t0
        problem = BimodalOU(lam)
        eval_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 999_999_937)
        cost, x = held_out_cost(chain, base, lam, cfg.eval_n, eval_gen)
        check_finite(cost, f"the held-out cost of {uid}")
        opt_density = optimal_density(problem, setup, GRID)
        optimum = problem.J_learned() if setup == "learned" else problem.J_fixed()
        mean, se = float(cost.mean()), float(cost.std() / math.sqrt(len(cost)))
        dx = float(GRID[1] - GRID[0])
        self.tensors.update({f"{uid}/{k}": v.detach() for k, v in chain.state_dict().items()})
        return {
            "unit": uid,
            "setup": setup,
            "beta": beta,
            "lam": lam,
            "method": method,
            "cost": mean,
            "cost_se": se,
            "optimum": optimum,
            "gap": mean / optimum - 1,
            "paper": paper_cost(method, beta) if setup == "learned" else None,
            "right_mass": float((x > 0).double().mean()),
            "right_mass_optimal": float(opt_density[GRID > 0].sum() * dx),
            **distances(x, opt_density),
            "iterations": iterations,
            "network_evals": est.network_evals(chain, cfg.batch) * iterations,
            "train_s": round(train_s, 2),
            "eval_s": round(time.perf_counter() - t0 - train_s, 2),
        }

    def base_score(self):
        if self.cfg.base == "exact":
            return None
        from sampleopt.soc.bimodal_learned import learned_score

        return learned_score()

    def execute(self) -> None:
        cfg = self.cfg
        saved = self.read_checkpoint()
        if saved is not None:
            self.tensors, meta = saved
            self.results = {r["unit"]: r for r in meta.get("results", [])}
            self.rd.keep_metrics(lambda r: r.get("run") in self.results)
        units = [(s, b, m) for s in cfg.setup_list for b in cfg.betas for m in cfg.method_list]
        bar = self.bar(len(units), unit="run")
        with self.timed("base"):
            score = self.base_score()
        for setup, beta, method in units:
            uid = unit_id(setup, beta, method)
            if uid not in self.results:
                bar.set_postfix_str(uid)
                self.results[uid] = self.train_unit(setup, beta, method, score)
                self.save_checkpoint(self.tensors, results=list(self.results.values()))
                self.summary["results"] = list(self.results.values())
                self.write_summary()
            bar.update(1)
        self.summary["results"] = [self.results[unit_id(*u)] for u in units]
        self.summary["goals"] = goals(self.summary["results"], cfg.base)
        self.timings["units"] = sum(r["train_s"] + r["eval_s"] for r in self.summary["results"])

    def report(self) -> str:
        return plots_and_report(self)


def run(cfg: SocBimodalConfig, rd: RunDir, progress: bool = True, resume: bool = False) -> dict:
    """Run soc-bimodal into ``rd``; with ``resume``, skip the units of the checkpoint."""
    return _Runner(cfg, rd, progress, resume).run()


SOC_BIMODAL = Experiment(
    name="soc-bimodal",
    description="TR-BSDE vs adjoint matching on the 1-D bimodal OU fine-tuning benchmark "
    "(Mei & Taghvaei), initial law learned or fixed, against the exact optima",
    config_cls=SocBimodalConfig,
    run=run,
)
