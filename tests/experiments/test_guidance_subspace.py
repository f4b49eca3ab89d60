"""Experiment guidance-subspace: the exact subspace denoiser is Tweedie's formula for its
data, a tiny run writes its report, an interrupted run resumed from its last checkpoint
ends bit-identical to the uninterrupted one, and bad config values are refused."""

from __future__ import annotations

import json
import math

import pytest
import torch

import sampleopt.experiments.guidance_subspace as gs
from sampleopt.cli import main
from sampleopt.data import SubspaceGaussian
from sampleopt.diffusion import CosineSchedule, SubspaceGaussianDenoiser
from sampleopt.rundir import load_checkpoint

TINY = [
    "--set", "runs=2", "--set", "models=[exact]", "--set", "rounds_f1=4",
    "--set", "rounds_f2=3", "--set", "steps=6", "--set", "fit_from=1", "--set", "fit_to=4",
    "--set", "batch=8", "--no-progress",
]  # fmt: skip
UNITS = 2 * 2 * 2 * 2  # objectives x guidances x algorithms x runs


def test_exact_denoiser_is_tweedie():
    """x0hat = a_t A A^T x_t for N(0, A A^T) data (m = 0, C = I), and for a general
    latent N(m, C) it matches the Gaussian conditional mean computed in R^64."""
    data = SubspaceGaussian(64, 16, seed=0, dtype=torch.float64)
    sched = CosineSchedule(1000).double()
    a, s = sched.a_s()
    net = SubspaceGaussianDenoiser(data.A, sched)
    x = torch.randn(5, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([1, 10, 300, 700, 1000])
    x0 = (x - s[t, None] * net(x, t)) / a[t, None]
    assert torch.allclose(x0, a[t, None] * (x @ data.A) @ data.A.T, atol=1e-10)

    g = torch.Generator().manual_seed(2)
    m, B = torch.randn(16, generator=g, dtype=torch.float64), torch.randn(16, 16, generator=g)
    net = SubspaceGaussianDenoiser(data.A, sched, mean=m, factor=B.double())
    mu, S = data.A @ m, data.A @ B.double() @ B.double().T @ data.A.T
    for ti in (5, 400):
        tt = torch.full((5,), ti)
        cov_x = a[ti] ** 2 * S + s[ti] ** 2 * torch.eye(64, dtype=torch.float64)
        want = mu + (a[ti] * S @ torch.linalg.solve(cov_x, (x - a[ti] * mu).T)).T
        got = (x - s[ti] * net(x, tt)) / a[ti]
        assert torch.allclose(got, want, atol=1e-9)
        # one time for the batch (a sampler's call) and mixed times (DSM) agree
        mixed = torch.tensor([ti, ti, 1, ti, 900])
        assert torch.allclose(net(x, mixed)[[0, 1, 3]], net(x, tt)[[0, 1, 3]], atol=1e-12)


def rows(folder):
    out = [json.loads(s) for s in (folder / "metrics.jsonl").read_text().splitlines()]
    for r in out:
        r.pop("seconds", None)
    return out


def table(folder):
    t = json.loads((folder / "summary.json").read_text())["table"]
    return [{k: v for k, v in r.items() if "seconds" not in k} for r in t]


def test_tiny_run_and_bit_identical_resume(tmp_path, monkeypatch, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["run", "guidance-subspace", "--out", str(full), *TINY]) == 0
    for name in ("report.md", "gap.png", "ratio.png"):
        assert (full / name).is_file()
    summary = json.loads((full / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["runs_done"] == UNITS
    assert summary["optimum"]["f1"] == 10.0 and summary["theta_par_norm"] == pytest.approx(
        1 / math.sqrt(82), rel=1e-9
    )  # |theta| = 1 and |theta_perp| / |theta_par| = 9
    for r in summary["table"]:
        assert all(math.isfinite(v) for v in r["mean_f"]["runs"])
        assert all(v >= -1e-9 for v in r["gap"]["runs"]) or r["guidance"] == "naive"
        if r["guidance"] == "look-ahead":  # the exact model's x0hat keeps samples on span(A)
            assert r["ratio_max"]["mean"] < 1e-12
        else:  # naive guidance adds theta_perp: off the subspace
            assert r["ratio_final"]["mean"] > 1e-6
    assert "| exact | f1 | look-ahead | 2 |" in (full / "report.md").read_text()

    calls = {"n": 0}
    original = gs.GuidedOptimization.step

    def interrupt(self):
        calls["n"] += 1
        if calls["n"] == 4 + 4 + 2:  # in the third unit (f1: 4 rounds a unit)
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(gs.GuidedOptimization, "step", interrupt)
    assert main(["run", "guidance-subspace", "--out", str(cut), *TINY]) == 130
    assert "sampleopt resume" in capsys.readouterr().err
    assert json.loads((cut / "summary.json").read_text())["status"] == "failed"
    assert int(load_checkpoint(cut)[0]["done"]) == 2
    monkeypatch.setattr(gs.GuidedOptimization, "step", original)

    assert main(["resume", str(cut), "--no-progress"]) == 0
    assert table(full) == table(cut)
    ta, _ = load_checkpoint(full)
    tb, _ = load_checkpoint(cut)
    assert ta.keys() == tb.keys()
    for k in ta:
        assert torch.equal(ta[k].nan_to_num(-1), tb[k].nan_to_num(-1)), k
    assert rows(full) == rows(cut)


@pytest.mark.parametrize(
    "override",
    [
        "runs=0",
        "models=[exact,exact]",
        "models=[ddpm]",
        "objectives=[f3]",
        "guidances=[]",
        "algorithms=[3]",
        "fit_to=5",
        "top_k=64",
        "steps=0",
        "exact_lr=0",
    ],
)
def test_bad_config_values_are_refused(override, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["run", "guidance-subspace", "--out", str(out), "--set", override]) == 2
    assert "config key" in capsys.readouterr().err
    assert not out.exists()
