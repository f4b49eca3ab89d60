"""Base models shipped with sampleopt, and the export that makes them.

Each base model is a pair of files in ``sampleopt/pretrained/``: ``NAME.safetensors``
(the EMA weights of a ``sampleopt train`` run) and ``NAME.json`` (the network's
config, the noise schedule, the data shape, the training config and the exact
command that produced it). Loading one is one call::

    base = sampleopt.load_base_model("mnist")
    x = base.sampler("ddim", num_steps=20).sample(64)
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from sampleopt.errors import UsageError
from sampleopt.rundir import atomic_write_text, load_checkpoint

PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "pretrained"


def available_base_models(folder: Path = PRETRAINED_DIR) -> list[str]:
    return sorted(
        p.stem for p in folder.glob("*.json") if json.loads(p.read_text()).get("kind") == "base"
    )


@dataclass
class BaseModel:
    """A pretrained denoiser with its schedule; :meth:`sampler` builds any sampler."""

    name: str
    denoiser: torch.nn.Module
    schedule: torch.nn.Module
    data_shape: tuple[int, ...]
    meta: dict

    def sampler(self, kind: str = "ddpm", num_steps: int = 50, **kwargs):
        from sampleopt.samplers import SAMPLERS

        if kind not in SAMPLERS:
            raise UsageError(f"unknown sampler {kind!r}; choose one of {', '.join(SAMPLERS)}")
        return SAMPLERS[kind](
            self.denoiser, self.schedule, num_steps, data_shape=self.data_shape, **kwargs
        )


def load_base_model(name: str, folder: Path = PRETRAINED_DIR) -> BaseModel:
    """Load a shipped base model by name (see :func:`available_base_models`)."""
    from sampleopt.diffusion.schedules import schedule_from_config
    from sampleopt.models.registry import load_state_checked, model_from_config

    weights, meta_path = folder / f"{name}.safetensors", folder / f"{name}.json"
    if not (weights.exists() and meta_path.exists()):
        have = ", ".join(available_base_models(folder)) or "none"
        raise UsageError(f"no base model {name!r} in {folder} (available: {have})")
    meta = json.loads(meta_path.read_text())
    model = model_from_config(meta["model_config"])
    load_state_checked(model, load_file(str(weights)), f"base model {name!r}")
    model.eval()
    schedule = schedule_from_config(meta["schedule"])
    return BaseModel(name, model, schedule, tuple(meta["data_shape"]), meta)


def export_base_model(
    run_dir: str | Path, name: str, folder: Path = PRETRAINED_DIR, command: str | None = None
) -> Path:
    """Write the EMA weights of a finished training run as base model ``name``."""
    tensors, meta = load_checkpoint(run_dir)
    if "model_config" not in meta:
        raise UsageError(f"{run_dir} is not a training run (its checkpoint has no model config)")
    ema = {k[len("ema.") :]: v.contiguous() for k, v in tensors.items() if k.startswith("ema.")}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.safetensors"
    tmp = path.with_name(path.name + ".tmp")
    save_file(ema, str(tmp))
    tmp.replace(path)
    cfg = meta["config"]
    info = {
        "kind": "base",
        "name": name,
        "dataset": cfg["dataset"],
        "data_shape": meta["data_shape"],
        "model_config": meta["model_config"],
        "schedule": meta["schedule"],
        "training_config": cfg,
        "trained_steps": meta["step"],
        "command": command
        or f"sampleopt train {cfg['dataset']} --seed {cfg['seed']} --set steps={meta['step']}",
        "exported_from": str(run_dir),
        "torch": torch.__version__,
        "machine": platform.platform(),
        "parameters": int(sum(v.numel() for v in ema.values())),
        "bytes": path.stat().st_size,
    }
    atomic_write_text(folder / f"{name}.json", json.dumps(info, indent=2) + "\n")
    return path
