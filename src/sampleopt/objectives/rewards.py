"""Rewards: any callable ``r(x) -> (n,)`` (maximised).

sampleopt never wraps a reward: a plain function, a ``torch.nn.Module`` or a
reward from another library works as it is, as long as it returns one number per
sample. :func:`evaluate_reward` is the one place that checks this.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from sampleopt.checks import check_per_sample

Reward = Callable[[torch.Tensor], torch.Tensor]


def evaluate_reward(reward: Reward, x: torch.Tensor) -> torch.Tensor:
    """r(x) with its shape checked: one value per sample, shape ``(n,)``."""
    return check_per_sample(reward(x), x.shape[0], "the reward")


class HexReward(nn.Module):
    """The reward of Implicit Diffusion's experiment 5.1 (Marion et al. 2025, 5.1):

    hard:   r(x) = 1{x_1 >= 0} exp(-|x - (4, 3.8)|^2 / 20) / 2.5
    smooth: r(x) = sigmoid(x_1 / 0.5) exp(-|x - (4, 3.8)|^2 / 20) / 0.7

    The hard one is what the paper optimises; it has no useful pathwise gradient
    across the half-plane's edge, so pathwise (unrolled) estimators use the smooth
    one.
    """

    def __init__(self, smooth: bool = False):
        super().__init__()
        self.smooth = bool(smooth)
        self._make_constants(torch.get_default_dtype(), None)

    def _make_constants(self, dtype, device):
        # plain Python constants made into tensors of the module's dtype (rebuilt after
        # .double()/.to(), so no float32 rounding survives a conversion)
        kw = {"dtype": dtype, "device": device}
        self.register_buffer("target", torch.tensor([4.0, 3.8], **kw), persistent=False)
        self.register_buffer(
            "_minus_inv_tau", torch.full((2,), -1.0 / 20.0, **kw), persistent=False
        )
        self.register_buffer("_log_scale", torch.tensor(-math.log(2.5), **kw), persistent=False)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        self._make_constants(self.target.dtype, self.target.device)
        return out

    def forward(self, x):
        d = x - self.target
        if self.smooth:
            bump = torch.exp((d * d).sum(1) * (-1.0 / 20.0))
            return torch.sigmoid(x[:, 0] * 2.0) * bump * (1.0 / 0.7)
        # log(1/2.5) folded into the exponent; the indicator is a mask
        bump = torch.exp(torch.addmv(self._log_scale, d * d, self._minus_inv_tau))
        return bump.masked_fill_(x[:, 0] < 0, 0.0)

    def extra_repr(self):
        return f"smooth={self.smooth}"
