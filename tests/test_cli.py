"""`python -m fusedrnn`: end to end in a subprocess, as a user runs it, and
its failure path in-process with a deliberately wrong kernel."""

import subprocess
import sys

import pytest

import fusedrnn
from fusedrnn import _cli


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fusedrnn", *args], capture_output=True,
                          text=True, timeout=300)


def table_rows(stdout):
    """{(shape, mode)} of the timing table's rows."""
    return {(words[0], words[2]) for words in map(str.split, stdout.splitlines())
            if len(words) > 2 and words[2] in ("fwd", "fwd+bwd")}


def check_verdicts(stdout):
    """{dtype: PASS or FAIL} from the check's lines."""
    return {words[0]: words[-1] for words in map(str.split, stdout.splitlines())
            if words and words[-1] in ("PASS", "FAIL")}


@pytest.fixture(scope="module")
def quick():
    return run_cli("--quick")


def test_quick_exits_0(quick):
    assert quick.returncode == 0, quick.stderr


def test_quick_check_passes_for_both_dtypes(quick):
    assert check_verdicts(quick.stdout) == {"float32": "PASS", "float64": "PASS"}


def test_quick_times_every_shape_and_mode(quick):
    assert table_rows(quick.stdout) == {(shape, mode) for shape in "SML"
                                        for mode in ("fwd", "fwd+bwd")}


def test_no_bench_checks_without_timing():
    result = run_cli("--no-bench")
    assert result.returncode == 0, result.stderr
    assert check_verdicts(result.stdout) == {"float32": "PASS", "float64": "PASS"}
    assert table_rows(result.stdout) == set()


@pytest.mark.parametrize("error", [1e-3, float("nan")])
def test_wrong_kernel_fails(monkeypatch, capsys, error):
    """An h_n off by `error` must FAIL for both dtypes and exit 1. h_n rather
    than y: a NaN past the first compared array must not slip through as a
    comparison that is merely false."""
    forward = fusedrnn.rnn_forward

    def wrong_forward(*args, **kwargs):
        y, h_n = forward(*args, **kwargs)
        return y, h_n + error

    monkeypatch.setattr(fusedrnn, "rnn_forward", wrong_forward)
    assert _cli.main(["--no-bench"]) == 1
    assert check_verdicts(capsys.readouterr().out) == {"float32": "FAIL", "float64": "FAIL"}
