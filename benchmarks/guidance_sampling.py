"""Benchmark: the cost of gradient guidance at sampling time (docs/performance.md,
docs/guidance-mnist.md).

One full DDPM sampling run, unguided and with naive and look-ahead guidance
(:class:`sampleopt.guidance.GuidedDenoiser`, strength 1, one target per sample), on

* the shipped ``subspace`` MLP (D = 64), 512 samples, K = 100 steps, target: a fixed
  random g per sample, y = g^T x_0 + 1 at the unguided samples;
* the shipped ``mnist`` UNet, 64 samples, K = 20 steps, target: the brightness
  reward's gradient at unguided samples, y = g^T x_0 + 0.05 (as in guidance-mnist).

Each repeat runs the three variants back to back (unguided, naive, look-ahead), so the
ratios to unguided are measured side by side under the same machine state; the table
gives the median over ``--repeats`` of each variant's time and of its per-repeat ratio
to unguided, after one warm-up run of each. Network forward and backward passes are
counted with hooks on the network (a backward pass is counted when a gradient flows
back through a forward call's output). Expected: naive about 1.0x (its G is a few
vector operations on the one network output), look-ahead about 2-3x (one backward
pass through the network per step).

Prints a table and writes JSON (default ``benchmarks/results/guidance_sampling.json``).
Usage: ``OMP_NUM_THREADS=1 python benchmarks/guidance_sampling.py [--repeats 5] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

import sampleopt as so
from sampleopt.guidance.denoiser import GuidedDenoiser
from sampleopt.guidance.targets import guidance_targets
from sampleopt.guidance.terms import make_guidance

VARIANTS = ("unguided", "naive", "look-ahead")
CASES = {  # model: (samples, steps, delta)
    "subspace": (512, 100, 1.0),
    "mnist": (64, 20, 0.05),
}


class Counter:
    """Counts the network's forward calls and rows, and backward passes through them."""

    def __init__(self, net: torch.nn.Module):
        self.forward_calls = self.forward_rows = self.backward_calls = 0
        net.register_forward_hook(self._forward)

    def _forward(self, module, args, out):
        self.forward_calls += 1
        self.forward_rows += out.shape[0]
        if out.requires_grad:
            out.register_hook(self._backward)

    def _backward(self, grad):
        self.backward_calls += 1

    def reset(self):
        self.forward_calls = self.forward_rows = self.backward_calls = 0


def setup(name: str):
    n, steps, delta = CASES[name]
    base = so.load_base_model(name)
    base.denoiser.requires_grad_(False)
    counter = Counter(base.denoiser)
    guided = GuidedDenoiser(base.denoiser, base.schedule, make_guidance("naive", strength=0.0))
    sampler = so.DDPMSampler(guided, base.schedule, steps, data_shape=base.data_shape)
    with torch.no_grad():
        z = sampler.sample(n, generator=torch.Generator().manual_seed(0))
    if name == "mnist":
        g, y, _ = guidance_targets(so.Brightness(), z, delta)
    else:
        g = torch.randn(z.shape, generator=torch.Generator().manual_seed(1)) / z.shape[1] ** 0.5
        y = (g * z).sum(1) + delta
    terms = {
        "unguided": make_guidance("naive", strength=0.0),
        "naive": make_guidance("naive", strength=1.0).set_target(g, y),
        "look-ahead": make_guidance("look-ahead", strength=1.0).set_target(g, y),
    }
    return sampler, guided, terms, counter, n, steps


def run_once(sampler, guided, term, n: int) -> float:
    guided.guidance = term
    t0 = time.perf_counter()
    with torch.no_grad():
        sampler.sample(n, generator=torch.Generator().manual_seed(2))
    return time.perf_counter() - t0


def bench(name: str, repeats: int) -> list[dict]:
    sampler, guided, terms, counter, n, steps = setup(name)
    counts = {}
    for v in VARIANTS:  # warm-up, and one counted run of each
        counter.reset()
        run_once(sampler, guided, terms[v], n)
        counts[v] = (counter.forward_calls, counter.forward_rows, counter.backward_calls)
    times = {v: [] for v in VARIANTS}
    for _ in range(repeats):
        for v in VARIANTS:
            times[v].append(run_once(sampler, guided, terms[v], n))
    rows = []
    for v in VARIANTS:
        ratios = [t / u for t, u in zip(times[v], times["unguided"], strict=True)]
        calls, fwd_rows, bwd = counts[v]
        rows.append(
            {
                "model": name,
                "variant": v,
                "n": n,
                "steps": steps,
                "median_s": statistics.median(times[v]),
                "min_s": min(times[v]),
                "ratio_median": statistics.median(ratios),
                "ratio_min": min(ratios),
                "ratio_max": max(ratios),
                "forward_calls": calls,
                "forward_rows": fwd_rows,
                "backward_passes": bwd,
                "times_s": times[v],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", default="subspace,mnist")
    parser.add_argument("--out", default="benchmarks/results/guidance_sampling.json")
    args = parser.parse_args()
    rows = []
    for name in args.models.split(","):
        rows += bench(name, args.repeats)
    print(
        f"{'model':9s} {'variant':11s} {'n':>4s} {'K':>4s} {'median s':>9s} {'ratio':>6s} "
        f"{'(min-max)':>13s} {'fwd calls':>9s} {'bwd passes':>10s}"
    )
    for r in rows:
        print(
            f"{r['model']:9s} {r['variant']:11s} {r['n']:4d} {r['steps']:4d} "
            f"{r['median_s']:9.3f} {r['ratio_median']:6.2f} "
            f"({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) {r['forward_calls']:9d} "
            f"{r['backward_passes']:10d}"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "command": f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')} python "
        f"benchmarks/guidance_sampling.py --repeats {args.repeats} --models {args.models}",
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"),
    }
    out.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
