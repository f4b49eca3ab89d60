"""One comparison of every method on shared tasks with known optima (docs/leaderboard.md):
the tasks and their optima (:mod:`~sampleopt.compare.tasks`), the methods
(:mod:`~sampleopt.compare.methods`) and the ``sampleopt compare TASK`` command
(:mod:`~sampleopt.compare.runner`, :mod:`~sampleopt.compare.command`)."""

from sampleopt.compare.optimum import (
    Optimum,
    gaussian_quadratic_tilt,
    tilt_by_importance,
    tilt_on_grid,
)
from sampleopt.compare.tasks import TASKS, Task, get_task

__all__ = [
    "TASKS",
    "Optimum",
    "Task",
    "gaussian_quadratic_tilt",
    "get_task",
    "tilt_by_importance",
    "tilt_on_grid",
]
