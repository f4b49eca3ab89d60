"""Affine Gaussian chains: the test bed on which every estimator has an exact answer.

    x_{k+1} = W_k x_k + b_k + s_k xi_k,    x_0 ~ N(0, I),

with W_k (d x d) and b_k trainable and fixed noise scales s_k. The law of x_K is
Gaussian and :func:`sampleopt.estimators.exact_objective` gives E[r(x_K)], the path
KL and their exact gradients for quadratic rewards (docs/methods.md section 2). Draw a random one
with :meth:`AffineChain.random` to check an estimator on a chain with no structure
(a user's own estimator included).
"""

from __future__ import annotations

import torch
from torch import nn

from sampleopt.errors import UsageError
from sampleopt.samplers.chain import GaussianChain


class AffineChain(GaussianChain):
    """A Gaussian chain whose mean is affine in x: ``weight`` (K, d, d), ``bias``
    (K, d), ``noise_scales`` (K,) (>= 0; 0 is a deterministic step)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, noise_scales: torch.Tensor):
        super().__init__()
        weight, bias = torch.as_tensor(weight), torch.as_tensor(bias)
        noise_scales = torch.as_tensor(noise_scales, dtype=weight.dtype)
        if weight.ndim != 3 or weight.shape[1] != weight.shape[2]:
            raise UsageError(f"weight must have shape (K, d, d), got {tuple(weight.shape)}")
        K, d = weight.shape[0], weight.shape[1]
        if bias.shape != (K, d):
            raise UsageError(f"bias must have shape ({K}, {d}), got {tuple(bias.shape)}")
        if noise_scales.shape != (K,) or bool((noise_scales < 0).any()):
            raise UsageError(f"noise_scales must be {K} numbers >= 0")
        self.weight = nn.Parameter(weight.clone())
        self.bias = nn.Parameter(bias.clone().to(weight.dtype))
        self.register_buffer("noise_scales", noise_scales.clone())
        self.num_steps = K
        self.dim = d
        self._scales = [float(s) for s in noise_scales]

    @classmethod
    def random(
        cls,
        dim: int,
        num_steps: int,
        *,
        seed: int = 0,
        contraction: float = 0.9,
        noise: tuple[float, float] = (0.2, 0.8),
        dtype: torch.dtype = torch.float64,
    ) -> AffineChain:
        """A random chain: W_k Gaussian rescaled to spectral norm ``contraction`` (so
        the chain neither explodes nor dies), b_k ~ N(0, I), s_k uniform in ``noise``."""
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(num_steps, dim, dim, generator=g, dtype=dtype)
        W = contraction * W / torch.linalg.matrix_norm(W, ord=2)[:, None, None]
        b = torch.randn(num_steps, dim, generator=g, dtype=dtype)
        lo, hi = noise
        s = lo + (hi - lo) * torch.rand(num_steps, generator=g, dtype=dtype)
        return cls(W, b, s)

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (self.dim,)

    def mean(self, x, k):
        return x @ self.weight[k].T + self.bias[k]

    def noise_scale(self, k):
        return self._scales[k]

    def sample_x0(self, n, generator=None):
        w = self.weight
        return torch.randn(n, self.dim, generator=generator, dtype=w.dtype, device=w.device)
