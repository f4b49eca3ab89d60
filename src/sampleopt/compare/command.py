"""The command line of the comparison: ``sampleopt compare TASK [--methods a,b,...]
[--budget N] [--seeds K] [--out DIR] [--no-progress]`` and ``sampleopt resume DIR`` of
its run folder (:mod:`sampleopt.compare.runner` does the work). Both run under
``accelerate launch --multi_gpu --num_processes P -m sampleopt.cli ...`` (or torchrun)
too: process 0 writes the run folder, the others run their share of the units
(:mod:`sampleopt.compare.parallel`)."""

from __future__ import annotations

from sampleopt.compare import parallel
from sampleopt.compare.methods import METHODS
from sampleopt.compare.runner import CompareConfig, run, work
from sampleopt.compare.tasks import get_task
from sampleopt.errors import UsageError
from sampleopt.rundir import RunDir


def add_parser(sub) -> None:
    """The ``compare`` subcommand of the CLI's subparsers ``sub``."""
    cmp = sub.add_parser(
        "compare",
        help="compare every method on a task with a known optimum, at equal budget",
        description="Run every method (or --methods) on TASK (bimodal, hex, subspace, mnist) "
        "until --budget network evaluations, with --seeds seeds each, and rank them by the "
        "gap J - J* of -E[r] + lam KL to the task's optimum: summary.json, report.md, "
        "gap_vs_evals.png, resumable with `sampleopt resume DIR`.",
    )
    cmp.add_argument("task", metavar="TASK", help="bimodal, hex, subspace or mnist")
    cmp.add_argument("--methods", metavar="A,B,...", help="methods to compare (default: all)")
    cmp.add_argument("--budget", type=int, metavar="N", help="network evaluations per run")
    cmp.add_argument("--seeds", type=int, default=3, metavar="K", help="seeds (default 3)")
    cmp.add_argument("--out", metavar="DIR", help="run folder (default: runs/compare-TASK-...)")
    cmp.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def command(args) -> int:
    """``sampleopt compare TASK [--methods a,b] [--budget N] [--seeds K] [--out DIR]``."""
    from pathlib import Path

    from sampleopt.compare.methods import get_method
    from sampleopt.config import to_dict, validate
    from sampleopt.rundir import default_run_path

    task = get_task(args.task)
    methods = tuple(METHODS)
    if args.methods is not None:
        methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
        if not methods:
            raise UsageError("--methods needs at least one method name")
        for m in methods:
            get_method(m)
    if args.budget is not None and args.budget <= 0:
        raise UsageError(f"--budget must be > 0 network evaluations, got {args.budget}")
    if args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    cfg = CompareConfig(task=task.name, methods=methods, budget=args.budget or 0, seeds=args.seeds)
    validate(cfg)
    rank, world = parallel.launched()
    store = parallel.connect() if world > 1 else None
    if rank > 0:
        work(store, rank, world)
        return 0
    path = Path(args.out) if args.out else default_run_path("runs", f"compare-{task.name}", 0)
    rd = RunDir(path)
    try:
        rd.write_json("config.json", {"compare": task.name, "config": to_dict(cfg)})
        print(f"run folder: {rd.path}", flush=True)
        summary = run(cfg, rd, not args.no_progress, False, store)
    finally:
        rd.close()
    return _print(summary, rd)


def resume(rd: RunDir, saved: dict, no_progress: bool) -> int:
    """``sampleopt resume DIR`` of a comparison's run folder."""
    from sampleopt.config import from_dict

    rank, world = parallel.launched()
    try:
        cfg = from_dict(CompareConfig, saved.get("config", {}))
        store = parallel.connect() if world > 1 else None
        if rank > 0:
            rd.close()
            work(store, rank, world)
            return 0
        if rd.file("summary.json").exists():
            status = rd.read_json("summary.json").get("status")
            if status == "completed":
                raise UsageError(f"nothing to resume: the comparison in {rd.path} finished")
        print(f"run folder: {rd.path} (resuming)", flush=True)
        summary = run(cfg, rd, not no_progress, True, store)
    finally:
        rd.close()
    return _print(summary, rd)


def _print(summary: dict, rd: RunDir) -> int:
    for i, r in enumerate(summary.get("table", []), 1):
        print(f"{i:2d}. {r['method']:18s} gap {r['gap_mean']:.4g} ± {r['gap_se']:.2g}")
    for r in summary.get("unavailable", []):
        print(f"    {r['method']:18s} not run (seed {r['seed']}): {r['reason']}")
    print(f"report: {rd.file('report.md')}")
    return 0
