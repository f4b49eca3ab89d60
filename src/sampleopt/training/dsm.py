"""Denoising score matching (Ho et al. 2020; Song et al. 2021) with an EMA of the
weights, checkpoints that resume exactly, TensorBoard scalars and PNG samples.

Each step draws a batch x_0, times t ~ U{1 .. T} and noise eps, forms
x_t = a_t x_0 + s_t eps and regresses the network's prediction onto its target
(eps, x_0, v or the score, as the model predicts), mean squared error. Synthetic
data sets give fresh samples every step; image sets are sampled with replacement
from their training split (the held-out split is never seen).

A checkpoint holds the model, its EMA, Adam's state, the step and the random
stream's state, so a resumed run ends bit-identical to an uninterrupted one on the
same machine. A NaN or inf loss stops training with a :class:`NonFiniteError`
before the optimiser step, and the last checkpoint stays as it was.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
from tqdm import tqdm

from sampleopt.config import SEED_MAX, to_dict
from sampleopt.data import DATASETS, get_dataset
from sampleopt.diffusion.parameterization import PREDICTIONS, from_eps
from sampleopt.diffusion.schedules import NOISE_SCHEDULES, schedule_config
from sampleopt.errors import NonFiniteError, UsageError
from sampleopt.models import MODELS, SmallUNet, TimeMLP
from sampleopt.models.registry import load_state_checked
from sampleopt.rundir import CHECKPOINT, PREVIOUS, RunDir, load_checkpoint
from sampleopt.samplers import DDPMSampler


def dsm_loss(denoiser, schedule, x0: torch.Tensor, generator=None) -> torch.Tensor:
    """The denoising score-matching loss on clean samples ``x0``: t ~ U{1 .. T}, eps ~
    N(0, I), x_t = a_t x0 + s_t eps, and the mean squared error of the denoiser's output
    against its target (eps, x0, v or the score, as it predicts)."""
    n = x0.shape[0]
    where = generator.device if generator is not None else x0.device
    t = torch.randint(1, schedule.num_train_steps + 1, (n,), generator=generator, device=where)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=where)
    t, eps = t.to(x0.device), eps.to(x0.device)
    a, s = schedule.a_s()
    view = (n,) + (1,) * (x0.ndim - 1)
    a_t, s_t = a[t].view(view).to(x0.dtype), s[t].view(view).to(x0.dtype)
    x_t = a_t * x0 + s_t * eps
    target = from_eps(eps, denoiser.prediction, x_t, a_t, s_t)
    return torch.mean((denoiser(x_t, t) - target) ** 2)


@dataclass
class TrainConfig:
    dataset: str = field(default="hex", metadata={"help": "data set", "choices": tuple(DATASETS)})
    model: str = field(default="mlp", metadata={"help": "network", "choices": tuple(MODELS)})
    schedule: str = field(
        default="cosine", metadata={"help": "noise schedule", "choices": tuple(NOISE_SCHEDULES)}
    )
    num_train_steps: int = field(default=1000, metadata={"help": "T", "min": 1})
    prediction: str = field(
        default="eps", metadata={"help": "what the network predicts", "choices": PREDICTIONS[:3]}
    )
    steps: int = field(default=4000, metadata={"help": "optimiser steps", "min": 1})
    batch_size: int = field(default=256, metadata={"help": "batch size", "min": 1})
    lr: float = field(default=1e-3, metadata={"help": "Adam learning rate", "min": 0.0})
    ema_decay: float = field(default=0.999, metadata={"help": "EMA decay", "min": 0.0})
    grad_clip: float = field(
        default=1.0, metadata={"help": "gradient-norm clip (0: off)", "min": 0.0}
    )
    width: int = field(
        default=128, metadata={"help": "MLP hidden width / UNet base width", "min": 1}
    )
    depth: int = field(default=3, metadata={"help": "MLP hidden layers", "min": 1})
    seed: int = field(default=0, metadata={"help": "random seed", "min": 0, "max": SEED_MAX})
    log_every: int = field(default=50, metadata={"help": "steps per metrics row", "min": 1})
    sample_every: int = field(default=1000, metadata={"help": "steps per sample plot", "min": 1})
    checkpoint_every: int = field(default=500, metadata={"help": "steps per checkpoint", "min": 1})
    sample_steps: int = field(
        default=50, metadata={"help": "DDPM steps of the sample plots", "min": 1}
    )

    def check(self):
        if self.ema_decay > 1:
            raise UsageError(f"config key 'ema_decay' must be <= 1, got {self.ema_decay}")
        if self.sample_steps > self.num_train_steps:
            raise UsageError("config key 'sample_steps' must be <= num_train_steps")
        images = get_dataset(self.dataset).labelled
        if images != (self.model == "unet"):
            want = "unet" if images else "mlp"
            raise UsageError(f"data set {self.dataset!r} needs model={want}")


#: the named training runs of the shipped base models (`sampleopt train NAME`)
PRESETS: dict[str, TrainConfig] = {
    "hex": TrainConfig(dataset="hex", steps=4000),
    "bimodal-1d": TrainConfig(dataset="bimodal-1d", steps=3000),
    "subspace": TrainConfig(dataset="subspace", steps=16000, width=256),
    "digits": TrainConfig(
        dataset="digits",
        model="unet",
        steps=3000,
        batch_size=64,
        lr=5e-4,
        width=32,
        sample_every=500,
    ),
    "mnist": TrainConfig(
        dataset="mnist",
        model="unet",
        steps=6000,
        batch_size=64,
        lr=5e-4,
        width=32,
        sample_every=500,
        checkpoint_every=250,
        log_every=25,
    ),
}


def build_model(cfg: TrainConfig, shape: tuple[int, ...]):
    if cfg.model == "mlp":
        return TimeMLP(shape[0], cfg.num_train_steps, cfg.width, cfg.depth, cfg.prediction)
    return SmallUNet(shape[0], cfg.num_train_steps, cfg.width, prediction=cfg.prediction)


class DSMTrainer:
    """Trains ``cfg.model`` on ``cfg.dataset`` into the run folder ``rd``."""

    def __init__(self, cfg: TrainConfig, rd: RunDir | None = None):
        self.cfg, self.rd = cfg, rd
        self.spec = get_dataset(cfg.dataset)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        torch.manual_seed(cfg.seed)  # parameter initialisation
        self.model = build_model(cfg, self.spec.shape)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.schedule = NOISE_SCHEDULES[cfg.schedule](cfg.num_train_steps)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.images = self.spec.load("train")[0] if self.spec.labelled else None
        self.step = 0

    # -- the objective -------------------------------------------------------------
    def batch(self) -> torch.Tensor:
        n = self.cfg.batch_size
        if self.images is None:
            return self.spec.load("train", n=n, generator=self.generator)
        idx = torch.randint(0, self.images.shape[0], (n,), generator=self.generator)
        return self.images[idx]

    def loss(self, x0: torch.Tensor) -> torch.Tensor:
        self.spec.check(x0)
        return dsm_loss(self.model, self.schedule, x0, self.generator)

    def train_step(self) -> float:
        loss = self.loss(self.batch())
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteError(
                f"training loss is {value} at step {self.step + 1}; stopped before the "
                "optimiser step, the last checkpoint is intact"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        with torch.no_grad():
            d = self.cfg.ema_decay
            for pe, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                pe.lerp_(p, 1 - d)
        self.step += 1
        return value

    # -- state ---------------------------------------------------------------------
    def model_config(self) -> dict:
        return {"kind": self.cfg.model, **self.model.config}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        out = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        out.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        for i, st in self.optimizer.state_dict()["state"].items():
            for k, v in st.items():
                out[f"optim.{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
        out["step"] = torch.tensor(self.step)
        out["generator_state"] = self.generator.get_state()
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], what: str) -> None:
        def part(prefix):
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

        load_state_checked(self.model, part("model."), what)
        load_state_checked(self.ema, part("ema."), what)
        opt = self.optimizer.state_dict()
        state: dict[int, dict] = {}
        for k, v in part("optim.").items():
            i, name = k.split(".", 1)
            state.setdefault(int(i), {})[name] = v.clone()
        opt["state"] = state
        self.optimizer.load_state_dict(opt)
        self.step = int(tensors["step"])
        self.generator.set_state(tensors["generator_state"])

    def checkpoint(self) -> None:
        meta = {
            "training": self.cfg.dataset,
            "step": self.step,
            "config": to_dict(self.cfg),
            "model_config": self.model_config(),
            "schedule": schedule_config(self.cfg.schedule, self.schedule),
            "data_shape": list(self.spec.shape),
        }
        self.rd.save_checkpoint(self.state_tensors(), meta)

    # -- the loop ------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, steps: int | None = None, seed: int = 0) -> torch.Tensor:
        sampler = DDPMSampler(
            self.ema, self.schedule, steps or self.cfg.sample_steps, data_shape=self.spec.shape
        )
        return sampler.sample(n, generator=torch.Generator().manual_seed(seed))

    def train(self, progress: bool = True) -> dict:
        from torch.utils.tensorboard import SummaryWriter

        cfg, rd = self.cfg, self.rd
        writer = SummaryWriter(str(rd.file("tensorboard")))
        bar = tqdm(
            total=cfg.steps, initial=self.step, disable=not progress, desc="train", unit="step"
        )
        window: list[float] = []
        t0 = time.perf_counter()
        start = self.step
        try:
            while self.step < cfg.steps:
                window.append(self.train_step())
                bar.update(1)
                if self.step % cfg.log_every == 0:
                    mean = sum(window) / len(window)
                    rd.log_metrics([{"step": self.step, "loss": mean}])
                    writer.add_scalar("loss", mean, self.step)
                    bar.set_postfix(loss=f"{mean:.4f}")
                    window = []
                if self.step % cfg.sample_every == 0 or self.step == cfg.steps:
                    self.plot_samples(writer)
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                    self.checkpoint()
        finally:
            bar.close()
            writer.close()
        seconds = time.perf_counter() - t0
        items = (self.step - start) * cfg.batch_size
        return {
            "steps": self.step,
            "seconds": seconds,
            "samples_per_second": items / seconds if seconds > 0 else None,
        }

    def plot_samples(self, writer) -> None:
        from sampleopt.plots import image_grid, sample_plot

        x = self.sample(64 if self.spec.labelled else 2000)
        path = self.rd.file(f"samples_{self.step:06d}.png")
        if self.spec.labelled:
            image_grid(path, x, title=f"{self.cfg.dataset}, step {self.step}")
            writer.add_images("samples", (x[:16] + 1) / 2, self.step)
        else:
            ref = self.spec.load("test", n=x.shape[0])
            sample_plot(path, x, ref, title=f"{self.cfg.dataset}, step {self.step}")


def resume_trainer(rd: RunDir, cfg: TrainConfig) -> DSMTrainer:
    """The trainer of ``rd`` at its last verified checkpoint, its metrics trimmed to it
    (all of them when it failed before its first checkpoint: it starts again)."""
    trainer = DSMTrainer(cfg, rd)
    if any(rd.file(n).exists() for n in (CHECKPOINT, PREVIOUS)):
        tensors, meta = load_checkpoint(rd.path)
        trainer.load_state_tensors(tensors, f"checkpoint in {rd.path}")
    done = trainer.step
    rd.keep_metrics(lambda r: r.get("step", 0) <= done)
    return trainer
