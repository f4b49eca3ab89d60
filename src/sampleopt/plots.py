"""PNG plots for run folders (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def line_plot(
    path: Path,
    curves: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    markers: bool = False,
) -> Path:
    """One line per curve name: ``{label: (x, y)}``."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for label, (x, y) in curves.items():
        ax.plot(np.asarray(x), np.asarray(y), label=label, lw=1.2, marker="o" if markers else None)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def density_plot(
    path: Path,
    energy: Callable[[torch.Tensor], torch.Tensor],
    particles: torch.Tensor,
    *,
    title: str,
    extent: float = 7.5,
    marks: torch.Tensor | None = None,
) -> Path:
    """Particles over contour lines of the log-density -V on a square grid (log levels,
    so that light components stay visible)."""
    grid = torch.linspace(-extent, extent, 200)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    with torch.no_grad():
        logd = (-energy(pts.to(particles.dtype))).reshape(gx.shape)
    top = float(logd.max())
    fig, ax = plt.subplots(figsize=(5.0, 5.0), dpi=110)
    levels = np.linspace(top - 9.0, top, 13)
    ax.contour(gx.numpy(), gy.numpy(), logd.numpy(), levels=levels, cmap="viridis", linewidths=0.8)
    p = particles.detach().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=2, c="crimson", alpha=0.4, label="particles")
    if marks is not None:
        m = marks.cpu().numpy()
        ax.scatter(m[:, 0], m[:, 1], marker="x", c="k", s=30, label="reward peak")
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
