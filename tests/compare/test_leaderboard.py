"""The leaderboard page is generated from completed comparison folders: one table per
task in the documented order, methods in their ranked order, each row traceable to its
folder, and bad folders or pages refused with exit code 2."""

from __future__ import annotations

import json

import pytest

from sampleopt.compare.leaderboard import END, START, main


def row(method, gap):
    return {
        "method": method, "seeds": 3, "gap_mean": gap, "gap_se": 0.01,
        "objective_mean": gap - 1.0, "objective_se": 0.01, "reward_mean": 0.5,
        "reward_se": 0.02, "kl_mean": 0.3, "kl_se": 0.01, "fd_star_mean": 0.2,
        "fd_star_se": 0.05, "network_evals_mean": 1000.0,
        "updates_mean": 10.0, "seconds_mean": 2.0, "peak_rss_mb": 400.0,
    }  # fmt: skip


def folder(tmp_path, name, task, status="completed", plot=True):
    d = tmp_path / name
    d.mkdir()
    summary = {
        "status": status, "task": task, "lam": 1.0, "budget": 1000,
        "optimum": {"objective": -1.0, "objective_se": 0.0, "method": "closed form"},
        "table": [row("adjoint", 0.1), row("guidance", 0.7)],
        "unavailable": [{"method": "tr-bsde", "seed": 0, "reason": "no score here"}],
        "timings_s": {"optimum": 24.0, "base": 6.0, "units": 270.0}, "processes": 2,
        "base": {"gap": 0.9, "objective": -0.1, "reward": 0.1, "kl": 0.0, "fd_star": 3.0},
    }  # fmt: skip
    (d / "summary.json").write_text(json.dumps(summary))
    if plot:
        (d / "gap_vs_evals.png").write_bytes(b"png")
    return d


def page(tmp_path, markers=True):
    p = tmp_path / "docs" / "leaderboard.md"
    p.parent.mkdir(exist_ok=True)
    p.write_text("# title\n\nintro\n\n" + (f"{START}\nold\n{END}\n" if markers else "") + "tail\n")
    return p


def test_the_page_is_generated_between_its_markers(tmp_path):
    p = page(tmp_path)
    a = folder(tmp_path, "compare-subspace", "subspace")
    b = folder(tmp_path, "compare-bimodal", "bimodal", plot=False)
    assert main([str(a), str(b), "--page", str(p)]) == 0
    text = p.read_text()
    assert text.startswith("# title\n\nintro\n") and text.endswith("tail\n")
    assert "old" not in text
    assert text.index("### bimodal") < text.index("### subspace")  # the documented order
    assert text.index("| 1 | adjoint |") < text.index("| 2 | guidance |")
    assert "| - | *base model, not fine-tuned* | 0.9 | -0.1 | 0.1 | 0 | 3 |" in text
    assert "from `compare-subspace`" in text and "tr-bsde (seed 0) did not run: no score" in text
    assert "J* = -1 (closed form)" in text  # an exact optimum has no ± 0
    assert "Wall time 5.0 min on 2 processes: optimum 24 s, base 6 s, units 270 s." in text
    # the overall ranking first: mean rank over the tasks, in the documented task order
    assert text.index("### Overall") < text.index("### bimodal")
    assert "| method | mean rank | bimodal | subspace |" in text
    assert "| adjoint | 1.00 | 1 | 1 |" in text and "| guidance | 2.00 | 2 | 2 |" in text
    assert (p.parent / "leaderboard-subspace.png").read_bytes() == b"png"
    record = p.parent / "leaderboard-runs" / "compare-subspace" / "summary.json"
    assert record.read_text() == (a / "summary.json").read_text()
    assert "leaderboard-bimodal.png" not in text
    # one section per method, its rows linking back to the tasks' tables
    by_method = text[text.index("### By method") :]
    adjoint = by_method[by_method.index("#### method: adjoint") :].split("####")[1]
    assert "| [bimodal](#bimodal) | 1 of 2 | 0.1 ± 0.01 | 1,000 | `compare-bimodal` |" in adjoint
    tr = by_method[by_method.index("#### method: tr-bsde") :].split("####")[1]
    assert "| [subspace](#subspace) | - | did not run: no score here |" in tr
    ppo = by_method[by_method.index("#### method: ppo") :].split("####")[1]
    assert "not in this comparison" in ppo


def test_bad_folders_and_pages_exit_2(tmp_path, capsys):
    p = page(tmp_path)
    done = folder(tmp_path, "a", "hex")
    running = folder(tmp_path, "b", "mnist", status="running")
    twin = folder(tmp_path, "c", "hex")
    assert main([str(running), "--page", str(p)]) == 2
    assert "not completed" in capsys.readouterr().err
    assert main([str(done), str(twin), "--page", str(p)]) == 2
    assert main([str(tmp_path / "missing"), "--page", str(p)]) == 2
    (tmp_path / "x").mkdir()
    no_markers = page(tmp_path / "x", markers=False)
    assert main([str(done), "--page", str(no_markers)]) == 2


def test_the_overall_ranking_averages_ranks_and_puts_partial_methods_last():
    from sampleopt.compare.leaderboard import overall_section

    def summary(task, methods):
        return {"task": task, "table": [row(m, 0.1 * i) for i, m in enumerate(methods)]}

    order = [summary("bimodal", ["a", "b", "c", "d"]), summary("hex", ["b", "a", "c"]),
             summary("mnist", ["b", "c", "a"])]  # fmt: skip
    lines = [ln for ln in overall_section(order).splitlines() if ln.startswith("| ")][1:]
    assert lines == [
        "| b | 1.33 | 2 | 1 | 1 |",
        "| a | 2.00 | 1 | 2 | 3 |",
        "| c | 2.67 | 3 | 3 | 2 |",
        "| d | 4.00 | 4 | - | - |",  # ranked on one task only: after the others
    ]


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s["base"].pop("gap"),
        lambda s: s["table"][0].pop("gap_mean"),
        lambda s: s.pop("task"),
        lambda s: s.update(processes="two"),
        lambda s: s.update(timings_s={"units": "long"}),
    ],
    ids=["base-row", "table-row", "no-task", "processes", "timings"],
)
def test_a_damaged_summary_exits_2_and_changes_nothing(tmp_path, capsys, damage):
    p = page(tmp_path)
    before = p.read_text()
    d = folder(tmp_path, "compare-hex", "hex")
    summary = json.loads((d / "summary.json").read_text())
    damage(summary)
    (d / "summary.json").write_text(json.dumps(summary))
    assert main([str(d), "--page", str(p)]) == 2
    err = capsys.readouterr().err
    assert "not a comparison summary" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert p.read_text() == before
    assert not (p.parent / "leaderboard-runs").exists()
    assert not (p.parent / "leaderboard-hex.png").exists()
