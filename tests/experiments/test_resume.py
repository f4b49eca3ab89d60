"""Checkpoints: an interrupted langevin-hex run resumed from its last checkpoint ends
bit-identical to the uninterrupted run; mismatched checkpoints are refused."""

from __future__ import annotations

import json

import pytest
import torch

import sampleopt as so
from sampleopt.cli import main
from sampleopt.errors import UsageError
from sampleopt.rundir import load_checkpoint

ARGS = [
    "--set",
    "iterations=600",
    "--set",
    "checkpoint_every=200",
    "--set",
    "log_every=50",
    "--set",
    "compare_steps=50",
    "--set",
    "lam_sweep=0.5",
    "--set",
    "eval_steps=50",
    "--set",
    "n_particles=200",
    "--no-progress",
]


def rows(path):
    return [json.loads(s) for s in (path / "metrics.jsonl").read_text().splitlines()]


def test_interrupted_run_resumes_bit_identical(tmp_path, monkeypatch, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["run", "langevin-hex", "--out", str(full), *ARGS]) == 0

    calls = {"n": 0}
    original = so.HexReward.forward

    def interrupt(self, x):
        calls["n"] += 1
        if calls["n"] == 470:
            raise KeyboardInterrupt
        return original(self, x)

    monkeypatch.setattr(so.HexReward, "forward", interrupt)
    assert main(["run", "langevin-hex", "--out", str(cut), *ARGS]) == 130
    assert "sampleopt resume" in capsys.readouterr().err
    assert json.loads((cut / "summary.json").read_text())["status"] == "failed"
    assert load_checkpoint(cut)[1]["iteration"] == 400
    monkeypatch.setattr(so.HexReward, "forward", original)

    assert main(["resume", str(cut), "--no-progress"]) == 0
    a = json.loads((full / "summary.json").read_text())
    b = json.loads((cut / "summary.json").read_text())
    for m in (*a["comparison"]["methods"].values(), *b["comparison"]["methods"].values()):
        m.pop("wall_s")  # timings differ; everything computed must not
    for key in (
        "reward_mean",
        "reward_mean_initial",
        "mixture_weights",
        "comparison",
        "lam_runs",
        "status",
    ):
        assert a[key] == b[key], key
    ta, _ = load_checkpoint(full)
    tb, _ = load_checkpoint(cut)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert rows(full) == rows(cut)  # metrics rows after the checkpoint were redone, not doubled


def test_resume_of_a_finished_run_is_refused(tmp_path, capsys):
    out = tmp_path / "r"
    assert (
        main(
            [
                "run",
                "langevin-hex",
                "--out",
                str(out),
                *ARGS,
                "--set",
                "compare=false",
                "--set",
                "lam_sweep=",
            ]
        )
        == 0
    )
    assert main(["resume", str(out)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_resume_of_a_non_run_folder(tmp_path, capsys):
    assert main(["resume", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_checkpoint_of_another_model_is_refused():
    pot = so.GaussianMixturePotential(so.hex_centres(), torch.zeros(6))
    alg = so.ImplicitDiffusion(
        so.LangevinSampler(pot, 0.2),
        so.Objective(so.HexReward()),
        n_particles=10,
        generator=torch.Generator().manual_seed(0),
    )
    state = alg.state_tensors()
    other = dict(state, **{"sampler.potential.logits": torch.zeros(4)})
    with pytest.raises(UsageError, match=r"sampler.potential.logits has shape \(4,\), expected"):
        alg.load_state_tensors(other)
    with pytest.raises(UsageError, match="missing particles"):
        alg.load_state_tensors({k: v for k, v in state.items() if k != "particles"})
    quad = so.QuadraticPotential(torch.zeros(2), torch.eye(2))
    alg2 = so.ImplicitDiffusion(
        so.LangevinSampler(quad, 0.2), so.Objective(so.HexReward()), n_particles=10
    )
    with pytest.raises(UsageError, match="unexpected .*sampler.potential.logits"):
        alg2.load_state_tensors(state)
