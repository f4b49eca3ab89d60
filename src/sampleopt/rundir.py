"""Run folders that write as they go, and survive a kill at any moment.

A run folder holds the resolved ``config.json``, ``metrics.jsonl`` (one JSON object
a line, flushed as rows arrive), ``summary.json`` (final metrics by name; ``status``
``running``, then ``completed`` or ``failed`` with the error), PNG plots, a
``report.md`` and the checkpoint.

**The checkpoint protocol.** A checkpoint is one file, ``checkpoint.safetensors``: the
tensors, and in the file's metadata their JSON description (``meta``) and a SHA-256
of both (``sha256``), so there is a single commit point and a flipped byte anywhere is
detected on load. It is written to a temporary name and flushed to disk; the current
checkpoint is then renamed ``checkpoint.prev.safetensors`` and the new one renamed into
place. A kill at any moment therefore leaves at least one complete, verified
checkpoint: :func:`load_checkpoint` takes the newest one that verifies, and says so
when it falls back to the previous one. Every other file that replaces an older
version (summary, config) is written to a temporary name and renamed.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sampleopt.errors import UsageError

CHECKPOINT = "checkpoint.safetensors"
PREVIOUS = "checkpoint.prev.safetensors"
FORMAT = "sampleopt-checkpoint-2"


class CheckpointWarning(UserWarning):
    """A checkpoint did not verify and an earlier one was used instead."""


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


def check_writable(folder: Path) -> None:
    """Create ``folder`` if needed and check that a file can be written in it, or raise a
    UsageError saying why not (no permission, a name too long, a file in the way)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UsageError(f"cannot write to output folder {folder}: {reason}") from None


class RunDir:
    """A run folder. Creating one checks that it can be written (or says why not)."""

    def __init__(self, path: str | os.PathLike, *, resume: bool = False):
        try:
            self._open(Path(path), resume)
        except OSError as exc:  # e.g. a name too long for the file system
            reason = exc.strerror or str(exc)
            raise UsageError(f"cannot use output folder {path}: {reason}") from None

    def _open(self, path: Path, resume: bool) -> None:
        self.path = path
        if resume and not (self.path / "config.json").is_file():
            raise UsageError(f"{self.path} is not a run folder (no config.json in it)")
        if self.path.exists() and not self.path.is_dir():
            raise UsageError(f"output folder {self.path} exists and is not a folder")
        if not resume and self.path.is_dir() and any(self.path.iterdir()):
            raise UsageError(
                f"output folder {self.path} is not empty; choose another --out so that no "
                "earlier run is overwritten"
            )
        check_writable(self.path)
        self._metrics = open(self.path / "metrics.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def file(self, name: str) -> Path:
        return self.path / name

    def write_json(self, name: str, data: dict) -> Path:
        path = self.file(name)
        atomic_write_text(path, json.dumps(_json_safe(data), indent=2) + "\n")
        return path

    def read_json(self, name: str) -> dict:
        """A JSON object from the folder, or a UsageError naming the file and the fault."""
        path = self.file(name)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(
                f"{path} is corrupted: it holds a {type(data).__name__}, not an object"
            )
        return data

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

    def save_checkpoint(self, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
        """Commit a checkpoint atomically (see the module docstring)."""
        path, previous = self.file(CHECKPOINT), self.file(PREVIOUS)
        data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        text = json.dumps(_json_safe(meta))
        tmp = path.with_name(path.name + ".tmp")
        info = {"format": FORMAT, "meta": text, "sha256": content_hash(data, text)}
        save_file(data, str(tmp), metadata=info)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if path.exists():
            os.replace(path, previous)  # the last good one stays until the next commit
        os.replace(tmp, path)
        _fsync_folder(self.path)
        return path

    def close(self) -> None:
        self._metrics.close()


def content_hash(tensors: dict[str, torch.Tensor], meta_text: str) -> str:
    """SHA-256 of a checkpoint's JSON description and of every tensor's name, dtype,
    shape and bytes, in name order."""
    h = hashlib.sha256(meta_text.encode())
    for key in sorted(tensors):
        t = tensors[key].detach().contiguous().cpu()
        h.update(f"\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Corrupted(Exception):
    pass


def _read_verified(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    try:
        with safe_open(str(path), framework="pt") as f:
            info = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # noqa: BLE001 - any failure to parse is a corrupted file
        raise _Corrupted(f"unreadable ({type(exc).__name__}: {exc})") from None
    if info.get("format") != FORMAT or "sha256" not in info or "meta" not in info:
        raise _Corrupted("no content hash: not a checkpoint of this sampleopt version")
    if content_hash(tensors, info["meta"]) != info["sha256"]:
        raise _Corrupted("its content does not match its hash")
    try:
        meta = json.loads(info["meta"])
    except ValueError:
        raise _Corrupted("its description is not JSON") from None
    if not isinstance(meta, dict):
        raise _Corrupted("its description is not a JSON object")
    return tensors, meta


def load_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) of the newest checkpoint in a run folder (or of one checkpoint
    file) that verifies; a corrupted newest one falls back to the previous one with a
    :class:`CheckpointWarning`. A UsageError when none is there or none verifies."""
    path = Path(path)
    candidates = [path / CHECKPOINT, path / PREVIOUS] if path.is_dir() else [path]
    faults = []
    for candidate in candidates:
        if not candidate.exists():
            continue
        try:
            out = _read_verified(candidate)
        except _Corrupted as exc:
            faults.append(f"{candidate.name}: {exc}")
            continue
        if faults:
            warnings.warn(
                f"{faults[0]}; resuming from the previous checkpoint {candidate}",
                CheckpointWarning,
                stacklevel=2,
            )
        return out
    if faults:
        raise UsageError(f"the checkpoint in {path} is corrupted: " + "; ".join(faults))
    raise UsageError(f"no checkpoint at {path}")
