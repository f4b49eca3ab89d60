"""Experiment guidance-mnist: a tiny run writes its report with finite rewards and FIDs
and the right cost counts, an interrupted run resumed from its last checkpoint ends
bit-identical to the uninterrupted one, strength 0 with noise=same reproduces z_0
exactly, and bad config values are refused with exit code 2."""

from __future__ import annotations

import json
import math

import pytest
import torch

import sampleopt.experiments.guidance_mnist as gm
from sampleopt.cli import main
from sampleopt.rundir import load_checkpoint

N, K, ROUNDS = 4, 2, 2
TINY = [
    "--set", f"eval_n={N}", "--set", f"steps={K}", "--set", f"rounds={ROUNDS}",
    "--set", "brightness_strengths=[30]", "--set", "digit_strengths=[3]", "--no-progress",
]  # fmt: skip


def rows(folder):
    out = [json.loads(s) for s in (folder / "metrics.jsonl").read_text().splitlines()]
    for r in out:
        r.pop("cpu_seconds", None)
        r.pop("seconds", None)  # wall-clock fields differ between any two runs
    return out


def settings(folder):
    out = json.loads((folder / "summary.json").read_text())["settings"]
    for s in out:
        for key in ("seconds", "cpu_seconds"):
            s.pop(key, None)
            for r in s.get("rounds", []):
                r.pop(key)
    return out


def test_tiny_run_and_bit_identical_resume(tmp_path, monkeypatch, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["run", "guidance-mnist", "--out", str(full), *TINY]) == 0
    report = (full / "report.md").read_text()
    assert "## brightness" in report and "## digit" in report
    assert (full / "frontier_brightness.png").is_file() and (full / "frontier_digit.png").is_file()
    summary = json.loads((full / "summary.json").read_text())
    assert summary["status"] == "completed"
    units = summary["settings"]
    # per reward: the base unit, then naive and look-ahead at one strength each
    assert [(s["reward"], s["guidance"]) for s in units] == [
        (r, g) for r in ("brightness", "digit") for g in ("base", "naive", "look-ahead")
    ]
    for s in units:
        if s["guidance"] == "base":
            for key in ("z0", "finetune_eval_set"):
                assert math.isfinite(s[key]["reward_mean"]) and s[key]["classifier_fid"] > 0
            continue
        assert s["status"] == "ok" and [r["round"] for r in s["rounds"]] == [1, 2]
        for r in s["rounds"]:
            assert math.isfinite(r["reward_mean"]) and r["classifier_fid"] > 0
            assert r["forward_rows"] == r["round"] * N * K
            look = s["guidance"] == "look-ahead"
            assert r["backward_rows"] == (r["forward_rows"] if look else 0)
            assert r["reward_gradients"] == r["round"] * N

    calls = {"n": 0}
    original = gm.GuidedOptimization.step

    def interrupt(self):
        calls["n"] += 1
        if calls["n"] == 2 * ROUNDS + 1:  # in the digit's naive setting, the 5th unit
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(gm.GuidedOptimization, "step", interrupt)
    assert main(["run", "guidance-mnist", "--out", str(cut), *TINY]) == 130
    assert "sampleopt resume" in capsys.readouterr().err
    assert json.loads((cut / "summary.json").read_text())["status"] == "failed"
    assert load_checkpoint(cut)[1]["done"] == 4
    monkeypatch.setattr(gm.GuidedOptimization, "step", original)

    assert main(["resume", str(cut), "--no-progress"]) == 0
    assert settings(full) == settings(cut)
    ta, _ = load_checkpoint(full)
    tb, _ = load_checkpoint(cut)
    assert ta.keys() == tb.keys() == {"z0.brightness", "z0.digit"}
    for k in ta:
        assert torch.equal(ta[k], tb[k]), k
    assert rows(full) == rows(cut)  # the interrupted unit's rows were redone, not doubled
    assert main(["resume", str(cut)]) == 2  # finished: nothing to resume


def test_strength_zero_with_the_same_noise_reproduces_the_base(tmp_path):
    out = tmp_path / "r"
    args = ["--set", "rewards=[brightness]", "--set", "guidances=[naive]"]
    args += ["--set", "brightness_strengths=[0]", "--set", "rounds=1"]
    assert (
        main(["run", "guidance-mnist", "--out", str(out), *TINY[:4], *args, "--no-progress"]) == 0
    )
    base, unit = json.loads((out / "summary.json").read_text())["settings"]
    # round 1 redraws z_0's noise without guidance: the very same samples
    assert unit["rounds"][0]["reward_mean"] == base["z0"]["reward_mean"]
    assert unit["rounds"][0]["classifier_fid"] == base["z0"]["classifier_fid"]


@pytest.mark.parametrize(
    "override",
    [
        "rewards=[]",
        "rewards=[brightness,brightness]",
        "rewards=[contrast]",
        "guidances=[dps]",
        "digit=10",
        "rounds=0",
        "noise=reuse",
        "brightness_strengths=[-1]",
        "digit_strengths=[]",
        "eval_n=1",
        "sigma_y=0",
    ],
)
def test_bad_config_values_are_refused(override, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "guidance-mnist", "--out", str(out), "--set", override]) == 2
    assert "config key" in capsys.readouterr().err
    assert not out.exists()  # refused before any run folder is made
