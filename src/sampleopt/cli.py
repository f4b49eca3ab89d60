"""Command line: ``sampleopt list`` and ``sampleopt run NAME``.

Exit codes: 0 success; 1 the computation failed (NaN/inf, ...: the message says
what, and the run folder keeps everything computed before it); 2 a usage error
(unknown name or key, bad value, unwritable folder); 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path

from sampleopt import __version__
from sampleopt.config import apply_overrides, describe, from_dict, to_dict
from sampleopt.errors import SampleoptError, UsageError, describe_error
from sampleopt.experiments import EXPERIMENTS, get_experiment

FINISHED = ("completed", "done")  # "done": run folders of earlier versions


def _experiments_epilog() -> str:
    lines = ["experiments:"]
    for name, exp in sorted(EXPERIMENTS.items()):
        lines.append(f"  {name:16s} {exp.description}")
        for key, default, help_ in describe(exp.config_cls()):
            lines.append(f"      {key:18s} {default:14s} {help_}")
    return "\n".join(lines)


def _add_run_arguments(parser, name_help: str, default_out: str) -> None:
    """NAME, --set, --out, --seed and --no-progress, shared by `run` and `train`."""
    parser.add_argument("name", metavar="NAME", help=name_help)
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (repeatable), e.g. --set seed=3",
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help=f"run folder (default: {default_out}); must not exist or be empty",
    )
    parser.add_argument("--seed", type=int, metavar="N", help="random seed (same as --set seed=N)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config (every key, range and memory estimate), print it resolved "
        "and stop: no run folder is made",
    )


def _dry_run(name: str, cfg) -> int:
    import json

    print(json.dumps({"name": name, "config": to_dict(cfg)}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sampleopt",
        description="Optimise the parameters of a stochastic sampler so that what it samples "
        "maximises a reward (Implicit Diffusion and its baselines).",
        epilog="Run `sampleopt run --help` for the experiments and their config keys.",
    )
    parser.add_argument("--version", action="version", version=f"sampleopt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    sub.add_parser(
        "list",
        help="name the experiments, with a one-line description each",
        description="Name the experiments, with a one-line description each.",
    )
    run = sub.add_parser(
        "run",
        help="run an experiment into a run folder",
        description="Run an experiment. Writes, as it goes, a run folder with config.json, "
        "metrics.jsonl, summary.json, PNG plots, report.md and checkpoint.safetensors.",
        epilog=_experiments_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_arguments(run, "experiment name (see `sampleopt list`)", "runs/NAME-seedN-TIME")
    train = sub.add_parser(
        "train",
        help="train a base diffusion model (denoising score matching with EMA)",
        description="Train a base model into a run folder: config.json, metrics.jsonl, "
        "TensorBoard events, PNG samples and checkpoint.safetensors (resumable).",
        epilog=_presets_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_run_arguments(
        train, "training preset (see `sampleopt list`)", "runs/train-NAME-seedN-TIME"
    )
    finetune = sub.add_parser(
        "finetune",
        help="fine-tune the shipped MNIST diffusion model for a reward",
        description="Fine-tune the shipped MNIST model for REWARD (brightness or digit) with "
        "a path KL to the base: the experiment mnist-REWARD (config keys: `sampleopt run "
        "--help`; algorithm=queue|nested, estimator=NAME (a registered estimator), lam, "
        "lr, updates, lora_rank, ...). Runs under `accelerate launch` unchanged.",
    )
    _add_run_arguments(finetune, "reward: brightness or digit", "runs/mnist-REWARD-seedN-TIME")
    export = sub.add_parser(
        "export",
        help="ship a finished training run's EMA weights as a named base model",
        description="Write DIR's EMA weights and config as sampleopt/pretrained/NAME.* "
        "(load with sampleopt.load_base_model(NAME)).",
    )
    export.add_argument("folder", metavar="DIR", help="a finished `sampleopt train` run folder")
    export.add_argument("name", metavar="NAME", help="base-model name")
    export.add_argument("--to", metavar="FOLDER", help="target folder (default: the package's)")
    ev = sub.add_parser(
        "evaluate",
        help="measure the sample quality of a shipped base model",
        description="Sample a shipped base model and compare with held-out data: sliced "
        "Wasserstein, MMD and exact data log-density for low-dimensional models; classifier "
        "FID and class histogram for MNIST. Writes summary.json and PNGs to --out.",
    )
    ev.add_argument("name", metavar="NAME", help="base model (sampleopt.available_base_models())")
    ev.add_argument("--out", metavar="DIR", help="folder for summary.json and plots")
    ev.add_argument("--n", type=int, default=2000, help="number of samples (default 2000)")
    ev.add_argument("--sampler", default="ddpm", help="ddpm, ddim, sde or ode (default ddpm)")
    ev.add_argument("--steps", type=int, default=100, help="sampling steps (default 100)")
    ev.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    from sampleopt.compare.command import add_parser as add_compare_parser

    add_compare_parser(sub)
    resume = sub.add_parser(
        "resume",
        help="continue an interrupted or failed run from its last checkpoint",
        description="Continue a run folder from its last checkpoint with its saved config. "
        "The resumed run ends exactly where the uninterrupted run would have.",
    )
    resume.add_argument("folder", metavar="DIR", help="the run folder")
    resume.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def _presets_epilog() -> str:
    from sampleopt.training import PRESETS, TrainConfig

    lines = ["presets:"]
    for name, cfg in PRESETS.items():
        lines.append(f"  {name:12s} {cfg.dataset} data, {cfg.model} model, {cfg.steps} steps")
    lines.append("config keys:")
    for key, default, help_ in describe(TrainConfig()):
        lines.append(f"      {key:18s} {default:14s} {help_}")
    return "\n".join(lines)


def cmd_list() -> int:
    from sampleopt.training import PRESETS

    width = max(len(n) for n in (*EXPERIMENTS, *PRESETS)) + 6
    print("experiments (sampleopt run NAME):")
    for name, exp in sorted(EXPERIMENTS.items()):
        print(f"  {name:{width}s}{exp.description}")
    print("base-model training (sampleopt train NAME):")
    for name, cfg in PRESETS.items():
        print(f"  {name:{width}s}denoising score matching, {cfg.dataset} data, {cfg.model}")
    return 0


def cmd_train(args) -> int:
    from sampleopt.rundir import RunDir, default_run_path
    from sampleopt.training import PRESETS, DSMTrainer

    if args.name not in PRESETS:
        raise UsageError(f"unknown training preset {args.name!r}; available: {', '.join(PRESETS)}")
    overrides = list(args.overrides) + ([f"seed={args.seed}"] if args.seed is not None else [])
    cfg = apply_overrides(PRESETS[args.name], overrides)
    if args.dry_run:
        return _dry_run(args.name, cfg)
    path = Path(args.out) if args.out else default_run_path("runs", f"train-{args.name}", cfg.seed)
    rd = RunDir(path)
    try:
        rd.write_json("config.json", {"training": args.name, "config": to_dict(cfg)})
        print(f"run folder: {rd.path}", flush=True)
        return _finish_training(DSMTrainer(cfg, rd), rd, args.no_progress)
    finally:
        rd.close()


def cmd_evaluate(args) -> int:
    import json

    from sampleopt.evaluation import evaluate_base_model
    from sampleopt.rundir import atomic_write_text, check_writable

    if args.n < 2:
        raise UsageError(f"--n must be >= 2, got {args.n}")
    if args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    out = Path(args.out) if args.out else None
    if out is not None:
        check_writable(out)
    try:
        result = evaluate_base_model(
            args.name, out, n=args.n, sampler=args.sampler, num_steps=args.steps, seed=args.seed
        )
    except BaseException as exc:
        if out is not None:
            failed = {"status": "failed", "error": describe_error(exc), "model": args.name}
            atomic_write_text(out / "summary.json", json.dumps(failed, indent=2) + "\n")
        raise
    if out is not None:
        done = {"status": "completed", **result}
        atomic_write_text(out / "summary.json", json.dumps(done, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


def cmd_export(args) -> int:
    from sampleopt.models.pretrained import PRETRAINED_DIR, export_base_model

    folder = Path(args.to) if args.to else PRETRAINED_DIR
    path = export_base_model(args.folder, args.name, folder)
    print(f"base model {args.name!r}: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def _finish_training(trainer, rd, no_progress: bool) -> int:
    """Train to the end; summary.json says ``running``, then ``completed`` or ``failed``
    with the error."""
    rd.write_json("summary.json", {"status": "running", "step": trainer.step})
    try:
        stats = trainer.train(progress=not no_progress)
    except BaseException as exc:
        rd.write_json(
            "summary.json", {"status": "failed", "error": describe_error(exc), "step": trainer.step}
        )
        raise
    rd.write_json("summary.json", {"status": "completed", **stats})
    print(f"checkpoint: {rd.file('checkpoint.safetensors')}")
    return 0


def _finished(rd) -> bool:
    """Whether the folder's summary says the run finished (an unreadable summary, e.g.
    cut short by a kill, does not: the run is resumed)."""
    if not rd.file("summary.json").exists():
        return False
    try:
        return rd.read_json("summary.json").get("status") in FINISHED
    except UsageError:
        return False


def _launched_rank() -> int:
    """This process's rank when started by `accelerate launch` / torchrun with several
    processes (the process group is set up here), else 0. Every process runs the whole
    experiment with the same seeds; the fine-tuner averages their gradients; rank 0
    writes the run folder."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch.distributed as dist
    from accelerate import PartialState

    PartialState()  # sets up the process group (gloo on CPU, NCCL on GPU)
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))


def cmd_run(args) -> int:
    from sampleopt.rundir import RunDir, default_run_path

    resume = args.command == "resume"
    rank = 0
    if resume:
        rd = RunDir(args.folder, resume=True)
        saved = rd.read_json("config.json")
        if "training" in saved:
            return _resume_training(rd, saved, args.no_progress)
        if "compare" in saved:
            from sampleopt.compare.command import resume as resume_compare

            return resume_compare(rd, saved, args.no_progress)
        exp = get_experiment(saved.get("experiment", "?"))
        cfg = from_dict(exp.config_cls, saved.get("config", {}))
        if _finished(rd):
            rd.close()
            raise UsageError(f"nothing to resume: the run in {rd.path} finished")
    else:
        exp = get_experiment(args.name)
        overrides = list(args.overrides)
        if args.seed is not None:
            overrides.append(f"seed={args.seed}")
        cfg = apply_overrides(exp.config_cls(), overrides)
        if args.dry_run:
            return _dry_run(exp.name, cfg)
        seed = dataclasses.asdict(cfg).get("seed", 0)
        path = Path(args.out) if args.out else default_run_path("runs", exp.name, seed)
        rank = _launched_rank()
        if rank > 0:  # another process of `accelerate launch`: it writes to a scratch folder
            import tempfile

            path = Path(tempfile.mkdtemp(prefix=f"sampleopt-rank{rank}-"))
            args.no_progress = True
        rd = RunDir(path)
    scratch = not resume and rank > 0
    try:
        if not resume:
            rd.write_json("config.json", {"experiment": exp.name, "config": to_dict(cfg)})
        if not scratch:
            print(f"run folder: {rd.path}", flush=True)
        summary = exp.run(cfg, rd, not args.no_progress, resume)
    finally:
        rd.close()
        if scratch:
            import shutil

            shutil.rmtree(rd.path, ignore_errors=True)
    if scratch:
        return 0
    for key in ("reward_mean", "mixture_weights"):
        if key in summary:
            print(f"{key}: {summary[key]}")
    print(f"report: {rd.file('report.md')}")
    return 0


def _resume_training(rd, saved: dict, no_progress: bool) -> int:
    from sampleopt.training import TrainConfig
    from sampleopt.training.dsm import resume_trainer

    try:
        cfg = from_dict(TrainConfig, saved.get("config", {}))
        trainer = resume_trainer(rd, cfg)
        if trainer.step >= cfg.steps:
            raise UsageError(f"nothing to resume: the training in {rd.path} finished")
        print(f"run folder: {rd.path} (resuming at step {trainer.step})", flush=True)
        return _finish_training(trainer, rd, no_progress)
    finally:
        rd.close()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        return _dispatch(args)


def _one_line_warning(message, category, *args, **kwargs) -> None:
    print(f"sampleopt: warning: {message}", file=sys.stderr)


def _dispatch(args) -> int:
    try:
        if args.command == "list":
            return cmd_list()
        if args.command == "train":
            return cmd_train(args)
        if args.command == "export":
            return cmd_export(args)
        if args.command == "evaluate":
            return cmd_evaluate(args)
        if args.command == "compare":
            from sampleopt.compare.command import command as cmd_compare

            return cmd_compare(args)
        if args.command == "finetune":
            if args.name not in ("brightness", "digit"):
                raise UsageError(f"unknown reward {args.name!r}; choose brightness or digit")
            args.name = f"mnist-{args.name}"
        return cmd_run(args)
    except UsageError as exc:
        print(f"sampleopt: error: {exc}", file=sys.stderr)
        return 2
    except SampleoptError as exc:
        print(f"sampleopt: failed: {exc}", file=sys.stderr)
        return 1
    except (Exception, MemoryError) as exc:  # noqa: BLE001 - one line, never a traceback
        print(
            f"sampleopt: failed: {describe_error(exc)} (an unexpected error: the run folder "
            "keeps what was written; please report it)",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print(
            "sampleopt: interrupted; the run folder keeps what was written "
            "(continue it with `sampleopt resume DIR`)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
