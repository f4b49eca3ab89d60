"""Implicit Diffusion for Langevin samplers: sampling and optimisation in one loop.

Marion et al. (AISTATS 2025), "Implicit Diffusion: Efficient Optimization through
Stochastic Sampling", section 3 (Algorithm 2, infinite time), docs/methods.md section 4. Instead
of running a whole sampling chain for every theta step (:class:`NestedLoop`), keep
one persistent batch of particles and, at every iteration k,

    x_{k+1}     = x_k - gamma grad_x V_{theta_k}(x_k) + sqrt(2 gamma) xi_k   (one ULA step)
    theta_{k+1} = theta_k - eta_k * Gamma(x, theta_k)                        (one theta step)

with Gamma the covariance estimator (:class:`CovarianceEstimator`), so the
particles track pi_theta as theta moves. ``order`` says where Gamma is taken: at
x = x_k (``"parallel"``, the joint update of the coupled dynamics analysed in the
paper; one evaluation of the potential serves both steps) or at x = x_{k+1}
(``"sequential"``, what the official JAX code does). Each iteration costs one sampling step.
With a KL penalty in the reverse direction a second, frozen particle batch tracks
pi_ref.

The loop runs in blocks: noise for a block is drawn at once, records stay on the
device, and at the end of each block the records are checked for NaN/inf (one
synchronisation per block) and handed to ``callback`` (for metrics and
checkpoints). On NaN/inf the state (parameters, optimiser, particles and the random
generator) rolls back to the start of the block and a
:class:`~sampleopt.errors.NonFiniteError` names the first bad iteration; the
records before it have been handed to ``callback`` first. The theta step is the shared
:class:`~sampleopt.algorithms.update.Update` core.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sampleopt.algorithms.base import Algorithm
from sampleopt.algorithms.history import History, flat_params, raise_non_finite
from sampleopt.algorithms.step_size import StepSize
from sampleopt.algorithms.update import Update
from sampleopt.errors import UsageError
from sampleopt.estimators.covariance import CovarianceEstimator
from sampleopt.objectives.objective import Objective
from sampleopt.samplers.langevin import LangevinSampler

Callback = Callable[[History, object], None]
ORDERS = ("parallel", "sequential")


class ImplicitDiffusion(Algorithm):
    """The single loop with persistent particles.

    Args:
        sampler: the Langevin sampler whose potential's parameters are optimised.
        objective: reward and optional KL penalty.
        n_particles: size of the persistent batch.
        lr: the theta step size, a number or a :class:`StepSize` (constant or
            eta / sqrt(k+1)).
        optimizer: "sgd" (default: plain SGD, as in the paper, applied in place, the
            cheapest update: this loop's iterations are tiny, so a generic optimiser's
            per-step overhead would dominate), "adam", or any torch optimiser over the
            sampler's parameters; its learning rate is set from ``lr`` each step.
        generator: the random stream (seed it for reproducible runs).
        particles: starting particles (default: the sampler's x_0 law).
        order: ``"parallel"`` (default) computes the theta step and the Langevin step
            at the same (x_k, theta_k), the joint update of the paper's coupled
            dynamics: the potential is evaluated once per iteration and the two
            derivatives share it. ``"sequential"`` takes the Langevin step first and
            the theta step at (x_{k+1}, theta_k), as the official JAX code does; it
            costs a second evaluation. Both track the same coupled dynamics; they
            differ by one sampling step of lag in the particles the gradient sees.
    """

    def __init__(
        self,
        sampler: LangevinSampler,
        objective: Objective,
        *,
        n_particles: int = 1000,
        lr: StepSize | float = 0.1,
        optimizer="sgd",
        estimator: CovarianceEstimator | None = None,
        generator: torch.Generator | None = None,
        particles: torch.Tensor | None = None,
        order: str = "parallel",
    ):
        if not isinstance(sampler, LangevinSampler):
            raise UsageError("ImplicitDiffusion (infinite time) needs a LangevinSampler")
        if int(n_particles) < 2:
            raise UsageError(f"n_particles must be >= 2, got {n_particles}")
        if order not in ORDERS:
            raise UsageError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")
        self.order = order
        self.sampler = sampler
        self.objective = objective
        self.estimator = estimator or CovarianceEstimator()
        if not isinstance(self.estimator, CovarianceEstimator):
            raise UsageError(
                "ImplicitDiffusion (infinite time) takes the covariance estimator; for "
                "finite-horizon samplers use QueuedImplicitDiffusion or the nested loop"
            )
        n = None if particles is not None else int(n_particles)
        call = self.estimator.check_call(sampler, objective, n=n, x0=particles)
        self.generator = generator
        self.params = call.params
        self.update = Update(self.params, lr, optimizer)
        with torch.no_grad():
            if particles is None:
                particles = sampler.sample_x0(int(n_particles), generator)
            self.particles = particles.detach().clone()
            self.reference_sampler = None
            self.reference_particles = None
            if objective.needs_reference_samples:
                self.reference_sampler = sampler.with_potential(objective.gibbs_kl.reference)
                self.reference_particles = self.reference_sampler.sample_x0(
                    self.particles.shape[0], generator
                )
        self.iteration = 0

    def run(
        self, iterations: int, *, block: int = 100, callback: Callback | None = None
    ) -> History:
        """Run ``iterations`` more iterations; returns their records."""
        parts = []
        done = 0
        while done < iterations:
            b = min(block, iterations - done)
            parts.append(self._run_block(b, callback))
            done += b
        return History.cat(parts) if parts else self._empty()

    @torch.no_grad()
    def _run_block(self, b: int, callback: Callback | None) -> History:
        sampler, objective, est = self.sampler, self.objective, self.estimator
        potential = sampler.potential
        x, x_ref = self.particles, self.reference_particles
        gen_state = None if self.generator is None else self.generator.get_state()
        saved = (x, x_ref, self.update.snapshot(), self.iteration, gen_state)
        shape = (b, *x.shape)
        noise = torch.randn(shape, generator=self.generator, dtype=x.dtype, device=x.device)
        noise_ref = None
        if x_ref is not None:
            noise_ref = torch.randn(shape, generator=self.generator, dtype=x.dtype, device=x.device)
        rec_r, rec_t = [], []
        apply = self.update.apply
        single = len(self.params) == 1
        k0 = self.iteration
        parallel = self.order == "parallel"
        for i in range(b):
            if parallel:  # gradient and Langevin step at the same (x_k, theta_k)
                r = objective.rewards(x)
                if i == 0:
                    r = self._checked_once(r, x, gen_state)
                gx, grads = est.gradient_with_grad_x(
                    potential, objective, x, rewards=r, reference_samples=x_ref
                )
                x = sampler.step_with_grad(x, gx, noise[i])
                if x_ref is not None:
                    x_ref = self.reference_sampler.step(x_ref, 0, noise_ref[i])
            else:  # Langevin step first, gradient at (x_{k+1}, theta_k)
                x = sampler.step(x, 0, noise[i])
                if x_ref is not None:
                    x_ref = self.reference_sampler.step(x_ref, 0, noise_ref[i])
                r = objective.rewards(x)
                if i == 0:
                    r = self._checked_once(r, x, gen_state)
                grads = est.gradient(potential, objective, x, rewards=r, reference_samples=x_ref)
            apply(grads, check=False)  # checked once per block, below
            rec_r.append(r.sum())
            rec_t.append(self.params[0].reshape(-1).clone() if single else flat_params(self.params))
        steps = torch.arange(k0 + 1, k0 + b + 1)
        rec_mean = torch.stack(rec_r) * (1.0 / x.shape[0])
        hist = History(steps, steps.clone(), rec_mean, torch.stack(rec_t))
        bad = hist.first_non_finite()
        if bad is not None:
            row, what = bad
            self.particles, self.reference_particles, good, self.iteration, gen_state = saved
            self.update.restore(good)
            if gen_state is not None:
                self.generator.set_state(gen_state)
            if callback is not None and row > 0:
                callback(hist[:row], self)
            raise_non_finite(hist, row, what)
        self.particles, self.reference_particles = x, x_ref
        self.iteration = k0 + b
        if callback is not None:
            callback(hist, self)
        return hist

    def _checked_once(self, r, x, gen_state):
        """The block's first rewards with their dtype and device checked (once a block:
        the loop itself stays lean); on a refusal the generator goes back to the block's
        start, so nothing has changed."""
        try:
            return self.estimator.checked_rewards(r, x)
        except UsageError:
            if gen_state is not None:
                self.generator.set_state(gen_state)
            raise

    def _empty(self) -> History:
        n_theta = sum(p.numel() for p in self.params)
        e = torch.empty(0, dtype=torch.long)
        return History(e, e.clone(), torch.empty(0), torch.empty(0, n_theta))

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything a bit-identical resume needs: the sampler's parameters, the
        particles, the iteration count and the random stream's state."""
        out = {f"sampler.{k}": v for k, v in self.sampler.state_dict().items()}
        out["particles"] = self.particles
        out["iteration"] = torch.tensor(self.iteration)
        if self.reference_particles is not None:
            out["reference_particles"] = self.reference_particles
        if self.generator is not None:
            out["generator_state"] = self.generator.get_state()
        if self.update.optimizer is not None:  # e.g. Adam's moments
            out.update(self.update.state_tensors(prefix="update."))
        return out

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_tensors` saved (e.g. read from a checkpoint).

        Raises :class:`UsageError` naming the mismatch if the checkpoint belongs to a
        different model or set-up (missing keys, other shapes).
        """
        expected = self.state_tensors()
        missing = sorted(set(expected) - set(tensors))
        extra = sorted(set(tensors) - set(expected))
        if missing or extra:
            raise UsageError(
                "checkpoint does not match this run: "
                + "; ".join(
                    part
                    for part in (
                        f"missing {', '.join(missing)}" if missing else "",
                        f"unexpected {', '.join(extra)}" if extra else "",
                    )
                    if part
                )
            )
        for key, value in expected.items():
            if tensors[key].shape != value.shape:
                raise UsageError(
                    f"checkpoint does not match this run: {key} has shape "
                    f"{tuple(tensors[key].shape)}, expected {tuple(value.shape)}"
                )
        params = {k[len("sampler.") :]: v for k, v in tensors.items() if k.startswith("sampler.")}
        self.sampler.load_state_dict(params)
        ref = next(iter(self.params))
        self.particles = tensors["particles"].to(ref.device, ref.dtype).clone()
        if self.reference_particles is not None:
            self.reference_particles = tensors["reference_particles"].to(ref.device, ref.dtype)
        self.iteration = int(tensors["iteration"])
        if self.update.optimizer is not None:
            self.update.load_state_tensors(tensors, prefix="update.")
        self.update.count = self.iteration
        if self.generator is not None:
            self.generator.set_state(tensors["generator_state"])
