"""The uniform law on the unit sphere (data set "sphere", docs/guidance-sphere.md): every
sample has |x| = 1, the law is rotation invariant (its moments along any unit direction
are those along a coordinate axis, within standard errors), and the shipped base model's
samples stay near the sphere."""

from __future__ import annotations

import math

import pytest
import torch

import sampleopt as so
from sampleopt.data import SPHERE_DIM, get_dataset, sphere_distance, unit_sphere
from sampleopt.errors import UsageError

N = 40_000


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dim", [1, 2, 16])
def test_samples_have_unit_norm(dim):
    x = unit_sphere(1000, dim, generator=gen(0))
    assert x.shape == (1000, dim) and x.dtype == torch.float32
    assert float((x.double().norm(dim=1) - 1).abs().max()) < 1e-6
    assert float(sphere_distance(x).max()) < 1e-6
    assert torch.equal(x, unit_sphere(1000, dim, generator=gen(0)))
    assert unit_sphere(3, dim, generator=gen(0), dtype=torch.float64).dtype == torch.float64


def test_mean_and_covariance_within_standard_errors():
    """Mean 0 and covariance I / D: each entry within 5 standard errors (over N draws)."""
    x = unit_sphere(N, SPHERE_DIM, generator=gen(1)).double()
    se = x.std(0) / math.sqrt(N)
    assert bool((x.mean(0).abs() < 5 * se).all())
    outer = x[:, :, None] * x[:, None, :]
    cov, cov_se = outer.mean(0), outer.std(0) / math.sqrt(N)
    assert bool(((cov - torch.eye(SPHERE_DIM) / SPHERE_DIM).abs() < 5 * cov_se).all())


def test_law_is_rotation_invariant():
    """The 2nd and 4th moments of v^T x agree with the exact ones of a uniform law,
    1 / D and 3 / (D (D + 2)), for a coordinate axis, the diagonal and a random direction
    (a law normalised from a non-Gaussian, e.g. a cube's, fails the 4th moment)."""
    D = SPHERE_DIM
    x = unit_sphere(N, D, generator=gen(2)).double()
    random_dir = torch.randn(D, generator=gen(3), dtype=torch.float64)
    exact = {2: 1 / D, 4: 3 / (D * (D + 2))}
    for v in (torch.eye(D, dtype=torch.float64)[0], torch.ones(D).double(), random_dir):
        p = x @ (v / v.norm())
        for k, m in exact.items():
            pk = p**k
            assert abs(float(pk.mean()) - m) < 5 * float(pk.std()) / math.sqrt(N), (k, v)
    cube = torch.rand(N, D, generator=gen(4), dtype=torch.float64) * 2 - 1
    cube = cube / cube.norm(dim=1, keepdim=True)
    p4 = cube[:, 0] ** 4  # along an axis: about 0.109 against the exact 0.125
    assert abs(float(p4.mean()) - exact[4]) > 5 * float(p4.std()) / math.sqrt(N)


def test_registered_data_set():
    spec = get_dataset("sphere")
    assert spec.shape == (SPHERE_DIM,) and not spec.labelled
    x = spec.load("train", n=50)
    assert torch.equal(x, spec.load("train", n=50))
    assert not torch.equal(x, spec.load("test", n=50))
    assert float(sphere_distance(x).max()) < 1e-6


def test_sphere_distance_values():
    x = torch.tensor([[3.0, 4.0], [0.0, 0.5], [0.6, 0.8]])
    torch.testing.assert_close(sphere_distance(x), torch.tensor([4.0, 0.5, 0.0]).double())


@pytest.mark.parametrize(
    "call",
    [
        lambda: unit_sphere(-1),
        lambda: unit_sphere(2.5),
        lambda: unit_sphere(3, 0),
        lambda: unit_sphere(3, True),
        lambda: sphere_distance(torch.zeros(3)),
    ],
)
def test_bad_input(call):
    with pytest.raises(UsageError):
        call()


def test_shipped_base_model_samples_near_the_sphere():
    """500 DDPM samples (100 steps) of the shipped model "sphere": mean | |x| - 1 | below
    0.03 (an isotropic Gaussian of the same covariance, N(0, I / D), has about 0.27), and
    their mean within 5 standard errors of 0 along theta = (1, ..., 1) / sqrt(D)."""
    base = so.load_base_model("sphere")
    assert base.data_shape == (SPHERE_DIM,)
    with torch.no_grad():
        x = base.sampler("ddpm", 100).sample(500, generator=gen(0))
    assert float(sphere_distance(x).mean()) < 0.03
    iso = torch.randn(500, SPHERE_DIM, generator=gen(1)) / math.sqrt(SPHERE_DIM)
    assert float(sphere_distance(iso).mean()) > 0.1
    f = x.double() @ torch.full((SPHERE_DIM,), SPHERE_DIM**-0.5).double()
    assert abs(float(f.mean())) < 5 * float(f.std()) / math.sqrt(500)
