"""Experiment ``guidance-mnist``: training-free gradient guidance of the shipped MNIST
model toward brightness and toward a digit, against reward fine-tuning
(docs/guidance-mnist.md; Guo et al. 2024, Algorithm 1; docs/guidance.md).

The shipped ``mnist`` UNet samples with the reverse-SDE sampler (K = 20 steps), the
evaluation of the fine-tuning experiments (docs/mnist-finetune.md): ``eval_n`` = 256
samples, their mean reward and classifier FID against the first 1000 training images.
For each reward (``brightness``; ``digit``, the shipped classifier's probability of
``digit``, the reward of ``mnist-digit``):

1. **base**: z_0, ``eval_n`` unguided samples (round 0 of
   :class:`~sampleopt.GuidedOptimization`), and the fine-tuning experiments' own base
   evaluation set (the same sampler, seed 10_000 + seed): two independent base sets
   whose difference in reward and FID is the noise floor of the comparison;
2. **one unit per (guidance, strength)**: ``rounds`` rounds of Algorithm 1 from z_0.
   Round k: g_i = grad r(z_k,i) (autograd), y_i = g_i^T z_k,i + delta (the paper's
   linear target, eq. (8)), then ``eval_n`` guided samples, sample i steered by
   (g_i, y_i) with :class:`~sampleopt.guidance.NaiveGuidance` (G of Proposition 3) or
   :class:`~sampleopt.guidance.LookAheadGuidance` (G_loss of Definition 1) times
   ``strength``. Each round is evaluated: reward, classifier FID, the fraction the
   classifier reads as ``digit``, network forward and backward rows, wall time.

``noise=same`` (the default) draws every round with round 0's noise, so guided sample i
is a refinement of z_0,i and its target (g_i, y_i), a first-order model of r around
z_k,i, is about the image it steers. ``noise=fresh`` is fresh noise each round:
each round new noise, so sample i is steered by the gradient of an unrelated earlier
sample (harmless for brightness, whose gradient is nearly the same for every image;
useless for a classifier's gradient, which is local).

One unit of work is one base set or one (reward, guidance, strength) setting; a
checkpoint is committed after each (results and every base set z_0), so a kill loses at
most the unit in progress, and a resumed run ends bit-identical to an uninterrupted one
(every setting of a reward starts from the same z_0 and draws from generators seeded by
(seed, reward, round)). A setting whose guided sampling turns non-finite is recorded as
diverged, not as a failure of the run.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from sampleopt.algorithms.guided import GuidedOptimization
from sampleopt.config import SEED_MAX, check_memory
from sampleopt.errors import NonFiniteError, UsageError
from sampleopt.experiments.base import Experiment
from sampleopt.experiments.guidance_mnist_report import report_markdown, write_plots
from sampleopt.experiments.runner import Runner
from sampleopt.guidance.denoiser import GuidedDenoiser
from sampleopt.guidance.terms import GUIDANCES, make_guidance
from sampleopt.models.pretrained import load_base_model
from sampleopt.objectives import Brightness, DigitProbability
from sampleopt.plots import image_grid
from sampleopt.rundir import RunDir
from sampleopt.samplers import ReverseSDESampler

REWARDS = ("brightness", "digit")
FID_REFERENCE_N = 1000  # training images of the classifier FID (as in mnist-finetune)


@dataclass
class GuidanceMnistConfig:
    seed: int = field(default=0, metadata={"help": "random seed", "min": 0, "max": SEED_MAX})
    rewards: tuple[str, ...] = field(
        default=REWARDS, metadata={"help": "rewards guided toward", "choices": REWARDS}
    )
    digit: int = field(default=3, metadata={"help": "the digit of reward=digit", "min": 0})
    guidances: tuple[str, ...] = field(
        default=tuple(GUIDANCES),
        metadata={"help": "guidance terms compared", "choices": tuple(GUIDANCES)},
    )
    brightness_strengths: tuple[float, ...] = field(
        default=(10.0, 30.0, 100.0, 300.0),
        metadata={"help": "guidance strengths swept for brightness", "min": 0.0},
    )
    digit_strengths: tuple[float, ...] = field(
        default=(0.3, 1.0, 3.0, 10.0),
        metadata={"help": "guidance strengths swept for the digit", "min": 0.0},
    )
    brightness_delta: float = field(
        default=0.05, metadata={"help": "delta of the target y = g^T z + delta (brightness)"}
    )
    digit_delta: float = field(
        default=0.5, metadata={"help": "delta of the target y = g^T z + delta (digit)"}
    )
    sigma_y: float = field(
        default=0.1, metadata={"help": "sigma_y of the guidance terms", "min": 1e-6}
    )
    rounds: int = field(
        default=2, metadata={"help": "rounds of Algorithm 1 per setting", "min": 1, "max": 100}
    )
    noise: str = field(
        default="same",
        metadata={
            "help": "same: every round redraws with round 0's noise (a refinement of each "
            "sample); fresh: new noise each round (fresh noise each round)",
            "choices": ("same", "fresh"),
        },
    )
    steps: int = field(default=20, metadata={"help": "K: reverse-SDE steps", "min": 1})
    eval_n: int = field(
        default=256, metadata={"help": "samples per setting (and per evaluation)", "min": 2}
    )

    def strengths(self, reward: str) -> tuple[float, ...]:
        return self.brightness_strengths if reward == "brightness" else self.digit_strengths

    def delta(self, reward: str) -> float:
        return self.brightness_delta if reward == "brightness" else self.digit_delta

    def check(self):
        for key in ("rewards", "guidances", "brightness_strengths", "digit_strengths"):
            v = getattr(self, key)
            if key in ("rewards", "guidances") and not v:
                raise UsageError(f"config key {key!r} needs at least one value")
            if len(set(v)) != len(v):
                raise UsageError(f"config key {key!r} has a repeated value: {v}")
        for r in self.rewards:
            if not self.strengths(r):
                raise UsageError(f"config key '{r}_strengths' needs at least one value")
            if not math.isfinite(self.delta(r)):
                raise UsageError(f"config key '{r}_delta' must be finite, got {self.delta(r)}")
        if self.digit > 9:
            raise UsageError(f"config key 'digit' must be in 0 .. 9, got {self.digit}")
        # look-ahead keeps one step's UNet activations for all eval_n samples (about
        # 3 MB an image), plus the stored sample sets
        check_memory("eval_n", self.eval_n * (3e6 + 4 * 784 * 8))


class _Runner(Runner):
    """One guidance-mnist experiment, in the shared runner skeleton."""

    def __init__(self, cfg: GuidanceMnistConfig, rd: RunDir, progress: bool, resume: bool):
        super().__init__("guidance-mnist", cfg, rd, progress=progress, resume=resume)
        from sampleopt.data import mnist

        self.base = load_base_model("mnist")
        self.base.denoiser.requires_grad_(False)
        self.reference = mnist("train")[0][:FID_REFERENCE_N]
        self.units: list[tuple] = []
        for reward in cfg.rewards:
            self.units.append((reward, "base", 0.0))
            self.units += [(reward, g, s) for g in cfg.guidances for s in cfg.strengths(reward)]
        self.results: list[dict] = []
        self.z0: dict[str, torch.Tensor] = {}
        saved = self.read_checkpoint()
        if saved is not None:
            tensors, meta = saved
            self.results = list(meta["results"])
            self.z0 = {k[3:]: v.clone() for k, v in tensors.items() if k.startswith("z0.")}
            done = len(self.results)
            self.rd.keep_metrics(lambda row: row.get("unit", len(self.units)) < done)
        self.rewards = {
            r: Brightness() if r == "brightness" else DigitProbability(cfg.digit)
            for r in cfg.rewards
        }
        self.progress_bar = self.bar(len(self.units), unit="setting")
        self.progress_bar.update(len(self.results))

    # -- pieces --------------------------------------------------------------------------
    def sampler(self, guidance: str, strength: float) -> ReverseSDESampler:
        b = self.base
        term = make_guidance(guidance, strength=strength, sigma_y=self.cfg.sigma_y)
        guided = GuidedDenoiser(b.denoiser, b.schedule, term)
        return ReverseSDESampler(guided, b.schedule, self.cfg.steps, data_shape=b.data_shape)

    def optimizer(self, reward: str, guidance: str, strength: float) -> GuidedOptimization:
        seed = self.cfg.seed * 100 + REWARDS.index(reward)
        return GuidedOptimization(
            self.sampler(guidance, strength),
            self.rewards[reward],
            delta=self.cfg.delta(reward),
            batch_size=self.cfg.eval_n,
            noise=self.cfg.noise,
            seed=seed,
        )

    @torch.no_grad()
    def evaluate(self, reward: str, x: torch.Tensor) -> dict:
        """Mean reward (± its standard error), classifier FID against the reference
        images, the fraction read as ``digit``; non-finite samples give NaN rows."""
        from sampleopt.metrics.classifier import class_histogram, classifier_fid

        if not bool(torch.isfinite(x).all()):
            return {"reward_mean": math.nan, "reward_se": math.nan, "classifier_fid": math.nan}
        r = self.rewards[reward](x).double()
        counts, _ = class_histogram(x)
        return {
            "reward_mean": float(r.mean()),
            "reward_se": float(r.std() / math.sqrt(len(r))),
            "classifier_fid": classifier_fid(x, self.reference),
            "digit_fraction": float(counts[self.cfg.digit]) / len(x),
            "max_abs_pixel": float(x.abs().max()),
        }

    def base_unit(self, reward: str) -> dict:
        """z_0 (round 0 of Algorithm 1) and the fine-tuning evaluation's base set."""
        cfg = self.cfg
        opt = self.optimizer(reward, cfg.guidances[0], 0.0)
        t0, c0 = time.perf_counter(), time.process_time()
        z0 = opt.start()
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        self.z0[reward] = z0.clone()
        gen = torch.Generator().manual_seed(10_000 + cfg.seed)  # as mnist-finetune evaluates
        plain = self.sampler(cfg.guidances[0], 0.0)
        with torch.no_grad():
            x = torch.cat(
                [
                    plain.sample(min(64, cfg.eval_n - i), generator=gen)
                    for i in range(0, cfg.eval_n, 64)
                ]
            )
        image_grid(self.rd.file(f"samples_{reward}_base.png"), z0[:64], title="base model (z_0)")
        return {
            "z0": self.evaluate(reward, z0),
            "finetune_eval_set": self.evaluate(reward, x),
            "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu, 3),
            "forward_rows": cfg.eval_n * cfg.steps,
        }

    def setting(self, u: int, reward: str, guidance: str, strength: float) -> dict:
        """``rounds`` rounds of Algorithm 1 from z_0, evaluated after each."""
        cfg, n, K = self.cfg, self.cfg.eval_n, self.cfg.steps
        opt = self.optimizer(reward, guidance, strength)
        opt.load_state_tensors(
            {"round": torch.tensor(0), "z": self.z0[reward], "network_evals": torch.tensor(n * K)}
        )
        backward = n * K if opt.guided.guidance.needs_jacobian else 0
        rounds, status = [], "ok"
        t0, c0 = time.perf_counter(), time.process_time()
        for k in range(1, cfg.rounds + 1):
            try:
                opt.step()
            except NonFiniteError as exc:
                status = f"diverged in round {k}: {exc}"
                break
            row = {
                "round": k,
                **self.evaluate(reward, opt.z),
                "forward_rows": opt.network_evals - n * K,  # the guided rounds only
                "backward_rows": k * backward,
                "reward_gradients": k * n,
                "seconds": round(time.perf_counter() - t0, 3),
                "cpu_seconds": round(time.process_time() - c0, 3),
            }
            rounds.append(row)
            self.rd.log_metrics(
                [{"unit": u, "reward": reward, "guidance": guidance, "strength": strength, **row}]
            )
        if rounds and status == "ok":
            image_grid(
                self.rd.file(f"samples_{reward}_{guidance}_{strength:g}.png"),
                opt.z[:64],
                title=f"{reward}, {guidance} guidance, strength {strength:g}, round {cfg.rounds}",
            )
        return {"rounds": rounds, "status": status}

    # -- the experiment ----------------------------------------------------------------
    def execute(self) -> None:
        with self.timed("settings"):
            for u in range(len(self.results), len(self.units)):
                reward, guidance, strength = self.units[u]
                if guidance == "base":
                    res = self.base_unit(reward)
                    self.rd.log_metrics([{"unit": u, "reward": reward, "guidance": "base",
                                          **res["z0"]}])  # fmt: skip
                else:
                    res = self.setting(u, reward, guidance, strength)
                self.results.append(
                    {"reward": reward, "guidance": guidance, "strength": strength, **res}
                )
                tensors = {f"z0.{r}": z for r, z in self.z0.items()}
                self.save_checkpoint(tensors, results=self.results, done=u + 1)
                self.progress_bar.update(1)
        self.summary.update(
            {
                "settings": self.results,
                "eval_n": self.cfg.eval_n,
                "fid_reference_n": FID_REFERENCE_N,
                "seconds_total": round(
                    sum(
                        r["seconds"]
                        if r["guidance"] == "base"
                        else (r["rounds"][-1]["seconds"] if r["rounds"] else 0.0)
                        for r in self.results
                    ),
                    3,
                ),  # fmt: skip
            }
        )

    def report(self) -> str:
        return report_markdown(self.summary, self.cfg, write_plots(self))


def run(cfg: GuidanceMnistConfig, rd: RunDir, progress: bool = True, resume: bool = False):
    """Run guidance-mnist into ``rd``; with ``resume``, continue after the last finished
    setting (bit-identical to an uninterrupted run)."""
    return _Runner(cfg, rd, progress, resume).run()


GUIDANCE_MNIST = Experiment(
    name="guidance-mnist",
    description="training-free gradient guidance (naive, look-ahead) of the MNIST model "
    "toward brightness and a digit: reward against classifier FID and cost, next to "
    "fine-tuning (Guo et al. 2024)",
    config_cls=GuidanceMnistConfig,
    run=run,
)
