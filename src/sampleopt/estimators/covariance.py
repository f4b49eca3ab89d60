"""The covariance (implicit-differentiation) estimator for Langevin samplers.

For a Gibbs law pi_theta ∝ exp(-V_theta) and any h independent of theta,

    grad_theta E_{pi_theta}[h] = -Cov_{pi_theta}(h, grad_theta V_theta)

(docs/methods.md section 3.5; Marion et al. 2025, eq. (6) and section 3.2 — this is what
implicit differentiation of sampling-as-optimisation gives). With the KL terms,
for l = -E[r] + lam * D:

with D the objective's :class:`~sampleopt.GibbsKL` in either direction,

* forward, D = KL(pi_theta || pi_ref):  grad l = Cov(r + lam (V_theta - V_ref), grad V_theta)
* reverse, D = KL(pi_ref || pi_theta):  grad l = Cov(r, grad V_theta)
                                            + lam (E_ref[grad V_theta] - E_theta[grad V_theta])

Both vanish where they should: the forward one at the tilted optimum
pi ∝ pi_ref exp(r / lam), both at theta = theta_ref when r = 0 (the official
Implicit Diffusion code adds the reverse term with the wrong sign; the tests here
pin the sign).

Every term is a weighted sum of grad_theta V over samples, so the estimate is
``sum_i w_i grad V(x_i) + sum_j u_j grad V(x_ref_j)`` with detached weights: the
surrogate loss is ``sum_i w_i V(x_i) + sum_j u_j V(x_ref_j)``. Covariances use the
unbiased 1/(n-1) normalisation, so the estimate is unbiased for i.i.d. samples.

Choose it when samples come from (near) the stationary law: Implicit Diffusion's
persistent particles, or a long nested sampling run. It needs no reward gradient,
so it works with non-differentiable rewards. Its bias is the sampler's: ULA at
step gamma is O(gamma) away from pi_theta.
"""

from __future__ import annotations

import contextlib
from typing import ClassVar

import torch

from sampleopt.errors import UsageError
from sampleopt.estimators.base import Estimator, restricted
from sampleopt.objectives.divergences import GibbsKL
from sampleopt.objectives.objective import Objective
from sampleopt.samplers.langevin import LangevinSampler
from sampleopt.samplers.potentials import Potential


class CovarianceEstimator(Estimator):
    """Covariance estimator of grad l(theta) from samples of pi_theta (and of pi_ref
    for the reverse KL)."""

    name: ClassVar[str] = "covariance"
    needs_langevin: ClassVar[bool] = True
    divergences: ClassVar[tuple] = (GibbsKL,)
    min_samples: ClassVar[int] = 2

    def weights(
        self,
        potential: Potential,
        objective: Objective,
        x: torch.Tensor,
        *,
        rewards: torch.Tensor | None = None,
        reference_samples: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-sample weights (w, u): grad l ≈ sum_i w_i grad V(x_i) + sum_j u_j grad V(x_ref_j).

        ``rewards`` are taken as given (Implicit Diffusion checks them once per block);
        :meth:`loss` checks them itself."""
        n = x.shape[0]
        if n < 2:
            raise UsageError("the covariance estimator needs at least 2 samples")
        kl = objective.gibbs_kl
        # no_grad only when needed: this runs once per Implicit Diffusion iteration
        with torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext():
            h = objective.rewards(x) if rewards is None else rewards
            self.last_rewards = h
            if kl is not None and kl.direction == "forward":
                h = h + objective.lam * (potential(x) - kl.reference(x))
            c = 1.0 / (n - 1)
            w = h.mul(c).sub_(h.sum(), alpha=c / n)  # (h - mean h) / (n - 1)
            u = None
            if objective.needs_reference_samples:
                if reference_samples is None:
                    raise UsageError(
                        "the reverse KL term needs samples of the reference (reference_samples=...)"
                    )
                w = w - objective.lam / n
                m = reference_samples.shape[0]
                u = torch.full((m,), objective.lam / m, dtype=x.dtype, device=x.device)
        return w, u

    def gradient(
        self,
        potential: Potential,
        objective: Objective,
        x: torch.Tensor,
        *,
        rewards: torch.Tensor | None = None,
        reference_samples: torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """The estimate itself, one tensor per trainable parameter of ``potential``
        (uses the potential's closed-form :meth:`~Potential.param_vjp` when it has one)."""
        return self._estimate(potential, objective, x, rewards, reference_samples, False)[1]

    def gradient_with_grad_x(
        self,
        potential: Potential,
        objective: Objective,
        x: torch.Tensor,
        *,
        rewards: torch.Tensor | None = None,
        reference_samples: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(grad_x V(x), the estimate) from one evaluation of the potential at x: what
        Implicit Diffusion's parallel update needs (Langevin step and theta step at the
        same particles)."""
        return self._estimate(potential, objective, x, rewards, reference_samples, True)

    def _estimate(self, potential, objective, x, rewards, reference_samples, with_grad_x):
        w, u = self.weights(
            potential, objective, x, rewards=rewards, reference_samples=reference_samples
        )
        if with_grad_x:
            gx, grads = potential.grad_x_and_param_vjp(x, w)
        else:
            gx, grads = None, potential.param_vjp(x, w)
        if u is not None:
            ref = potential.param_vjp(reference_samples, u)
            grads = [g + gr for g, gr in zip(grads, ref, strict=True)]
        return gx, grads

    def loss(
        self,
        sampler: LangevinSampler,
        objective: Objective,
        *,
        samples: torch.Tensor | None = None,
        reference_samples: torch.Tensor | None = None,
        n: int | None = None,
        generator: torch.Generator | None = None,
        params=None,
    ) -> torch.Tensor:
        """Surrogate loss whose gradient in theta is the estimate.

        Pass ``samples`` (e.g. persistent particles), or ``n`` to draw them with a
        full run of ``sampler`` (no gradient flows through the sampling); for the
        reverse KL, ``reference_samples`` of pi_ref (drawn the same way when omitted).
        """
        call = self.check_call(sampler, objective, n=n, x0=samples, params=params)
        if reference_samples is not None:
            if not objective.needs_reference_samples:
                raise UsageError("reference_samples are used only by the reverse Gibbs KL")
            self._check_start(sampler, None, reference_samples)
        with torch.no_grad():
            if samples is None:
                samples = sampler.sample(call.n, generator=generator)
            if objective.needs_reference_samples and reference_samples is None:
                reference = sampler.with_potential(objective.gibbs_kl.reference)
                reference_samples = reference.sample(call.n, generator=generator)
        x = samples.detach()
        rewards = self.rewards(objective, x)
        potential = sampler.potential
        w, u = self.weights(
            potential, objective, x, rewards=rewards, reference_samples=reference_samples
        )
        with torch.enable_grad():
            loss = (w * potential(x)).sum()
            if u is not None:
                loss = loss + (u * potential(reference_samples.detach())).sum()
            return restricted(call, loss)
