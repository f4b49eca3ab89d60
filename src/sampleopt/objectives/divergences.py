"""Divergences to a reference: the D of l(theta) = -E[r] + lam * D (docs/methods.md section 1).

A divergence is an object that holds its reference, so an objective says in one place
what the sampler is kept close to:

* :class:`PathKL` (``reference_chain``): the KL between the laws of whole paths of two
  Gaussian chains with the same noise scales (discrete Girsanov),

      KL(P_theta || P_ref) = sum_k E || m_theta(x_k, k) - m_ref(x_k, k) ||^2 / (2 s_k^2),

  an upper bound on the KL of the outputs. It is what the pathwise estimators
  (unrolled, truncated, adjoint, score-function, zeroth-order) and the fine-tuning
  algorithms differentiate. It is infinite over a step without noise, so every step
  must add noise.
* :class:`GibbsKL` (``reference_potential``, ``direction``): a KL between the Gibbs laws
  pi ∝ exp(-V) of a Langevin sampler's potential and a reference potential, in either
  direction: ``"forward"`` KL(pi_theta || pi_ref) (mode-seeking; its gradient needs
  samples of pi_theta only) or ``"reverse"`` KL(pi_ref || pi_theta) (mass-covering; its
  gradient needs samples of pi_ref too). The covariance estimator and Implicit
  Diffusion use it.

Both freeze a deep copy of their reference (no gradient flows into it, and tuning the
sampler afterwards does not move it). Choose the path KL for finite-horizon samplers
(diffusion models), the Gibbs KL for Langevin samplers of an energy.
"""

from __future__ import annotations

import copy

import torch

from sampleopt.errors import UsageError
from sampleopt.samplers.chain import GaussianChain
from sampleopt.samplers.potentials import Potential

KL_DIRECTIONS = ("forward", "reverse")


def _frozen(module: torch.nn.Module) -> torch.nn.Module:
    return copy.deepcopy(module).requires_grad_(False)


def is_deterministic(s) -> bool:
    """Whether a noise scale s_k (float or tensor) is 0: a step without noise."""
    return float(s.detach() if isinstance(s, torch.Tensor) else s) == 0


class Divergence:
    """Base class of the divergences an :class:`~sampleopt.objectives.Objective` holds."""

    reference: torch.nn.Module

    def describe(self) -> str:
        return type(self).__name__


class PathKL(Divergence):
    """Path KL(P_theta || P_ref) to a frozen copy of ``reference_chain``.

    The reference must take the same number of steps as the tuned sampler, with the
    same noise scales (checked when an estimator uses it: :meth:`check`).
    """

    def __init__(self, reference_chain: GaussianChain):
        if not isinstance(reference_chain, GaussianChain):
            raise UsageError(
                "PathKL needs a reference sampler (a GaussianChain, e.g. the base model's "
                f"sampler), got {type(reference_chain).__name__}"
            )
        self.reference = _frozen(reference_chain)

    def describe(self) -> str:
        return f"path KL to a frozen {type(self.reference).__name__}"

    def check(self, sampler: GaussianChain) -> None:
        """The reference compares with ``sampler`` step by step, and every step has noise."""
        if self.reference.num_steps != sampler.num_steps:
            raise UsageError(
                f"the path KL's reference chain has {self.reference.num_steps} steps, the "
                f"sampler {sampler.num_steps}; the path KL compares the two step by step"
            )
        for k in range(sampler.num_steps):
            self.noise_scale(sampler, k)

    @staticmethod
    def noise_scale(sampler: GaussianChain, k: int):
        """s_k, refusing a step without noise (the path KL over it is infinite)."""
        s = sampler.noise_scale(k)
        if is_deterministic(s):
            raise UsageError(
                f"the path KL is infinite over step {k}, which adds no noise; use a sampler "
                "with noise at every step (e.g. ReverseSDESampler) for lam > 0"
            )
        return s

    @staticmethod
    def step_cost(m: torch.Tensor, m_ref: torch.Tensor, s) -> torch.Tensor:
        """Per-sample running cost of one step, |m - m_ref|^2 / (2 s^2), shape (n,)."""
        return ((m - m_ref) ** 2).flatten(1).sum(1) / (2 * s * s)

    def cost(self, sampler: GaussianChain, x: torch.Tensor, k: int, m: torch.Tensor):
        """The running cost at step k given the sampler's mean m = m_theta(x, k)."""
        return self.step_cost(m, self.reference.mean(x, k), self.noise_scale(sampler, k))

    @torch.no_grad()
    def estimate(
        self, sampler: GaussianChain, n: int, generator: torch.Generator | None = None
    ) -> tuple[float, float]:
        """Monte-Carlo path KL(P_sampler || P_ref) from n paths of ``sampler``: the mean
        over paths of sum_k |m(x_k) - m_ref(x_k)|^2 / (2 s_k^2), and its standard error."""
        self.check(sampler)
        x = sampler.sample_x0(n, generator)
        noises = (
            torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
            for _ in range(sampler.num_steps)
        )
        _, total = run_with_path_cost(sampler, self, x, noises)
        return float(total.mean()), float(total.std() / total.numel() ** 0.5)


def run_with_path_cost(sampler, path_kl: PathKL | None, x, noises):
    """Run the chain from x with the given ``noises``; return x_K and each path's KL
    cost (zeros when ``path_kl`` is None)."""
    cost = x.new_zeros(x.shape[0])
    for k, noise in enumerate(noises):
        m = sampler.mean(x, k)
        if path_kl is not None:
            cost = cost + path_kl.cost(sampler, x, k, m)
        x = sampler.add_noise(m, k, noise)
    return x, cost


def estimate_path_kl(sampler, reference, n: int, generator=None) -> tuple[float, float]:
    """Monte-Carlo path KL(P_sampler || P_reference) and its standard error: the
    function form of :meth:`PathKL.estimate`."""
    return PathKL(reference).estimate(sampler, n, generator)


class GibbsKL(Divergence):
    """KL between Gibbs laws exp(-V_theta) and exp(-V_ref) of a Langevin sampler's
    potential and a frozen copy of ``reference_potential``, in ``direction``
    ``"forward"`` (KL(pi_theta || pi_ref)) or ``"reverse"`` (KL(pi_ref || pi_theta))."""

    def __init__(self, reference_potential: Potential, direction: str = "forward"):
        if not isinstance(reference_potential, Potential):
            raise UsageError(
                "GibbsKL needs a reference Potential (the energy of the reference law), got "
                f"{type(reference_potential).__name__}"
            )
        if direction not in KL_DIRECTIONS:
            raise UsageError(
                f"unknown KL direction {direction!r}; choose one of {', '.join(KL_DIRECTIONS)}"
            )
        self.reference = _frozen(reference_potential)
        self.direction = direction

    def describe(self) -> str:
        return f"{self.direction} Gibbs KL to a frozen {type(self.reference).__name__}"

    @property
    def needs_reference_samples(self) -> bool:
        """The reverse direction's gradient needs samples of pi_ref."""
        return self.direction == "reverse"
