"""The plots and the Markdown report of experiment ``soc-linear``."""

from __future__ import annotations

import math

import numpy as np
import torch

from sampleopt.plots import plt

# the paper's table (Mei & Taghvaei 2026): MSE of phi(0, .) by eps
PAPER = {
    "tr-bsde": {0.0: 8.3e-4, 0.5: 2.3e-3, 1.0: 4.9e-3, 2.0: 1.2e-2, 5.0: 2.3e-2},
    "lean": {0.0: 1.0e-3, 0.5: 4.5e-3, 1.0: 8.5e-3, 2.0: 2.0e-2, 5.0: 9.0e-2},
}
LABEL = {"tr-bsde": "TR-BSDE", "lean": "lean adjoint"}
COLOUR = {"tr-bsde": "C0", "lean": "C3"}


def write_plots(runner, line: torch.Tensor, p0: torch.Tensor) -> list[str]:
    """mse.png (MSE against eps, both methods, the paper's figures) and costate.png
    (phi(0, (s, 0)) of the first run of each eps and method against the exact one)."""
    cfg, rd, summary = runner.cfg, runner.rd, runner.summary
    eps = [r["eps"] for r in summary["table"]]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for m in cfg.methods:
        rows = [r[m] for r in summary["table"]]
        mean = np.array([r["mse_mean"] for r in rows])
        low = mean - np.array([r["mse_min"] for r in rows])
        high = np.array([r["mse_max"] for r in rows]) - mean
        ax.errorbar(eps, mean, yerr=[low, high], marker="o", capsize=3, color=COLOUR[m],
                    label=f"{LABEL[m]} (mean, min-max over {cfg.runs} runs)")  # fmt: skip
        paper = [(e, PAPER[m][e]) for e in eps if e in PAPER[m]]
        if paper:
            ax.plot(*zip(*paper, strict=True), ls="--", marker="x", color=COLOUR[m],
                    label=f"{LABEL[m]}, paper")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("eps")
    ax.set_ylabel("MSE of phi(0, .) on N(0, I)")
    ax.set_title("soc-linear: co-state error at t = 0")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(rd.file("mse.png"))
    plt.close(fig)

    s = line.numpy()
    exact = (torch.stack([line, 0 * line], 1).double() @ p0.T).numpy()
    fig, axes = plt.subplots(2, len(eps), figsize=(2.6 * len(eps) + 1, 4.6), dpi=110,
                             squeeze=False, sharex=True)  # fmt: skip
    for j, e in enumerate(eps):
        for i in range(2):
            ax = axes[i, j]
            ax.plot(s, exact[:, i], color="k", lw=2.2, alpha=0.35, label="exact")
            for m in cfg.methods:
                u = runner.units.index((e, 0, m))
                ax.plot(s, runner.results["line"][u, :, i].numpy(), color=COLOUR[m], lw=1,
                        label=LABEL[m])  # fmt: skip
            ax.grid(alpha=0.3)
            if i == 0:
                ax.set_title(f"eps = {e:g}", fontsize=9)
            else:
                ax.set_xlabel("x_1 (x_2 = 0)")
            if j == 0:
                ax.set_ylabel(f"phi_{i + 1}(0, x)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("soc-linear: phi(0, x) along x = (s, 0), first run", fontsize=10)
    fig.tight_layout()
    fig.savefig(rd.file("costate.png"))
    plt.close(fig)
    return ["mse.png", "costate.png"]


def _cell(r: dict) -> str:
    se = "" if math.isnan(r["mse_se"]) else f" ± {r['mse_se']:.1e}"
    return f"{r['mse_mean']:.2e}{se} [{r['mse_min']:.1e}, {r['mse_max']:.1e}]"


def _paper(m: str, e: float) -> str:
    return f"{PAPER[m][e]:.1e}" if e in PAPER[m] else "–"


def report_markdown(s: dict, cfg, figures: list[str]) -> str:
    methods = list(cfg.methods)
    head = "| eps |"
    rule = "|---|"
    for m in methods:
        head += f" {LABEL[m]}: mean ± SE [min, max] | paper | s / run (cpu) |"
        rule += "---|---|---|"
    out = [
        "# soc-linear: time-reversed BSDE vs lean adjoint, linear co-state benchmark",
        "",
        f"dX = A X dt + eps dW, A = [[0, 1], [-1, -0.5]], X_0 ~ N(0, I), T = {cfg.horizon:g}, "
        f"K = {cfg.steps}, {cfg.paths} paths a round, terminal cost |x|^2 / 2, no control. "
        f"{cfg.runs} runs per eps and method (seed {cfg.seed}); {cfg.rounds} rounds of "
        f"{cfg.iterations} Adam steps (lr {cfg.lr:g}, cosine to x{cfg.lr_final:g}; "
        f"{cfg.batch} paths x {min(cfg.step_subset, cfg.steps)} steps a step; Huber "
        f"{cfg.huber:g}); co-state network TimeField(width {cfg.hidden}, blocks {cfg.blocks}, "
        f"frequencies {cfg.frequencies}); score: width {cfg.score_hidden}, "
        f"{cfg.score_iterations} steps a round; trace {cfg.trace}.",
        "",
        f"MSE: {s['mse_convention']}, on {cfg.test_points} test points; exact P(0) = "
        f"{np.round(np.array(s['exact_P0']), 4).tolist()} (the mean over the coordinates "
        "instead of their sum would halve every MSE below).",
        "",
        head,
        rule,
    ]
    for r in s["table"]:
        e = r["eps"]
        line = f"| {e:g} |"
        for m in methods:
            c = r[m]
            line += (
                f" {_cell(c)} | {_paper(m, e)} | {c['seconds_mean']:.1f} "
                f"({c['cpu_seconds_mean']:.1f}) |"
            )
        out.append(line)
    out += ["", *_verdict(s, methods), ""]
    out += [
        f"Runs: {s['runs_done']}; wall time of all runs {s['seconds_total']:.0f} s "
        f"(cpu {s['cpu_seconds_total']:.0f} s).",
        "",
        "## Figures",
        "",
        *[f"![{f}]({f})" for f in figures],
        "",
    ]
    return "\n".join(out)


def _verdict(s: dict, methods: list[str]) -> list[str]:
    lines = []
    if "tr-bsde" in methods:
        rows = [r for r in s["table"] if r["eps"] in PAPER["tr-bsde"]]
        ok = [r["tr-bsde"]["mse_mean"] <= PAPER["tr-bsde"][r["eps"]] for r in rows]
        if rows:
            lines.append(
                f"TR-BSDE at or below the paper's figure: {sum(ok)} of {len(rows)} noise levels."
            )
    if "tr-bsde" in methods and "lean" in methods:
        rows = [r for r in s["table"] if r["eps"] >= 0.5]
        ok = [r["tr-bsde"]["mse_mean"] < r["lean"]["mse_mean"] for r in rows]
        if rows:
            lines.append(
                f"TR-BSDE below the lean adjoint (mean MSE): {sum(ok)} of {len(rows)} noise "
                "levels with eps >= 0.5."
            )
    return lines
