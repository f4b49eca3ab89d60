"""Score-function (REINFORCE) gradients: no gradient of the reward needed.

For a Gaussian chain the path density factorises into the steps'
N(x_{k+1}; m_theta(x_k, k), s_k^2 I), so (methods.md 3.4; Williams 1992; DDPO,
Black et al. 2023, eq. 3)

    grad E[f] = E[ sum_k (f - b) grad_theta log N(x_{k+1}; m_theta(x_k, k), s_k^2 I) ]

with f = -r(x_K) (+ lam times the path-KL costs incurred after step k, whose direct
dependence on theta is differentiated as well) and b a baseline that does not depend
on the sample it multiplies: here the leave-one-out mean of the other n - 1 samples
of the batch (``baseline="loo"``), which keeps the estimate unbiased and removes most
of its variance; ``baseline="none"`` is plain REINFORCE.

``clip=eps`` gives DDPO's PPO-clipped surrogate (Schulman et al. 2017): per sample and
step, max(A rho, A clip(rho, 1 - eps, 1 + eps)) with rho the ratio of the current to
the rollout's step density and A the (cost) advantage. Draw a rollout once with
:meth:`ScoreFunctionEstimator.rollout` (or take ``last_rollout``) and pass it to
several :meth:`loss` calls to take several optimiser steps on the same samples; at the
rollout's own parameters the clipped surrogate has the plain estimator's gradient.
The per-step terms are summed over steps (DDPO averages them: a factor K in the
learning rate) and advantages are not normalised by their standard deviation (which
would bias the gradient).

Every differentiated step needs noise (s_k > 0): over a deterministic step the
density is not defined and the estimator refuses. Memory is O(K x state): each
step's term is differentiated on its own and accumulated. Choose it for rewards
without a useful gradient (classifiers' argmax, human or external scores,
non-differentiable simulators), where its variance (it grows with K and the
dimension) is the price.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sampleopt.errors import UsageError
from sampleopt.estimators.common import (
    check_no_given_samples,
    check_path_kl,
    checked_rewards,
    is_deterministic,
    kl_step_cost,
    path_kl_reference,
    resolve_params,
    surrogate_from_grads,
)
from sampleopt.objectives.objective import Objective
from sampleopt.samplers.chain import GaussianChain

BASELINES = ("loo", "none")


@dataclass
class Rollout:
    """A batch of paths with what the score-function estimator needs to reuse them.

    ``path``: x_0 .. x_K stacked, shape (K + 1, n, ...) (no graph); ``rewards``: (n,);
    ``log_probs``: (n, K), the step log-densities at the rollout's parameters up to a
    constant; ``costs``: (n, K) path-KL running costs, or None without the path KL.
    """

    path: torch.Tensor
    rewards: torch.Tensor
    log_probs: torch.Tensor
    costs: torch.Tensor | None

    @property
    def n(self) -> int:
        return self.rewards.shape[0]


def _log_density(x_next, m, s) -> torch.Tensor:
    """log N(x_next; m, s^2 I) per sample, without the constant -d/2 log(2 pi)."""
    sq = ((x_next - m) ** 2).flatten(1).sum(1) / (2 * s * s)
    if isinstance(s, torch.Tensor) and s.requires_grad:  # a learnable noise scale
        return -sq - x_next[0].numel() * torch.log(s)
    return -sq


class ScoreFunctionEstimator:
    """REINFORCE with a leave-one-out baseline; ``clip`` for DDPO's PPO variant."""

    name = "score-function"
    last_rewards: torch.Tensor | None = None
    last_rollout: Rollout | None = None

    def __init__(
        self,
        reference: GaussianChain | None = None,
        *,
        baseline: str = "loo",
        clip: float | None = None,
    ):
        if baseline not in BASELINES:
            raise UsageError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
        if clip is not None and not (isinstance(clip, int | float) and 0 < clip < 1):
            raise UsageError(f"clip must be a number in (0, 1) or None, got {clip!r}")
        self.reference = reference
        self.baseline = baseline
        self.clip = None if clip is None else float(clip)

    def _check_noise(self, sampler: GaussianChain) -> None:
        for k in range(sampler.num_steps):
            if is_deterministic(sampler.noise_scale(k)):
                raise UsageError(
                    f"the score-function estimator needs noise at every step, but step {k} of "
                    f"{type(sampler).__name__} is deterministic (s_k = 0): its transition has "
                    "no density to differentiate. Use a sampler with noise at every step "
                    "(ReverseSDESampler, or a chain that stops before clean data) or a "
                    "pathwise estimator (unrolled, adjoint) with a differentiable reward"
                )

    def rollout(
        self,
        sampler: GaussianChain,
        objective: Objective,
        *,
        n: int,
        generator: torch.Generator | None = None,
        x0: torch.Tensor | None = None,
    ) -> Rollout:
        """Draw n paths at the current parameters (no graph) for :meth:`loss`."""
        check_path_kl(self.name, objective)
        self._check_noise(sampler)
        reference = path_kl_reference(self.name, sampler, objective, self.reference)
        with torch.no_grad():
            x = sampler.sample_x0(n, generator) if x0 is None else x0.detach()
            if x.shape[0] < 2 and self.baseline == "loo":
                raise UsageError("the leave-one-out baseline needs at least 2 samples")
            # one (K+1, n, ...) block: K small tensors would fragment the heap
            path = x.new_empty((sampler.num_steps + 1, *x.shape))
            path[0] = x
            logps, costs = [], []
            for k in range(sampler.num_steps):
                m, s = sampler.mean(x, k), sampler.noise_scale(k)
                if reference is not None:
                    costs.append(kl_step_cost(m, reference.mean(x, k), s))
                noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
                x = path[k + 1] = m + s * noise
                logps.append(_log_density(x, m, s))
            r = checked_rewards(objective, x)
        return Rollout(
            path=path,
            rewards=r.detach(),
            log_probs=torch.stack(logps, 1),
            costs=torch.stack(costs, 1) if costs else None,
        )

    def loss(
        self,
        sampler: GaussianChain,
        objective: Objective,
        *,
        n: int | None = None,
        generator: torch.Generator | None = None,
        x0: torch.Tensor | None = None,
        samples: torch.Tensor | None = None,
        reference_samples: torch.Tensor | None = None,
        params=None,
        rollout: Rollout | None = None,
    ) -> torch.Tensor:
        """Surrogate loss on a fresh rollout of n paths, or on a given ``rollout``."""
        check_no_given_samples(self.name, samples)
        check_path_kl(self.name, objective)
        params = resolve_params(self.name, sampler, params)
        reference = path_kl_reference(self.name, sampler, objective, self.reference)
        if rollout is None:
            if n is None:
                raise UsageError("pass the number of paths n=... (or a rollout=...)")
            rollout = self.rollout(sampler, objective, n=n, generator=generator, x0=x0)
        else:  # (a fresh rollout checks the noise itself)
            self._check_noise(sampler)
            if len(rollout.path) != sampler.num_steps + 1:
                raise UsageError(
                    f"the rollout has {len(rollout.path) - 1} steps, the sampler "
                    f"{sampler.num_steps}"
                )
            if (rollout.costs is None) != (reference is None):
                raise UsageError("the rollout was drawn with a different lam (path KL on/off)")
        self.last_rollout, self.last_rewards = rollout, rollout.rewards
        lam, K = objective.lam, sampler.num_steps
        # cost to go after step k: -r(x_K) + lam * sum_{j > k} c_j(x_j), shape (n, K)
        w = (-rollout.rewards)[:, None].expand(-1, K)
        if rollout.costs is not None:
            after = rollout.costs.flip(1).cumsum(1).flip(1) - rollout.costs
            w = w + lam * after
        if self.baseline == "loo":
            w = (w - w.mean(0, keepdim=True)) * (rollout.n / (rollout.n - 1))
        grads = [torch.zeros_like(p) for p in params]
        for k in range(K):
            with torch.enable_grad():
                xk = rollout.path[k]
                m, s = sampler.mean(xk, k), sampler.noise_scale(k)
                logp = _log_density(rollout.path[k + 1], m, s)
                adv = w[:, k]
                if self.clip is None:
                    step = (adv * logp).mean()
                else:
                    ratio = torch.exp(logp - rollout.log_probs[:, k])
                    clipped = ratio.clamp(1 - self.clip, 1 + self.clip)
                    step = torch.maximum(adv * ratio, adv * clipped).mean()
                if reference is not None:  # the running cost's direct dependence on theta
                    step = step + lam * kl_step_cost(m, reference.mean(xk, k), s).mean()
                out = torch.autograd.grad(step, params, allow_unused=True)
            for g, gk in zip(grads, out, strict=True):
                if gk is not None:
                    g.add_(gk)
        value = -rollout.rewards.mean()
        if rollout.costs is not None:
            value = value + lam * rollout.costs.sum(1).mean()
        return surrogate_from_grads(params, grads, value)
