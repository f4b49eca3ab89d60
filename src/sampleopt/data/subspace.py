"""Gaussian data on a linear subspace: the setting of gradient guidance's
experiments (Guo et al. 2024; docs/methods.md section 6).

x = A z with z ~ N(0, I_d) and A a random (D, d) matrix with orthonormal columns,
so x ~ N(0, A A^T): a degenerate Gaussian supported on span(A). A guided sampler
that leaves the subspace shows a growing off-support ratio |x_perp| / |x_par|.
"""

from __future__ import annotations

import math

import torch

from sampleopt.errors import UsageError


def random_orthonormal(ambient_dim: int, latent_dim: int, seed: int) -> torch.Tensor:
    """A (D, d) float64 matrix with orthonormal columns, a function of the seed only.

    QR of a standard Gaussian matrix drawn from ``torch.Generator().manual_seed(seed)``,
    with each column's sign fixed so that R has a positive diagonal (QR alone is
    unique only up to those signs, which differ between LAPACK builds). This is the
    Haar (uniform) law on such matrices.
    """
    g = torch.Generator().manual_seed(seed)
    gauss = torch.randn(ambient_dim, latent_dim, generator=g, dtype=torch.float64)
    q, r = torch.linalg.qr(gauss)
    signs = torch.sign(torch.diagonal(r))
    signs[signs == 0] = 1.0
    return q * signs[None, :]


class SubspaceGaussian:
    """x = A z, z ~ N(0, I_d), A a random orthonormal (ambient_dim, latent_dim) matrix.

    Attributes: ``A`` (D, d), ``mean`` (D,) zeros, ``covariance`` (D, D) = A A^T, all in
    ``dtype`` (float32 by default); the same ``seed`` gives the same A.
    """

    def __init__(
        self,
        ambient_dim: int = 64,
        latent_dim: int = 16,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
    ):
        for name, v in (("ambient_dim", ambient_dim), ("latent_dim", latent_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UsageError(f"SubspaceGaussian: {name} must be an integer >= 1, got {v!r}")
        if latent_dim > ambient_dim:
            raise UsageError(
                f"SubspaceGaussian: latent_dim ({latent_dim}) must be <= ambient_dim "
                f"({ambient_dim})"
            )
        self.ambient_dim = ambient_dim
        self.latent_dim = latent_dim
        self.seed = seed
        self.dtype = dtype
        self._A64 = random_orthonormal(ambient_dim, latent_dim, seed)
        self.A = self._A64.to(dtype)
        self.mean = torch.zeros(ambient_dim, dtype=dtype)
        self.covariance = (self._A64 @ self._A64.T).to(dtype)

    def __repr__(self) -> str:
        return (
            f"SubspaceGaussian(ambient_dim={self.ambient_dim}, latent_dim={self.latent_dim}, "
            f"seed={self.seed})"
        )

    def _check(self, x: torch.Tensor, what: str) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise UsageError(
                f"SubspaceGaussian.{what} expects a torch.Tensor of shape "
                f"(n, {self.ambient_dim}), got {type(x).__name__}"
            )
        if x.ndim != 2 or x.shape[1] != self.ambient_dim:
            raise UsageError(
                f"SubspaceGaussian.{what} expects x of shape (n, {self.ambient_dim}), "
                f"got {tuple(x.shape)}"
            )
        return x

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` samples, shape (n, D), in ``dtype``: x = A z, z ~ N(0, I_d)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise UsageError(f"SubspaceGaussian.sample: n must be an integer >= 0, got {n!r}")
        z = torch.randn(n, self.latent_dim, generator=generator, dtype=self.dtype)
        return z @ self.A.T

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The latent coordinates A^T x, shape (n, d)."""
        x = self._check(x, "project")
        return x @ self._A64.to(x.dtype)

    def off_support_ratio(self, x: torch.Tensor) -> torch.Tensor:
        """|x_perp| / |x_par| per sample, shape (n,), with x_par = A A^T x and
        x_perp = x - x_par (docs/methods.md section 6). Computed in float64 so that the ratio
        reflects x, not the arithmetic here (float32 samples give about 1e-7);
        inf where x_par = 0."""
        x64 = self._check(x, "off_support_ratio").to(torch.float64)
        coords = x64 @ self._A64  # |x_par| = |A^T x| because A has orthonormal columns
        perp = x64 - coords @ self._A64.T
        return (perp.norm(dim=1) / coords.norm(dim=1)).to(
            x.dtype if x.is_floating_point() else torch.float64
        )

    def log_prob_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log density, shape (n,), of the projected coordinates A^T x under
        N(0, I_d): -|A^T x|^2 / 2 - (d / 2) log(2 pi).

        This is not a density of x in R^D (the law of x has none: it is supported on a
        d-dimensional subspace); it ignores the off-support component x_perp.
        """
        z = self.project(x)
        return -0.5 * (z**2).sum(1) - 0.5 * self.latent_dim * math.log(2 * math.pi)
