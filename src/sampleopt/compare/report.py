"""The comparison's summary (a table ranked by mean gap to the optimum), its plot
``gap_vs_evals.png`` and its Markdown report."""

from __future__ import annotations

import math

import numpy as np

from sampleopt.plots import plt


def _mean_se(values: list[float], own_se: float) -> tuple[float, float]:
    """Mean over seeds and its standard error (one seed: that seed's own SE)."""
    v = np.asarray(values, dtype=float)
    if len(v) > 1:
        return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v)))
    return float(v.mean()), own_se


def summarise(runner) -> dict:
    """Per method: the gap J - J* (mean and SE over seeds), J, E[r], KL, evaluations,
    updates, seconds and peak memory; the methods that could not run, with the reason."""
    from sampleopt.compare.runner import DONE, FINAL, PENDING

    cfg, res, j_star = runner.cfg, runner.results, runner.optimum["objective"]
    table, unavailable = [], []
    for m in cfg.methods:
        us = [u for u, (mm, _) in enumerate(runner.units) if mm == m]
        us = [u for u in us if int(res["status"][u]) != PENDING]
        done = [u for u in us if int(res["status"][u]) == DONE]
        for u in us:
            if str(u) in runner.reasons:
                unavailable.append({"method": m, "seed": runner.units[u][1],
                                    "reason": runner.reasons[str(u)]})  # fmt: skip
        if not done:
            continue
        rows = {k: [float(res["final"][u, i]) for u in done] for i, k in enumerate(FINAL)}
        row = {"method": m, "seeds": len(done)}
        row["gap_mean"], row["gap_se"] = _mean_se(
            [v - j_star for v in rows["objective"]], rows["objective_se"][0]
        )
        for key in ("objective", "reward", "kl"):
            row[f"{key}_mean"], row[f"{key}_se"] = _mean_se(rows[key], rows[f"{key}_se"][0])
        row["fd_star_mean"], row["fd_star_se"] = _mean_se(rows["fd_star"], math.nan)
        for key in ("network_evals", "updates", "seconds"):
            row[f"{key}_mean"] = float(np.mean(rows[key]))
        row["peak_rss_mb"] = float(np.max(rows["peak_rss_mb"]))
        table.append(row)
    table.sort(key=lambda r: r["gap_mean"])
    return {
        "task": cfg.task,
        "lam": runner.task.lam,
        "budget": cfg.resolved_budget,
        "units_done": runner.done,
        "table": table,
        "unavailable": unavailable,
        "memory": "peak_rss_mb: resource.getrusage(RUSAGE_SELF).ru_maxrss after the unit, "
        "the process's peak so far (an upper bound of the unit's own)",
    }


def write_plots(runner) -> list[str]:
    """gap_vs_evals.png: the gap J - J* (held-out, mean over seeds) against network
    evaluations, one line per method."""
    from sampleopt.compare.runner import DONE

    res, j_star = runner.results, runner.optimum["objective"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    lowest = 0.0
    for i, m in enumerate(runner.cfg.methods):
        us = [u for u, (mm, _) in enumerate(runner.units) if mm == m]
        us = [u for u in us if int(res["status"][u]) == DONE]
        if not us:
            continue
        curve = res["curve"][us].numpy()  # (seeds, points, [evals, J, se])
        x, gap = curve[:, :, 0].mean(0), curve[:, :, 1].mean(0) - j_star
        ax.plot(x, gap, marker="o", ms=3, color=f"C{i % 10}", label=m)
        lowest = min(lowest, float(np.nanmin(gap)))
    ax.axhline(0.0, color="k", lw=0.8)
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_ylim(bottom=min(-0.02, 1.5 * lowest))  # a gap is >= 0 up to the estimate's noise
    ax.set_xlabel("network evaluations")
    ax.set_ylabel("gap J - J* (held-out)")
    ax.set_title(f"compare {runner.cfg.task}: gap to the optimum")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(runner.rd.file("gap_vs_evals.png"))
    plt.close(fig)
    return ["gap_vs_evals.png"]


def _f(v: float, se: float | None = None) -> str:
    if se is None or not math.isfinite(se) or se == 0:  # no SE, or exact
        return f"{v:.4g}"
    return f"{v:.4g} ± {se:.2g}"


def _on(processes) -> str:
    return f", units on {processes} processes" if processes and processes > 1 else ""


def report_markdown(summary: dict, cfg, plots: list[str]) -> str:
    opt = summary.get("optimum") or {}
    lines = [
        f"# compare {cfg.task}",
        "",
        f"Task `{cfg.task}`: lam = {summary.get('lam')}, budget {summary.get('budget')} "
        f"network evaluations per (method, seed), {cfg.seeds} seed(s) from {cfg.seed}"
        f"{_on(summary.get('processes'))}. "
        f"Optimum J* = {_f(opt.get('objective', math.nan), opt.get('objective_se'))} "
        f"({opt.get('method')}; E[r] = {opt.get('reward', math.nan):.4g}, "
        f"KL = {opt.get('kl', math.nan):.4g}).",
        "",
        f"Each method is scored on the same {cfg.resolved_eval_n} held-out paths: "
        "J = -E[r] + lam KL (path KL to the base), gap = J - J*; FD to p*: the Frechet "
        "distance between Gaussians fitted to the samples' features and to p*'s (biased "
        "upwards at this n, like FID). Ranked by mean gap; ± is the standard error "
        "over seeds (with one seed, that of the held-out estimate). Every seed is scored on "
        "the same held-out paths, so the spread over seeds is that of training alone; each "
        "unit's own held-out SE is in metrics.jsonl. Seconds: training "
        "only, mean per seed. Memory: " + summary.get("memory", ""),
        "",
        "| rank | method | gap J - J* | J | E[r] | KL | FD to p* | evals | updates | seconds "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(summary.get("table", []), 1):
        lines.append(
            f"| {i} | {r['method']} | {_f(r['gap_mean'], r['gap_se'])} | "
            f"{_f(r['objective_mean'], r['objective_se'])} | "
            f"{_f(r['reward_mean'], r['reward_se'])} | {_f(r['kl_mean'], r['kl_se'])} | "
            f"{_f(r['fd_star_mean'], r['fd_star_se'])} | {r['network_evals_mean']:.0f} | "
            f"{r['updates_mean']:.0f} | "
            f"{r['seconds_mean']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    if summary.get("base"):
        b = summary["base"]
        lines.append(
            f"| - | base model (not fine-tuned) | {_f(b['gap'])} | "
            f"{_f(b['objective'], b['objective_se'])} | {_f(b['reward'], b['reward_se'])} "
            f"| 0 | {_f(b['fd_star'])} | 0 | 0 | - | - |"
        )
    if summary.get("unavailable"):
        lines += ["", "Not run or failed:", ""]
        for r in summary["unavailable"]:
            lines.append(f"- {r['method']} (seed {r['seed']}): {r['reason']}")
    lines += ["", *[f"![{p}]({p})" for p in plots], ""]
    return "\n".join(lines)
