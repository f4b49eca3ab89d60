"""The comparison's problem: on DDPM tasks the tuned chain is the sampler without its
deterministic last step, which the reward applies, so the base's samples and the path
KL are those of the full sampler; the base scores J = -E[r] with KL 0."""

from __future__ import annotations

import torch

from sampleopt.compare.problem import NoisyPrefix, Problem
from sampleopt.compare.tasks import TASKS


def test_the_prefix_and_its_last_step_are_the_full_sampler():
    problem = Problem(TASKS["bimodal"])
    assert problem.trimmed and isinstance(problem.reference, NoisyPrefix)
    full = problem.full_sampler(problem.base.denoiser)
    assert problem.reference.num_steps == full.num_steps - 1
    with torch.no_grad():
        x_full = full.sample(64, generator=torch.Generator().manual_seed(3))
        x_pre = problem.reference.sample(64, generator=torch.Generator().manual_seed(3))
        r_full = problem.raw_reward(x_full)
        r_pre = problem.reward(x_pre)
    assert torch.allclose(problem.reference.finish(x_pre), x_full, atol=1e-6)
    assert torch.allclose(r_pre, r_full, atol=1e-5)


def test_the_base_scores_zero_kl_and_the_same_draws_every_time():
    problem = Problem(TASKS["bimodal"])
    a = problem.evaluate(problem.reference, 64, seed=5)
    b = problem.evaluate(problem.reference, 64, seed=5)
    assert a == b and a["kl"] == 0.0
    assert a["objective"] == -a["reward"]


def test_a_tuned_copy_starts_at_the_base():
    problem = Problem(TASKS["bimodal"])
    chain = problem.tunable_chain()
    assert any(p.requires_grad for p in chain.parameters())
    assert problem.evaluate(chain, 32, seed=1) == problem.evaluate(problem.reference, 32, seed=1)
