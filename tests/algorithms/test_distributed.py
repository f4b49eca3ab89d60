"""Two processes (gloo, CPU) compute the same update as one process at the same global
batch: the gradients are averaged with an all-reduce, as DDP does."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = str(Path(__file__).resolve().parents[2])  # where `tests` is importable from


def _tuner(method: str, accumulate: int):
    import sampleopt as so
    from tests.algorithms.test_finite_time import neural, reward

    torch.set_num_threads(1)
    return so.FineTuner(
        neural(),
        so.Objective(reward),
        so.make_estimator(method),
        batch_size=4,
        lr=1e-2,
        accumulate=accumulate,
        seed=5,
    )


def _worker(rank: int, world: int, port: int, out: str, method: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        ft = _tuner(method, 1)
        for _ in range(2):
            ft.step()
        torch.save(
            {
                "grads": [p.grad.clone() for p in ft.params],
                "params": [p.detach() for p in ft.params],
            },
            f"{out}.{rank}",
        )
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("method", ["adjoint", "score-function"])
def test_two_gloo_processes_equal_one_process_at_the_same_global_batch(
    method, tmp_path, monkeypatch
):
    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = str(tmp_path / "result")
    mp.spawn(_worker, args=(2, _free_port(), out, method), nprocs=2, join=True)
    one = _tuner(method, accumulate=2)  # the same 2 micro-batches in one process
    for _ in range(2):
        one.step()
    for rank in range(2):
        got = torch.load(f"{out}.{rank}")
        for g, p in zip(got["grads"], one.params, strict=True):
            torch.testing.assert_close(g, p.grad, rtol=1e-10, atol=1e-12)
        for a, p in zip(got["params"], one.params, strict=True):
            torch.testing.assert_close(a, p.detach(), rtol=1e-10, atol=1e-12)


SCRIPT = """
import sys, torch
sys.path.insert(0, {repo!r})
from accelerate import PartialState
PartialState()  # what `accelerate launch` sets up: the process group
from tests.algorithms.test_distributed import _tuner
ft = _tuner("adjoint", 1)
for _ in range(2):
    ft.step()
torch.save([p.grad for p in ft.params], {out!r} + "." + str(ft.update.rank))
"""


def test_under_accelerate_launch_two_processes_equal_one(tmp_path):
    import subprocess
    import sys

    script, out = tmp_path / "job.py", str(tmp_path / "grads")
    script.write_text(SCRIPT.format(repo=REPO, out=out))
    launcher = Path(sys.executable).with_name("accelerate")
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one = _tuner("adjoint", accumulate=2)
    for _ in range(2):
        one.step()
    for rank in range(2):
        for g, p in zip(torch.load(f"{out}.{rank}"), one.params, strict=True):
            torch.testing.assert_close(g, p.grad, rtol=1e-10, atol=1e-12)


def test_an_experiment_under_accelerate_launch_equals_one_process(tmp_path):
    """`accelerate launch -m sampleopt.cli run mnist-brightness` with 2 processes (rank 0
    writes the run folder) ends with the parameters of 1 process at accumulate=2."""
    import subprocess
    import sys

    from sampleopt.cli import main
    from sampleopt.rundir import load_checkpoint

    args = ["run", "mnist-brightness", "--no-progress"]
    for kv in ("algorithm=nested", "estimator=adjoint", "steps=2", "updates=3",
               "batch_size=2", "eval_n=4", "eval_every=0", "checkpoint_every=3"):  # fmt: skip
        args += ["--set", kv]
    launcher = Path(sys.executable).with_name("accelerate")
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "-m", "sampleopt.cli"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    import glob
    import tempfile

    scratch = os.path.join(tempfile.gettempdir(), "sampleopt-rank*")
    before = set(glob.glob(scratch))
    two, one = tmp_path / "two", tmp_path / "one"
    proc = subprocess.run(
        cmd + args + ["--out", str(two)], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("report:") == 1  # one run folder, written by rank 0
    assert set(glob.glob(scratch)) == before  # rank 1's scratch folder is removed
    assert main(args + ["--set", "accumulate=2", "--out", str(one)]) == 0
    a, b = load_checkpoint(two)[0], load_checkpoint(one)[0]
    for k in a:
        if k.startswith("param."):
            torch.testing.assert_close(a[k], b[k], rtol=1e-6, atol=1e-7)
