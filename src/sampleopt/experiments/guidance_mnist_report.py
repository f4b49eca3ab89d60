"""The plots and the Markdown report of experiment ``guidance-mnist``, with the
fine-tuning results of docs/mnist-finetune.md on the same axes.

The fine-tuning points are quoted from docs/mnist-finetune.md (not re-run here): the
same shipped model, reverse SDE with K = 20, the same evaluation (256 samples, classifier
FID against the first 1000 training images; base 0.173 brightness, FID 97.2).
"""

from __future__ import annotations

import math

from sampleopt.plots import plt

# docs/mnist-finetune.md: (label, mean reward, classifier FID, note)
FINETUNE = {
    "brightness": {
        "all steps, lam sweep": [
            (0.182, 112, "lam 0.15"),
            (0.207, 170, "lam 0.05: 100 updates, 33,520 forward rows, 194 s"),
            (0.231, 242, "lam 0.03"),
            (0.263, 417, "lam 0.02"),
            (0.367, 993, "lam 0.01, 150 updates"),
        ],
        "last 4-10 steps": [
            (0.221, 124, "last 4, lam 0.0002, 75 updates"),
            (0.262, 165, "last 4, lam 0.00014, 50 updates, 4.2 min"),
            (0.316, 255, "last 4, lam 0.0001, 50 updates"),
            (0.262, 199, "last 6, lam 0.0003, 75 updates"),
            (0.228, 161, "last 10, lam 0.001, 50 updates"),
        ],
    },
    "digit": {
        "all steps, lam 0.05": [(0.885, 1966, "digit 3, 100 updates, 33,520 forward rows, 5 min")],
    },
}
FINETUNE_BASE = {"brightness": (0.173, 97.2), "digit": (0.104, 97.0)}
STYLE = {"naive": ("C0", "o"), "look-ahead": ("C3", "s")}


def _guided(summary: dict, reward: str) -> list[dict]:
    return [s for s in summary["settings"] if s["reward"] == reward and s["guidance"] != "base"]


def _base(summary: dict, reward: str) -> dict:
    return next(s for s in summary["settings"] if s["reward"] == reward and s["guidance"] == "base")


def write_plots(runner) -> list[str]:
    """frontier_<reward>.png: mean reward against classifier FID (left) and against FID
    over its own base set's FID (right) of every guided setting (one line per guidance
    and round, across strengths), the base sets and the fine-tuning results of
    docs/mnist-finetune.md (their ratio over that page's base FID)."""
    cfg, summary, names = runner.cfg, runner.summary, []
    for reward in cfg.rewards:
        fig, axes = plt.subplots(1, 2, figsize=(11.0, 4.4), dpi=110, sharey=True)
        settings, b = _guided(summary, reward), _base(summary, reward)
        fid0 = b["z0"]["classifier_fid"]
        for ax, scale in zip(axes, (1.0, None), strict=True):
            for g in cfg.guidances:
                colour, marker = STYLE.get(g, ("C2", "^"))
                for k in range(1, cfg.rounds + 1):
                    pts = [
                        (r["classifier_fid"] / (scale or fid0), r["reward_mean"])
                        for s in settings if s["guidance"] == g
                        for r in s["rounds"]
                        if r["round"] == k and math.isfinite(r["classifier_fid"])
                    ]  # fmt: skip
                    if pts:
                        ax.plot(*zip(*sorted(pts), strict=True), color=colour, marker=marker,
                                alpha=0.45 + 0.55 * k / cfg.rounds, lw=1.0,
                                label=f"{g} guidance, round {k}")  # fmt: skip
            for key, label, ms in (("z0", "base (z_0)", 9), ("finetune_eval_set",
                                   "base (fine-tuning eval set)", 6)):  # fmt: skip
                e = b[key]
                x = e["classifier_fid"] / (scale or e["classifier_fid"])
                ax.plot([x], [e["reward_mean"]], "k*", ms=ms, ls="none", label=label)
            if reward in FINETUNE and not (reward == "digit" and cfg.digit != 3):
                ref = scale or FINETUNE_BASE[reward][1]
                for i, (label, pts) in enumerate(FINETUNE[reward].items()):
                    ax.plot([p[1] / ref for p in pts], [p[0] for p in pts], ls="none",
                            marker="D", color=f"C{4 + i}",
                            label=f"fine-tuning, {label} (docs)")  # fmt: skip
            ax.set_xscale("log")
            ax.grid(alpha=0.3, which="both")
        axes[0].set_xlabel("classifier FID (256 samples vs 1000 training images)")
        axes[1].set_xlabel("classifier FID / its base set's FID")
        axes[0].set_ylabel("mean brightness" if reward == "brightness" else f"P(digit {cfg.digit})")
        axes[1].legend(fontsize=7)
        fig.suptitle(f"guidance-mnist, {reward}: reward against classifier FID (lower is closer)")
        fig.tight_layout()
        name = f"frontier_{reward}.png"
        fig.savefig(runner.rd.file(name))
        plt.close(fig)
        names.append(name)
    return names


def _fmt(v, spec=".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def report_markdown(summary: dict, cfg, figures: list[str]) -> str:
    n, K = cfg.eval_n, cfg.steps
    lines = [
        "# guidance-mnist",
        "",
        f"Shipped MNIST UNet, reverse SDE with K = {K}, {n} samples per setting, "
        f"{cfg.rounds} round(s) of Algorithm 1 per setting (noise: {cfg.noise}), "
        f"sigma_y = {cfg.sigma_y}, delta = {cfg.brightness_delta} (brightness) / "
        f"{cfg.digit_delta} (digit {cfg.digit}), seed {cfg.seed}. Classifier FID of the "
        f"{n} samples against {summary['fid_reference_n']} training images. Costs are for "
        f"all {n} samples: forward and backward rows through the UNet beyond the base set "
        "z_0, wall time and CPU time (the machine is shared: CPU time is the cost).",
        "",
    ]
    for reward in cfg.rewards:
        b = _base(summary, reward)
        z0, ev = b["z0"], b["finetune_eval_set"]
        lines += [
            f"## {reward}",
            "",
            f"Base z_0: reward {z0['reward_mean']:.4f} ± {z0['reward_se']:.4f}, FID "
            f"{z0['classifier_fid']:.1f}; the fine-tuning experiments' evaluation set (another "
            f"{n} base samples): {ev['reward_mean']:.4f} ± {ev['reward_se']:.4f}, FID "
            f"{ev['classifier_fid']:.1f} (the noise floor of this comparison). Base sampling: "
            f"{b['seconds']:.1f} s wall, {b['cpu_seconds']:.1f} s CPU.",
            "",
            f"| guidance | strength | round | mean reward | change | classifier FID | FID / base "
            f"| read as {cfg.digit} | forward rows | backward rows | wall s | CPU s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for s in _guided(summary, reward):
            for r in s["rounds"]:
                change = 100 * (r["reward_mean"] / z0["reward_mean"] - 1)
                lines.append(
                    f"| {s['guidance']} | {s['strength']:g} | {r['round']} | "
                    f"{_fmt(r['reward_mean'], '.4f')} ± {_fmt(r['reward_se'], '.4f')} | "
                    f"{_fmt(change, '+.0f')}% | {_fmt(r['classifier_fid'], '.1f')} | "
                    f"{_fmt(r['classifier_fid'] / z0['classifier_fid'], '.2f')} | "
                    f"{_fmt(r.get('digit_fraction'), '.2f')} | {r['forward_rows']} | "
                    f"{r['backward_rows']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} |"
                )
            if s["status"] != "ok":
                lines.append(f"| {s['guidance']} | {s['strength']:g} | - | {s['status']} |")
        lines.append("")
        for label, pts in FINETUNE.get(reward, {}).items():
            if reward == "digit" and cfg.digit != 3:
                break
            quoted = "; ".join(f"{p[0]:.3f} at FID {p[1]} ({p[2]})" for p in pts)
            lines.append(f"Fine-tuning ({label}, docs/mnist-finetune.md): {quoted}.")
        lines.append("")
    lines += [f"![{f}]({f})" for f in figures]
    lines.append("")
    return "\n".join(lines)
