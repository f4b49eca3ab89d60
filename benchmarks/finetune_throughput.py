"""Benchmark: network evaluations per second of finite-time Implicit Diffusion (the
queue) against the nested-loop adjoint, at equal batch size.

Both make one theta update from a batch of ``n`` samples and spend the same forward
network evaluations per update (K sampling steps and K recomputations in the adjoint
sweep, per sample). The nested loop (``FineTuner(sampler, objective,
AdjointEstimator())``) runs its K sampling steps one after another on the batch; the
queue (``QueuedImplicitDiffusion``) advances K batches by one step in one network call.
Measured on the shipped models with the reverse-SDE sampler, after warm-up (the queue
filled), best of ``--repeats`` runs of ``--updates`` updates; Adam, lam = 0.

Prints a table and writes ``benchmarks/results/finetune_throughput.json``.
Usage: ``python benchmarks/finetune_throughput.py [--updates 10] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from pathlib import Path

import torch

import sampleopt as so
from sampleopt.objectives import Brightness

CASES = [  # (model, batch size, K, reward)
    ("hex", 64, 20, lambda x: -((x - torch.tensor([4.0, 3.8])) ** 2).sum(1) / 10),
    ("mnist", 4, 20, Brightness()),
    ("mnist", 16, 20, Brightness()),
]


def make_algorithm(sampler, objective, method: str, n: int):
    """``"adjoint"``: the nested loop with the adjoint estimator; ``"implicit"``: the queue."""
    if method == "implicit":
        return so.QueuedImplicitDiffusion(
            sampler, objective, batch_size=n, lr=1e-6, optimizer="adam"
        )
    return so.FineTuner(sampler, objective, so.AdjointEstimator(), batch_size=n, lr=1e-6)


def measure(model: str, n: int, K: int, reward, method: str, updates: int, repeats: int):
    base = so.load_base_model(model)
    sampler = so.ReverseSDESampler(
        copy.deepcopy(base.denoiser), base.schedule, K, data_shape=base.data_shape
    )
    ft = make_algorithm(sampler, so.Objective(reward), method, n)
    ft.run(1)  # warm-up (fills the queue)
    best = float("inf")
    for _ in range(repeats):
        e0, t0 = ft.network_evals, time.perf_counter()
        ft.run(updates)
        dt = time.perf_counter() - t0
        best = min(best, dt)
        evals = ft.network_evals - e0
    return {"seconds_per_update": best / updates, "network_evals_per_second": evals / best}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--updates", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    print("| model | n | K | method | s / update | network evals / s |")
    print("|---|---|---|---|---|---|")
    for model, n, K, reward in CASES:
        for method in ("adjoint", "implicit"):
            r = measure(model, n, K, reward, method, args.updates, args.repeats)
            rows.append({"model": model, "n": n, "K": K, "method": method, **r})
            print(
                f"| {model} | {n} | {K} | {method} | {r['seconds_per_update']:.3f} | "
                f"{r['network_evals_per_second']:.0f} |",
                flush=True,
            )
    for model, n, _, _ in CASES:
        a, q = (
            next(r for r in rows if (r["model"], r["n"], r["method"]) == (model, n, m))
            for m in ("adjoint", "implicit")
        )
        ratio = q["network_evals_per_second"] / a["network_evals_per_second"]
        print(f"{model}, n = {n}: queue / nested = {ratio:.2f}")
    out = args.out / "finetune_throughput.json"
    out.write_text(
        json.dumps(
            {
                "rows": rows,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "machine": platform.platform(),
            },
            indent=2,
        )
    )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
