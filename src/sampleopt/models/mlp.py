"""A time-conditioned MLP denoiser for low-dimensional data (the toy sets, the
subspace Gaussian)."""

from __future__ import annotations

from torch import nn

from sampleopt.diffusion.denoisers import Denoiser
from sampleopt.diffusion.parameterization import PREDICTIONS
from sampleopt.errors import UsageError
from sampleopt.models.embedding import TimeEmbedding


class TimeMLP(Denoiser):
    """x (n, d) and t (n,) -> prediction (n, d): [x, emb(t)] through ``depth`` SiLU
    layers of width ``hidden``, with the time embedding added to every hidden layer."""

    def __init__(
        self,
        dim: int,
        num_train_steps: int = 1000,
        hidden: int = 128,
        depth: int = 3,
        prediction: str = "eps",
    ):
        super().__init__()
        if prediction not in PREDICTIONS:
            raise UsageError(f"unknown prediction type {prediction!r}")
        self.prediction = prediction
        self.dim = int(dim)
        self.config = {
            "dim": dim,
            "num_train_steps": num_train_steps,
            "hidden": hidden,
            "depth": depth,
            "prediction": prediction,
        }
        self.embed = TimeEmbedding(num_train_steps, hidden)
        self.inp = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)
        self.act = nn.SiLU()

    def forward(self, x, t):
        e = self.embed(t)
        h = self.inp(x)
        for layer in self.layers:
            h = layer(self.act(h + e))
        return self.out(self.act(h))
