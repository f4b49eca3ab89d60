"""docs/leaderboard.md from the summaries of `sampleopt compare` run folders
(docs/leaderboard.md section 2).

    python -m sampleopt.compare.leaderboard RUN_DIR [RUN_DIR ...] --page docs/leaderboard.md

writes, between the page's markers ``<!-- leaderboard:start -->`` and
``<!-- leaderboard:end -->`` (the rest of the page is left as it is), an overall table
(each method's mean rank over the tasks), then one table per task with its run's wall
time: methods ranked by their mean gap J - J* at equal budget with standard errors over
seeds, the base model's own score as an unranked reference row, the methods that could
not run with the reason, and each folder's gap-against-evaluations
plot copied next to the page as ``leaderboard-TASK.png``; then one short table per
method (its rank and gap on every task, under the heading ``method: NAME``, the anchor
``#method-NAME`` that the method's own docs page links to). Every row names the run
folder it comes from, and that folder's record (config.json, summary.json,
metrics.jsonl, report.md: every unit's numbers) is copied beside the page into
``leaderboard-runs/FOLDER/``, so each number can be traced without the machine that
made it. Only completed comparisons are accepted; two folders of the same
task are refused (one table per task).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from sampleopt.errors import UsageError

START, END = "<!-- leaderboard:start -->", "<!-- leaderboard:end -->"
TASK_ORDER = ("bimodal", "hex", "subspace", "mnist")
RECORDS = "leaderboard-runs"  # beside the page: a copy of each folder's record
RECORD_FILES = ("config.json", "summary.json", "metrics.jsonl", "report.md")


def load(folder: Path) -> dict:
    """A completed comparison's summary (with its folder)."""
    path = Path(folder) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"{folder}: no readable summary.json ({exc})") from None
    if not isinstance(summary, dict):
        raise UsageError(f"{folder}: summary.json is not a comparison summary")
    if summary.get("status") != "completed" or "table" not in summary:
        raise UsageError(
            f"{folder}: the comparison is not completed (status {summary.get('status')!r}); "
            "finish it with `sampleopt resume DIR`"
        )
    missing = [k for k in ("task", "lam", "budget", "optimum") if k not in summary]
    if missing or not isinstance(summary["task"], str):
        raise UsageError(f"{folder}: summary.json is not a comparison summary (no {missing})")
    return {**summary, "folder": Path(folder)}


def _pm(mean: float, se: float, fmt: str = "{:.4g}") -> str:
    """mean ± se; the mean alone when se is 0 (exact) or NaN (one seed)."""
    return fmt.format(mean) + (f" ± {fmt.format(se)}" if se == se and se > 0 else "")


def _wall(s: dict) -> str:
    """The run's wall time from its summary's ``timings_s`` (of the last session, on resume)."""
    t = s.get("timings_s", {})
    if "units" not in t:
        return ""
    procs = s.get("processes")
    on = f" on {procs} process{'es' if procs > 1 else ''}" if procs else ""
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in t.items())
    return f" Wall time {sum(t.values()) / 60:.1f} min{on}: {phases}."


def task_section(s: dict, image: str | None) -> str:
    opt = s["optimum"]
    seeds = max((r["seeds"] for r in s["table"]), default=0)
    lines = [
        f"### {s['task']}",
        "",
        f"lam = {s['lam']:g}; J* = {_pm(opt['objective'], opt.get('objective_se', 0.0))} "
        f"({opt['method']}); budget {s['budget']:,} network evaluations per run, {seeds} "
        f"seeds; from `{s['folder'].name}`.{_wall(s)}",
        "",
        "| rank | method | gap J - J* | J | E[r] | path KL | FD to p* | evaluations | "
        "updates | train s | peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(s["table"], 1):
        lines.append(
            f"| {i} | {r['method']} | {_pm(r['gap_mean'], r['gap_se'])} | "
            f"{_pm(r['objective_mean'], r['objective_se'])} | "
            f"{_pm(r['reward_mean'], r['reward_se'])} | {_pm(r['kl_mean'], r['kl_se'])} | "
            f"{_pm(r['fd_star_mean'], r['fd_star_se'])} | {r['network_evals_mean']:,.0f} | "
            f"{r['updates_mean']:.0f} | "
            f"{r['seconds_mean']:.1f} | {r['peak_rss_mb']:.0f} |"
        )
    if s.get("base"):  # the reference row: the base model itself, on the same paths
        b = s["base"]
        lines.append(
            f"| - | *base model, not fine-tuned* | {b['gap']:.4g} | {b['objective']:.4g} | "
            f"{b['reward']:.4g} | 0 | {b['fd_star']:.4g} | 0 | 0 | - | - |"
        )
    for u in s.get("unavailable", []):
        lines.append(f"\n* {u['method']} (seed {u['seed']}) did not run: {u['reason']}")
    if image:
        lines += ["", f"![gap against evaluations, {s['task']}]({image})"]
    return "\n".join(lines) + "\n"


def method_sections(order: list[dict]) -> str:
    """Per method, its row of every task (anchor ``#method-NAME``)."""
    from sampleopt.compare.methods import METHODS

    lines = ["### By method", ""]
    for name in METHODS:
        lines += [f"#### method: {name}", "", "| task | rank | gap J - J* | evaluations | from |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for s in order:
            ranked = [r["method"] for r in s["table"]]
            if name in ranked:
                r = s["table"][ranked.index(name)]
                lines.append(
                    f"| [{s['task']}](#{s['task']}) | {ranked.index(name) + 1} of {len(ranked)} "
                    f"| {_pm(r['gap_mean'], r['gap_se'])} | {r['network_evals_mean']:,.0f} | "
                    f"`{s['folder'].name}` |"
                )
            else:
                why = [u["reason"] for u in s.get("unavailable", []) if u["method"] == name]
                note = f"did not run: {why[0]}" if why else "not in this comparison"
                lines.append(f"| [{s['task']}](#{s['task']}) | - | {note} | | |")
        lines.append("")
    return "\n".join(lines)


def overall_section(order: list[dict]) -> str:
    """Methods by their mean rank over the tasks (those ranked on every task first)."""
    ranks: dict[str, dict[str, int]] = {}
    for s in order:
        for i, r in enumerate(s["table"], 1):
            ranks.setdefault(r["method"], {})[s["task"]] = i
    tasks = [s["task"] for s in order]

    def key(name: str) -> tuple:
        got = ranks[name]
        return (-len(got), sum(got.values()) / len(got), name)

    lines = ["### Overall", "",
             "Mean rank by gap over the task tables below (1 is best; a method missing from a task "
             "is ranked after those that ran on all of them).", "",
             "| method | mean rank | " + " | ".join(tasks) + " |",
             "|---|---|" + "---|" * len(tasks)]  # fmt: skip
    for name in sorted(ranks, key=key):
        got = ranks[name]
        cells = " | ".join(str(got.get(t, "-")) for t in tasks)
        lines.append(f"| {name} | {sum(got.values()) / len(got):.2f} | {cells} |")
    return "\n".join(lines) + "\n"


def render(summaries: list[dict], images: dict[str, str]) -> str:
    tasks = [s["task"] for s in summaries]
    if len(set(tasks)) != len(tasks):
        raise UsageError(f"one run folder per task, got tasks {tasks}")
    order = sorted(summaries, key=lambda s: (TASK_ORDER + (s["task"],)).index(s["task"]))
    tables = []
    for s in order:
        try:
            tables.append(task_section(s, images.get(s["task"])))
        except (KeyError, TypeError, ValueError) as exc:  # a damaged or foreign summary
            raise UsageError(
                f"{s['folder']}: summary.json is not a comparison summary "
                f"({type(exc).__name__}: {exc})"
            ) from None
    return "\n".join([overall_section(order), *tables, method_sections(order)])


def write(folders: list[Path], page: Path) -> str:
    """Replace the marked section of ``page`` with the tables of ``folders``."""
    summaries = [load(f) for f in folders]
    text = page.read_text() if page.exists() else ""
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise UsageError(f"{page} needs the markers {START} and {END}, in that order")
    plots = {s["task"]: s["folder"] / "gap_vs_evals.png" for s in summaries}
    images = {t: f"leaderboard-{t}.png" for t, plot in plots.items() if plot.exists()}
    body = render(summaries, images)  # first: a damaged summary changes nothing
    for s in summaries:
        record = page.parent / RECORDS / s["folder"].name
        record.mkdir(parents=True, exist_ok=True)
        for name in RECORD_FILES:
            if (s["folder"] / name).exists():
                shutil.copyfile(s["folder"] / name, record / name)
    for task, name in images.items():
        shutil.copyfile(plots[task], page.parent / name)
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    page.write_text(f"{head}{START}\n\n{body}\n{END}{tail}")
    return body


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sampleopt.compare.leaderboard",
                                 description=__doc__.split("\n\n")[0])  # fmt: skip
    ap.add_argument("folders", nargs="+", type=Path, help="completed `sampleopt compare` folders")
    ap.add_argument("--page", type=Path, default=Path("docs/leaderboard.md"))
    args = ap.parse_args(argv)
    try:
        write(args.folders, args.page)
    except UsageError as exc:
        print(f"leaderboard: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
