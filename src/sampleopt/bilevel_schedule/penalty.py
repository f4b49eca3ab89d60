"""One upper-level step of the first-order penalty method for the noise schedule
(generative bilevel optimisation, Xiao et al. 2025, scenario 2; docs/bilevel-schedule.md).

Upper variable x: the four raw parameters of a
:class:`~sampleopt.diffusion.LearnableCosineSchedule`. Lower variable theta: the network's
weights. g(x, theta) is the DSM loss under schedule x, f(x, theta) a batch objective
(sample quality against validation data) of samples drawn with (x, theta). The penalty
hypergradient is

    h = grad_x f(x, theta_z) + gamma (grad_x g(x, theta_z) - grad_x g(x, theta_y)),

with theta_y tracking argmin_theta g and theta_z tracking argmin_theta f / gamma + g. A
step, from the trainer's current weights theta (the DSM iterate, which tracks argmin g):

1. theta_y' and theta_z both start at theta and take ``z_steps`` plain SGD steps (lr
   ``lr_z``) on the same DSM batches with the same t and noise: theta_y' on g alone,
   theta_z on g + f / gamma, grad_theta f by backpropagation through the last
   ``truncation`` DDPM steps of a chain of ``sample_steps`` (the earlier steps without
   a graph). Sharing start and batches makes theta_z - theta_y' the effect of f alone.
2. grad_x f: two-point zeroth-order estimate at theta_z, u ~ N(0, I_4),
   (f(x + delta u) - f(x - delta u)) / (2 delta) u, both chains with the same x_T and
   noises (common random numbers), averaged over ``directions``.
3. grad_x g at theta_z and theta_y': autograd of the DSM loss through alphabar(x), both
   on one batch with the same t and noise.
4. Adam on x with h (one step size per parameter), then projection onto the box.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from sampleopt.bilevel_schedule.domain import PARAMETERS, perturbed, project_, values_of
from sampleopt.bilevel_schedule.training import ScheduleTraining
from sampleopt.errors import NonFiniteError
from sampleopt.objectives.batch import evaluate_batch_objective
from sampleopt.samplers import DDPMSampler
from sampleopt.training.dsm import dsm_loss


@dataclass
class PenaltyOptions:
    gamma: float = 1.0
    delta: float = 0.01
    directions: int = 1
    z_steps: int = 1
    lr_z: float = 0.01
    truncation: int = 3
    upper_batch: int = 256
    sample_steps: int = 50
    batch: int = 256
    lr: tuple[float, ...] = (0.01, 0.01, 0.05, 0.01)


def _seed(gen: torch.Generator) -> torch.Generator:
    """A fresh generator seeded from ``gen`` (use it twice for common random numbers)."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))


class PenaltyScheduleUpdate:
    """The upper-level update of ``training``'s learnable schedule (see the module
    docstring); ``upper`` is a batch objective, ``data(n, generator)`` draws training
    data. :meth:`step` returns the step's diagnostics."""

    def __init__(
        self,
        training: ScheduleTraining,
        upper: Callable,
        data: Callable[[int, torch.Generator], torch.Tensor],
        options: PenaltyOptions,
    ):
        self.training, self.upper, self.data, self.o = training, upper, data, options
        sched = training.schedule
        self.params = [getattr(sched, name) for name in PARAMETERS]
        groups = [{"params": [p], "lr": lr} for p, lr in zip(self.params, options.lr, strict=True)]
        self.optimizer = torch.optim.Adam(groups)
        self.y_net = copy.deepcopy(training.net)
        self.z_net = copy.deepcopy(training.net)
        self.steps = 0

    # -- pieces ----------------------------------------------------------------------
    def _chain(self, net, schedule, x, noises, keep: int):
        """DDPM chain from x with the given noises; a graph only for the last ``keep``."""
        sampler = DDPMSampler(net, schedule, self.o.sample_steps, data_shape=(net.dim,))
        K = self.o.sample_steps
        with torch.no_grad():
            for k in range(K - keep):
                x = sampler.step(x, k, noises[k])
        for k in range(K - keep, K):
            x = sampler.step(x, k, noises[k])
        return x

    def _draw(self, gen):
        n, dim, K = self.o.upper_batch, self.training.net.dim, self.o.sample_steps
        x = torch.randn(n, dim, generator=gen)
        return x, [torch.randn(n, dim, generator=gen) for _ in range(K)]

    def _inner(self, gen) -> float:
        """theta_y' and theta_z: ``z_steps`` SGD steps from the trainer's weights."""
        o, frozen = self.o, self.training.frozen()
        state = self.training.net.state_dict()
        self.y_net.load_state_dict(state)
        self.z_net.load_state_dict(state)
        f_value = math.nan
        for _ in range(o.z_steps):
            batch, crn = self.data(o.batch, gen), _seed(gen)
            crn_state = crn.get_state()
            for net, upper in ((self.y_net, False), (self.z_net, True)):
                params = list(net.parameters())
                crn.set_state(crn_state)
                grads = torch.autograd.grad(dsm_loss(net, frozen, batch, crn), params)
                if upper:
                    x, noises = self._draw(gen)
                    f = evaluate_batch_objective(
                        self.upper, self._chain(net, frozen, x, noises, o.truncation)
                    )
                    f_value = float(f.detach())
                    extra = torch.autograd.grad(f / o.gamma, params, allow_unused=True)
                    grads = [g if e is None else g + e for g, e in zip(grads, extra, strict=True)]
                with torch.no_grad():
                    for p, g in zip(params, grads, strict=True):
                        p.sub_(o.lr_z * g)
        return f_value

    @torch.no_grad()
    def _zeroth_order(self, gen) -> tuple[torch.Tensor, list[float]]:
        o, sched = self.o, self.training.schedule
        grad = torch.zeros(len(PARAMETERS), dtype=self.params[0].dtype)
        values = []
        for _ in range(o.directions):
            u = torch.randn(len(PARAMETERS), generator=gen, dtype=grad.dtype)
            x, noises = self._draw(gen)
            pair = []
            for sign in (1.0, -1.0):
                samples = self._chain(self.z_net, perturbed(sched, u, sign * o.delta), x, noises, 0)
                pair.append(float(evaluate_batch_objective(self.upper, samples)))
            values += pair
            grad += (pair[0] - pair[1]) / (2 * o.delta * o.directions) * u
        return grad, values

    def _lower_gradients(self, gen) -> tuple[torch.Tensor, torch.Tensor]:
        sched = self.training.schedule
        batch, crn = self.data(self.o.batch, gen), _seed(gen)
        state, out = crn.get_state(), []
        for net in (self.z_net, self.y_net):
            crn.set_state(state)
            grads = torch.autograd.grad(dsm_loss(net, sched, batch, crn), self.params)
            out.append(torch.stack([g.detach() for g in grads]))
        return out[0], out[1]

    # -- the step --------------------------------------------------------------------
    def step(self, gen: torch.Generator) -> dict:
        f_z = self._inner(gen)
        zo, f_pair = self._zeroth_order(gen)
        gz, gy = self._lower_gradients(gen)
        penalty = self.o.gamma * (gz - gy)
        h = zo + penalty
        if not bool(torch.isfinite(h).all()):
            raise NonFiniteError(
                f"schedule hypergradient is {h.tolist()} at upper step {self.steps}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        for p, g in zip(self.params, h, strict=True):
            p.grad = g.reshape(p.shape).to(p.dtype)
        self.optimizer.step()
        project_(self.training.schedule)
        self.training.schedule_changed()
        self.steps += 1
        return {
            "f_z": f_z,
            "f_plus": f_pair[0],
            "f_minus": f_pair[1],
            "zo": zo.tolist(),
            "penalty": penalty.tolist(),
            **values_of(self.training.schedule),
        }
