"""Experiment guidance-sphere: a tiny run writes its report and plots, an interrupted run
resumed from its last checkpoint ends bit-identical to the uninterrupted one, the
guidance moves f up, and bad config values are refused with exit code 2."""

from __future__ import annotations

import json
import math

import pytest
import torch

import sampleopt.experiments.guidance_sphere as guidance_sphere
from sampleopt.cli import main
from sampleopt.rundir import load_checkpoint

TINY = [
    "--set", "runs=2", "--set", "deltas=[0.3]", "--set", "rounds=2", "--set", "steps=8",
    "--set", "batch_size=32", "--set", "floor_samples=64", "--no-progress",
]  # fmt: skip
CALLS_PER_UNIT = 3  # sphere_distance calls of one unit: rounds 0, 1, 2


def rows(folder):
    return [json.loads(s) for s in (folder / "metrics.jsonl").read_text().splitlines()]


def summary(folder):
    s = json.loads((folder / "summary.json").read_text())
    for row in s["table"]:
        for g in ("naive", "look-ahead"):
            row[g].pop("seconds_mean")
    for k in ("timings_s", "seconds_total"):
        s.pop(k)
    return s


def test_tiny_run_and_bit_identical_resume(tmp_path, monkeypatch, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["run", "guidance-sphere", "--out", str(full), *TINY]) == 0
    assert (full / "report.md").is_file()
    assert (full / "rounds.png").is_file() and (full / "tradeoff.png").is_file()
    s = json.loads((full / "summary.json").read_text())
    assert s["status"] == "completed" and s["runs_done"] == 4 and s["dim"] == 4
    assert "| 0.3 | look-ahead |" in (full / "report.md").read_text()
    for g in ("naive", "look-ahead"):
        cell = s["table"][0][g]
        assert all(math.isfinite(cell[k]) for k in ("f_mean", "f_top", "dist", "norm"))
        # delta = 0.3 a round asks for f to rise by about 0.6 in 2 rounds: it rises
        assert cell["f_gain"] > 0.2 and cell["f_top"] >= cell["f_mean"]
        curve = s["curves"][f"{g}|0.3"]["f_mean"]
        assert len(curve) == 3
    ta, _ = load_checkpoint(full)
    # both guidances of one run start from the same unguided samples (round 0)
    assert torch.equal(ta["f_mean"][0, 0], ta["f_mean"][1, 0])
    assert not torch.equal(ta["f_mean"][0, 0], ta["f_mean"][2, 0])  # runs differ
    assert len(rows(full)) == 4 * CALLS_PER_UNIT

    calls = {"n": 0}
    original = guidance_sphere.sphere_distance

    def interrupt(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2 * CALLS_PER_UNIT + 2:  # in the third unit, after its round 0
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(guidance_sphere, "sphere_distance", interrupt)
    assert main(["run", "guidance-sphere", "--out", str(cut), *TINY]) == 130
    assert "sampleopt resume" in capsys.readouterr().err
    assert json.loads((cut / "summary.json").read_text())["status"] == "failed"
    assert int(load_checkpoint(cut)[0]["done"]) == 2
    monkeypatch.setattr(guidance_sphere, "sphere_distance", original)

    assert main(["resume", str(cut), "--no-progress"]) == 0
    assert summary(full) == summary(cut)
    tb, _ = load_checkpoint(cut)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert rows(full) == rows(cut)  # the third unit's rows were redone, not doubled
    assert main(["resume", str(cut)]) == 2  # finished: nothing to resume


@pytest.mark.parametrize(
    "override",
    [
        "runs=0",
        "deltas=[-1]",
        "deltas=[0.1,0.1]",
        "deltas=[]",
        "guidances=[naive,exact]",
        "guidances=[naive,naive]",
        "rounds=0",
        "sampler=ode",
        "sigma_y=0",
        "top_k=1000",
        "batch_size=1",
        "steps=x",
    ],
)
def test_bad_config_values_are_refused(override, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "guidance-sphere", "--out", str(out), "--set", override]) == 2
    assert "config key" in capsys.readouterr().err
    assert not out.exists()  # refused before any run folder is made
