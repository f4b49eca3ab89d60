"""Output of ``benchmarks/estimators.py``: the Markdown tables, the summary lines and
the figure (``estimators.png``: bias and spread per estimator and chain; peak memory
and time against K)."""

from __future__ import annotations

from pathlib import Path

from estimator_cost import cost_estimators


def cost_labels() -> list[str]:
    """The cost part's estimator labels, in table and plot order."""
    return list(cost_estimators())


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def fmt(v, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def accuracy_table(rows: list[dict]) -> str:
    body = []
    for r in rows:
        if r["status"] != "ok":
            msg = r["message"].split(":")[0].split(" (")[0]
            body.append([r["chain"], r["estimator"], f"refused: {msg}", *[""] * 5])
            continue
        z = fmt(r["max_abs_z"], ".2f")
        if r["coords_zero_se"]:
            z += f" ({r['coords_zero_se']}/{r['coords']} const.)"
        body.append(
            [
                r["chain"],
                r["estimator"],
                fmt(r["rel_bias"]),
                fmt(r["rel_se"]),
                fmt(r["bias_over_se"], ".2f"),
                z,
                fmt(r["rel_std_per_sample"]),
                fmt(r["ms_per_gradient"], ".2f"),
            ]
        )
    headers = [
        "chain",
        "estimator",
        "rel. bias",
        "SE scale",
        "bias/SE",
        "max abs z",
        "rel. std/sample",
        "ms/grad",
    ]
    return md_table(headers, body)


def peak_text(m: dict | None) -> str:
    if m is None:
        return "-"
    if "error" in m:
        return "failed"
    return ("<= " if m["upper_bound"] else "") + fmt(m["peak_extra_mib"], ".2f")


def cost_table(timing: list[dict], memory: list[dict]) -> str:
    mem = {(r["estimator"], r["K"]): r for r in memory}
    tim = {(r["estimator"], r["K"]): r for r in timing}
    order = ["sampling", *cost_labels()]
    keys = sorted({*mem, *tim}, key=lambda k: (k[1], order.index(k[0])))
    fixed = any("fixed_threshold" in r for r in memory)
    body = []
    for key in keys:
        t, m = tim.get(key), mem.get(key)
        if key[0] == "sampling":
            t = next((r for r in timing if r["K"] == key[1]), None)
            t = None if t is None else {"gradient_s": t["sampling_s"], "ratio": 1.0}
        row = [
            key[0] + (" (no grad)" if key[0] == "sampling" else ""),
            str(key[1]),
            "-" if t is None else fmt(t["gradient_s"], ".4f"),
            "-" if t is None else fmt(t["ratio"], ".2f"),
            peak_text(m),
        ]
        if fixed:
            row.append(peak_text(None if m is None else m.get("fixed_threshold")))
        body.append(row)
    headers = ["estimator", "K", "time s", "time / sampling", "peak extra MiB"]
    if fixed:
        headers.append("peak MiB, fixed mmap thr.")
    return md_table(headers, body)


def summary_text(s: dict) -> str:
    def verdict(ok):
        return "n/a" if ok is None else ("meets target" if ok else "MISSES target")

    return "\n".join(
        [
            f"- adjoint peak memory K=1000 / K=100: {fmt(s['adjoint_peak_K1000_over_K100'], '.2f')}"
            f" (target <= 1.5: {verdict(s['adjoint_peak_meets_target'])}); unrolled: "
            f"{fmt(s['unrolled_peak_K1000_over_K100'], '.2f')}, unrolled+checkpoint: "
            f"{fmt(s['unrolled+checkpoint_peak_K1000_over_K100'], '.2f')}, score-function: "
            f"{fmt(s['score-function_peak_K1000_over_K100'], '.2f')}",
            f"- adjoint(states='sqrt') peak memory K=1000 / K=100: "
            f"{fmt(s['adjoint(sqrt)_peak_K1000_over_K100'], '.2f')} "
            f"(target <= 1.5: {verdict(s['adjoint(sqrt)_peak_meets_target'])})",
            f"- adjoint time / sampling time at K=1000: "
            f"{fmt(s['adjoint_time_over_sampling_K1000'], '.2f')} "
            f"(target <= 3: {verdict(s['adjoint_time_meets_target'])}); adjoint(sqrt): "
            f"{fmt(s['adjoint(sqrt)_time_over_sampling_K1000'], '.2f')}",
        ]
    )


def plot(path: Path, accuracy: list[dict] | None, timing, memory) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    fig = plt.figure(figsize=(16, 9.5), layout="constrained")
    gs = GridSpec(2, 6, figure=fig)
    if accuracy:
        chains = list(dict.fromkeys(r["chain"] for r in accuracy))
        for i, chain in enumerate(chains):
            ax = fig.add_subplot(gs[0, 2 * i : 2 * i + 2])
            rows = [r for r in accuracy if r["chain"] == chain]
            xs = range(len(rows))
            for x, r in zip(xs, rows, strict=True):
                if r["status"] != "ok":
                    ax.annotate(
                        "refused",
                        (x, 0.5),
                        xycoords=("data", "axes fraction"),
                        rotation=90,
                        ha="center",
                        va="center",
                        color="gray",
                    )
                    continue
                b, se = r["rel_bias"], r["rel_se"]
                ax.errorbar(
                    x,
                    b,
                    yerr=[[min(se, 0.9 * b)], [se]],
                    fmt="o",
                    color="C0",
                    capsize=3,
                    label="relative bias ± SE scale" if x == 0 else None,
                )
                ax.plot(
                    x,
                    r["rel_std_per_sample"],
                    "s",
                    color="C1",
                    label="relative std per sample" if x == 0 else None,
                )
            ax.set_xticks(list(xs), [r["estimator"] for r in rows], rotation=35, ha="right")
            ax.set_yscale("log")
            ax.set_title(f"chain {chain} (R = {rows[0]['repeats']}, n = {rows[0]['n']})")
            ax.grid(True, which="major", axis="y", alpha=0.3)
            if i == 0:
                ax.legend(fontsize=8)
    if memory:
        ax = fig.add_subplot(gs[1, 0:3])
        floor = 1 / 1024  # 1 KiB: where a peak of 0 is drawn on the log axis
        for j, name in enumerate(["sampling", *cost_labels()]):
            color = "k" if name == "sampling" else f"C{j - 1}"  # as in the time panel
            for fixed in (False, True):
                rows = [r for r in memory if r["estimator"] == name]
                rows = [r.get("fixed_threshold", {}) for r in rows] if fixed else rows
                pts = sorted(
                    (r["K"], max(r["peak_extra_mib"], floor)) for r in rows if "peak_extra_mib" in r
                )
                if not pts:
                    continue
                ks, ys = zip(*pts, strict=True)
                label = None if fixed else ("sampling (no grad)" if name == "sampling" else name)
                ax.plot(ks, ys, ":" if fixed else "-", color=color, marker="o", label=label)
        if any("fixed_threshold" in r for r in memory):
            ax.plot([], [], "k:", label="dotted: fixed mmap threshold")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("K (steps)")
        ax.set_ylabel("peak extra memory, MiB")
        ax.set_title("peak memory of one gradient (hex, reverse SDE, n = 256)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    if timing:
        ax = fig.add_subplot(gs[1, 3:6])
        for j, name in enumerate(cost_labels()):
            pts = sorted((r["K"], r["ratio"]) for r in timing if r["estimator"] == name)
            if pts:
                ks, ys = zip(*pts, strict=True)
                ax.plot(ks, ys, f"C{j}-", marker="o", label=name)
        ax.axhline(3.0, color="gray", ls=":", label="adjoint target (3)")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("K (steps)")
        ax.set_ylabel("gradient time / sampling time")
        ax.set_title("time of one gradient relative to one no-grad sampling pass")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
