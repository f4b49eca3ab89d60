"""Benchmark: the gradient estimators' accuracy against the exact oracle, and their cost.

1. Accuracy (float64, CPU; ``benchmarks/estimator_accuracy.py``): three linear-Gaussian
   chains with a quadratic reward on which the exact gradient is known in closed form
   (an affine chain, the exact DDPM sampler of Gaussian data, and the exact reverse-SDE
   sampler with the path KL to another one, all with K = 10), R gradients of n = 64
   samples per estimator: relative bias, its noise scale, bias/SE, max |z| and the
   relative standard deviation per sample. An estimator that refuses a chain is
   recorded as "refused" with its message.

2. Cost (``benchmarks/estimator_cost.py``): the pretrained ``hex`` model with the
   reverse-SDE sampler at K = 10, 100, 1000 and n = 256 points: the time of one gradient
   relative to one no-grad sampling pass, and the peak extra memory of one gradient,
   each measured in a fresh subprocess (this script with a hidden ``--_memory-child NAME
   K`` option). Summary: adjoint peak at K = 1000 over K = 100 (target <= 1.5) and
   adjoint time / sampling time at K = 1000 (target <= 3).

The estimators are built by name from the registry (``so.make_estimator``); the
measurements are described in full in the two modules' docstrings, the tables and the
figure are made by ``benchmarks/estimator_report.py``.

Prints markdown tables and writes ``estimators.json`` (all numbers, config, versions,
machine), ``estimators.md`` (the tables) and ``estimators.png`` to
``benchmarks/results/`` (``--out DIR`` elsewhere). Part 1 always runs on the CPU
(the oracle builds its matrices there); ``--device`` applies to part 2.

Usage: ``python benchmarks/estimators.py [--quick] [--repeats 3] [--ks 10 100 1000]
[--device cpu] [--only accuracy|cost] [--out DIR]``. ``--quick``: R = 20 repeats in
part 1 (default 200) and one timing repeat (unless ``--repeats`` is given).
Default run: a few minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the sibling modules, however this file is started
    sys.path.insert(0, str(HERE))

from estimator_accuracy import N_ACCURACY, ZO_DELTA, run_accuracy  # noqa: E402
from estimator_cost import (  # noqa: E402
    N_COST,
    TARGET,
    cost_summary,
    memory_child,
    run_memory,
    run_timing,
)
from estimator_report import accuracy_table, cost_table, plot, summary_text  # noqa: E402

DEFAULT_OUT = HERE / "results"


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        sys.exit(f"error: the output folder {folder} is not writable ({e}); pass --out DIR")


def machine_info(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["cuda_device"] = torch.cuda.get_device_name(device)
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="R = 20, one timing repeat")
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats (default 3)")
    parser.add_argument("--R", type=int, default=None, help="accuracy repeats (default 200)")
    parser.add_argument("--ks", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--n", type=int, default=N_COST, help="points of part 2 (default 256)")
    parser.add_argument("--device", default="cpu", help="device of part 2 (cpu, cuda, ...)")
    parser.add_argument("--only", choices=["accuracy", "cost"], default=None)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    parser.add_argument("--_memory-child", nargs=2, dest="memory_child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.memory_child:
        name, K = args.memory_child
        print(json.dumps(memory_child(name, int(K), args.n, device)))
        return
    check_writable(args.out)
    R = args.R or (20 if args.quick else 200)
    repeats = args.repeats or (1 if args.quick else 3)
    t_start = time.perf_counter()
    accuracy = timing = memory = summary = None
    sections = []
    if args.only in (None, "accuracy"):
        print(f"part 1: accuracy, R = {R}, n = {N_ACCURACY} (float64, cpu)", flush=True)
        accuracy = run_accuracy(R, N_ACCURACY)
        sections.append(
            f"## Accuracy against the exact oracle (float64, R = {R} repeats of n = "
            f"{N_ACCURACY})\n\n{accuracy_table(accuracy)}\n\nrel. bias = |mean - exact| / "
            "|exact|; SE scale = |SE| / |exact|; bias/SE ~ 1 when unbiased; max abs z over "
            "the coordinates whose estimate varies (const.: coordinates it never changes, "
            "e.g. truncated steps); rel. std/sample = sqrt(n) |std| / |exact|."
        )
    if args.only in (None, "cost"):
        print(f"part 2: cost, hex reverse SDE, n = {args.n}, K = {args.ks}, {device}", flush=True)
        timing = run_timing(args.ks, args.n, repeats, device)
        memory = run_memory(args.ks, args.n, device)
        summary = cost_summary(timing, memory)
        sections.append(
            f"## Cost on the hex model (reverse SDE, n = {args.n}, float32, {device}, best of "
            f"{repeats})\n\n{cost_table(timing, memory)}\n\n{summary_text(summary)}"
        )
    elapsed = time.perf_counter() - t_start
    text = "\n\n".join(sections)
    print("\n" + text + f"\n\ntotal time: {elapsed:.0f} s")
    config = {
        "quick": args.quick,
        "accuracy_repeats": R,
        "accuracy_n": N_ACCURACY,
        "accuracy_dtype": "float64",
        "zeroth_order_delta": ZO_DELTA,
        "cost_n": args.n,
        "cost_ks": args.ks,
        "cost_sampler": "sde",
        "cost_reward": f"-|x - {TARGET}|^2 / 10",
        "timing_repeats": repeats,
        "device": str(device),
    }
    result = {
        "config": config,
        "machine": machine_info(device),
        "elapsed_s": elapsed,
        "accuracy": accuracy,
        "timing": timing,
        "memory": memory,
        "summary": summary,
    }
    out = args.out
    (out / "estimators.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "estimators.md").write_text(
        f"# Gradient estimators benchmark\n\n{machine_info(device)['platform']}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} thread(s), total {elapsed:.0f} s\n\n"
        f"{text}\n"
    )
    plot(out / "estimators.png", accuracy, timing, memory)
    print(f"written: {out / 'estimators.json'}, estimators.md, estimators.png")


if __name__ == "__main__":
    main()
