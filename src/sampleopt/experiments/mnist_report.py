"""The Markdown report and the Pareto plot of the MNIST fine-tuning experiments."""

from __future__ import annotations

import torch

from sampleopt.bilevel.importance import Tilt
from sampleopt.plots import line_plot


@torch.no_grad()
def tilted_optimum(sampler, reward, lam: float, n: int, seed: int) -> dict:
    """The optimum of -E[r] + lam KL over all laws, the base tilted by exp(r / lam), by
    self-normalised importance weights on n base samples (docs/soc.md section 1): its
    value -lam log mean exp(r / lam), reward, KL to the base and effective sample size."""
    gen = torch.Generator().manual_seed(20_000 + seed)
    r = torch.cat([reward(sampler.sample(min(64, n - i), generator=gen)) for i in range(0, n, 64)])
    if lam <= 0:
        return {"objective": float(-r.max()), "n": n}
    tilt = Tilt((r / lam).double(), min_ess=1, what=f"the tilted optimum at lam = {lam:g}")
    return {
        "objective": -lam * tilt.log_z,
        "reward_mean": tilt.mean(r)[0],
        "kl": tilt.kl()[0],
        "ess": tilt.ess,
        "n": n,
    }


def pareto_plot(path, pareto: list[tuple[float, dict]], base_eval: dict, name: str) -> None:
    """Reward against classifier FID across lam, with the base model's point."""
    pts = sorted(pareto, key=lambda p: p[1]["classifier_fid"])
    line_plot(
        path,
        {
            "fine-tuned (lam labels in summary)": (
                [p[1]["classifier_fid"] for p in pts],
                [p[1]["reward_mean"] for p in pts],
            ),
            "base": ([base_eval["classifier_fid"]], [base_eval["reward_mean"]]),
        },
        xlabel="classifier FID (lower is closer to data)",
        ylabel="mean reward",
        title=f"{name}: reward against classifier FID across lam",
    )


def report(s: dict, cfg, name: str) -> str:
    """The run's Markdown report from its summary."""
    b, t = s["base"], s["tuned"]
    m = cfg.tune_steps
    tuned_steps = f" (the last {m} fine-tuned, the earlier ones the base's)" if m else ""
    lines = [
        f"# {name}",
        "",
        f"Reward {cfg.reward}, {cfg.resolved_algorithm} algorithm with the {cfg.estimator} "
        "estimator, "
        f"lam {cfg.lam}, K = {cfg.steps} "
        f"reverse-SDE steps{tuned_steps}, {cfg.updates} updates of {cfg.batch_size} "
        f"samples, Adam "
        f"lr {cfg.lr}, seed {cfg.seed}. Evaluation: {b['eval_n']} samples; classifier FID "
        f"against {b['fid_reference_n']} training images.",
        "",
        "| model | mean reward | classifier FID | path KL to the base |",
        "|---|---|---|---|",
        f"| base | {b['reward_mean']:.4f} ± {b['reward_se']:.4f} | {b['classifier_fid']:.1f} | 0 |",
        f"| fine-tuned | {t['reward_mean']:.4f} ± {t['reward_se']:.4f} | "
        f"{t['classifier_fid']:.1f} | {t['path_kl']:.2f} ± {t['path_kl_se']:.2f} |",
        "",
        f"Reward change: {100 * (t['reward_mean'] / b['reward_mean'] - 1):+.1f}%; FID ratio "
        f"{t['classifier_fid'] / b['classifier_fid']:.2f}.",
        "",
    ]
    if "compare" in s:
        o = s["optimum"]
        lines += [
            f"## Equal budget ({s['network_evals']} network evaluations)",
            "",
            f"The objective is -E[r] + lam * path KL (lam = {cfg.lam}); its optimum, the base "
            f"tilted by exp(r / lam), is {o['objective']:.4f} (reward {o['reward_mean']:.4f}, "
            f"KL {o['kl']:.3f}; importance weights on {o['n']} base samples, effective sample "
            f"size {o['ess']:.0f}).",
            "",
            "| method | updates | mean reward | classifier FID | path KL | objective | gap |",
            "|---|---|---|---|---|---|---|",
        ]
        for m, e in s["compare"].items():
            value = -e["reward_mean"] + cfg.lam * e["path_kl"]
            lines.append(
                f"| {m} | {e['updates']} | {e['reward_mean']:.4f} ± {e['reward_se']:.4f} | "
                f"{e['classifier_fid']:.1f} | {e['path_kl']:.2f} | {value:.4f} | "
                f"{value - o['objective']:.4f} |"
            )
        lines.append("")
    lines += ["![base](samples_base.png) ![tuned](samples_tuned.png)", ""]
    lines += ["![reward](reward_vs_network_evals.png)", ""]
    return "\n".join(lines)
