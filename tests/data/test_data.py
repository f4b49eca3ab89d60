"""Data: toy laws against their closed forms, the subspace Gaussian's geometry, image
sets' shapes, ranges and splits, the registry and its errors.

Statistical checks use a fixed seed and a tolerance of 4 standard errors (SE), so a
wrong law (a wrong centre, weight or scale) fails while the right one passes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from sampleopt.data import (
    DATASETS,
    SubspaceGaussian,
    bimodal_1d,
    bimodal_1d_log_prob,
    check_batch,
    digits,
    get_dataset,
    hex_mixture,
    hex_mixture_log_prob,
    mnist,
    random_orthonormal,
    split_indices,
    to_unit_interval,
)
from sampleopt.errors import UsageError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def hex_centres64(radius: float) -> torch.Tensor:
    ang = torch.arange(6, dtype=torch.float64) * math.pi / 3
    return radius * torch.stack([ang.cos(), ang.sin()], 1)


def assert_moments(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> None:
    """Sample mean and covariance entries within 4 SE of the closed form. The SE of
    each covariance entry is the sample standard deviation of the centred products
    (x_j - mu_j)(x_k - mu_k) over sqrt(n)."""
    x = x.to(torch.float64)
    n, d = x.shape
    se_mean = (torch.diagonal(cov) / n).sqrt()
    assert ((x.mean(0) - mean).abs() <= 4 * se_mean).all(), (x.mean(0), mean, se_mean)
    c = x - mean
    for j in range(d):
        for k in range(j, d):
            prod = c[:, j] * c[:, k]
            se = prod.std() / math.sqrt(n)
            assert abs(float(prod.mean() - cov[j, k])) <= 4 * float(se), (j, k, prod.mean())


# ---------------------------------------------------------------- toy laws


@pytest.mark.parametrize(
    "weights, radius",
    [(None, 4.0), ([0.5, 0.1, 0.1, 0.05, 0.05, 0.2], 4.0), ([1, 0, 3, 0, 0, 0], 2.5)],
)
def test_hex_mixture_moments_match_closed_form(weights, radius):
    n = 200_000
    x = hex_mixture(n, generator=gen(1), radius=radius, weights=weights, dtype=torch.float64)
    assert x.shape == (n, 2) and x.dtype == torch.float64
    w = (
        torch.full((6,), 1 / 6, dtype=torch.float64)
        if weights is None
        else torch.tensor(weights, dtype=torch.float64)
    )
    w = w / w.sum()
    c = hex_centres64(radius)
    mean = w @ c
    cov = (
        torch.eye(2, dtype=torch.float64)
        + (w[:, None, None] * c[:, :, None] * c[:, None, :]).sum(0)
        - torch.outer(mean, mean)
    )
    if weights is None:  # uniform: mean 0, covariance (1 + r^2/2) I
        assert torch.allclose(cov, (1 + radius**2 / 2) * torch.eye(2, dtype=torch.float64))
    assert_moments(x, mean, cov)


def test_hex_mixture_dtype_seed_and_zero_weight_components():
    a = hex_mixture(1000, generator=gen(3))
    b = hex_mixture(1000, generator=gen(3))
    assert a.dtype == torch.float32 and torch.equal(a, b)
    assert not torch.equal(a, hex_mixture(1000, generator=gen(4)))
    assert hex_mixture(0).shape == (0, 2)
    # all the weight on c_2 = 4 (cos 2pi/3, sin 2pi/3): every sample within 6 SD of it
    x = hex_mixture(5000, generator=gen(0), weights=[0, 0, 1, 0, 0, 0], dtype=torch.float64)
    assert ((x - hex_centres64(4.0)[2]).norm(dim=1) < 6).all()


@pytest.mark.parametrize("weights, radius", [(None, 4.0), ([0.5, 0.1, 0.1, 0.05, 0.05, 0.2], 3.0)])
def test_hex_log_prob_integrates_to_one(weights, radius):
    # Riemann sum on [-12, 12]^2 with step 0.04 (float64). For a smooth Gaussian
    # integrand the sum's error is of order exp(-2 pi^2 / h^2), negligible, and the mass
    # outside the box is below the N(0,1) tail at 8 SD (about 1e-15): 1e-9 is a safe
    # tolerance that a wrong normalising constant (e.g. log(2 pi) missing) fails.
    h = 0.04
    g = torch.arange(-12, 12 + h / 2, h, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    mass = float(hex_mixture_log_prob(pts, radius=radius, weights=weights).exp().sum()) * h * h
    assert abs(mass - 1) < 1e-9, mass


def test_hex_log_prob_matches_scipy():
    w = np.array([0.5, 0.1, 0.1, 0.05, 0.05, 0.2])
    c = hex_centres64(4.0).numpy()
    x = hex_mixture(50, generator=gen(2), weights=w, dtype=torch.float64)
    ref = np.log(
        sum(w[i] * stats.multivariate_normal(c[i], np.eye(2)).pdf(x.numpy()) for i in range(6))
    )
    got = hex_mixture_log_prob(x, weights=w)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10)
    assert hex_mixture_log_prob(x.float()).dtype == torch.float32


def test_bimodal_1d_moments():
    # mean 0, variance 1 + 9 = 10; E x^4 = 3^4 + 6 * 3^2 + 3 = 138, so Var(x^2) = 38
    n = 200_000
    x = bimodal_1d(n, generator=gen(5), dtype=torch.float64)
    assert x.shape == (n, 1)
    assert abs(float(x.mean())) <= 4 * math.sqrt(10 / n)
    assert abs(float((x**2).mean()) - 10) <= 4 * math.sqrt(38 / n)
    # half the mass on each side: fraction of x > 0 is 1/2 up to 4 SE (binomial)
    assert abs(float((x > 0).double().mean()) - 0.5) <= 4 * math.sqrt(0.25 / n)
    assert bimodal_1d(10).dtype == torch.float32


def test_bimodal_1d_log_prob_matches_scipy_and_integrates_to_one():
    x = torch.linspace(-10, 10, 201, dtype=torch.float64)[:, None]
    ref = np.log(
        0.5 * stats.norm(-3, 1).pdf(x.numpy()[:, 0]) + 0.5 * stats.norm(3, 1).pdf(x.numpy()[:, 0])
    )
    np.testing.assert_allclose(bimodal_1d_log_prob(x).numpy(), ref, rtol=1e-12)
    # Riemann sum on [-15, 15], step 0.01: the error is far below 1e-10 (see above)
    h = 0.01
    g = torch.arange(-15, 15 + h / 2, h, dtype=torch.float64)[:, None]
    assert abs(float(bimodal_1d_log_prob(g).exp().sum()) * h - 1) < 1e-10


# ---------------------------------------------------------------- subspace


def test_subspace_basis_is_orthonormal_and_deterministic():
    s = SubspaceGaussian(64, 16, seed=0)
    assert s.A.shape == (64, 16) and s.A.dtype == torch.float32
    eye = torch.eye(16, dtype=torch.float64)
    assert torch.allclose(s.A.double().T @ s.A.double(), eye, atol=1e-6)
    assert torch.allclose(
        random_orthonormal(64, 16, 0).T @ random_orthonormal(64, 16, 0), eye, atol=1e-12
    )
    assert torch.equal(SubspaceGaussian(64, 16, seed=0).A, s.A)
    assert not torch.allclose(SubspaceGaussian(64, 16, seed=1).A, s.A)
    assert torch.equal(s.mean, torch.zeros(64))
    assert torch.allclose(s.covariance, s.A @ s.A.T, atol=1e-6)


def test_subspace_samples_lie_in_span_and_ratio_detects_leaving_it():
    s = SubspaceGaussian(64, 16, seed=0)
    x = s.sample(2000, generator=gen(0))
    assert x.shape == (2000, 64) and x.dtype == torch.float32
    r = s.off_support_ratio(x)
    assert r.shape == (2000,)
    assert float(r.max()) < 1e-5  # float32 rounding only (about 1e-7)
    # a perpendicular component of known size is measured exactly
    perp = torch.randn(2000, 64, dtype=torch.float64)
    perp = perp - (perp @ s._A64) @ s._A64.T
    x64 = x.double()
    target = 0.3 * x64.norm(dim=1, keepdim=True) / perp.norm(dim=1, keepdim=True)
    ratio = s.off_support_ratio(x64 + target * perp)
    assert torch.allclose(ratio, torch.full_like(ratio, 0.3), atol=1e-10)


def test_subspace_covariance_matches_AAt():
    s = SubspaceGaussian(64, 16, seed=0)
    n = 100_000
    x = s.sample(n, generator=gen(7)).double()
    # trace of the covariance: mean |x|^2 = mean |z|^2, chi^2_16 / n: mean 16, SE sqrt(32 / n)
    assert abs(float((x**2).sum(1).mean()) - 16) <= 4 * math.sqrt(32 / n)
    cov = s.covariance.double()
    for j, k in [(0, 0), (0, 1), (5, 17), (40, 63), (63, 63)]:
        prod = x[:, j] * x[:, k]
        se = float(prod.std()) / math.sqrt(n)
        assert abs(float(prod.mean()) - float(cov[j, k])) <= 4 * se, (j, k)


def test_subspace_log_prob_latent():
    s = SubspaceGaussian(32, 4, seed=3)
    x = s.sample(20, generator=gen(1)).double()
    z = x @ s._A64
    ref = stats.multivariate_normal(np.zeros(4), np.eye(4)).logpdf(z.numpy())
    np.testing.assert_allclose(s.log_prob_latent(x).numpy(), ref, rtol=1e-10)
    # it ignores the off-support component
    perp = torch.randn(20, 32, dtype=torch.float64)
    perp = perp - (perp @ s._A64) @ s._A64.T
    np.testing.assert_allclose(s.log_prob_latent(x + perp).numpy(), ref, rtol=1e-10)


# ---------------------------------------------------------------- images


@pytest.mark.parametrize(
    "load, side, total, n_test", [(digits, 8, 1797, 359), (mnist, 28, 5000, 1000)]
)
def test_image_sets_shapes_ranges_and_splits(load, side, total, n_test):
    xa, ya = load("all")
    xtr, ytr = load("train")
    xte, yte = load("test")
    assert xa.shape == (total, 1, side, side) and ya.shape == (total,)
    assert xtr.shape == (total - n_test, 1, side, side) and xte.shape == (n_test, 1, side, side)
    for x, y in [(xa, ya), (xtr, ytr), (xte, yte)]:
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert float(x.min()) == -1.0 and float(x.max()) == 1.0
        assert set(y.tolist()) == set(range(10))
    name = load.__name__
    itr, ite = split_indices(total, name, "train"), split_indices(total, name, "test")
    assert len(set(itr.tolist()) & set(ite.tolist())) == 0
    assert sorted(itr.tolist() + ite.tolist()) == list(range(total))
    assert torch.equal(xte, xa[torch.from_numpy(ite)]) and torch.equal(
        ytr, ya[torch.from_numpy(itr)]
    )
    x2, y2 = load("test")
    assert torch.equal(x2, xte) and torch.equal(y2, yte)


def test_split_is_pinned():
    # The split is a function of the data set's name only (SHA-256 ordering): these
    # indices must never change, or earlier held-out results stop being held out.
    assert split_indices(1797, "digits", "test")[:5].tolist() == [702, 517, 1543, 661, 1758]
    assert split_indices(5000, "mnist", "test")[:5].tolist() == [1384, 596, 587, 3901, 765]


def test_image_scaling_is_affine_map_of_raw_pixels():
    from sklearn.datasets import load_digits

    x, y = digits("all")
    raw = load_digits()
    np.testing.assert_allclose(
        (to_unit_interval(x) * 16).reshape(1797, 64).numpy(), raw.data, atol=1e-5
    )
    assert np.array_equal(y.numpy(), raw.target)
    assert torch.equal(
        to_unit_interval(torch.tensor([-1.0, 0.0, 1.0, 2.0])), torch.tensor([0, 0.5, 1, 1])
    )


# ---------------------------------------------------------------- registry


def test_registry_loads_every_dataset_with_its_shape():
    assert list(DATASETS) == ["hex", "bimodal-1d", "subspace", "sphere", "digits", "mnist"]
    for name, spec in DATASETS.items():
        assert spec.name == name and spec.description
        out = spec.load("train", n=8, generator=gen(0))
        x = out[0] if spec.labelled else out
        assert spec.check(x) is x and x.shape == (8, *spec.shape)
        if spec.labelled:
            assert out[1].shape == (8,) and out[1].dtype == torch.int64


def test_registry_defaults_are_deterministic_and_splits_differ():
    hexspec = get_dataset("hex")
    assert hexspec.load().shape == (10_000, 2)
    assert torch.equal(hexspec.load("train", n=100), hexspec.load("train", n=100))
    assert not torch.equal(hexspec.load("train", n=100), hexspec.load("test", n=100))
    x, y = get_dataset("digits").load("test")
    assert x.shape == (359, 1, 8, 8)
    x5, y5 = get_dataset("digits").load("test", n=5)
    assert torch.equal(x5, x[:5]) and torch.equal(y5, y[:5])


# ---------------------------------------------------------------- bad input


def test_unknown_dataset_names_the_valid_ones():
    with pytest.raises(
        UsageError,
        match="unknown dataset 'mnsit'; valid: hex, bimodal-1d, subspace, sphere, digits, mnist",
    ):
        get_dataset("mnsit")


def test_check_batch_message():
    with pytest.raises(UsageError) as e:
        get_dataset("mnist").check(torch.zeros(5, 784))
    assert str(e.value) == "data for 'mnist' must have shape (n, 1, 28, 28), got (5, 784)"
    with pytest.raises(UsageError, match=r"must have shape \(n, 2\), got \(3, 2, 1\)"):
        check_batch(torch.zeros(3, 2, 1), (2,), "data for 'hex'")
    with pytest.raises(UsageError, match="must be a torch.Tensor"):
        check_batch(np.zeros((3, 2)), (2,), "data for 'hex'")


@pytest.mark.parametrize(
    "call, needle",
    [
        (lambda: digits("valid"), "unknown split 'valid' for 'digits'; valid: train, test, all"),
        (lambda: get_dataset("hex").load("all"), "split must be 'train' or 'test'"),
        (
            lambda: get_dataset("digits").load("test", n=400),
            "asked for n=400 but split 'test' has 359",
        ),
        (lambda: get_dataset("hex").load("train", n=-1), "n must be an integer >= 0"),
        (lambda: hex_mixture(10, weights=[1, 2]), r"weights must have shape \(6,\), got \(2,\)"),
        (lambda: hex_mixture(10, weights=[1, -1, 0, 0, 0, 0]), "must be finite, >= 0"),
        (
            lambda: hex_mixture_log_prob(torch.zeros(4, 3)),
            r"expects x of shape \(n, 2\), got \(4, 3\)",
        ),
        (lambda: bimodal_1d_log_prob(torch.zeros(4)), r"expects x of shape \(n, 1\), got \(4,\)"),
        (lambda: SubspaceGaussian(8, 16), r"latent_dim \(16\) must be <= ambient_dim \(8\)"),
        (
            lambda: SubspaceGaussian().off_support_ratio(torch.zeros(3, 16)),
            r"\(n, 64\), got \(3, 16\)",
        ),
    ],
)
def test_bad_input_is_a_usage_error(call, needle):
    with pytest.raises(UsageError, match=needle):
        call()
