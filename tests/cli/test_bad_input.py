"""Bad input: one clear message naming the problem, exit code 2 for usage errors,
and nothing already computed is lost."""

from __future__ import annotations

import json
import math

import pytest
import torch

import sampleopt as so
from sampleopt.cli import main
from sampleopt.errors import NonFiniteError, UsageError
from sampleopt.rundir import load_checkpoint

FAST = ["--set", "compare=false", "--set", "lam_sweep=", "--no-progress"]


def cli_error(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["run", "no-such-experiment"], "unknown experiment 'no-such-experiment'"),
        (["run", "langevin-hex", "--set", "etta=0.1"], "unknown config key 'etta'"),
        (["run", "langevin-hex", "--set", "eta=fast"], "config key 'eta' expects a number"),
        (["run", "langevin-hex", "--set", "iterations=1.5"], "'iterations' expects an integer"),
        (["run", "langevin-hex", "--set", "compare=maybe"], "'compare' expects true or false"),
        (["run", "langevin-hex", "--set", "reward=soft"], "'reward' must be one of hard, smooth"),
        (["run", "langevin-hex", "--set", "eta=-1"], "'eta' must be >= 0"),
        (["run", "langevin-hex", "--set", "eta=nan"], "'eta' expects a finite number"),
        (["run", "langevin-hex", "--set", "gamma=0"], "'gamma' must be > 0"),
        (["run", "langevin-hex", "--set", "lam_sweep=0.1,x"], "comma-separated numbers"),
        (["run", "langevin-hex", "--set", "noequals"], "--set expects key=value"),
    ],
)
def test_usage_errors_exit_2_with_one_line(argv, needle, capsys, tmp_path):
    code, err = cli_error([*argv, "--out", str(tmp_path / "r")], capsys)
    assert code == 2
    assert needle in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()  # nothing was started


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = cli_error(["run", "langevin-hex", "--out", str(blocker / "sub"), *FAST], capsys)
    assert code == 2 and "cannot write to output folder" in err and len(err.splitlines()) == 1


def test_non_empty_output_folder_is_refused(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("earlier run")
    code, err = cli_error(["run", "langevin-hex", "--out", str(tmp_path), *FAST], capsys)
    assert code == 2 and "not empty" in err
    assert (tmp_path / "old.txt").read_text() == "earlier run"


def test_nan_reward_in_cli_run_keeps_metrics_and_last_checkpoint(tmp_path, capsys, monkeypatch):
    """A reward that turns NaN at iteration 350: exit 1, one line naming the rewards and
    the step, metrics up to step 349 flushed, the checkpoint at step 300 intact."""
    calls = {"n": 0}
    original = so.HexReward.forward

    def flaky(self, x):
        calls["n"] += 1
        r = original(self, x)
        return r * math.nan if calls["n"] >= 350 else r

    monkeypatch.setattr(so.HexReward, "forward", flaky)
    out = tmp_path / "r"
    argv = [
        "run",
        "langevin-hex",
        "--out",
        str(out),
        "--set",
        "checkpoint_every=100",
        "--set",
        "log_every=50",
        *FAST,
    ]
    code, err = cli_error(argv, capsys)
    assert code == 1
    assert "the rewards contain NaN or inf at step 350" in err and len(err.splitlines()) == 1
    rows = [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 350))
    tensors, meta = load_checkpoint(out)
    assert meta["iteration"] == 300
    assert all(bool(torch.isfinite(t.float()).all()) for t in tensors.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "step 350" in summary["error"]


def _hex_alg(reward, potential=None, **kw):
    potential = potential or so.GaussianMixturePotential(so.hex_centres(), torch.zeros(6))
    sampler = so.LangevinSampler(potential, 0.2)
    gen = torch.Generator().manual_seed(0)
    return so.ImplicitDiffusion(sampler, so.Objective(reward), n_particles=64, generator=gen, **kw)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_reward_rolls_back_block(bad):
    calls = {"n": 0}

    def reward(x):
        calls["n"] += 1
        r = x[:, 0]
        return r * bad if calls["n"] == 130 else r

    alg = _hex_alg(reward)
    seen, start = [], {}

    def callback(h, a):
        seen.append(h.step.tolist())
        if not start:  # the end of the first block: the start of the one that fails
            start["params"] = [p.detach().clone() for p in a.params]
            start["particles"] = a.particles.clone()
            start["generator"] = a.generator.get_state()

    with pytest.raises(NonFiniteError, match="the rewards contain NaN or inf at step 130"):
        alg.run(300, block=100, callback=callback)
    assert seen[0] == list(range(1, 101)) and seen[1] == list(range(101, 130))
    assert alg.iteration == 100  # state rolled back to the last good block
    assert bool(torch.isfinite(alg.particles).all())
    assert bool(torch.isfinite(alg.sampler.potential.logits).all())
    # parameters, particles and the generator's state are those at the block's start
    assert all(torch.equal(a, p) for a, p in zip(start["params"], alg.params, strict=True))
    assert torch.equal(alg.particles, start["particles"])
    assert torch.equal(alg.generator.get_state(), start["generator"])


@pytest.mark.parametrize("order", ["parallel", "sequential"])
def test_non_finite_reward_rolls_back_the_generator_too(order):
    """After a NaN in the second block, parameters, particles and the torch.Generator's
    state equal those at the start of that block, so a rerun of the block draws the same
    noise as the first attempt did."""
    calls = {"n": 0}

    def reward(x):
        calls["n"] += 1
        r = x[:, 0]
        return r * math.nan if calls["n"] == 130 else r

    alg = _hex_alg(reward, order=order)
    alg.run(100, block=100)
    params = [p.detach().clone() for p in alg.params]
    particles = alg.particles.clone()
    gen_state = alg.generator.get_state()
    with pytest.raises(NonFiniteError, match="the rewards contain NaN or inf at step 130"):
        alg.run(100, block=100)
    assert alg.iteration == 100
    assert all(torch.equal(a, p) for a, p in zip(params, alg.params, strict=True))
    assert torch.equal(alg.particles, particles)
    assert torch.equal(alg.generator.get_state(), gen_state)
    # the retried block (the reward now finite) is the one an unbroken run makes
    again = alg.run(100, block=100)
    twin = _hex_alg(lambda x: x[:, 0], order=order)
    straight = twin.run(200, block=100)
    torch.testing.assert_close(again.theta, straight.theta[100:], rtol=0, atol=0)
    assert torch.equal(alg.particles, twin.particles)


@pytest.mark.parametrize("order", ["parallel", "sequential"])
def test_non_finite_gradient_is_named(order):
    class BadGrad(so.GaussianMixturePotential):
        calls = 0

        def _poison(self, g):
            BadGrad.calls += 1
            return [v * math.nan for v in g] if BadGrad.calls == 42 else g

        def param_vjp(self, x, weights):
            return self._poison(super().param_vjp(x, weights))

        def grad_x_and_param_vjp(self, x, weights):
            gx, g = super().grad_x_and_param_vjp(x, weights)
            return gx, self._poison(g)

    alg = _hex_alg(lambda x: x[:, 0], BadGrad(so.hex_centres(), torch.zeros(6)), order=order)
    with pytest.raises(NonFiniteError, match=r"gradient estimate \(parameters\) contain NaN"):
        alg.run(100, block=50)
    assert alg.iteration == 0 and bool(torch.isfinite(alg.sampler.potential.logits).all())


def test_potential_of_wrong_shape():
    pot = so.FunctionPotential(
        lambda x, th: ((x - th) ** 2).sum(1, keepdim=True), torch.zeros(2), dim=2
    )
    with pytest.raises(UsageError, match=r"must return shape \(5,\).*got \(5, 1\)"):
        pot(torch.zeros(5, 2))
    sampler = so.LangevinSampler(pot, 0.1)
    with pytest.raises(UsageError, match="must return shape"):
        sampler.sample(5)


def test_input_of_wrong_dimension():
    pot = so.QuadraticPotential(torch.zeros(2), torch.eye(2))
    with pytest.raises(UsageError, match=r"expects x of shape \(n, 2\), got \(5, 3\)"):
        pot(torch.zeros(5, 3))


def test_reward_of_wrong_shape():
    alg = _hex_alg(lambda x: x)
    with pytest.raises(UsageError, match=r"the reward must return shape \(64,\)"):
        alg.run(1)


def test_reward_that_is_not_a_tensor():
    alg = _hex_alg(lambda x: x[:, 0].tolist())
    with pytest.raises(UsageError, match="must return a torch.Tensor"):
        alg.run(1)


def test_unrolled_needs_a_differentiable_reward():
    pot = so.QuadraticPotential(torch.zeros(2), torch.eye(2))
    sampler = so.LangevinSampler(pot, 0.1, num_steps=3)
    objective = so.Objective(lambda x: (x[:, 0] > 0).float())
    with pytest.raises(UsageError, match="returned no gradient.*covariance estimator"):
        so.UnrolledEstimator().loss(sampler, objective, n=8)


def _gibbs_kl(direction):
    return so.GibbsKL(so.QuadraticPotential(torch.zeros(2), torch.eye(2)), direction)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (lambda: {"lam": -0.5}, "lam must be a finite number >= 0"),
        (lambda: {"lam": math.nan}, "lam must be a finite number >= 0"),
        (
            lambda: {"lam": 1.0, "divergence": _gibbs_kl("sideways")},
            "unknown KL direction 'sideways'",
        ),
        (lambda: {"lam": 1.0}, "lam > 0 needs a divergence"),
    ],
)
def test_bad_objective(kwargs, needle):
    with pytest.raises(UsageError, match=needle):
        so.Objective(lambda x: x[:, 0], **kwargs())


def test_bad_sampler_and_algorithm_arguments():
    pot = so.QuadraticPotential(torch.zeros(2), torch.eye(2))
    with pytest.raises(UsageError, match="gamma must be a positive number"):
        so.LangevinSampler(pot, -0.1)
    with pytest.raises(UsageError, match="needs a sampleopt Potential"):
        so.LangevinSampler(lambda x: x, 0.1)
    with pytest.raises(UsageError, match="unknown step-size schedule"):
        so.StepSize(0.1, "cosine")
    with pytest.raises(UsageError, match="n_particles must be >= 2"):
        so.ImplicitDiffusion(
            so.LangevinSampler(pot, 0.1), so.Objective(lambda x: x[:, 0]), n_particles=1
        )
    frozen = so.QuadraticPotential(torch.zeros(2), torch.eye(2)).requires_grad_(False)
    with pytest.raises(UsageError, match="no trainable parameters"):
        so.ImplicitDiffusion(so.LangevinSampler(frozen, 0.1), so.Objective(lambda x: x[:, 0]))


def test_reverse_kl_without_reference_samples():
    pot = so.QuadraticPotential(torch.zeros(2), torch.eye(2))
    obj = so.Objective(lambda x: x[:, 0], lam=1.0, divergence=so.GibbsKL(pot, "reverse"))
    with pytest.raises(UsageError, match="reverse KL term needs samples of the reference"):
        so.CovarianceEstimator().gradient(pot, obj, torch.randn(10, 2))
