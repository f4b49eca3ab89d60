"""Shared test helpers: build modules in float64."""

from __future__ import annotations

import torch

from sampleopt.testing import float64_modules

F64 = torch.float64
__all__ = ["F64", "build64", "float64_modules"]


def build64(factory, *args, **kwargs):
    """``factory(*args, **kwargs)`` built in float64; every tensor it holds is checked."""
    with float64_modules():
        module = factory(*args, **kwargs)
    if isinstance(module, torch.Tensor):
        assert module.dtype == F64
        return module
    for name, t in (*module.named_parameters(), *module.named_buffers()):
        assert t.dtype == F64, f"{type(module).__name__}.{name} is {t.dtype}"
    return module
