"""The two data sets of the schedule experiment, each with its three disjoint parts:
training data for denoising score matching, a validation set the upper level (and
Bayesian optimisation's selection) scores samples against, and a held-out test set that
only the final evaluation sees.

* ``hex`` (2-D, six N(c_i, I) at radius 4): fresh training draws every step; validation
  = 1000 draws from the problem's own seed; test = 2000 draws of the data set's "test"
  stream. Upper objective: squared sliced 2-Wasserstein distance (64 fixed directions).
  Held-out: the sliced 2-Wasserstein distance (POT, 256 directions) and MMD^2
  (:func:`sampleopt.metrics.mmd_rbf`'s estimator and bandwidths, reference term cached).
* ``digits`` (scikit-learn 8x8 digits, flattened to 64-D vectors): the data set's
  "train" split (1438 images) cut by a fixed permutation into 1150 for training and 288
  for validation; test = the held-out split (359 images). A small classifier
  (:func:`train_feature_net`, trained once on the 1150 training images with labels)
  gives 64-D features; upper objective: MMD^2 on those features. Held-out: feature
  MMD^2 and the Frechet distance between Gaussians fitted to the features (the FID
  formula with this classifier in place of Inception: comparable only with itself).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sampleopt.data import get_dataset
from sampleopt.metrics import (
    DEFAULT_BANDWIDTHS,
    frechet_distance_from_features,
    sliced_wasserstein,
)
from sampleopt.models import TimeMLP
from sampleopt.objectives.batch import MMDObjective, SlicedWassersteinObjective, median_bandwidth

PROBLEMS = ("hex", "digits")
DIGITS_TRAIN = 1150  # of the 1438 images of the "train" split; the rest validate


@dataclass
class Problem:
    name: str
    dim: int
    width: int
    train_batch: Callable[[int, torch.Generator], torch.Tensor]
    validation: torch.Tensor
    test: torch.Tensor
    upper: Callable[[torch.Tensor], torch.Tensor]
    heldout: Callable[[torch.Tensor], dict[str, float]]
    primary: str  # the held-out metric of the table
    notes: dict

    def network(self, seed: int, num_train_steps: int) -> TimeMLP:
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return TimeMLP(self.dim, num_train_steps, self.width, 3)


class FeatureNet(nn.Module):
    """64 -> 128 -> 64 -> 10 ReLU MLP for flattened 8x8 digits; ``features`` is the
    64-D penultimate layer after its ReLU."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU())
        self.head = nn.Linear(64, 10)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


def train_feature_net(images, labels, *, steps: int = 600, seed: int = 0) -> FeatureNet:
    """Adam (lr 1e-3, batch 128, weight decay 1e-4) on cross-entropy, from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        net = FeatureNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (128,), generator=gen)
        loss = nn.functional.cross_entropy(net(images[idx]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval().requires_grad_(False)


_HEX_TEST: list = []


def _hex_test():
    """The 2000 test draws and the held-out MMD^2 against them (built once: its
    reference term is a 2000 x 2000 kernel sum)."""
    if not _HEX_TEST:
        test = get_dataset("hex").load("test", n=2000)
        _HEX_TEST.extend([test, MMDObjective(test.double(), bandwidths=DEFAULT_BANDWIDTHS)])
    return _HEX_TEST[0], _HEX_TEST[1]


def _hex(seed: int) -> Problem:
    spec = get_dataset("hex")
    validation = spec.load("train", n=1000, generator=torch.Generator().manual_seed(seed))
    test, mmd = _hex_test()

    def heldout(x):
        return {
            "sw": sliced_wasserstein(x, test, n_projections=256, seed=0),
            "mmd": float(mmd(x.double())),
        }

    return Problem(
        "hex", 2, 128,
        lambda n, g: spec.load("train", n=n, generator=g),
        validation, test,
        SlicedWassersteinObjective(validation, n_projections=64, seed=seed),
        heldout, "sw", {},
    )  # fmt: skip


_FEATURES: dict[int, tuple] = {}


def _digits_parts(seed: int):
    """(train, validation, test, feature net, its test accuracy), built once per seed
    of the split (the classifier and the split do not depend on the run)."""
    if seed not in _FEATURES:
        spec = get_dataset("digits")
        images, labels = spec.load("train")
        order = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
        flat = images.reshape(images.shape[0], -1)
        fit, val = order[:DIGITS_TRAIN], order[DIGITS_TRAIN:]
        net = train_feature_net(flat[fit], labels[fit], seed=seed)
        test, test_labels = spec.load("test")
        test = test.reshape(test.shape[0], -1)
        acc = float((net(test).argmax(1) == test_labels).double().mean())
        _FEATURES[seed] = (flat[fit], flat[val], test, net, acc)
    return _FEATURES[seed]


def _digits(seed: int) -> Problem:
    train, validation, test, net, acc = _digits_parts(0)  # one split for every run
    test_features = net.features(test).double()
    bandwidths = [median_bandwidth(test_features) * c for c in (0.25, 0.5, 1.0, 2.0, 4.0)]
    mmd = MMDObjective(test_features, bandwidths=bandwidths)  # = mmd_rbf, cached

    def heldout(x):
        f = net.features(x.clamp(-1, 1)).double()
        return {
            "feature_mmd": float(mmd(f)),
            "feature_fd": frechet_distance_from_features(f, test_features),
        }

    def batch(n, g):
        return train[torch.randint(0, train.shape[0], (n,), generator=g)]

    def features(x):
        return net.features(x.clamp(-1, 1))

    return Problem(
        "digits", 64, 256, batch, validation, test,
        MMDObjective(validation, features=features),
        heldout, "feature_mmd", {"classifier_test_accuracy": acc},
    )  # fmt: skip


def get_problem(name: str, seed: int) -> Problem:
    """The problem ``name`` (one of :data:`PROBLEMS`); ``seed`` sets hex's validation
    draws and the sliced-Wasserstein directions (digits' split is fixed)."""
    return {"hex": _hex, "digits": _digits}[name](seed)
