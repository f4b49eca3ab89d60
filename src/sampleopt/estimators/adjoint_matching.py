"""Adjoint matching (Domingo-Enrich et al., ICLR 2025): regress the control onto the
lean adjoint (docs/soc.md section 2).

Paths are sampled from the current (tuned) chain without a graph. From
a_K = -grad r(x_K) / lam the *lean* adjoint runs backward through the base's steps only,

    a_k = J_x m_base(x_k, k)^T a_{k+1},

and the tuned chain's discrete control d_k = (m(x_k, k) - m_base(x_k, k)) / s_k is
regressed onto -s_k a_{k+1}:

    L = lam / 2 * mean_paths sum_k | d_k + s_k a_{k+1} |^2        (paper eq. (39), discrete).

The lam / 2 makes L's gradient the objective's gradient up to the terms that vanish at
the optimum, so learning rates carry over from the pathwise estimators. The lean adjoint
is not adapted (it uses noise after step k): its conditional mean is the co-state
grad V(t_k, x_k), but it carries the later noise, which grows with the noise level and
horizon; the time-reversed BSDE (:mod:`sampleopt.estimators.tr_bsde`) removes it.

Practical options of the reference implementation: ``steps`` (regress on a random subset
of that many steps per call, the last ``keep_last`` always among them; rescaled by
K / steps) and ``clip_quantile`` (drop the paths whose loss exceeds a running estimate
of that quantile of past losses). Both are off by default (the plain regression comes
within 10.1% of the exact optimum at every beta of the bimodal benchmark,
docs/soc-bimodal.md; their effect is not measured yet); ``steps``
also cuts the regression's memory by K / steps (docs/soc.md section 6).

Choose it to fine-tune a diffusion model toward the tilted law p_base exp(r / lam): it
needs a reward gradient, a memoryless base (or a learned initial law, or
``allow_memory=True`` for the fixed-initial-law problem) and lam > 0.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from sampleopt.errors import UsageError
from sampleopt.estimators.base import Call, Estimator
from sampleopt.soc.common import (
    check_soc,
    choose_steps,
    initial_law_surrogate,
    lean_adjoint,
    terminal_costate,
)


class AdjointMatching(Estimator):
    """The adjoint-matching regression loss (see the module docstring)."""

    name: ClassVar[str] = "adjoint-matching"
    needs_reward_gradient: ClassVar[bool] = True
    needs_noise: ClassVar[bool] = True
    needs_kl: ClassVar[bool] = True
    supports_initial_law: ClassVar[bool] = True
    evals_per_step: ClassVar[int] = 5  # sample, base forward + VJP, tuned + base in the loss

    def __init__(
        self,
        *,
        steps: int | None = None,
        keep_last: int = 0,
        clip_quantile: float | None = None,
        allow_memory: bool = False,
    ):
        if steps is not None and (
            isinstance(steps, bool) or not isinstance(steps, int) or steps < 1
        ):
            raise UsageError(f"steps must be a positive integer or None, got {steps!r}")
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0:
            raise UsageError(f"keep_last must be an integer >= 0, got {keep_last!r}")
        if steps is not None and keep_last > steps:
            raise UsageError(f"keep_last = {keep_last} exceeds steps = {steps}")
        if clip_quantile is not None and not (
            isinstance(clip_quantile, float) and 0.0 < clip_quantile < 1.0
        ):
            raise UsageError(
                f"clip_quantile must be a float in (0, 1) or None, got {clip_quantile!r}"
            )
        self.steps, self.keep_last = steps, keep_last
        self.clip_quantile, self.allow_memory = clip_quantile, bool(allow_memory)
        self._threshold: float | None = None  # the running loss quantile

    def options(self) -> dict:
        return {
            "steps": self.steps,
            "keep_last": self.keep_last,
            "clip_quantile": self.clip_quantile,
            "allow_memory": self.allow_memory,
        }

    def check_setup(self, sampler, objective) -> None:
        super().check_setup(sampler, objective)
        check_soc(self.name, sampler, objective, self.allow_memory)

    def network_evals(self, sampler, n: int) -> int:
        K = sampler.num_steps
        used = K if self.steps is None else min(self.steps, K)
        return (3 * K + 2 * used) * n

    def _loss(self, call: Call) -> torch.Tensor:
        sampler, ref = call.sampler, call.path_kl.reference
        K, lam = sampler.num_steps, call.lam
        learns = bool(getattr(sampler, "learns_initial_law", False))
        x0_graph = sampler.initial.sample(call.n, call.generator) if learns else None
        with torch.no_grad():
            x = call.start() if x0_graph is None else x0_graph.detach()
            path = x.new_empty((K + 1, *x.shape))
            path[0] = x
            for k in range(K):
                path[k + 1] = sampler.step(path[k], k, call.noise(x))
        a_K = terminal_costate(call.objective, path[K], self.rewards)
        adj, base_means = lean_adjoint(ref, path, a_K)
        per_path = path.new_zeros(call.n)
        chosen = choose_steps(K, self.steps, self.keep_last, call.generator, path.device)
        for k in chosen:
            s = float(sampler.noise_scale(k))
            d = (sampler.mean(path[k], k) - base_means[k]) / s
            per_path = per_path + ((d + s * adj[k + 1]) ** 2).flatten(1).sum(1)
        per_path = per_path * (K / len(chosen))
        keep = self._clip(per_path.detach())
        loss = 0.5 * lam * (per_path * keep).sum() / keep.sum().clamp_min(1)
        if x0_graph is not None:
            loss = loss + lam * initial_law_surrogate(sampler, ref, x0_graph, adj[0])
        return loss

    def _clip(self, losses: torch.Tensor) -> torch.Tensor:
        """1 for the paths kept, 0 for those above the running quantile (all kept on the
        first call, which only sets the estimate)."""
        keep = torch.ones_like(losses)
        if self.clip_quantile is None:
            return keep
        q = float(torch.quantile(losses, self.clip_quantile))
        if self._threshold is not None:
            keep = (losses <= self._threshold).to(losses.dtype)
        self._threshold = q if self._threshold is None else 0.9 * self._threshold + 0.1 * q
        return keep
