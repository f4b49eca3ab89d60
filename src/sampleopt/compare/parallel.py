"""The comparison's units on several processes, when launched by ``accelerate launch``
(or torchrun): ``accelerate launch --multi_gpu --num_processes P -m sampleopt.cli compare
TASK`` (``--multi_gpu`` starts the P processes on a machine without GPUs too).

Units are independent (every unit seeds its own random streams), so the processes
split them and need no gradient traffic. No ``torch.distributed`` process group is
set up: a fine-tuner inside a unit must not average its gradients with another
process's unrelated unit. The processes meet only through the launcher's key-value
store (:func:`connect`) and the run folder:

1. Process 0 owns the run folder. It computes the optimum, takes in the unit files a
   killed launch left behind, and publishes the plan (:class:`Plan`): the folder, the
   config, the optimum and the units still to run.
2. Process r runs the plan's units r, r + P, r + 2P, ... Process 0 checkpoints its own
   units as in one process; process r > 0 commits each finished unit to
   ``units/unit-XXX.json`` (:func:`write_unit`, atomic), with its metrics rows.
3. Process 0 takes the unit files in as they appear (their rows go to
   ``metrics.jsonl``, their results to the checkpoint) and, once every unit is in,
   writes the summary and the report.

A kill loses only the units in progress: ``sampleopt resume DIR`` (under any number of
processes) takes the committed unit files in and runs the rest. The numbers do not
depend on the number of processes (tests/compare/test_compare_parallel.py).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sampleopt.rundir import atomic_write_text

UNITS = "units"  # the folder of the unit files, inside the run folder
WAIT = timedelta(hours=24)  # how long a process waits for the plan (process 0's optimum)


def launched() -> tuple[int, int]:
    """(rank, number of processes) from the launcher's environment; (0, 1) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else (0, 1)


def connect():
    """The launcher's key-value store (torchrun's agent store under ``accelerate
    launch``), under a prefix of its own; no process group is created."""
    import torch.distributed as dist

    store, _, _ = next(dist.rendezvous("env://", timeout=WAIT))
    return dist.PrefixStore("sampleopt-compare/", store)


@dataclass
class Plan:
    """What process 0 publishes: the run folder, the config (as a dict), the optimum
    and the units still to run."""

    folder: str
    config: dict
    optimum: dict
    pending: list[int]

    def share(self, store) -> None:
        store.set("plan", json.dumps(self.__dict__))

    @classmethod
    def receive(cls, store) -> Plan:
        """Wait for process 0's plan."""
        return cls(**json.loads(store.get("plan")))

    def mine(self, rank: int, world: int) -> list[int]:
        return self.pending[rank::world]


def unit_path(folder: str | os.PathLike, u: int) -> Path:
    return Path(folder) / UNITS / f"unit-{u:03d}.json"


def write_unit(folder: str | os.PathLike, u: int, record: dict) -> None:
    """Commit a finished unit's record (status, final, curve, reason, rows) atomically.
    NaN stays NaN (Python's JSON reads it back)."""
    path = unit_path(folder, u)
    path.parent.mkdir(exist_ok=True)
    atomic_write_text(path, json.dumps({"unit": u, **record}) + "\n")


def read_units(folder: str | os.PathLike) -> dict[int, dict]:
    """The committed unit records of the folder, by unit (a file that cannot be read,
    e.g. a stray temporary, is skipped: its unit is run again)."""
    out = {}
    for path in sorted((Path(folder) / UNITS).glob("unit-*.json")):
        try:
            record = json.loads(path.read_text())
            out[int(record["unit"])] = record
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def nan_to_none(values):
    """A list of floats with NaN as None (for the metrics rows)."""
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]
