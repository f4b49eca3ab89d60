"""Property-based fuzz of ``--set`` overrides (hypothesis): whatever a user types, the
command line answers in one line, exit code 0 (a valid config, printed by --dry-run)
or 2 (a usage error naming the problem), and never a traceback."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sampleopt.cli import main
from sampleopt.experiments import EXPERIMENTS
from sampleopt.training import PRESETS, TrainConfig

EXAMPLES = 150  # per command; the figure in docs/reliability.md is their sum

TARGETS = {
    **{("run", name): exp.config_cls for name, exp in EXPERIMENTS.items()},
    ("train", "hex"): TrainConfig,
}

NASTY = [
    "", " ", ",", ",,", "1,,2", "()", "[]", "[1]", "nan", "inf", "-inf", "1e400", "-0",
    "true", "yes", "0x10", "1_000", "9" * 30, "-" + "9" * 25, "c1", "c[1", ".*", "é",
    "0.1,0.2,", "a b", "None", "x" * 300, "1/0", "\t", "=", "==", "key=value",
]  # fmt: skip

values = st.one_of(
    st.sampled_from(NASTY),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
    st.lists(st.floats(-10, 10), max_size=4).map(lambda v: ",".join(map(str, v))),
)


def overrides(cls):
    keys = st.one_of(
        st.sampled_from([f.name for f in dataclasses.fields(cls)]),
        st.text(min_size=0, max_size=8),
    )
    return st.lists(st.tuples(keys, values), min_size=1, max_size=3)


@pytest.mark.parametrize("target", sorted(TARGETS), ids=lambda t: f"{t[0]}-{t[1]}")
def test_fuzzed_overrides_get_one_line_and_exit_0_or_2(target, capsys, tmp_path):
    command, name = target
    assert name in PRESETS or name in EXPERIMENTS

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(overrides(TARGETS[target]))
    def check(items):
        args = [command, name, "--dry-run", "--out", str(tmp_path / "never")]
        for key, value in items:
            args += ["--set", f"{key}={value}"]
        try:
            rc = main(args)
        except SystemExit as exc:  # argparse: a value it cannot read as an argument
            rc = exc.code
        out = capsys.readouterr()
        assert rc in (0, 2), out
        assert "Traceback" not in out.err
        if rc == 2 and out.err.startswith("sampleopt: error:"):
            assert out.err.count("\n") == 1, out.err
        assert not (tmp_path / "never").exists()  # --dry-run makes no folder

    check()
