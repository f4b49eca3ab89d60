"""Generative bilevel optimisation (Xiao et al. 2025; docs/bilevel.md): choosing the KL
strength lam so that an upper reward is maximised, with an inference-only lower level
(importance weights over base samples), the first-order penalty hypergradient, and grid,
random and Bayesian search as baselines."""

from sampleopt.bilevel.gaussian import GaussianTestBed
from sampleopt.bilevel.hypergradient import Hypergradient, penalty_hypergradient
from sampleopt.bilevel.importance import CollapsedWeightsWarning, Tilt
from sampleopt.bilevel.kl_strength import (
    ImportanceLowerLevel,
    KLStrengthBilevel,
    KLStrengthProblem,
    PenaltySchedule,
)
from sampleopt.bilevel.search import SEARCHES, SearchResult, search

__all__ = [
    "SEARCHES",
    "CollapsedWeightsWarning",
    "GaussianTestBed",
    "Hypergradient",
    "ImportanceLowerLevel",
    "KLStrengthBilevel",
    "KLStrengthProblem",
    "PenaltySchedule",
    "SearchResult",
    "Tilt",
    "penalty_hypergradient",
    "search",
]
