"""Experiment bilevel-mnist: a tiny run writes its report, an interrupted run (in the pool
phase and in the methods phase) resumed from its last checkpoint ends bit-identical to
the uninterrupted one, and bad config values are refused with exit code 2."""

from __future__ import annotations

import json

import pytest

import sampleopt.experiments.bilevel_mnist as bilevel_mnist
from sampleopt.cli import main

TINY = [
    "--set", "pool=500", "--set", "heldout=30", "--set", "subset=64", "--set", "runs=2",
    "--set", "budget=3", "--set", "steps=1", "--set", "eval_n=16",
    "--set", "methods=[bilevel, bilevel-limit, grid]", "--no-progress",
]  # fmt: skip


def summary(folder):
    s = json.loads((folder / "summary.json").read_text())
    for row in s["table"]:
        row.pop("seconds_mean")
    return {k: s[k] for k in ("table", "runs", "curve", "base", "heldout_best")}


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bilevel-mnist") / "full"
    assert main(["run", "bilevel-mnist", "--out", str(folder), *TINY]) == 0
    return folder


def test_tiny_run_writes_its_report(full):
    s = json.loads((full / "summary.json").read_text())
    assert s["status"] == "completed" and s["units_done"] == 6
    assert (full / "heldout.png").is_file()
    report = (full / "report.md").read_text()
    assert "| bilevel-limit |" in report and "base (lam = inf)" in report
    assert all(0 <= r["upper"] <= 1 for r in s["runs"])


def test_resume_in_the_pool_phase_is_bit_identical(full, tmp_path, monkeypatch):
    original = bilevel_mnist._Runner.checkpoint

    def stop_after_first_chunk(self):
        original(self)
        raise KeyboardInterrupt

    monkeypatch.setattr(bilevel_mnist._Runner, "checkpoint", stop_after_first_chunk)
    assert main(["run", "bilevel-mnist", "--out", str(tmp_path), *TINY]) == 130
    monkeypatch.setattr(bilevel_mnist._Runner, "checkpoint", original)
    assert main(["resume", str(tmp_path), "--no-progress"]) == 0
    assert summary(tmp_path) == summary(full)


def test_resume_in_the_methods_phase_is_bit_identical(full, tmp_path, monkeypatch):
    original, calls = bilevel_mnist._Runner.one, {"n": 0}

    def stop_in_third_unit(self, u):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, u)

    monkeypatch.setattr(bilevel_mnist._Runner, "one", stop_in_third_unit)
    assert main(["run", "bilevel-mnist", "--out", str(tmp_path), *TINY]) == 130
    monkeypatch.setattr(bilevel_mnist._Runner, "one", original)
    assert main(["resume", str(tmp_path), "--no-progress"]) == 0
    assert summary(tmp_path) == summary(full)


@pytest.mark.parametrize(
    "bad", ["subset=5000", "methods=[grid, grid]", "lam0=5", "upper=fid", "digit=10"]
)
def test_bad_config_exits_2(tmp_path, bad):
    assert main(["run", "bilevel-mnist", "--out", str(tmp_path / "x"), "--set", bad]) == 2
