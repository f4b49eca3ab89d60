"""Small input checks shared by samplers, objectives and estimators.

They only look at shapes and dtypes (no device synchronisation) unless their
name says they look at values.
"""

from __future__ import annotations

import torch

from sampleopt.errors import NonFiniteError, UsageError


def check_per_sample(value: object, n: int, what: str) -> torch.Tensor:
    """Require a tensor of shape ``(n,)``: one number per sample."""
    if not isinstance(value, torch.Tensor):
        raise UsageError(
            f"{what} must return a torch.Tensor of shape ({n},), got {type(value).__name__}"
        )
    if value.shape != (n,):
        raise UsageError(
            f"{what} must return shape ({n},) (one value per sample), got {tuple(value.shape)}"
        )
    return value


def check_finite(value: torch.Tensor, what: str) -> torch.Tensor:
    """Raise :class:`NonFiniteError` if ``value`` holds NaN or inf (synchronises)."""
    if not bool(torch.isfinite(value).all()):
        bad = "NaN" if bool(torch.isnan(value).any()) else "inf"
        raise NonFiniteError(f"{what} contains {bad}")
    return value
