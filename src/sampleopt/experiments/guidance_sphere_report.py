"""The plots and the Markdown report of experiment ``guidance-sphere``
(docs/guidance-sphere.md)."""

from __future__ import annotations

import math

import numpy as np

from sampleopt.plots import plt

LABEL = {"naive": "naive", "look-ahead": "look-ahead"}
STYLE = {"naive": ("--", "s"), "look-ahead": ("-", "o")}


def _curve(summary: dict, g: str, delta: float, key: str) -> tuple[np.ndarray, np.ndarray]:
    pairs = np.array(summary["curves"][f"{g}|{delta:g}"][key], dtype=float)
    return pairs[:, 0], pairs[:, 1]


def write_plots(summary: dict, cfg, rd) -> list[str]:
    """rounds.png (mean f and mean | |x| - 1 | against rounds, per delta and guidance)
    and tradeoff.png (the last round's (mean f, mean | |x| - 1 |) per delta)."""
    goal, floor = summary["goal_dist"], summary["floor"]["dist_mean"]
    colours = plt.cm.viridis(np.linspace(0.0, 0.9, len(cfg.deltas)))
    rounds = np.arange(cfg.rounds + 1)
    fig, axes = plt.subplots(2, len(cfg.guidances), figsize=(5.2 * len(cfg.guidances), 7.0),
                             dpi=110, squeeze=False, sharex=True)  # fmt: skip
    for j, g in enumerate(cfg.guidances):
        for c, delta in zip(colours, cfg.deltas, strict=True):
            for i, key in enumerate(("f_mean", "dist")):
                m, se = _curve(summary, g, delta, key)
                se = np.nan_to_num(se)
                axes[i, j].plot(rounds, m, color=c, lw=1.2, label=f"delta = {delta:g}")
                axes[i, j].fill_between(rounds, m - se, m + se, color=c, alpha=0.2, lw=0)
        axes[0, j].axhline(summary["f_optimum"], color="k", lw=0.8, ls=":", label="max f = 1")
        axes[1, j].axhline(goal, color="r", lw=0.8, ls="--", label=f"goal {goal:g}")
        axes[1, j].axhline(floor, color="k", lw=0.8, ls=":", label="base model's own")
        axes[1, j].set_yscale("log")
        axes[0, j].set_title(f"{LABEL[g]} guidance", fontsize=10)
        axes[1, j].set_xlabel("round")
        for ax in axes[:, j]:
            ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel("mean f = theta^T x")
    axes[1, 0].set_ylabel("mean | |x| - 1 |")
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    fig.suptitle(f"guidance-sphere: mean over {cfg.runs} runs (band: ± 1 SE)", fontsize=10)
    fig.tight_layout()
    fig.savefig(rd.file("rounds.png"))
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    for g in cfg.guidances:
        cells = [r[g] for r in summary["table"]]
        x = np.array([c["f_mean"] for c in cells])
        y = np.array([c["dist"] for c in cells])
        xe = np.nan_to_num([c["f_mean_se"] for c in cells])
        ye = np.nan_to_num([c["dist_se"] for c in cells])
        ls, mk = STYLE.get(g, ("-", "o"))
        ax.errorbar(x, y, xerr=xe, yerr=ye, ls=ls, marker=mk, capsize=2, lw=1,
                    label=f"{LABEL[g]} guidance, round {cfg.rounds}")  # fmt: skip
        for d, xi, yi in zip(cfg.deltas, x, y, strict=True):
            ax.annotate(f"{d:g}", (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    top = max(max(r[g]["f_mean"] for r in summary["table"]) for g in cfg.guidances)
    if top > 1.0:  # f = theta^T x <= |x|, so mean | |x| - 1 | >= mean f - 1
        fs = np.linspace(1.0 + floor / 2, top, 50)
        ax.plot(fs, fs - 1.0, color="0.5", lw=0.8, label="bound: mean f - 1")
    ax.axhline(goal, color="r", lw=0.8, ls="--", label=f"goal {goal:g}")
    ax.axhline(floor, color="k", lw=0.8, ls=":", label="base model's own")
    ax.axvline(summary["f_optimum"], color="k", lw=0.8, ls="-.", label="max f on the sphere")
    ax.set_yscale("log")
    ax.set_xlabel("mean f = theta^T x (last round)")
    ax.set_ylabel("mean | |x| - 1 | (last round)")
    ax.set_title("guidance-sphere: objective against distance to the sphere (labels: delta)",
                 fontsize=9)  # fmt: skip
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(rd.file("tradeoff.png"))
    plt.close(fig)
    return ["rounds.png", "tradeoff.png"]


def _pm(m: float, se: float, fmt: str = ".3f") -> str:
    return f"{m:{fmt}}" if math.isnan(se) else f"{m:{fmt}} ± {se:{fmt}}"


def _round_table(summary: dict, cfg, key: str, transform) -> list[str]:
    cols = [(g, d) for g in cfg.guidances for d in cfg.deltas]
    out = [
        "| round | " + " | ".join(f"{LABEL[g]} {d:g}" for g, d in cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    for k in range(cfg.rounds + 1):
        vals = [transform(summary["curves"][f"{g}|{d:g}"][key][k][0]) for g, d in cols]
        out.append(f"| {k} | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    return out


def report_markdown(s: dict, cfg, figures: list[str]) -> str:
    fl = s["floor"]
    out = [
        "# guidance-sphere: naive vs look-ahead gradient guidance on unit-sphere data",
        "",
        f"Base model `{s['model']}` (uniform law on the unit sphere in R^{s['dim']}); "
        f"f(x) = theta^T x, theta = {s['theta']}, max over the sphere 1 (at x = theta). "
        f"Algorithm 1 of Guo et al. (2024): {cfg.rounds} rounds of {cfg.batch_size} guided "
        f"samples, g_i = theta, y_i = theta^T z_i + delta; {cfg.sampler} sampler, "
        f"{cfg.steps} steps; sigma_y = {cfg.sigma_y:g}, strength {cfg.strength:g}; "
        f"{cfg.runs} runs (seeds) per delta and guidance, seed {cfg.seed}. Mean ± standard "
        "error over the runs; top f = mean of the "
        f"{cfg.top_k} largest values of a round.",
        "",
        f"The base model's own samples ({fl['n']}, unguided): mean | |x| - 1 | = "
        f"{_pm(fl['dist_mean'], fl['dist_se'], '.4f')} (90% quantile {fl['dist_q90']:.4f}), "
        f"mean |x| = {fl['norm']:.4f}, mean f = {fl['f_mean']:.4f}. Guidance cannot go below "
        "this floor.",
        "",
        "## Last round",
        "",
        "| delta | guidance | mean f | gap 1 - mean f | gain over round 0 | top f | "
        "mean \\| \\|x\\| - 1 \\| | max over rounds | mean \\|x\\| | goal met | s / run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["table"]:
        for g in cfg.guidances:
            c = r[g]
            goal = "yes" if c["meets_goal"] else "no"
            if g != "look-ahead":
                goal = f"({goal})"
            out.append(
                f"| {r['delta']:g} | {LABEL[g]} | {_pm(c['f_mean'], c['f_mean_se'])} | "
                f"{c['gap']:.3f} | {_pm(c['f_gain'], c['f_gain_se'])} | "
                f"{_pm(c['f_top'], c['f_top_se'])} | {_pm(c['dist'], c['dist_se'], '.4f')} | "
                f"{c['dist_max_round']:.4f} | {_pm(c['norm'], c['norm_se'])} | {goal} | "
                f"{c['seconds_mean']:.1f} |"
            )
    out += ["", *_verdict(s, cfg), ""]
    out += ["## Gap 1 - mean f by round (mean over runs)", ""]
    out += _round_table(s, cfg, "f_mean", lambda v: 1.0 - v)
    out += ["", "## Mean | |x| - 1 | by round (mean over runs)", ""]
    out += _round_table(s, cfg, "dist", lambda v: v)
    out += [
        "",
        f"Units: {s['runs_done']}; wall time of all units {s['seconds_total']:.0f} s.",
        "",
        "## Figures",
        "",
        *[f"![{f}]({f})" for f in figures],
        "",
    ]
    return "\n".join(out)


def _verdict(s: dict, cfg) -> list[str]:
    goal = s["goal_dist"]
    lines = [
        f"Goal: mean | |x| - 1 | <= {goal:g} in the last round with look-ahead guidance while "
        "f improves (last-round mean f above round 0's by more than 2 standard errors)."
    ]
    if "look-ahead" in cfg.guidances:
        met = [r["delta"] for r in s["table"] if r["look-ahead"]["meets_goal"]]
        missed = [r["delta"] for r in s["table"] if not r["look-ahead"]["meets_goal"]]
        lines.append(
            f"Met at delta = {', '.join(f'{d:g}' for d in met) or 'none'}; "
            f"not met at delta = {', '.join(f'{d:g}' for d in missed) or 'none'}."
        )
    lines.append(
        "Mean f above 1 cannot be reached on the sphere: f = theta^T x <= |x|, so mean "
        "| |x| - 1 | >= mean f - 1; a delta that drives mean f past 1 must leave the sphere."
    )
    if "naive" in cfg.guidances:
        worst = max(r["naive"]["dist"] for r in s["table"])
        lines.append(
            f"Naive guidance (beside it, for comparison): last-round mean | |x| - 1 | from "
            f"{min(r['naive']['dist'] for r in s['table']):.4f} to {worst:.4f} over the deltas."
        )
    return lines
