"""The comparison's tasks: a shipped base model, a reward and a KL strength lam, and the
exact or near-exact optimum of -E[r] + lam KL(p || p_base) (docs/leaderboard.md).

Every task uses the tilted-base-law set-up: the sampler the methods fine-tune is
memoryless (DDPM with the posterior variance, or the reverse SDE), so the optimum over
path laws is p_base exp(r / lam) / Z with the path KL equal to the terminal KL
(:mod:`sampleopt.compare.optimum`). DDPM's last step (to t = 0) adds no noise, so the
comparison tunes the first K - 1 steps and keeps the base's last step as part of the
reward (:mod:`sampleopt.compare.problem`); x_{K-1} is memoryless too, and the tilt of
its law pushes forward to the tilt of x_K's, so J* is the same. For the three synthetic
tasks p_base is taken to be
the data law, whose density is known (the shipped models are at their metrics' noise
floor, docs/base-models.md); for MNIST p_base is the model's own law, sampled.

* ``bimodal``: the 1-D model ``bimodal-1d`` (data 1/2 N(-3, 1) + 1/2 N(3, 1)),
  r(x) = -(x - 3)^2 / 2, lam = 1; quadrature (and a closed form: a Gaussian mixture
  tilted by a Gaussian stays one).
* ``hex``: the 2-D model ``hex`` (six N(c_i, I) on a hexagon of radius 4), the smooth
  reward of Implicit Diffusion's experiment 5.1, lam = 0.1; quadrature on a grid.
* ``subspace``: the 64-D model ``subspace`` (N(0, A A^T), d = 16), f1 = 10 - (theta^T x -
  3)^2 with a unit theta in span(A), lam = 1; closed form.
* ``mnist``: the MNIST model with the brightness reward, lam = 0.05, reverse SDE with 20
  steps; importance weights over base samples, with their effective sample size.

Every optimum also carries the mean and covariance of p* in the task's feature space
(the sample itself for the synthetic tasks; the MNIST classifier's 128 penultimate
features for ``mnist``), against which a method's samples get their Frechet distance
to p* ("FD to p*", docs/leaderboard.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sampleopt.compare.optimum import (
    Optimum,
    gaussian_quadratic_tilt,
    tilt_by_importance,
    tilt_on_grid,
)
from sampleopt.data import SubspaceGaussian
from sampleopt.data.toy import BIMODAL_MEANS, bimodal_1d_log_prob, hex_mixture_log_prob
from sampleopt.errors import UsageError
from sampleopt.objectives import Brightness, HexReward


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1)


def _classifier_features() -> Callable[[torch.Tensor], torch.Tensor]:
    """The MNIST classifier's (n, 128) penultimate features of images clamped to [-1, 1]."""
    from sampleopt.metrics.classifier import load_digit_classifier

    clf = load_digit_classifier().requires_grad_(False)

    def features(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return clf.features(x.detach().float().cpu().clamp(-1.0, 1.0)).double()

    return features


def _bimodal_reward(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x.reshape(x.shape[0], -1)[:, 0] - 3.0) ** 2


def _subspace_theta() -> torch.Tensor:
    """A unit vector in span(A) of the shipped subspace data, fixed by seed 0."""
    data = SubspaceGaussian(64, 16, seed=0, dtype=torch.float64)
    v = torch.randn(16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return data.A @ (v / v.norm())


class _F1:
    """f1(x) = 10 - (theta^T x - 3)^2 (per sample, in x's dtype)."""

    def __init__(self):
        self.theta = _subspace_theta()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return 10.0 - (x @ self.theta.to(x.dtype) - 3.0) ** 2


@dataclass(frozen=True)
class Task:
    """A comparison task (see the module docstring). ``reward()`` builds the per-sample
    reward; ``optimum(**options)`` computes the optimum (with p*'s feature moments);
    ``sampler`` and ``steps`` are the base sampler the methods fine-tune;
    ``features()`` builds the feature map of the Frechet distance to p* (None: the
    flattened sample)."""

    name: str
    base: str
    lam: float
    sampler: str
    steps: int
    description: str
    reward: Callable[[], Callable]
    optimum: Callable[..., Optimum]
    features: Callable[[], Callable] | None = None

    def feature_map(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """x (n, ...) -> features (n, d) for the Frechet distance to p*."""
        return self.features() if self.features is not None else _flat


def bimodal_optimum(points: int = 200_001) -> Optimum:
    x = torch.linspace(-20.0, 20.0, points, dtype=torch.float64)[:, None]
    return tilt_on_grid(
        bimodal_1d_log_prob(x), _bimodal_reward(x), 1.0, 40.0 / (points - 1), features=x
    )


def bimodal_closed_form(lam: float = 1.0) -> Optimum:
    """Each component N(m, 1) tilted by exp(-(x - 3)^2 / (2 lam)) is a Gaussian with weight
    Z_m = E[exp(-(x - 3)^2 / (2 lam))] = sqrt(lam / (lam + 1)) exp(-(m - 3)^2 / (2 (lam + 1)))."""
    zs, rewards = [], []
    for m in BIMODAL_MEANS:
        var = lam / (lam + 1.0)
        mean = var * (m + 3.0 / lam)
        zs.append(0.5 * math.sqrt(var) * math.exp(-((m - 3.0) ** 2) / (2 * (lam + 1.0))))
        rewards.append(-0.5 * ((mean - 3.0) ** 2 + var))
    z = sum(zs)
    reward = sum(zi * ri for zi, ri in zip(zs, rewards, strict=True)) / z
    means = [(lam / (lam + 1.0)) * (m + 3.0 / lam) for m in BIMODAL_MEANS]
    mean = sum(zi * mi for zi, mi in zip(zs, means, strict=True)) / z
    second = sum(zi * (mi**2 + var) for zi, mi in zip(zs, means, strict=True)) / z
    opt = Optimum(-lam * math.log(z), 0.0, reward, reward / lam - math.log(z), "closed form")
    f64 = torch.float64
    return opt.with_moments(torch.tensor([mean], dtype=f64), torch.tensor([[second - mean**2]]))


def hex_optimum(step: float = 0.02, half_width: float = 12.0) -> Optimum:
    ticks = torch.arange(-half_width, half_width + step / 2, step, dtype=torch.float64)
    gx, gy = torch.meshgrid(ticks, ticks, indexing="ij")
    x = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    reward = HexReward(smooth=True).double()
    with torch.no_grad():
        r = torch.cat([reward(b) for b in x.split(200_000)])
    return tilt_on_grid(hex_mixture_log_prob(x), r, 0.1, step * step, features=x)


def subspace_optimum() -> Optimum:
    """theta is a unit vector in span(A), so theta^T x = (A^T theta)^T z with
    u = A^T theta of norm 1. The tilt of z ~ N(0, I) by exp(-(u^T z - 3)^2 / lam) is
    Gaussian with precision I + (2 / lam) u u^T: covariance S = I - c u u^T with
    c = (2 / lam) / (1 + 2 / lam), mean (6 / lam) S u; x = A z maps them to A S A^T
    and A (6 / lam) S u."""
    lam = 1.0
    data = SubspaceGaussian(64, 16, seed=0, dtype=torch.float64)
    u = data.A.T @ _subspace_theta()
    cov_z = torch.eye(16, dtype=torch.float64) - (2 / lam) / (1 + 2 / lam) * torch.outer(u, u)
    mean_z = (6.0 / lam) * cov_z @ u
    opt = gaussian_quadratic_tilt(10.0, 1.0, 3.0, lam)
    return opt.with_moments(data.A @ mean_z, data.A @ cov_z @ data.A.T)


def mnist_optimum(pool: int = 4096, steps: int = 20, seed: int = 0) -> Optimum:
    """Importance weights over ``pool`` base samples of the reverse SDE (as
    scripts/mnist_tilt.py)."""
    from sampleopt.models.pretrained import load_base_model

    base = load_base_model("mnist")
    sampler = base.sampler("sde", steps)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        x = torch.cat(
            [sampler.sample(min(128, pool - i), generator=gen) for i in range(0, pool, 128)]
        )
        r = Brightness()(x)
    return tilt_by_importance(r, 0.05, features=_classifier_features()(x))


TASKS: dict[str, Task] = {
    t.name: t
    for t in (
        Task("bimodal", "bimodal-1d", 1.0, "ddpm", 50,
             "1-D bimodal model tilted toward its right mode, r = -(x - 3)^2 / 2",
             lambda: _bimodal_reward, bimodal_optimum),
        Task("hex", "hex", 0.1, "ddpm", 50,
             "2-D six-Gaussian model tilted by the smooth reward of experiment 5.1",
             lambda: HexReward(smooth=True), hex_optimum),
        Task("subspace", "subspace", 1.0, "ddpm", 50,
             "64-D subspace model, f1 = 10 - (theta^T x - 3)^2 with theta in the subspace",
             _F1, subspace_optimum),
        Task("mnist", "mnist", 0.05, "sde", 20,
             "MNIST model tilted toward brightness (importance weights on base samples)",
             Brightness, mnist_optimum, _classifier_features),
    )
}  # fmt: skip


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UsageError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]
