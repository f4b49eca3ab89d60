"""Sinusoidal embeddings of the diffusion time (Vaswani et al. 2017; Ho et al. 2020)."""

from __future__ import annotations

import math

import torch
from torch import nn


class TimeEmbedding(nn.Module):
    """t in 0 .. T -> sinusoidal features of t / T, then a two-layer MLP."""

    def __init__(self, num_train_steps: int, dim: int):
        super().__init__()
        self.num_train_steps = int(num_train_steps)
        half = dim // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half) / max(half - 1, 1))
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * half, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        u = (t.to(self.freqs.dtype) * (1000.0 / self.num_train_steps))[:, None] * self.freqs
        return self.mlp(torch.cat([u.sin(), u.cos()], 1))
