"""A comparison task made concrete: the base model loaded, the frozen reference chain,
the reward and the objective every method is scored by (docs/leaderboard.md).

**The last step of DDPM.** With the posterior variance DDPM's last step, to clean data
(t = 0), adds no noise, so any change of its mean makes the path KL infinite and
:class:`~sampleopt.PathKL` refuses the chain. A method must then keep the base's last
step; the comparison therefore tunes the first K - 1 steps (:class:`NoisyPrefix`, every
one noisy) and counts the base's deterministic last step as part of the reward:
r'(x_{K-1}) = r(m_base(x_{K-1}, K - 1)). The path KL is unchanged (the identical last
step adds nothing) and so is the optimum: x_{K-1} of the base is memoryless too, and the
tilt of its law by exp(r' / lam) pushes forward to the tilt of x_K's. Samplers with noise
at every step (the reverse SDE of ``mnist``) are used as they are.

Every method is scored on the same held-out draws (:meth:`Problem.evaluate`): x_0 and
the noise come from one seeded generator (common random numbers), and per path the
running KL cost sum_k |m(x_k) - m_base(x_k)|^2 / (2 s_k^2) and the reward give the
per-path objective -r + lam * kl, whose mean and standard error are J's. The samples'
features give the Frechet distance to the optimum p* (the comparison's quality
metric).
"""

from __future__ import annotations

import copy
import math

import torch

from sampleopt.compare.tasks import Task
from sampleopt.models.pretrained import load_base_model
from sampleopt.objectives import Objective, PathKL
from sampleopt.objectives.divergences import is_deterministic
from sampleopt.samplers import SAMPLERS
from sampleopt.samplers.chain import GaussianChain


class NoisyPrefix(GaussianChain):
    """The first K - 1 steps of ``chain`` (whose last step is deterministic);
    :meth:`finish` applies that last step."""

    def __init__(self, chain: GaussianChain):
        super().__init__()
        self.chain = chain
        self.num_steps = chain.num_steps - 1
        self.memoryless = bool(getattr(chain, "memoryless", False))

    def mean(self, x, k):
        return self.chain.mean(x, k)

    def mean_batched(self, xs, ks):
        return self.chain.mean_batched(xs, ks)

    def noise_scale(self, k):
        return self.chain.noise_scale(k)

    def linear_coefficient(self, k):
        return self.chain.linear_coefficient(k)

    def sample_x0(self, n, generator=None):
        return self.chain.sample_x0(n, generator)

    @property
    def state_shape(self) -> tuple[int, ...]:
        return self.chain.state_shape

    def times(self) -> list[float]:
        """t_0 .. t_{K-1} of the chain's time grid (t = 1 - tau / T, 1 at clean data)."""
        T = self.chain.schedule.num_train_steps
        return [1 - tau / T for tau in self.chain.timesteps[:-1]]

    def finish(self, x: torch.Tensor) -> torch.Tensor:
        """The chain's deterministic last step."""
        return self.chain.mean(x, self.num_steps)


class _ThroughLastStep:
    """r(m_base(x, K - 1)): the reward of the sample the base's last step makes of x."""

    def __init__(self, reward, reference: NoisyPrefix):
        self.reward, self.reference = reward, reference

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.reward(self.reference.finish(x))


class Problem:
    """A task's base model, frozen reference chain, reward and objective (see the
    module docstring). ``chain(denoiser)`` builds the chain a method tunes or runs."""

    def __init__(self, task: Task):
        self.task = task
        self.base = load_base_model(task.base)
        self.lam = task.lam
        full = self._sampler(self.base.denoiser)
        self.trimmed = is_deterministic(full.noise_scale(full.num_steps - 1))
        self.reference = self.chain(copy.deepcopy(self.base.denoiser)).requires_grad_(False)
        self.raw_reward = task.reward()
        self.features = task.feature_map()
        self.reward = (
            _ThroughLastStep(self.raw_reward, self.reference) if self.trimmed else self.raw_reward
        )

    def _sampler(self, denoiser) -> GaussianChain:
        b, t = self.base, self.task
        return SAMPLERS[t.sampler](denoiser, b.schedule, t.steps, data_shape=b.data_shape)

    def full_sampler(self, denoiser) -> GaussianChain:
        """The task's sampler over ``denoiser``, all K steps."""
        return self._sampler(denoiser)

    def chain(self, denoiser) -> GaussianChain:
        """The chain that is tuned: the task's sampler, without a deterministic last step."""
        s = self._sampler(denoiser)
        return NoisyPrefix(s) if self.trimmed else s

    def tunable_chain(self) -> GaussianChain:
        """The chain over a fresh, trainable copy of the base network."""
        return self.chain(copy.deepcopy(self.base.denoiser).requires_grad_(True))

    def objective(self) -> Objective:
        return Objective(self.reward, lam=self.lam, divergence=PathKL(self.reference))

    @torch.no_grad()
    def evaluate(
        self, chain: GaussianChain, n: int, seed: int, chunk: int = 256, target: dict | None = None
    ) -> dict:
        """J, E[r] and the path KL of ``chain`` on n held-out paths drawn from ``seed``
        (the same paths' noise for every method), with standard errors; with ``target``
        (an optimum's dict with feature moments) also ``fd_star``, the Frechet distance
        of the samples' features to p*'s (biased upwards at small n, like FID: compare
        values at equal n)."""
        gen = torch.Generator().manual_seed(seed)
        ref, js, rs, kls, feats = self.reference, [], [], [], []
        for i in range(0, n, chunk):
            x = chain.sample_x0(min(chunk, n - i), gen)
            kl = x.new_zeros(x.shape[0], dtype=torch.float64)
            for k in range(chain.num_steps):
                m, s = chain.mean(x, k), chain.noise_scale(k)
                kl += PathKL.step_cost(m, ref.mean(x, k), s).double()
                x = m + s * torch.randn(x.shape, generator=gen, dtype=x.dtype)
            sample = ref.finish(x) if self.trimmed else x  # the base's last step, if kept
            r = self.raw_reward(sample).double()
            rs.append(r)
            kls.append(kl)
            js.append(-r + self.lam * kl)
            if target is not None:
                feats.append(self.features(sample))
        out = {"eval_n": n}
        for key, v in (("objective", js), ("reward", rs), ("kl", kls)):
            v = torch.cat(v)
            out[key] = float(v.mean())
            out[f"{key}_se"] = float(v.std()) / math.sqrt(len(v)) if len(v) > 1 else math.nan
        if target is not None:
            out["fd_star"] = fd_to(torch.cat(feats), target)
        return out


def fd_to(features: torch.Tensor, target: dict) -> float:
    """The Frechet distance between Gaussians fitted to ``features`` (n, d) and to the
    optimum's feature moments (``target["feature_mean"]``, ``["feature_cov"]``)."""
    import warnings

    import numpy as np
    from scipy.linalg import LinAlgWarning

    from sampleopt.metrics.distances import frechet_distance

    f = features.reshape(features.shape[0], -1).double().numpy()
    mean, cov = np.asarray(target["feature_mean"]), np.asarray(target["feature_cov"])
    with warnings.catch_warnings():  # p* of `subspace` has a singular covariance (rank 16)
        warnings.simplefilter("ignore", LinAlgWarning)
        return frechet_distance(f.mean(0), np.atleast_2d(np.cov(f, rowvar=False)), mean, cov)
