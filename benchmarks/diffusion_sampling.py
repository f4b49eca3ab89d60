"""Benchmark: diffusion sampling overhead, sampleopt vs torchsde, MNIST training speed.

1. Sampling overhead = time of a K-step sampling loop / time of K forward passes of
   the same network on the same batch (target <= 1.10), for the 2-D MLP (hex base
   model, 1000 points) and the MNIST UNet (64 images), DDPM and DDIM, K = 20, 100.
2. The same reverse SDE through torchsde's ``sdeint`` (Euler-Maruyama, written so
   that it takes exactly sampleopt's steps: drift m_k(x) - x and diffusion sigma_k
   per unit step, dt = 1) against sampleopt's ReverseSDESampler: time ratio.
3. MNIST training throughput of ``sampleopt train mnist`` steps, images per second.

Prints a table and writes JSON (default ``benchmarks/results/diffusion_sampling.json``).
Usage: ``python benchmarks/diffusion_sampling.py [--repeats 3] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

import sampleopt as so
from sampleopt.samplers import SAMPLERS


def paired_best(f, g, repeats: int) -> tuple[float, float]:
    """Best time of f and of g, measured alternately (f, g, f, g, ...) so that both
    see the same machine state; the minimum is the least disturbed run."""
    tf, tg = [], []
    for _ in range(repeats):
        for fn, times in ((f, tf), (g, tg)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return min(tf), min(tg)


@torch.no_grad()
def overhead(base, n: int, kind: str, steps: int, repeats: int) -> dict:
    sampler = SAMPLERS[kind](base.denoiser, base.schedule, steps, data_shape=base.data_shape)
    x = torch.randn(n, *base.data_shape, generator=torch.Generator().manual_seed(0))
    ts = [torch.full((n,), t, dtype=torch.long) for t in sampler.timesteps[:-1]]

    def forwards():
        for t in ts:
            base.denoiser(x, t)

    def sampling():
        sampler.sample(n, x0=x, generator=torch.Generator().manual_seed(1))

    forwards()
    sampling()  # warm-up
    tf, ts_ = paired_best(forwards, sampling, repeats)
    return {
        "model": base.name,
        "n": n,
        "sampler": kind,
        "steps": steps,
        "forward_passes_s": tf,
        "sampling_s": ts_,
        "overhead": ts_ / tf,
    }


@torch.no_grad()
def torchsde_ratio(base, n: int, steps: int, repeats: int) -> dict:
    import torchsde

    sampler = so.ReverseSDESampler(base.denoiser, base.schedule, steps, data_shape=base.data_shape)
    shape = (n, *base.data_shape)

    class ChainSDE(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):  # drift per unit step: m_k(x) - x
            k = min(int(t), steps - 1)
            x = y.view(shape)
            return (sampler.mean(x, k) - x).view(n, -1)

        def g(self, t, y):
            k = min(int(t), steps - 1)
            return torch.full_like(y, float(sampler.noise_scale(k)))

    sde = ChainSDE()
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    grid = torch.arange(steps + 1, dtype=torch.float32)

    def ours():
        sampler.sample(n, x0=x0, generator=torch.Generator().manual_seed(1))

    def theirs():
        torchsde.sdeint(sde, x0.view(n, -1), grid, method="euler", dt=1.0)

    ours()
    theirs()
    t_ours, t_theirs = paired_best(ours, theirs, repeats)
    return {
        "model": base.name,
        "n": n,
        "steps": steps,
        "sampleopt_s": t_ours,
        "torchsde_s": t_theirs,
        "torchsde_over_sampleopt": t_theirs / t_ours,
    }


def training_throughput(steps: int) -> dict:
    from sampleopt.training import PRESETS, DSMTrainer

    trainer = DSMTrainer(PRESETS["mnist"])
    trainer.train_step()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        trainer.train_step()
        times.append(time.perf_counter() - t0)
    per_step = statistics.median(times)
    return {
        "batch_size": trainer.cfg.batch_size,
        "steps_timed": steps,
        "median_step_s": per_step,
        "images_per_s": trainer.cfg.batch_size / per_step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/diffusion_sampling.json")
    args = parser.parse_args()
    names = so.available_base_models()
    hexm = so.load_base_model("hex")
    rows = [
        overhead(hexm, 1000, kind, k, 5 * args.repeats)
        for kind in ("ddpm", "ddim")
        for k in (20, 100)
    ]
    if "mnist" in names:
        mn = so.load_base_model("mnist")
        rows += [overhead(mn, 64, kind, 20, args.repeats) for kind in ("ddpm", "ddim")]
    sde = [torchsde_ratio(hexm, 1000, 100, 5 * args.repeats)]
    if "mnist" in names:
        sde.append(torchsde_ratio(mn, 64, 20, args.repeats))
    train = training_throughput(10)
    print(
        f"{'model':8s} {'sampler':7s} {'K':>4s} {'K forwards s':>13s} {'sampling s':>11s} "
        f"{'overhead':>9s}"
    )
    for r in rows:
        print(
            f"{r['model']:8s} {r['sampler']:7s} {r['steps']:4d} {r['forward_passes_s']:13.4f} "
            f"{r['sampling_s']:11.4f} {r['overhead']:9.3f}"
        )
    for r in sde:
        print(
            f"reverse SDE, {r['model']}, K={r['steps']}: sampleopt {r['sampleopt_s']:.4f} s, "
            f"torchsde {r['torchsde_s']:.4f} s, ratio {r['torchsde_over_sampleopt']:.2f}"
        )
    print(
        f"MNIST training: {train['images_per_s']:.1f} images/s "
        f"(batch {train['batch_size']}, median step {train['median_step_s']:.3f} s)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "threads": torch.get_num_threads(),
                "cpus": os.cpu_count(),
                "overhead": rows,
                "torchsde": sde,
                "training": train,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"written: {out}")


if __name__ == "__main__":
    main()
