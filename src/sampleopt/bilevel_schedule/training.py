"""Training a denoiser from scratch under a noise schedule (fixed or learnable).

One :class:`ScheduleTraining` is a network, its EMA, Adam and a schedule. A step is one
Adam step of denoising score matching (:func:`sampleopt.training.dsm.dsm_loss`) on a
batch drawn with the caller's generator; the schedule enters as a frozen copy, so DSM
steps never move a learnable schedule (only the upper level does). Samples are DDPM
ancestral samples (posterior variance) over ``sample_steps`` respaced steps, from the
EMA weights unless asked otherwise.
"""

from __future__ import annotations

import copy
import math

import torch

from sampleopt.bilevel_schedule.domain import FrozenSchedule
from sampleopt.diffusion.schedules import NoiseSchedule
from sampleopt.errors import NonFiniteError
from sampleopt.samplers import DDPMSampler
from sampleopt.training.dsm import dsm_loss


class ScheduleTraining:
    def __init__(
        self,
        network: torch.nn.Module,
        schedule: NoiseSchedule,
        *,
        lr: float,
        ema_decay: float,
        grad_clip: float = 1.0,
    ):
        self.net = network
        self.ema = copy.deepcopy(network).requires_grad_(False)
        self.schedule = schedule
        self.optimizer = torch.optim.Adam(network.parameters(), lr=lr)
        self.ema_decay, self.grad_clip = ema_decay, grad_clip
        self.steps = 0
        self._frozen: FrozenSchedule | None = None

    def frozen(self) -> FrozenSchedule:
        """The current schedule, frozen (rebuilt after :meth:`schedule_changed`)."""
        if self._frozen is None:
            self._frozen = FrozenSchedule(self.schedule)
        return self._frozen

    def schedule_changed(self) -> None:
        self._frozen = None

    def step(self, x0: torch.Tensor, generator: torch.Generator) -> float:
        loss = dsm_loss(self.net, self.frozen(), x0, generator)
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteError(f"DSM loss is {value} at step {self.steps + 1}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.grad_clip)
        self.optimizer.step()
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.net.parameters(), strict=True):
                pe.lerp_(p, 1 - self.ema_decay)
        self.steps += 1
        return value

    @torch.no_grad()
    def sample(self, n: int, sample_steps: int, generator: torch.Generator, *, ema=True):
        net = self.ema if ema else self.net
        sampler = DDPMSampler(net, self.frozen(), sample_steps, data_shape=(net.dim,))
        return sampler.sample(n, generator=generator)
