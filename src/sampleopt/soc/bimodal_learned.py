"""A learned score for the 1-D bimodal benchmark (:mod:`sampleopt.soc.bimodal`).

The shipped base model ``bimodal-ou`` is an eps-predicting MLP trained by ``sampleopt
train`` on the benchmark's own noising (the "ou" schedule, alphabar_tau = e^{-4 tau / T}
on the integer grid tau = 0 .. T, i.e. forward level s = tau / T). Its score is

    score(x, t) = -eps(x, tau) / sqrt(1 - alphabar_tau),   tau = round((1 - t) T),

with t the generative time (t = 0 noise, t = 1 data): t = 0 maps to tau = T (full
noise, s = 1), and times within 1 / (2T) of t = 1 are clamped to tau = 1 (the score at
tau = 0, clean data, is not learned). Use it in place of the exact score::

    chain = base_chain(steps=50, score=learned_score())
"""

from __future__ import annotations

import math

import torch

from sampleopt.diffusion.schedules import schedule_from_config
from sampleopt.errors import UsageError

MODEL = "bimodal-ou"


def score_from_base_model(base, dtype: torch.dtype = torch.float64, device=None):
    """The score callable (x (n, 1), t) -> (n, 1) of a loaded 1-D base model ``base``."""
    if tuple(base.data_shape) != (1,):
        raise UsageError(f"expected a 1-D base model, got data shape {base.data_shape}")
    model = base.denoiser.to(dtype=dtype, device=device).requires_grad_(False).eval()
    big_t = base.schedule.num_train_steps
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # alphabar in float64, not the stored float32
    try:
        ab = schedule_from_config(base.meta["schedule"]).alphabar().detach()
    finally:
        torch.set_default_dtype(old)
    scale = [0.0] + [1.0 / math.sqrt(1.0 - float(a)) for a in ab[1:]]

    def score(x, t: float) -> torch.Tensor:
        t = float(t)
        if not 0.0 <= t < 1.0:
            raise UsageError(f"t must be a generative time in [0, 1), got {t}")
        x = torch.as_tensor(x, dtype=dtype, device=device)
        if x.ndim != 2 or x.shape[1] != 1:
            raise UsageError(f"x must have shape (n, 1), got {tuple(x.shape)}")
        tau = max(1, min(big_t, round((1.0 - t) * big_t)))
        pred = model(x, torch.full((x.shape[0],), tau, dtype=torch.long, device=x.device))
        if model.prediction == "eps":
            return -pred * scale[tau]
        from sampleopt.diffusion.parameterization import convert

        a, s = math.sqrt(float(ab[tau])), math.sqrt(1.0 - float(ab[tau]))
        return convert(pred, model.prediction, "score", x, a, s)

    score.num_train_steps = big_t
    return score


def learned_score(dtype: torch.dtype = torch.float64, device=None):
    """The score of the shipped ``bimodal-ou`` model as (x (n, 1), t float in [0, 1)) ->
    (n, 1), differentiable in x (the weights are frozen); see the module docstring."""
    from sampleopt.models.pretrained import load_base_model

    return score_from_base_model(load_base_model(MODEL), dtype, device)
