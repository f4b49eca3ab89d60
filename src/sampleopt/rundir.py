"""Run folders that write as they go.

A run folder holds the resolved ``config.json``, ``metrics.jsonl`` (one JSON object
a line, flushed as rows arrive), ``summary.json`` (final metrics by name), PNG
plots, a ``report.md`` and checkpoints (``checkpoint.safetensors`` with
``checkpoint.json`` beside it). Every file that replaces an older version is
written to a temporary name and renamed, so a crash never leaves a half-written
checkpoint or summary.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from sampleopt.errors import UsageError


def default_run_path(root: str | os.PathLike, name: str, seed: int) -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{name}-seed{seed}-{stamp}"
    path, i = base, 1
    while path.exists():
        i += 1
        path = base.with_name(f"{base.name}-{i}")
    return path


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class RunDir:
    """A run folder. Creating one checks that it can be written (or says why not)."""

    def __init__(self, path: str | os.PathLike, *, resume: bool = False):
        self.path = Path(path)
        if resume and not (self.path / "config.json").is_file():
            raise UsageError(f"{self.path} is not a run folder (no config.json in it)")
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"output folder {self.path} exists and is not a folder")
        if not resume and self.path.is_dir() and any(self.path.iterdir()):
            raise UsageError(
                f"output folder {self.path} is not empty; choose another --out so that no "
                "earlier run is overwritten"
            )
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise UsageError(f"cannot write to output folder {self.path}: {reason}") from None
        self._metrics = open(self.path / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, data: dict) -> Path:
        path = self.file(name)
        atomic_write_text(path, json.dumps(_json_safe(data), indent=2) + "\n")
        return path

    def read_json(self, name: str) -> dict:
        path = self.file(name)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from None

    def keep_metrics(self, keep) -> list[dict]:
        """Rewrite metrics.jsonl with only the rows for which ``keep(row)`` is true (used
        on resume, to drop rows computed after the checkpoint); returns the kept rows."""
        self._metrics.close()
        path = self.file("metrics.jsonl")
        rows = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line cut short by a crash
                continue
            if keep(row):
                rows.append(row)
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
        self._metrics = open(path, "a", encoding="utf-8")  # noqa: SIM115
        return rows

    def log_metrics(self, rows: list[dict]) -> None:
        """Append rows to metrics.jsonl and flush them to disk now."""
        if not rows:
            return
        self._metrics.write("".join(json.dumps(_json_safe(r)) + "\n" for r in rows))
        self._metrics.flush()

    def save_checkpoint(self, tensors: dict[str, torch.Tensor], meta: dict, name="checkpoint"):
        """Write ``name.safetensors`` and ``name.json`` atomically (tensors first)."""
        path = self.file(f"{name}.safetensors")
        tmp = path.with_name(path.name + ".tmp")
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, path)
        self.write_json(f"{name}.json", meta)
        return path

    def close(self) -> None:
        self._metrics.close()


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read a checkpoint written by :meth:`RunDir.save_checkpoint`."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.safetensors"
    if not path.exists():
        raise UsageError(f"no checkpoint at {path}")
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    return load_file(str(path)), meta
