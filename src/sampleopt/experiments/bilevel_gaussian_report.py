"""The plots and the Markdown report of experiment ``bilevel-gaussian``."""

from __future__ import annotations

import math

import numpy as np

from sampleopt.bilevel import GaussianTestBed
from sampleopt.plots import plt

COLOUR = {"bilevel": "C0", "bilevel-limit": "C4", "grid": "C2", "random": "C1", "bayesian": "C3"}


def write_plots(runner) -> list[str]:
    """choices.png (F(lam) with every run's chosen lam) and paths.png (lam against the
    solves spent: the bilevel iterates and the search trials)."""
    cfg, rd, res = runner.cfg, runner.rd, runner.results
    lam_grid = np.exp(np.linspace(math.log(cfg.low), math.log(cfg.high), 400))
    n_a = len(cfg.a)
    fig, axes = plt.subplots(1, n_a, figsize=(3.6 * n_a, 3.4), dpi=110, squeeze=False)
    for j, a in enumerate(cfg.a):
        tb, ax = GaussianTestBed(a), axes[0, j]
        ax.plot(lam_grid, [tb.upper_loss(v) for v in lam_grid], color="k", lw=1.5, label="F(lam)")
        for k, m in enumerate(cfg.methods):
            us = [u for u, (aa, mm, _) in enumerate(runner.units) if aa == a and mm == m]
            lams = res["lam"][us].numpy()
            ax.scatter(lams, [tb.upper_loss(v) for v in lams], s=18, color=COLOUR[m],
                       marker="ox^sv"[k % 5], label=m, zorder=3)  # fmt: skip
        if a > 0:
            ax.axvline(1 / a, color="k", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"a = {a:g}" + (f", lam* = {1 / a:g}" if a > 0 else ", lam* = inf"))
        ax.set_xlabel("lam")
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("upper loss F(lam) = -E[r1]")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(rd.file("choices.png"))
    plt.close(fig)

    fig, axes = plt.subplots(1, n_a, figsize=(3.6 * n_a, 3.4), dpi=110, squeeze=False)
    for j, a in enumerate(cfg.a):
        ax = axes[0, j]
        for m in cfg.methods:
            us = [u for u, (aa, mm, r) in enumerate(runner.units) if aa == a and mm == m]
            for i, u in enumerate(us):
                path = res["path"][u].numpy()
                style = "-" if m.startswith("bilevel") else "."
                ax.plot(np.arange(1, len(path) + 1), path, style, color=COLOUR[m], lw=0.8,
                        ms=3, alpha=0.7, label=m if i == 0 else None)  # fmt: skip
        if a > 0:
            ax.axhline(1 / a, color="k", ls=":", lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("lower-level solves")
        ax.set_title(f"a = {a:g}")
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("lam tried")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(rd.file("paths.png"))
    plt.close(fig)
    return ["choices.png", "paths.png"]


def _pm(mean, se, fmt="{:.4g}"):
    return fmt.format(mean) + ("" if math.isnan(se) else " ± " + fmt.format(se))


def report_markdown(s: dict, cfg, figures: list[str]) -> str:
    lines = [
        "# bilevel-gaussian",
        "",
        f"p_base = N(0, 1), r2 = x, r1 = -(x - a)^2; {cfg.runs} runs per (a, method), "
        f"{cfg.budget} lower-level solves of {cfg.n} base samples each, lam searched in "
        f"[{cfg.low:g}, {cfg.high:g}]. Bilevel: SGD on log lam, step {cfg.lr:g} / sqrt(k + 1), "
        f"gamma = {cfg.gamma0:g} x {cfg.growth:g}^k up to {cfg.gamma_max:g}; the choice is "
        "the mean of log lam over the last half of the iterates. Gap = F(chosen lam) - "
        "inf F, computed exactly (mean ± standard error over runs).",
        "",
        "| a | lam* | method | chosen lam | gap F - F* | abs(lam / lam* - 1) | solves | "
        "solves with ESS < 1% | smallest ESS | s / run |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["table"]:
        rel = _pm(r["rel_err_mean"], r["rel_err_se"], "{:.3f}") if "rel_err_mean" in r else "–"
        lines.append(
            f"| {r['a']:g} | {r['lam_star']:.4g} | {r['method']} | "
            f"{_pm(r['lam_mean'], r['lam_se'])} | {_pm(r['gap_mean'], r['gap_se'], '{:.2e}')} | "
            f"{rel} | {r['solves']} | {r['collapsed_solves']} | {r['min_ess']:.0f} | "
            f"{r['seconds_mean']:.2f} |"
        )
    lines += ["", *[f"![{f}]({f})" for f in figures], ""]
    return "\n".join(lines)
