"""Experiment ``langevin-hex``: Implicit Diffusion's experiment 5.1 (Marion et al. 2025).

A Langevin sampler of the six-component mixture V_theta(x) = -log sum_i
softmax(theta)_i exp(-|x - c_i|^2 / 2), c_i = 4 (cos(i pi/3), sin(i pi/3)), is tuned
so that its samples maximise the reward r(x) = 1{x_1 >= 0} exp(-|x - (4, 3.8)|^2/20)
/ 2.5 (docs/methods.md section 4). theta_0 = (1.5, 0, 1.5, 0, 1.5, 0); 1000 particles from
N(0, I); 5000 iterations; gamma = 0.2; eta = 0.1; lam = 0. Expected: mean reward
about 0.06 -> 0.29 and the weight collapsing onto the component at (2, 3.46).

The run has three parts:

1. **main**: Implicit Diffusion with the configured reward and KL weight.
2. **compare** (``compare=true``): with the smooth reward (unrolling needs a
   gradient), Implicit Diffusion vs the nested loop (covariance estimator on K
   fresh steps per theta step) vs unrolled backpropagation through K steps, at the
   same number of sampling steps. Each final theta is then evaluated the same way:
   a fresh Langevin run of ``eval_steps`` steps from N(0, I).
3. **lam** (``lam_sweep``): Implicit Diffusion with each lam > 0 and each KL
   direction, showing how the KL keeps the sampler near the reference theta_0.

KL(pi_theta || pi_ref) is reported exactly up to Monte-Carlo error: both
unnormalised densities exp(-V) integrate to 2 pi for every theta (the components
are unit Gaussians without their constant), so the log-normalisers cancel and
KL = E_{pi_theta}[V_ref - V_theta], estimated with the particles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from sampleopt.algorithms import History, ImplicitDiffusion, NestedLoop, StepSize
from sampleopt.algorithms.implicit_diffusion import ORDERS
from sampleopt.algorithms.step_size import SCHEDULES
from sampleopt.config import SEED_MAX, check_memory
from sampleopt.errors import UsageError
from sampleopt.estimators import CovarianceEstimator, UnrolledEstimator
from sampleopt.experiments.base import Experiment
from sampleopt.experiments.langevin_hex_report import plots_and_report
from sampleopt.experiments.runner import Runner
from sampleopt.objectives import KL_DIRECTIONS, GibbsKL, HexReward, Objective
from sampleopt.rundir import RunDir
from sampleopt.samplers import GaussianMixturePotential, LangevinSampler, hex_centres

THETA_0 = (1.5, 0.0, 1.5, 0.0, 1.5, 0.0)


@dataclass
class LangevinHexConfig:
    seed: int = field(
        default=0, metadata={"help": "random seed (torch generator)", "min": 0, "max": SEED_MAX}
    )
    n_particles: int = field(default=1000, metadata={"help": "persistent particles", "min": 2})
    iterations: int = field(
        default=5000, metadata={"help": "iterations = sampling steps of the main run", "min": 1}
    )
    gamma: float = field(default=0.2, metadata={"help": "Langevin step size"})
    eta: float = field(default=0.1, metadata={"help": "theta step size", "min": 0.0})
    schedule: str = field(
        default="constant", metadata={"help": "theta step-size schedule", "choices": SCHEDULES}
    )
    order: str = field(
        default="parallel",
        metadata={
            "help": "theta step at x_k (parallel) or x_{k+1} (sequential)",
            "choices": ORDERS,
        },
    )
    reward: str = field(
        default="hard", metadata={"help": "hard (paper) or smooth", "choices": ("hard", "smooth")}
    )
    lam: float = field(default=0.0, metadata={"help": "KL weight of the main run", "min": 0.0})
    kl: str = field(default="forward", metadata={"help": "KL direction", "choices": KL_DIRECTIONS})
    compare: bool = field(
        default=True, metadata={"help": "run the nested-loop and unrolled comparison"}
    )
    compare_steps: int = field(
        default=100,
        metadata={"help": "K: sampling steps per theta step of the baselines", "min": 1},
    )
    baseline_eta: float = field(
        default=0.1,
        metadata={"help": "theta step size of the nested and unrolled baselines", "min": 0.0},
    )
    lam_sweep: tuple[float, ...] = field(
        default=(0.1, 0.3, 1.0),
        metadata={"help": "lam > 0 runs, each in both KL directions ('' for none)", "min": 0.0},
    )
    eval_steps: int = field(
        default=1000, metadata={"help": "Langevin steps of the final evaluation", "min": 1}
    )
    log_every: int = field(default=100, metadata={"help": "iterations per metrics flush", "min": 1})
    checkpoint_every: int = field(
        default=1000,
        metadata={"help": "iterations between checkpoints (rounded up to log_every)", "min": 1},
    )

    def check(self):
        if not self.gamma > 0:
            raise UsageError(f"config key 'gamma' must be > 0, got {self.gamma!r}")
        if self.compare and self.iterations < self.compare_steps:
            raise UsageError(
                "config key 'iterations' must be >= compare_steps when compare=true "
                f"(got {self.iterations} < {self.compare_steps})"
            )
        if not self.compare and self.baseline_eta != LangevinHexConfig.baseline_eta:
            raise UsageError("config key 'baseline_eta' applies to compare=true only")
        # particles, a block of noise and the baselines' unrolled graph (about 400 bytes a
        # particle and step), and the per-iteration records
        n, blocks = self.n_particles, 8 * (self.log_every + 8)
        graph = 400 * self.compare_steps if self.compare else 0
        check_memory(
            "n_particles, log_every, compare_steps, iterations",
            n * (blocks + graph) + 64 * self.iterations * (1 + 3 * len(self.lam_sweep)),
        )


def make_potential(theta=THETA_0) -> GaussianMixturePotential:
    return GaussianMixturePotential(hex_centres(4.0), torch.tensor(theta))


class _Runner(Runner):
    """One langevin-hex run, in the shared runner skeleton."""

    def __init__(self, cfg: LangevinHexConfig, rd: RunDir, progress: bool, resume: bool):
        super().__init__("langevin-hex", cfg, rd, progress=progress, resume=resume)
        self.resume_state = self._read_checkpoint()
        self.reference = make_potential()
        self.centres = hex_centres(4.0)
        # the bar counts Langevin steps: each persistent or fresh chain's steps, the
        # frozen reference chain of reverse-KL runs and the final evaluations
        iters = cfg.iterations
        total = iters * (2 if (cfg.lam > 0 and cfg.kl == "reverse") else 1)
        total += 3 * iters * len(cfg.lam_sweep)  # forward: iters; reverse: 2 iters
        if cfg.compare:
            total += iters + 2 * (iters // cfg.compare_steps) * cfg.compare_steps
            total += 6 * cfg.eval_steps
        self.progress_bar = self.bar(total, unit="step")

    # -- helpers -----------------------------------------------------------------
    def generator(self, phase: int) -> torch.Generator:
        # one independent, reproducible stream per phase
        return torch.Generator().manual_seed(self.cfg.seed * 1000 + phase)

    def sampler(self, potential, steps=1) -> LangevinSampler:
        return LangevinSampler(potential, self.cfg.gamma, steps)

    def reward(self, smooth: bool) -> HexReward:
        return HexReward(smooth=smooth)

    def logger(self, run: str, every_ckpt: int | None = None):
        """Callback writing metrics rows (and checkpoints of the main run)."""
        state = {"since_ckpt": 0, "steps": 0}

        def callback(hist: History, algo) -> None:
            weights = torch.softmax(hist.theta, 1)
            rows = [
                {
                    "run": run,
                    "step": int(s),
                    "sampling_steps": int(ss),
                    "reward_mean": float(r),
                    "weights": [round(float(w), 6) for w in ws],
                }
                for s, ss, r, ws in zip(
                    hist.step, hist.sampling_steps, hist.reward_mean, weights, strict=True
                )
            ]
            self.rd.log_metrics(rows)
            done = int(hist.sampling_steps[-1])
            self.progress_bar.update(done - state["steps"])
            state["steps"] = done
            if every_ckpt is not None:
                state["since_ckpt"] += len(hist)
                if state["since_ckpt"] >= every_ckpt:
                    state["since_ckpt"] = 0
                    self.checkpoint(algo)

        return callback

    def checkpoint(self, alg: ImplicitDiffusion) -> None:
        self.save_checkpoint(
            alg.state_tensors(),
            iteration=alg.iteration,
            sampler="LangevinSampler(GaussianMixturePotential(hex_centres(4.0), logits))",
        )

    def _read_checkpoint(self):
        """The main run's checkpoint and its metrics rows, for a resume."""
        saved = self.read_checkpoint()
        if saved is None:
            return None  # not resuming, or failed before the first checkpoint: start again
        tensors, _ = saved
        done = int(tensors["iteration"])
        rows = self.rd.keep_metrics(lambda r: r.get("run") == "main" and r["step"] <= done)
        if [r["step"] for r in rows] != list(range(1, done + 1)):
            raise UsageError(
                f"metrics.jsonl in {self.rd.path} lacks rows of the main run before step {done}"
            )
        prior = History(
            torch.tensor([r["step"] for r in rows], dtype=torch.long),
            torch.tensor([r["sampling_steps"] for r in rows], dtype=torch.long),
            torch.tensor([r["reward_mean"] for r in rows]),
            torch.tensor([r["weights"] for r in rows]).clamp_min(1e-12).log(),
        )
        return tensors, prior

    @torch.no_grad()
    def evaluate(self, potential, reward, gen) -> dict:
        """Mean reward of a fresh Langevin run under ``potential``; weights; KL to ref."""
        sampler = self.sampler(potential, self.cfg.eval_steps)
        x = sampler.sample(self.cfg.n_particles, generator=gen)
        self.progress_bar.update(self.cfg.eval_steps)
        return {"reward_mean": float(reward(x).mean()), **self.describe(potential, x)}

    @torch.no_grad()
    def describe(self, potential, x) -> dict:
        w = potential.weights()
        top = int(w.argmax())
        log_ratio = self.reference(x) - potential(x)  # log pi_theta / pi_ref, Z's cancel
        return {
            "mixture_weights": [round(float(v), 6) for v in w],
            "top_component": top,
            "top_centre": [round(float(v), 4) for v in self.centres[top]],
            "kl_to_reference": float(log_ratio.mean()),
            "kl_to_reference_se": float(log_ratio.std() / math.sqrt(x.shape[0])),
        }

    # -- phases ------------------------------------------------------------------
    def implicit(self, run: str, reward, lam: float, kl: str, phase: int, ckpt: bool, resume=None):
        cfg = self.cfg
        potential = make_potential()
        objective = Objective(reward, lam=lam, divergence=GibbsKL(self.reference, kl))
        alg = ImplicitDiffusion(
            self.sampler(potential),
            objective,
            n_particles=cfg.n_particles,
            lr=StepSize(cfg.eta, cfg.schedule),
            generator=self.generator(phase),
            order=cfg.order,
        )
        prior = None
        if resume is not None:
            tensors, prior = resume
            alg.load_state_tensors(tensors)
            self.progress_bar.update(alg.iteration)
        every = max(cfg.checkpoint_every, cfg.log_every) if ckpt else None
        hist = alg.run(
            cfg.iterations - alg.iteration, block=cfg.log_every, callback=self.logger(run, every)
        )
        if prior is not None:
            hist = History.cat([prior, hist])
        if ckpt:
            self.checkpoint(alg)
        if objective.needs_reference_samples:  # the frozen reference chain's steps
            self.progress_bar.update(cfg.iterations)
        return alg, hist

    def nested(self, run: str, estimator, phase: int):
        cfg = self.cfg
        potential = make_potential()
        objective = Objective(self.reward(smooth=True))
        loop = NestedLoop(
            self.sampler(potential, cfg.compare_steps),
            objective,
            estimator,
            batch_size=cfg.n_particles,
            lr=StepSize(cfg.baseline_eta, cfg.schedule),
            generator=self.generator(phase),
        )
        hist = loop.run(cfg.iterations // cfg.compare_steps, callback=self.logger(run))
        return potential, hist

    def execute(self) -> None:
        with self.timed("main"):
            self._main()
        self.write_summary()
        if self.cfg.compare:
            with self.timed("compare"):
                self._compare()
            self.write_summary()
        if self.cfg.lam_sweep:
            with self.timed("lam_sweep"):
                self._lam_sweep()
            self.write_summary()

    def report(self) -> str:
        return plots_and_report(self)

    def _main(self):
        cfg = self.cfg
        reward = self.reward(cfg.reward == "smooth")
        alg, hist = self.implicit(
            "main", reward, cfg.lam, cfg.kl, phase=0, ckpt=True, resume=self.resume_state
        )
        with torch.no_grad():
            final = float(reward(alg.particles).mean())
        self.main = (alg, hist)
        self.summary.update(
            {
                "reward": cfg.reward,
                "reward_mean": final,
                "reward_mean_initial": float(hist.reward_mean[0]),
                **self.describe(alg.sampler.potential, alg.particles),
                "iterations": alg.iteration,
            }
        )

    def _compare(self):
        cfg = self.cfg
        smooth = self.reward(smooth=True)
        hard = self.reward(smooth=False)
        curves, table = {}, {}
        with self.timed("compare/implicit"):
            alg, hist = self.implicit("compare/implicit", smooth, 0.0, "forward", 1, False)
        results = [("implicit", alg.sampler.potential, hist)]
        for i, (name, est) in enumerate(
            [("nested", CovarianceEstimator()), ("unrolled", UnrolledEstimator())]
        ):
            with self.timed(f"compare/{name}"):
                pot, h = self.nested(f"compare/{name}", est, phase=2 + i)
            results.append((name, pot, h))
        for j, (name, pot, h) in enumerate(results):
            curves[name] = (h.sampling_steps.tolist(), h.reward_mean.tolist())
            ev = self.evaluate(pot, smooth, self.generator(10 + j))
            ev["reward_mean_hard"] = self.evaluate(pot, hard, self.generator(20 + j))["reward_mean"]
            ev["theta_steps"] = len(h)
            ev["sampling_steps"] = int(h.sampling_steps[-1])
            ev["wall_s"] = round(self.timings[f"compare/{name}"], 3)
            table[name] = ev
        self.summary["comparison"] = {
            "reward": "smooth",
            "K": cfg.compare_steps,
            "evaluation": f"fresh Langevin run, {cfg.eval_steps} steps, "
            f"{cfg.n_particles} particles",
            "methods": table,
        }
        self.compare_curves = curves

    def _lam_sweep(self):
        cfg = self.cfg
        reward = self.reward(cfg.reward == "smooth")
        runs = []
        for i, lam in enumerate(cfg.lam_sweep):
            for j, kl in enumerate(KL_DIRECTIONS):
                alg, hist = self.implicit(
                    f"lam/{kl}/{lam:g}", reward, lam, kl, 30 + 2 * i + j, False
                )
                with torch.no_grad():
                    r = float(reward(alg.particles).mean())
                runs.append(
                    {
                        "lam": lam,
                        "kl": kl,
                        "reward_mean": r,
                        **self.describe(alg.sampler.potential, alg.particles),
                    }
                )
        self.summary["lam_runs"] = runs
        self.summary["reference_weights"] = [
            round(float(v), 6) for v in self.reference.weights().detach()
        ]


def run(cfg: LangevinHexConfig, rd: RunDir, progress: bool = True, resume: bool = False) -> dict:
    """Run langevin-hex into ``rd``; with ``resume``, continue the main run from the
    folder's checkpoint (bit-identical to an uninterrupted run) and redo the rest."""
    return _Runner(cfg, rd, progress, resume).run()


LANGEVIN_HEX = Experiment(
    name="langevin-hex",
    description="Implicit Diffusion on a 2-D six-Gaussian Langevin sampler (Marion et al. 5.1), "
    "with nested-loop / unrolled baselines and KL-regularised runs",
    config_cls=LangevinHexConfig,
    run=run,
)
