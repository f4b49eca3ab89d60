"""Objectives: rewards r(x) -> (n,) and divergences to a reference sampler."""

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
    "Brightness",
    "DigitProbability",
    "Divergence",
    "GibbsKL",
    "HexReward",
    "Objective",
    "PathKL",
    "estimate_path_kl",
    "evaluate_reward",
]
