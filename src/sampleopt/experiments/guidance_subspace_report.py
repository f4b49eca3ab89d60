"""The plots and the Markdown report of experiment ``guidance-subspace``
(docs/guidance-subspace.md)."""

from __future__ import annotations

import math

import numpy as np

from sampleopt.plots import plt

STYLE = {  # (guidance, algorithm) -> colour, line style
    ("naive", 1): ("C3", "--"),
    ("naive", 2): ("C3", "-"),
    ("look-ahead", 1): ("C0", "--"),
    ("look-ahead", 2): ("C0", "-"),
}


def _panels(summary):
    keys = []
    for r in summary["table"]:
        if (r["model"], r["objective"]) not in keys:
            keys.append((r["model"], r["objective"]))
    return keys


def _plot(runner, name: str, curve: str, ylabel: str, title: str) -> str:
    summary, rd = runner.summary, runner.rd
    keys = _panels(summary)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys) + 0.6, 3.6), dpi=110,
                             squeeze=False)  # fmt: skip
    for ax, (m, f) in zip(axes[0], keys, strict=True):
        for r in summary["table"]:
            if (r["model"], r["objective"]) != (m, f):
                continue
            y = np.asarray(r[curve])
            k = np.arange(len(y))
            ok = (k >= 1) & (y > 0)
            colour, ls = STYLE[(r["guidance"], r["algorithm"])]
            ax.plot(k[ok], y[ok], color=colour, ls=ls, lw=1.2,
                    label=f"{r['guidance']}, Alg. {r['algorithm']}")  # fmt: skip
        if curve == "gap_curve":
            K = max(r["rounds"] for r in summary["table"] if (r["model"], r["objective"]) == (m, f))
            ref = np.arange(1, K + 1)
            first = [r for r in summary["table"] if (r["model"], r["objective"]) == (m, f)]
            g1 = max(r["gap_curve"][1] for r in first)
            if g1 > 0:
                ax.plot(ref, g1 / ref, color="k", lw=0.8, alpha=0.5, ls=":", label="1/K")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("round K")
        ax.set_title(f"{m} model, {f}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0, 0].set_ylabel(ylabel)
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(rd.file(name))
    plt.close(fig)
    return name


def write_plots(runner) -> list[str]:
    """gap.png (gap of the mean f to the subspace optimum, mean over runs, log-log) and
    ratio.png (off-support ratio |x_perp| / |x_par|, mean over samples and runs)."""
    return [
        _plot(runner, "gap.png", "gap_curve", "f* - mean f (mean over runs)",
              "guidance-subspace: gap to the subspace optimum"),
        _plot(runner, "ratio.png", "ratio_curve", "|x_perp| / |x_par| (mean)",
              "guidance-subspace: off-support ratio"),
    ]  # fmt: skip


def _pm(c: dict, fmt: str = ".3g") -> str:
    se = "" if math.isnan(c["se"]) else f" ± {c['se']:{fmt}}"
    return f"{c['mean']:{fmt}}{se}"


def report_markdown(s: dict, cfg, figures: list[str]) -> str:
    out = [
        "# guidance-subspace: gradient guidance on linear-subspace data",
        "",
        f"Data x = A u, u ~ N(0, I_16), A (64, 16) orthonormal (SubspaceGaussian seed 0). "
        f"DDPM with {cfg.steps} respaced steps of the cosine schedule (T = 1000), batch "
        f"{cfg.batch}, sigma_y = {cfg.sigma_y:g}, {cfg.runs} runs per setting (seed {cfg.seed}). "
        f"f1 = 10 - (theta^T x - 3)^2 with |theta| = 1, |theta_perp| / |theta_par| = "
        f"{cfg.ratio:g} (|theta_par| = {s['theta_par_norm']:.4f}); f2 = 5 - |x - b| / 2 with "
        f"|b_perp| = {s['b_perp_norm']:.4f} (problem seed {cfg.problem_seed}). Subspace optima: "
        f"f1* = {s['optimum']['f1']:g}, f2* = {s['optimum']['f2']:.4f}. Algorithm 2: exact "
        f"model Adam lr {cfg.exact_lr:g} x {cfg.exact_adapt_steps} steps a round on the latent "
        f"mean{' and factor' if cfg.exact_factor else ''}; learned model Adam lr "
        f"{cfg.learned_lr:g} x {cfg.learned_adapt_steps} on all weights; from round 0.",
        "",
        "Final round (mean ± SE over runs): mean f, top f (mean of the top "
        f"{cfg.top_k}), gap = f* - mean f, gap at the batch mean f* - f(mean z), off-support "
        "ratio (mean over samples) at the start (round 0), the end and its maximum over "
        "rounds, and the least-squares slope of log gap on log round (fit range given).",
        "",
        "| model | f | guidance | Alg. | rounds | delta | mean f | top f | gap | gap at mean "
        "| ratio start | ratio final | ratio max | slope (range) | late slope (range) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in s["table"]:
        out.append(
            f"| {r['model']} | {r['objective']} | {r['guidance']} | {r['algorithm']} | "
            f"{r['rounds']} | {r['delta']:g} | {_pm(r['mean_f'], '.4g')} | "
            f"{_pm(r['top_f'], '.4g')} | {_pm(r['gap'])} | {_pm(r['point_gap'])} | "
            f"{_pm(r['ratio_start'])} | {_pm(r['ratio_final'])} | {_pm(r['ratio_max'])} | "
            f"{_pm(r['slope'], '.2f')} ({r['fit_range'][0]}-{r['fit_range'][1]}) | "
            f"{_pm(r['slope_late'], '.2f')} ({r['late_range'][0]}-{r['late_range'][1]}) |"
        )
    out += ["", *_verdict(s), ""]
    out += [
        f"Units: {s['runs_done']}; wall time of all units {s['seconds_total']:.0f} s.",
        "",
        "## Figures",
        "",
        *[f"![{f}]({f})" for f in figures],
        "",
    ]
    return "\n".join(out)


def _find(s, **key):
    for r in s["table"]:
        if all(r[k] == v for k, v in key.items()):
            return r
    return None


def _verdict(s: dict) -> list[str]:
    lines = []
    for m in ("exact", "learned"):
        for f in ("f1", "f2"):
            r = _find(s, model=m, objective=f, guidance="look-ahead", algorithm=2)
            if r is not None:
                ok = r["slope"]["mean"] <= -0.8
                lines.append(
                    f"- {m}, {f}, look-ahead, Alg. 2: slope {_pm(r['slope'], '.2f')} over rounds "
                    f"{r['fit_range'][0]}-{r['fit_range'][1]} ({'<=' if ok else '>'} -0.8), "
                    f"{_pm(r['slope_late'], '.2f')} over {r['late_range'][0]}-"
                    f"{r['late_range'][1]}; final gap {_pm(r['gap'])}."
                )
            for g in ("naive", "look-ahead"):
                r1 = _find(s, model=m, objective=f, guidance=g, algorithm=1)
                if r1 is not None:
                    mid = r1["gap_curve"][len(r1["gap_curve"]) // 2]
                    lines.append(
                        f"- {m}, {f}, {g}, Alg. 1: gap {mid:.3g}"
                        f" at round {r1['rounds'] // 2}, {r1['gap']['mean']:.3g} at round "
                        f"{r1['rounds']} (late slope {_pm(r1['slope_late'], '.2f')})."
                    )
            rn = _find(s, model=m, objective=f, guidance="naive", algorithm=1)
            rl = _find(s, model=m, objective=f, guidance="look-ahead", algorithm=1)
            if rn is not None and rl is not None and rl["ratio_final"]["mean"] > 0:
                q = rn["ratio_final"]["mean"] / rl["ratio_final"]["mean"]
                lines.append(
                    f"- {m}, {f}, Alg. 1: final off-support ratio naive / look-ahead = {q:.3g}"
                    f" ({'an order of magnitude or more' if q >= 10 else 'less than 10x'})."
                )
    return lines
