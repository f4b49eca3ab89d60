"""Objectives: rewards r(x) -> (n,), divergences to a reference sampler, and batch-level
objectives l(x_1 .. x_n) -> a scalar (sample quality against data)."""

from sampleopt.objectives.batch import (
    BatchObjective,
    MMDObjective,
    SlicedWassersteinObjective,
    evaluate_batch_objective,
)
from sampleopt.objectives.divergences import (
    KL_DIRECTIONS,
    Divergence,
    GibbsKL,
    PathKL,
    estimate_path_kl,
)
from sampleopt.objectives.objective import Objective
from sampleopt.objectives.rewards import Brightness, DigitProbability, HexReward, evaluate_reward

__all__ = [
    "KL_DIRECTIONS",
    "BatchObjective",
    "Brightness",
    "DigitProbability",
    "Divergence",
    "GibbsKL",
    "HexReward",
    "MMDObjective",
    "Objective",
    "PathKL",
    "SlicedWassersteinObjective",
    "evaluate_batch_objective",
    "estimate_path_kl",
    "evaluate_reward",
]
