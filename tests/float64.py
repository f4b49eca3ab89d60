"""Shared test helpers: build modules in float64."""

from __future__ import annotations

import contextlib

import torch

F64 = torch.float64


@contextlib.contextmanager
def float64_modules():
    """Build modules in float64 (the constructors use the default dtype); the default
    is restored on exit, so nothing outside the ``with`` block sees the change."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


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
