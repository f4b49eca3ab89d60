"""Benchmark: the gradient estimators' accuracy against the exact oracle, and their cost.

1. Accuracy (float64, CPU). Three linear-Gaussian chains on which
   :func:`sampleopt.estimators.exact_objective` gives l(theta) in closed form, so autograd
   through it gives the exact gradient:

   * ``affine``: ``AffineChain.random(4, 10, seed=0)`` (200 parameters), lam = 0;
   * ``ddpm``: the exact DDPM sampler (posterior variance, K = 10, CosineSchedule(200))
     of Gaussian data N(mu, Sigma), theta = (mu, log scale) of ExactGaussianDenoiser,
     lam = 0;
   * ``sde+kl``: the exact ReverseSDESampler of the same data, lam = 0.5, with the path
     KL to a frozen copy of it at another mu (passed as ``reference=``).

   Reward r(x) = a^T x + x^T Q x (fixed a, negative-definite Q). Estimators: unrolled,
   truncated(1) (DRaFT-1), truncated(K/2), adjoint, score-function (leave-one-out
   baseline and none), zeroth-order (delta = 1e-3, one direction). Each gives R
   gradients (seeds 0 .. R-1) of n = 64 samples. Reported: relative bias
   |mean - exact| / |exact| with its noise scale |SE| / |exact| (SE the per-coordinate
   standard error over the R repeats) and their ratio ``bias/SE`` (about 1 for an
   unbiased estimator, much larger for a biased one), max |z| over the coordinates with
   SE > 0 (z = (mean - exact) / SE; coordinates whose estimate never varies are
   skipped and counted in the JSON), and the relative standard deviation of one
   gradient per sample, sqrt(n) |std over repeats| / |exact|. An estimator that refuses
   a chain (the score-function estimator on DDPM, whose last step is deterministic) is
   recorded as "refused" with its message.

2. Cost on a neural sampler: the pretrained ``hex`` TimeMLP, ReverseSDESampler (noise
   at every step, so every estimator applies) at K = 10, 100, 1000, n = 256 points
   (float32), r(x) = -|x - (4, 3.8)|^2 / 10, lam = 0. Estimators: unrolled, unrolled
   with checkpointing, truncated(1), adjoint, score-function, zeroth-order.

   * Time: one gradient (loss + backward) against one sampling pass
     ``sampler.sample(n)`` under ``torch.no_grad()`` with the same sampler, n and K,
     after one warm-up call of each, timed alternately (gradient, sampling, gradient,
     ...) ``--repeats`` times; the ratio of the best times.
   * Peak memory: each (estimator, K) and the no-grad sampling pass run once in a fresh
     subprocess (this script with a hidden ``--_memory-child NAME K`` option). It builds the
     sampler, warms up the estimator on the same sampler with 2 points (so that one-off
     initialisations and the sampler's per-step cache are not counted), records its resident
     set size just before the call, runs loss + backward once, and reports the process's peak
     resident set size after it minus that baseline: the peak extra memory of the call, with
     glibc's mmap threshold fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_``) so that tensors above
     it are mapped and unmapped with their lifetime (see ``ALLOCATOR_ENV``). The peak is VmHWM
     of ``/proc/self/status``, reset to the current RSS just before the call by writing 5 to
     ``/proc/self/clear_refs``. It is what ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
     reports in a process started by a small one (a shell), but a child of this (large)
     benchmark process inherits the parent's high-water mark in ``ru_maxrss`` across fork +
     exec (Linux keeps it in the signal struct), which swamps the measurement; the JSON keeps
     the ``ru_maxrss`` numbers too. Where the peak cannot be reset the value is an upper bound
     if the mark was already higher before the call (marked "<="); without /proc, the growth of
     ``ru_maxrss`` is reported. Resolution: a page, and in practice the allocator's
     granularity. On CUDA (``--device cuda``) the peak is ``torch.cuda.max_memory_allocated``
     after a reset, minus the allocated memory before the call (tensors only, not the caching
     allocator's reserve).

   Summary: adjoint peak at K = 1000 over K = 100 (target <= 1.5, unrolled's grows
   with K) for both state storages of the adjoint, and adjoint time / sampling time at
   K = 1000 (target <= 3).

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
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import sampleopt as so
from sampleopt.diffusion import CosineSchedule, ExactGaussianDenoiser
from sampleopt.errors import UsageError
from sampleopt.estimators import (
    AdjointEstimator,
    ScoreFunctionEstimator,
    TruncatedEstimator,
    UnrolledEstimator,
    ZerothOrderEstimator,
    exact_objective,
)
from sampleopt.samplers import SAMPLERS

F64 = torch.float64
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
N_ACCURACY = 64
N_COST = 256
ZO_DELTA = 1e-3
TARGET = (4.0, 3.8)

# -- part 1: accuracy against the exact oracle ------------------------------------------


def accuracy_estimators(reference, K: int) -> dict:
    """label -> estimator, for a chain of K steps with path-KL ``reference`` (or None)."""
    half = max(1, K // 2)
    return {
        "unrolled": UnrolledEstimator(reference=reference),
        "truncated(1)": TruncatedEstimator(1, reference=reference),
        f"truncated({half})": TruncatedEstimator(half, reference=reference),
        "adjoint": AdjointEstimator(reference=reference),
        "score-function": ScoreFunctionEstimator(reference=reference),
        "score-function (no baseline)": ScoreFunctionEstimator(
            reference=reference, baseline="none"
        ),
        "zeroth-order": ZerothOrderEstimator(reference=reference, delta=ZO_DELTA, directions=1),
    }


def gaussian_data_chain(cls, mu, steps: int = 10):
    """The exact sampler of N(mu, Sigma) data: a linear-Gaussian chain in (mu, log scale)."""
    sched = CosineSchedule(200).double()
    cov = torch.tensor([[1.0, 0.4], [0.4, 0.6]], dtype=F64)
    den = ExactGaussianDenoiser(torch.as_tensor(mu, dtype=F64), cov, sched)
    return cls(den, sched, steps, data_shape=(2,))


def quadratic(d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed linear term a and a negative-definite Q (eigenvalues in [-0.6, -0.1])."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, generator=g, dtype=F64)
    M = torch.randn(d, d, generator=g, dtype=F64)
    evecs = torch.linalg.qr(M)[0]
    evals = -torch.linspace(0.1, 0.6, d, dtype=F64)
    return a, (evecs * evals) @ evecs.T


def accuracy_chains() -> list[dict]:
    a2 = torch.tensor([1.0, -0.5], dtype=F64)
    Q2 = torch.tensor([[-0.3, 0.1], [0.1, -0.2]], dtype=F64)
    a4, Q4 = quadratic(4, seed=1)
    sde_ref = gaussian_data_chain(so.ReverseSDESampler, [0.0, 0.2]).requires_grad_(False)
    return [
        {
            "name": "affine",
            "description": "AffineChain.random(4, 10, seed=0), lam = 0",
            "sampler": so.AffineChain.random(4, 10, seed=0),
            "reference": None,
            "lam": 0.0,
            "d": 4,
            "a": a4,
            "Q": Q4,
        },
        {
            "name": "ddpm",
            "description": "exact DDPM (posterior variance), K = 10, CosineSchedule(200), lam = 0",
            "sampler": gaussian_data_chain(so.DDPMSampler, [0.5, -1.0]),
            "reference": None,
            "lam": 0.0,
            "d": 2,
            "a": a2,
            "Q": Q2,
        },
        {
            "name": "sde+kl",
            "description": "exact ReverseSDE, K = 10, lam = 0.5, path KL to the chain at "
            "mu_ref = (0, 0.2)",
            "sampler": gaussian_data_chain(so.ReverseSDESampler, [0.5, -1.0]),
            "reference": sde_ref,
            "lam": 0.5,
            "d": 2,
            "a": a2,
            "Q": Q2,
        },
    ]


def flat_gradient(est, sampler, objective, params, n: int, seed: int) -> torch.Tensor:
    for p in params:
        p.grad = None
    loss = est.loss(sampler, objective, n=n, generator=torch.Generator().manual_seed(seed))
    loss.backward()
    return torch.cat(
        [(torch.zeros_like(p) if p.grad is None else p.grad).reshape(-1) for p in params]
    )


def accuracy_stats(draws: torch.Tensor, exact: torch.Tensor, n: int) -> dict:
    R = draws.shape[0]
    mean, std = draws.mean(0), draws.std(0)
    se = std / math.sqrt(R)
    err = mean - exact
    norm = float(exact.norm())
    ok = se > 0
    z = err[ok] / se[ok]
    return {
        "status": "ok",
        "rel_bias": float(err.norm()) / norm,
        "rel_se": float(se.norm()) / norm,
        "bias_over_se": float(err.norm() / se.norm()) if float(se.norm()) > 0 else math.inf,
        "max_abs_z": float(z.abs().max()) if z.numel() else None,
        "coords": int(exact.numel()),
        "coords_zero_se": int((~ok).sum()),
        "max_abs_error_zero_se": float(err[~ok].abs().max()) if bool((~ok).any()) else 0.0,
        "rel_std_per_sample": math.sqrt(n) * float(std.norm()) / norm,
        "exact_norm": norm,
        "mean": mean.tolist(),
        "exact": exact.tolist(),
        "se": se.tolist(),
    }


def run_accuracy(R: int, n: int) -> list[dict]:
    rows = []
    for chain in accuracy_chains():
        sampler, reference, lam, d = chain["sampler"], chain["reference"], chain["lam"], chain["d"]
        a, Q = chain["a"], chain["Q"]
        params = [p for p in sampler.parameters() if p.requires_grad]
        exact_value = exact_objective(sampler, d, a=a, Q=Q, lam=lam, reference=reference)
        exact = torch.cat([g.reshape(-1) for g in torch.autograd.grad(exact_value, params)])

        def reward(x, a=a, Q=Q):
            return x @ a + ((x @ Q) * x).sum(1)

        objective = so.Objective(
            reward,
            lam=lam,
            reference=None if lam == 0 else so.QuadraticPotential(torch.zeros(d), torch.eye(d)),
        )
        for label, est in accuracy_estimators(reference, sampler.num_steps).items():
            row = {"chain": chain["name"], "estimator": label, "n": n, "repeats": R}
            t0 = time.perf_counter()
            try:
                draws = torch.stack(
                    [flat_gradient(est, sampler, objective, params, n, s) for s in range(R)]
                )
            except UsageError as e:
                row.update(status="refused", message=str(e))
            else:
                row.update(accuracy_stats(draws, exact, n))
                row["ms_per_gradient"] = 1e3 * (time.perf_counter() - t0) / R
            rows.append(row)
            print(f"  accuracy: {chain['name']:7s} {label:29s} {row['status']}", flush=True)
    return rows


# -- part 2: cost on the pretrained hex model -------------------------------------------


def cost_estimators() -> dict:
    return {
        "unrolled": lambda: UnrolledEstimator(),
        "unrolled+checkpoint": lambda: UnrolledEstimator(checkpoint=True),
        "truncated(1)": lambda: TruncatedEstimator(1),
        "adjoint": lambda: AdjointEstimator(),
        "adjoint(sqrt)": lambda: AdjointEstimator(states="sqrt"),
        "score-function": lambda: ScoreFunctionEstimator(),
        "zeroth-order": lambda: ZerothOrderEstimator(delta=ZO_DELTA),
    }


def hex_setup(K: int, device: torch.device):
    base = so.load_base_model("hex")
    base.denoiser.to(device)
    base.schedule.to(device)
    target = torch.tensor(TARGET, device=device)

    def reward(x):
        return -((x - target) ** 2).sum(1) / 10

    def make(steps):
        return SAMPLERS["sde"](base.denoiser, base.schedule, steps, data_shape=base.data_shape)

    return make(K), make, so.Objective(reward)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gradient_call(est, sampler, objective, n: int, seed: int, device: torch.device) -> None:
    sampler.zero_grad(set_to_none=True)
    gen = torch.Generator(device=device).manual_seed(seed)
    est.loss(sampler, objective, n=n, generator=gen).backward()


def sampling_call(sampler, n: int, seed: int, device: torch.device) -> None:
    with torch.no_grad():
        sampler.sample(n, generator=torch.Generator(device=device).manual_seed(seed))


def paired_best(f, g, repeats: int, device: torch.device) -> tuple[float, float]:
    """Best time of f and of g, measured alternately (f, g, f, g, ...) so that both see
    the same machine state; the minimum is the least disturbed run (as in
    benchmarks/diffusion_sampling.py, with a device synchronisation)."""
    tf, tg = [], []
    for _ in range(repeats):
        for fn, times in ((f, tf), (g, tg)):
            synchronize(device)
            t0 = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - t0)
    return min(tf), min(tg)


def run_timing(ks, n: int, repeats: int, device: torch.device) -> list[dict]:
    rows = []
    for K in ks:
        sampler, _, objective = hex_setup(K, device)
        for name, factory in cost_estimators().items():
            est = factory()

            def grad(est=est, sampler=sampler, objective=objective):
                gradient_call(est, sampler, objective, n, 0, device)

            def samp(sampler=sampler):
                sampling_call(sampler, n, 0, device)

            grad()
            samp()  # warm-up
            tg, ts = paired_best(grad, samp, repeats, device)
            rows.append(
                {"estimator": name, "K": K, "gradient_s": tg, "sampling_s": ts, "ratio": tg / ts}
            )
            print(f"  time: K={K:5d} {name:20s} {tg / ts:8.2f} x sampling", flush=True)
    return rows


def proc_status_kib(field: str) -> int | None:
    """A memory field of /proc/self/status (VmRSS, VmHWM) in KiB, or None without /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0, own process); False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def maxrss_kib() -> int:
    m = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return m // 1024 if sys.platform == "darwin" else m  # bytes on macOS, KiB on Linux


def memory_child(name: str, K: int, n: int, device: torch.device) -> dict:
    """Peak extra memory of one call (see the module docstring), in a fresh process."""
    sampler, _, objective = hex_setup(K, device)
    if name == "sampling":

        def call(s, m):
            sampling_call(s, m, 0, device)

    else:
        est = cost_estimators()[name]()

        def call(s, m):
            gradient_call(est, s, objective, m, 0, device)

    call(sampler, 2)  # warm-up with 2 points: one-off initialisations, the step cache
    sampler.zero_grad(set_to_none=True)
    gc.collect()
    out = {"estimator": name, "K": K, "n": n, "device": str(device)}
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        call(sampler, n)
        synchronize(device)
        peak = torch.cuda.max_memory_allocated(device)
        out.update(method="cuda.max_memory_allocated", peak_extra_mib=(peak - before) / 2**20)
        out["upper_bound"] = False
        return out
    reset = reset_peak_rss()
    rss0, hwm0, maxrss0 = proc_status_kib("VmRSS"), proc_status_kib("VmHWM"), maxrss_kib()
    call(sampler, n)
    hwm1, maxrss1 = proc_status_kib("VmHWM"), maxrss_kib()
    out.update(
        rss_before_kib=rss0,
        vmhwm_before_kib=hwm0,
        vmhwm_after_kib=hwm1,
        hwm_reset=reset,
        ru_maxrss_before_kib=maxrss0,
        ru_maxrss_after_kib=maxrss1,
        # ru_maxrss also holds the parent's high-water mark, carried over fork + exec
        ru_maxrss_extra_mib=None if rss0 is None else max(0, maxrss1 - rss0) / 1024,
        ru_maxrss_upper_bound=maxrss1 <= maxrss0,
    )
    if rss0 is not None and hwm1 is not None:
        out.update(
            method="VmHWM (reset before) - VmRSS before" if reset else "VmHWM - VmRSS before",
            peak_extra_mib=max(0, hwm1 - rss0) / 1024,
            upper_bound=not reset and hwm1 <= hwm0,
        )
    else:  # no /proc: growth of the process's high-water mark only
        out.update(
            method="ru_maxrss after - before",
            peak_extra_mib=max(0, maxrss1 - maxrss0) / 1024,
            upper_bound=False,
        )
    return out


# glibc: map every block above 64 KiB on its own and unmap it when freed, so that the
# resident peak follows the live tensors; by default glibc raises this threshold after
# the first large free and then serves big tensors from a heap that keeps freed memory,
# and the resident peak measures the allocator's history more than the estimator.
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}


def memory_child_run(name: str, K: int, n: int, device: torch.device, env_extra: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_memory-child", name, str(K)]
    cmd += ["--device", str(device), "--n", str(n)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=1200, env={**os.environ, **env_extra}
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"estimator": name, "K": K, "error": " | ".join(tail)}
    return json.loads(lines[-1])


def run_memory(ks, n: int, device: torch.device) -> list[dict]:
    """One fresh process per (estimator, K)."""
    rows = []
    for K in ks:
        for name in ["sampling", *cost_estimators()]:
            row = memory_child_run(name, K, n, device, ALLOCATOR_ENV)
            rows.append(row)
            if "error" in row:
                print(f"  memory: K={K:5d} {name:20s} FAILED: {row['error']}", flush=True)
                continue
            print(f"  memory: K={K:5d} {name:20s} {row['peak_extra_mib']:9.2f} MiB", flush=True)
    return rows


def cost_summary(timing: list[dict], memory: list[dict]) -> dict:
    tim = {(r["estimator"], r["K"]): r["ratio"] for r in timing}

    def growth(name):
        mem = {(r.get("estimator"), r.get("K")): r.get("peak_extra_mib") for r in memory}
        hi, lo = mem.get((name, 1000)), mem.get((name, 100))
        return hi / lo if hi is not None and lo else None

    adj_growth, sqrt_growth = growth("adjoint"), growth("adjoint(sqrt)")
    adj_time, sqrt_time = tim.get(("adjoint", 1000)), tim.get(("adjoint(sqrt)", 1000))
    return {
        "adjoint_peak_K1000_over_K100": adj_growth,
        "adjoint(sqrt)_peak_K1000_over_K100": sqrt_growth,
        "adjoint(sqrt)_peak_meets_target": None if sqrt_growth is None else sqrt_growth <= 1.5,
        "adjoint_peak_target": 1.5,
        "adjoint_peak_meets_target": None if adj_growth is None else adj_growth <= 1.5,
        "unrolled_peak_K1000_over_K100": growth("unrolled"),
        "unrolled+checkpoint_peak_K1000_over_K100": growth("unrolled+checkpoint"),
        "score-function_peak_K1000_over_K100": growth("score-function"),
        "adjoint_time_over_sampling_K1000": adj_time,
        "adjoint_time_over_sampling_by_K": {
            r["K"]: r["ratio"] for r in timing if r["estimator"] == "adjoint"
        },
        "adjoint(sqrt)_time_over_sampling_K1000": sqrt_time,
        "adjoint_time_target": 3.0,
        "adjoint_time_meets_target": None if adj_time is None else adj_time <= 3.0,
    }


# -- output ------------------------------------------------------------------------------


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def fmt(v, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def accuracy_table(rows: list[dict]) -> str:
    body = []
    for r in rows:
        if r["status"] != "ok":
            msg = r["message"].split(":")[0].split(" (")[0]
            body.append([r["chain"], r["estimator"], f"refused: {msg}", *[""] * 5])
            continue
        z = fmt(r["max_abs_z"], ".2f")
        if r["coords_zero_se"]:
            z += f" ({r['coords_zero_se']}/{r['coords']} const.)"
        body.append(
            [
                r["chain"],
                r["estimator"],
                fmt(r["rel_bias"]),
                fmt(r["rel_se"]),
                fmt(r["bias_over_se"], ".2f"),
                z,
                fmt(r["rel_std_per_sample"]),
                fmt(r["ms_per_gradient"], ".2f"),
            ]
        )
    headers = [
        "chain",
        "estimator",
        "rel. bias",
        "SE scale",
        "bias/SE",
        "max abs z",
        "rel. std/sample",
        "ms/grad",
    ]
    return md_table(headers, body)


def peak_text(m: dict | None) -> str:
    if m is None:
        return "-"
    if "error" in m:
        return "failed"
    return ("<= " if m["upper_bound"] else "") + fmt(m["peak_extra_mib"], ".2f")


def cost_table(timing: list[dict], memory: list[dict]) -> str:
    mem = {(r["estimator"], r["K"]): r for r in memory}
    tim = {(r["estimator"], r["K"]): r for r in timing}
    order = ["sampling", *cost_estimators()]
    keys = sorted({*mem, *tim}, key=lambda k: (k[1], order.index(k[0])))
    fixed = any("fixed_threshold" in r for r in memory)
    body = []
    for key in keys:
        t, m = tim.get(key), mem.get(key)
        if key[0] == "sampling":
            t = next((r for r in timing if r["K"] == key[1]), None)
            t = None if t is None else {"gradient_s": t["sampling_s"], "ratio": 1.0}
        row = [
            key[0] + (" (no grad)" if key[0] == "sampling" else ""),
            str(key[1]),
            "-" if t is None else fmt(t["gradient_s"], ".4f"),
            "-" if t is None else fmt(t["ratio"], ".2f"),
            peak_text(m),
        ]
        if fixed:
            row.append(peak_text(None if m is None else m.get("fixed_threshold")))
        body.append(row)
    headers = ["estimator", "K", "time s", "time / sampling", "peak extra MiB"]
    if fixed:
        headers.append("peak MiB, fixed mmap thr.")
    return md_table(headers, body)


def summary_text(s: dict) -> str:
    def verdict(ok):
        return "n/a" if ok is None else ("meets target" if ok else "MISSES target")

    return "\n".join(
        [
            f"- adjoint peak memory K=1000 / K=100: {fmt(s['adjoint_peak_K1000_over_K100'], '.2f')}"
            f" (target <= 1.5: {verdict(s['adjoint_peak_meets_target'])}); unrolled: "
            f"{fmt(s['unrolled_peak_K1000_over_K100'], '.2f')}, unrolled+checkpoint: "
            f"{fmt(s['unrolled+checkpoint_peak_K1000_over_K100'], '.2f')}, score-function: "
            f"{fmt(s['score-function_peak_K1000_over_K100'], '.2f')}",
            f"- adjoint(states='sqrt') peak memory K=1000 / K=100: "
            f"{fmt(s['adjoint(sqrt)_peak_K1000_over_K100'], '.2f')} "
            f"(target <= 1.5: {verdict(s['adjoint(sqrt)_peak_meets_target'])})",
            f"- adjoint time / sampling time at K=1000: "
            f"{fmt(s['adjoint_time_over_sampling_K1000'], '.2f')} "
            f"(target <= 3: {verdict(s['adjoint_time_meets_target'])}); adjoint(sqrt): "
            f"{fmt(s['adjoint(sqrt)_time_over_sampling_K1000'], '.2f')}",
        ]
    )


def plot(path: Path, accuracy: list[dict] | None, timing, memory) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    fig = plt.figure(figsize=(16, 9.5), layout="constrained")
    gs = GridSpec(2, 6, figure=fig)
    if accuracy:
        chains = list(dict.fromkeys(r["chain"] for r in accuracy))
        for i, chain in enumerate(chains):
            ax = fig.add_subplot(gs[0, 2 * i : 2 * i + 2])
            rows = [r for r in accuracy if r["chain"] == chain]
            xs = range(len(rows))
            for x, r in zip(xs, rows, strict=True):
                if r["status"] != "ok":
                    ax.annotate(
                        "refused",
                        (x, 0.5),
                        xycoords=("data", "axes fraction"),
                        rotation=90,
                        ha="center",
                        va="center",
                        color="gray",
                    )
                    continue
                b, se = r["rel_bias"], r["rel_se"]
                ax.errorbar(
                    x,
                    b,
                    yerr=[[min(se, 0.9 * b)], [se]],
                    fmt="o",
                    color="C0",
                    capsize=3,
                    label="relative bias ± SE scale" if x == 0 else None,
                )
                ax.plot(
                    x,
                    r["rel_std_per_sample"],
                    "s",
                    color="C1",
                    label="relative std per sample" if x == 0 else None,
                )
            ax.set_xticks(list(xs), [r["estimator"] for r in rows], rotation=35, ha="right")
            ax.set_yscale("log")
            ax.set_title(f"chain {chain} (R = {rows[0]['repeats']}, n = {rows[0]['n']})")
            ax.grid(True, which="major", axis="y", alpha=0.3)
            if i == 0:
                ax.legend(fontsize=8)
    if memory:
        ax = fig.add_subplot(gs[1, 0:3])
        floor = 1 / 1024  # 1 KiB: where a peak of 0 is drawn on the log axis
        for j, name in enumerate(["sampling", *cost_estimators()]):
            color = "k" if name == "sampling" else f"C{j - 1}"  # as in the time panel
            for fixed in (False, True):
                rows = [r for r in memory if r["estimator"] == name]
                rows = [r.get("fixed_threshold", {}) for r in rows] if fixed else rows
                pts = sorted(
                    (r["K"], max(r["peak_extra_mib"], floor)) for r in rows if "peak_extra_mib" in r
                )
                if not pts:
                    continue
                ks, ys = zip(*pts, strict=True)
                label = None if fixed else ("sampling (no grad)" if name == "sampling" else name)
                ax.plot(ks, ys, ":" if fixed else "-", color=color, marker="o", label=label)
        if any("fixed_threshold" in r for r in memory):
            ax.plot([], [], "k:", label="dotted: fixed mmap threshold")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("K (steps)")
        ax.set_ylabel("peak extra memory, MiB")
        ax.set_title("peak memory of one gradient (hex, reverse SDE, n = 256)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if timing:
        ax = fig.add_subplot(gs[1, 3:6])
        for j, name in enumerate(cost_estimators()):
            pts = sorted((r["K"], r["ratio"]) for r in timing if r["estimator"] == name)
            if pts:
                ks, ys = zip(*pts, strict=True)
                ax.plot(ks, ys, f"C{j}-", marker="o", label=name)
        ax.axhline(3.0, color="gray", ls=":", label="adjoint target (3)")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("K (steps)")
        ax.set_ylabel("gradient time / sampling time")
        ax.set_title("time of one gradient relative to one no-grad sampling pass")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
