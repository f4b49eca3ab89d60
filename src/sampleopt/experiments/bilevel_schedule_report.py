"""The plots and the Markdown report of experiment ``bilevel-schedule``."""

from __future__ import annotations

import math

import numpy as np

from sampleopt.plots import plt

LABEL = {
    "cosine": "fixed cosine",
    "linear": "fixed linear",
    "bilevel": "learned (bilevel)",
    "bo": "Bayesian opt. (best trial)",
}
COLOUR = {"cosine": "C0", "linear": "C1", "bilevel": "C3", "bo": "C2"}
METRIC_LABEL = {
    "sw": "sliced W2",
    "mmd": "MMD^2",
    "feature_mmd": "feature MMD^2",
    "feature_fd": "feature Frechet",
}
PARAM_NAMES = ("start", "end", "tau", "eps")


def write_plots(runner) -> list[str]:
    """schedule.png (alphabar and log-SNR of every method, every run; the learned
    parameters along training) and samples.png (run 0 of each method: 256 hex points, 36 digits)."""
    cfg, res, rd = runner.cfg, runner.results, runner.rd
    T = cfg.num_train_steps
    t = np.arange(T + 1) / T
    D = len(cfg.datasets)
    fig, axes = plt.subplots(D, 3, figsize=(13, 3.6 * D), dpi=100, squeeze=False)
    for i, d in enumerate(cfg.datasets):
        ax_ab, ax_snr, ax_tr = axes[i]
        for m in LABEL:
            for j, u in enumerate(runner.method_units(d, m)):
                ab = res["alphabar"][u].numpy()
                kw = {"color": COLOUR[m], "lw": 1.3, "alpha": 0.8 if j == 0 else 0.45}
                kw["label"] = LABEL[m] if j == 0 else None
                ax_ab.plot(t, ab, **kw)
                with np.errstate(divide="ignore"):
                    snr = np.log(ab[1:]) - np.log1p(-ab[1:])
                ax_snr.plot(t[1:], snr, **kw)
        ax_ab.set_title(f"{d}: alphabar_t (all runs)", fontsize=9)
        ax_snr.set_title(f"{d}: log SNR = log(ab / (1 - ab))", fontsize=9)
        ax_snr.set_ylim(-12, 10)
        for ax in (ax_ab, ax_snr):
            ax.set_xlabel("t / T")
            ax.grid(alpha=0.3)
        ax_ab.legend(fontsize=7)
        steps = cfg.warmup + cfg.upper_every * np.arange(runner.opts.upper_steps())
        for j, u in enumerate(runner.method_units(d, "bilevel")):
            tr = res["trajectory"][u].numpy()
            for k, name in enumerate(PARAM_NAMES):
                ax_tr.plot(steps, tr[:, k], color=f"C{k}", alpha=0.9 if j == 0 else 0.4,
                           label=name if j == 0 else None)  # fmt: skip
        ax_tr.set_title(f"{d}: learned parameters along training", fontsize=9)
        ax_tr.set_xlabel("DSM step")
        ax_tr.grid(alpha=0.3)
        ax_tr.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(rd.file("schedule.png"))
    plt.close(fig)

    fig, axes = plt.subplots(D, 4, figsize=(12, 3.2 * D), dpi=100, squeeze=False)
    for i, d in enumerate(cfg.datasets):
        for k, m in enumerate(LABEL):
            ax, u = axes[i, k], runner.method_units(d, m)[0]
            x = res["samples"][u].numpy()
            if d == "hex":
                ax.scatter(x[:, 0], x[:, 1], s=3, color=COLOUR[m])
                ax.set_xlim(-8, 8)
                ax.set_ylim(-8, 8)
                ax.set_aspect("equal")
            else:
                imgs = np.clip((x[:36] + 1) / 2, 0, 1).reshape(6, 6, 8, 8)
                imgs = np.pad(imgs, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=0.5)
                ax.imshow(imgs.transpose(0, 2, 1, 3).reshape(60, 60), cmap="gray")
                ax.set_axis_off()
            ax.set_title(f"{d}: {LABEL[m]}, run 0", fontsize=8)
    fig.tight_layout()
    fig.savefig(rd.file("samples.png"))
    plt.close(fig)
    return ["schedule.png", "samples.png"]


def _cell(mean: float, se: float) -> str:
    return f"{mean:.4f}" + ("" if math.isnan(se) else f" ± {se:.4f}")


def report_markdown(s: dict, cfg, figures: list[str]) -> str:
    out = [
        "# bilevel-schedule: learning the noise schedule while training from scratch",
        "",
        f"{cfg.runs} runs per data set (seed {cfg.seed}); every training {cfg.steps} DSM steps "
        f"(batch {cfg.batch}, Adam {cfg.lr:g}, EMA {cfg.ema_decay:g}), T = "
        f"{cfg.num_train_steps}, DDPM sampling with {cfg.sample_steps} steps. Learned: "
        f"{s['upper_steps']} schedule steps (every {cfg.upper_every} DSM steps after "
        f"{cfg.warmup}), gamma {cfg.gamma:g}, delta {cfg.delta:g}, {cfg.directions} "
        f"direction(s), {cfg.z_steps} z step(s) at lr {cfg.lr_z:g}, truncation "
        f"{cfg.truncation}, {cfg.upper_batch} samples per f. Bayesian optimisation: "
        f"{s['bo_trials']} trials per run (trial 0 = cosine), best validation score kept.",
        "",
        f"Held-out quality of {cfg.eval_samples} EMA samples against the test data (lower is "
        "better): mean ± standard error over the runs. Compute: network passes per run in "
        "units of one training's DSM steps.",
        "",
    ]
    for row in s["table"]:
        names = [METRIC_LABEL[m] for m in row["metrics"]]
        out += [
            f"## {row['dataset']}",
            "",
            f"| method | held-out {names[0]} | held-out {names[1]} | validation f | "
            "compute | s / run | learned (start, end, tau, eps), run 0 |",
            "|---|---|---|---|---|---|---|",
        ]
        for m in LABEL:
            c = row[m]
            p = c["params"][0]
            params = "–" if math.isnan(p[0]) else ", ".join(f"{v:.3f}" for v in p)
            out.append(
                f"| {LABEL[m]} | {_cell(c['mean'][0], c['se'][0])} | "
                f"{_cell(c['mean'][1], c['se'][1])} | {c['validation_mean']:.4f} | "
                f"{c['compute_per_run']:.2f} | {c['seconds_per_run']:.0f} | {params} |"
            )
        out += ["", *_verdict(row), ""]
    notes = s.get("notes", {}).get("digits")
    if notes:
        out += [
            f"Digits feature classifier: held-out accuracy "
            f"{notes['classifier_test_accuracy']:.3f}.",
            "",
        ]
    out += [
        f"Trainings: {s['trainings_done']}; wall time {s['seconds_total']:.0f} s.",
        "",
        "## Figures",
        "",
        *[f"![{f}]({f})" for f in figures],
        "",
    ]
    return "\n".join(out)


def _verdict(row: dict) -> list[str]:
    """Where the learned schedule stands on the primary metric, in standard errors."""
    lines = []
    b = row["bilevel"]
    for m in ("cosine", "linear", "bo"):
        c = row[m]
        diff = b["mean"][0] - c["mean"][0]
        se = math.sqrt(b["se"][0] ** 2 + c["se"][0] ** 2)
        if math.isnan(se) or se == 0:
            continue
        z = diff / se
        word = "better" if z < -2 else "worse" if z > 2 else "no difference beyond 2 SE"
        lines.append(
            f"Learned minus {LABEL[m]}, held-out {METRIC_LABEL[row['metrics'][0]]}: "
            f"{diff:+.4f} ({z:+.1f} SE): {word}."
        )
    return lines
