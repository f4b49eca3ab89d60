"""`sampleopt resume DIR` of a comparison killed between units ends with the numbers
of the uninterrupted run (wall times and memory aside), and a finished comparison is
not resumed."""

from __future__ import annotations

import json

import torch

import sampleopt.compare.runner as compare_runner
from sampleopt.cli import main
from sampleopt.rundir import load_checkpoint

ARGS = ["--methods", "adjoint,guidance", "--budget", "1500", "--seeds", "2", "--no-progress"]
TIMED = [compare_runner.FINAL.index(k) for k in ("seconds", "peak_rss_mb")]


def table(folder):
    rows = json.loads((folder / "summary.json").read_text())["table"]
    return [{k: v for k, v in r.items() if k not in ("seconds_mean", "peak_rss_mb")} for r in rows]


def rows(folder):
    out = [json.loads(s) for s in (folder / "metrics.jsonl").read_text().splitlines()]
    for r in out:
        r.pop("seconds", None)
        r.pop("peak_rss_mb", None)
    return out


def test_killed_comparison_resumes_bit_identical(tmp_path, monkeypatch, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["compare", "bimodal", "--out", str(full), *ARGS]) == 0

    calls = {"n": 0}
    original = compare_runner.run_unit

    def interrupt(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(*args)

    monkeypatch.setattr(compare_runner, "run_unit", interrupt)
    assert main(["compare", "bimodal", "--out", str(cut), *ARGS]) == 130
    monkeypatch.setattr(compare_runner, "run_unit", original)
    assert json.loads((cut / "summary.json").read_text())["status"] == "failed"
    tensors, meta = load_checkpoint(cut)
    assert int(tensors["done"]) == 2 and meta["optimum"] is not None
    assert meta["base"] == load_checkpoint(full)[1]["base"]  # kept, not recomputed

    assert main(["resume", str(cut), "--no-progress"]) == 0
    assert table(cut) == table(full)
    ta, _ = load_checkpoint(full)
    tb, _ = load_checkpoint(cut)
    assert ta.keys() == tb.keys()
    keep = [i for i in range(len(compare_runner.FINAL)) if i not in TIMED]
    for k in ta:
        a, b = (ta[k][:, keep], tb[k][:, keep]) if k == "final" else (ta[k], tb[k])
        assert torch.equal(a, b), k
    assert rows(full) == rows(cut)  # the third unit's rows were redone, not doubled

    capsys.readouterr()
    assert main(["resume", str(cut)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_a_kill_while_the_base_row_is_scored_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    """Killed after the optimum's checkpoint, while the base model is scored: the resume
    keeps the optimum, scores the base on the same paths and runs every unit."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["compare", "bimodal", "--out", str(full), *ARGS]) == 0
    original = compare_runner.Problem.evaluate

    def killed(self, chain, *args, **kwargs):
        if chain is self.reference:
            raise KeyboardInterrupt
        return original(self, chain, *args, **kwargs)

    monkeypatch.setattr(compare_runner.Problem, "evaluate", killed)
    assert main(["compare", "bimodal", "--out", str(cut), *ARGS]) == 130
    monkeypatch.setattr(compare_runner.Problem, "evaluate", original)
    tensors, meta = load_checkpoint(cut)
    assert int(tensors["done"]) == 0 and meta["optimum"] is not None and meta["base"] is None

    assert main(["resume", str(cut), "--no-progress"]) == 0
    a, b = (json.loads((f / "summary.json").read_text()) for f in (full, cut))
    assert b["base"] == a["base"] and b["optimum"] == a["optimum"]
    assert table(cut) == table(full) and rows(cut) == rows(full)
