"""Distances between two sets of samples, or between two Gaussians.

All take torch tensors (or arrays) of shape (n, ...) and flatten each sample to a
vector, so images (n, c, h, w) work as they are; x and y must have the same shape
per sample, and any number of samples each. Every function returns a Python float
computed in float64.

Which to use:

* :func:`sliced_wasserstein` — a true distance between the empirical laws, in the
  units of the data, cheap in any dimension; sensitive to where the mass is. Its
  value depends on the random projections (fixed by ``seed``) and it is not the
  Wasserstein distance itself (it is smaller: directions are averaged).
* :func:`mmd_rbf` — an unbiased estimate of MMD^2 (it can be negative when the laws
  are close); good for two-sample tests and averaging over repeats. Its scale
  depends on the bandwidths: compare values only at the same bandwidths.
* :func:`frechet_distance` / :func:`frechet_distance_from_features` — the distance
  between Gaussians fitted to two sets of features (FID when the features are
  Inception-v3's). It sees only means and covariances. A Frechet distance computed
  from another network's features (e.g. a small MNIST classifier) is a different
  number: it is not comparable with published Inception FIDs, only with itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from sampleopt.errors import UsageError

DEFAULT_BANDWIDTHS = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)


def _as_matrix(x, what: str, dtype=torch.float64) -> torch.Tensor:
    """A (n, p) float64 tensor from an (n, ...) tensor or array."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as e:
            raise UsageError(
                f"{what} must be a tensor of shape (n, ...), got {type(x).__name__}"
            ) from e
    if x.ndim < 1:
        raise UsageError(f"{what} must have shape (n, ...) (one row per sample), got a scalar")
    x = x.detach().to("cpu", dtype)
    return x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(-1, 1)


def _pair(x, y, min_n: int, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    shape_x = tuple(x.shape) if hasattr(x, "shape") else None
    shape_y = tuple(y.shape) if hasattr(y, "shape") else None
    xm, ym = _as_matrix(x, f"{name}: x"), _as_matrix(y, f"{name}: y")
    shape_x = shape_x if shape_x is not None else tuple(xm.shape)
    shape_y = shape_y if shape_y is not None else tuple(ym.shape)
    if shape_x[1:] != shape_y[1:]:
        raise UsageError(
            f"{name}: x and y must have the same shape per sample, got {shape_x} and {shape_y}"
        )
    for what, m in (("x", xm), ("y", ym)):
        if m.shape[0] < min_n:
            raise UsageError(f"{name}: {what} needs at least {min_n} samples, got {m.shape[0]}")
        if not bool(torch.isfinite(m).all()):
            raise UsageError(f"{name}: {what} contains NaN or inf")
    return xm, ym


def sliced_wasserstein(x, y, *, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between the empirical laws of x and y.

    SW_2(x, y) = ( mean over directions u of W_2^2(u^T x, u^T y) )^(1/2), with
    ``n_projections`` directions drawn uniformly on the sphere from ``seed``: POT's
    ``ot.sliced_wasserstein_distance`` with p = 2 (uniform weights, samples
    flattened). In 1-D the only directions are +-1, so it is exactly W_2 between the
    two empirical laws. In d dimensions it is smaller than W_2 (for two Gaussians
    that differ by a shift m it is |m| / sqrt(d), up to projection noise), and a
    Monte-Carlo estimate over directions: compare values only at the same seed and
    number of projections. Between two finite samples of the same law it is not 0
    but of order n^(-1/2).
    """
    import ot

    if isinstance(n_projections, bool) or not isinstance(n_projections, int) or n_projections < 1:
        raise UsageError(
            f"sliced_wasserstein: n_projections must be an integer >= 1, got {n_projections!r}"
        )
    xm, ym = _pair(x, y, 1, "sliced_wasserstein")
    value = ot.sliced_wasserstein_distance(
        xm.numpy(), ym.numpy(), n_projections=n_projections, p=2, seed=seed
    )
    return float(value)


def mmd_rbf(x, y, bandwidths: Sequence[float] = DEFAULT_BANDWIDTHS) -> float:
    """Unbiased estimate of the squared maximum mean discrepancy MMD^2(P, Q) with the
    kernel k(a, b) = sum_h exp(-|a - b|^2 / (2 h^2)) over ``bandwidths`` h.

    MMD^2_u = mean_{i != j} k(x_i, x_j) + mean_{i != j} k(y_i, y_j) - 2 mean_{i, j} k(x_i, y_j)
    (Gretton et al. 2012, eq. 3): the diagonal terms are left out, so its expectation
    is exactly MMD^2 (0 when P = Q) and single values can be negative. Cost O((n +
    m)^2 p) time and O(n m) memory. The default bandwidths span 0.25..32, which suits
    data of scale about 1 to a few tens (the toy laws, images in [-1, 1]); for other
    scales pass bandwidths near the typical distance between samples.
    """
    hs = [float(h) for h in bandwidths]
    if not hs or any(not np.isfinite(h) or h <= 0 for h in hs):
        raise UsageError(f"mmd_rbf: bandwidths must be a non-empty list of numbers > 0, got {hs}")
    xm, ym = _pair(x, y, 2, "mmd_rbf")

    def kernel_sum(a, b, same: bool) -> float:
        d2 = torch.cdist(a, b).square()
        total = sum(torch.exp(-d2 / (2 * h * h)) for h in hs)
        if same:  # leave out k(a_i, a_i) = len(hs)
            return (float(total.sum()) - len(hs) * a.shape[0]) / (a.shape[0] * (a.shape[0] - 1))
        return float(total.mean())

    return kernel_sum(xm, xm, True) + kernel_sum(ym, ym, True) - 2 * kernel_sum(xm, ym, False)


def _check_gaussian(mu, cov, what: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu.detach().cpu() if isinstance(mu, torch.Tensor) else mu, dtype=np.float64)
    cov = np.asarray(cov.detach().cpu() if isinstance(cov, torch.Tensor) else cov, dtype=np.float64)
    if mu.ndim != 1 or cov.shape != (mu.shape[0], mu.shape[0]):
        raise UsageError(
            f"frechet_distance: {what} needs a mean of shape (p,) and a covariance of shape "
            f"(p, p), got {mu.shape} and {cov.shape}"
        )
    if not (np.isfinite(mu).all() and np.isfinite(cov).all()):
        raise UsageError(f"frechet_distance: {what} mean or covariance contains NaN or inf")
    return mu, cov


def frechet_distance(mu1, cov1, mu2, cov2, *, eps: float = 1e-6) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2):

        |mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2)).

    The matrix square root is ``scipy.linalg.sqrtm``; rounding gives it a tiny
    imaginary part, which is dropped (the real part is taken, as pytorch-fid does).
    If the square root is not finite (nearly singular covariances, e.g. fewer
    samples than features) it is recomputed with ``eps`` added to both diagonals.
    This is the quantity behind FID, which is this distance between Gaussians
    fitted to Inception-v3 features; the function itself knows nothing of features.
    """
    from scipy import linalg

    mu1, cov1 = _check_gaussian(mu1, cov1, "the first Gaussian")
    mu2, cov2 = _check_gaussian(mu2, cov2, "the second Gaussian")
    if mu1.shape != mu2.shape:
        raise UsageError(
            f"frechet_distance: the two Gaussians must have the same dimension, got "
            f"{mu1.shape[0]} and {mu2.shape[0]}"
        )
    covmean = linalg.sqrtm(cov1 @ cov2)
    if not np.isfinite(covmean).all():
        offset = eps * np.eye(cov1.shape[0])
        covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2 * np.trace(covmean))


def frechet_distance_from_features(f1, f2) -> float:
    """:func:`frechet_distance` between Gaussians fitted to two sets of features of
    shape (n, p) (sample mean and unbiased covariance; at least 2 rows each).

    With Inception-v3 pool features of images this is FID; with any other features
    (a small classifier's, raw pixels) it is a Frechet distance in that feature
    space, comparable only with values computed from the same features. Like FID it
    is biased upwards for small n; compare values computed from equal n.
    """
    a, b = _pair(f1, f2, 2, "frechet_distance_from_features")
    an, bn = a.numpy(), b.numpy()
    return frechet_distance(
        an.mean(0),
        np.atleast_2d(np.cov(an, rowvar=False)),
        bn.mean(0),
        np.atleast_2d(np.cov(bn, rowvar=False)),
    )
