"""Experiment ``bilevel-mnist``: choosing the KL strength of brightness fine-tuning of the
shipped MNIST model so that a classifier score is largest (docs/bilevel-mnist.md,
docs/bilevel.md).

Lower reward r2 = brightness; upper reward r1 = the shipped classifier's probability of
``digit`` (default 8; ``upper=confidence``: its largest class probability). The lower
level is the tilted base law p*_lam = p_base exp(r2 / lam) / Z, realised without training
by importance weights over base samples:

1. **pools** (units of 512 samples, a checkpoint after each): ``pool`` base samples for
   the methods' solves and ``heldout`` independent ones for scoring their choices, from
   the reverse-SDE sampler with ``steps`` steps (the fine-tuning experiments' sampler);
   both rewards and the classifier features are computed once;
2. **methods** (a unit per (method, run)): each lower-level solve is a random subset of
   ``subset`` samples of the pool (drawn without replacement from the run's generator),
   importance-weighted; every method has ``budget`` solves;
3. **scoring**: each chosen lam on the held-out pool: E[r1] and E[r2] with standard
   errors, the effective sample size, the KL to the base, and the classifier FID of
   ``eval_n`` draws from the weighted held-out pool against the first 1000 training
   images (the fine-tuning experiments' FID convention).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import torch

from sampleopt.algorithms.step_size import StepSize
from sampleopt.bilevel import (
    SEARCHES,
    CollapsedWeightsWarning,
    ImportanceLowerLevel,
    KLStrengthBilevel,
    KLStrengthProblem,
    PenaltySchedule,
    Tilt,
    search,
)
from sampleopt.config import SEED_MAX
from sampleopt.errors import UsageError
from sampleopt.experiments.base import Experiment
from sampleopt.experiments.bilevel_mnist_report import report_markdown, write_plots
from sampleopt.experiments.runner import Runner
from sampleopt.rundir import RunDir

METHODS = ("bilevel", "bilevel-limit", *SEARCHES)
UPPERS = ("digit", "confidence")
CHUNK = 512
CURVE = torch.exp(torch.linspace(math.log(0.005), math.log(10.0), 60)).tolist()


@dataclass
class BilevelMnistConfig:
    seed: int = field(default=0, metadata={"help": "random seed", "min": 0, "max": SEED_MAX})
    upper: str = field(default="digit", metadata={"help": "upper reward r1", "choices": UPPERS})
    digit: int = field(default=8, metadata={"help": "upper=digit: the class", "min": 0, "max": 9})
    pool: int = field(default=4096, metadata={"help": "base samples for the solves", "min": 2})
    heldout: int = field(default=2048, metadata={"help": "base samples for scoring", "min": 2})
    steps: int = field(default=20, metadata={"help": "reverse-SDE sampling steps", "min": 1})
    subset: int = field(default=2048, metadata={"help": "pool samples per solve", "min": 2})
    methods: tuple[str, ...] = field(
        default=METHODS, metadata={"help": "methods compared", "choices": METHODS}
    )
    runs: int = field(default=5, metadata={"help": "runs per method", "min": 1, "max": 999})
    budget: int = field(default=30, metadata={"help": "lower-level solves per run", "min": 2})
    low: float = field(default=0.01, metadata={"help": "smallest lam searched", "min": 1e-6})
    high: float = field(default=1.0, metadata={"help": "largest lam searched", "min": 1e-6})
    lam0: float = field(default=0.3, metadata={"help": "bilevel: the first lam", "min": 1e-6})
    optimizer: str = field(
        default="adam",
        metadata={"help": "bilevel: optimiser of log lam", "choices": ("adam", "sgd")},
    )
    lr: float = field(
        default=0.3, metadata={"help": "bilevel: step on log lam, / sqrt(k + 1)", "min": 1e-8}
    )
    gamma0: float = field(default=10.0, metadata={"help": "bilevel: first gamma", "min": 1e-8})
    growth: float = field(default=1.3, metadata={"help": "bilevel: gamma growth", "min": 1.0})
    gamma_max: float = field(default=1e4, metadata={"help": "bilevel: largest gamma", "min": 1e-8})
    eval_n: int = field(default=256, metadata={"help": "samples per classifier FID", "min": 2})

    def check(self):
        if self.subset > self.pool:
            raise UsageError(
                f"config key 'subset' must be <= pool ({self.pool}), got {self.subset}"
            )
        if not self.methods or len(set(self.methods)) != len(self.methods):
            raise UsageError(f"config key 'methods' needs distinct methods, got {self.methods}")
        if not self.low < self.lam0 < self.high:
            raise UsageError(
                f"config keys need low < lam0 < high, got {self.low}, {self.lam0}, {self.high}"
            )


class _Runner(Runner):
    def __init__(self, cfg: BilevelMnistConfig, rd: RunDir, progress: bool, resume: bool):
        super().__init__("bilevel-mnist", cfg, rd, progress=progress, resume=resume)
        self.units = [(m, r) for m in cfg.methods for r in range(cfg.runs)]
        U, B, total = len(self.units), cfg.budget, cfg.pool + cfg.heldout
        self.images = torch.empty(0, 1, 28, 28)
        self.results = {
            "lam": torch.full((U,), math.nan, dtype=torch.float64),
            "path": torch.full((U, B), math.nan, dtype=torch.float64),
            "estimate": torch.full((U, B), math.nan, dtype=torch.float64),
            "ess": torch.full((U, B), math.nan, dtype=torch.float64),
            "seconds": torch.full((U,), math.nan, dtype=torch.float64),
        }
        self.pool_seconds, self.done = 0.0, 0
        saved = self.read_checkpoint()
        if saved is not None:
            tensors, meta = saved
            self.images = tensors["images"].clone()
            self.pool_seconds, self.done = float(meta["pool_seconds"]), int(tensors["done"])
            if self.images.shape[0] > total:
                raise UsageError(f"checkpoint in {rd.path} does not match its config (images)")
            self.restore(self.results, tensors)
            n_images = self.images.shape[0]

            def keep(row):  # the rows of the chunks and units the checkpoint holds
                if "chunk" in row:
                    return row["chunk"] * CHUNK < n_images
                return row.get("unit", U) < self.done

            self.rd.keep_metrics(keep)
        self.progress_bar = self.bar(-(-total // CHUNK) + U, unit="unit")
        self.progress_bar.update(-(-self.images.shape[0] // CHUNK) + self.done)

    def checkpoint(self) -> None:
        self.save_checkpoint(
            {"images": self.images, "done": torch.tensor(self.done), **self.results},
            pool_seconds=self.pool_seconds,
        )

    # -- phase 1: the pools --------------------------------------------------------------
    def make_pools(self) -> None:
        from sampleopt.models.pretrained import load_base_model
        from sampleopt.samplers import ReverseSDESampler

        cfg, total = self.cfg, self.cfg.pool + self.cfg.heldout
        base = load_base_model("mnist")
        sampler = ReverseSDESampler(
            base.denoiser, base.schedule, cfg.steps, data_shape=base.data_shape
        )
        while self.images.shape[0] < total:
            c = self.images.shape[0] // CHUNK
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + c)
            t0 = time.perf_counter()
            with torch.no_grad():
                n = min(CHUNK, total - self.images.shape[0])
                x = torch.cat(
                    [sampler.sample(min(128, n - i), generator=gen) for i in range(0, n, 128)]
                )
            self.images = torch.cat([self.images, x])
            self.pool_seconds += time.perf_counter() - t0
            self.rd.log_metrics([{"chunk": c, "samples": self.images.shape[0]}])
            self.checkpoint()
            self.progress_bar.update(1)

    def rewards(self) -> None:
        from sampleopt.data import mnist
        from sampleopt.metrics.classifier import classifier_features, load_digit_classifier
        from sampleopt.objectives import Brightness

        clf = load_digit_classifier().eval()
        with torch.no_grad():
            probs = torch.cat([clf(b).softmax(1) for b in self.images.split(512)]).double()
        r1 = probs[:, self.cfg.digit] if self.cfg.upper == "digit" else probs.max(1).values
        self.r1, self.r2 = r1, Brightness()(self.images).double()
        self.features = classifier_features(self.images, clf).double()
        self.reference = classifier_features(mnist("train")[0][:1000], clf).double()

    # -- phase 2: the methods ------------------------------------------------------------
    def one(self, u: int) -> None:
        cfg, res = self.cfg, self.results
        method, run = self.units[u]
        P = cfg.pool
        r1, r2 = self.r1[:P], self.r2[:P]

        def draw(n, generator):  # a solve: n pool rows, without replacement
            return torch.randperm(P, generator=generator)[:n]

        problem = KLStrengthProblem(
            lambda i: r1[i], lambda i: r2[i], ImportanceLowerLevel(draw, n=cfg.subset)
        )
        seed = (cfg.seed * 1_000_003 + run) % 2**62
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CollapsedWeightsWarning)  # ESS is recorded
            if method in SEARCHES:
                out = search(method, problem, cfg.budget, low=cfg.low, high=cfg.high, seed=seed)
                lam, rows = out.lam, [(t["lam"], t["upper"], t["ess"]) for t in out.trials]
            else:
                gamma0 = math.inf if method == "bilevel-limit" else cfg.gamma0
                alg = KLStrengthBilevel(
                    problem, lam0=cfg.lam0, lr=StepSize(cfg.lr, "inverse_sqrt"),
                    optimizer=cfg.optimizer,
                    penalty=PenaltySchedule(gamma0, cfg.growth, cfg.gamma_max),
                    lam_min=cfg.low, lam_max=cfg.high, seed=seed,
                )  # fmt: skip
                rows = [(r["lam"], r["upper"], r["ess_star"]) for r in alg.run(cfg.budget)]
                lam = alg.averaged_lam()
        res["seconds"][u] = time.perf_counter() - t0
        res["lam"][u] = lam
        for i, (v, e, s) in enumerate(rows):
            res["path"][u, i], res["estimate"][u, i], res["ess"][u, i] = v, e, s
        self.rd.log_metrics(
            [{"unit": u, "method": method, "run": run, "lam": lam, "solves": problem.solves,
              "seconds": round(float(res["seconds"][u]), 3)}]
        )  # fmt: skip

    # -- phase 3: scoring ----------------------------------------------------------------
    def score(self, lam: float, seed: int) -> dict:
        """The held-out pool reweighted to p*_lam (lam = inf: the base)."""
        from sampleopt.metrics.distances import frechet_distance_from_features

        P, cfg = self.cfg.pool, self.cfg
        r1, r2, f = self.r1[P:], self.r2[P:], self.features[P:]
        h = torch.zeros_like(r2) if math.isinf(lam) else r2 / lam
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CollapsedWeightsWarning)
            tilt = Tilt(h)
        m1, se1, _ = tilt.mean(r1)
        m2, se2, _ = tilt.mean(r2)
        gen = torch.Generator().manual_seed(seed)
        idx = torch.multinomial(tilt.w, cfg.eval_n, replacement=True, generator=gen)
        live = (f != 0).any(0) | (self.reference != 0).any(0)
        with warnings.catch_warnings():
            # draws repeat when the ESS is small; the covariance is then singular, which
            # is what `fid_distinct` reports
            warnings.filterwarnings("ignore", message="Matrix is singular")
            fid = frechet_distance_from_features(f[idx][:, live], self.reference[:, live])
        return {"lam": lam, "upper": m1, "upper_se": se1, "brightness": m2,
                "brightness_se": se2, "ess": tilt.ess, "kl": tilt.kl()[0], "fid": fid,
                "fid_distinct": int(idx.unique().numel())}  # fmt: skip

    def execute(self) -> None:
        with self.timed("pools"):
            self.make_pools()
        with self.timed("rewards"):
            self.rewards()
        with self.timed("methods"):
            for u in range(self.done, len(self.units)):
                self.one(u)
                self.done = u + 1
                self.checkpoint()
                self.progress_bar.update(1)
        with self.timed("scoring"):
            self.summarise()

    def summarise(self) -> None:
        cfg, res = self.cfg, self.results
        scored = [self.score(float(res["lam"][u]), 7 + u) | {"method": m, "run": r}
                  for u, (m, r) in enumerate(self.units)]  # fmt: skip
        curve = [self.score(lam, 99) for lam in CURVE]
        healthy = [c for c in curve if c["ess"] >= 0.1 * cfg.heldout]
        table = []
        for m in cfg.methods:
            rows = [s for s in scored if s["method"] == m]
            us = [u for u, (mm, _) in enumerate(self.units) if mm == m]
            row = {
                "method": m,
                "solves": cfg.budget,
                "seconds_mean": float(res["seconds"][us].mean()),
            }
            for k in ("lam", "upper", "brightness", "ess", "kl", "fid"):
                v = torch.tensor([s[k] for s in rows], dtype=torch.float64)
                row[k + "_mean"] = float(v.mean())
                row[k + "_se"] = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else math.nan
            table.append(row)
        self.summary.update({
            "table": table, "runs": scored, "curve": curve, "base": self.score(math.inf, 98),
            "heldout_best": max(healthy, key=lambda c: c["upper"]) if healthy else None,
            "pool_seconds": round(self.pool_seconds, 1), "units_done": self.done,
            "upper_reward": self.upper_name(),
        })  # fmt: skip

    def upper_name(self) -> str:
        return (
            f"P(digit {self.cfg.digit})" if self.cfg.upper == "digit" else "max class probability"
        )

    def report(self) -> str:
        return report_markdown(self.summary, self.cfg, write_plots(self))


def run(cfg: BilevelMnistConfig, rd: RunDir, progress: bool = True, resume: bool = False):
    """Run bilevel-mnist into ``rd`` (resume: bit-identical continuation)."""
    return _Runner(cfg, rd, progress, resume).run()


BILEVEL_MNIST = Experiment(
    name="bilevel-mnist",
    description="KL strength of MNIST brightness tuning chosen for a classifier score: "
    "penalty hypergradient vs grid, random and Bayesian search at equal lower-level solves",
    config_cls=BilevelMnistConfig,
    run=run,
)
