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
from sampleopt.errors import UsageError

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


class Brightness(nn.Module):
    """Mean pixel intensity in [0, 1] of images in [-1, 1]:
    r(x) = mean(clamp((x + 1) / 2, 0, 1)) over all but the batch axis (Marion et al.
    2025, 5.2: "digits grow thicker"). Pixels are clamped to the displayable range as
    when the image is saved, so a sampler gains nothing by leaving [-1, 1] (without
    the clamp fine-tuning finds that within ten steps); the gradient is that of the
    pixels inside the range."""

    def forward(self, x):
        if x.ndim < 2:
            raise UsageError(f"Brightness expects images (n, ...), got shape {tuple(x.shape)}")
        return ((x.flatten(1) + 1) * 0.5).clamp(0.0, 1.0).mean(1)


class DigitProbability(nn.Module):
    """The probability the shipped MNIST classifier gives to ``digit``:
    r(x) = softmax(classifier(x))[digit], or its log with ``log=True`` (a steeper
    signal when the probability is small). Differentiable through the frozen
    classifier (:func:`sampleopt.metrics.classifier.load_digit_classifier`); images
    (n, 1, 28, 28) in [-1, 1]."""

    def __init__(self, digit: int, *, log: bool = False, classifier: nn.Module | None = None):
        super().__init__()
        if isinstance(digit, bool) or not (isinstance(digit, int) and 0 <= digit <= 9):
            raise UsageError(f"digit must be an integer in 0 .. 9, got {digit!r}")
        if classifier is None:
            from sampleopt.metrics.classifier import load_digit_classifier

            classifier = load_digit_classifier()
        self.classifier = classifier.eval().requires_grad_(False)
        self.digit = digit
        self.log = bool(log)

    def train(self, mode: bool = True):  # the classifier stays in eval mode (no dropout)
        super().train(mode)
        self.classifier.eval()
        return self

    def forward(self, x):
        if x.shape[1:] != (1, 28, 28):
            raise UsageError(
                f"DigitProbability expects MNIST images (n, 1, 28, 28), got {tuple(x.shape)}"
            )
        logp = torch.log_softmax(self.classifier(x), dim=1)[:, self.digit]
        return logp if self.log else logp.exp()

    def extra_repr(self):
        return f"digit={self.digit}, log={self.log}"
