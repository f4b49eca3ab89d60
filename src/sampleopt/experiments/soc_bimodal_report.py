"""What experiment ``soc-bimodal`` measures and shows: the paper's numbers, the distance
of a terminal law to the exact optimal one, the goals, the plots and the report."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from sampleopt.soc.bimodal import BimodalOU  # noqa: E402

PAPER_BETAS = (0.02, 0.05, 0.125, 1 / 6, 1.0)
PAPER = {  # the paper's costs, initial law learned (set-up a), at PAPER_BETAS
    "tr-bsde": (0.171, 0.370, 0.646, 0.752, 2.134),
    "adjoint-matching": (0.176, 0.400, 0.818, 0.968, 2.220),
}
EDGES = torch.linspace(-8.0, 8.0, 161, dtype=torch.float64)  # histogram bins, 0.1 wide
GRID = torch.linspace(-12.0, 12.0, 4801, dtype=torch.float64)  # holds EDGES exactly


def paper_cost(method: str, beta: float) -> float | None:
    for b, c in zip(PAPER_BETAS, PAPER[method], strict=True):
        if abs(beta - b) <= 1e-3 * b:
            return c
    return None


def optimal_density(problem: BimodalOU, setup: str, x: torch.Tensor) -> torch.Tensor:
    if setup == "learned":
        return problem.tilted_density(x)
    return problem.fixed_optimal_density(x)


def distances(x: torch.Tensor, density: torch.Tensor) -> dict:
    """W1 (integral of |F - F*| over GRID) and bin TV between samples x (n,) and the
    density on GRID, and the sample histogram (density units) on EDGES."""
    dx = float(GRID[1] - GRID[0])
    cdf = torch.cat([density.new_zeros(1), torch.cumsum((density[1:] + density[:-1]) * dx / 2, 0)])
    cdf = cdf / cdf[-1]
    xs = torch.sort(x).values
    emp = torch.searchsorted(xs, GRID, right=True).to(torch.float64) / len(xs)
    w1 = float(torch.trapezoid((emp - cdf).abs(), GRID))
    c = cdf[torch.searchsorted(GRID, EDGES)]
    p_star = torch.cat([c[:1], c.diff(), 1 - c[-1:]])  # bins, and the two tails
    p_emp = torch.bincount(torch.bucketize(x, EDGES), minlength=len(EDGES) + 1) / len(x)
    tv = float(0.5 * (p_emp - p_star).abs().sum())
    hist = (p_emp[1:-1] / float(EDGES[1] - EDGES[0])).tolist()
    return {"w1": w1, "tv": tv, "hist": [round(v, 6) for v in hist]}


def goals(results: list[dict], base: str) -> dict:
    """At or below the paper's cost (set-up learned, the paper's betas) and, with the
    exact base, within 10% of the optimum of the unit's set-up."""
    paper = [r for r in results if r["paper"] is not None]
    out = {
        "at_or_below_paper": all(r["cost"] <= r["paper"] for r in paper),
        "paper_units": len(paper),
    }
    if base == "exact":
        out["within_10pct"] = all(r["gap"] <= 0.10 for r in results)
    return out


SHORT = {"tr-bsde": "TR-BSDE", "adjoint-matching": "AM"}
COLOURS = {"tr-bsde": "tab:blue", "adjoint-matching": "tab:orange"}
TITLES = {"learned": "(a) initial law learned", "fixed": "(b) initial law fixed (p_0)"}


def plots_and_report(runner) -> str:
    """Write the run's PNG plots; return its Markdown report."""
    cfg, rd, results = runner.cfg, runner.rd, runner.summary["results"]
    figures = [cost_plot(rd.file("cost_vs_beta.png"), cfg, results)]
    beta = 1.0 if 1.0 in cfg.betas else max(cfg.betas)
    figures.append(density_plot(rd.file("densities.png"), cfg, results, beta))
    return report_markdown(runner.summary, cfg, figures, beta)


def cost_plot(path, cfg, results) -> str:
    fig, axes = plt.subplots(
        1, len(cfg.setup_list), figsize=(5.2 * len(cfg.setup_list), 4.0), dpi=110
    )
    axes = [axes] if len(cfg.setup_list) == 1 else list(axes)
    for ax, setup in zip(axes, cfg.setup_list, strict=True):
        fine = np.geomspace(min(cfg.betas), max(cfg.betas), 60)
        opt = [optimum(setup, float(b)) for b in fine]
        ax.plot(fine, opt, "k-", lw=1, label=f"exact optimum J_{setup}")
        for method in cfg.method_list:
            rows = sorted(
                (r for r in results if r["setup"] == setup and r["method"] == method),
                key=lambda r: r["beta"],
            )
            ax.errorbar(
                [r["beta"] for r in rows],
                [r["cost"] for r in rows],
                yerr=[2 * r["cost_se"] for r in rows],
                marker="o",
                ms=4,
                lw=1,
                color=COLOURS[method],
                label=f"{SHORT[method]} (this run)",
            )
            if setup == "learned":
                ax.plot(
                    PAPER_BETAS,
                    PAPER[method],
                    "x--",
                    lw=0.8,
                    color=COLOURS[method],
                    label=f"{SHORT[method]} (paper)",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("beta = 1 / lam")
        ax.set_ylabel("cost (held-out estimate, ± 2 SE)")
        ax.set_title(TITLES[setup], fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.suptitle(f"soc-bimodal: cost against beta ({cfg.base} base)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def optimum(setup: str, beta: float) -> float:
    p = BimodalOU(1.0 / beta)
    return p.J_learned() if setup == "learned" else p.J_fixed()


def density_plot(path, cfg, results, beta: float) -> str:
    fig, axes = plt.subplots(
        1, len(cfg.setup_list), figsize=(5.2 * len(cfg.setup_list), 3.8), dpi=110
    )
    axes = [axes] if len(cfg.setup_list) == 1 else list(axes)
    problem = BimodalOU(1.0 / beta)
    show = (GRID >= EDGES[0]) & (GRID <= EDGES[-1])
    for ax, setup in zip(axes, cfg.setup_list, strict=True):
        dens = optimal_density(problem, setup, GRID)
        ax.plot(
            GRID[show],
            problem.data_log_prob(GRID[show]).exp(),
            ":",
            color="grey",
            lw=1,
            label="data (base)",
        )
        ax.plot(GRID[show], dens[show], "k-", lw=1.2, label="exact optimal law")
        for r in results:
            if r["setup"] == setup and r["beta"] == beta:
                ax.stairs(
                    r["hist"],
                    EDGES.numpy(),
                    color=COLOURS[r["method"]],
                    lw=1,
                    label=f"{SHORT[r['method']]}: W1 {r['w1']:.3f}, TV {r['tv']:.3f}",
                )
        ax.set_xlabel("x_1")
        ax.set_ylabel("density")
        ax.set_title(f"{TITLES[setup]}, beta = {beta:.3g}", fontsize=10)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def _paper(r) -> str:
    return "–" if r["paper"] is None else f"{r['paper']:.3f}"


def report_markdown(s: dict, cfg, figures: list[str], beta: float) -> str:
    out = [
        "# soc-bimodal: TR-BSDE and adjoint matching on the bimodal OU benchmark",
        "",
        f"Seed {cfg.seed}; {cfg.base} base score; K = {cfg.steps} steps; batch {cfg.batch}; "
        f"Adam lr {cfg.lr:g} decayed to {cfg.lr * cfg.lr_decay:g}; adjoint matching "
        f"{cfg.am_iterations} iterations (steps {cfg.am_steps or 'all'}, clip quantile "
        f"{cfg.am_clip_quantile or 'off'}); TR-BSDE {cfg.tr_iterations} iterations, rounds of "
        f"{cfg.tr_round_length}, {cfg.tr_score_iterations} score steps a round, "
        f"{cfg.tr_warmup_rounds} lean warm-up round(s). Costs on {cfg.eval_n} held-out paths "
        "(± one standard error); gap = cost / optimum - 1; W1 and TV between the terminal "
        "law and the exact optimal one; P(x>0): mass on the right mode (optimal in brackets).",
        "",
    ]
    for setup in cfg.setup_list:
        out += [
            f"## {TITLES[setup]}",
            "",
            "| beta | lam | method | cost ± SE | optimum | gap | paper | W1 | TV | P(x>0) "
            "| iterations | network evals | train s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in s["results"]:
            if r["setup"] != setup:
                continue
            out.append(
                f"| {r['beta']:.3g} | {r['lam']:.3g} | {SHORT[r['method']]} | {r['cost']:.4f} ± "
                f"{r['cost_se']:.4f} | {r['optimum']:.4f} | {100 * r['gap']:+.1f}% | "
                f"{_paper(r)} | {r['w1']:.3f} | {r['tv']:.3f} | {r['right_mass']:.3f} "
                f"({r['right_mass_optimal']:.3f}) | {r['iterations']} | "
                f"{r['network_evals']:.3g} | {r['train_s']:.0f} |"
            )
        out.append("")
    g = s["goals"]
    out += [
        "## Goals",
        "",
        f"- at or below the paper's cost of the same method ({g['paper_units']} units with a "
        f"paper number): **{'yes' if g['at_or_below_paper'] else 'no'}**",
    ]
    if "within_10pct" in g:
        out.append(
            f"- within 10% of the exact optimum in every unit: "
            f"**{'yes' if g['within_10pct'] else 'no'}**"
        )
    else:
        out.append("- (learned base: the exact optima are those of the exact base)")
    out += ["", f"Densities at beta = {beta:.3g}.", "", "## Figures", ""]
    out += [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(out)
