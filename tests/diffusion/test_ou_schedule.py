"""The "ou" schedule: alphabar_t = exp(-rate t / T), the bimodal benchmark's noising
dX = -2 X ds + 2 dW at s = t / T for rate 4, and its saved entry round-trips through
training, export and the base-model loader (the rate included)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sampleopt.cli import main
from sampleopt.diffusion import ExponentialSchedule
from sampleopt.diffusion.schedules import (
    NOISE_SCHEDULES,
    CosineSchedule,
    schedule_config,
    schedule_from_config,
)
from sampleopt.errors import UsageError
from sampleopt.models.pretrained import load_base_model
from tests.float64 import F64, build64

TINY = (
    "--set steps=4 --set width=8 --set batch_size=8 --set sample_every=4 --set sample_steps=2 "
    "--no-progress"
).split()


@pytest.mark.parametrize("big_t", [1, 10, 1000])
def test_alphabar_is_the_ou_marginal_at_s_equal_t_over_T(big_t):
    sched = build64(ExponentialSchedule, big_t)
    s = torch.arange(big_t + 1, dtype=F64) / big_t
    torch.testing.assert_close(sched.alphabar(), torch.exp(-4 * s), rtol=1e-15, atol=0)
    a, sd = sched.a_s()  # x_s | x_0 ~ N(e^{-2s} x_0, 1 - e^{-4s})
    torch.testing.assert_close(a, torch.exp(-2 * s), rtol=1e-15, atol=0)
    torch.testing.assert_close(sd, (1 - torch.exp(-4 * s)).sqrt(), rtol=1e-12, atol=0)
    assert sched.alphabar()[0] == 1 and sched.rate == 4.0


@pytest.mark.parametrize("rate", [4.0, 0.5, 20])
def test_betas_are_constant_and_in_the_open_unit_interval(rate):
    sched = build64(ExponentialSchedule, 1000, rate=rate)
    betas = sched.betas()
    assert betas.shape == (1000,) and bool(((betas > 0) & (betas < 1)).all())
    torch.testing.assert_close(betas, torch.full_like(betas, -math.expm1(-rate / 1000)))
    # the default dtype (float32) build is the same schedule to float32 rounding
    ab32 = ExponentialSchedule(1000, rate).alphabar()
    assert ab32.dtype == torch.float32
    torch.testing.assert_close(ab32.double(), sched.alphabar(), rtol=1e-6, atol=0)


@pytest.mark.parametrize("rate", [0, -1.0, math.nan, math.inf, "4", True, None])
def test_bad_rate_is_refused(rate):
    with pytest.raises(UsageError, match="rate must be a finite number > 0"):
        ExponentialSchedule(10, rate=rate)
    with pytest.raises(UsageError, match="num_train_steps"):
        ExponentialSchedule(0)


def test_ou_is_registered_and_its_entry_round_trips():
    assert NOISE_SCHEDULES["ou"] is ExponentialSchedule
    for sched, kind in ((ExponentialSchedule(50, 2.5), "ou"), (CosineSchedule(30), "cosine")):
        entry = schedule_config(kind, sched)
        json.loads(json.dumps(entry))  # plain JSON
        back = schedule_from_config(entry)
        assert type(back) is type(sched) and back.num_train_steps == sched.num_train_steps
        assert torch.equal(back.alphabar(), sched.alphabar())
    assert schedule_config("ou", ExponentialSchedule(50, 2.5)) == {
        "kind": "ou",
        "num_train_steps": 50,
        "rate": 2.5,
    }
    assert schedule_from_config({"kind": "ou", "num_train_steps": 7}).rate == 4.0
    with pytest.raises(UsageError, match="unknown noise schedule 'vp'"):
        schedule_from_config({"kind": "vp", "num_train_steps": 7})
    with pytest.raises(UsageError, match="bad saved schedule entry"):
        schedule_from_config({"kind": "ou", "num_train_steps": 7, "beta": 1.0})
    with pytest.raises(UsageError, match="rate must be"):
        schedule_from_config({"kind": "ou", "num_train_steps": 7, "rate": -1.0})


def test_train_export_load_rebuilds_the_same_ou_schedule(tmp_path):
    run, ship = tmp_path / "r", tmp_path / "ship"
    args = ["train", "bimodal-1d", "--set", "schedule=ou", "--set", "num_train_steps=40"]
    assert main([*args, "--out", str(run), *TINY]) == 0
    assert main(["export", str(run), "tiny-ou", "--to", str(ship)]) == 0
    meta_path = ship / "tiny-ou.json"
    meta = json.loads(meta_path.read_text())
    assert meta["schedule"] == {"kind": "ou", "num_train_steps": 40, "rate": 4.0}
    base = load_base_model("tiny-ou", ship)
    assert isinstance(base.schedule, ExponentialSchedule)
    assert torch.equal(base.schedule.alphabar(), ExponentialSchedule(40).alphabar())
    # a non-default rate in the entry is what the loader builds
    meta["schedule"]["rate"] = 1.5
    meta_path.write_text(json.dumps(meta))
    base = load_base_model("tiny-ou", ship)
    assert base.schedule.rate == 1.5
    assert torch.equal(base.schedule.alphabar(), ExponentialSchedule(40, 1.5).alphabar())


def test_the_shipped_bimodal_ou_model_has_the_benchmark_schedule():
    base = load_base_model("bimodal-ou")
    assert base.meta["schedule"] == {"kind": "ou", "num_train_steps": 1000, "rate": 4.0}
    assert isinstance(base.schedule, ExponentialSchedule) and base.schedule.rate == 4.0
    assert base.meta["model_config"]["num_train_steps"] == base.schedule.num_train_steps
    assert base.meta["training_config"]["schedule"] == "ou"
