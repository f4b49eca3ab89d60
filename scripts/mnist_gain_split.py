"""Where a fine-tuned mnist-brightness model's extra brightness lands.

Loads a run folder's checkpoint, draws the evaluation's samples (same seed, so the
base model and the fine-tuned one share x_0 and noise) and splits the mean intensity in
[0, 1] over three sets of pixels of each base sample: its strokes (intensity > 0.5),
pixels within 2 of a stroke, and the background further out.

    python scripts/mnist_gain_split.py RUN_DIR

The run's config names its ``algorithm`` (queue, nested or auto) and ``estimator``; a
run folder from before those keys (config key ``method``: implicit, adjoint, unrolled,
truncated, score-function) is read too. Only the checkpoint's parameters are loaded
(``param.0``, ``param.1``, ...: the same in both checkpoint layouts).
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from sampleopt.config import from_dict
from sampleopt.experiments.mnist_finetune import MnistFinetuneConfig, _Runner
from sampleopt.rundir import load_checkpoint


def split(images: torch.Tensor, stroke: torch.Tensor, near: torch.Tensor) -> list[float]:
    u = ((images + 1) / 2).clamp(0, 1)
    n = u.numel()
    return [float((u * m).sum()) / n for m in (stroke, near & ~stroke, ~near)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir")
    a = ap.parse_args(argv)
    tensors, meta = load_checkpoint(a.run_dir)
    cfg = from_dict(MnistFinetuneConfig, meta["config"])
    runner = _Runner(cfg, None, False, False, meta["experiment"])  # writes nothing
    tuner = runner.tuner(cfg.resolved_algorithm, cfg.estimator, cfg.lam)
    tuner.load_state_tensors(tensors)
    _, base = runner.evaluate(runner.sampler())
    _, tuned = runner.evaluate(tuner.sampler)
    stroke = (base + 1) / 2 > 0.5
    near = F.max_pool2d(stroke.float(), 5, 1, 2) > 0
    b, t = split(base, stroke, near), split(tuned, stroke, near)
    print(f"{len(base)} samples; background: {float((~near).float().mean()):.0%} of pixels")
    print("| pixels | base | fine-tuned | gain |\n|---|---|---|---|")
    for name, x, y in zip(("strokes", "within 2 px", "background"), b, t, strict=True):
        print(f"| {name} | {x:.4f} | {y:.4f} | {y - x:+.4f} |")
    print(f"| all | {sum(b):.4f} | {sum(t):.4f} | {sum(t) - sum(b):+.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
