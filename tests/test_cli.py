"""`python -m fusedrnn`: end to end in a subprocess, as a user runs it, and
its failure path in-process with a deliberately wrong kernel. `python -m
fusedrnn bench` the same way, and its usage errors."""

import importlib.util
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


# --- bench ------------------------------------------------------------------

BENCH_QUICK = ("bench", "--quick", "--shapes", "S", "--threads", "1")


def bench_header(stdout):
    return next(line for line in stdout.splitlines() if line.startswith("shape")).split()


def bench_rows(stdout):
    """The timing table's rows, split into words."""
    return [words for words in map(str.split, stdout.splitlines())
            if len(words) > 2 and words[2] in ("fwd", "fwd+bwd")]


def test_bench_quick_prints_a_row_per_mode():
    result = run_cli(*BENCH_QUICK, "--compare")  # --compare alone: fusedrnn only
    assert result.returncode == 0, result.stderr
    assert bench_header(result.stdout) == ["shape", "T,B,D,H", "mode", "dtype", "threads",
                                           "fusedrnn", "GFLOP/s", "%", "peak"]
    assert [words[:5] for words in bench_rows(result.stdout)] == [
        ["S", "100,1,64,64", "fwd", "float32", "1"],
        ["S", "100,1,64,64", "fwd+bwd", "float32", "1"]]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_bench_compares_with_torch():
    result = run_cli(*BENCH_QUICK, "--compare", "torch")
    assert result.returncode == 0, result.stderr
    assert bench_header(result.stdout)[-4:] == ["fusedrnn.torch", "speed-up", "torch", "speed-up"]
    rows = bench_rows(result.stdout)
    assert len(rows) == 2 and all(words[-1].endswith("x") for words in rows)


def test_bench_unknown_shape_is_a_usage_error():
    result = run_cli("bench", "--shapes", "S", "XXL")
    assert result.returncode == 2
    assert "argument --shapes: invalid choice: 'XXL'" in result.stderr
    assert "'XL'" in result.stderr  # the valid names are listed
    assert result.stdout == ""


@pytest.mark.parametrize("args, module", [(["--compare", "torch"], "torch"),
                                          (["--plot", "bench.png"], "matplotlib")])
def test_bench_names_the_missing_module(monkeypatch, capsys, args, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(SystemExit) as raised:
        _cli.main(["bench", *args])
    assert raised.value.code == 2
    assert f"{module} is not installed: pip install {module}" in capsys.readouterr().err


def test_bench_restores_the_thread_count(capsys):
    before = fusedrnn.get_num_threads()
    fusedrnn.set_num_threads(3)
    try:
        assert _cli.main([*BENCH_QUICK, "--compare"]) == 0
        assert fusedrnn.get_num_threads() == 3
    finally:
        fusedrnn.set_num_threads(before)


def test_bench_plot_writes_a_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    assert _cli.main([*BENCH_QUICK, "--compare", "--plot", str(path)]) == 0
    assert path.read_bytes().startswith(b"\x89PNG")
