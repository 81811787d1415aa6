"""The outside peers of `python -m fusedrnn bench` (fusedrnn._peers: oneDNN,
ONNX Runtime, JAX): each installed one computes what fusedrnn computes, for
every cell and mode it has; and one that is missing, fails or disagrees is
reported in its column and a note without stopping the run or changing its
exit status (simulated with stand-in modules)."""

import importlib
import subprocess
import sys
import types

import numpy as np
import pytest

from fusedrnn import _bench, _cli, _peers

CELLS = ("rnn", "lstm", "gru")
# Sizes that are multiples of nothing, with B > 1 and D != H, so that a
# transposed or swapped layout cannot pass.
SHAPE = (7, 3, 5, 6)


def installed(name):
    try:
        _peers.load(name)
    except _peers.PeerUnavailable:
        return False
    return True


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("name", _bench.OUTSIDE)
def test_installed_peer_agrees_with_fusedrnn(name, cell, dtype):
    """Every output and gradient, twice in a row (oneDNN's backward would
    add the second run's weight gradients to the first's unless told not
    to). ONNX Runtime has no backward; oneDNN and ONNX Runtime no float64."""
    if not installed(name):
        pytest.skip(f"{name} is not installed")
    p = _bench.problem(SHAPE, dtype, np.random.default_rng(1), cell)
    try:
        runs = _bench.PEERS[name](cell, p)
    except _peers.Unsupported as e:
        assert dtype == np.float64 and name in ("onednn", "onnxruntime"), e
        return
    assert set(runs) == ({"fwd"} if name == "onnxruntime" else {"fwd", "fwd+bwd"})
    fused = _bench.PEERS["fusedrnn"](cell, p)
    for mode, run in runs.items():
        want = fused[mode]()
        for _ in range(2):
            got = run()
            assert set(got) == set(want)
            assert _bench.disagreements(got, want, dtype) == []


def reference_results(cell, p, mode):
    return _bench.for_mode(_bench.PEERS["reference"](cell, p)["fwd+bwd"](), cell, mode)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("name", _bench.OUTSIDE)
def test_installed_peer_in_bfloat16(name, cell):
    """oneDNN's bf16 primitives: y and h_n come back bf16, c_n and the
    gradients f32 (its configuration: fusedrnn._peers.onednn), every result
    within the bench's bf16 tolerance of the float64 reference on the same
    inputs, twice in a row; ONNX Runtime and JAX have no bfloat16 case."""
    bfloat16 = pytest.importorskip("ml_dtypes").bfloat16
    if not installed(name):
        pytest.skip(f"{name} is not installed")
    p = _bench.problem(SHAPE, bfloat16, np.random.default_rng(1), cell)
    if name != "onednn":
        with pytest.raises(_peers.Unsupported, match="float32"):
            _bench.PEERS[name](cell, p)
        return
    runs = _bench.PEERS[name](cell, p)
    for mode, run in runs.items():
        want = reference_results(cell, p, mode)
        for _ in range(2):
            got = run()
            assert set(got) == set(want)
            assert {name: a.dtype for name, a in got.items()} == {
                name: np.dtype(bfloat16 if name in ("y", "h_n") else np.float32) for name in want}
            assert _bench.disagreements(got, want, bfloat16) == []


@pytest.mark.parametrize("cell", CELLS)
def test_torch_peer_in_bfloat16_runs_under_autocast(cell):
    """torch.nn's module under autocast: y in the dtype autocast_dtypes
    reports (the RNN's bfloat16: autocast did run it), every result within
    the bench's bf16 tolerance of the reference, and off it by more than
    float32 rounding (bf16 products somewhere inside, for every cell)."""
    bfloat16 = pytest.importorskip("ml_dtypes").bfloat16
    pytest.importorskip("torch")
    p = _bench.problem(SHAPE, bfloat16, np.random.default_rng(1), cell)
    runs = _bench.PEERS["torch"](cell, p)
    y_dtype = _bench.autocast_dtypes("torch.nn", cell, ["padded"])["padded"]
    if cell == "rnn":
        assert y_dtype == "bfloat16"
    for mode, run in runs.items():
        got, want = run(), reference_results(cell, p, mode)
        assert got["y"].dtype.name == y_dtype
        assert _bench.disagreements(got, want, bfloat16) == []
        assert _bench.worst_error(got, want)[0] > 1e-4


def test_bfloat16_peer_is_checked_against_the_reference(monkeypatch, capsys):
    """In bfloat16 a peer is checked against the reference, not fusedrnn: one
    returning fusedrnn's results agrees, one off by 1 is a mismatch."""
    pytest.importorskip("ml_dtypes")
    stand_in(monkeypatch, "onednn", off_by(1.0))
    stand_in(monkeypatch, "jax", agreeing)
    status, out, header, rows, notes = bench(capsys, "onednn", "jax", dtype="bfloat16")
    assert status == 0
    assert column(header, rows, "onednn") == ["mismatch", "mismatch"]
    assert all(words[-1] == "jax" for words in rows)
    assert any("onednn" in n and "disagrees with the reference" in n and "y:" in n
               for n in notes)


def stand_in(monkeypatch, name, build, honours=True):
    """fusedrnn._peers.`name` replaced by a module whose build is `build`."""
    module = types.ModuleType(f"fusedrnn._peers.{name}")
    module.describe = lambda: f"{name}: a stand-in"
    module.build = build
    module.set_num_threads = lambda n: None
    module.get_num_threads = lambda: 1
    module.honours_threads = lambda n: honours
    monkeypatch.setitem(sys.modules, module.__name__, module)


def agreeing(cell, p):
    return _bench.PEERS["fusedrnn"](cell, p)


def off_by(error):
    def build(cell, p):
        right = agreeing(cell, p)
        return {mode: (lambda run=run: run() | {"y": run()["y"] + error})
                for mode, run in right.items()}
    return build


def failing_build(cell, p):
    raise RuntimeError("dnnl_lstm_forward_primitive_desc_create: unimplemented")


def failing_run(cell, p):
    def run():
        raise RuntimeError("execute: runtime error")
    return {"fwd": run, "fwd+bwd": run}


# Padded only: the outside peers time full-length sequences ("-" for packed).
BENCH = ["bench", "--quick", "--shapes", "S", "--threads", "1", "--cell", "rnn", "--seq", "padded"]


def bench(capsys, *compare, dtype="float32"):
    status = _cli.main([*BENCH, "--dtype", dtype, "--compare", *compare])
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("cell ")).split()
    rows = [words for words in map(str.split, out.splitlines())
            if len(words) > 4 and words[3] in ("padded", "packed") and words[4] in ("fwd", "fwd+bwd")]
    notes = [line.strip() for line in out.splitlines() if line.startswith("  note: ")]
    return status, out, header, rows, notes


def column(header, rows, name):
    """The words of peer `name`'s time column in each row ("-", "missing",
    ... or a number; the "ms" after a number is its own word)."""
    values = []
    for words in rows:
        # Header words before the peers: cell shape T,B,D,H seq mode dtype
        # threads fusedrnn GFLOP/s % peak; a row's: the same but fusedrnn's "ms".
        i = 11  # the first peer's first word in a row
        for peer in header[11::2]:
            if peer == name:
                values.append(words[i])
                break
            i += 3 if words[i + 1] == "ms" else 2
    return values


def test_missing_peer_is_reported_not_fatal(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "fusedrnn._peers.onnxruntime", None)  # import fails
    stand_in(monkeypatch, "jax", agreeing)
    status, out, header, rows, _ = bench(capsys, "onnxruntime", "jax")
    assert status == 0
    assert "onnxruntime: not available" in out and "pip install onnxruntime onnx" in out
    assert column(header, rows, "onnxruntime") == ["missing", "missing"]
    assert all(words[-1] == "jax" for words in rows)  # the one that ran is the best


def test_peer_failing_to_build_is_reported_not_fatal(monkeypatch, capsys):
    stand_in(monkeypatch, "onednn", failing_build)
    status, out, header, rows, notes = bench(capsys, "onednn")
    assert status == 0
    assert column(header, rows, "onednn") == ["failed", "failed"]
    assert any("failed to build" in n and "unimplemented" in n for n in notes)
    assert all(words[-1] == "-" for words in rows)  # no best peer


def test_peer_failing_to_run_is_reported_not_fatal(monkeypatch, capsys):
    stand_in(monkeypatch, "onednn", failing_run)
    status, _, header, rows, notes = bench(capsys, "onednn")
    assert status == 0
    assert column(header, rows, "onednn") == ["failed", "failed"]
    assert sum("execute: runtime error" in n for n in notes) == 2


def test_disagreeing_peer_is_a_mismatch_not_a_time(monkeypatch, capsys):
    """Not timed as if right: no time, no speed-up, not the best peer."""
    stand_in(monkeypatch, "onednn", off_by(1e-2))
    stand_in(monkeypatch, "jax", agreeing)
    status, _, header, rows, notes = bench(capsys, "onednn", "jax")
    assert status == 0
    assert column(header, rows, "onednn") == ["mismatch", "mismatch"]
    assert all(words[-1] == "jax" for words in rows)
    assert any("onednn" in n and "disagrees with fusedrnn" in n and "y:" in n for n in notes)


def test_best_peer_column(monkeypatch, capsys):
    """best peer's time / fusedrnn's, and its name; a peer not on the row's
    thread count (JAX's fixed pool) is starred and not a candidate."""
    stand_in(monkeypatch, "onednn", agreeing)
    stand_in(monkeypatch, "jax", agreeing, honours=False)
    status, out, header, rows, notes = bench(capsys, "onednn", "jax")
    assert status == 0
    assert header[-4:] == ["speed-up", "vs", "best", "peer"]
    for words in rows:
        assert words[-1] == "onednn" and words[-2].endswith("x")
        assert words[-3].endswith("x*")  # jax's speed-up
    assert any("jax: * its runs were not on 1 thread(s)" in n for n in notes)


def test_peer_on_more_cores_than_threads_is_starred(monkeypatch, capsys):
    """A peer whose runs keep more cores busy than the row's thread count is
    starred and not a candidate, with a note: the process's CPU clock made
    to run twice as fast as the wall clock during its runs only."""
    real = _bench.time.process_time
    extra = [0.0]  # the stand-in's wall time so far: a second core's CPU time

    def two_cores(cell, p):
        right = agreeing(cell, p)

        def run(mode):
            def timed():
                start = _bench.time.perf_counter()
                out = right[mode]()
                extra[0] += _bench.time.perf_counter() - start
                return out
            return timed
        return {mode: run(mode) for mode in right}

    monkeypatch.setattr(_bench.time, "process_time", lambda: real() + extra[0])
    stand_in(monkeypatch, "onednn", two_cores)
    stand_in(monkeypatch, "jax", agreeing)
    status, _, header, rows, notes = bench(capsys, "onednn", "jax")
    assert status == 0
    for words in rows:
        assert words[-1] == "jax"
        assert column(header, [words], "onednn")[0] != "-"
    assert sum("onednn" in n and "cores busy on 1 thread(s)" in n for n in notes) == 2


def test_onednn_keeps_to_the_thread_count_it_runs_on():
    """oneDNN's primitives take their thread count when made: one made on
    2 threads and run on 1 kept 2 cores busy (an RNN forward at L), until
    the binding made them per thread count. CPU time over wall time cannot
    exceed 1 on one thread however loaded the machine is."""
    if not installed("onednn"):
        pytest.skip("onednn is not installed")
    onednn = _peers.load("onednn")
    p = _bench.problem(_bench.SHAPES["L"], np.float32, np.random.default_rng(0), "rnn")
    previous = onednn.get_num_threads()
    try:
        onednn.set_num_threads(2)
        runs = onednn.build("rnn", p)
        runs["fwd"]()
        onednn.set_num_threads(1)
        timing = _bench.median_seconds(runs["fwd"], _bench.Repeats(0.1, 3, 1.0))
    finally:
        onednn.set_num_threads(previous)
    assert timing.cores < _cli.CORES_PER_THREAD


def test_no_best_peer_column_without_outside_peers(capsys):
    _, _, header, _, _ = bench(capsys, "reference")
    assert "best" not in header


def test_the_bench_module_imports_no_peer():
    """_bench and _cli import none of the outside libraries."""
    code = ("import sys, fusedrnn._bench, fusedrnn._cli; "
            "print(sorted(m for m in ('onnxruntime', 'onnx', 'jax', 'fusedrnn._peers.onednn') "
            "if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("jax", "onnxruntime")),
                    reason="the outside peers are not installed")
def test_bench_with_the_installed_peers(capsys):
    """The real thing, as CI's smoke runs it: no mismatch, no failure."""
    status, out, header, rows, notes = bench(capsys, *_bench.OUTSIDE)
    assert status == 0
    values = [value for name in _bench.OUTSIDE for value in column(header, rows, name)]
    assert "mismatch" not in values and "failed" not in values, notes
    assert not any("disagrees" in n or "failed" in n for n in notes), notes
    # ONNX Runtime has no backward: "-" there; every other case has a time.
    forward, backward = column(header, rows, "onnxruntime")
    assert float(forward) > 0 and backward == "-"
    assert all(words[-2].endswith("x") for words in rows)
