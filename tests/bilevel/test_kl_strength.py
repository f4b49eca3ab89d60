"""The KL-strength bilevel problem against the Gaussian test bed's closed forms
(docs/bilevel.md section 4)."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from sampleopt.algorithms import StepSize
from sampleopt.bilevel import (
    CollapsedWeightsWarning,
    GaussianTestBed,
    ImportanceLowerLevel,
    KLStrengthBilevel,
    KLStrengthProblem,
    PenaltySchedule,
    Tilt,
    penalty_hypergradient,
    search,
)
from sampleopt.errors import NonFiniteError, UsageError

N, REPEATS = 8192, 100


def repeated(tb, fn):
    """fn(r1, r2) on REPEATS independent base draws: (values, reported SEs)."""
    vals, ses = [], []
    for r in range(REPEATS):
        x = tb.sample_base(N, torch.Generator().manual_seed(r))
        v, se = fn(tb.r1(x), tb.r2(x))
        vals.append(v)
        ses.append(se)
    return torch.tensor(vals, dtype=torch.float64), torch.tensor(ses, dtype=torch.float64)


def assert_within_4se(vals, exact):
    se_mean = float(vals.std()) / math.sqrt(len(vals))
    assert abs(float(vals.mean()) - exact) < 4 * se_mean, (float(vals.mean()), exact, se_mean)


def assert_reported_se(ses, vals, ess_ratio):
    """The delta-method standard error is within 25% of the spread across draws when the
    weights are healthy (ESS >= 50% of N); with heavier weights or heavy-tailed rewards
    it underestimates (by up to a third in these cases, docs/bilevel.md section 2), so it
    is only required to be within 50% there."""
    rel = 0.25 if ess_ratio >= 0.5 else 0.5
    assert float(ses.mean()) == pytest.approx(float(vals.std()), rel=rel), ess_ratio


@pytest.mark.parametrize(
    "a, lam, gamma",
    [(1.0, 0.8, 1.0), (0.5, 1.5, 10.0), (-1.0, 1.5, 3.0), (2.0, 1.2, 100.0), (-0.5, 0.9, 0.5)]
    + [(1.0, 2.0, math.inf), (-1.0, 1.0, math.inf)],
)
def test_hypergradient_matches_the_penalty_derivative(a, lam, gamma):
    """Mean of the estimate within 4 standard errors of dL_gamma/dlam (closed form, which
    itself matches a finite difference of L_gamma), and its reported standard error
    within 25% of the spread across independent draws."""
    tb = GaussianTestBed(a)
    h = 1e-5
    fd = (tb.penalty(lam + h, gamma) - tb.penalty(lam - h, gamma)) / (2 * h)
    assert tb.penalty_grad(lam, gamma) == pytest.approx(fd, rel=1e-6, abs=1e-8)

    def hg(r1, r2):
        out = penalty_hypergradient(r1, r2, lam, gamma)
        return out.value, out.se

    vals, ses = repeated(tb, hg)
    assert_within_4se(vals, tb.penalty_grad(lam, gamma))
    assert_reported_se(ses, vals, Tilt(tb.r2(tb.sample_base(N)) / lam).ess / N)


def test_penalty_tends_to_the_upper_loss():
    tb = GaussianTestBed(0.7)
    for lam in (0.5, 1.0, 3.0):
        assert tb.penalty(lam, 1e7) == pytest.approx(tb.upper_loss(lam), rel=1e-5)
        assert tb.penalty_grad(lam, 1e7) == pytest.approx(tb.upper_loss_grad(lam), rel=1e-4)


@pytest.mark.parametrize("a, lam, gamma", [(1.0, 0.7, 2.0), (-1.0, 2.0, 0.5)])
def test_importance_weighted_kls_match_their_closed_forms(a, lam, gamma):
    tb = GaussianTestBed(a)

    def kl_star(r1, r2):
        v, se, _ = Tilt(r2 / lam).kl()
        return v, se

    def kl_gamma(r1, r2):
        v, se, _ = Tilt((r1 / gamma + r2) / lam).kl()
        return v, se

    for fn, exact in ((kl_star, tb.kl_star(lam)), (kl_gamma, tb.kl_gamma(lam, gamma))):
        vals, ses = repeated(tb, fn)
        assert_within_4se(vals, exact)
        assert_reported_se(ses, vals, Tilt(tb.r2(tb.sample_base(N)) / lam).ess / N)


@pytest.mark.parametrize("a, lam0", [(1.0, 3.0), (0.5, 0.7)])
def test_descent_reaches_the_optimal_lam(a, lam0):
    """Descent on log lam with the penalty schedule reaches lam* = 1/a within 5% (the
    averaged iterate), for every seed tried."""
    tb = GaussianTestBed(a)
    for seed in range(3):
        problem = KLStrengthProblem(tb.r1, tb.r2, ImportanceLowerLevel(tb.sample_base, n=4096))
        alg = KLStrengthBilevel(
            problem, lam0=lam0, lr=StepSize(1.0, "inverse_sqrt"), optimizer="sgd",
            penalty=PenaltySchedule(1.0, 1.1, 1e4), seed=seed,
        )  # fmt: skip
        rows = alg.run(150)
        assert abs(alg.averaged_lam() / tb.lam_star - 1) < 0.05
        assert rows[-1]["solves"] == 150 and rows[-1]["gamma"] == 1e4


def test_bilevel_resumes_bit_identically():
    tb = GaussianTestBed(1.0)

    def make():
        problem = KLStrengthProblem(tb.r1, tb.r2, ImportanceLowerLevel(tb.sample_base, n=512))
        return KLStrengthBilevel(problem, lam0=2.0, seed=3)

    alg = make()
    alg.run(5)
    state = alg.state_tensors()
    want = alg.run(5)
    again = make()
    again.load_state_tensors(state)
    assert again.run(5) == want


def test_searches_spend_their_budget_and_find_the_optimum_roughly():
    tb = GaussianTestBed(1.0)
    for method in ("grid", "random", "bayesian"):
        problem = KLStrengthProblem(tb.r1, tb.r2, ImportanceLowerLevel(tb.sample_base, n=4096))
        result = search(method, problem, 12, low=0.1, high=10.0, seed=0)
        assert problem.solves == 12 and len(result.trials) == 12
        assert tb.upper_loss(result.lam) < tb.upper_loss(0.1)
        assert 0.3 < result.lam < 3.0, (method, result.lam)


def test_bad_input_and_collapse():
    tb = GaussianTestBed(1.0)
    x = tb.sample_base(1000, torch.Generator().manual_seed(0))
    for lam in (0.0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(UsageError, match="lam"):
            penalty_hypergradient(tb.r1(x), tb.r2(x), lam, 1.0)
    with pytest.raises(UsageError, match="gamma"):
        penalty_hypergradient(tb.r1(x), tb.r2(x), 1.0, 0.0)
    with pytest.warns(CollapsedWeightsWarning, match="effective sample size"):
        out = penalty_hypergradient(tb.r1(x), tb.r2(x), 0.05, 1.0)
    assert out.ess_star < 10  # reported with the estimate
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        penalty_hypergradient(tb.r1(x), tb.r2(x), 2.0, 1.0)  # healthy weights: no warning
    problem = KLStrengthProblem(
        lambda v: v[:, 0].sum(), tb.r2, ImportanceLowerLevel(tb.sample_base, n=64)
    )
    with pytest.raises(UsageError, match=r"shape \(64,\)"):
        problem.upper(1.0)
    nan_reward = KLStrengthProblem(
        lambda v: v[:, 0] / 0.0 * 0.0, tb.r2, ImportanceLowerLevel(tb.sample_base, n=64)
    )
    with pytest.raises(NonFiniteError, match="upper reward"):
        nan_reward.upper(1.0)
    with pytest.raises(UsageError, match="lam0"):
        KLStrengthBilevel(problem, lam0=1e5)
    with pytest.raises(UsageError, match="exactly one"):
        ImportanceLowerLevel()
    with pytest.raises(UsageError, match="unknown search"):
        search("anneal", problem, 3, low=0.1, high=1.0)


def test_tilt_and_lower_level_inputs():
    with pytest.raises(UsageError, match="N >= 2"):
        Tilt(torch.zeros(1))
    with pytest.raises(UsageError, match="shape"):
        Tilt(torch.zeros(3, 2))
    with pytest.raises(NonFiniteError, match="log density ratios"):
        Tilt(torch.tensor([0.0, float("nan"), 1.0]))
    with pytest.raises(UsageError, match=r"shape \(3,\)"):
        Tilt(torch.zeros(3)).mean(torch.zeros(4))
    with pytest.raises(UsageError, match="pool"):
        ImportanceLowerLevel(pool=torch.zeros(1, 2))
    with pytest.raises(UsageError, match="callable"):
        ImportanceLowerLevel("not a sampler")
    calls = {"r1": 0}

    def r1(x):
        calls["r1"] += 1
        return -(x[:, 0] ** 2)

    tb = GaussianTestBed(1.0)
    pool = tb.sample_base(256, torch.Generator().manual_seed(0))
    problem = KLStrengthProblem(r1, tb.r2, ImportanceLowerLevel(pool=pool))
    first, second = problem.upper(1.0), problem.upper(1.0)
    assert first == second and problem.solves == 2 and calls["r1"] == 1  # rewards once


def test_algorithm_and_search_arguments():
    tb = GaussianTestBed(1.0)
    problem = KLStrengthProblem(tb.r1, tb.r2, ImportanceLowerLevel(tb.sample_base, n=64))
    bad = [({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr")]
    bad += [({"optimizer": "lbfgs"}, "optimizer"), ({"lam_min": -1.0}, "lam")]
    for kw, what in bad:
        with pytest.raises(UsageError, match=what):
            KLStrengthBilevel(problem, **kw)
    with pytest.raises(UsageError, match="KLStrengthProblem"):
        KLStrengthBilevel("problem")
    for kw, what in (({"gamma0": 0.0}, "gamma0"), ({"growth": 0.5}, "growth"),
                     ({"gamma_max": -1.0}, "gamma_max")):  # fmt: skip
        with pytest.raises(UsageError, match=what):
            PenaltySchedule(**kw)
    assert PenaltySchedule(2.0, 2.0, 10.0)(0) == 2.0 and PenaltySchedule(2.0, 2.0, 10.0)(5) == 10.0
    assert PenaltySchedule(math.inf)(3) == math.inf
    with pytest.raises(UsageError, match="budget"):
        search("grid", problem, 0, low=0.1, high=1.0)
    with pytest.raises(UsageError, match="low < high"):
        search("random", problem, 3, low=1.0, high=1.0)
