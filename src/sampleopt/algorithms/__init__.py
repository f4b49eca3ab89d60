"""Algorithms: the outer loops of the papers, built from samplers, objectives and
estimators, all sharing one update core (:class:`Update`), one record type
(:class:`History`) and one callback signature ``callback(history, algorithm)``."""

from sampleopt.algorithms.finite_time import QueuedImplicitDiffusion
from sampleopt.algorithms.guided import GuidedOptimization
from sampleopt.algorithms.history import History
from sampleopt.algorithms.implicit_diffusion import ImplicitDiffusion
from sampleopt.algorithms.nested import FineTuner, NestedLoop
from sampleopt.algorithms.step_size import SCHEDULES, StepSize
from sampleopt.algorithms.update import OPTIMIZERS, Update

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "FineTuner",
    "GuidedOptimization",
    "History",
    "ImplicitDiffusion",
    "NestedLoop",
    "QueuedImplicitDiffusion",
    "StepSize",
    "Update",
]
