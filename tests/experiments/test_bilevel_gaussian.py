"""Experiment bilevel-gaussian: a tiny run writes its report, an interrupted run resumed
from its last checkpoint ends bit-identical to the uninterrupted one, and bad config
values are refused with exit code 2."""

from __future__ import annotations

import json

import pytest
import torch

import sampleopt.experiments.bilevel_gaussian as bilevel_gaussian
from sampleopt.cli import main
from sampleopt.rundir import load_checkpoint

TINY = [
    "--set", "runs=2", "--set", "budget=5", "--set", "n=256", "--set", "a=[-1.0]",
    "--no-progress",
]  # fmt: skip


def summary_table(folder):
    t = json.loads((folder / "summary.json").read_text())["table"]
    return [{k: v for k, v in row.items() if "seconds" not in k} for row in t]


def rows(folder):
    out = [json.loads(s) for s in (folder / "metrics.jsonl").read_text().splitlines()]
    for r in out:
        r.pop("seconds", None)  # wall-clock fields differ between any two runs
    return out


def test_tiny_run_and_bit_identical_resume(tmp_path, monkeypatch):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["run", "bilevel-gaussian", "--out", str(full), *TINY]) == 0
    summary = json.loads((full / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["runs_done"] == 5 * 2
    assert (full / "choices.png").is_file() and (full / "paths.png").is_file()
    report = (full / "report.md").read_text()
    for m in bilevel_gaussian.METHODS:
        assert f"| {m} |" in report

    calls = {"n": 0}
    original = bilevel_gaussian._Runner.one

    def interrupt(self, u):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(self, u)

    monkeypatch.setattr(bilevel_gaussian._Runner, "one", interrupt)
    assert main(["run", "bilevel-gaussian", "--out", str(cut), *TINY]) == 130
    monkeypatch.setattr(bilevel_gaussian._Runner, "one", original)
    assert json.loads((cut / "summary.json").read_text())["status"] == "failed"
    assert int(load_checkpoint(cut)[0]["done"]) == 3
    assert main(["resume", str(cut), "--no-progress"]) == 0
    assert summary_table(cut) == summary_table(full)
    ta, _ = load_checkpoint(full)
    tb, _ = load_checkpoint(cut)
    assert ta.keys() == tb.keys()
    for k in ta:
        if k != "seconds":
            assert torch.equal(ta[k], tb[k]), k
    assert rows(full) == rows(cut)  # the fourth unit's row was redone, not doubled


@pytest.mark.parametrize(
    "bad", ["a=[1.0, 1.0]", "a=[0.0]", "methods=[anneal]", "lam0=100", "budget=1", "n=1"]
)
def test_bad_config_exits_2(tmp_path, bad):
    assert main(["run", "bilevel-gaussian", "--out", str(tmp_path / "x"), "--set", bad]) == 2
