"""`sampleopt compare`: a tiny comparison runs end to end through the CLI on two tasks
(summary, ranked report, plot), a method that cannot run is reported with its reason,
and bad input exits 2 with one line."""

from __future__ import annotations

import json
import math

import pytest

import sampleopt.compare.runner as compare_runner
from sampleopt.cli import main
from sampleopt.compare.problem import Problem
from sampleopt.compare.runner import EVAL_SEED
from sampleopt.compare.tasks import get_task
from sampleopt.errors import UsageError


def tiny(task, methods, out, *extra):
    return ["compare", task, "--methods", methods, "--budget", "1500", "--seeds", "2",
            "--out", str(out), "--no-progress", *extra]  # fmt: skip


@pytest.mark.parametrize(
    ("task", "methods"), [("bimodal", "adjoint,guidance"), ("subspace", "adjoint,score-function")]
)
def test_tiny_comparison_end_to_end(tmp_path, task, methods, capsys):
    out = tmp_path / "run"
    assert main(tiny(task, methods, out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["units_done"] == 4
    assert summary["task"] == task and summary["budget"] == 1500
    assert math.isfinite(summary["optimum"]["objective"])
    table = summary["table"]
    assert sorted(r["method"] for r in table) == sorted(methods.split(","))
    assert [r["gap_mean"] for r in table] == sorted(r["gap_mean"] for r in table)
    for r in table:
        assert r["seeds"] == 2 and r["network_evals_mean"] >= 1500
        assert math.isfinite(r["gap_mean"]) and r["gap_se"] >= 0
        # the gap is J - J*, J = -E[r] + lam KL
        lam = summary["lam"]
        assert r["objective_mean"] == pytest.approx(-r["reward_mean"] + lam * r["kl_mean"])
        assert r["gap_mean"] == pytest.approx(r["objective_mean"] - summary["optimum"]["objective"])
    # the reference row: the base model itself on the same held-out paths, KL exactly 0
    base = summary["base"]
    assert base["kl"] == 0.0 and base["objective"] == -base["reward"]
    assert base["gap"] == pytest.approx(base["objective"] - summary["optimum"]["objective"])
    assert base["gap"] > 0 and math.isfinite(base["fd_star"])
    problem = Problem(get_task(task))
    again = problem.evaluate(problem.reference, base["eval_n"], EVAL_SEED)
    assert again["objective"] == base["objective"]  # the same paths as every method's
    report = (out / "report.md").read_text()
    for m in methods.split(","):
        assert f"| {m} |" in report
    assert "| - | base model (not fine-tuned) |" in report
    assert (out / "gap_vs_evals.png").stat().st_size > 0
    assert "report:" in capsys.readouterr().out


def test_a_method_that_cannot_run_is_reported(tmp_path, monkeypatch):
    original = compare_runner.start

    def start(name, problem, seed):
        if name == "guidance":
            raise UsageError("guidance needs something this task lacks")
        return original(name, problem, seed)

    monkeypatch.setattr(compare_runner, "start", start)
    out = tmp_path / "run"
    assert main(tiny("bimodal", "adjoint,guidance", out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["method"] for r in summary["table"]] == ["adjoint"]
    assert [(r["method"], r["reason"]) for r in summary["unavailable"]] == [
        ("guidance", "guidance needs something this task lacks")
    ] * 2
    assert "something this task lacks" in (out / "report.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "nosuchtask"], "unknown task"),
        (["compare", "bimodal", "--methods", "adjoint,magic"], "unknown method"),
        (["compare", "bimodal", "--budget", "0"], "--budget must be > 0"),
        (["compare", "bimodal", "--budget", "-5"], "--budget must be > 0"),
        (["compare", "bimodal", "--seeds", "0"], "--seeds must be >= 1"),
        (["compare", "bimodal", "--methods", ","], "at least one method"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    assert main([*args, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "x").exists()
