"""`sampleopt compare` on several processes (`accelerate launch`) ends with the numbers
of one process, written into one run folder; units committed by another process
before a kill are taken in on resume, not run again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import sampleopt.compare.runner as compare_runner
from sampleopt.cli import main
from sampleopt.compare import parallel
from sampleopt.rundir import load_checkpoint

ARGS = ["--methods", "adjoint,guidance", "--budget", "1500", "--seeds", "2", "--no-progress"]
KEEP = [i for i, k in enumerate(compare_runner.FINAL) if k not in ("seconds", "peak_rss_mb")]


def results(folder):
    tensors, meta = load_checkpoint(folder)
    return {"status": tensors["status"], "final": tensors["final"][:, KEEP],
            "curve": tensors["curve"]}, meta  # fmt: skip


def rows(folder):
    out = []
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        r.pop("seconds", None)
        r.pop("peak_rss_mb", None)
        out.append(r)
    return sorted(out, key=lambda r: (r["unit"], r.get("network_evals", 0), r.get("status", "")))


def test_two_processes_under_accelerate_launch_equal_one(tmp_path):
    two, one = tmp_path / "two", tmp_path / "one"
    launcher = Path(sys.executable).with_name("accelerate")
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "sampleopt.cli"]
    cmd += ["compare", "bimodal", "--out", str(two), *ARGS]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("report:") == 1  # one run folder, written by process 0
    # process 1 ran units 1 and 3 and committed them to their files
    assert sorted(parallel.read_units(two)) == [1, 3]

    torch.set_num_threads(1)
    assert main(["compare", "bimodal", "--out", str(one), *ARGS]) == 0
    (a, meta_a), (b, meta_b) = results(two), results(one)
    assert meta_a["optimum"] == meta_b["optimum"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-9, atol=1e-12, equal_nan=True)
    assert [r["unit"] for r in rows(two)] == [r["unit"] for r in rows(one)]
    summary = json.loads((two / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["units_done"] == 4
    assert summary["processes"] == 2
    assert "units on 2 processes" in (two / "report.md").read_text()
    assert json.loads((one / "summary.json").read_text())["processes"] == 1


def test_committed_unit_files_are_taken_in_on_resume(tmp_path, monkeypatch):
    """A launch killed after process 1 committed unit 1 (and left a torn temporary):
    the resume takes unit 1 from its file and runs only units 0, 2 and 3."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["compare", "bimodal", "--out", str(full), *ARGS]) == 0

    calls = []
    original = compare_runner.run_unit

    def interrupt(problem, cfg, unit, optimum, log):
        calls.append(unit)
        if len(calls) == 2:
            raise KeyboardInterrupt
        record = original(problem, cfg, unit, optimum, log)
        if len(calls) == 1:  # what process 1 would have committed for unit 1
            other = original(problem, cfg, ("guidance", 0), optimum, lambda rows: None)
            other["rows"] = [{"unit": 1, "method": "guidance", "seed": 0, **r}
                             for r in other["rows"]]  # fmt: skip
            parallel.write_unit(cut, 1, other)
            (cut / parallel.UNITS / "unit-002.json.tmp").write_text("{torn")
        return record

    monkeypatch.setattr(compare_runner, "run_unit", interrupt)
    assert main(["compare", "bimodal", "--out", str(cut), *ARGS]) == 130
    tensors, _ = load_checkpoint(cut)
    assert tensors["status"].tolist() == [1, 1, 0, 0]  # unit 1 taken in after unit 0

    calls.clear()

    def count(*args):
        calls.append(args[2])
        return original(*args)

    monkeypatch.setattr(compare_runner, "run_unit", count)
    assert main(["resume", str(cut), "--no-progress"]) == 0
    assert calls == [("adjoint", 1), ("guidance", 1)]
    a, b = results(full)[0], results(cut)[0]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, equal_nan=True)
    assert rows(full) == rows(cut)
