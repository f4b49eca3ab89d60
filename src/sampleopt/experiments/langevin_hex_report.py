"""The plots and the Markdown report of experiment ``langevin-hex``."""

from __future__ import annotations

import torch

from sampleopt.objectives import KL_DIRECTIONS
from sampleopt.plots import density_plot, line_plot


def plots_and_report(runner) -> str:
    """Write the run's PNG plots; return its Markdown report."""
    cfg, rd = runner.cfg, runner.rd
    alg, hist = runner.main
    it = hist.step.tolist()
    line_plot(
        rd.file("reward.png"),
        {"Implicit Diffusion": (it, hist.reward_mean.tolist())},
        xlabel="iteration",
        ylabel=f"mean {cfg.reward} reward of the particles",
        title="langevin-hex: reward",
    )
    w = torch.softmax(hist.theta, 1)
    labels = [f"c{i} ({c[0]:.1f}, {c[1]:.1f})" for i, c in enumerate(runner.centres.tolist())]
    line_plot(
        rd.file("weights.png"),
        {labels[i]: (it, w[:, i].tolist()) for i in range(6)},
        xlabel="iteration",
        ylabel="mixture weight softmax(theta)_i",
        title="langevin-hex: mixture weights",
    )
    density_plot(
        rd.file("particles.png"),
        alg.sampler.potential,
        alg.particles,
        title="final particles over exp(-V_theta)",
        marks=torch.tensor([[4.0, 3.8]]),
    )
    figures = ["reward.png", "weights.png", "particles.png"]
    if cfg.compare:
        line_plot(
            rd.file("comparison.png"),
            runner.compare_curves,
            xlabel="sampling steps",
            ylabel="mean smooth reward of the samples used",
            title=f"equal sampling budget (K = {cfg.compare_steps})",
        )
        figures.append("comparison.png")
    if cfg.lam_sweep:
        curves = {}
        for kl in KL_DIRECTIONS:
            rows = [r for r in runner.summary["lam_runs"] if r["kl"] == kl]
            curves[f"{kl} KL: reward"] = (
                [r["lam"] for r in rows],
                [r["reward_mean"] for r in rows],
            )
            curves[f"{kl} KL: KL to reference"] = (
                [r["lam"] for r in rows],
                [r["kl_to_reference"] for r in rows],
            )
        line_plot(
            rd.file("lam.png"),
            curves,
            xlabel="lam",
            ylabel="value",
            logx=True,
            markers=True,
            title="KL-regularised runs",
        )
        figures.append("lam.png")
    return report_markdown(runner.summary, cfg, figures)


def _fmt_w(ws):
    return "(" + ", ".join(f"{w:.3f}" for w in ws) + ")"


def report_markdown(s: dict, cfg, figures: list[str]) -> str:
    out = [
        "# langevin-hex: Implicit Diffusion, experiment 5.1",
        "",
        f"Seed {cfg.seed}; {cfg.n_particles} particles; {cfg.iterations} iterations; "
        f"gamma = {cfg.gamma}; eta = {cfg.eta} ({cfg.schedule}, {cfg.order} order); "
        f"reward: {cfg.reward}; "
        f"lam = {cfg.lam} ({cfg.kl} KL).",
        "",
        "## Main run",
        "",
        "| metric | value |",
        "|---|---|",
        f"| mean reward, first iteration | {s['reward_mean_initial']:.4f} |",
        f"| mean reward, last iteration | {s['reward_mean']:.4f} |",
        f"| mixture weights | {_fmt_w(s['mixture_weights'])} |",
        f"| heaviest component | c{s['top_component']} at {tuple(s['top_centre'])} |",
        f"| KL(pi_theta, pi_ref) ± SE | {s['kl_to_reference']:.4f} ± "
        f"{s['kl_to_reference_se']:.4f} |",
        "",
    ]
    if "comparison" in s:
        c = s["comparison"]
        out += [
            f"## Equal sampling budget (smooth reward, K = {c['K']})",
            "",
            f"Each method used {cfg.iterations // c['K'] * c['K']} sampling steps; theta step "
            f"size {cfg.eta} for Implicit Diffusion, {cfg.baseline_eta} for the baselines; "
            f"final theta evaluated by a {c['evaluation']}.",
            "",
            "| method | theta steps | sampling steps | wall time (s) | eval smooth reward "
            "| eval hard reward | weights |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in c["methods"].items():
            out.append(
                f"| {name} | {m['theta_steps']} | {m['sampling_steps']} | {m['wall_s']:.2f} | "
                f"{m['reward_mean']:.4f} | {m['reward_mean_hard']:.4f} | "
                f"{_fmt_w(m['mixture_weights'])} |"
            )
        out.append("")
    if "lam_runs" in s:
        out += [
            "## KL-regularised runs",
            "",
            f"Reference weights {_fmt_w(s['reference_weights'])}.",
            "",
            "| lam | KL direction | reward | KL(pi_theta, pi_ref) ± SE | weights |",
            "|---|---|---|---|---|",
        ]
        for r in s["lam_runs"]:
            out.append(
                f"| {r['lam']:g} | {r['kl']} | {r['reward_mean']:.4f} | "
                f"{r['kl_to_reference']:.4f} ± {r['kl_to_reference_se']:.4f} | "
                f"{_fmt_w(r['mixture_weights'])} |"
            )
        out.append("")
    out += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(out)
