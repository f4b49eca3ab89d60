"""Batch-level objectives: a score of a whole batch of samples, l(x_1 .. x_n) -> a scalar.

Rewards (:mod:`sampleopt.objectives.rewards`) score one sample at a time and are
maximised. Sample quality against data is not of that kind: a distance between the
empirical law of a batch and a reference set only exists for the batch as a whole. A
batch objective is a callable ``objective(x) -> 0-d tensor`` on a batch x of shape
(n, ...), **minimised** (a distance or a loss), differentiable in x wherever its
formula is (so a pathwise gradient can flow back into a sampler).

:func:`evaluate_batch_objective` is the one place that checks the contract (any
callable works, as with rewards): a tensor of shape (n, ...) in, a finite 0-d tensor
out; a non-scalar result is a :class:`~sampleopt.errors.UsageError`, NaN or inf a
:class:`~sampleopt.errors.NonFiniteError`. :class:`BatchObjective` is the base class of
the shipped ones, whose ``__call__`` runs that check on every call:

* :class:`SlicedWassersteinObjective` — the squared sliced 2-Wasserstein distance to a
  reference set along fixed random directions (deterministic: the same directions at
  every call, so two calls with common random numbers differ only by the samples);
* :class:`MMDObjective` — the unbiased MMD^2 to a reference set with a sum of Gaussian
  kernels, optionally on features phi(x) (e.g. a classifier's penultimate layer).

Both hold a detached copy of the reference; neither depends on the order of the samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from sampleopt.errors import NonFiniteError, UsageError


def evaluate_batch_objective(objective: Callable, x: torch.Tensor) -> torch.Tensor:
    """objective(x) with its contract checked: x a tensor (n, ...), the result a finite
    0-d tensor (a Python number is accepted and made a tensor)."""
    if not isinstance(x, torch.Tensor) or x.ndim < 1:
        got = type(x).__name__ if not isinstance(x, torch.Tensor) else "a 0-d tensor"
        raise UsageError(f"a batch objective takes a tensor of shape (n, ...), got {got}")
    value = objective(x)
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = torch.tensor(float(value), dtype=x.dtype)
    if not isinstance(value, torch.Tensor):
        raise UsageError(
            "a batch objective must return a scalar tensor (one number for the whole batch), "
            f"got {type(value).__name__}"
        )
    if value.ndim != 0:
        raise UsageError(
            "a batch objective must return a scalar tensor (one number for the whole batch), "
            f"got shape {tuple(value.shape)}; a per-sample score of shape (n,) is a reward, "
            "not a batch objective (reduce it, e.g. with .mean())"
        )
    if not bool(torch.isfinite(value)):
        raise NonFiniteError(
            f"the batch objective is {float(value.detach())} on a batch of {x.shape[0]}"
        )
    return value


class BatchObjective:
    """Base class: a reference set and ``score(x) -> 0-d tensor``; calling the object
    checks the batch (its per-sample shape must be the reference's, at least
    ``min_n`` samples, finite values) and the result (:func:`evaluate_batch_objective`)."""

    min_n = 1

    def __init__(self, reference: torch.Tensor):
        if not isinstance(reference, torch.Tensor) or reference.ndim < 1:
            raise UsageError(f"reference must be a tensor of shape (m, ...), got {reference!r}")
        if reference.shape[0] < max(self.min_n, 2):
            raise UsageError(
                f"reference needs at least {max(self.min_n, 2)} samples, got {reference.shape[0]}"
            )
        if not bool(torch.isfinite(reference).all()):
            raise UsageError("reference contains NaN or inf")
        self.reference = reference.detach().clone()
        self.shape = tuple(reference.shape[1:])

    def score(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _check(self, x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != self.shape or x.ndim < 1:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            want = ", ".join(["n", *map(str, self.shape)])
            raise UsageError(f"{type(self).__name__} expects a batch of shape ({want}), got {got}")
        if x.shape[0] < self.min_n:
            raise UsageError(
                f"{type(self).__name__} needs at least {self.min_n} samples, got {x.shape[0]}"
            )
        if not bool(torch.isfinite(x.detach()).all()):
            raise NonFiniteError(f"{type(self).__name__}: the batch contains NaN or inf")
        return x

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return evaluate_batch_objective(lambda b: self.score(self._check(b)), x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reference of {self.reference.shape[0]})"


def _quantile_match(sorted_x: torch.Tensor, sorted_ref: torch.Tensor) -> torch.Tensor:
    """The reference's empirical quantiles at the levels (i + 1/2) / n of the n sorted
    projections of x (columns: directions), by linear interpolation between order
    statistics; with n = m they are the reference's order statistics themselves."""
    n, m = sorted_x.shape[0], sorted_ref.shape[0]
    pos = ((torch.arange(n, dtype=sorted_ref.dtype) + 0.5) * (m / n) - 0.5).clamp(0, m - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=m - 1)
    w = (pos - lo).unsqueeze(1)
    return sorted_ref[lo] * (1 - w) + sorted_ref[hi] * w


class SlicedWassersteinObjective(BatchObjective):
    """SW_2^2(x, ref) = mean over L fixed directions u of W_2^2(u^T x, u^T ref).

    In one dimension W_2^2 between n sorted values and the reference's quantiles at the
    same levels: with n equal to the reference size this is the exact W_2^2 between the
    two empirical laws (in 1-D, with directions +-1, the exact W_2^2 of the data);
    otherwise the reference's quantile function is interpolated linearly. The directions
    are drawn once, uniformly on the sphere, from ``seed``, and kept: the objective is a
    deterministic function of the batch. Differentiable in x (through the sort).
    """

    min_n = 2

    def __init__(self, reference: torch.Tensor, *, n_projections: int = 64, seed: int = 0):
        super().__init__(reference)
        if isinstance(n_projections, bool) or not isinstance(n_projections, int):
            raise UsageError(f"n_projections must be an integer >= 1, got {n_projections!r}")
        if n_projections < 1:
            raise UsageError(f"n_projections must be an integer >= 1, got {n_projections!r}")
        ref = self.reference.reshape(self.reference.shape[0], -1)
        gen = torch.Generator().manual_seed(int(seed))
        u = torch.randn(ref.shape[1], n_projections, generator=gen, dtype=ref.dtype)
        self.directions = u / u.norm(dim=0, keepdim=True)
        self.sorted_ref = (ref @ self.directions).sort(dim=0).values

    def score(self, x):
        proj = x.reshape(x.shape[0], -1).to(self.directions.dtype) @ self.directions
        target = _quantile_match(proj, self.sorted_ref)
        return (proj.sort(dim=0).values - target).square().mean()


def median_bandwidth(reference: torch.Tensor) -> float:
    """The median distance between distinct reference points (flattened): the usual
    scale of a Gaussian kernel on them."""
    ref = reference.reshape(reference.shape[0], -1).double()
    d = torch.cdist(ref, ref)
    off = d[~torch.eye(d.shape[0], dtype=torch.bool)]
    return float(off.median())


class MMDObjective(BatchObjective):
    """Unbiased MMD^2 between the batch and the reference (Gretton et al. 2012, eq. 3),
    kernel sum_h exp(-|a - b|^2 / (2 h^2)) over ``bandwidths`` (default: the reference's
    median distance times 1/4, 1/2, 1, 2, 4), on ``features(x)`` when a feature map is
    given (it is applied to the reference once). Can be slightly negative when the laws
    agree; same estimator as :func:`sampleopt.metrics.mmd_rbf` on the same features."""

    min_n = 2

    def __init__(
        self,
        reference: torch.Tensor,
        *,
        bandwidths: Sequence[float] | None = None,
        features: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ):
        super().__init__(reference)
        if features is not None and not callable(features):
            raise UsageError(f"features must be a callable x -> (n, p), got {features!r}")
        self.features = features
        with torch.no_grad():
            ref = self._embed(self.reference)
        if bandwidths is None:
            h = median_bandwidth(ref)
            bandwidths = [h * c for c in (0.25, 0.5, 1.0, 2.0, 4.0)]
        hs = [float(h) for h in bandwidths]
        if not hs or any(not math.isfinite(h) or h <= 0 for h in hs):
            raise UsageError(f"bandwidths must be a non-empty list of numbers > 0, got {hs}")
        self.bandwidths = hs
        self.ref_features = ref.detach()
        self._ref_term = self._within(ref)

    def _embed(self, x):
        f = x if self.features is None else self.features(x)
        return f.reshape(f.shape[0], -1)

    def _kernel(self, a, b):
        # squared distances written out (cdist's gradient is NaN at distance 0)
        d2 = (a.square().sum(1, keepdim=True) + b.square().sum(1) - 2 * a @ b.T).clamp_min(0)
        return sum(torch.exp(-d2 / (2 * h * h)) for h in self.bandwidths)

    def _within(self, a):
        """mean over i != j of k(a_i, a_j) (the diagonal left out, not subtracted)."""
        n = a.shape[0]
        off = ~torch.eye(n, dtype=torch.bool, device=a.device)
        return self._kernel(a, a)[off].sum() / (n * (n - 1))

    def score(self, x):
        f = self._embed(x).to(self.ref_features.dtype)
        return self._within(f) + self._ref_term - 2 * self._kernel(f, self.ref_features).mean()
