"""Networks by name: rebuild a saved network from its config, load weights checked."""

from __future__ import annotations

import torch

from sampleopt.errors import UsageError
from sampleopt.models.mlp import TimeMLP
from sampleopt.models.unet import SmallUNet

MODELS = {"mlp": TimeMLP, "unet": SmallUNet}


def model_from_config(config: dict):
    """Rebuild a network from the ``model_config`` saved beside its weights."""
    kind = config.get("kind")
    args = {k: v for k, v in config.items() if k != "kind"}
    if kind == "mlp":
        return TimeMLP(**args)
    if kind == "unet":
        args["mults"] = tuple(args.get("mults", (1, 2, 2)))
        return SmallUNet(**args)
    raise UsageError(f"unknown model kind {kind!r} in a saved model config")


def load_state_checked(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str):
    """``load_state_dict`` that names every mismatch in one UsageError."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in sorted(set(own) & set(state))
        if state[k].shape != own[k].shape
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append("missing " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append(
                "unexpected " + ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else "")
            )
        if shapes:
            parts.append("shape mismatch " + "; ".join(shapes[:5]))
        raise UsageError(f"{what} does not match the model: " + "; ".join(parts))
    module.load_state_dict(state)
