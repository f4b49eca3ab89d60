"""scripts/compare_lr_probe.py: every row is seeded on its own, so a row does not depend
on the rows before it (docs/leaderboard-runs/probes.md relies on it), its gap is J - J*,
and bad input gets one line and exit code 2."""

from __future__ import annotations

import pytest

from tests.experiments.test_scripts import load

probe = load("compare_lr_probe")
TINY = ["--task", "bimodal", "--budget", "300", "--eval-n", "16", "--j-star", "1.0"]


def rows(out: str) -> dict[str, list[str]]:
    """Data rows by their probed value, without the timing column."""
    cells = [line.split(" | ") for line in out.splitlines() if line.startswith("| adjoint |")]
    return {c[1]: c[2:3] + c[4:] for c in cells}


def test_a_row_does_not_depend_on_the_rows_before_it(capsys):
    assert probe.main(["adjoint", "1e-3,3e-3", *TINY]) == 0
    both = rows(capsys.readouterr().out)
    assert probe.main(["adjoint", "3e-3", *TINY]) == 0
    alone = rows(capsys.readouterr().out)
    assert list(both) == ["0.001", "0.003"]
    assert alone["0.003"] == both["0.003"]
    assert alone["0.003"] != both["0.001"]  # the setting reached the method
    j, gap = float(both["0.003"][1].split(" ± ")[0]), float(both["0.003"][-1].rstrip(" |"))
    assert gap == pytest.approx(j - 1.0, abs=2e-4)  # gap = J - J*, rounded to 4 places


def test_another_setting_can_be_probed_with_others_fixed(capsys):
    assert probe.main(["guidance", "0.5", "--param", "sigma_y", "--set", "delta=0.1", *TINY]) == 0
    assert "| method | sigma_y |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["adjoint", "abc"], "must be a number"),
        (["adjoint", "nan"], "finite and > 0"),
        (["adjoint", "1e-3,0"], "finite and > 0"),
        (["nope", "1e-3"], "unknown method"),
        (["adjoint", "1e-3", "--task", "nope"], "unknown task"),
        (["adjoint", "1e-3", "--param", "batch_size"], "invalid choice"),
        (["adjoint", "1e-3", "--set", "delta"], "NAME=VALUE"),
        (["adjoint", "1e-3", "--set", "delta=inf"], "finite and > 0"),
        (["adjoint", "1e-3", "--budget", "0"], "--budget must be >= 1"),
        (["adjoint", "1e-3", "--j-star", "nan"], "--j-star finite"),
    ],
)
def test_bad_input_exits_2_with_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        probe.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if "error:" in line]) == 1
