"""Gradient estimators, each returning a surrogate loss.

An estimator combines a sampler and an objective into a scalar whose
``.backward()`` leaves the gradient estimate of l(theta) in the sampler's
parameters' ``.grad``, so any torch optimiser, gradient accumulation or DDP works
unchanged. Swapping an estimator is one argument. :class:`Estimator` is the shared
contract (docs/methods.md section 3.7); :data:`ESTIMATORS` names them.
"""

from sampleopt.estimators.adjoint import AdjointEstimator
from sampleopt.estimators.adjoint_matching import AdjointMatching
from sampleopt.estimators.base import Estimator, resolve_params, surrogate_from_grads
from sampleopt.estimators.covariance import CovarianceEstimator
from sampleopt.estimators.exact import exact_moments, exact_objective
from sampleopt.estimators.registry import ESTIMATORS, make_estimator
from sampleopt.estimators.score_function import Rollout, ScoreFunctionEstimator
from sampleopt.estimators.tr_bsde import TimeReversedBSDE
from sampleopt.estimators.unrolled import TruncatedEstimator, UnrolledEstimator
from sampleopt.estimators.zeroth_order import ZerothOrderEstimator

__all__ = [
    "ESTIMATORS",
    "AdjointEstimator",
    "AdjointMatching",
    "CovarianceEstimator",
    "Estimator",
    "Rollout",
    "ScoreFunctionEstimator",
    "TimeReversedBSDE",
    "TruncatedEstimator",
    "UnrolledEstimator",
    "ZerothOrderEstimator",
    "exact_moments",
    "exact_objective",
    "make_estimator",
    "resolve_params",
    "surrogate_from_grads",
]
