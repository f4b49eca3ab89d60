"""Experiment ``soc-linear``: the linear co-state benchmark of the time-reversed BSDE
(Mei & Taghvaei 2026, docs/soc-linear.md).

The 2-D linear SDE dX = A X dt + eps dW, A = [[0, 1], [-1, -0.5]], X_0 ~ N(0, I), on
[0, T] with T = 2 and K = 40 steps (an :class:`~sampleopt.samplers.SDEChain` whose linear
part is integrated exactly), terminal cost |x|^2 / 2 and no control. Its co-state is
phi(t, x) = grad_x E[|X_T|^2 / 2 | X_t = x] = e^{A^T (T - t)} e^{A (T - t)} x, as
E[X_T | X_t = x] = e^{A (T - t)} x. A co-state network phi(x, t) (a
:class:`~sampleopt.soc.TimeField` inside a :class:`~sampleopt.samplers.ControlledChain`
with ``feedback=False``: it is fitted but does not steer) is regressed in rounds: sample
``paths`` forward paths with their noises, build targets with
:class:`~sampleopt.soc.bsde.CostateTargets` from y_K = X_K, take ``iterations`` Adam
steps of :func:`~sampleopt.soc.bsde.costate_loss` on minibatches of them. ``tr-bsde``
uses the lean adjoint in round 1 (warm start) and the time-reversed BSDE's adapted
targets after it (refitting the score network on each round's paths); ``lean`` uses
the lean adjoint in every round. Metric: the MSE of phi(0, .) against the exact co-state
on ``test_points`` draws of N(0, I), squared error summed over the 2 coordinates and
averaged over the points.

One unit of work is one run (eps, run index, method); a checkpoint is committed after
each, so a kill loses at most the run in progress, and a resumed experiment ends
bit-identical to an uninterrupted one (every run draws from its own generators, seeded
from (seed, eps, run index)).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from sampleopt.config import SEED_MAX, check_memory
from sampleopt.errors import NonFiniteError, UsageError
from sampleopt.experiments.base import Experiment
from sampleopt.experiments.runner import Runner
from sampleopt.experiments.soc_linear_report import report_markdown, write_plots
from sampleopt.rundir import RunDir
from sampleopt.samplers import ControlledChain, Gaussian, SDEChain
from sampleopt.soc.bsde import TARGETS, CostateTargets, costate_loss
from sampleopt.soc.derivatives import TRACES
from sampleopt.soc.networks import TimeField

A = ((0.0, 1.0), (-1.0, -0.5))
LINE = torch.linspace(-3.0, 3.0, 61)  # phi(0, (s, 0)) is plotted along this line


@dataclass
class SocLinearConfig:
    seed: int = field(default=0, metadata={"help": "random seed", "min": 0, "max": SEED_MAX})
    eps: tuple[float, ...] = field(
        default=(0.0, 0.5, 1.0, 2.0, 5.0),
        metadata={"help": "noise levels eps (dX = A X dt + eps dW)", "min": 0.0, "max": 100.0},
    )
    runs: int = field(
        default=5, metadata={"help": "runs (seeds) per eps and method", "min": 1, "max": 999}
    )
    methods: tuple[str, ...] = field(
        default=TARGETS, metadata={"help": "targets compared: tr-bsde and/or lean"}
    )
    horizon: float = field(default=2.0, metadata={"help": "T", "min": 1e-3, "max": 100.0})
    steps: int = field(default=40, metadata={"help": "K time steps", "min": 1, "max": 10000})
    paths: int = field(default=2000, metadata={"help": "N forward paths a round", "min": 2})
    rounds: int = field(
        default=4, metadata={"help": "rounds (tr-bsde: the first is lean)", "min": 1}
    )
    iterations: int = field(default=100, metadata={"help": "Adam steps a round", "min": 1})
    batch: int = field(default=512, metadata={"help": "paths per Adam step", "min": 1})
    step_subset: int = field(
        default=4, metadata={"help": "time steps per Adam step (>= steps: all)", "min": 1}
    )
    first_step: bool = field(
        default=True, metadata={"help": "always include step 0 (t = 0, where phi is scored)"}
    )
    lr: float = field(default=1e-2, metadata={"help": "Adam step size", "min": 1e-8, "max": 1.0})
    lr_final: float = field(
        default=0.05, metadata={"help": "cosine decay to lr * lr_final", "min": 0.0, "max": 1.0}
    )
    huber: float = field(
        default=1.0, metadata={"help": "Huber delta (0: squared error)", "min": 0.0}
    )
    hidden: int = field(default=32, metadata={"help": "co-state network width", "min": 1})
    blocks: int = field(default=1, metadata={"help": "residual blocks", "min": 0, "max": 64})
    frequencies: int = field(
        default=4, metadata={"help": "Fourier time features", "min": 1, "max": 32}
    )
    score_iterations: int = field(
        default=50, metadata={"help": "score-fit Adam steps a tr-bsde round", "min": 0}
    )
    score_lr: float = field(default=1e-3, metadata={"help": "score step size", "min": 1e-8})
    score_hidden: int = field(default=32, metadata={"help": "score network width", "min": 1})
    trace: str = field(
        default="exact", metadata={"help": "trace of the Ito term", "choices": TRACES}
    )
    test_points: int = field(default=2000, metadata={"help": "test draws of N(0, I)", "min": 1})

    def check(self):
        if not self.eps:
            raise UsageError("config key 'eps' needs at least one noise level")
        if len(set(self.eps)) != len(self.eps):
            raise UsageError(f"config key 'eps' has a repeated value: {self.eps}")
        if not self.methods or any(m not in TARGETS for m in self.methods):
            raise UsageError(
                f"config key 'methods' must name one or both of {', '.join(TARGETS)}, "
                f"got {self.methods}"
            )
        if len(set(self.methods)) != len(self.methods):
            raise UsageError(f"config key 'methods' has a repeated value: {self.methods}")
        if "tr-bsde" in self.methods and self.rounds < 2:
            raise UsageError(
                "config key 'rounds' must be >= 2 with tr-bsde (round 1 is the lean warm "
                f"start), got {self.rounds}"
            )
        if self.batch > self.paths:
            raise UsageError(
                f"config key 'batch' must be <= paths ({self.paths}), got {self.batch}"
            )
        # a round's paths, noises and targets (4 float32 arrays of K + 1 by N by 2)
        check_memory("steps, paths", 4 * 4 * 2 * (self.steps + 1) * self.paths * 3)


def exact_costate(t: float, T: float) -> torch.Tensor:
    """P(t) = e^{A^T (T - t)} e^{A (T - t)} in float64: phi(t, x) = P(t) x."""
    e = torch.linalg.matrix_exp(torch.tensor(A, dtype=torch.float64) * (T - t))
    return e.T @ e


class _Runner(Runner):
    """One soc-linear experiment, in the shared runner skeleton."""

    def __init__(self, cfg: SocLinearConfig, rd: RunDir, progress: bool, resume: bool):
        super().__init__("soc-linear", cfg, rd, progress=progress, resume=resume)
        self.units = [(e, r, m) for e in cfg.eps for r in range(cfg.runs) for m in cfg.methods]
        U, R = len(self.units), cfg.rounds
        self.results = {
            "mse": torch.full((U,), math.nan, dtype=torch.float64),
            "round_mse": torch.full((U, R), math.nan, dtype=torch.float64),
            "line": torch.full((U, LINE.numel(), 2), math.nan, dtype=torch.float64),
        }
        meta = self.resume_units(self.results, U, unit="run")
        self.seconds = list(meta.get("seconds", []))[: self.done]
        self.cpu_seconds = list(meta.get("cpu_seconds", []))[: self.done]
        xt = torch.Generator().manual_seed(cfg.seed * 1000 + 999)
        self.test_x = torch.randn(cfg.test_points, 2, generator=xt, dtype=torch.float64)

    # -- one run ---------------------------------------------------------------------
    def unit_seed(self, eps: float, run: int) -> int:
        """The same for both methods (common random numbers in round 1) and for any other
        choice of eps values or runs: (seed, eps, run) alone sets a run's draws."""
        return self.cfg.seed * 10**9 + round(eps * 1000) * 1000 + run

    def build(self, eps: float, seed: int):
        cfg = self.cfg
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = TimeField(
                2, hidden=cfg.hidden, blocks=cfg.blocks, frequencies=cfg.frequencies,
                horizon=cfg.horizon,
            )  # fmt: skip
            score = TimeField(
                2, hidden=cfg.score_hidden, blocks=2, frequencies=cfg.frequencies,
                horizon=cfg.horizon, zero_init=False,
            )  # fmt: skip
        times = torch.linspace(0.0, cfg.horizon, cfg.steps + 1).tolist()
        base = SDEChain(Gaussian(torch.zeros(2), 1.0), times, diffusion=eps, linear=A)
        sampler = ControlledChain(base, net, parameterization="costate", feedback=False)
        return base, sampler, score

    def sample(self, base, gen):
        cfg = self.cfg
        with torch.no_grad():
            x = base.sample_x0(cfg.paths, gen)
            path = x.new_empty((cfg.steps + 1, *x.shape))
            noises = x.new_empty((cfg.steps, *x.shape))
            path[0] = x
            for k in range(cfg.steps):
                noises[k] = torch.randn(x.shape, generator=gen, dtype=x.dtype)
                path[k + 1] = base.step(path[k], k, noises[k])
        return path, noises

    def chosen_steps(self, gen) -> list[int]:
        K, m = self.cfg.steps, self.cfg.step_subset
        if m >= K:
            return list(range(K))
        if self.cfg.first_step:
            return [0, *sorted(int(i) + 1 for i in torch.randperm(K - 1, generator=gen)[: m - 1])]
        return sorted(int(i) for i in torch.randperm(K, generator=gen)[:m])

    def phi0(self, sampler, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return sampler.costate(x.to(torch.float32), 0).to(torch.float64)

    def test_mse(self, sampler) -> float:
        exact = self.test_x @ exact_costate(0.0, self.cfg.horizon).T
        return float(((self.phi0(sampler, self.test_x) - exact) ** 2).sum(1).mean())

    def fit(self, u: int, eps: float, run: int, method: str) -> None:
        cfg = self.cfg
        seed = self.unit_seed(eps, run)
        gen = torch.Generator().manual_seed(seed)
        base, sampler, score = self.build(eps, seed)
        targets = CostateTargets(  # y_K = grad |x|^2 / 2 = x
            sampler, base, lambda x: x, target=method, trace=cfg.trace,
            score=score, score_iterations=cfg.score_iterations, score_lr=cfg.score_lr,
        )  # fmt: skip
        opt = torch.optim.Adam(sampler.control.parameters(), lr=cfg.lr)
        total = cfg.rounds * cfg.iterations

        def cosine(i: int) -> float:  # lr factor: 1 -> lr_final over all the iterations
            return cfg.lr_final + (1 - cfg.lr_final) * (1 + math.cos(math.pi * i / total)) / 2

        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine)
        huber = cfg.huber if cfg.huber > 0 else None
        for r in range(cfg.rounds):
            path, noises = self.sample(base, gen)
            lean = r == 0 or method == "lean"
            xs, ys = targets(path, noises, path[-1].clone(), gen, lean=lean)
            for _ in range(cfg.iterations):
                steps = self.chosen_steps(gen)
                idx = torch.randint(0, cfg.paths, (cfg.batch,), generator=gen)
                loss = costate_loss(sampler, base, xs[:, idx], ys[:, idx], steps, huber)
                if not torch.isfinite(loss):
                    raise NonFiniteError(f"eps={eps:g}, run {run}, {method}: the loss is {loss}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
            mse = self.test_mse(sampler)
            self.results["round_mse"][u, r] = mse
            row = {"unit": u, "eps": eps, "run": run, "method": method, "round": r + 1}
            row.update({"targets": "lean" if lean else "tr-bsde", "mse": mse})
            if not lean:
                row["score_loss"] = targets.score_loss
            self.rd.log_metrics([row])
        if not math.isfinite(mse):
            raise NonFiniteError(f"eps={eps:g}, run {run}, {method}: the test MSE is {mse}")
        self.results["mse"][u] = mse
        self.results["line"][u] = self.phi0(sampler, torch.stack([LINE, 0 * LINE], 1).double())

    # -- the experiment --------------------------------------------------------------
    def execute(self) -> None:
        with self.timed("runs"):
            for u in range(self.done, len(self.units)):
                eps, run, method = self.units[u]
                w0, c0 = time.perf_counter(), time.process_time()
                self.fit(u, eps, run, method)
                wall, cpu = time.perf_counter() - w0, time.process_time() - c0
                self.rd.log_metrics(
                    [
                        {
                            "unit": u, "eps": eps, "run": run, "method": method,
                            "mse": float(self.results["mse"][u]),
                            "seconds": {"wall": round(wall, 3), "cpu": round(cpu, 3)},
                        }
                    ]
                )  # fmt: skip
                self.done = u + 1
                self.seconds.append(round(wall, 3))
                self.cpu_seconds.append(round(cpu, 3))
                self.save_checkpoint(
                    {"done": torch.tensor(self.done), **self.results},
                    seconds=self.seconds,
                    cpu_seconds=self.cpu_seconds,
                )
                self.progress_bar.update(1)
        self.summarise()

    def summarise(self) -> None:
        cfg, table = self.cfg, []
        for eps in cfg.eps:
            row = {"eps": eps}
            for method in cfg.methods:
                us = [u for u, (e, _, m) in enumerate(self.units) if e == eps and m == method]
                v = self.results["mse"][us]
                se = float(v.std() / math.sqrt(len(us))) if len(us) > 1 else math.nan
                row[method] = {
                    "mse_mean": float(v.mean()), "mse_se": se, "mse_min": float(v.min()),
                    "mse_max": float(v.max()), "mse_runs": [float(x) for x in v],
                    "seconds_mean": sum(self.seconds[u] for u in us) / len(us),
                    "cpu_seconds_mean": sum(self.cpu_seconds[u] for u in us) / len(us),
                }  # fmt: skip
            table.append(row)
        self.summary.update(
            {
                "mse_convention": "mean over test points of |phi(0, x) - P(0) x|^2 (squared "
                "error summed over the 2 coordinates)",
                "exact_P0": exact_costate(0.0, cfg.horizon).tolist(),
                "table": table,
                "runs_done": self.done,
                "seconds_total": round(sum(self.seconds), 3),
                "cpu_seconds_total": round(sum(self.cpu_seconds), 3),
            }
        )

    def report(self) -> str:
        figures = write_plots(self, LINE, exact_costate(0.0, self.cfg.horizon))
        return report_markdown(self.summary, self.cfg, figures)


def run(cfg: SocLinearConfig, rd: RunDir, progress: bool = True, resume: bool = False) -> dict:
    """Run soc-linear into ``rd``; with ``resume``, continue after the last finished run
    (bit-identical to an uninterrupted experiment)."""
    return _Runner(cfg, rd, progress, resume).run()


SOC_LINEAR = Experiment(
    name="soc-linear",
    description="time-reversed BSDE vs lean adjoint on the 2-D linear co-state benchmark "
    "(Mei & Taghvaei 2026): MSE of phi(0, .) against the exact co-state, per noise level",
    config_cls=SocLinearConfig,
    run=run,
)
