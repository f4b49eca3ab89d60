"""Learning the noise schedule while a diffusion model trains from scratch (generative
bilevel optimisation, scenario 2; docs/bilevel-schedule.md): the schedule's domain and
box, the problems (data, validation, held-out test, objectives), a DSM trainer, the
penalty method's upper-level step and whole trainings with their compute."""

from sampleopt.bilevel_schedule.domain import BOX, COSINE, PARAMETERS, FrozenSchedule, project_
from sampleopt.bilevel_schedule.penalty import PenaltyOptions, PenaltyScheduleUpdate
from sampleopt.bilevel_schedule.problems import PROBLEMS, Problem, get_problem
from sampleopt.bilevel_schedule.runs import TrainOptions, evaluate, train
from sampleopt.bilevel_schedule.training import ScheduleTraining

__all__ = [
    "BOX",
    "COSINE",
    "PARAMETERS",
    "PROBLEMS",
    "FrozenSchedule",
    "PenaltyOptions",
    "PenaltyScheduleUpdate",
    "Problem",
    "ScheduleTraining",
    "TrainOptions",
    "evaluate",
    "get_problem",
    "project_",
    "train",
]
