"""Scenario 2 of generative bilevel optimisation (the noise schedule): each of the four
parameters of the learnable cosine schedule changes alphabar (start too), the clamps and
the search box hold, parameters outside their domain warn or are refused, the zeroth-order
estimate of grad_x f agrees with autograd within its standard error, and the penalty
term is exactly 0 when theta_z cannot move away from theta_y."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from sampleopt.bilevel_schedule import BOX, COSINE, PARAMETERS, PenaltyOptions, project_
from sampleopt.bilevel_schedule.domain import check_values, learnable, perturbed, values_of
from sampleopt.bilevel_schedule.penalty import PenaltyScheduleUpdate
from sampleopt.bilevel_schedule.training import ScheduleTraining
from sampleopt.diffusion.schedules import LearnableCosineSchedule, ScheduleDomainWarning
from sampleopt.errors import UsageError
from sampleopt.models import TimeMLP
from sampleopt.objectives import SlicedWassersteinObjective
from sampleopt.samplers import DDPMSampler

INTERIOR = {"start": 0.1, "end": 0.8, "tau": 1.5, "eps": 0.1}


@pytest.mark.parametrize("base", [COSINE, INTERIOR], ids=["cosine", "interior"])
@pytest.mark.parametrize("name", PARAMETERS)
def test_each_parameter_changes_alphabar(base, name):
    ab = learnable(200, base).double().alphabar().detach()
    step = 0.05 if base[name] + 0.05 <= BOX[name][1] else -0.05  # stay inside the box
    moved = dict(base, **{name: base[name] + step})
    ab2 = learnable(200, moved).double().alphabar().detach()
    assert ab[0] == ab2[0] == 1
    assert float((ab - ab2).abs().max()) > 1e-3, name


def test_each_parameter_has_a_gradient_through_the_dsm_loss():
    from sampleopt.training.dsm import dsm_loss

    sched = learnable(100, INTERIOR)
    torch.manual_seed(0)
    net = TimeMLP(2, 100, 16, 2)
    loss = dsm_loss(net, sched, torch.randn(64, 2), torch.Generator().manual_seed(0))
    grads = torch.autograd.grad(loss, [getattr(sched, n) for n in PARAMETERS])
    assert all(float(g.abs()) > 0 for g in grads)


def test_start_is_not_inert():
    # the public reference code computes u = (t (end - start) + start) / T: start's own
    # offset enters as start / T, so only the span end - start matters and (0.3, 1.0)
    # gives nearly the schedule of (0, 0.7) (5e-4 apart). Here start shifts the window.
    a = learnable(1000, dict(COSINE, end=0.7)).double().alphabar().detach()
    b = learnable(1000, dict(COSINE, start=0.3)).double().alphabar().detach()
    assert float((a - b).abs().max()) > 0.1


def test_projection_keeps_parameters_in_the_box_and_alphabar_decreasing():
    sched = LearnableCosineSchedule(100)
    with torch.no_grad():
        for name, v in zip(PARAMETERS, (-0.3, 1.7, 0.2, 3.0), strict=True):
            getattr(sched, name).fill_(v)
    project_(sched)
    values = values_of(sched)
    for name in PARAMETERS:
        lo, hi = BOX[name]
        assert lo <= values[name] <= hi, name
    assert values["end"] >= values["start"]
    ab = sched.alphabar().detach()
    assert bool((ab[1:] <= ab[:-1]).all()) and bool((ab >= 0).all())
    with torch.no_grad():  # start pushed above end: end follows it up
        sched.start.fill_(0.45)
        sched.end.fill_(0.2)
    project_(sched)
    assert values_of(sched)["end"] == pytest.approx(0.5)
    assert values_of(sched)["start"] == pytest.approx(0.45)


def test_perturbed_copies_are_clamped_into_the_domain():
    sched = learnable(50, COSINE)  # at a corner of the domain: start 0, end 1, tau 1
    down = perturbed(sched, torch.tensor([-1.0, 1.0, -1.0, -1.0]), 0.5).alphabar()
    clamped = LearnableCosineSchedule(50, start=0.0, end=1.0, tau=1.0, eps=0.0).alphabar()
    torch.testing.assert_close(down, clamped.detach())


def test_parameters_outside_their_domain_warn_or_are_refused():
    with pytest.warns(ScheduleDomainWarning, match=r"tau=0.5 \(domain tau >= 1\)"):
        LearnableCosineSchedule(50, tau=0.5)
    with pytest.warns(ScheduleDomainWarning, match=r"end=0.2 \(domain \[start, 1\]\)"):
        LearnableCosineSchedule(50, start=0.4, end=0.2)
    with pytest.warns(ScheduleDomainWarning, match=r"start=-0.1.*eps=1.5"):
        LearnableCosineSchedule(50, start=-0.1, eps=1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LearnableCosineSchedule(50, start=0.2, end=0.9, tau=2.0, eps=0.5)  # inside: silent
    with pytest.raises(UsageError, match="eps must be a finite number"):
        LearnableCosineSchedule(50, eps=math.nan)
    with pytest.raises(UsageError, match=r"outside the search box: tau=5 not in \[1, 3\]"):
        check_values(dict(COSINE, tau=5.0))
    with pytest.raises(UsageError, match="must name exactly"):
        check_values({"start": 0.0})


def _setup(lr_z=0.01, gamma=1.0):
    torch.manual_seed(0)
    net = TimeMLP(2, 50, 16, 2)
    training = ScheduleTraining(net, learnable(50, INTERIOR), lr=1e-3, ema_decay=0.9)
    ref = torch.randn(64, 2, generator=torch.Generator().manual_seed(1)) * 2
    upper = SlicedWassersteinObjective(ref, n_projections=8)

    def data(n, g):
        return torch.randn(n, 2, generator=g) * 2

    opts = PenaltyOptions(
        gamma=gamma, lr_z=lr_z, upper_batch=32, sample_steps=5, batch=32, truncation=2
    )
    return training, PenaltyScheduleUpdate(training, upper, data, opts), upper


def test_zeroth_order_estimate_agrees_with_autograd_within_standard_errors():
    training, update, upper = _setup()
    update.z_net.load_state_dict(training.net.state_dict())
    gen = torch.Generator().manual_seed(5)
    draws = []
    for _ in range(300):
        g, _ = update._zeroth_order(gen)
        draws.append(g)
    draws = torch.stack(draws).double()
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(len(draws))
    # autograd of f through the sampler (the schedule is differentiable), averaged over
    # the same kind of draws of x_T and noises
    sched, n = training.schedule, 32
    grads = []
    for i in range(60):
        g = torch.Generator().manual_seed(1000 + i)
        x = torch.randn(n, 2, generator=g)
        sampler = DDPMSampler(update.z_net, sched, 5, data_shape=(2,))
        f = upper(sampler.sample(n, x0=x, generator=g))
        grads.append(torch.stack(torch.autograd.grad(f, update.params)).detach())
    exact = torch.stack(grads).double()
    e_mean, e_se = exact.mean(0), exact.std(0) / math.sqrt(len(exact))
    z = (mean - e_mean) / (se.square() + e_se.square()).sqrt()
    assert bool((z.abs() < 4).all()), (mean, e_mean, z)
    assert float(e_mean.abs().max()) > 4 * float(e_se.max())  # a gradient that is not noise


def test_penalty_term_is_zero_when_theta_z_cannot_move_and_the_step_stays_in_the_box():
    training, update, _ = _setup(lr_z=0.0)
    diag = update.step(torch.Generator().manual_seed(0))
    assert diag["penalty"] == [0.0, 0.0, 0.0, 0.0]  # theta_z = theta_y', same batch and noise
    training, update, _ = _setup(lr_z=0.05)
    before = values_of(training.schedule)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        diag = update.step(gen)
        assert any(v != 0 for v in diag["penalty"])
        assert all(math.isfinite(v) for v in diag["zo"] + diag["penalty"])
        for name in PARAMETERS:
            lo, hi = BOX[name]
            assert lo <= diag[name] <= hi
    assert values_of(training.schedule) != before
    # the DSM steps use a frozen copy: they never move the schedule
    after = values_of(training.schedule)
    training.schedule_changed()
    training.step(torch.randn(16, 2), torch.Generator().manual_seed(0))
    assert values_of(training.schedule) == after
