"""Low-rank adapters (LoRA, Hu et al. 2022) through peft, for fine-tuning a base model
with few trainable parameters.

:func:`add_lora` injects peft's LoRA layers into the named ``Linear`` / ``Conv2d``
modules of a denoiser in place and freezes everything else, so that
``[p for p in model.parameters() if p.requires_grad]`` (what every estimator trains by
default) are the adapters only. The adapters start at zero (peft's default
initialisation of B), so the model starts exactly at the base. Choose LoRA when the
fine-tuned model should stay small to store or when full fine-tuning overfits the
reward; choose full fine-tuning (the default) for the most reward per update.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

from sampleopt.errors import UsageError

_ADAPTABLE = (nn.Linear, nn.Conv2d)


def adaptable_modules(model: nn.Module) -> list[str]:
    """The names of the modules LoRA can adapt (Linear and Conv2d)."""
    return [n for n, m in model.named_modules() if isinstance(m, _ADAPTABLE)]


def _matches(name: str, target: str) -> bool:
    # peft's rule for a list of targets: the full name or a suffix after a dot
    return name == target or name.endswith("." + target) or re.fullmatch(target, name) is not None


def add_lora(
    model: nn.Module, targets: Sequence[str], rank: int = 4, alpha: float | None = None
) -> nn.Module:
    """Inject LoRA adapters of ``rank`` into the modules named by ``targets`` (full
    names, name suffixes such as ``"c1"``, or regular expressions), freeze the rest, and
    return ``model``. A target that names no Linear/Conv2d module is refused by name."""
    from peft import LoraConfig, inject_adapter_in_model

    if isinstance(rank, bool) or not (isinstance(rank, int) and rank >= 1):
        raise UsageError(f"LoRA rank must be an integer >= 1, got {rank!r}")
    targets = [targets] if isinstance(targets, str) else list(targets)
    if not targets:
        raise UsageError("LoRA needs at least one target module")
    names = adaptable_modules(model)
    for t in targets:
        if not isinstance(t, str):
            raise UsageError(f"LoRA targets are module names, got {t!r}")
        try:
            re.compile(t)
        except re.error as exc:
            raise UsageError(f"LoRA target {t!r} is not a valid pattern ({exc})") from None
        if not any(_matches(n, t) for n in names):
            shown = ", ".join(names[:12]) + (" ..." if len(names) > 12 else "")
            raise UsageError(
                f"LoRA target {t!r} matches no Linear or Conv2d module of "
                f"{type(model).__name__}; its adaptable modules are: {shown}"
            )
    cfg = LoraConfig(
        r=rank,
        lora_alpha=rank if alpha is None else alpha,
        target_modules=targets,
        lora_dropout=0.0,
    )
    inject_adapter_in_model(cfg, model)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    return model
