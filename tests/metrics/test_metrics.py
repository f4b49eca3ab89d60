"""Metrics against closed forms: the Frechet distance between Gaussians, sliced
Wasserstein in 1-D (where it is W_2), and the unbiasedness of MMD^2_u.

Random checks use fixed seeds and tolerances stated in standard errors (SE)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sampleopt.errors import UsageError
from sampleopt.metrics import (
    frechet_distance,
    frechet_distance_from_features,
    mmd_rbf,
    sliced_wasserstein,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_rotation(p: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(p, p, generator=gen(seed), dtype=torch.float64))
    return q


# ---------------------------------------------------------------- Frechet


def test_frechet_distance_closed_form_diagonal_and_rotated():
    # For commuting covariances (diagonal, or both diagonal in the same rotated basis):
    # d = |mu1 - mu2|^2 + sum_i (sqrt a_i - sqrt b_i)^2 exactly.
    g = gen(0)
    p = 6
    mu1, mu2 = (
        torch.randn(p, generator=g, dtype=torch.float64),
        torch.randn(p, generator=g, dtype=torch.float64),
    )
    a = torch.rand(p, generator=g, dtype=torch.float64) * 3 + 0.1
    b = torch.rand(p, generator=g, dtype=torch.float64) * 3 + 0.1
    expected = float(((mu1 - mu2) ** 2).sum() + ((a.sqrt() - b.sqrt()) ** 2).sum())
    got = frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b))
    assert abs(got - expected) <= 1e-10 * expected
    q = random_rotation(p, 1)
    got_rot = frechet_distance(q @ mu1, q @ torch.diag(a) @ q.T, q @ mu2, q @ torch.diag(b) @ q.T)
    assert abs(got_rot - expected) <= 1e-8 * expected
    assert frechet_distance(mu1, torch.diag(a), mu1, torch.diag(a)) == pytest.approx(0, abs=1e-10)


def test_frechet_distance_non_commuting_matches_symmetric_form():
    # tr (C1 C2)^(1/2) = tr (C1^(1/2) C2 C1^(1/2))^(1/2), the second computed here with
    # symmetric eigendecompositions only, independently of scipy.linalg.sqrtm.
    g = gen(2)
    m1 = torch.randn(5, 5, generator=g, dtype=torch.float64)
    m2 = torch.randn(5, 5, generator=g, dtype=torch.float64)
    c1, c2 = m1 @ m1.T + 0.1 * torch.eye(5), m2 @ m2.T + 0.1 * torch.eye(5)
    e, v = torch.linalg.eigh(c1)
    s1 = v @ torch.diag(e.sqrt()) @ v.T
    inner = torch.linalg.eigvalsh(s1 @ c2 @ s1).clamp_min(0).sqrt().sum()
    mu = torch.ones(5, dtype=torch.float64)
    expected = float(5 + torch.trace(c1) + torch.trace(c2) - 2 * inner)
    assert frechet_distance(mu, c1, 2 * mu, c2) == pytest.approx(expected, rel=1e-9)


def test_frechet_from_features_identical_is_zero_and_shift_is_squared_norm():
    g = gen(3)
    f = torch.randn(2000, 32, generator=g) @ torch.randn(32, 32, generator=g)
    assert abs(frechet_distance_from_features(f, f)) < 1e-6
    shift = torch.randn(32, generator=g)
    d = frechet_distance_from_features(f, f + shift)
    expected = float((shift.double() ** 2).sum())
    assert d == pytest.approx(expected, rel=1e-5, abs=1e-5)
    # images are flattened: (n, 1, 4, 8) gives the same as (n, 32)
    assert frechet_distance_from_features(
        f.reshape(-1, 1, 4, 8), (f + shift).reshape(-1, 1, 4, 8)
    ) == (pytest.approx(d, rel=1e-12))


# ---------------------------------------------------------------- sliced Wasserstein


def test_sliced_wasserstein_in_1d_is_w2_and_recovers_a_shift():
    n, m = 100_000, 2.0
    x = torch.randn(n, 1, generator=gen(0), dtype=torch.float64)
    z = torch.randn(n, 1, generator=gen(1), dtype=torch.float64)
    y = z + m
    same = sliced_wasserstein(x, z, n_projections=4)
    shifted = sliced_wasserstein(x, y, n_projections=4)
    # In 1-D every projection is +-1, so SW_2 is exactly W_2 of the empirical laws,
    # the root mean squared difference of the sorted samples.
    w2 = float(((x.sort(0).values - y.sort(0).values) ** 2).mean().sqrt())
    assert shifted == pytest.approx(w2, rel=1e-10)
    # Same law: W_2 between two samples of N(0, 1) shrinks like sqrt(log log n / n): 0.011
    # here; 0.05 leaves a wide margin and is 40 times smaller than the shift.
    assert same < 0.05
    # Shift: in 1-D, W_2(x, z + m)^2 = m^2 - 2 m (mean x - mean z) + W_2(x, z)^2 exactly, and
    # mean x - mean z has SE sqrt(2 / n); so |SW - m| <= 4 * 2 m SE / m + same^2 / m at 4 SE.
    tol = 8 * math.sqrt(2 / n) + same**2 / m
    assert abs(shifted - m) <= tol, (shifted, tol)


def test_sliced_wasserstein_is_seeded_and_flattens_images():
    g = gen(4)
    x, y = torch.randn(300, 1, 2, 2, generator=g), torch.randn(300, 1, 2, 2, generator=g) + 0.5
    a = sliced_wasserstein(x, y, n_projections=64, seed=1)
    assert a == sliced_wasserstein(x.reshape(300, 4), y.reshape(300, 4), n_projections=64, seed=1)
    assert a == sliced_wasserstein(x, y, n_projections=64, seed=1)
    assert a != sliced_wasserstein(x, y, n_projections=64, seed=2)
    assert sliced_wasserstein(x, x) == pytest.approx(0, abs=1e-12)


# ---------------------------------------------------------------- MMD


def test_mmd_rbf_matches_hand_computation():
    # x = {0, 1}, y = {0, 2}, one bandwidth h = 1: k(a, b) = exp(-(a - b)^2 / 2)
    x, y = torch.tensor([[0.0], [1.0]]), torch.tensor([[0.0], [2.0]])
    kxx, kyy = math.exp(-0.5), math.exp(-2)
    kxy = (1 + math.exp(-2) + math.exp(-0.5) + math.exp(-0.5)) / 4
    assert mmd_rbf(x, y, bandwidths=(1.0,)) == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-12)


def test_mmd_rbf_is_unbiased_and_detects_a_shift():
    # Mean over 200 repeats of MMD^2_u between two samples of N(0, I_2) (n = 50 each)
    # must be within 4 SE of 0 (a biased V-statistic would sit about 0.2 above 0, many
    # SE away); between N(0, I) and N((1, 0), I) it must be more than 4 SE above 0.
    g = gen(0)
    shift = torch.tensor([1.0, 0.0])
    same, diff = [], []
    for _ in range(200):
        x, y = torch.randn(50, 2, generator=g), torch.randn(50, 2, generator=g)
        same.append(mmd_rbf(x, y))
        diff.append(mmd_rbf(x, y + shift))
    same_t, diff_t = (
        torch.tensor(same, dtype=torch.float64),
        torch.tensor(diff, dtype=torch.float64),
    )
    se_same = float(same_t.std()) / math.sqrt(200)
    se_diff = float(diff_t.std()) / math.sqrt(200)
    assert abs(float(same_t.mean())) <= 4 * se_same, (float(same_t.mean()), se_same)
    assert float(diff_t.mean()) > 4 * se_diff
    assert float(diff_t.mean()) > 10 * max(abs(float(same_t.mean())), se_same)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "call, needle",
    [
        (
            lambda: sliced_wasserstein(torch.zeros(5, 2), torch.zeros(5, 3)),
            r"same shape per sample, got \(5, 2\) and \(5, 3\)",
        ),
        (
            lambda: mmd_rbf(torch.zeros(5, 1, 8, 8), torch.zeros(5, 1, 28, 28)),
            r"mmd_rbf: x and y must have the same shape",
        ),
        (
            lambda: frechet_distance_from_features(torch.zeros(5, 2), torch.zeros(5, 4)),
            "frechet_distance_from_features: x and y",
        ),
        (
            lambda: frechet_distance(torch.zeros(2), torch.eye(2), torch.zeros(3), torch.eye(3)),
            "same dimension, got 2 and 3",
        ),
        (
            lambda: frechet_distance(torch.zeros(2), torch.eye(3), torch.zeros(2), torch.eye(2)),
            r"covariance of shape \(p, p\)",
        ),
        (
            lambda: mmd_rbf(torch.zeros(1, 2), torch.zeros(5, 2)),
            "x needs at least 2 samples, got 1",
        ),
        (
            lambda: mmd_rbf(torch.zeros(3, 2), torch.zeros(3, 2), bandwidths=()),
            "bandwidths must be",
        ),
        (
            lambda: mmd_rbf(torch.zeros(3, 2), torch.zeros(3, 2), bandwidths=(1.0, -1.0)),
            "bandwidths must be",
        ),
        (
            lambda: sliced_wasserstein(torch.zeros(3, 2), torch.tensor([[0.0, float("nan")]])),
            "y contains NaN",
        ),
        (
            lambda: sliced_wasserstein(torch.zeros(3, 2), torch.zeros(3, 2), n_projections=0),
            "n_projections must be",
        ),
    ],
)
def test_bad_input_is_a_usage_error(call, needle):
    with pytest.raises(UsageError, match=needle):
        call()


def test_metrics_accept_numpy():
    x = np.random.default_rng(0).normal(size=(50, 3))
    assert mmd_rbf(x, x + 1) > 0
    assert sliced_wasserstein(x, x) == pytest.approx(0, abs=1e-12)
