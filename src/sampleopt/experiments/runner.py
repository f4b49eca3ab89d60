"""The one skeleton every named experiment runs in.

:class:`Runner` owns what is the same for every experiment: the run folder, the
summary (``status`` ``running`` until the run ends ``completed`` or ``failed`` with the
error, written on every exit path, whatever the exception), the progress bar,
checkpoints tagged with the experiment's name and config, reading them back on resume
(a run that failed before its first checkpoint starts again with its metrics rows
dropped), timings of the phases, and the report written at the end. An experiment
subclasses it and writes :meth:`Runner.execute` (the work, phase by phase) and
:meth:`Runner.report` (the Markdown report from the summary).
"""

from __future__ import annotations

import contextlib
import time

import torch
from tqdm import tqdm

from sampleopt.config import to_dict
from sampleopt.errors import UsageError, describe_error
from sampleopt.rundir import CHECKPOINT, PREVIOUS, RunDir, load_checkpoint


class Runner:
    """Base class of the experiments' runners (see the module docstring)."""

    def __init__(self, name: str, cfg, rd: RunDir, *, progress: bool, resume: bool):
        self.name, self.cfg, self.rd = name, cfg, rd
        self.progress, self.resume = progress, resume
        self.summary: dict = {"experiment": name, "status": "running", "seed": cfg.seed}
        self.timings: dict[str, float] = {}
        self._closers: list = []

    # -- the skeleton ------------------------------------------------------------------
    def run(self) -> dict:
        """Run :meth:`execute`; the summary ends ``completed`` or ``failed`` with the error."""
        try:
            self.execute()
            self.summary["status"] = "completed"
        except BaseException as exc:
            self.summary["status"] = "failed"
            self.summary["error"] = describe_error(exc)
            raise
        finally:
            for close in reversed(self._closers):
                close()
            self.write_summary()
        self.rd.file("report.md").write_text(self.report())
        self.write_summary()
        return self.summary

    def execute(self) -> None:
        raise NotImplementedError

    def report(self) -> str:
        raise NotImplementedError

    # -- services ----------------------------------------------------------------------
    def write_summary(self) -> None:
        if self.timings:
            self.summary["timings_s"] = self.timings
        self.rd.write_json("summary.json", self.summary)

    def bar(self, total: int, *, unit: str = "it", desc: str | None = None) -> tqdm:
        """A progress bar, closed when the run ends (hidden without ``progress``)."""
        bar = tqdm(total=total, unit=unit, disable=not self.progress, desc=desc or self.name)
        self._closers.append(bar.close)
        return bar

    def on_close(self, close) -> None:
        """Call ``close()`` when the run ends, however it ends."""
        self._closers.append(close)

    @contextlib.contextmanager
    def timed(self, phase: str):
        """Record the phase's wall time in the summary's ``timings_s``."""
        t0 = time.perf_counter()
        yield
        self.timings[phase] = time.perf_counter() - t0

    def save_checkpoint(self, tensors: dict[str, torch.Tensor], **meta) -> None:
        """Checkpoint tagged with this experiment's name and config (and ``meta``)."""
        info = {"experiment": self.name, **meta, "config": to_dict(self.cfg)}
        self.rd.save_checkpoint(tensors, info)

    def restore(self, results: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> None:
        """Replace each tensor of ``results`` by the checkpoint's copy, refusing a
        checkpoint whose tensors have other shapes (it was made with another config)."""
        for k in results:
            if k not in tensors or tensors[k].shape != results[k].shape:
                raise UsageError(f"checkpoint in {self.rd.path} does not match its config ({k})")
            results[k] = tensors[k].clone()

    def resume_units(self, results: dict[str, torch.Tensor], units: int, unit: str) -> dict:
        """The resume of an experiment made of ``units`` units of work, a checkpoint after
        each (tensors ``done`` and ``results``): sets ``self.done`` (units finished),
        restores ``results``, keeps the metrics rows of the finished units (rows carry
        their ``unit``) and opens the progress bar ``self.progress_bar``. Returns the
        checkpoint's metadata ({} when starting afresh)."""
        self.done, meta = 0, {}
        saved = self.read_checkpoint()
        if saved is not None:
            tensors, meta = saved
            self.done = int(tensors["done"])
            self.restore(results, tensors)
            self.rd.keep_metrics(lambda row: row.get("unit", units) < self.done)
        self.progress_bar = self.bar(units, unit=unit)
        self.progress_bar.update(self.done)
        return meta

    def read_checkpoint(self) -> tuple[dict[str, torch.Tensor], dict] | None:
        """The folder's checkpoint on resume, or None: not resuming, or the run failed
        before its first checkpoint, so it starts again (and the metrics rows of the
        first attempt are dropped, as they will be written again)."""
        if not self.resume:
            return None
        if not any(self.rd.file(n).exists() for n in (CHECKPOINT, PREVIOUS)):
            self.rd.keep_metrics(lambda row: False)
            return None
        tensors, meta = load_checkpoint(self.rd.path)
        if meta.get("experiment") != self.name:
            raise UsageError(
                f"checkpoint in {self.rd.path} is from experiment {meta.get('experiment')!r}, "
                f"not {self.name}"
            )
        return tensors, meta
