"""The fine-tuning loops (the nested FineTuner with each estimator, and the queue of
finite-time Implicit Diffusion): every method updates, resume is bit-identical, bad
input is refused with nothing lost; the image rewards."""

from __future__ import annotations

import copy

import pytest
import torch

import sampleopt as so
from sampleopt import FineTuner, QueuedImplicitDiffusion
from sampleopt.errors import NonFiniteError, UsageError
from sampleopt.objectives import Brightness, DigitProbability, PathKL
from tests.algorithms.test_finite_time import neural, reward

# "implicit": the queue (QueuedImplicitDiffusion); the others: FineTuner with that estimator
METHODS = ("implicit", "adjoint", "unrolled", "truncated", "score-function")


def make_tuner(method, sampler, objective, **kw):
    """The fine-tuning defaults of both loops (Adam, lr 1e-4, 16 samples), as the old
    FineTuner(method=...) had them."""
    kw = {"batch_size": 16, "lr": 1e-4, **kw}
    if method == "implicit":
        return QueuedImplicitDiffusion(sampler, objective, optimizer="adam", **kw)
    return FineTuner(sampler, objective, so.make_estimator(method), **kw)


def tuner(method, sampler=None, lam=0.0, **kw):
    sampler = sampler or neural()
    obj = so.Objective(reward, lam=lam, divergence=PathKL(sampler) if lam else None)
    return make_tuner(method, sampler, obj, batch_size=4, lr=1e-2, **kw)


def update(ft) -> dict:
    """One theta update (the queue iterates until its next finished batch); its row."""
    (row,) = ft.run(1).rows()
    return row


@pytest.mark.parametrize("method", METHODS)
def test_every_method_updates_and_counts_its_network_evaluations(method):
    ft = tuner(method, lam=0.3)
    before = [p.detach().clone() for p in ft.params]
    recs = [update(ft) for _ in range(2)]
    assert [r["step"] for r in recs] == [1, 2]
    assert any(not torch.equal(a, p) for a, p in zip(before, ft.params, strict=True))
    K, n = ft.sampler.num_steps, ft.n
    per_update = {"unrolled": 1, "truncated": 1}.get(method, 2) * K * n
    if method == "implicit":  # the queue's fill-up steps count too
        assert recs[-1]["network_evals"] == n * sum(range(1, K + 1)) + n * K + 2 * K * n
    else:
        assert recs[-1]["network_evals"] == 2 * per_update


@pytest.mark.parametrize("method", ["implicit", "adjoint", "score-function"])
def test_resume_from_state_tensors_is_bit_identical(method):
    straight = tuner(method, lam=0.3)
    for _ in range(5):
        update(straight)
    first = tuner(method, lam=0.3)
    for _ in range(2):
        update(first)
    saved = {k: v.clone() for k, v in first.state_tensors().items()}
    resumed = tuner(method, lam=0.3)  # a fresh process: same model and settings
    resumed.load_state_tensors(saved)
    for _ in range(3):
        update(resumed)
    for a, b in zip(straight.params, resumed.params, strict=True):
        assert torch.equal(a, b)
    assert straight.network_evals == resumed.network_evals


def test_a_checkpoint_of_a_different_model_is_refused():
    saved = tuner("adjoint").state_tensors()
    sampler = neural()
    partial = FineTuner(
        sampler, so.Objective(reward), so.AdjointEstimator(), params=[next(sampler.parameters())]
    )
    with pytest.raises(
        UsageError, match=r"the checkpoint holds \d+ parameter tensors, this model 1"
    ):
        partial.load_state_tensors(saved)
    torch.manual_seed(0)
    other = so.ReverseSDESampler(
        so.models.TimeMLP(2, 100, hidden=8, depth=2).double(),
        so.diffusion.CosineSchedule(100).double(),
        4,
        data_shape=(2,),
    )
    with pytest.raises(UsageError, match="a checkpoint of a different model"):
        tuner("adjoint", sampler=other).load_state_tensors(saved)


@pytest.mark.parametrize("method", ["implicit", "adjoint"])
def test_a_nan_reward_stops_before_any_update(method):
    sampler = neural()
    obj = so.Objective(lambda x: reward(x) * float("nan"))
    ft = make_tuner(method, sampler, obj, batch_size=4)
    before = [p.detach().clone() for p in ft.params]
    with pytest.raises(NonFiniteError, match="the reward contains NaN"):
        update(ft)
    assert all(torch.equal(a, p) for a, p in zip(before, ft.params, strict=True))
    assert ft.updates == 0


def test_bad_settings():
    obj = so.Objective(reward)
    adjoint = so.AdjointEstimator()
    with pytest.raises(UsageError, match="unknown estimator 'ddpo'; choose one of adjoint"):
        so.make_estimator("ddpo")
    with pytest.raises(UsageError, match="estimator must be a sampleopt estimator object"):
        FineTuner(neural(), obj, "adjoint")
    with pytest.raises(UsageError, match="batch_size must be an integer >= 1"):
        FineTuner(neural(), obj, adjoint, batch_size=0)
    with pytest.raises(UsageError, match="step size eta must be a finite number >= 0"):
        FineTuner(neural(), obj, adjoint, lr=-1e-3)
    # the queue makes one update per finished batch: it has no accumulate setting at all
    with pytest.raises(TypeError, match="accumulate"):
        QueuedImplicitDiffusion(neural(), obj, batch_size=4, accumulate=2)
    with pytest.raises(UsageError, match="lam must be a finite number >= 0"):
        so.Objective(reward, lam=-1.0)


def test_image_rewards():
    x = torch.full((3, 1, 28, 28), -1.0)
    x[1] = 1.0
    x[2] = 5.0  # outside the displayable range: clamped, no extra reward
    torch.testing.assert_close(Brightness()(x), torch.tensor([0.0, 1.0, 1.0]))
    from sampleopt.data import mnist  # not imported by `import sampleopt`

    images, labels = mnist("test")
    for d in (0, 7):
        r = DigitProbability(d)(images[:200])
        assert r.shape == (200,) and bool(((r >= 0) & (r <= 1)).all())
        # the classifier is right on real digits: high probability where the label is d
        assert r[labels[:200] == d].mean() > 0.9 > r[labels[:200] != d].mean()
    with pytest.raises(UsageError, match="digit must be an integer in 0 .. 9"):
        DigitProbability(10)
    with pytest.raises(UsageError, match=r"expects MNIST images \(n, 1, 28, 28\)"):
        DigitProbability(3)(torch.zeros(2, 784))


def test_lora_trains_only_the_adapters_from_the_base():
    from sampleopt.training.lora import adaptable_modules, add_lora

    sampler = neural()
    base = copy.deepcopy(sampler)
    names = adaptable_modules(sampler.denoiser)
    add_lora(sampler.denoiser, [names[1], names[2]], rank=2)
    x = torch.randn(5, 2, dtype=torch.float64)
    torch.testing.assert_close(sampler.mean(x, 1), base.mean(x, 1))  # starts at the base
    trainable = [n for n, p in sampler.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    frozen = {n: p.detach().clone() for n, p in sampler.named_parameters() if not p.requires_grad}
    ft = FineTuner(sampler, so.Objective(reward), so.AdjointEstimator(), batch_size=4, lr=1e-2)
    for _ in range(3):
        ft.step()
    for n, p in sampler.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    assert not torch.allclose(sampler.mean(x, 1), base.mean(x, 1))


def test_a_lora_target_that_does_not_exist_is_refused():
    from sampleopt.training.lora import add_lora

    sampler = neural()
    before = [p.detach().clone() for p in sampler.parameters()]
    with pytest.raises(UsageError, match="LoRA target 'attn' matches no Linear or Conv2d module"):
        add_lora(sampler.denoiser, ["attn"], rank=2)
    with pytest.raises(UsageError, match="LoRA rank must be an integer >= 1"):
        add_lora(sampler.denoiser, ["net.0"], rank=0)
    assert all(torch.equal(a, p) for a, p in zip(before, sampler.parameters(), strict=True))


MNIST_ARGS = [
    "--set", "steps=2", "--set", "updates=6", "--set", "checkpoint_every=2",
    "--set", "batch_size=2", "--set", "eval_n=4", "--set", "lam=0.5", "--no-progress",
]  # fmt: skip


def test_an_interrupted_mnist_run_resumes_bit_identical(tmp_path, monkeypatch, capsys):
    from sampleopt.cli import main
    from sampleopt.rundir import load_checkpoint

    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["run", "mnist-brightness", "--out", str(full), *MNIST_ARGS]) == 0
    calls = {"n": 0}
    original = Brightness.forward

    def interrupt(self, x):
        calls["n"] += 1
        if calls["n"] == 6:  # base evaluation, then during the main run's 5th update
            raise KeyboardInterrupt
        return original(self, x)

    monkeypatch.setattr(Brightness, "forward", interrupt)
    assert main(["run", "mnist-brightness", "--out", str(cut), *MNIST_ARGS]) == 130
    assert "sampleopt resume" in capsys.readouterr().err
    assert load_checkpoint(cut)[1]["update"] == 4
    monkeypatch.setattr(Brightness, "forward", original)
    assert main(["resume", str(cut), "--no-progress"]) == 0
    a, b = load_checkpoint(full)[0], load_checkpoint(cut)[0]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    import json

    sa = json.loads((full / "summary.json").read_text())
    sb = json.loads((cut / "summary.json").read_text())
    assert sa["tuned"] == sb["tuned"]
    steps = [json.loads(r)["step"] for r in (cut / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_an_interrupted_mnist_run_with_evaluations_resumes(tmp_path, monkeypatch):
    """As above, with evaluation rows in metrics.jsonl (eval_every=2) before the cut."""
    import json

    from sampleopt.cli import main
    from sampleopt.rundir import load_checkpoint

    args = [*MNIST_ARGS, "--set", "eval_every=2"]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["run", "mnist-brightness", "--out", str(full), *args]) == 0
    calls = {"n": 0}
    original = Brightness.forward

    def interrupt(self, x):
        calls["n"] += 1
        if calls["n"] == 9:  # base, updates 1-2, eval, 3-4, eval (checkpoint at 4), 5, 6
            raise KeyboardInterrupt
        return original(self, x)

    monkeypatch.setattr(Brightness, "forward", interrupt)
    assert main(["run", "mnist-brightness", "--out", str(cut), *args]) == 130
    assert load_checkpoint(cut)[1]["update"] == 4
    monkeypatch.setattr(Brightness, "forward", original)
    assert main(["resume", str(cut), "--no-progress"]) == 0
    a, b = load_checkpoint(full)[0], load_checkpoint(cut)[0]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = [json.loads(r) for r in (cut / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["run"] == "main"] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in rows if r["run"] == "eval"] == [2, 4, 6]  # trimmed, redone


def test_finetune_command(tmp_path, capsys):
    from sampleopt.cli import main

    out = tmp_path / "ft"
    assert main(["finetune", "brightness", "--out", str(out), *MNIST_ARGS]) == 0
    assert (out / "report.md").is_file() and (out / "samples_tuned.png").is_file()
    assert main(["finetune", "redness", "--out", str(tmp_path / "x")]) == 2
    assert "unknown reward 'redness'; choose brightness or digit" in capsys.readouterr().err
    assert main(["finetune", "digit", "--set", "lam=-1", "--out", str(tmp_path / "y")]) == 2
    assert "config key 'lam' must be >= 0" in capsys.readouterr().err
    assert main(["finetune", "digit", "--set", "lora_targets=attn", "--set", "lora_rank=2",
                 "--out", str(tmp_path / "z"), *MNIST_ARGS]) == 2  # fmt: skip
    assert "LoRA target 'attn' matches no Linear or Conv2d module" in capsys.readouterr().err


@pytest.mark.parametrize(
    "settings, needle",
    [
        (
            ["algorithm=queue", "estimator=unrolled"],
            "config key 'estimator' = 'unrolled' does not apply to algorithm=queue",
        ),
        (["algorithm=queue", "accumulate=2"], "config key 'accumulate' applies to the nested"),
        (["method=adjoint"], "unknown config key 'method'"),
    ],
)
def test_settings_the_queue_cannot_use_are_refused(settings, needle, tmp_path, capsys):
    """The queue takes adjoint gradients along its stored paths, one update per finished
    batch: another estimator or accumulate > 1 is a usage error before anything runs."""
    from sampleopt.cli import main

    out = tmp_path / "r"
    argv = ["run", "mnist-brightness", "--out", str(out), "--no-progress"]
    for kv in settings:
        argv += ["--set", kv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not out.exists()  # nothing was started


@pytest.mark.parametrize("method", ["implicit", "adjoint", "score-function"])
def test_a_reward_of_the_wrong_shape_stops_before_any_update(method):
    ft = make_tuner(method, neural(), so.Objective(lambda x: x), batch_size=4)
    before = [p.detach().clone() for p in ft.params]
    with pytest.raises(UsageError, match=r"the reward.* must return shape \(4,\)"):
        update(ft)
    assert all(torch.equal(a, p) for a, p in zip(before, ft.params, strict=True))
