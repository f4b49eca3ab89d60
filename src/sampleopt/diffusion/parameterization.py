"""What a denoising network predicts, and conversions between the choices.

With x_t = a_t x_0 + s_t eps (a_t^2 + s_t^2 = 1):

* ``"eps"``: the noise eps (Ho et al. 2020);
* ``"x0"``: the clean sample, Tweedie's denoiser x0hat = (x_t - s_t eps) / a_t;
* ``"v"``: the velocity v = a_t eps - s_t x_0 (Salimans & Ho 2022), so that
  eps = a_t v + s_t x_t and x_0 = a_t x_t - s_t v;
* ``"score"``: grad log p_t(x_t) = -eps / s_t.

:func:`convert` maps any one to any other given x_t and (a_t, s_t) broadcastable to
x_t. The conversions divide by a_t (to x0, from eps or score) or s_t (to score):
avoid "x0" at t = T when a_T = 0 and "score" at t = 0.
"""

from __future__ import annotations

import torch

from sampleopt.errors import UsageError

PREDICTIONS = ("eps", "x0", "v", "score")


def _check(kind: str) -> None:
    if kind not in PREDICTIONS:
        raise UsageError(
            f"unknown prediction type {kind!r}; choose one of {', '.join(PREDICTIONS)}"
        )


def to_eps(pred: torch.Tensor, kind: str, x_t: torch.Tensor, a, s) -> torch.Tensor:
    _check(kind)
    if kind == "eps":
        return pred
    if kind == "x0":
        return (x_t - a * pred) / s
    if kind == "v":
        return a * pred + s * x_t
    return -s * pred


def from_eps(eps: torch.Tensor, kind: str, x_t: torch.Tensor, a, s) -> torch.Tensor:
    _check(kind)
    if kind == "eps":
        return eps
    if kind == "x0":
        return (x_t - s * eps) / a
    if kind == "v":
        return (eps - s * x_t) / a  # a eps - s x0 with x0 = (x_t - s eps) / a
    return -eps / s


def convert(pred: torch.Tensor, source: str, target: str, x_t: torch.Tensor, a, s):
    """Convert a prediction of kind ``source`` into kind ``target`` at (x_t, a_t, s_t)."""
    _check(target)
    if source == target:
        _check(source)
        return pred
    return from_eps(to_eps(pred, source, x_t, a, s), target, x_t, a, s)
