"""Sample-quality metrics: distances between two sets of samples or two Gaussians
(see :mod:`sampleopt.metrics.distances` for which to use when)."""

from sampleopt.metrics.distances import (
    DEFAULT_BANDWIDTHS,
    frechet_distance,
    frechet_distance_from_features,
    mmd_rbf,
    sliced_wasserstein,
)

__all__ = [
    "DEFAULT_BANDWIDTHS",
    "frechet_distance",
    "frechet_distance_from_features",
    "mmd_rbf",
    "sliced_wasserstein",
]
