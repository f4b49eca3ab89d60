"""The learning-rate probe behind the MNIST settings of `sampleopt compare`
(docs/leaderboard.md section 4): each method at each learning rate, 8,000 network
evaluations, seed 0, scored on 128 of the comparison's held-out paths.

    OMP_NUM_THREADS=1 python scripts/compare_lr_probe.py adjoint,score-function 5e-5,5e-6
    OMP_NUM_THREADS=1 python scripts/compare_lr_probe.py guidance 0.3,0.1 --param sigma_y

``--param`` probes another numeric setting of :class:`sampleopt.compare.methods.Method`
(``sigma_y``, ``delta``, ``strength`` of guidance) instead of ``lr``; ``--set`` fixes
others (``--set delta=0.05``). Bad input (an unknown method, task or setting, a value
that is not a finite positive number) gets one line and exit code 2.

Prints one row per (method, lr): evaluations, training seconds, J with its standard
error, E[r], the path KL and the gap to the task's optimum J* (of docs/leaderboard.md
section 1, -0.1950 on mnist; pass --j-star to use another).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time

import torch

from sampleopt.compare.methods import Run, get_method
from sampleopt.compare.problem import Problem
from sampleopt.compare.runner import EVAL_SEED
from sampleopt.compare.tasks import get_task
from sampleopt.errors import UsageError

PARAMS = ("lr", "delta", "strength", "sigma_y")  # the Method settings that are positive reals


def positive(text: str, what: str) -> float:
    """A finite value > 0, or a UsageError naming ``what``."""
    try:
        value = float(text)
    except ValueError:
        raise UsageError(f"{what} must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{what} must be finite and > 0, got {text!r}")
    return value


def parse(argv: list[str] | None) -> tuple[argparse.Namespace, list[float], dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("methods", help="comma-separated method names")
    ap.add_argument("lrs", help="comma-separated values of --param (learning rates)")
    ap.add_argument("--param", default="lr", choices=PARAMS, help="the Method setting to probe")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="fix another of those settings (repeatable)")  # fmt: skip
    ap.add_argument("--task", default="mnist")
    ap.add_argument("--budget", type=int, default=8000)
    ap.add_argument("--eval-n", type=int, default=128)
    ap.add_argument("--j-star", type=float, default=-0.1950)
    args = ap.parse_args(argv)
    try:
        values = [positive(v, f"a value of {args.param}") for v in args.lrs.split(",")]
        fixed = {}
        for item in args.set:
            name, eq, value = item.partition("=")
            if not eq or name not in PARAMS:
                raise UsageError(f"--set takes NAME=VALUE with NAME one of {', '.join(PARAMS)}, "
                                 f"got {item!r}")  # fmt: skip
            fixed[name] = positive(value, f"--set {name}")
        for name in args.methods.split(","):
            get_method(name)
        get_task(args.task)
        if args.budget < 1 or args.eval_n < 2 or not math.isfinite(args.j_star):
            raise UsageError("--budget must be >= 1, --eval-n >= 2 and --j-star finite")
    except UsageError as exc:
        ap.error(str(exc))  # one line and exit code 2
    return args, values, fixed


def main(argv: list[str] | None = None) -> int:
    args, values, fixed = parse(argv)
    problem = Problem(get_task(args.task))
    print(f"| method | {args.param} | evaluations | train s | J | E[r] | path KL | gap |")
    print("|---|---|---|---|---|---|---|---|")
    for name in args.methods.split(","):
        for lr in values:
            method = dataclasses.replace(
                get_method(name).for_task(args.task), **fixed, **{args.param: lr}
            )
            torch.manual_seed(0)  # every row seeded on its own: rows do not depend on others
            run = Run(method, problem, 0)
            t0 = time.perf_counter()
            while run.network_evals < args.budget:
                run.step()
            seconds = time.perf_counter() - t0
            ev = problem.evaluate(run.chain(), args.eval_n, EVAL_SEED)
            print(
                f"| {name} | {lr:g} | {run.network_evals:,} | {seconds:.0f} | "
                f"{ev['objective']:.4f} ± {ev['objective_se']:.4f} | {ev['reward']:.4f} | "
                f"{ev['kl']:.3f} | {ev['objective'] - args.j_star:.4f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
