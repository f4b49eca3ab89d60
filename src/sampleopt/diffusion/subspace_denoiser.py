"""The exact denoiser of Gaussian data on a linear subspace, trainable in the latent
space (docs/guidance-subspace.md, "The exact subspace model").

Data x_0 = A u with A a (D, d) matrix of orthonormal columns and u ~ N(m, C) in the
latent space, C = B B^T. Under x_t = a_t x_0 + s_t eps only the latent coordinates
r = A^T x_t carry information about u (the rest of x_t is pure noise), r = a_t u + s_t eps'
with eps' ~ N(0, I_d), so Tweedie's formula is Gaussian conditioning in R^d:

    x0hat(x_t) = A [ m + a_t C (a_t^2 C + s_t^2 I_d)^{-1} (A^T x_t - a_t m) ],
    eps*(x_t) = (x_t - a_t x0hat) / s_t.

With m = 0 and C = I_d this is the pretrained model of
:class:`~sampleopt.data.SubspaceGaussian` (x0hat = a_t A A^T x_t, as a_t^2 + s_t^2 = 1).

The trainable parameters are the latent mean ``m`` (d,) and the latent factor ``B``
(d, d): every value of them keeps x0hat, and so every sample, on span(A). That matters
for Algorithm 2 of Guo et al. (2024), which fine-tunes the model with Adam: Adam
normalises each coordinate's step, so a parameter whose gradient is rounding noise (an
ambient mean's off-subspace part, say) would still move by a full step each round and
carry the model off the subspace. Parameterised in the latent space no parameter can.
"""

from __future__ import annotations

import torch
from torch import nn

from sampleopt.diffusion.denoisers import Denoiser
from sampleopt.diffusion.schedules import NoiseSchedule
from sampleopt.errors import UsageError


class SubspaceGaussianDenoiser(Denoiser):
    """Exact eps-predictor of N(A m, A B B^T A^T) data (see the module docstring).

    Args:
        A: (D, d) basis with orthonormal columns (e.g. ``SubspaceGaussian(64, 16).A``);
            its dtype (use float64 for an oracle) is the model's.
        schedule: the noise schedule x_t = a_t x_0 + s_t eps.
        mean, factor: the initial latent mean (d,) and factor B (d, d); default 0 and I.
    """

    prediction = "eps"

    def __init__(self, A, schedule: NoiseSchedule, *, mean=None, factor=None):
        super().__init__()
        A = torch.as_tensor(A)
        if not A.is_floating_point():
            A = A.to(torch.get_default_dtype())
        if A.ndim != 2 or A.shape[1] > A.shape[0]:
            raise UsageError(f"A must have shape (D, d) with d <= D, got {tuple(A.shape)}")
        d = A.shape[1]
        gram = A.T.double() @ A.double()
        if not torch.allclose(gram, torch.eye(d, dtype=torch.float64), atol=1e-5):
            raise UsageError("A must have orthonormal columns (A^T A = I)")
        if not isinstance(schedule, NoiseSchedule):
            raise UsageError(f"schedule must be a sampleopt NoiseSchedule, got {schedule!r}")
        mean = (
            torch.zeros(d, dtype=A.dtype) if mean is None else torch.as_tensor(mean, dtype=A.dtype)
        )
        factor = (
            torch.eye(d, dtype=A.dtype)
            if factor is None
            else torch.as_tensor(factor, dtype=A.dtype)
        )
        if mean.shape != (d,) or factor.shape != (d, d):
            raise UsageError(
                f"need a latent mean of shape ({d},) and factor of shape ({d}, {d}), got "
                f"{tuple(mean.shape)} and {tuple(factor.shape)}"
            )
        self.register_buffer("A", A.clone())
        self.schedule = schedule
        self.mean = nn.Parameter(mean.clone())
        self.factor = nn.Parameter(factor.clone())
        self.dim, self.latent_dim = A.shape

    def covariance(self) -> torch.Tensor:
        """The latent covariance C = B B^T, (d, d)."""
        return self.factor @ self.factor.T

    def latent_x0(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """E[u | x_t], shape (n, d)."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise UsageError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        a, s = self.schedule.a_s()
        a_t, s_t = a[t].to(x.dtype), s[t].to(x.dtype)
        C = self.covariance()
        eye = torch.eye(self.latent_dim, dtype=x.dtype, device=x.device)
        r = x @ self.A - a_t[:, None] * self.mean  # A^T x_t - a_t m, (n, d)
        if bool((t == t[0]).all()):  # one time for the batch (a sampler's step): one solve
            M = a_t[0] ** 2 * C + s_t[0] ** 2 * eye
            v = torch.linalg.solve(M, r.T).T
        else:
            M = a_t[:, None, None] ** 2 * C + s_t[:, None, None] ** 2 * eye
            v = torch.linalg.solve(M, r.unsqueeze(-1)).squeeze(-1)
        return self.mean + a_t[:, None] * (v @ C)  # C symmetric: (C v)^T = v^T C

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self.schedule.a_s()
        a_t, s_t = a[t].to(x.dtype)[:, None], s[t].to(x.dtype)[:, None]
        x0 = self.latent_x0(x, t) @ self.A.T
        return (x - a_t * x0) / s_t
