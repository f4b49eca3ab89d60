"""Each bad value a user was seen typing gets one line and exit code 2 before any
work, and no run folder; a failing training still writes its summary."""

from __future__ import annotations

import json

import pytest

from sampleopt.cli import main

LANGEVIN = ["run", "langevin-hex"]
MNIST = ["run", "mnist-brightness"]
CASES = [
    (LANGEVIN, "n_particles=1000000000000", "need about"),  # cannot be allocated
    (MNIST, "batch_size=100000", "need about"),
    (LANGEVIN, "seed=99999999999999999999999", "within 64 bits"),
    (LANGEVIN, "iterations=-99999999999999999999999", "within 64 bits"),
    (LANGEVIN, "seed=-1", "must be >= 0"),
    (LANGEVIN, "lam_sweep=0.1,,0.3", "none of them empty"),
    (LANGEVIN, "gamma=inf", "a finite number"),
    (LANGEVIN, "eta=nan", "a finite number"),
    (LANGEVIN, "baseline_eta=0.5", "applies to compare=true only"),
    (MNIST, "lr=inf", "a finite number"),
    (MNIST, "eval_every=-1", "must be >= 0"),
    (MNIST, "lora_targets=c[1", "names (letters"),
    (MNIST, "lora_targets=c1", "applies to lora_rank > 0 only"),
    (MNIST, "method=adjoint", "unknown config key 'method'"),
    (MNIST, "estimator=covariance", "must be one of"),
]


@pytest.mark.parametrize("command, item, why", CASES, ids=[c[1] for c in CASES])
def test_bad_values_get_one_line_and_exit_2(command, item, why, capsys, tmp_path):
    out = tmp_path / "run"
    extra = ["--set", "compare=false"] if item.startswith("baseline_eta") else []
    rc = main([*command, "--set", item, *extra, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and why in err, err
    assert not out.exists()


def test_an_output_path_too_long_for_the_file_system(capsys, tmp_path):
    out = tmp_path / ("x" * 300) / "run"
    rc = main([*LANGEVIN, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "name too long" in err.lower(), err


def test_a_failing_training_writes_a_failed_summary(capsys, tmp_path):
    out = tmp_path / "run"
    rc = main(["train", "hex", "--set", "steps=5", "--set", "lr=1e30", "--set", "grad_clip=0",
               "--no-progress", "--out", str(out)])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err, err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "training loss" in summary["error"]


@pytest.mark.parametrize(
    "extra, why",
    [(["--sampler", "foo"], "unknown sampler"), (["--steps", "0"], "--steps must be >= 1")],
)
def test_evaluate_refuses_bad_options_and_records_the_failure(extra, why, capsys, tmp_path):
    out = tmp_path / "eval"
    rc = main(["evaluate", "hex", "--n", "16", "--out", str(out), *extra])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and why in err, err
    if out.exists():  # it got as far as the folder: the failure is recorded
        summary = json.loads((out / "summary.json").read_text())
        assert summary["status"] == "failed" and why in summary["error"]


def test_evaluate_writes_a_completed_summary(capsys, tmp_path):
    out = tmp_path / "eval"
    assert main(["evaluate", "hex", "--n", "64", "--steps", "5", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"
