"""Every compared method starts on a task, makes a step that counts its network
evaluations, and leaves a chain the problem can score; unknown names are refused."""

from __future__ import annotations

import math

import pytest

from sampleopt.compare.methods import METHODS, get_method, start
from sampleopt.compare.problem import Problem
from sampleopt.compare.tasks import TASKS
from sampleopt.errors import UsageError


@pytest.fixture(scope="module")
def problem():
    return Problem(TASKS["bimodal"])


@pytest.mark.parametrize("name", list(METHODS))
def test_each_method_steps_and_is_scored(problem, name):
    run = start(name, problem, seed=0)
    assert run.network_evals == 0
    run.step()
    assert run.network_evals > 0 and run.rounds == 1
    ev = problem.evaluate(run.chain(), 16, seed=2)
    assert all(math.isfinite(ev[k]) for k in ("objective", "reward", "kl"))
    assert ev["objective"] == pytest.approx(-ev["reward"] + problem.lam * ev["kl"])


def test_task_overrides_apply():
    assert get_method("adjoint").for_task("subspace").lr < get_method("adjoint").lr
    assert get_method("adjoint").for_task("mnist").batch_size == 8
    assert get_method("adjoint").for_task("hex") == get_method("adjoint")


def test_unknown_method_is_refused():
    with pytest.raises(UsageError, match="unknown method 'magic'"):
        get_method("magic")
