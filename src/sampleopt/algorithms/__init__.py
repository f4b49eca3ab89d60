"""Algorithms: the outer loops of the papers, built from samplers, objectives and
estimators."""

from sampleopt.algorithms.finite_time import QueuedImplicitDiffusion
from sampleopt.algorithms.history import History
from sampleopt.algorithms.implicit_diffusion import ImplicitDiffusion
from sampleopt.algorithms.nested import NestedLoop
from sampleopt.algorithms.step_size import SCHEDULES, StepSize

__all__ = [
    "SCHEDULES",
    "History",
    "ImplicitDiffusion",
    "NestedLoop",
    "QueuedImplicitDiffusion",
    "StepSize",
]
