"""The uniform law on the unit sphere S^{D-1} in R^D: the data of the ``guidance-sphere``
experiment (docs/guidance-sphere.md), after the sphere ("unit ball") data of the
reference code of gradient guidance (Guo et al. 2024; docs/methods.md section 6).

x = u / |u| with u ~ N(0, I_D): the normalised standard Gaussian is uniform on the
sphere, because the Gaussian is rotation invariant. Mean 0, covariance I_D / D, and
|x| = 1 exactly (up to float rounding). A sampler that stays on the data's support keeps
| |x| - 1 | small (:func:`sphere_distance`); guidance that leaves it shows up there.
"""

from __future__ import annotations

import torch

from sampleopt.errors import UsageError

#: the ambient dimension of the registered data set "sphere" (docs/guidance-sphere.md)
SPHERE_DIM = 4


def unit_sphere(
    n: int,
    dim: int = SPHERE_DIM,
    *,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """``n`` samples, shape (n, dim), of the uniform law on the unit sphere in R^dim:
    u / |u| with u ~ N(0, I) drawn (in float64) from ``generator``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise UsageError(f"unit_sphere: n must be an integer >= 0, got {n!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise UsageError(f"unit_sphere: dim must be an integer >= 1, got {dim!r}")
    u = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    norm = u.norm(dim=1, keepdim=True)
    # a draw with u = 0 has probability zero; were it to happen, map it to e_1
    u = torch.where(norm > 0, u, torch.nn.functional.one_hot(torch.tensor(0), dim).to(u))
    return (u / u.norm(dim=1, keepdim=True)).to(dtype)


def sphere_distance(x: torch.Tensor) -> torch.Tensor:
    """| |x| - 1 | per sample, shape (n,), for x of shape (n, D): the distance of each
    sample to the unit sphere (computed in float64, returned in float64)."""
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise UsageError(
            f"sphere_distance expects a tensor of shape (n, D), got {getattr(x, 'shape', x)!r}"
        )
    return (x.to(torch.float64).norm(dim=1) - 1.0).abs()
