"""Objectives: rewards r(x) -> (n,) and divergences to a reference sampler."""

from sampleopt.objectives.objective import KL_DIRECTIONS, Objective
from sampleopt.objectives.rewards import Brightness, DigitProbability, HexReward, evaluate_reward

__all__ = [
    "KL_DIRECTIONS",
    "Brightness",
    "DigitProbability",
    "HexReward",
    "Objective",
    "evaluate_reward",
]
