"""Benchmark: Implicit Diffusion's single loop on experiment 5.1 (1000 particles x 5000
iterations), the work the official JAX implementation does.

Measures, on this machine:

* ``loop``: the steady-state in-process time of ``ImplicitDiffusion.run(5000)`` with
  the closed-form mixture potential (the default path of ``langevin-hex``), after a
  short warm-up, best and median of several repeats;
* ``compile``: one-time compilation (none: the loop is eager PyTorch);
* ``loop_sequential``: the same with ``order="sequential"`` (the official code's
  order: a second evaluation of the potential per iteration);
* ``loop_autograd``: the same loop with the potential written as a plain function
  whose gradients come from autograd (what a user-supplied potential costs);
* ``process``: the whole ``sampleopt run langevin-hex`` process for the same work
  (comparison and lam sweep switched off), from interpreter start to report;
* ``process_default``: the whole default ``langevin-hex`` run (with the baselines
  and the lam sweep), for information.

Prints a table and writes JSON (default ``benchmarks/results/langevin_loop.json``).
Usage: ``python benchmarks/langevin_loop.py [--repeats 5] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import sampleopt as so
from sampleopt.experiments.langevin_hex import THETA_0

ITERATIONS, PARTICLES = 5000, 1000


def make_alg(autograd: bool, seed: int = 0, order: str = "parallel") -> so.ImplicitDiffusion:
    centres = so.hex_centres()
    if autograd:

        def energy(x, theta):
            d2 = ((x[:, None, :] - centres) ** 2).sum(-1)
            return -torch.logsumexp(torch.log_softmax(theta, 0) - d2 / 2, 1)

        potential = so.FunctionPotential(energy, torch.tensor(THETA_0), dim=2)
    else:
        potential = so.GaussianMixturePotential(centres, torch.tensor(THETA_0))
    sampler = so.LangevinSampler(potential, 0.2)
    return so.ImplicitDiffusion(
        sampler,
        so.Objective(so.HexReward()),
        n_particles=PARTICLES,
        lr=0.1,
        generator=torch.Generator().manual_seed(seed),
        order=order,
    )


def time_loop(autograd: bool, repeats: int, order: str = "parallel") -> dict:
    make_alg(autograd, order=order).run(200)  # warm-up: allocator, MKL, first-call paths
    times, rewards = [], []
    for _ in range(repeats):
        alg = make_alg(autograd, order=order)
        t0 = time.perf_counter()
        hist = alg.run(ITERATIONS)
        times.append(time.perf_counter() - t0)
        rewards.append(float(hist.reward_mean[-1]))
    return {
        "best_s": min(times),
        "median_s": statistics.median(times),
        "all_s": times,
        "final_reward_mean": rewards[0],
    }


def time_process(extra: list[str], repeats: int) -> dict:
    exe = Path(sys.executable).with_name("sampleopt")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sampleopt.cli"]
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            argv = [
                *cmd,
                "run",
                "langevin-hex",
                "--seed",
                "0",
                "--out",
                f"{tmp}/run",
                "--no-progress",
                *extra,
            ]
            t0 = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True)
            times.append(time.perf_counter() - t0)
    return {
        "best_s": min(times),
        "median_s": statistics.median(times),
        "all_s": times,
        "command": " ".join(["sampleopt", "run", "langevin-hex", "--seed", "0", *extra]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/langevin_loop.json")
    args = parser.parse_args()

    results = {
        "work": f"{PARTICLES} particles x {ITERATIONS} iterations (Marion et al. 5.1)",
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "targets": {"loop_s": 0.5, "process_s_official_jax": 4.1},
        "compile_s": 0.0,
        "loop": time_loop(False, args.repeats),
        "loop_sequential": time_loop(False, args.repeats, order="sequential"),
        "loop_autograd": time_loop(True, max(1, args.repeats // 2)),
        "process": time_process(["--set", "compare=false", "--set", "lam_sweep="], args.repeats),
        "process_default": time_process([], 1),
    }
    rows = [
        ("loop, closed-form mixture (in-process)", results["loop"]),
        ("loop, same, sequential order (in-process)", results["loop_sequential"]),
        ("loop, autograd potential (in-process)", results["loop_autograd"]),
        ("whole process, same work", results["process"]),
        ("whole process, default run (+baselines, lam)", results["process_default"]),
    ]
    print(f"{'measurement':48s} {'best s':>8s} {'median s':>9s}")
    for name, r in rows:
        print(f"{name:48s} {r['best_s']:8.3f} {r['median_s']:9.3f}")
    print(f"{'one-time compilation':48s} {results['compile_s']:8.3f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
