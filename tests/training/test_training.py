"""Base-model training: DSM reduces the loss, checkpoints load bit-identically,
NaN stops training with the last checkpoint intact, and an interrupted run resumes
to exactly the uninterrupted result."""

from __future__ import annotations

import json

import pytest
import torch

from sampleopt.cli import main
from sampleopt.errors import NonFiniteError, UsageError
from sampleopt.models import load_state_checked, model_from_config
from sampleopt.rundir import RunDir, load_checkpoint
from sampleopt.training import DSMTrainer, TrainConfig

SMALL = [
    "--set",
    "steps=60",
    "--set",
    "width=16",
    "--set",
    "batch_size=32",
    "--set",
    "checkpoint_every=20",
    "--set",
    "log_every=10",
    "--set",
    "sample_every=60",
    "--set",
    "sample_steps=5",
    "--no-progress",
]


def test_dsm_training_lowers_the_loss(tmp_path):
    cfg = TrainConfig(dataset="bimodal-1d", steps=300, width=32, batch_size=128, lr=3e-3)
    trainer = DSMTrainer(cfg, RunDir(tmp_path / "r"))
    torch.manual_seed(1)
    first = sum(trainer.train_step() for _ in range(20)) / 20
    for _ in range(260):
        trainer.train_step()
    last = sum(trainer.train_step() for _ in range(20)) / 20
    assert last < 0.8 * first, (first, last)


def test_checkpoint_save_then_load_is_bit_identical(tmp_path):
    assert main(["train", "hex", "--out", str(tmp_path / "r"), *SMALL]) == 0
    tensors, meta = load_checkpoint(tmp_path / "r")
    model = model_from_config(meta["model_config"])
    load_state_checked(model, {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}, "x")
    for k, v in model.state_dict().items():
        assert torch.equal(v, tensors[f"ema.{k}"]), k
    x, t = torch.randn(8, 2), torch.randint(1, 1000, (8,))
    again = model_from_config(meta["model_config"])
    load_state_checked(again, {k: v.clone() for k, v in model.state_dict().items()}, "x")
    assert torch.equal(model(x, t), again(x, t))


def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(["train", "hex", "--out", str(full), *SMALL]) == 0
    original = DSMTrainer.train_step

    def interrupted(self):
        if self.step == 45:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(DSMTrainer, "train_step", interrupted)
    assert main(["train", "hex", "--out", str(cut), *SMALL]) == 130
    assert load_checkpoint(cut)[1]["step"] == 40
    monkeypatch.setattr(DSMTrainer, "train_step", original)
    assert main(["resume", str(cut), "--no-progress"]) == 0
    a, _ = load_checkpoint(full)
    b, _ = load_checkpoint(cut)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows = lambda p: [json.loads(s) for s in (p / "metrics.jsonl").read_text().splitlines()]  # noqa: E731
    assert rows(full) == rows(cut)
    assert main(["resume", str(cut)]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_nan_loss_stops_with_the_last_checkpoint_intact(tmp_path, monkeypatch, capsys):
    original = DSMTrainer.loss

    def poisoned(self, x0):
        loss = original(self, x0)
        return loss * float("nan") if self.step == 33 else loss

    monkeypatch.setattr(DSMTrainer, "loss", poisoned)
    out = tmp_path / "r"
    assert main(["train", "hex", "--out", str(out), *SMALL]) == 1
    err = capsys.readouterr().err
    assert "training loss is nan at step 34" in err and len(err.strip().splitlines()) == 1
    tensors, meta = load_checkpoint(out)
    assert meta["step"] == 20 and int(tensors["step"]) == 20
    assert all(bool(torch.isfinite(v.float()).all()) for v in tensors.values())


def test_checkpoint_of_another_model_names_the_mismatch(tmp_path):
    assert main(["train", "hex", "--out", str(tmp_path / "r"), *SMALL]) == 0
    tensors, _ = load_checkpoint(tmp_path / "r")
    wide = TrainConfig(dataset="hex", width=32)
    trainer = DSMTrainer(wide, RunDir(tmp_path / "w"))
    with pytest.raises(UsageError, match=r"does not match the model: shape mismatch .*\(16,"):
        trainer.load_state_tensors(tensors, "checkpoint")
    other = TrainConfig(dataset="bimodal-1d", width=16)
    with pytest.raises(UsageError, match="does not match the model"):
        DSMTrainer(other, RunDir(tmp_path / "o")).load_state_tensors(tensors, "checkpoint")


def test_data_of_the_wrong_shape_is_refused(tmp_path):
    trainer = DSMTrainer(TrainConfig(dataset="hex", width=16), RunDir(tmp_path / "r"))
    with pytest.raises(UsageError, match=r"data for 'hex' must have shape \(n, 2\), got \(4, 3\)"):
        trainer.loss(torch.zeros(4, 3))


def test_bad_training_config(tmp_path, capsys):
    assert main(["train", "nope", "--out", str(tmp_path / "a")]) == 2
    assert "unknown training preset 'nope'" in capsys.readouterr().err
    assert main(["train", "hex", "--set", "model=unet", "--out", str(tmp_path / "b")]) == 2
    assert "needs model=mlp" in capsys.readouterr().err
    assert main(["train", "hex", "--set", "dataset=cifar", "--out", str(tmp_path / "c")]) == 2
    assert "must be one of" in capsys.readouterr().err


def test_non_finite_error_type():
    assert issubclass(NonFiniteError, FloatingPointError)


def test_export_then_load_gives_the_ema_weights(tmp_path):
    from sampleopt.models.pretrained import available_base_models, load_base_model

    assert main(["train", "hex", "--out", str(tmp_path / "r"), *SMALL]) == 0
    assert main(["export", str(tmp_path / "r"), "tiny", "--to", str(tmp_path / "ship")]) == 0
    assert available_base_models(tmp_path / "ship") == ["tiny"]
    base = load_base_model("tiny", tmp_path / "ship")
    tensors, _ = load_checkpoint(tmp_path / "r")
    for k, v in base.denoiser.state_dict().items():
        assert torch.equal(v, tensors[f"ema.{k}"]), k
    meta = json.loads((tmp_path / "ship" / "tiny.json").read_text())
    assert meta["command"] == "sampleopt train hex --seed 0 --set steps=60"
    assert main(["export", str(tmp_path / "missing"), "x", "--to", str(tmp_path / "s2")]) == 2


def test_evaluate_writes_its_summary(tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["evaluate", "hex", "--n", "200", "--steps", "20", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == 200 and summary["sliced_wasserstein"] > 0
    assert (out / "samples.png").exists()
    assert main(["evaluate", "hex", "--n", "1"]) == 2
    assert "--n must be >= 2" in capsys.readouterr().err
    assert main(["evaluate", "cifar"]) == 2
