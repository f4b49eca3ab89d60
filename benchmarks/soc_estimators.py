"""Benchmark: time and peak memory per update of the stochastic-optimal-control
estimators against the adjoint estimator (docs/soc.md section 6).

One update = one ``estimator.loss(...)``, its backward and an Adam step, on

* ``bimodal``: the 1-D bimodal benchmark's exact base (50 steps, float64) with a
  ``TimeField`` control, 512 paths, lam = 1, fixed initial law;
* ``mnist``: the shipped MNIST UNet, reverse SDE with K = 20, batches of 8, brightness,
  lam = 0.05 (TR-BSDE with the experiment's settings: 2 score steps of 16 transitions).

Methods: ``adjoint``, ``adjoint-matching``, ``tr-bsde`` with the exact trace (bimodal
only: on 784 pixels it would take 784^2 double-backward passes per step) and with
Hutchinson's trace (one probe). Each (case, method) runs in its own process, so its peak
resident memory (``ru_maxrss``) is its own; the table gives the peak growth over the
process's size after set-up, and on a GPU ``torch.cuda.max_memory_allocated``. Times are
the best of ``--repeats`` updates after one warm-up update; ratios are to the adjoint
estimator of the same case, measured in the same run.

Prints a table and writes ``benchmarks/results/soc_estimators.json``.
Usage: ``python benchmarks/soc_estimators.py [--repeats 3] [--cases bimodal,mnist]``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

import sampleopt as so
from sampleopt.samplers import ControlledChain
from sampleopt.soc import TimeField
from sampleopt.soc.bimodal import BimodalOU

METHODS = {
    "adjoint": ("adjoint", {}),
    "adjoint-matching": ("adjoint-matching", {}),
    "tr-bsde (exact trace)": ("tr-bsde", {"trace": "exact"}),
    "tr-bsde (Hutchinson)": ("tr-bsde", {"trace": "hutchinson"}),
}


def setup(case: str, method: str, device: str):
    name, opts = METHODS[method]
    if case == "bimodal":
        base = BimodalOU(1.0).base_chain(50).to(device)
        param = "costate" if name == "tr-bsde" else "control"
        sampler = ControlledChain(base, TimeField(1).double(), parameterization=param).to(device)
        objective = so.Objective(
            lambda x: -((x[:, 0] - 3) ** 2) / 2, lam=1.0, divergence=so.PathKL(base)
        )
        if name != "adjoint":
            opts = {**opts, "allow_memory": True}
        return sampler, objective, so.make_estimator(name, **opts), 512
    if method == "tr-bsde (exact trace)":
        return None
    base = so.load_base_model("mnist")
    sampler = so.ReverseSDESampler(
        copy.deepcopy(base.denoiser), base.schedule, 20, data_shape=base.data_shape
    ).to(device)
    objective = so.Objective(so.Brightness(), lam=0.05, divergence=so.PathKL(sampler))
    if name == "tr-bsde":
        opts = {**opts, "score_iterations": 2, "score_batch": 16}
    return sampler, objective, so.make_estimator(name, **opts), 8


def one(case: str, method: str, repeats: int, device: str) -> dict:
    torch.manual_seed(0)
    made = setup(case, method, device)
    if made is None:
        return {"skipped": "the exact trace on 784 pixels is 784^2 passes per step"}
    sampler, objective, est, n = made
    opt = torch.optim.Adam([p for p in sampler.parameters() if p.requires_grad], lr=1e-5)
    gen = torch.Generator(device=device).manual_seed(1)

    def update():
        opt.zero_grad()
        est.loss(sampler, objective, n=n, generator=gen).backward()
        opt.step()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # after set-up
    update()  # warm-up (and TR-BSDE's lean warm-up round)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        update()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    out = {
        "seconds_per_update": best,
        "peak_rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - start_rss)
        / 1024,
        "network_evals_per_update": est.network_evals(sampler, n),
        "batch": n,
    }
    if device == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cases", default="bimodal,mnist")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--one", nargs=2, metavar=("CASE", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.repeats, args.device)))
        return
    rows = []
    for case in args.cases.split(","):
        base_time = None
        for method in METHODS:
            cmd = [sys.executable, __file__, "--one", case, method, "--repeats", str(args.repeats)]
            cmd += ["--device", args.device]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
            if method == "adjoint":
                base_time = res["seconds_per_update"]
            if "seconds_per_update" in res:
                res["time_over_adjoint"] = res["seconds_per_update"] / base_time
            rows.append({"case": case, "method": method, **res})
    print("| case | method | s / update | time / adjoint | peak RSS growth (MB) | evals / update |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        if "skipped" in r:
            print(f"| {r['case']} | {r['method']} | skipped: {r['skipped']} | | | |")
            continue
        print(
            f"| {r['case']} | {r['method']} | {r['seconds_per_update']:.3f} | "
            f"{r['time_over_adjoint']:.2f} | {r['peak_rss_growth_mb']:.0f} | "
            f"{r['network_evals_per_update']} |"
        )
    out = Path(__file__).parent / "results" / "soc_estimators.json"
    out.parent.mkdir(exist_ok=True)
    meta = {"machine": platform.platform(), "torch": torch.__version__, "device": args.device}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
