"""Batch-level objectives: the sliced-Wasserstein objective is the exact W_2^2 in 1-D and
0 on the reference itself, the MMD objective is the metrics module's unbiased MMD^2 (on
features too), both are differentiable, and bad input (a non-scalar or non-finite result,
a batch of the wrong shape, a bad reference) is a clear error."""

from __future__ import annotations

import ot
import pytest
import torch

from sampleopt.errors import NonFiniteError, UsageError
from sampleopt.metrics import mmd_rbf
from sampleopt.objectives import (
    BatchObjective,
    MMDObjective,
    SlicedWassersteinObjective,
    evaluate_batch_objective,
)


def draws(n, d, shift=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + shift


@pytest.mark.parametrize("m", [50, 80])
def test_sliced_wasserstein_is_exact_w2_in_one_dimension(m):
    x, ref = draws(50, 1), draws(m, 1, 0.7, seed=1)
    value = float(SlicedWassersteinObjective(ref, n_projections=3)(x))
    exact = ot.wasserstein_1d(x[:, 0].numpy(), ref[:, 0].numpy(), p=2)
    if m == 50:  # equal sizes: exactly the W_2^2 of the two empirical laws
        assert value == pytest.approx(exact, rel=1e-12)
    else:  # interpolated quantiles: close, not equal
        assert value == pytest.approx(exact, rel=0.05)


def test_sliced_wasserstein_zero_on_reference_permutation_invariant_differentiable():
    ref = draws(64, 3)
    sw = SlicedWassersteinObjective(ref, n_projections=16, seed=2)
    assert float(sw(ref)) == pytest.approx(0.0, abs=1e-24)
    x = draws(64, 3, 0.5, seed=3).requires_grad_(True)
    value = sw(x)
    assert value.ndim == 0
    torch.testing.assert_close(sw(x[torch.randperm(64)]), value)
    (grad,) = torch.autograd.grad(value, x)
    assert bool(torch.isfinite(grad).all()) and float(grad.abs().sum()) > 0
    # a shifted batch is further away than an unshifted one
    assert (
        float(sw(draws(64, 3, 2.0, seed=3)))
        > float(value.detach())
        > float(sw(draws(64, 3, seed=3)))
    )


def test_mmd_objective_matches_metrics_mmd_on_samples_and_on_features():
    x, ref = draws(40, 3, 0.3, seed=4), draws(60, 3, seed=5)
    hs = [0.5, 1.0, 2.0]
    assert float(MMDObjective(ref, bandwidths=hs)(x)) == pytest.approx(
        mmd_rbf(x, ref, hs), abs=1e-12
    )
    w = draws(3, 5, seed=6)

    def features(a):
        return torch.tanh(a @ w)

    value = float(MMDObjective(ref, bandwidths=hs, features=features)(x))
    assert value == pytest.approx(mmd_rbf(features(x), features(ref), hs), abs=1e-12)
    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(MMDObjective(ref)(xg), xg)  # median-heuristic bandwidths
    assert bool(torch.isfinite(grad).all())


def test_evaluate_batch_objective_accepts_a_plain_function():
    x = draws(10, 2)
    assert float(evaluate_batch_objective(lambda b: b.square().mean(), x)) > 0
    assert float(evaluate_batch_objective(lambda b: 1.5, x)) == 1.5


@pytest.mark.parametrize(
    "fn, error, match",
    [
        (lambda b: b.square().sum(1), UsageError, r"scalar tensor .* shape \(10,\).*reward"),
        (lambda b: b.square().mean(0), UsageError, r"scalar tensor .* shape \(2,\)"),
        (lambda b: "good", UsageError, "scalar tensor .* got str"),
        (lambda b: torch.tensor(float("nan")), NonFiniteError, "nan"),
        (lambda b: torch.tensor(float("inf")), NonFiniteError, "inf"),
    ],
)
def test_a_non_scalar_or_non_finite_result_is_a_clear_error(fn, error, match):
    with pytest.raises(error, match=match):
        evaluate_batch_objective(fn, draws(10, 2))


def test_a_subclass_returning_per_sample_values_is_refused():
    class PerSample(BatchObjective):
        def score(self, x):
            return (x - self.reference.mean(0)).square().sum(1)

    with pytest.raises(UsageError, match="scalar tensor"):
        PerSample(draws(5, 2))(draws(10, 2))


def test_bad_batches_and_references():
    sw = SlicedWassersteinObjective(draws(20, 2))
    with pytest.raises(UsageError, match=r"expects a batch of shape \(n, 2\), got \(10, 3\)"):
        sw(draws(10, 3))
    with pytest.raises(UsageError, match="at least 2 samples"):
        sw(draws(1, 2))
    bad = draws(10, 2)
    bad[3, 1] = float("nan")
    with pytest.raises(NonFiniteError, match="NaN or inf"):
        sw(bad)
    with pytest.raises(UsageError, match="reference contains NaN"):
        MMDObjective(bad)
    with pytest.raises(UsageError, match="n_projections"):
        SlicedWassersteinObjective(draws(20, 2), n_projections=0)
    with pytest.raises(UsageError, match="bandwidths"):
        MMDObjective(draws(20, 2), bandwidths=[1.0, -1.0])
    with pytest.raises(UsageError, match="shape"):
        evaluate_batch_objective(lambda b: b.sum(), torch.tensor(1.0))
