"""Training the MNIST digit classifier of :mod:`sampleopt.metrics.classifier` (seeded,
with random shifts as augmentation) and writing its weights with the command that made
them: ``python -m sampleopt.metrics.classifier train`` (see :func:`main`)."""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sampleopt.data import mnist
from sampleopt.errors import UsageError
from sampleopt.metrics.classifier import (
    ARCHITECTURE,
    PRETRAINED_STEM,
    DigitClassifier,
    classifier_accuracy,
)
from sampleopt.rundir import atomic_write_text


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image by an independent integer offset in [-max_shift, max_shift]
    along each axis, filling with the background value -1."""
    if max_shift == 0:
        return x
    n, _, h, w = x.shape
    s = max_shift
    padded = F.pad(x, (s, s, s, s), value=-1.0)
    dy = torch.randint(0, 2 * s + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * s + 1, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None]  # (n, 1, h, 1)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :]  # (n, 1, 1, w)
    idx = torch.arange(n)[:, None, None, None]
    return padded[idx, torch.zeros_like(idx), rows, cols]


def train_digit_classifier(
    *,
    seed: int = 0,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    max_shift: int = 2,
    verbose: bool = False,
) -> tuple[DigitClassifier, dict]:
    """Train a :class:`DigitClassifier` on ``mnist("train")`` (4000 images) with AdamW
    (cosine decay of ``lr`` to 0 over ``epochs``), cross-entropy, dropout 0.3 and random
    shifts of up to ``max_shift`` pixels; evaluate on ``mnist("test")`` (1000 held-out
    images, never seen in training). Deterministic for a given seed, torch version and
    thread count; the global RNG state is left untouched.

    Returns ``(model, stats)`` with the model in eval mode and ``stats`` holding
    ``test_accuracy``, ``train_accuracy`` (unaugmented), ``final_loss``, ``seconds``,
    the hyperparameters and the split sizes."""
    for name, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UsageError(f"train_digit_classifier: {name} must be an integer >= {low}")
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or not 0 <= max_shift <= 4:
        raise UsageError("train_digit_classifier: max_shift must be an integer in 0..4")
    if not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise UsageError(f"train_digit_classifier: lr must be a number > 0, got {lr!r}")

    x_train, y_train = mnist("train")
    x_test, y_test = mnist("test")
    start = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        model = DigitClassifier()
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        steps_per_epoch = math.ceil(len(y_train) / batch_size)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
        model.train()
        loss_history = []
        for epoch in range(epochs):
            perm = torch.randperm(len(y_train), generator=gen)
            total = 0.0
            for i in range(0, len(y_train), batch_size):
                idx = perm[i : i + batch_size]
                xb = random_shift(x_train[idx], max_shift, gen)
                loss = F.cross_entropy(model(xb), y_train[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            loss_history.append(total / len(y_train))
            if verbose:
                print(f"epoch {epoch + 1}/{epochs}  loss {loss_history[-1]:.4f}", flush=True)
        model.eval()
    seconds = time.perf_counter() - start
    stats = {
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "max_shift": max_shift,
        "n_train": len(y_train),
        "n_test": len(y_test),
        "final_loss": loss_history[-1],
        "loss_history": loss_history,
        "train_accuracy": classifier_accuracy(x_train, y_train, model),
        "test_accuracy": classifier_accuracy(x_test, y_test, model),
        "seconds": seconds,
        "torch_num_threads": torch.get_num_threads(),
    }
    return model, stats


# ---------------------------------------------------------------- files


def save_classifier(model: DigitClassifier, path_stem, stats: dict, command: str) -> Path:
    """Write ``<path_stem>.safetensors`` (the state dict) and ``<path_stem>.json`` (the
    command that made it, seed, accuracies, torch and numpy versions, architecture,
    training stats), each atomically; returns the safetensors path."""
    from safetensors.torch import save_file

    if not isinstance(model, DigitClassifier):
        raise UsageError(f"save_classifier: model must be a DigitClassifier, got {type(model)}")
    stem = Path(path_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    path = stem.with_name(stem.name + ".safetensors")
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"architecture": ARCHITECTURE})
    os.replace(tmp, path)
    meta = {
        "architecture": ARCHITECTURE,
        "description": (
            "MNIST digit classifier for 'classifier FID' (penultimate 128-d features); "
            "see sampleopt.metrics.classifier"
        ),
        "command": command,
        "seed": stats.get("seed"),
        "test_accuracy": stats.get("test_accuracy"),
        "train_accuracy": stats.get("train_accuracy"),
        "data": "sampleopt.data.mnist: trained on split 'train' (4000), tested on 'test' (1000)",
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "n_parameters": sum(v.numel() for v in state.values()),
        "stats": stats,
    }
    atomic_write_text(stem.with_name(stem.name + ".json"), json.dumps(meta, indent=2) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """``python -m sampleopt.metrics.classifier train [--out STEM] [--epochs N]``:
    train with seed 0 and write ``STEM.safetensors`` + ``STEM.json`` (default: the
    shipped ``sampleopt/pretrained/mnist-classifier``)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(
        prog="python -m sampleopt.metrics.classifier",
        description="Train the MNIST digit classifier used for classifier FID.",
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train", help="train (seed 0) and write the weights and a JSON")
    p.add_argument("--out", default=str(PRETRAINED_STEM), help="path stem of the two files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args(argv)
    command = " ".join(["python -m sampleopt.metrics.classifier", *map(shlex.quote, argv)])
    try:
        model, stats = train_digit_classifier(seed=args.seed, epochs=args.epochs, verbose=True)
        path = save_classifier(model, args.out, stats, command)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"test accuracy {stats['test_accuracy']:.4f} (train {stats['train_accuracy']:.4f}) "
        f"in {stats['seconds']:.0f} s; wrote {path} and {Path(path).with_suffix('.json')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
