"""PNG plots for run folders (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import math
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


def image_grid(path: Path, images: torch.Tensor, *, title: str, nrow: int = 8) -> Path:
    """Images (n, c, h, w) in [-1, 1] tiled into a grid (grey for c = 1)."""
    x = ((images.detach().cpu().clamp(-1, 1) + 1) / 2).numpy()
    n, c, h, w = x.shape
    rows = math.ceil(n / nrow)
    grid = np.ones((rows * (h + 1) + 1, nrow * (w + 1) + 1, c))
    for i in range(n):
        r, q = divmod(i, nrow)
        grid[1 + r * (h + 1) : 1 + r * (h + 1) + h, 1 + q * (w + 1) : 1 + q * (w + 1) + w] = x[
            i
        ].transpose(1, 2, 0)
    fig, ax = plt.subplots(figsize=(nrow * 0.6 + 0.4, rows * 0.6 + 0.6), dpi=110)
    ax.imshow(grid[..., 0] if c == 1 else grid, cmap="gray" if c == 1 else None, vmin=0, vmax=1)
    ax.set_axis_off()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def sample_plot(path: Path, samples: torch.Tensor, reference: torch.Tensor, *, title: str):
    """Samples against reference data: histograms in 1-D, a scatter of the first two
    coordinates otherwise."""
    s = samples.detach().cpu().reshape(samples.shape[0], -1).numpy()
    r = reference.detach().cpu().reshape(reference.shape[0], -1).numpy()
    fig, ax = plt.subplots(figsize=(5.0, 4.0), dpi=110)
    if s.shape[1] == 1:
        bins = np.linspace(min(s.min(), r.min()), max(s.max(), r.max()), 60)
        ax.hist(r[:, 0], bins=bins, alpha=0.5, density=True, label="data")
        ax.hist(s[:, 0], bins=bins, alpha=0.5, density=True, label="samples")
    else:
        ax.scatter(r[:, 0], r[:, 1], s=2, alpha=0.3, label="data")
        ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.3, label="samples")
        ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
