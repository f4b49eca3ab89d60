"""Typed experiment configs: dataclasses overridable with ``key=value`` strings.

The one validation layer of every config, before any work starts. Each field may carry
``metadata={"help": ..., "choices": (...), "min": ..., "max": ...}``. Overrides are
parsed by the field's type (bool, int within 64 bits, finite float, str, tuple of
finite numbers or of names, no empty item) and range-checked; a config's own
``check()`` then refuses combinations that do not apply (an option of another method)
and sizes that would not fit in memory (:func:`check_memory`). Every failure is one
:class:`~sampleopt.errors.UsageError` naming the key, what it expects and what it got
(exit code 2 on the command line).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import typing
from typing import Any

from sampleopt.errors import UsageError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_INT_LIMIT = 2**63
SEED_MAX = 2**31 - 1  # the experiments derive many generator seeds from one
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _parse(key: str, typ: Any, text: str) -> Any:
    def bad(expected: str):
        return UsageError(f"config key '{key}' expects {expected}, got {text!r}")

    if typ is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise bad("true or false")
    if typ is int:
        try:
            value = int(text)
        except ValueError:
            raise bad("an integer") from None
        if not -_INT_LIMIT <= value < _INT_LIMIT:
            raise bad("an integer within 64 bits")
        return value
    if typ is float:
        try:
            value = float(text)
        except ValueError:
            raise bad("a number") from None
        if not math.isfinite(value):
            raise bad("a finite number")
        return value
    if typ is str:
        return text
    if typing.get_origin(typ) is tuple:
        if text.strip() in ("", "()", "[]"):
            return ()
        items = [v.strip() for v in text.strip().strip("()[]").split(",")]
        if items and items[-1] == "":  # one trailing comma is allowed
            items = items[:-1]
        if any(v == "" for v in items):
            raise bad("comma-separated items, none of them empty")
        if typing.get_args(typ)[:1] == (str,):  # tuple[str, ...]: names
            names = tuple(v.strip("'\"") for v in items)
            for name in names:
                if not _NAME.fullmatch(name):
                    raise bad("names (letters, digits, '_', '-' and '.')")
            return names
        try:
            values = tuple(float(v) for v in items)
        except ValueError:
            raise bad("comma-separated numbers") from None
        if not all(math.isfinite(v) for v in values):
            raise bad("finite numbers")
        return values
    raise UsageError(f"config key '{key}' has a type sampleopt cannot parse: {typ}")


def apply_overrides(config, overrides: list[str]):
    """Return a copy of ``config`` with ``key=value`` overrides applied and validated."""
    types = _field_types(type(config))
    fields = {f.name: f for f in dataclasses.fields(config)}
    changes: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise UsageError(f"--set expects key=value, got {item!r}")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in fields:
            raise UsageError(
                f"unknown config key {key!r} for {type(config).__name__}; valid keys: "
                + ", ".join(fields)
            )
        changes[key] = _parse(key, types[key], text)
    new = dataclasses.replace(config, **changes)
    validate(new)
    return new


def from_dict(cls, data: dict):
    """Rebuild a config saved with :func:`to_dict` (e.g. a run folder's config.json)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(
            f"saved config has keys {cls.__name__} does not know: {', '.join(unknown)}"
        )
    types = _field_types(cls)
    values = {}
    for key, value in data.items():
        text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
        values[key] = _parse(key, types[key], text)
    config = cls(**values)
    validate(config)
    return config


def validate(config) -> None:
    """Check choices, and ranges declared as ``metadata={"min": ...}``."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        choices = f.metadata.get("choices")
        items = value if isinstance(value, tuple) else (value,)
        if choices is not None and any(v not in choices for v in items):
            raise UsageError(
                f"config key '{f.name}' must be one of {', '.join(map(str, choices))}, "
                f"got {value!r}"
            )
        values = value if isinstance(value, tuple) else (value,)
        low, high = f.metadata.get("min"), f.metadata.get("max")
        if low is not None and any(v < low for v in values):
            raise UsageError(f"config key '{f.name}' must be >= {low}, got {value!r}")
        if high is not None and any(v > high for v in values):
            raise UsageError(f"config key '{f.name}' must be <= {high}, got {value!r}")
    check = getattr(config, "check", None)
    if check is not None:
        check()


def memory_bytes() -> int:
    """Physical memory of this machine (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def check_memory(keys: str, need: float) -> None:
    """Refuse a config whose estimated working set (``need`` bytes) exceeds 80% of this
    machine's memory, naming the keys that set it: a clear error before any work instead
    of an allocation failure part-way."""
    have = memory_bytes()
    if have and need > 0.8 * have:
        raise UsageError(
            f"config keys {keys} need about {need / 2**30:.3g} GiB of memory; this machine "
            f"has {have / 2**30:.3g} GiB: choose smaller values"
        )


def describe(config) -> list[tuple[str, str, str]]:
    """(key, default, help) rows for the CLI's help text."""
    return [
        (f.name, repr(getattr(config, f.name)), f.metadata.get("help", ""))
        for f in dataclasses.fields(config)
    ]


def to_dict(config) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
