"""Experiments ``mnist-brightness`` and ``mnist-digit``: reward fine-tuning of the shipped
MNIST diffusion model (Marion et al. 2025, experiment 5.2).

The shipped ``mnist`` base model (a small UNet) samples with the reverse-SDE sampler
(Euler-Maruyama, K steps, noise at every step so that the path KL to the frozen base
model is finite; methods.md 1). :class:`~sampleopt.training.finetune.FineTuner`
minimises -E[r] + lam * KL(P_theta || P_base) with Adam:

1. **main**: the configured ``method`` (default: finite-time Implicit Diffusion) for
   ``updates`` theta updates; samples before and after; mean reward and classifier
   FID (samples vs the training images, ``eval_n`` samples each time, so values are
   comparable within the run) before and after.
2. **compare** (``compare=true``): Implicit Diffusion, nested-loop adjoint, DRaFT-1
   (truncated) and score-function (DDPO-style REINFORCE), each until the main run's
   number of network evaluations; reward against network evaluations.
3. **lam** (``lam_sweep``): the main method at each lam: reward against classifier FID
   (a Pareto plot across lam).

Rewards: ``brightness`` (mean intensity in [0, 1], digits grow thicker) or ``digit``
(the shipped classifier's probability of ``digit``).

``tune_steps=M`` fine-tunes only the last M sampling steps
(:class:`~sampleopt.diffusion.LateStepDenoiser`): the earlier steps, which decide which
digit is drawn, stay the base model's, so the reward can change how a digit is drawn
but not which digits are drawn. The path KL then accrues on the late, low-noise steps
only, where a change costs more, so it needs a much smaller lam (README).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from sampleopt.config import to_dict
from sampleopt.diffusion import LateStepDenoiser
from sampleopt.errors import SampleoptError, UsageError
from sampleopt.experiments.base import Experiment
from sampleopt.models.pretrained import load_base_model
from sampleopt.objectives import Brightness, DigitProbability, Objective
from sampleopt.plots import image_grid, line_plot
from sampleopt.rundir import RunDir, load_checkpoint
from sampleopt.samplers import ReverseSDESampler
from sampleopt.samplers.potentials import QuadraticPotential
from sampleopt.training.finetune import METHODS, FineTuner
from sampleopt.training.lora import add_lora

COMPARED = ("implicit", "adjoint", "truncated", "score-function")


@dataclass
class MnistFinetuneConfig:
    seed: int = field(default=0, metadata={"help": "random seed"})
    reward: str = field(
        default="brightness",
        metadata={"help": "brightness or digit", "choices": ("brightness", "digit")},
    )
    digit: int = field(default=3, metadata={"help": "the digit of reward=digit", "min": 0})
    method: str = field(default="implicit", metadata={"help": "main method", "choices": METHODS})
    steps: int = field(default=20, metadata={"help": "K: sampling steps", "min": 1})
    batch_size: int = field(default=8, metadata={"help": "samples per batch", "min": 2})
    accumulate: int = field(
        default=1, metadata={"help": "batches per update and process (nested methods)", "min": 1}
    )
    updates: int = field(default=100, metadata={"help": "theta updates of the main run", "min": 1})
    lr: float = field(default=5e-5, metadata={"help": "Adam learning rate", "min": 0.0})
    lam: float = field(default=0.05, metadata={"help": "path-KL weight", "min": 0.0})
    eval_n: int = field(default=256, metadata={"help": "samples per evaluation", "min": 2})
    compare: bool = field(default=False, metadata={"help": "equal-budget method comparison"})
    lam_sweep: tuple[float, ...] = field(
        default=(), metadata={"help": "extra lam values for the Pareto plot", "min": 0.0}
    )
    tune_steps: int = field(
        default=0,
        metadata={
            "help": "fine-tune only the last tune_steps sampling steps; earlier ones stay "
            "the frozen base (0: all steps)",
            "min": 0,
        },
    )
    lora_rank: int = field(
        default=0, metadata={"help": "LoRA rank (0: fine-tune every weight)", "min": 0}
    )
    lora_targets: tuple[str, ...] = field(
        default=("c1", "c2"), metadata={"help": "modules LoRA adapts (names or name suffixes)"}
    )
    eval_every: int = field(
        default=50, metadata={"help": "updates between evaluations of the main run (0: none)"}
    )
    checkpoint_every: int = field(
        default=25, metadata={"help": "updates between checkpoints of the main run", "min": 1}
    )

    def check(self):
        if self.digit > 9:
            raise UsageError(f"config key 'digit' must be in 0 .. 9, got {self.digit}")
        if self.tune_steps > self.steps:
            raise UsageError(
                f"config key 'tune_steps' must be at most steps = {self.steps}, "
                f"got {self.tune_steps}"
            )


class _Runner:
    def __init__(self, cfg: MnistFinetuneConfig, rd: RunDir, progress: bool, resume: bool, name):
        self.cfg, self.rd, self.name = cfg, rd, name
        self.progress = progress
        self.base = load_base_model("mnist")
        self.reward = Brightness() if cfg.reward == "brightness" else DigitProbability(cfg.digit)
        from sampleopt.data import mnist

        self.train_images = mnist("train")[0]
        self.summary: dict = {"experiment": name, "status": "running", "seed": cfg.seed}
        self.resume = resume
        self.base_sampler = self.sampler().requires_grad_(False)  # the frozen base
        self.writer = None

    def sampler(self) -> ReverseSDESampler:
        b = self.base
        return ReverseSDESampler(
            copy.deepcopy(b.denoiser), b.schedule, self.cfg.steps, data_shape=b.data_shape
        )

    def tuner(self, method: str, lam: float, seed_offset: int = 0) -> FineTuner:
        sampler = self.sampler()
        ref = copy.deepcopy(sampler).requires_grad_(False)
        tuned = sampler.denoiser
        if self.cfg.lora_rank > 0:  # adapters start at zero: the model starts at the base
            add_lora(tuned, self.cfg.lora_targets, self.cfg.lora_rank)
        m = self.cfg.tune_steps
        if 0 < m < self.cfg.steps:  # steps K - m .. K - 1 run at t <= timesteps[K - m]
            t_max = sampler.timesteps[self.cfg.steps - m]
            sampler.denoiser = LateStepDenoiser(tuned, ref.denoiser, t_max)
        unused = QuadraticPotential(torch.zeros(1), torch.eye(1))  # Objective wants one
        obj = Objective(self.reward, lam=lam, reference=unused if lam > 0 else None)
        return FineTuner(
            sampler,
            obj,
            method=method,
            batch_size=self.cfg.batch_size,
            accumulate=self.cfg.accumulate if method != "implicit" else 1,
            lr=self.cfg.lr,
            reference=ref if lam > 0 else None,
            seed=self.cfg.seed * 100 + seed_offset,
        )

    @torch.no_grad()
    def evaluate(self, sampler) -> tuple[dict, torch.Tensor]:
        """Mean reward, classifier FID and the path KL to the base model, on eval_n
        samples drawn with the same seed every time."""
        from sampleopt.estimators import estimate_path_kl
        from sampleopt.metrics.classifier import classifier_fid

        gen = torch.Generator().manual_seed(10_000 + self.cfg.seed)
        x = torch.cat(
            [
                sampler.sample(min(64, self.cfg.eval_n - i), generator=gen)
                for i in range(0, self.cfg.eval_n, 64)
            ]
        )
        r = self.reward(x)
        ref = self.train_images[: max(self.cfg.eval_n, 1000)]
        kl, kl_se = estimate_path_kl(sampler, self.base_sampler, self.cfg.eval_n, gen)
        return {
            "path_kl": kl,
            "path_kl_se": kl_se,
            "reward_mean": float(r.mean()),
            "reward_se": float(r.std() / len(r) ** 0.5),
            "classifier_fid": classifier_fid(x, ref),
            "eval_n": len(x),
            "fid_reference_n": len(ref),
        }, x

    def train(self, run: str, tuner: FineTuner, *, updates=None, budget=None, ckpt=False):
        rows = []
        t0 = time.perf_counter()
        bar = tqdm(total=updates or budget, disable=not self.progress, desc=f"{self.name} {run}")
        while True:
            if updates is not None and tuner.updates >= updates:
                break
            if budget is not None and tuner.network_evals >= budget:
                break
            before = tuner.network_evals
            rec = tuner.step()
            rec.update(run=run, seconds=time.perf_counter() - t0)
            rows.append(rec)
            self.rd.log_metrics([rec])
            if self.writer is not None:
                for key in ("reward_mean", "value"):
                    self.writer.add_scalar(f"{run}/{key}", rec[key], tuner.updates)
            if run == "main" and self.cfg.eval_every and tuner.updates % self.cfg.eval_every == 0:
                ev, x = self.evaluate(tuner.sampler)
                self.rd.log_metrics([{"run": "eval", "update": tuner.updates, **ev}])
                image_grid(
                    self.rd.file(f"samples_update{tuner.updates}.png"),
                    x[:64],
                    title=f"after {tuner.updates} updates",
                )
                if self.writer is not None:
                    for key in ("reward_mean", "classifier_fid", "path_kl"):
                        self.writer.add_scalar(f"eval/{key}", ev[key], tuner.updates)
            bar.update(1 if updates is not None else tuner.network_evals - before)
            if ckpt and tuner.updates % self.cfg.checkpoint_every == 0:
                meta = {
                    "experiment": self.name,
                    "update": tuner.updates,
                    "config": to_dict(self.cfg),
                }
                self.rd.save_checkpoint(tuner.state_tensors(), meta)
        bar.close()
        return rows

    def run(self) -> dict:
        cfg = self.cfg
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.rd.file("tensorboard")))
        try:
            base_eval, x0 = self.evaluate(self.sampler())
            self.summary["base"] = base_eval
            image_grid(self.rd.file("samples_base.png"), x0[:64], title="base model")
            main = self.tuner(cfg.method, cfg.lam)
            if self.resume and self.rd.file("checkpoint.safetensors").exists():
                tensors, meta = load_checkpoint(self.rd.path)
                if meta.get("experiment") != self.name:
                    raise UsageError(f"checkpoint in {self.rd.path} is not from {self.name}")
                main.load_state_tensors(tensors)
                self.rd.keep_metrics(
                    lambda r: r.get("run") in ("main", "eval") and r["update"] <= main.updates
                )
            rows = self.train("main", main, updates=cfg.updates, ckpt=True)
            tuned_eval, x1 = self.evaluate(main.sampler)
            image_grid(self.rd.file("samples_tuned.png"), x1[:64], title=f"after {cfg.method}")
            self.summary.update(tuned=tuned_eval, network_evals=main.network_evals)
            curves = {
                cfg.method: ([r["network_evals"] for r in rows], [r["reward_mean"] for r in rows])
            }
            if cfg.compare:
                self.summary["compare"] = {}
                for i, method in enumerate(COMPARED):
                    t = self.tuner(method, cfg.lam, seed_offset=1 + i)
                    rr = self.train(f"compare-{method}", t, budget=main.network_evals)
                    ev, _ = self.evaluate(t.sampler)
                    self.summary["compare"][method] = {**ev, "updates": t.updates}
                    curves[f"compare: {method}"] = (
                        [r["network_evals"] for r in rr],
                        [r["reward_mean"] for r in rr],
                    )
            line_plot(
                self.rd.file("reward_vs_network_evals.png"),
                curves,
                xlabel="network evaluations",
                ylabel="batch mean reward",
                title=f"{self.name}: reward during training",
            )
            pareto = [(cfg.lam, tuned_eval)]
            for j, lam in enumerate(cfg.lam_sweep):
                t = self.tuner(cfg.method, lam, seed_offset=10 + j)
                self.train(f"lam-{lam}", t, updates=cfg.updates)
                ev, _ = self.evaluate(t.sampler)
                pareto.append((lam, ev))
            self.summary["lam_sweep"] = [{"lam": lam, **ev} for lam, ev in pareto]
            if len(pareto) > 1:
                pts = sorted(pareto, key=lambda p: p[1]["classifier_fid"])
                line_plot(
                    self.rd.file("pareto.png"),
                    {
                        "fine-tuned (lam labels in summary)": (
                            [p[1]["classifier_fid"] for p in pts],
                            [p[1]["reward_mean"] for p in pts],
                        ),
                        "base": ([base_eval["classifier_fid"]], [base_eval["reward_mean"]]),
                    },
                    xlabel="classifier FID (lower is closer to data)",
                    ylabel="mean reward",
                    title=f"{self.name}: reward against classifier FID across lam",
                )
            self.summary["status"] = "done"
        except (SampleoptError, KeyboardInterrupt) as exc:
            self.summary["status"] = "failed"
            self.summary["error"] = str(exc) or type(exc).__name__
            raise
        finally:
            self.writer.close()
            self.rd.write_json("summary.json", self.summary)
        self.rd.file("report.md").write_text(report(self.summary, cfg, self.name))
        return self.summary


def report(s: dict, cfg: MnistFinetuneConfig, name: str) -> str:
    b, t = s["base"], s["tuned"]
    m = cfg.tune_steps
    tuned_steps = f" (the last {m} fine-tuned, the earlier ones the base's)" if m else ""
    lines = [
        f"# {name}",
        "",
        f"Reward {cfg.reward}, method {cfg.method}, lam {cfg.lam}, K = {cfg.steps} "
        f"reverse-SDE steps{tuned_steps}, {cfg.updates} updates of {cfg.batch_size} "
        f"samples, Adam "
        f"lr {cfg.lr}, seed {cfg.seed}. Evaluation: {b['eval_n']} samples; classifier FID "
        f"against {b['fid_reference_n']} training images.",
        "",
        "| model | mean reward | classifier FID | path KL to the base |",
        "|---|---|---|---|",
        f"| base | {b['reward_mean']:.4f} ± {b['reward_se']:.4f} | {b['classifier_fid']:.1f} | 0 |",
        f"| fine-tuned | {t['reward_mean']:.4f} ± {t['reward_se']:.4f} | "
        f"{t['classifier_fid']:.1f} | {t['path_kl']:.2f} ± {t['path_kl_se']:.2f} |",
        "",
        f"Reward change: {100 * (t['reward_mean'] / b['reward_mean'] - 1):+.1f}%; FID ratio "
        f"{t['classifier_fid'] / b['classifier_fid']:.2f}.",
        "",
    ]
    if "compare" in s:
        lines += [
            f"## Equal budget ({s['network_evals']} network evaluations)",
            "",
            "| method | updates | mean reward | classifier FID | path KL |",
            "|---|---|---|---|---|",
        ]
        for m, e in s["compare"].items():
            lines.append(
                f"| {m} | {e['updates']} | {e['reward_mean']:.4f} ± {e['reward_se']:.4f} | "
                f"{e['classifier_fid']:.1f} | {e['path_kl']:.2f} |"
            )
        lines.append("")
    lines += ["![base](samples_base.png) ![tuned](samples_tuned.png)", ""]
    lines += ["![reward](reward_vs_network_evals.png)", ""]
    return "\n".join(lines)


def _run_as(name):
    def run(cfg, rd, progress=True, resume=False):
        return _Runner(cfg, rd, progress, resume, name).run()

    return run


MNIST_BRIGHTNESS = Experiment(
    name="mnist-brightness",
    description="fine-tune the shipped MNIST diffusion model for brightness with a path KL "
    "to the base (Marion et al. 5.2)",
    config_cls=MnistFinetuneConfig,
    run=_run_as("mnist-brightness"),
)


@dataclass
class MnistDigitConfig(MnistFinetuneConfig):
    reward: str = field(
        default="digit",
        metadata={"help": "brightness or digit", "choices": ("brightness", "digit")},
    )


MNIST_DIGIT = Experiment(
    name="mnist-digit",
    description="fine-tune the shipped MNIST diffusion model toward one digit (classifier "
    "probability reward) with a path KL to the base",
    config_cls=MnistDigitConfig,
    run=_run_as("mnist-digit"),
)
