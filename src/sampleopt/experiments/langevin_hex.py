"""Experiment ``langevin-hex``: Implicit Diffusion's experiment 5.1 (Marion et al. 2025).

A Langevin sampler of the six-component mixture V_theta(x) = -log sum_i
softmax(theta)_i exp(-|x - c_i|^2 / 2), c_i = 4 (cos(i pi/3), sin(i pi/3)), is tuned
so that its samples maximise the reward r(x) = 1{x_1 >= 0} exp(-|x - (4, 3.8)|^2/20)
/ 2.5 (methods.md 4). theta_0 = (1.5, 0, 1.5, 0, 1.5, 0); 1000 particles from
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
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from sampleopt.algorithms import History, ImplicitDiffusion, NestedLoop, StepSize
from sampleopt.algorithms.implicit_diffusion import ORDERS
from sampleopt.algorithms.step_size import SCHEDULES
from sampleopt.config import to_dict
from sampleopt.errors import SampleoptError, UsageError
from sampleopt.estimators import CovarianceEstimator, UnrolledEstimator
from sampleopt.experiments.base import Experiment
from sampleopt.objectives import KL_DIRECTIONS, HexReward, Objective
from sampleopt.plots import density_plot, line_plot
from sampleopt.rundir import RunDir, load_checkpoint
from sampleopt.samplers import GaussianMixturePotential, LangevinSampler, hex_centres

THETA_0 = (1.5, 0.0, 1.5, 0.0, 1.5, 0.0)


@dataclass
class LangevinHexConfig:
    seed: int = field(default=0, metadata={"help": "random seed (torch generator)"})
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


def make_potential(theta=THETA_0) -> GaussianMixturePotential:
    return GaussianMixturePotential(hex_centres(4.0), torch.tensor(theta))


class _Runner:
    """One langevin-hex run: holds the run folder, progress bar and summary."""

    def __init__(self, cfg: LangevinHexConfig, rd: RunDir, progress: bool, resume: bool):
        self.cfg, self.rd = cfg, rd
        self.resume_state = self._read_checkpoint() if resume else None
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
        self.bar = tqdm(total=total, unit="step", disable=not progress, desc="langevin-hex")
        self.summary: dict = {"experiment": "langevin-hex", "status": "running", "seed": cfg.seed}
        self.timings: dict[str, float] = {}

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
            self.bar.update(done - state["steps"])
            state["steps"] = done
            if every_ckpt is not None:
                state["since_ckpt"] += len(hist)
                if state["since_ckpt"] >= every_ckpt:
                    state["since_ckpt"] = 0
                    self.checkpoint(algo)

        return callback

    def checkpoint(self, alg: ImplicitDiffusion) -> None:
        meta = {
            "experiment": "langevin-hex",
            "iteration": alg.iteration,
            "sampler": "LangevinSampler(GaussianMixturePotential(hex_centres(4.0), logits))",
            "config": to_dict(self.cfg),
        }
        self.rd.save_checkpoint(alg.state_tensors(), meta)

    def _read_checkpoint(self):
        """The main run's checkpoint and its metrics rows, for a resume."""
        if not self.rd.file("checkpoint.safetensors").exists():
            return None  # failed before the first checkpoint: start again
        tensors, meta = load_checkpoint(self.rd.path)
        if meta.get("experiment") != "langevin-hex":
            raise UsageError(
                f"checkpoint in {self.rd.path} is from experiment {meta.get('experiment')!r}, "
                "not langevin-hex"
            )
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
        self.bar.update(self.cfg.eval_steps)
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

    def write_summary(self) -> None:
        self.summary["timings_s"] = self.timings
        self.rd.write_json("summary.json", self.summary)

    # -- phases ------------------------------------------------------------------
    def implicit(self, run: str, reward, lam: float, kl: str, phase: int, ckpt: bool, resume=None):
        cfg = self.cfg
        potential = make_potential()
        objective = Objective(reward, lam=lam, kl=kl, reference=self.reference)
        alg = ImplicitDiffusion(
            self.sampler(potential),
            objective,
            n_particles=cfg.n_particles,
            step_size=StepSize(cfg.eta, cfg.schedule),
            generator=self.generator(phase),
            order=cfg.order,
        )
        prior = None
        if resume is not None:
            tensors, prior = resume
            alg.load_state_tensors(tensors)
            self.bar.update(alg.iteration)
        every = max(cfg.checkpoint_every, cfg.log_every) if ckpt else None
        hist = alg.run(
            cfg.iterations - alg.iteration, block=cfg.log_every, callback=self.logger(run, every)
        )
        if prior is not None:
            hist = History.cat([prior, hist])
        if ckpt:
            self.checkpoint(alg)
        if objective.needs_reference_samples:  # the frozen reference chain's steps
            self.bar.update(cfg.iterations)
        return alg, hist

    def nested(self, run: str, estimator, phase: int):
        cfg = self.cfg
        potential = make_potential()
        objective = Objective(self.reward(smooth=True))
        loop = NestedLoop(
            self.sampler(potential, cfg.compare_steps),
            objective,
            estimator,
            n_samples=cfg.n_particles,
            step_size=StepSize(cfg.baseline_eta, cfg.schedule),
            generator=self.generator(phase),
        )
        hist = loop.run(cfg.iterations // cfg.compare_steps, callback=self.logger(run))
        return potential, hist

    def run(self) -> dict:
        cfg = self.cfg
        try:
            self._main()
            if cfg.compare:
                self._compare()
            if cfg.lam_sweep:
                self._lam_sweep()
            self.summary["status"] = "done"
        except (SampleoptError, KeyboardInterrupt) as exc:
            self.summary["status"] = "failed"
            self.summary["error"] = str(exc) or type(exc).__name__
            raise
        finally:
            self.bar.close()
            self.write_summary()
        self._plots_and_report()
        self.write_summary()
        return self.summary

    def _main(self):
        cfg = self.cfg
        t0 = time.perf_counter()
        reward = self.reward(cfg.reward == "smooth")
        alg, hist = self.implicit(
            "main", reward, cfg.lam, cfg.kl, phase=0, ckpt=True, resume=self.resume_state
        )
        self.timings["main"] = time.perf_counter() - t0
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
        self.write_summary()

    def _compare(self):
        cfg = self.cfg
        t0 = time.perf_counter()
        smooth = self.reward(smooth=True)
        hard = self.reward(smooth=False)
        curves, table = {}, {}
        alg, hist = self.implicit("compare/implicit", smooth, 0.0, "forward", phase=1, ckpt=False)
        results = [("implicit", alg.sampler.potential, hist, time.perf_counter() - t0)]
        for i, (name, est) in enumerate(
            [("nested", CovarianceEstimator()), ("unrolled", UnrolledEstimator())]
        ):
            t1 = time.perf_counter()
            pot, h = self.nested(f"compare/{name}", est, phase=2 + i)
            results.append((name, pot, h, time.perf_counter() - t1))
        for j, (name, pot, h, seconds) in enumerate(results):
            curves[name] = (h.sampling_steps.tolist(), h.reward_mean.tolist())
            ev = self.evaluate(pot, smooth, self.generator(10 + j))
            ev["reward_mean_hard"] = self.evaluate(pot, hard, self.generator(20 + j))["reward_mean"]
            ev["theta_steps"] = len(h)
            ev["sampling_steps"] = int(h.sampling_steps[-1])
            ev["wall_s"] = round(seconds, 3)
            table[name] = ev
        self.summary["comparison"] = {
            "reward": "smooth",
            "K": cfg.compare_steps,
            "evaluation": f"fresh Langevin run, {cfg.eval_steps} steps, "
            f"{cfg.n_particles} particles",
            "methods": table,
        }
        self.compare_curves = curves
        self.timings["compare"] = time.perf_counter() - t0
        self.write_summary()

    def _lam_sweep(self):
        cfg = self.cfg
        t0 = time.perf_counter()
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
        self.timings["lam_sweep"] = time.perf_counter() - t0
        self.write_summary()

    # -- report ------------------------------------------------------------------
    def _plots_and_report(self):
        cfg, rd = self.cfg, self.rd
        alg, hist = self.main
        it = hist.step.tolist()
        line_plot(
            rd.file("reward.png"),
            {"Implicit Diffusion": (it, hist.reward_mean.tolist())},
            xlabel="iteration",
            ylabel=f"mean {cfg.reward} reward of the particles",
            title="langevin-hex: reward",
        )
        w = torch.softmax(hist.theta, 1)
        labels = [f"c{i} ({c[0]:.1f}, {c[1]:.1f})" for i, c in enumerate(self.centres.tolist())]
        line_plot(
            rd.file("weights.png"),
            {labels[i]: (it, w[:, i].tolist()) for i in range(6)},
            xlabel="iteration",
            ylabel="mixture weight softmax(theta)_i",
            title="langevin-hex: mixture weights",
        )
        density_plot(
            rd.file("particles.png"),
            alg.sampler.potential,
            alg.particles,
            title="final particles over exp(-V_theta)",
            marks=torch.tensor([[4.0, 3.8]]),
        )
        figures = ["reward.png", "weights.png", "particles.png"]
        if cfg.compare:
            line_plot(
                rd.file("comparison.png"),
                self.compare_curves,
                xlabel="sampling steps",
                ylabel="mean smooth reward of the samples used",
                title=f"equal sampling budget (K = {cfg.compare_steps})",
            )
            figures.append("comparison.png")
        if cfg.lam_sweep:
            curves = {}
            for kl in KL_DIRECTIONS:
                rows = [r for r in self.summary["lam_runs"] if r["kl"] == kl]
                curves[f"{kl} KL: reward"] = (
                    [r["lam"] for r in rows],
                    [r["reward_mean"] for r in rows],
                )
                curves[f"{kl} KL: KL to reference"] = (
                    [r["lam"] for r in rows],
                    [r["kl_to_reference"] for r in rows],
                )
            line_plot(
                rd.file("lam.png"),
                curves,
                xlabel="lam",
                ylabel="value",
                logx=True,
                markers=True,
                title="KL-regularised runs",
            )
            figures.append("lam.png")
        rd.file("report.md").write_text(report_markdown(self.summary, cfg, figures))


def _fmt_w(ws):
    return "(" + ", ".join(f"{w:.3f}" for w in ws) + ")"


def report_markdown(s: dict, cfg: LangevinHexConfig, figures: list[str]) -> str:
    out = [
        "# langevin-hex: Implicit Diffusion, experiment 5.1",
        "",
        f"Seed {cfg.seed}; {cfg.n_particles} particles; {cfg.iterations} iterations; "
        f"gamma = {cfg.gamma}; eta = {cfg.eta} ({cfg.schedule}, {cfg.order} order); "
        f"reward: {cfg.reward}; "
        f"lam = {cfg.lam} ({cfg.kl} KL).",
        "",
        "## Main run",
        "",
        "| metric | value |",
        "|---|---|",
        f"| mean reward, first iteration | {s['reward_mean_initial']:.4f} |",
        f"| mean reward, last iteration | {s['reward_mean']:.4f} |",
        f"| mixture weights | {_fmt_w(s['mixture_weights'])} |",
        f"| heaviest component | c{s['top_component']} at {tuple(s['top_centre'])} |",
        f"| KL(pi_theta, pi_ref) ± SE | {s['kl_to_reference']:.4f} ± "
        f"{s['kl_to_reference_se']:.4f} |",
        "",
    ]
    if "comparison" in s:
        c = s["comparison"]
        out += [
            f"## Equal sampling budget (smooth reward, K = {c['K']})",
            "",
            f"Each method used {cfg.iterations // c['K'] * c['K']} sampling steps; theta step "
            f"size {cfg.eta} for Implicit Diffusion, {cfg.baseline_eta} for the baselines; "
            f"final theta evaluated by a {c['evaluation']}.",
            "",
            "| method | theta steps | sampling steps | wall time (s) | eval smooth reward "
            "| eval hard reward | weights |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in c["methods"].items():
            out.append(
                f"| {name} | {m['theta_steps']} | {m['sampling_steps']} | {m['wall_s']:.2f} | "
                f"{m['reward_mean']:.4f} | {m['reward_mean_hard']:.4f} | "
                f"{_fmt_w(m['mixture_weights'])} |"
            )
        out.append("")
    if "lam_runs" in s:
        out += [
            "## KL-regularised runs",
            "",
            f"Reference weights {_fmt_w(s['reference_weights'])}.",
            "",
            "| lam | KL direction | reward | KL(pi_theta, pi_ref) ± SE | weights |",
            "|---|---|---|---|---|",
        ]
        for r in s["lam_runs"]:
            out.append(
                f"| {r['lam']:g} | {r['kl']} | {r['reward_mean']:.4f} | "
                f"{r['kl_to_reference']:.4f} ± {r['kl_to_reference_se']:.4f} | "
                f"{_fmt_w(r['mixture_weights'])} |"
            )
        out.append("")
    out += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(out)


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
