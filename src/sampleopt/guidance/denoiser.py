"""Guided sampling as a denoiser transform (docs/guidance.md section 1).

:class:`GuidedDenoiser` wraps any sampleopt :class:`~sampleopt.diffusion.Denoiser` (an
MLP, the small UNet, a diffusers UNet through the adapter, an exact Gaussian denoiser)
and returns the prediction of the guided score s + G in the base's own kind (eps, x0,
v or score): eps' = eps - s_t G. Every diffusion sampler (DDPM, DDIM, reverse SDE,
probability flow) runs it unchanged, because a sampler only ever calls
``denoiser(x_t, t)``. With strength 0 it returns the base network's output itself, so
guided sampling is then bit-identical to unguided sampling.
"""

from __future__ import annotations

import torch

from sampleopt.checks import check_finite
from sampleopt.diffusion.denoisers import Denoiser
from sampleopt.diffusion.parameterization import PREDICTIONS, convert, from_eps, to_eps
from sampleopt.diffusion.schedules import NoiseSchedule
from sampleopt.errors import UsageError
from sampleopt.guidance.terms import Guidance


class GuidedDenoiser(Denoiser):
    """``denoiser`` steered by ``guidance`` under ``schedule`` (the one the denoiser was
    trained with: x_t = a_t x_0 + s_t eps). ``prediction`` is the base's; the guidance
    object may be swapped or re-targeted between sampling runs
    (``guided.guidance.set_target(g, y)``)."""

    def __init__(self, denoiser, schedule: NoiseSchedule, guidance: Guidance):
        super().__init__()
        kind = getattr(denoiser, "prediction", None)
        if not callable(denoiser) or kind not in PREDICTIONS:
            raise UsageError(
                "GuidedDenoiser needs a denoiser that can give x0hat: a module called as "
                "denoiser(x_t, t) whose `prediction` attribute is one of "
                f"{', '.join(PREDICTIONS)}; got {type(denoiser).__name__} with prediction {kind!r}"
            )
        if not isinstance(schedule, NoiseSchedule):
            raise UsageError(f"schedule must be a sampleopt NoiseSchedule, got {schedule!r}")
        if not isinstance(guidance, Guidance):
            raise UsageError(
                "guidance must be a sampleopt Guidance object (NaiveGuidance or "
                f"LookAheadGuidance), got {guidance!r}"
            )
        self.denoiser = denoiser
        self.schedule = schedule
        self.guidance = guidance
        self.prediction = kind

    def scales(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a_t and s_t per row, shape (n,), in x's dtype."""
        if t.ndim != 1 or t.shape[0] != like.shape[0]:
            raise UsageError(f"t must have shape ({like.shape[0]},), got {tuple(t.shape)}")
        T = self.schedule.num_train_steps
        if bool(((t < 1) | (t > T)).any()):
            raise UsageError(f"guided times must lie in 1 .. {T} (the schedule's T)")
        a, s = self.schedule.a_s()
        return a[t].to(like.dtype), s[t].to(like.dtype)

    def _predict(self, t, a, s):
        """x -> (the base's output, its x0hat), checked finite (x0hat divides by a_t)."""
        kind = self.prediction

        def predict(x):
            pred = self.denoiser(x, t)
            if pred.shape != x.shape:
                raise UsageError(
                    f"the denoiser must return the shape of x, {tuple(x.shape)}, "
                    f"got {tuple(pred.shape)}"
                )
            x0 = convert(pred, kind, "x0", x, a, s)
            check_finite(x0.detach(), f"the denoiser's x0hat at t = {int(t.max())}")
            return pred, x0

        return predict

    def x0hat(self, x: torch.Tensor, t: torch.Tensor, *, guided: bool = False) -> torch.Tensor:
        """Tweedie's x0hat(x_t) = (x_t - s_t eps) / a_t of the base network, or of the
        guided prediction with ``guided=True``."""
        a, s = self.scales(t, x)
        shape = (-1,) + (1,) * (x.ndim - 1)
        a, s = a.reshape(shape), s.reshape(shape)
        pred = self(x, t) if guided else self.denoiser(x, t)
        return convert(pred, self.prediction, "x0", x, a, s)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not self.guidance.active:
            return self.denoiser(x, t)
        a_t, s_t = self.scales(t, x)
        shape = (-1,) + (1,) * (x.ndim - 1)
        a, s = a_t.reshape(shape), s_t.reshape(shape)
        G, pred = self.guidance.term(x, self._predict(t, a, s), a_t, s_t)
        eps = to_eps(pred, self.prediction, x, a, s) - s * G  # score + G -> eps'
        return from_eps(eps, self.prediction, x, a, s)

    def extra_repr(self) -> str:
        return f"guidance={self.guidance!r}"
