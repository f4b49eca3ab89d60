"""Gradient estimators, each returning a surrogate loss.

An estimator combines a sampler and an objective into a scalar whose
``.backward()`` leaves the gradient estimate of l(theta) in the sampler's
parameters' ``.grad``, so any torch optimiser, gradient accumulation or DDP works
unchanged. Swapping an estimator is one argument.
"""

from sampleopt.estimators.adjoint import AdjointEstimator, path_gradient
from sampleopt.estimators.common import estimate_path_kl
from sampleopt.estimators.covariance import CovarianceEstimator
from sampleopt.estimators.exact import exact_moments, exact_objective
from sampleopt.estimators.score_function import Rollout, ScoreFunctionEstimator
from sampleopt.estimators.unrolled import TruncatedEstimator, UnrolledEstimator
from sampleopt.estimators.zeroth_order import ZerothOrderEstimator

ESTIMATORS = {
    "covariance": CovarianceEstimator,
    "unrolled": UnrolledEstimator,
    "truncated": TruncatedEstimator,
    "adjoint": AdjointEstimator,
    "score-function": ScoreFunctionEstimator,
    "zeroth-order": ZerothOrderEstimator,
}

__all__ = [
    "ESTIMATORS",
    "AdjointEstimator",
    "CovarianceEstimator",
    "Rollout",
    "ScoreFunctionEstimator",
    "TruncatedEstimator",
    "UnrolledEstimator",
    "ZerothOrderEstimator",
    "exact_moments",
    "estimate_path_kl",
    "exact_objective",
    "path_gradient",
]
