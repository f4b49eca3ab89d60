"""Estimators by name: the one table that configs, the CLI, tests and benchmarks use.

``--set estimator=adjoint`` in an experiment's config, ``make_estimator("truncated",
steps=4)`` in Python and the contract test over every estimator all read
:data:`ESTIMATORS`. A new estimator is registered by adding one line here.
"""

from __future__ import annotations

from sampleopt.errors import UsageError
from sampleopt.estimators.adjoint import AdjointEstimator
from sampleopt.estimators.adjoint_matching import AdjointMatching
from sampleopt.estimators.base import Estimator
from sampleopt.estimators.covariance import CovarianceEstimator
from sampleopt.estimators.score_function import ScoreFunctionEstimator
from sampleopt.estimators.tr_bsde import TimeReversedBSDE
from sampleopt.estimators.unrolled import TruncatedEstimator, UnrolledEstimator
from sampleopt.estimators.zeroth_order import ZerothOrderEstimator

ESTIMATORS: dict[str, type[Estimator]] = {
    cls.name: cls
    for cls in (
        AdjointEstimator,
        UnrolledEstimator,
        TruncatedEstimator,
        ScoreFunctionEstimator,
        ZerothOrderEstimator,
        CovarianceEstimator,
        AdjointMatching,
        TimeReversedBSDE,
    )
}


def make_estimator(name: str, **options) -> Estimator:
    """The estimator registered as ``name``, built with ``options`` (its constructor's
    keyword arguments); an unknown name or option is a :class:`UsageError`."""
    if name not in ESTIMATORS:
        raise UsageError(f"unknown estimator {name!r}; choose one of {', '.join(ESTIMATORS)}")
    try:
        return ESTIMATORS[name](**options)
    except TypeError as exc:
        raise UsageError(f"estimator {name!r} does not take these options: {exc}") from None
