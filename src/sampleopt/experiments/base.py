"""What an experiment is: a name, a one-line description, a config dataclass and a
function that runs it into a run folder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    config_cls: type
    run: Callable[..., dict]  # run(config, rundir, progress: bool, resume: bool) -> summary
