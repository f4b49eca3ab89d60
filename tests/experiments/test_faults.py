"""Fault injection: kills at any moment, corrupted files, NaN mid-run.

Each command runs in a child process that SIGKILLs itself at a chosen point of the
checkpoint protocol (before or after a chosen rename of the n-th checkpoint) or is
killed from outside at a random time; ``sampleopt resume`` must then end exactly where
the uninterrupted run ended: the same checkpoint tensors, bit for bit, and the same
metrics rows, none duplicated. Corrupted or truncated checkpoints are detected (the
previous good one is used when there is one), and damaged folders get one clear line
and exit code 2. The figures in docs/reliability.md count these cases.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sampleopt.cli import main
from sampleopt.rundir import CHECKPOINT, PREVIOUS, load_checkpoint

REPO = Path(__file__).resolve().parents[2]
LANGEVIN = [
    "run", "langevin-hex", "--set", "iterations=400", "--set", "n_particles=64",
    "--set", "compare=false", "--set", "lam_sweep=", "--set", "log_every=20",
    "--set", "checkpoint_every=40", "--no-progress",
]  # fmt: skip
# longer, for kills from outside: most of its time is spent past start-up
LONG = [*LANGEVIN, "--set", "iterations=3000", "--set", "checkpoint_every=100"]
MNIST = [
    "run", "mnist-brightness", "--set", "steps=2", "--set", "updates=5", "--set", "batch_size=2",
    "--set", "eval_n=4", "--set", "eval_every=3", "--set", "checkpoint_every=2",
    "--no-progress",
]  # fmt: skip
TRAIN = [
    "train", "hex", "--set", "steps=60", "--set", "checkpoint_every=20", "--set", "log_every=10",
    "--set", "sample_every=1000", "--set", "batch_size=32", "--set", "width=16", "--no-progress",
]  # fmt: skip

# the child kills itself at the n-th os.replace whose target ends with `suffix`
PRELUDE = """
import os, signal, sys
suffix, n, when = {suffix!r}, {n}, {when!r}
seen = [0]
real = os.replace
def replace(src, dst, *a, **k):
    hit = str(dst).endswith(suffix)
    if hit:
        seen[0] += 1
    if hit and seen[0] == n and when == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    real(src, dst, *a, **k)
    if hit and seen[0] == n and when == "after":
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace
from sampleopt.cli import main
sys.exit(main({args!r}))
"""


def child(args, *, kill=None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    if kill is None:
        code = f"import sys\nfrom sampleopt.cli import main\nsys.exit(main({args!r}))"
    else:
        suffix, n, when = kill
        code = PRELUDE.format(suffix=suffix, n=n, when=when, args=args)
    return subprocess.Popen(
        [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def run(args, *, kill=None) -> tuple[int, str]:
    p = child(args, kill=kill)
    out, err = p.communicate(timeout=300)
    return p.returncode, out.decode() + err.decode()


def resume(folder: Path) -> tuple[int, str]:
    return run(["resume", str(folder), "--no-progress"])


def metrics(folder: Path) -> list[dict]:
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    for r in rows:  # wall-clock fields differ between any two runs
        r.pop("seconds", None)
    return rows


def assert_same_end(folder: Path, reference: Path) -> None:
    """The resumed run ended where the uninterrupted one did."""
    a, meta_a = load_checkpoint(folder)
    b, meta_b = load_checkpoint(reference)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert metrics(folder) == metrics(reference)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "completed"


@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Uninterrupted runs of each command, with their wall time past start-up."""
    out = {}
    for name, args in (("langevin", LANGEVIN), ("long", LONG), ("mnist", MNIST), ("train", TRAIN)):
        folder = tmp_path_factory.mktemp("ref") / name
        p = child([*args, "--out", str(folder)])
        assert p.stdout.readline().startswith(b"run folder:")
        t0 = time.perf_counter()
        rest, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
        out[name] = (folder, time.perf_counter() - t0)
    return out


ARGS = {"langevin": LANGEVIN, "long": LONG, "mnist": MNIST, "train": TRAIN}
KILLS = [  # (command, (file suffix, n-th rename, before/after))
    ("langevin", (CHECKPOINT, 1, "before")),  # before the first checkpoint exists
    ("langevin", (PREVIOUS, 3, "after")),  # between the two renames: only the previous one
    ("langevin", (CHECKPOINT, 4, "after")),  # right after a commit
    ("langevin", ("config.json", 1, "after")),  # right after the run began
    ("mnist", (PREVIOUS, 1, "after")),
    ("mnist", (CHECKPOINT, 1, "before")),
    ("train", (PREVIOUS, 2, "after")),
]


@pytest.mark.parametrize(
    "command, kill", KILLS, ids=[f"{c}-{k[0]}-{k[1]}-{k[2]}" for c, k in KILLS]
)
def test_a_kill_at_a_named_point_resumes_bit_exactly(command, kill, references, tmp_path):
    folder = tmp_path / "run"
    rc, text = run([*ARGS[command], "--out", str(folder)], kill=kill)
    assert rc == -signal.SIGKILL, text
    rc, text = resume(folder)
    assert rc == 0, text
    assert "Traceback" not in text
    assert_same_end(folder, references[command][0])


RANDOM_KILLS = 4


@pytest.mark.parametrize("seed", range(RANDOM_KILLS))
def test_a_kill_at_a_random_moment_resumes_bit_exactly(seed, references, tmp_path):
    """The moment is set by the run's progress, not by the clock alone (a machine under
    varying load runs faster or slower than the reference did): wait for a random share
    (up to 80%) of the reference's metrics rows, then up to one row's time more."""
    reference, seconds = references["long"]
    total = len((reference / "metrics.jsonl").read_text().splitlines())
    rng = random.Random(seed)
    target, extra = int(rng.uniform(0.0, 0.8) * total), rng.uniform(0.0, 1.0) * seconds / total
    folder = tmp_path / "run"
    p = child([*LONG, "--out", str(folder)])
    assert p.stdout.readline().startswith(b"run folder:")  # start-up is over
    log = folder / "metrics.jsonl"
    while p.poll() is None and (len(log.read_text().splitlines()) if log.exists() else 0) < target:
        time.sleep(0.01)
    time.sleep(extra)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=300)
    assert p.returncode == -signal.SIGKILL, "the run ended before the kill: kill sooner"
    done = folder / "summary.json"  # completed: killed after its last word, nothing to redo
    if not done.exists() or json.loads(done.read_text() or "{}").get("status") != "completed":
        rc, text = resume(folder)
        assert rc == 0, text
    assert_same_end(folder, reference)


# -- damaged files -------------------------------------------------------------------
def damaged_copy(reference: Path, tmp_path: Path) -> Path:
    """A copy of a finished run marked unfinished, so that it can be resumed."""
    folder = tmp_path / "run"
    shutil.copytree(reference, folder)
    summary = json.loads((folder / "summary.json").read_text())
    summary["status"] = "running"
    (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def flip(path: Path, where: float) -> None:
    data = bytearray(path.read_bytes())
    i = int(where * (len(data) - 1))
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def in_process(args, capsys) -> tuple[int, str]:
    """(exit code, what it wrote to stderr) of the command run in this process."""
    rc = main(args)
    return rc, capsys.readouterr().err


@pytest.mark.parametrize(
    "damage",
    [lambda p: flip(p, 0.5), lambda p: flip(p, 0.999), lambda p: flip(p, 0.02), truncate],
    ids=["byte-in-the-tensors", "last-byte", "byte-in-the-header", "truncated"],
)
def test_a_corrupted_checkpoint_falls_back_to_the_previous_one(
    damage, references, tmp_path, capsys
):
    reference = references["langevin"][0]
    folder = damaged_copy(reference, tmp_path)
    damage(folder / CHECKPOINT)
    rc, text = in_process(["resume", str(folder), "--no-progress"], capsys)
    assert rc == 0, text
    assert "sampleopt: warning: checkpoint.safetensors" in text
    assert "previous checkpoint" in text
    assert_same_end(folder, reference)


def test_corrupted_checkpoints_with_no_good_one_left_are_refused(references, tmp_path, capsys):
    folder = damaged_copy(references["langevin"][0], tmp_path)
    flip(folder / CHECKPOINT, 0.5)
    truncate(folder / PREVIOUS)
    before = (folder / CHECKPOINT).read_bytes()
    rc, text = in_process(["resume", str(folder), "--no-progress"], capsys)
    assert rc == 2 and text.count("\n") == 1, text
    assert text.startswith("sampleopt: error: the checkpoint in") and "corrupted" in text
    assert (folder / CHECKPOINT).read_bytes() == before  # nothing overwritten


@pytest.mark.parametrize(
    "content, why",
    [(b'{"experiment": "langevin-hex", "con', "cannot read"), (b"[1, 2]", "not an object")],
)
def test_a_damaged_config_is_refused_in_one_line(content, why, references, tmp_path, capsys):
    folder = damaged_copy(references["langevin"][0], tmp_path)
    (folder / "config.json").write_bytes(content)
    rc, text = in_process(["resume", str(folder), "--no-progress"], capsys)
    assert rc == 2 and text.count("\n") == 1 and why in text, text


def test_a_damaged_summary_or_metrics_line_does_not_stop_a_resume(references, tmp_path, capsys):
    reference = references["langevin"][0]
    folder = damaged_copy(reference, tmp_path)
    (folder / "summary.json").write_text('{"status": "runn')  # cut short by a kill
    with open(folder / "metrics.jsonl", "a") as fh:
        fh.write('{"run": "main", "st')  # a row cut short by a kill
    rc, text = in_process(["resume", str(folder), "--no-progress"], capsys)
    assert rc == 0, text
    assert_same_end(folder, reference)


def test_nan_mid_run_keeps_the_config_and_the_metrics_so_far(tmp_path, capsys):
    folder = tmp_path / "run"
    args = [*LANGEVIN, "--set", "gamma=30", "--out", str(folder)]
    rc, text = in_process(args, capsys)
    assert rc == 1 and "NaN or inf" in text and "Traceback" not in text, text
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "failed" and "NaN or inf" in summary["error"]
    assert json.loads((folder / "config.json").read_text())["config"]["gamma"] == 30
    bad = int(summary["error"].split("at step ")[1].split(";")[0])
    assert [r["step"] for r in metrics(folder)] == list(range(1, bad))


def test_every_run_and_training_ends_with_a_checkpoint(references):
    for name, key in (("langevin", "iteration"), ("mnist", "update"), ("train", "step")):
        folder = references[name][0]
        _, meta = load_checkpoint(folder)
        last = metrics(folder)[-1] if name != "mnist" else None
        if name == "mnist":  # updates=5 is not a multiple of checkpoint_every=2
            assert meta[key] == 5
        else:
            assert meta[key] == last["step"]
