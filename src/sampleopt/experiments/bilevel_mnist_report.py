"""The plots and the Markdown report of experiment ``bilevel-mnist``."""

from __future__ import annotations

import math

import numpy as np

from sampleopt.plots import plt

COLOUR = {"bilevel": "C0", "bilevel-limit": "C4", "grid": "C2", "random": "C1", "bayesian": "C3"}


def write_plots(runner) -> list[str]:
    """heldout.png: the held-out estimate of E_{p*_lam}[r1] against lam (with its standard
    error and the effective sample size), every run's chosen lam on it."""
    s, cfg = runner.summary, runner.cfg
    curve = s["curve"]
    lam = np.array([c["lam"] for c in curve])
    up = np.array([c["upper"] for c in curve])
    se = np.array([c["upper_se"] for c in curve])
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    ax.plot(lam, up, color="k", lw=1.5, label="held-out estimate of E[r1]")
    ax.fill_between(lam, up - 2 * se, up + 2 * se, color="k", alpha=0.15, label="± 2 SE")
    ax.axhline(s["base"]["upper"], color="k", ls=":", lw=1, label="base model")
    for k, m in enumerate(cfg.methods):
        rows = [r for r in s["runs"] if r["method"] == m]
        ax.scatter([r["lam"] for r in rows], [r["upper"] for r in rows], color=COLOUR[m],
                   marker="ox^sv"[k % 5], s=22, zorder=3, label=m)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("lam")
    ax.set_ylabel(f"E[{s['upper_reward']}] under p*_lam")
    ax2 = ax.twinx()
    ax2.plot(lam, [c["ess"] for c in curve], color="C7", ls="--", lw=1)
    ax2.set_yscale("log")
    ax2.set_ylabel("held-out ESS (dashed)", color="C7")
    ax.set_title("bilevel-mnist: each run's choice, scored on the held-out pool")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(runner.rd.file("heldout.png"))
    plt.close(fig)
    return ["heldout.png"]


def _pm(mean, se, fmt="{:.4g}"):
    return fmt.format(mean) + ("" if math.isnan(se) else " ± " + fmt.format(se))


def report_markdown(s: dict, cfg, figures: list[str]) -> str:
    b, best = s["base"], s["heldout_best"]
    lines = [
        "# bilevel-mnist",
        "",
        f"Lower reward: brightness; upper reward r1: {s['upper_reward']}. Pools: {cfg.pool} "
        f"base samples for the solves, {cfg.heldout} held out for scoring (reverse SDE, "
        f"{cfg.steps} steps; {s['pool_seconds']:.0f} s to draw, shared by every method). "
        f"Each of {cfg.runs} runs per method spends {cfg.budget} solves, each solve a random "
        f"{cfg.subset}-sample subset of the pool, importance-weighted; lam in "
        f"[{cfg.low:g}, {cfg.high:g}]. Bilevel: {cfg.optimizer} on log lam from lam = "
        f"{cfg.lam0:g}, step {cfg.lr:g} / sqrt(k + 1), gamma = {cfg.gamma0:g} x "
        f"{cfg.growth:g}^k up to {cfg.gamma_max:g} (bilevel-limit: gamma = inf), the mean "
        "of log lam over the last half of the iterates. "
        "Each choice is scored on the held-out pool (mean ± "
        f"standard error over runs); FID: classifier FID of {cfg.eval_n} weighted draws "
        "against 1000 training images.",
        "",
        "| method | chosen lam | held-out E[r1] | brightness | ESS (held-out) | KL to base | "
        "classifier FID | solves | s / run |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["table"]:
        cells = [
            r["method"], _pm(r["lam_mean"], r["lam_se"]), _pm(r["upper_mean"], r["upper_se"]),
            _pm(r["brightness_mean"], r["brightness_se"]), f"{r['ess_mean']:.0f}",
            _pm(r["kl_mean"], r["kl_se"], "{:.3f}"), _pm(r["fid_mean"], r["fid_se"], "{:.1f}"),
            str(r["solves"]), f"{r['seconds_mean']:.2f}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        f"| base (lam = inf) | – | {b['upper']:.4g} ± {b['upper_se']:.2g} | "
        f"{b['brightness']:.4g} | {b['ess']:.0f} | 0 | {b['fid']:.1f} | – | – |"
    )
    if best is not None:
        lines.append(
            f"| held-out best (ESS >= 10%) | {best['lam']:.4g} | {best['upper']:.4g} ± "
            f"{best['upper_se']:.2g} | {best['brightness']:.4g} | {best['ess']:.0f} | "
            f"{best['kl']:.3f} | {best['fid']:.1f} | – | – |"
        )
    lines += ["", *[f"![{f}]({f})" for f in figures], ""]
    return "\n".join(lines)
