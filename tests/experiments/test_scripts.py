"""The analysis scripts' arithmetic: the importance-weighted Frechet distance of
scripts/mnist_tilt.py and the pixel split of scripts/mnist_gain_split.py."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from sampleopt.metrics.distances import frechet_distance_from_features


def load(name):
    path = Path(__file__).resolve().parents[2] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_weighted_frechet_distance_is_the_plain_one_on_the_weighted_subset():
    weighted_fid = load("mnist_tilt").weighted_fid
    g = torch.Generator().manual_seed(0)
    f = torch.randn(40, 5, generator=g, dtype=torch.float64)
    ref = torch.randn(30, 5, generator=g, dtype=torch.float64) + 0.5
    uniform = torch.full((40,), 1 / 40, dtype=torch.float64)
    assert abs(weighted_fid(f, uniform, ref) - frechet_distance_from_features(f, ref)) < 1e-8
    subset = torch.zeros(40, dtype=torch.float64)
    subset[:25] = 1 / 25  # equal weights on 25 rows: the unbiased covariance of those rows
    expect = frechet_distance_from_features(f[:25], ref)
    assert abs(weighted_fid(f, subset, ref) - expect) < 1e-8


def test_the_pixel_split_adds_up_and_separates_the_three_sets():
    split = load("mnist_gain_split").split
    x = -torch.ones(1, 1, 28, 28)
    x[0, 0, 10, 10] = 1.0  # one stroke pixel at intensity 1
    x[0, 0, 10, 12] = 0.0  # 2 px away: intensity 0.5
    x[0, 0, 0, 0] = 0.0  # background: 0.5
    stroke = (x + 1) / 2 > 0.6
    near = torch.nn.functional.max_pool2d(stroke.float(), 5, 1, 2) > 0
    s, n, b = split(x, stroke, near)
    assert (s, n, b) == (1 / 784, 0.5 / 784, 0.5 / 784)
