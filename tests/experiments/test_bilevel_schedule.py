"""Experiment bilevel-schedule: a tiny run on both data sets writes its report with finite
held-out scores for all four methods; a batch objective that returns a non-scalar in the
middle of a run stops it with a clear error and loses nothing already computed (resumed,
the run ends bit-identical to an uninterrupted one); bad config values are refused."""

from __future__ import annotations

import json
import math

import pytest
import torch

import sampleopt.experiments.bilevel_schedule as bilevel_schedule
from sampleopt.cli import main
from sampleopt.rundir import load_checkpoint

TINY = [
    "--set", "runs=2", "--set", "steps=30", "--set", "warmup=10", "--set", "upper_every=10",
    "--set", "batch=32", "--set", "upper_batch=16", "--set", "sample_steps=5",
    "--set", "num_train_steps=50", "--set", "eval_samples=32", "--set", "truncation=1",
    "--set", "bo_trials=1", "--no-progress",
]  # fmt: skip
UNITS_PER_RUN = 4  # cosine, linear, bilevel, 1 BO trial


def rows(folder):
    return [json.loads(s) for s in (folder / "metrics.jsonl").read_text().splitlines()]


def table(folder):
    t = json.loads((folder / "summary.json").read_text())["table"]
    for row in t:
        for m in ("cosine", "linear", "bilevel", "bo"):
            row[m] = {k: v for k, v in row[m].items() if "seconds" not in k}
    return t


def test_tiny_run_on_both_data_sets_writes_the_report(tmp_path):
    full = tmp_path / "full"
    assert main(["run", "bilevel-schedule", "--out", str(full), *TINY]) == 0
    summary = json.loads((full / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["trainings_done"] == 4 * UNITS_PER_RUN
    assert summary["bo_trials"] == 1
    for row in summary["table"]:
        for m in ("cosine", "linear", "bilevel", "bo"):
            runs = row[m]["runs"]
            assert len(runs) == 2 and all(math.isfinite(v) for r in runs for v in r), (row, m)
        learned = row["bilevel"]["params"]
        assert all(math.isfinite(v) for p in learned for v in p)
        assert row["bilevel"]["compute_per_run"] > 1.0  # the upper steps cost compute
        assert row["cosine"]["compute_per_run"] == 1.0
    report = (full / "report.md").read_text()
    assert "| learned (bilevel) |" in report and "## digits" in report and "## hex" in report
    assert (full / "schedule.png").is_file() and (full / "samples.png").is_file()
    upper_rows = [r for r in rows(full) if r["method"] == "bilevel" and "zo" in r]
    assert len(upper_rows) == 4 * 2  # 2 upper steps per learned training, 4 of them


def test_bad_objective_mid_run_loses_nothing_and_resume_is_bit_identical(
    tmp_path, monkeypatch, capsys
):
    full, cut = tmp_path / "full", tmp_path / "cut"
    hex_only = [*TINY, "--set", "datasets=[hex]"]
    assert main(["run", "bilevel-schedule", "--out", str(full), *hex_only]) == 0

    # a batch objective returning one value per sample, from the second run on
    original = bilevel_schedule.get_problem

    def bad_problem(name, seed):
        problem = original(name, seed)
        if seed == 1:  # hex, run 1
            good = problem.upper
            problem.upper = lambda x: good(x).expand(x.shape[0])
        return problem

    monkeypatch.setattr(bilevel_schedule, "get_problem", bad_problem)
    assert main(["run", "bilevel-schedule", "--out", str(cut), *hex_only]) == 2
    err = capsys.readouterr().err
    assert "must return a scalar tensor" in err and "shape (32,)" in err
    assert json.loads((cut / "summary.json").read_text())["status"] == "failed"
    assert int(load_checkpoint(cut)[0]["done"]) == UNITS_PER_RUN  # run 0 kept whole
    monkeypatch.setattr(bilevel_schedule, "get_problem", original)

    assert main(["resume", str(cut), "--no-progress"]) == 0
    assert table(full) == table(cut)
    ta, _ = load_checkpoint(full)
    tb, _ = load_checkpoint(cut)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k].nan_to_num(-1.0), tb[k].nan_to_num(-1.0)), k
    assert rows(full) == rows(cut)  # the failed training's rows were redone, not doubled
    assert main(["resume", str(cut)]) == 2  # finished: nothing to resume


@pytest.mark.parametrize(
    "override",
    [
        "runs=0",
        "datasets=[hex,mnist]",
        "datasets=[hex,hex]",
        "init_tau=0.5",
        "init_start=-0.1",
        "init_eps=0.9",
        "init_end=0.4",
        "truncation=99",
        "sample_steps=2000",
        "gamma=0",
        "steps=x",
    ],
)
def test_bad_config_values_are_refused(override, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "bilevel-schedule", "--out", str(out), "--set", override]) == 2
    assert "config key" in capsys.readouterr().err
    assert not out.exists()  # refused before any run folder is made
