"""Small time-conditioned vector fields for low-dimensional states: controls u(x, t),
co-states phi(x, t) and scores s(x, t) with a continuous time t (docs/soc.md)."""

from __future__ import annotations

import math

import torch
from torch import nn


class TimeField(nn.Module):
    """(x (n, d), t (n,) floats) -> (n, d): Fourier features of t / horizon and x into
    ``blocks`` residual SiLU blocks of width ``hidden``, then a linear map to d.

    The last layer starts at zero, so a fresh control is u = 0 (the base) and a fresh
    co-state phi = 0. States of any shape are flattened and restored."""

    def __init__(
        self,
        dim: int,
        *,
        hidden: int = 32,
        blocks: int = 2,
        frequencies: int = 8,
        horizon: float = 1.0,
        zero_init: bool = True,
    ):
        super().__init__()
        self.dim, self.horizon = int(dim), float(horizon)
        self.register_buffer(
            "freqs", math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32) / 2
        )
        self.inp = nn.Linear(dim + 2 * frequencies, hidden)
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
            )
            for _ in range(blocks)
        )
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(hidden, dim))
        if zero_init:
            nn.init.zeros_(self.out[1].weight)
            nn.init.zeros_(self.out[1].bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(shape[0], -1)
        u = (t.to(flat.dtype) / self.horizon)[:, None] * self.freqs.to(flat.dtype)
        h = self.inp(torch.cat([flat, u.sin(), u.cos()], 1))
        for block in self.blocks:
            h = h + block(h)
        return self.out(h).reshape(shape)
