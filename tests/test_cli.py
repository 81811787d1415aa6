"""`python -m fusedrnn`: end to end in a subprocess, as a user runs it, and
its failure path in-process with a deliberately wrong kernel for each cell.
`python -m fusedrnn bench` the same way, and its usage errors."""

import importlib.util
import re
import subprocess
import sys

import pytest

import fusedrnn
from fusedrnn import _bench, _bench_steps, _cli, _kernel
from fusedrnn._checks import BFLOAT16


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "fusedrnn", *args], capture_output=True,
                          text=True, timeout=300)


CELLS = ("rnn", "lstm", "gru")
# bfloat16 is checked where ml_dtypes is installed (the test extra has it)
DTYPES = ("float32", "float64") + (("bfloat16",) if BFLOAT16 is not None else ())


def table_rows(stdout):
    """{(cell, shape, mode)} of the timing table's rows."""
    return {(words[0], words[1], words[4]) for words in map(str.split, stdout.splitlines())
            if len(words) > 4 and words[3] in ("padded", "packed") and words[4] in ("fwd", "fwd+bwd")}


def check_verdicts(stdout):
    """{(cell, dtype): PASS or FAIL} from the check's lines."""
    return {(words[0], words[1]): words[-1] for words in map(str.split, stdout.splitlines())
            if words and words[-1] in ("PASS", "FAIL")}


def verdicts(failing=None):
    """What check_verdicts reads when only the cell `failing` fails."""
    return {(cell, dtype): "FAIL" if cell == failing else "PASS"
            for cell in CELLS for dtype in DTYPES}


@pytest.fixture(scope="module")
def quick():
    return run_cli("--quick")


def test_quick_exits_0(quick):
    assert quick.returncode == 0, quick.stderr


def test_quick_check_passes_for_every_cell_and_dtype(quick):
    assert check_verdicts(quick.stdout) == verdicts()


def test_quick_times_every_cell_shape_and_mode(quick):
    """L for the rnn only: the reference's LSTM and GRU are slow there."""
    assert table_rows(quick.stdout) == {(cell, shape, mode) for cell in CELLS
                                        for shape in ("SML" if cell == "rnn" else "SM")
                                        for mode in ("fwd", "fwd+bwd")}


def test_no_bench_checks_without_timing():
    result = run_cli("--no-bench")
    assert result.returncode == 0, result.stderr
    assert check_verdicts(result.stdout) == verdicts()
    assert table_rows(result.stdout) == set()


def bfloat16_line(stdout):
    return next(line for line in stdout.splitlines() if line.startswith("bfloat16 "))


@pytest.mark.skipif(BFLOAT16 is None, reason="ml_dtypes is not installed")
def test_the_report_says_how_bfloat16_runs(quick):
    """Stored as bf16, maths in float32; the products on the bf16 dot
    product where the active ISA (the report's, the default, here too) has
    it on this CPU, else in float32; its measured peak beside float32's
    when it does, only where the report times. test_bfloat16 checks that
    the products are the ones said."""
    dot = _kernel.bf16_dot()
    expected = (f"bfloat16 stored as bf16, maths in float32; products under the "
                f"{fusedrnn.get_isa()} kernels: "
                + ("bf16 dot product (AVX512_BF16, vdpbf16ps), float32 sums" if dot else
                   "float32 FMA on the widened values (no bf16 dot product)"))
    assert bfloat16_line(run_cli("--no-bench").stdout) == expected
    timed = bfloat16_line(quick.stdout)
    assert timed.startswith(expected)
    assert ("GFLOP/s, float32's" in timed) == dot, timed


def test_without_ml_dtypes_bfloat16_is_skipped_and_says_why():
    """ml_dtypes hidden from a child (an import of it fails): the report
    says bfloat16 is skipped and what to install, and checks the other
    dtypes, exiting 0."""
    child = subprocess.run(
        [sys.executable, "-c", "import sys\nsys.modules['ml_dtypes'] = None\n"
         "from fusedrnn import _cli\nsys.exit(_cli.main(['--no-bench']))"],
        capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    assert bfloat16_line(child.stdout) == (
        "bfloat16 skipped, not checked: bfloat16 needs the ml_dtypes package "
        "(pip install ml_dtypes, or fusedrnn[bfloat16])")
    assert check_verdicts(child.stdout) == {(cell, dtype): "PASS" for cell in CELLS
                                            for dtype in ("float32", "float64")}


def make_wrong(monkeypatch, function, index, error):
    """fusedrnn.`function` with its result's element `index` off by `error`;
    a bfloat16 result by 100 times that, which stays above its tolerance
    (3e-2 against float32's 2e-4) and its rounding (2^-8 relative)."""
    right = getattr(fusedrnn, function)

    def wrong(*args, **kwargs):
        result = right(*args, **kwargs)
        parts = list(result)
        wide = parts[index].dtype.itemsize > 2
        parts[index] = parts[index] + (error if wide else 100 * error)
        return type(result)(*parts) if hasattr(result, "_fields") else tuple(parts)

    monkeypatch.setattr(fusedrnn, function, wrong)


# h_n rather than y, and gradients past the first: a NaN past the first
# compared array must not slip through as a comparison that is merely false.
WRONG = [("rnn", "rnn_forward", 1),  # h_n
         ("lstm", "lstm_forward", 2),  # c_n
         ("lstm", "lstm_backward", 2),  # dc0
         ("gru", "gru_forward", 1),  # h_n
         ("gru", "gru_backward", 5)]  # db_hh


@pytest.mark.parametrize("error", [1e-3, float("nan")])
@pytest.mark.parametrize("cell, function, index", WRONG)
def test_wrong_kernel_fails(monkeypatch, capsys, cell, function, index, error):
    """An output or gradient of one cell off by `error` must FAIL that cell
    for every dtype, and only that cell, and exit 1."""
    make_wrong(monkeypatch, function, index, error)
    assert _cli.main(["--no-bench"]) == 1
    assert check_verdicts(capsys.readouterr().out) == verdicts(failing=cell)


# --- bench ------------------------------------------------------------------

BENCH_QUICK = ("bench", "--quick", "--shapes", "S", "--threads", "1")


def bench_header(stdout):
    return next(line for line in stdout.splitlines() if line.startswith("cell ")).split()


def bench_rows(stdout):
    """The timing table's rows, split into words."""
    return [words for words in map(str.split, stdout.splitlines())
            if len(words) > 4 and words[3] in ("padded", "packed") and words[4] in ("fwd", "fwd+bwd")]


def test_bench_quick_prints_a_row_per_cell_and_mode():
    result = run_cli(*BENCH_QUICK, "--compare")  # --compare alone: fusedrnn only
    assert result.returncode == 0, result.stderr
    assert bench_header(result.stdout) == ["cell", "shape", "T,B,D,H", "seq", "mode", "dtype",
                                           "threads", "fusedrnn", "GFLOP/s", "%", "peak"]
    assert [words[:7] for words in bench_rows(result.stdout)] == [
        [cell, "S", "100,1,64,64", seq, mode, "float32", "1"]
        for cell in CELLS for seq in ("padded", "packed") for mode in ("fwd", "fwd+bwd")]


def test_bench_seq_picks_the_layouts():
    result = run_cli(*BENCH_QUICK, "--compare", "--cell", "lstm", "--seq", "packed")
    assert result.returncode == 0, result.stderr
    assert [words[3] for words in bench_rows(result.stdout)] == ["packed", "packed"]


def test_bench_cell_picks_the_cells():
    result = run_cli(*BENCH_QUICK, "--compare", "--cell", "gru", "lstm")
    assert result.returncode == 0, result.stderr
    assert [words[0] for words in bench_rows(result.stdout)] == ["gru"] * 4 + ["lstm"] * 4


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_bench_compares_with_torch():
    """torch.nn.RNN, LSTM and GRU next to the drop-ins that replace them,
    padded and packed."""
    result = run_cli(*BENCH_QUICK, "--compare", "torch")
    assert result.returncode == 0, result.stderr
    assert bench_header(result.stdout)[-4:] == ["fusedrnn.torch", "speed-up", "torch", "speed-up"]
    rows = bench_rows(result.stdout)
    assert [words[0] for words in rows] == [cell for cell in CELLS for _ in range(4)]
    for words in rows:
        # Each column: time, "ms", speed-up.
        assert words[-1].endswith("x") and words[-4].endswith("x") and words[-5] == "ms"
    assert "FAIL" not in result.stdout


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_bench_compares_with_compiled_torch(capsys):
    """torch-compiled: torch's module and the drop-in, each under torch.compile,
    checked against fusedrnn like the others."""
    assert _cli.main([*BENCH_QUICK, "--compare", "torch-compiled", "--cell", "gru",
                      "--seq", "padded"]) == 0
    out = capsys.readouterr().out
    assert bench_header(out)[-4:] == ["fusedrnn.torch-compiled", "speed-up", "torch-compiled",
                                      "speed-up"]
    rows = bench_rows(out)
    assert len(rows) == 2 and all(words[-1].endswith("x") for words in rows)
    assert "FAIL" not in out


def test_bench_compares_with_the_reference():
    result = run_cli(*BENCH_QUICK, "--compare", "reference", "--cell", "lstm", "gru")
    assert result.returncode == 0, result.stderr
    assert bench_header(result.stdout)[-2:] == ["reference", "speed-up"]
    rows = bench_rows(result.stdout)
    assert len(rows) == 8 and all(words[-1].endswith("x") for words in rows)
    assert "FAIL" not in result.stdout


@pytest.mark.parametrize("cell, function, index", [("lstm", "lstm_backward", 6),  # db_hh
                                                   ("gru", "gru_forward", 1)])  # h_n
def test_bench_fails_when_results_disagree(monkeypatch, capsys, cell, function, index):
    """A compared implementation's results are checked against fusedrnn's
    after its timing: with fusedrnn's wrong, the row is followed by a FAIL
    naming the array, and the command exits 1."""
    make_wrong(monkeypatch, function, index, 1e-2)
    assert _cli.main([*BENCH_QUICK, "--cell", cell, "--compare", "reference"]) == 1
    name = {"lstm_backward": "db_hh", "gru_forward": "h_n"}[function]
    assert f"FAIL, disagrees with fusedrnn: reference: {name}:" in capsys.readouterr().out


def listed_choices(stderr):
    """The valid names argparse lists after an invalid choice: quoted up to
    Python 3.12, bare from 3.13 on."""
    return re.search(r"\(choose from (.*)\)$", stderr, re.M)[1].replace("'", "")


def test_bench_unknown_cell_is_a_usage_error():
    result = run_cli("bench", "--cell", "rnn", "elman")
    assert result.returncode == 2
    assert "argument --cell: invalid choice: 'elman'" in result.stderr
    assert listed_choices(result.stderr) == "rnn, lstm, gru"
    assert result.stdout == ""


def test_bench_unknown_shape_is_a_usage_error():
    result = run_cli("bench", "--shapes", "S", "XXL")
    assert result.returncode == 2
    assert "argument --shapes: invalid choice: 'XXL'" in result.stderr
    assert listed_choices(result.stderr) == "S, M, L, XL"
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


@pytest.mark.parametrize("compare", [[], ["torch"]])
def test_bench_plot_writes_a_png(tmp_path, capsys, compare):
    """Every cell on it, with torch and the drop-ins' bars too."""
    pytest.importorskip("matplotlib")
    if compare:
        pytest.importorskip("torch")
    path = tmp_path / "bench.png"
    assert _cli.main([*BENCH_QUICK, "--compare", *compare, "--plot", str(path)]) == 0
    assert path.read_bytes().startswith(b"\x89PNG")


def loop_rows(stdout):
    """The in-loop table's rows: (cell, mode, threads, speed-up) of the
    training steps and (threads, ratio) of the NumPy API after a matmul."""
    steps, numpy = [], []
    for words in map(str.split, stdout.splitlines()):
        if len(words) == 7 and words[0] in CELLS and words[1] in ("eager", "compiled"):
            steps.append((words[0], words[1], int(words[2]), words[5]))
        elif len(words) == 4 and words[0].isdigit() and words[3].endswith("x"):
            numpy.append((int(words[0]), words[3]))
    return steps, numpy


def test_bench_loop_cases(capsys):
    """--cases loop: the drop-ins in a training step against torch.nn, each
    cell, eager and compiled, 1 and 2 threads (with torch), and the NumPy
    API after a matmul; no kernel table."""
    compare = ["torch-compiled"] if importlib.util.find_spec("torch") else []
    assert _cli.main(["bench", "--quick", "--cases", "loop", "--threads", "1", "2",
                      "--compare", *compare]) == 0
    out = capsys.readouterr().out
    steps, numpy = loop_rows(out)
    assert not bench_rows(out)
    if compare:
        assert [row[:3] for row in steps] == [(cell, mode, n) for cell in CELLS
                                              for mode in ("eager", "compiled") for n in (1, 2)]
        assert all(row[3].endswith("x") for row in steps)
        assert out.count("2-thread / 1-thread") == 6
    assert [n for n, _ in numpy] == [1, 2]


def steps_tables(stdout):
    """{header: rows} of the tables in `stdout`, split into words: a header is
    a line whose first word is "cell", its rows the lines after it up to the
    first whose first word is not a cell's name."""
    tables, rows = {}, None
    for words in map(str.split, stdout.splitlines()):
        if words[:1] == ["cell"]:
            rows = tables.setdefault(tuple(words), [])
        elif rows is not None and words[:1] and words[0] in CELLS:
            rows.append(words)
        else:
            rows = None
    return tables


def timed(words, unit):
    """The numbers of `words` laid out as number, unit, number, unit, ..."""
    assert words[1::2] == [unit] * (len(words) // 2), words
    return [float(number) for number in words[::2]]


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_bench_steps_quick_tables():
    """--steps: the cells in a loop, streaming and per-call tables, a row for
    each batch, mode and size, every number a number and every derived
    column derived from the others; no kernel table."""
    result = run_cli("bench", "--quick", "--steps", "--cell", "gru")
    assert result.returncode == 0, result.stderr
    assert "FAIL" not in result.stdout and not bench_rows(result.stdout)
    (loop_header, loop), (stream_header, stream), (call_header, calls) = \
        steps_tables(result.stdout).items()
    peak_of = {dtype: float(re.search(rf"{label} \(([\d.]+) GFLOP/s", result.stdout)[1])
               for dtype, label in (("float32", "one thread's FMA peak"),
                                    ("bfloat16", "the bf16 peak"))}

    assert loop_header == ("cell", "B", "D=H", "mode", "threads", "fusedrnn.torch", "torch.nn",
                           "ratio", "GFLOP/s", "%", "peak")
    assert [words[:5] for words in loop] == [
        ["gru", b, "64", mode, "1"] for b in ("1", "32")
        for mode in ("fwd", "fwd+bwd", "online", "fwd/ac", "fwd+bwd/ac")]
    for words in loop:
        fused, torch_nn = timed(words[5:9], "ms")
        assert words[9].endswith("x") and words[11].endswith("%") and len(words) == 12
        assert float(words[9][:-1]) == pytest.approx(torch_nn / fused, abs=0.01, rel=0.01)
        # % of the FMA peak, or of the bf16 peak under autocast, from
        # GFLOP/s printed to 0.01 (a slow row at H = 64 makes 0.08 of 191:
        # 0.0%)
        gflops, percent = float(words[10]), float(words[11][:-1])
        peak = peak_of["bfloat16" if words[3].endswith("/ac") else "float32"]
        assert gflops > 0 and percent == pytest.approx(100 * gflops / peak,
                                                        abs=0.06 + 100 * 0.005 / peak)

    assert stream_header == ("cell", "D=H", "threads", "fusedrnn.torch", "GB/s", "numpy", "GB/s",
                             "numpy-packed", "GB/s", "torch-cell", "GB/s", "torch-layer", "GB/s")
    assert [words[:3] for words in stream] == [["gru", "128", "1"]]
    for words in stream:
        for impl in range(5):
            seconds = timed(words[3 + 3 * impl:5 + 3 * impl], "us")[0] * 1e-6
            # The weights' bytes (G = 3) over the step's time.
            assert float(words[5 + 3 * impl]) == pytest.approx(
                3 * 128 * 256 * 4 / seconds / 1e9, abs=0.1, rel=0.01)
    bandwidth = next(line for line in result.stdout.splitlines()
                     if line.startswith("one core's memory bandwidth: "))
    assert float(bandwidth.split()[4]) > 0 and bandwidth.split()[5] == "GB/s"

    assert call_header == ("cell", "shape", "T,B,D,H", "mode", "threads", "NumPy-API",
                           "fusedrnn.torch", "over", "floor", "target", "met")
    assert [words[:5] for words in calls] == [
        ["gru", shape, dims, mode, "1"] for shape, dims in (("S", "100,1,64,64"),
                                                            ("T=1", "1,1,64,64"))
        for mode in ("fwd", "fwd+bwd")]
    for words in calls:
        numpy_api, fused, over, floor, target = timed(words[5:15], "us")
        assert over == pytest.approx(fused - numpy_api, abs=0.15)
        assert target == pytest.approx(floor + {"fwd": 10, "fwd+bwd": 15}[words[3]], abs=0.15)
        if abs(over - target) > 0.1:   # printed to 0.1 us: closer, either verdict may be right
            assert words[15] == ("yes" if over < target else "no")
        assert words[15] in ("yes", "no")


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_bench_steps_fails_when_results_disagree(monkeypatch, capsys):
    """The drop-in's results are checked against the NumPy API's: with the
    NumPy API's y wrong, both per-call rows of each shape FAIL, and the
    command exits 1."""
    make_wrong(monkeypatch, "gru_forward", 0, 1e-2)
    assert _cli.main(["bench", "--quick", "--steps", "--cell", "gru"]) == 1
    assert capsys.readouterr().out.count("FAIL: fusedrnn.torch: y:") == 4


def test_bench_steps_without_torch(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    assert _cli.main(["bench", "--quick", "--steps"]) == 0
    out = capsys.readouterr().out
    assert "torch is not installed" in out and not steps_tables(out)


# --- bench in bfloat16 -------------------------------------------------------

needs_bfloat16 = pytest.mark.skipif(importlib.util.find_spec("ml_dtypes") is None,
                                    reason="ml_dtypes is not installed")
BF16_QUICK = (*BENCH_QUICK, "--dtype", "bfloat16")


def worst_errors(stdout):
    """{implementation: its worst error} from the bfloat16 lines under the table."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("bfloat16, the worst error"))
    errors = {}
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        impl, error = line.split()[:2]
        errors[impl] = float(error)
    return errors


def compared(words, count):
    """The time (a float) or status ("-", "missing", ...) of each of the
    `count` compared implementations in a row of the table."""
    values, i = [], 11   # past fusedrnn's columns
    for _ in range(count):
        timed = words[i + 1] == "ms"
        values.append(float(words[i]) if timed else words[i])
        i += 3 if timed else 2
    return values


def peaks(stdout):
    """{dtype: GFLOP/s} from the peak line above the table."""
    line = next(line for line in stdout.splitlines() if line.startswith("peak of one thread"))
    # "float32 190.2 GFLOP/s, bfloat16 191.4 GFLOP/s (bfloat16: ...)": the
    # remark after a CPU without a bf16 dot product holds no figure
    return {dtype: float(value)
            for dtype, value in re.findall(r"(\w+) ([\d.]+) GFLOP/s", line.split(": ", 1)[1])}


@needs_bfloat16
def test_bench_bfloat16_rows_and_their_peak(capsys):
    """--dtype bfloat16: the NumPy API on bf16 arrays, % peak of the bf16
    peak (twice the float32 one with a bf16 dot product: taking the float32
    peak would double it), fusedrnn checked against the reference (its error
    above 0: not compared with itself)."""
    assert _cli.main([*BF16_QUICK, "--dtype", "float32", "bfloat16", "--compare",
                      "--cell", "lstm", "--seq", "padded"]) == 0
    out = capsys.readouterr().out
    peak = peaks(out)
    assert set(peak) == {"float32", "bfloat16"}
    rows = bench_rows(out)
    assert [(words[4], words[5]) for words in rows] == [
        (mode, dtype) for mode in ("fwd", "fwd+bwd") for dtype in ("float32", "bfloat16")]
    for words in rows:
        gflops, percent = float(words[9]), float(words[10].rstrip("%"))
        assert percent == pytest.approx(100 * gflops / peak[words[5]], abs=0.06, rel=0.01)
    errors = worst_errors(out)
    assert list(errors) == ["fusedrnn"] and 0 < errors["fusedrnn"] < _bench.BF16_AGREEMENT
    assert "FAIL" not in out


@needs_bfloat16
def test_bench_bfloat16_fails_when_fusedrnn_is_off_the_reference(monkeypatch, capsys):
    """In bfloat16 fusedrnn's own results are checked against the reference:
    h_n off by 1 (beyond the bench's bf16 tolerance) is a FAIL and exit 1."""
    make_wrong(monkeypatch, "gru_forward", 1, 1.0)
    assert _cli.main([*BF16_QUICK, "--compare", "--cell", "gru", "--seq", "padded"]) == 1
    out = capsys.readouterr().out
    assert out.count("FAIL, disagrees with the reference: fusedrnn: h_n:") == 2  # fwd, fwd+bwd
    assert worst_errors(out)["fusedrnn"] > _bench.BF16_AGREEMENT


@needs_bfloat16
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_bench_bfloat16_against_torch_and_onednn(capsys):
    """torch under autocast and the drop-in, oneDNN's bf16 primitives (if
    installed) and ONNX Runtime ('-', with a note): each timed, each within
    the bench's bf16 tolerance of the reference, padded and packed."""
    assert _cli.main([*BF16_QUICK, "--cell", "rnn", "--compare", "onednn", "onnxruntime",
                      "torch"]) == 0
    out = capsys.readouterr().out
    assert bench_header(out)[11:19:2] == ["fusedrnn.torch", "onednn", "onnxruntime", "torch"]
    assert "torch in bfloat16: its float32 modules under torch.autocast" in out
    onednn = "onednn: not available" not in out
    rows = bench_rows(out)
    assert [(words[3], words[4]) for words in rows] == [
        (seq, mode) for seq in ("padded", "packed") for mode in ("fwd", "fwd+bwd")]
    for words in rows:
        assert words[5] == "bfloat16"
        drop_in, onednn_time, onnxruntime, torch = compared(words, 4)
        assert drop_in > 0 and torch > 0 and onnxruntime == "-"
        if not onednn:
            assert onednn_time == "missing"
        elif words[3] == "packed":
            assert onednn_time == "-"   # the outside peers time padded only
        else:
            assert onednn_time > 0
    assert "onnxruntime: ONNX Runtime's CPU RNN operators are float32 only" in out
    errors = worst_errors(out)
    assert {"fusedrnn", "fusedrnn.torch", "torch"} | ({"onednn"} if onednn else set()) \
        == set(errors)
    assert all(0 <= error < _bench.BF16_AGREEMENT for error in errors.values())
    assert errors["torch"] > 0 and "FAIL" not in out and "disagrees" not in out


def test_bench_unknown_dtype_is_a_usage_error():
    result = run_cli("bench", "--dtype", "float16")
    assert result.returncode == 2
    assert "argument --dtype: invalid choice: 'float16'" in result.stderr
    assert listed_choices(result.stderr) == "float32, float64, bfloat16"


def test_bench_bfloat16_without_ml_dtypes_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(_cli._checks, "BFLOAT16", None)  # as when ml_dtypes is not installed
    with pytest.raises(SystemExit) as raised:
        _cli.main(["bench", "--dtype", "bfloat16"])
    assert raised.value.code == 2
    assert "bfloat16 needs the ml_dtypes package (pip install ml_dtypes" in capsys.readouterr().err


@needs_bfloat16
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_bench_bfloat16_with_compiled_torch_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as raised:
        _cli.main(["bench", "--dtype", "float32", "bfloat16", "--compare", "torch-compiled"])
    assert raised.value.code == 2
    err = capsys.readouterr()
    assert "--dtype bfloat16 times torch eagerly under autocast" in err.err
    assert err.out == ""   # stopped before any timing


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
@needs_bfloat16
def test_bench_steps_checks_autocast_rows_within_their_own_tolerance(monkeypatch, capsys):
    """The cell loops under autocast compare torch.nn with fusedrnn.torch
    within AUTOCAST_LOOP_AGREEMENT, the float32 rows within float32's
    tolerance: with the former 0 (torch.nn's bf16 roundings are not
    fusedrnn.torch's) every /ac row and no other FAILs."""
    monkeypatch.setattr(_bench_steps, "AUTOCAST_LOOP_AGREEMENT", 0)
    assert _cli.main(["bench", "--quick", "--steps", "--cell", "gru"]) == 1
    failed, row = set(), None
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  FAIL: "):
            assert line.startswith("  FAIL: torch.nn: ")
            failed.add(tuple(row[1:4]))
        else:
            row = line.split()
    assert failed == {(b, "64", mode) for b in ("1", "32") for mode in ("fwd/ac", "fwd+bwd/ac")}
