"""Score-function (REINFORCE) gradients: no gradient of the reward needed.

For a Gaussian chain the path density factorises into the steps'
N(x_{k+1}; m_theta(x_k, k), s_k^2 I), so (docs/methods.md section 3.4; Williams 1992; DDPO,
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
from typing import ClassVar

import torch

from sampleopt.errors import UsageError
from sampleopt.estimators.base import Call, Estimator, surrogate_from_grads
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


class ScoreFunctionEstimator(Estimator):
    """REINFORCE with a leave-one-out baseline; ``clip`` for DDPO's PPO variant."""

    name: ClassVar[str] = "score-function"
    needs_noise: ClassVar[bool] = True
    evals_per_step: ClassVar[int] = 2  # the rollout, then each step's log-density
    last_rollout: Rollout | None = None

    def __init__(self, *, baseline: str = "loo", clip: float | None = None):
        if baseline not in BASELINES:
            raise UsageError(f"unknown baseline {baseline!r}; choose one of {', '.join(BASELINES)}")
        if clip is not None and (
            isinstance(clip, bool) or not (isinstance(clip, int | float) and 0 < clip < 1)
        ):
            raise UsageError(f"clip must be a number in (0, 1) or None, got {clip!r}")
        self.baseline = baseline
        self.clip = None if clip is None else float(clip)
        self.min_samples = 2 if baseline == "loo" else 1

    def options(self) -> dict:
        return {"baseline": self.baseline, "clip": self.clip}

    def rollout(self, sampler: GaussianChain, objective: Objective, **kw) -> Rollout:
        """Draw n paths at the current parameters (no graph) for :meth:`loss`; takes
        :meth:`loss`'s ``n``, ``generator`` and ``x0``."""
        return self._rollout(self.check_call(sampler, objective, **kw))

    def _rollout(self, call: Call) -> Rollout:
        sampler, path_kl = call.sampler, call.path_kl
        with torch.no_grad():
            x = call.start()
            # one (K+1, n, ...) block: K small tensors would fragment the heap
            path = x.new_empty((sampler.num_steps + 1, *x.shape))
            path[0] = x
            logps, costs = [], []
            for k in range(sampler.num_steps):
                m, s = sampler.mean(x, k), sampler.noise_scale(k)
                if path_kl is not None:
                    costs.append(path_kl.cost(sampler, x, k, m))
                x = path[k + 1] = m + s * call.noise(x)
                logps.append(_log_density(x, m, s))
            r = self.rewards(call.objective, x)
        return Rollout(
            path=path,
            rewards=r.detach(),
            log_probs=torch.stack(logps, 1),
            costs=torch.stack(costs, 1) if costs else None,
        )

    def loss(self, sampler, objective, *, rollout: Rollout | None = None, **kw) -> torch.Tensor:
        """Surrogate loss on a fresh rollout of n paths, or on a given ``rollout``."""
        if rollout is None:
            return super().loss(sampler, objective, **kw)
        if not isinstance(rollout, Rollout):
            raise UsageError(f"rollout must be a Rollout, got {type(rollout).__name__}")
        if set(kw) - {"params"}:
            raise UsageError(f"pass either a rollout or {', '.join(sorted(kw))}, not both")
        call = self.check_call(sampler, objective, x0=rollout.path[0], params=kw.get("params"))
        if len(rollout.path) != sampler.num_steps + 1:
            raise UsageError(
                f"the rollout has {len(rollout.path) - 1} steps, the sampler {sampler.num_steps}"
            )
        if (rollout.costs is None) != (call.path_kl is None):
            raise UsageError("the rollout was drawn with a different lam (path KL on/off)")
        return self._surrogate(call, rollout)

    def _loss(self, call: Call) -> torch.Tensor:
        return self._surrogate(call, self._rollout(call))

    def _surrogate(self, call: Call, rollout: Rollout) -> torch.Tensor:
        sampler, path_kl, params = call.sampler, call.path_kl, call.params
        self.last_rollout, self.last_rewards = rollout, rollout.rewards
        lam, K = call.lam, sampler.num_steps
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
                if path_kl is not None:  # the running cost's direct dependence on theta
                    step = step + lam * path_kl.cost(sampler, xk, k, m).mean()
                out = torch.autograd.grad(step, params, allow_unused=True)
            for g, gk in zip(grads, out, strict=True):
                if gk is not None:
                    g.add_(gk)
        value = -rollout.rewards.mean()
        if rollout.costs is not None:
            value = value + lam * rollout.costs.sum(1).mean()
        return surrogate_from_grads(params, grads, value)
