"""The command line: listing, help, the langevin-hex run folder and its numbers."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sampleopt.cli import main
from sampleopt.rundir import load_checkpoint

FAST = ["--set", "compare=false", "--set", "lam_sweep=", "--no-progress"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sampleopt.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_list_names_each_experiment_with_description(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "langevin-hex" in out and "Implicit Diffusion" in out


@pytest.mark.parametrize(
    "argv", [["--help"], ["list", "--help"], ["run", "--help"], ["resume", "--help"]]
)
def test_help_is_complete(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: sampleopt" in out
    if argv[0] == "run":
        for key in ("--set", "--out", "--seed", "langevin-hex", "n_particles", "lam_sweep"):
            assert key in out


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hex") / "run"
    proc = run_cli("run", "langevin-hex", "--seed", "0", "--out", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_langevin_hex_reproduces_paper_numbers(full_run):
    """Marion et al. 5.1: mean reward 0.06 -> 0.29 +- 0.02 and weight >= 0.95 on (2, 3.46)."""
    out, proc = full_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert abs(summary["reward_mean"] - 0.29) <= 0.02
    weights = summary["mixture_weights"]
    assert weights[1] >= 0.95 and summary["top_centre"] == pytest.approx([2.0, 3.4641], abs=1e-3)
    assert f"report: {out / 'report.md'}" in proc.stdout


def test_run_folder_contents(full_run):
    out, _ = full_run
    for name in (
        "config.json",
        "metrics.jsonl",
        "summary.json",
        "report.md",
        "reward.png",
        "weights.png",
        "particles.png",
        "comparison.png",
        "lam.png",
        "checkpoint.safetensors",
        "checkpoint.prev.safetensors",
    ):
        assert (out / name).exists(), name
    assert not list(out.glob("*.tmp"))
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    main_rows = [r for r in rows if r["run"] == "main"]
    assert [r["step"] for r in main_rows] == list(range(1, 5001))
    assert {r["run"] for r in rows} >= {
        "compare/implicit",
        "compare/nested",
        "compare/unrolled",
        "lam/forward/0.1",
        "lam/reverse/1",
    }
    tensors, meta = load_checkpoint(out)
    assert meta["iteration"] == 5000 and tensors["particles"].shape == (1000, 2)
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["comparison"]["methods"]) == {"implicit", "nested", "unrolled"}
    for r in summary["lam_runs"]:  # the KL keeps the runs nearer the reference than lam = 0
        assert r["kl_to_reference"] < summary["kl_to_reference"]


def test_same_seed_same_numbers(full_run, tmp_path):
    out, _ = full_run
    assert main(["run", "langevin-hex", "--seed", "0", "--out", str(tmp_path / "b"), *FAST]) == 0
    a = json.loads((out / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert a["reward_mean"] == b["reward_mean"]
    assert a["mixture_weights"] == b["mixture_weights"]


def test_config_saved_resolved(tmp_path):
    out = tmp_path / "r"
    args = ["run", "langevin-hex", "--out", str(out), "--set", "iterations=200", *FAST]
    assert main([*args, "--set", "eta=0.05", "--seed", "3"]) == 0
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["iterations"] == 200 and cfg["eta"] == 0.05 and cfg["seed"] == 3
    assert cfg["lam_sweep"] == [] and cfg["compare"] is False
