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

TESTS = str(Path(__file__).parent)


def _tuner(method: str, accumulate: int):
    import sampleopt as so
    from sampleopt.training.finetune import FineTuner
    from test_finite_time import neural, reward

    torch.set_num_threads(1)
    return FineTuner(
        neural(),
        so.Objective(reward),
        method=method,
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
    monkeypatch.setenv("PYTHONPATH", TESTS + os.pathsep + os.environ.get("PYTHONPATH", ""))
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
