"""Typed experiment configs: dataclasses overridable with ``key=value`` strings.

Each field may carry ``metadata={"help": ..., "choices": (...)}``. Overrides are
parsed by the field's type (bool, int, float, str, tuple of floats or of names) and every
failure names the key, what it expects and what it got.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from typing import Any

from sampleopt.errors import UsageError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


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
            return int(text)
        except ValueError:
            raise bad("an integer") from None
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
        items = text.strip().strip("()[]").split(",")
        if typing.get_args(typ)[:1] == (str,):  # tuple[str, ...]: names
            return tuple(v.strip().strip("'\"") for v in items if v.strip())
        try:
            values = tuple(float(v) for v in items if v.strip())
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
        if choices is not None and value not in choices:
            raise UsageError(
                f"config key '{f.name}' must be one of {', '.join(map(str, choices))}, "
                f"got {value!r}"
            )
        low = f.metadata.get("min")
        if low is not None:
            values = value if isinstance(value, tuple) else (value,)
            if any(v < low for v in values):
                raise UsageError(f"config key '{f.name}' must be >= {low}, got {value!r}")
    check = getattr(config, "check", None)
    if check is not None:
        check()


def describe(config) -> list[tuple[str, str, str]]:
    """(key, default, help) rows for the CLI's help text."""
    return [
        (f.name, repr(getattr(config, f.name)), f.metadata.get("help", ""))
        for f in dataclasses.fields(config)
    ]


def to_dict(config) -> dict[str, Any]:
    out = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}
