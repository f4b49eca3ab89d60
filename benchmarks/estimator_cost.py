"""Part 2 of ``benchmarks/estimators.py``: the gradient estimators' cost on a neural
sampler.

The pretrained ``hex`` TimeMLP, ReverseSDESampler (noise at every step, so every
estimator applies) at K = 10, 100, 1000, n = 256 points (float32),
r(x) = -|x - (4, 3.8)|^2 / 10, lam = 0. Estimators (by name from the registry,
``so.make_estimator``): unrolled, unrolled with checkpointing, truncated(1), adjoint
(all states stored, and ``states="sqrt"``), score-function, zeroth-order.

* Time: one gradient (loss + backward) against one sampling pass ``sampler.sample(n)``
  under ``torch.no_grad()`` with the same sampler, n and K, after one warm-up call of
  each, timed alternately (gradient, sampling, gradient, ...) ``--repeats`` times; the
  ratio of the best times.
* Peak memory: each (estimator, K) and the no-grad sampling pass run once in a fresh
  subprocess (``benchmarks/estimators.py`` with a hidden ``--_memory-child NAME K``
  option). It builds the sampler, warms up the estimator on the same sampler with 2
  points (so that one-off initialisations and the sampler's per-step cache are not
  counted), records its resident set size just before the call, runs loss + backward
  once, and reports the process's peak resident set size after it minus that baseline:
  the peak extra memory of the call, with glibc's mmap threshold fixed at 64 KiB
  (``MALLOC_MMAP_THRESHOLD_``) so that tensors above it are mapped and unmapped with
  their lifetime (see ``ALLOCATOR_ENV``). The peak is VmHWM of ``/proc/self/status``,
  reset to the current RSS just before the call by writing 5 to
  ``/proc/self/clear_refs``. It is what ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
  reports in a process started by a small one (a shell), but a child of this (large)
  benchmark process inherits the parent's high-water mark in ``ru_maxrss`` across fork +
  exec (Linux keeps it in the signal struct), which swamps the measurement; the JSON
  keeps the ``ru_maxrss`` numbers too. Where the peak cannot be reset the value is an
  upper bound if the mark was already higher before the call (marked "<="); without
  /proc, the growth of ``ru_maxrss`` is reported. Resolution: a page, and in practice the
  allocator's granularity. On CUDA (``--device cuda``) the peak is
  ``torch.cuda.max_memory_allocated`` after a reset, minus the allocated memory before
  the call (tensors only, not the caching allocator's reserve).

Summary (:func:`cost_summary`): adjoint peak at K = 1000 over K = 100 (target <= 1.5,
unrolled's grows with K) for both state storages of the adjoint, and adjoint time /
sampling time at K = 1000 (target <= 3).
"""

from __future__ import annotations

import functools
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

import sampleopt as so
from estimator_accuracy import ZO_DELTA, with_registry
from sampleopt.samplers import SAMPLERS

N_COST = 256
TARGET = (4.0, 3.8)
ENTRY = Path(__file__).resolve().with_name("estimators.py")  # runs the memory children

# label -> (registry name, options); any other registered estimator that applies to the
# hex reverse-SDE sampler follows with its defaults (see estimator_accuracy.with_registry)
COST_VARIANTS = [
    ("unrolled", "unrolled", {}),
    ("unrolled+checkpoint", "unrolled", {"checkpoint": True}),
    ("truncated(1)", "truncated", {"steps": 1}),
    ("adjoint", "adjoint", {}),
    ("adjoint(sqrt)", "adjoint", {"states": "sqrt"}),
    ("score-function", "score-function", {}),
    ("zeroth-order", "zeroth-order", {"delta": ZO_DELTA}),
]


def cost_estimators() -> dict:
    """label -> a function that builds the estimator (in the memory child's process)."""
    return {
        label: functools.partial(so.make_estimator, name, **opts)
        for label, name, opts in with_registry(COST_VARIANTS)
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
    cmd = [sys.executable, str(ENTRY), "--_memory-child", name, str(K)]
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
