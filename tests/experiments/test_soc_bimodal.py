"""Experiment soc-bimodal on a tiny config: it runs and reports, its costs sit above the
exact optima, an interrupted run resumes to the same end bit for bit, and bad config
values are refused with exit code 2."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

from sampleopt.cli import main
from sampleopt.errors import UsageError
from sampleopt.estimators import AdjointMatching
from sampleopt.experiments import soc_bimodal
from sampleopt.rundir import load_checkpoint

TINY = [
    "run", "soc-bimodal", "--no-progress", "--set", "betas=1", "--set", "steps=20",
    "--set", "batch=32", "--set", "am_iterations=3", "--set", "tr_iterations=3",
    "--set", "tr_round_length=2", "--set", "tr_score_iterations=3", "--set", "eval_n=1000",
    "--set", "log_every=1",
]  # fmt: skip
UNITS = 4  # 2 set-ups x 1 beta x 2 methods


def summary(folder):
    return json.loads((folder / "summary.json").read_text())


def computed(folder):
    """Every computed result of a run, without wall times."""
    out = []
    for r in summary(folder)["results"]:
        out.append({k: v for k, v in r.items() if k not in ("train_s", "eval_s")})
    return out


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    folder = tmp_path_factory.mktemp("soc") / "full"
    assert main([*TINY, "--out", str(folder)]) == 0
    return folder


def test_tiny_run_reports_finite_costs_above_the_optimum(full):
    s = summary(full)
    assert s["status"] == "completed"
    assert len(s["results"]) == UNITS
    for r in s["results"]:
        assert torch.isfinite(torch.tensor([r["cost"], r["cost_se"], r["w1"], r["tv"]])).all()
        assert r["cost"] > r["optimum"] - 4 * r["cost_se"], r["unit"]
        assert 0 <= r["tv"] <= 1 and r["w1"] >= 0
        assert r["optimum"] == pytest.approx(1.040 if r["setup"] == "learned" else 1.130, abs=1e-3)
    report = (full / "report.md").read_text()
    assert "(a) initial law learned" in report and "(b) initial law fixed" in report
    for png in ("cost_vs_beta.png", "densities.png"):
        assert (full / png).stat().st_size > 1000
    tensors, meta = load_checkpoint(full)
    assert len(meta["results"]) == UNITS and any(k.startswith("learned/1/") for k in tensors)


def test_interrupted_run_resumes_to_identical_results(full, tmp_path, monkeypatch, capsys):
    cut = tmp_path / "cut"
    calls = {"n": 0}
    original = AdjointMatching._loss

    def interrupt(self, call):  # the second AM unit (the fourth unit) is cut short
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return original(self, call)

    monkeypatch.setattr(AdjointMatching, "_loss", interrupt)
    assert main([*TINY, "--out", str(cut)]) == 130
    assert "sampleopt resume" in capsys.readouterr().err
    assert summary(cut)["status"] == "failed"
    assert len(load_checkpoint(cut)[1]["results"]) == 3
    monkeypatch.setattr(AdjointMatching, "_loss", original)

    assert main(["resume", str(cut), "--no-progress"]) == 0
    assert computed(cut) == computed(full)
    a, b = load_checkpoint(full)[0], load_checkpoint(cut)[0]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [(full / "metrics.jsonl").read_text(), (cut / "metrics.jsonl").read_text()]
    assert rows[0] == rows[1]  # the cut unit's rows were redone, not doubled


@pytest.mark.parametrize(
    "setting, words",
    [
        ("betas=0", "'betas' must be >= 0.001"),
        ("betas=1,1", "distinct numbers"),
        ("setups=learned,other", "'setups' takes distinct names"),
        ("methods=", "'methods' takes distinct names"),
        ("base=approximate", "'base' must be one of exact, learned"),
        ("am_steps=60", "'am_steps' must be at most steps = 50"),
        ("batch=1", "'batch' must be >= 2"),
        ("lr_decay=0", "'lr_decay' must be >= 0.0001"),
        ("eval_n=ten", "'eval_n' expects an integer"),
        ("am_clip_quantile=1", "'am_clip_quantile' must be <= 0.999"),
    ],
)
def test_bad_config_values_exit_2(setting, words, tmp_path, capsys):
    assert main(["run", "soc-bimodal", "--out", str(tmp_path / "r"), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "r").exists()


def test_learned_base_runs(tmp_path):
    if importlib.util.find_spec("sampleopt.soc.bimodal_learned") is None:
        pytest.skip("sampleopt.soc.bimodal_learned (the learned base) is not shipped yet")
    from sampleopt.soc.bimodal_learned import learned_score

    try:
        learned_score()
    except UsageError as exc:
        pytest.skip(f"the learned base's weights are not shipped yet: {exc}")
    folder = tmp_path / "learned"
    args = [*TINY, "--set", "setups=fixed", "--set", "methods=adjoint-matching"]
    assert main([*args, "--set", "base=learned", "--out", str(folder)]) == 0
    (r,) = summary(folder)["results"]
    assert (
        torch.isfinite(torch.tensor(r["cost"])) and "within_10pct" not in summary(folder)["goals"]
    )


def test_learned_base_is_refused_without_its_module(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(soc_bimodal, "LEARNED", "sampleopt.soc.no_such_module")
    assert main(["run", "soc-bimodal", "--out", str(tmp_path / "r"), "--set", "base=learned"]) == 2
    assert "base=learned needs sampleopt.soc.no_such_module" in capsys.readouterr().err
