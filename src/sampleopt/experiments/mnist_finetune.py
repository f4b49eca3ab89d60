"""Experiments ``mnist-brightness`` and ``mnist-digit``: reward fine-tuning of the shipped
MNIST diffusion model (Marion et al. 2025, experiment 5.2).

The shipped ``mnist`` base model (a small UNet) samples with the reverse-SDE sampler
(Euler-Maruyama, K steps, noise at every step so that the path KL to the frozen base
model is finite; docs/methods.md section 1). The objective is -E[r] + lam * PathKL(base),
minimised with Adam by ``algorithm=queue`` (finite-time Implicit Diffusion,
:class:`~sampleopt.QueuedImplicitDiffusion`; it takes adjoint gradients along stored
paths) or ``algorithm=nested`` (:class:`~sampleopt.FineTuner`, with any ``estimator`` of
the registry but the covariance one). The default ``algorithm=auto`` is the queue for
the adjoint estimator (the default) and the nested loop for every other, so swapping the
estimator is one ``--set estimator=NAME``:

1. **main**: the configured algorithm and estimator for ``updates`` theta updates;
   samples before and after; mean reward and classifier FID (samples vs the training
   images, ``eval_n`` samples each time, so values are comparable within the run)
   before and after.
2. **compare** (``compare=true``): Implicit Diffusion (queue), nested-loop adjoint,
   DRaFT-1 (truncated) and score-function (DDPO-style REINFORCE), each until the main
   run's number of network evaluations; reward against network evaluations.
3. **lam** (``lam_sweep``): the main method at each lam: reward against classifier FID
   (a Pareto plot across lam).

Rewards: ``brightness`` (mean intensity in [0, 1], digits grow thicker) or ``digit``
(the shipped classifier's probability of ``digit``).

``tune_steps=M`` fine-tunes only the last M sampling steps
(:class:`~sampleopt.diffusion.LateStepDenoiser`): the earlier steps, which decide which
digit is drawn, stay the base model's, so the reward can change how a digit is drawn
but not which digits are drawn. The path KL then accrues on the late, low-noise steps
only, where a change costs more, so it needs a much smaller lam (docs/mnist-finetune.md).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import torch

from sampleopt.algorithms import FineTuner, QueuedImplicitDiffusion
from sampleopt.config import SEED_MAX, check_memory
from sampleopt.diffusion import LateStepDenoiser
from sampleopt.errors import UsageError
from sampleopt.estimators import ESTIMATORS, make_estimator
from sampleopt.experiments.base import Experiment
from sampleopt.experiments.mnist_report import pareto_plot, report, tilted_optimum
from sampleopt.experiments.runner import Runner
from sampleopt.models.pretrained import load_base_model
from sampleopt.objectives import Brightness, DigitProbability, Objective, PathKL
from sampleopt.plots import image_grid, line_plot
from sampleopt.rundir import RunDir
from sampleopt.samplers import ReverseSDESampler
from sampleopt.training.lora import add_lora

ALGORITHMS = ("auto", "queue", "nested")
# (label, algorithm, estimator) of the equal-budget comparison
COMPARED = (
    ("implicit", "queue", "adjoint"),
    ("adjoint", "nested", "adjoint"),
    ("truncated", "nested", "truncated"),
    ("score-function", "nested", "score-function"),
    ("adjoint-matching", "nested", "adjoint-matching"),
    ("tr-bsde", "nested", "tr-bsde"),
)
# the stochastic-optimal-control estimators' settings for the UNet (docs/soc.md section 6):
# a short score refit per round on a small batch of the round's transitions
ESTIMATOR_OPTIONS = {"tr-bsde": {"score_iterations": 2, "score_batch": 16}}


@dataclass
class MnistFinetuneConfig:
    seed: int = field(default=0, metadata={"help": "random seed", "min": 0, "max": SEED_MAX})
    reward: str = field(
        default="brightness",
        metadata={"help": "brightness or digit", "choices": ("brightness", "digit")},
    )
    digit: int = field(default=3, metadata={"help": "the digit of reward=digit", "min": 0})
    algorithm: str = field(
        default="auto",
        metadata={
            "help": "queue (finite-time Implicit Diffusion), nested (a fresh path per update) "
            "or auto (the queue for the adjoint estimator, else nested)",
            "choices": ALGORITHMS,
        },
    )
    estimator: str = field(
        default="adjoint",
        metadata={
            "help": "gradient estimator (the queue takes adjoint)",
            "choices": tuple(n for n in ESTIMATORS if n != "covariance"),
        },
    )
    steps: int = field(default=20, metadata={"help": "K: sampling steps", "min": 1})
    batch_size: int = field(default=8, metadata={"help": "samples per batch", "min": 2})
    accumulate: int = field(
        default=1, metadata={"help": "batches per update and process (algorithm=nested)", "min": 1}
    )
    updates: int = field(default=100, metadata={"help": "theta updates of the main run", "min": 1})
    lr: float = field(default=5e-5, metadata={"help": "Adam learning rate", "min": 0.0})
    lam: float = field(default=0.05, metadata={"help": "path-KL weight", "min": 0.0})
    eval_n: int = field(default=256, metadata={"help": "samples per evaluation", "min": 2})
    compare: bool = field(default=False, metadata={"help": "equal-budget method comparison"})
    compare_methods: tuple[str, ...] = field(
        default=tuple(m for m, _, _ in COMPARED),
        metadata={"help": "methods of the comparison", "choices": tuple(m for m, _, _ in COMPARED)},
    )
    optimum_n: int = field(
        default=1024,
        metadata={"help": "base samples for the tilted optimum of the comparison", "min": 2},
    )
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
        default=50,
        metadata={"help": "updates between evaluations of the main run (0: none)", "min": 0},
    )
    checkpoint_every: int = field(
        default=25, metadata={"help": "updates between checkpoints of the main run", "min": 1}
    )

    @property
    def resolved_algorithm(self) -> str:
        """``algorithm``, with ``auto`` resolved: the queue for the adjoint estimator."""
        if self.algorithm != "auto":
            return self.algorithm
        return "queue" if self.estimator == "adjoint" else "nested"

    def check(self):
        if self.algorithm == "queue" and self.estimator != "adjoint":
            raise UsageError(
                f"config key 'estimator' = {self.estimator!r} does not apply to algorithm=queue, "
                "which takes adjoint gradients along its stored paths; add --set "
                "algorithm=nested to use it"
            )
        if self.resolved_algorithm == "queue" and self.accumulate != 1:
            raise UsageError(
                "config key 'accumulate' applies to the nested loop only (the queue makes "
                f"one update per finished batch), got {self.accumulate}"
            )
        if self.lora_rank == 0 and self.lora_targets != MnistFinetuneConfig.lora_targets:
            raise UsageError("config key 'lora_targets' applies to lora_rank > 0 only")
        # the queue's stored paths, the network's activations (about 3 MB an image and
        # step when unrolled, one step's otherwise) and the evaluation samples
        image, act = 4 * 28 * 28, 3e6
        paths = self.batch_size * image * (self.steps + 1) * self.steps
        graph = self.batch_size * act * (self.steps if self.estimator == "unrolled" else 1)
        check_memory("batch_size, steps, eval_n", paths + graph + 8 * image * self.eval_n)
        if self.digit > 9:
            raise UsageError(f"config key 'digit' must be in 0 .. 9, got {self.digit}")
        if self.tune_steps > self.steps:
            raise UsageError(
                f"config key 'tune_steps' must be at most steps = {self.steps}, "
                f"got {self.tune_steps}"
            )


class _Runner(Runner):
    def __init__(self, cfg: MnistFinetuneConfig, rd: RunDir, progress: bool, resume: bool, name):
        super().__init__(name, cfg, rd, progress=progress, resume=resume)
        self.base = load_base_model("mnist")
        self.reward = Brightness() if cfg.reward == "brightness" else DigitProbability(cfg.digit)
        from sampleopt.data import mnist

        self.train_images = mnist("train")[0]
        self.base_kl = PathKL(self.sampler())  # the frozen base, for evaluations
        self.writer = None

    def sampler(self) -> ReverseSDESampler:
        b = self.base
        return ReverseSDESampler(
            copy.deepcopy(b.denoiser), b.schedule, self.cfg.steps, data_shape=b.data_shape
        )

    def tuner(self, algorithm: str, estimator: str, lam: float, seed_offset: int = 0):
        """The queue or the nested loop, on a fresh copy of the base model."""
        sampler = self.sampler()
        ref = copy.deepcopy(sampler).requires_grad_(False)
        tuned = sampler.denoiser
        if self.cfg.lora_rank > 0:  # adapters start at zero: the model starts at the base
            add_lora(tuned, self.cfg.lora_targets, self.cfg.lora_rank)
        m = self.cfg.tune_steps
        if 0 < m < self.cfg.steps:  # steps K - m .. K - 1 run at t <= timesteps[K - m]
            t_max = sampler.timesteps[self.cfg.steps - m]
            sampler.denoiser = LateStepDenoiser(tuned, ref.denoiser, t_max)
        obj = Objective(self.reward, lam=lam, divergence=PathKL(ref) if lam > 0 else None)
        kw = {"batch_size": self.cfg.batch_size, "lr": self.cfg.lr, "optimizer": "adam"}
        seed = self.cfg.seed * 100 + seed_offset
        if algorithm == "queue":
            return QueuedImplicitDiffusion(sampler, obj, make_estimator(estimator), seed=seed, **kw)
        est = make_estimator(estimator, **ESTIMATOR_OPTIONS.get(estimator, {}))
        return FineTuner(sampler, obj, est, accumulate=self.cfg.accumulate, seed=seed, **kw)

    @torch.no_grad()
    def evaluate(self, sampler) -> tuple[dict, torch.Tensor]:
        """Mean reward, classifier FID and the path KL to the base model, on eval_n
        samples drawn with the same seed every time."""
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
        kl, kl_se = self.base_kl.estimate(sampler, self.cfg.eval_n, gen)
        return {
            "path_kl": kl,
            "path_kl_se": kl_se,
            "reward_mean": float(r.mean()),
            "reward_se": float(r.std() / len(r) ** 0.5),
            "classifier_fid": classifier_fid(x, ref),
            "eval_n": len(x),
            "fid_reference_n": len(ref),
        }, x

    def train(self, run: str, tuner, *, updates=None, budget=None, ckpt=False):
        rows = []
        t0 = time.perf_counter()
        bar = self.bar(updates or budget, desc=f"{self.name} {run}")
        while True:
            if updates is not None and tuner.updates >= updates:
                break
            if budget is not None and tuner.network_evals >= budget:
                break
            before = tuner.network_evals
            (rec,) = tuner.run(1).rows()
            rec.update(run=run, seconds=time.perf_counter() - t0)
            rows.append(rec)
            self.rd.log_metrics([rec])
            if self.writer is not None:
                for key in ("reward_mean", "value"):
                    self.writer.add_scalar(f"{run}/{key}", rec[key], tuner.updates)
            if run == "main" and self.cfg.eval_every and tuner.updates % self.cfg.eval_every == 0:
                ev, x = self.evaluate(tuner.sampler)
                self.rd.log_metrics([{"run": "eval", "step": tuner.updates, **ev}])
                image_grid(
                    self.rd.file(f"samples_update{tuner.updates}.png"),
                    x[:64],
                    title=f"after {tuner.updates} updates",
                )
                if self.writer is not None:
                    for key in ("reward_mean", "classifier_fid", "path_kl"):
                        self.writer.add_scalar(f"eval/{key}", ev[key], tuner.updates)
            bar.update(1 if updates is not None else tuner.network_evals - before)
            last = updates is not None and tuner.updates >= updates
            if ckpt and (tuner.updates % self.cfg.checkpoint_every == 0 or last):
                self.save_checkpoint(tuner.state_tensors(), update=tuner.updates)
        bar.close()
        return rows

    def execute(self) -> None:
        cfg = self.cfg
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.rd.file("tensorboard")))
        self.on_close(self.writer.close)
        base_eval, x0 = self.evaluate(self.sampler())
        self.summary["base"] = base_eval
        image_grid(self.rd.file("samples_base.png"), x0[:64], title="base model")
        main = self.tuner(cfg.resolved_algorithm, cfg.estimator, cfg.lam)
        saved = self.read_checkpoint()
        if saved is not None:
            main.load_state_tensors(saved[0])
            self.rd.keep_metrics(
                lambda r: r.get("run") in ("main", "eval") and r["step"] <= main.updates
            )
        rows = self.train("main", main, updates=cfg.updates, ckpt=True)
        tuned_eval, x1 = self.evaluate(main.sampler)
        image_grid(self.rd.file("samples_tuned.png"), x1[:64], title=f"after {self.label}")
        self.summary.update(tuned=tuned_eval, network_evals=main.network_evals)
        curves = {
            self.label: ([r["network_evals"] for r in rows], [r["reward_mean"] for r in rows])
        }
        if cfg.compare:
            self.summary["compare"] = {}
            self.summary["optimum"] = tilted_optimum(
                self.sampler(), self.reward, cfg.lam, cfg.optimum_n, cfg.seed
            )
            for i, (method, algorithm, estimator) in enumerate(COMPARED):
                if method not in cfg.compare_methods:
                    continue
                t = self.tuner(algorithm, estimator, cfg.lam, seed_offset=1 + i)
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
            t = self.tuner(cfg.resolved_algorithm, cfg.estimator, lam, seed_offset=10 + j)
            self.train(f"lam-{lam}", t, updates=cfg.updates)
            ev, _ = self.evaluate(t.sampler)
            pareto.append((lam, ev))
        self.summary["lam_sweep"] = [{"lam": lam, **ev} for lam, ev in pareto]
        if len(pareto) > 1:
            pareto_plot(self.rd.file("pareto.png"), pareto, base_eval, self.name)

    @property
    def label(self) -> str:
        return f"{self.cfg.resolved_algorithm} / {self.cfg.estimator}"

    def report(self) -> str:
        return report(self.summary, self.cfg, self.name)


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
