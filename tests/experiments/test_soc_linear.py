"""Experiment soc-linear: a tiny run writes its report with finite MSEs, an interrupted
run resumed from its last checkpoint ends bit-identical to the uninterrupted one, and bad
config values are refused with exit code 2."""

from __future__ import annotations

import json
import math

import pytest
import torch

import sampleopt.experiments.soc_linear as soc_linear
from sampleopt.cli import main
from sampleopt.rundir import load_checkpoint

TINY = [
    "--set", "runs=2", "--set", "eps=[0.5]", "--set", "rounds=2", "--set", "iterations=20",
    "--set", "steps=10", "--set", "paths=200", "--set", "batch=64", "--set", "step_subset=4",
    "--set", "score_iterations=10", "--set", "test_points=200", "--no-progress",
]  # fmt: skip
CALLS_PER_RUN = 2 * 20  # rounds x iterations: costate_loss calls of one run


def rows(folder):
    out = [json.loads(s) for s in (folder / "metrics.jsonl").read_text().splitlines()]
    for r in out:
        r.pop("seconds", None)  # wall-clock fields differ between any two runs
    return out


def table(folder):
    t = json.loads((folder / "summary.json").read_text())["table"]
    for row in t:
        for m in ("tr-bsde", "lean"):
            row[m] = {k: v for k, v in row[m].items() if "seconds" not in k}
    return t


def test_tiny_run_and_bit_identical_resume(tmp_path, monkeypatch, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["run", "soc-linear", "--out", str(full), *TINY]) == 0
    assert (full / "report.md").is_file()
    assert (full / "mse.png").is_file() and (full / "costate.png").is_file()
    summary = json.loads((full / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["runs_done"] == 4
    for m in ("tr-bsde", "lean"):
        runs = summary["table"][0][m]["mse_runs"]
        assert len(runs) == 2 and all(math.isfinite(v) and v > 0 for v in runs)
    assert "| 0.5 |" in (full / "report.md").read_text()

    calls = {"n": 0}
    original = soc_linear.costate_loss

    def interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * CALLS_PER_RUN + 5:  # in the third run
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(soc_linear, "costate_loss", interrupt)
    assert main(["run", "soc-linear", "--out", str(cut), *TINY]) == 130
    assert "sampleopt resume" in capsys.readouterr().err
    assert json.loads((cut / "summary.json").read_text())["status"] == "failed"
    assert int(load_checkpoint(cut)[0]["done"]) == 2
    monkeypatch.setattr(soc_linear, "costate_loss", original)

    assert main(["resume", str(cut), "--no-progress"]) == 0
    assert table(full) == table(cut)
    ta, _ = load_checkpoint(full)
    tb, _ = load_checkpoint(cut)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert rows(full) == rows(cut)  # the third run's rows were redone, not doubled
    assert main(["resume", str(cut)]) == 2  # finished: nothing to resume


@pytest.mark.parametrize(
    "override",
    [
        "runs=0",
        "eps=[-1]",
        "eps=[1,1]",
        "eps=[]",
        "methods=[tr-bsde,adjoint]",
        "rounds=1",
        "batch=5000",
        "lr=0",
        "lr_final=2",
        "trace=diagonal",
        "huber=-1",
        "steps=0",
        "iterations=x",
    ],
)
def test_bad_config_values_are_refused(override, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "soc-linear", "--out", str(out), "--set", override]) == 2
    assert "config key" in capsys.readouterr().err
    assert not out.exists()  # refused before any run folder is made
