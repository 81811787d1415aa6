"""The compiled LSTM and GRU against the NumPy reference, on every ISA.

The forward (y, h_n, c_n) and every gradient, over a full factorial of the
options (dtype, bias, h0/c0 given or None, lengths, reverse, batch_first,
and inside each case dy/dh_n/dc_n given or None) on a few shapes, and a sweep
of sizes with the options fixed: H from 1 to 70 (every gate block is H
columns of the G*H-column products, so this meets every register-tile and
panel remainder, up to past two AVX-512 float panels of 32), B from 1 to 26
(past two AVX-512 row tiles of 12) and the degenerate T = 0, T = 1, B = 0,
D = 0, H = 0.

Then what must hold exactly: the same bits for 1, 2 or 3 threads (in a
child process: a threading bug can hang), for backward with the training
forward's reserve or recomputing it, for training and inference forwards,
and for inputs in any memory layout; inputs are never written; NaN and inf
in values the contract ignores never reach a result; every output element
is written; a byte-identical copy of the reserve at another address gives
the same gradients.

The reference works in float64 from the very same dtype-rounded inputs and
does not depend on the ISA, so each of its results is computed once and
shared by the three ISAs' runs (reference_results).

Set FUSEDRNN_CELL_ERRORS=path to have the largest errors of the main grid
written there as JSON: max |kernel - reference| / max(1, max |reference|)
per cell, dtype and output.
"""

import functools
import itertools
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fusedrnn
from fusedrnn import reference

pytestmark = pytest.mark.usefixtures("isa")

CELLS = ["lstm", "gru"]
GATES = {"lstm": 4, "gru": 3}
STATES = {"lstm": ("h0", "c0"), "gru": ("h0",)}  # initial states, h first
D_STATES = {"lstm": ("dh_n", "dc_n"), "gru": ("dh_n",)}  # their gradients at the end
OUTPUTS = {"lstm": ("y", "h_n", "c_n"), "gru": ("y", "h_n")}
GRADS = {"lstm": fusedrnn.LSTMGrads._fields, "gru": fusedrnn.GRUGrads._fields}
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]

# The full factorial runs on these. T=1, B=1, D=1, H=1 is the size-1 case
# (lengths [0]: a batch of one empty sequence); T6B13D17H33 has odd sizes
# that fill no vector evenly, 13 rows (one AVX-512 row tile of 12 and a
# rest) and 4*33 = 132 or 3*33 = 99 gate columns; T4B5D3H8 has the
# lengths cycle's every kind of sequence (0, T, partial) in one batch.
SHAPES = {
    "T1B1D1H1": (1, 1, 1, 1),
    "T4B5D3H8": (4, 5, 3, 8),
    "T6B13D17H33": (6, 13, 17, 33),
}

# Every combination of the initial states given (True) or None, per cell.
CELL_STATES = [(cell, dict(zip(STATES[cell], given)))
               for cell in CELLS
               for given in itertools.product([False, True], repeat=len(STATES[cell]))]
CELL_STATES_IDS = [cell + "".join(f"-{k}" if v else f"-no_{k}" for k, v in given.items())
                   for cell, given in CELL_STATES]


def flag(name):
    return pytest.mark.parametrize(name, [False, True], ids=[f"no_{name}", name])


def mixed_lengths(T, B):
    """0 (an empty sequence), T (a full one) and partial lengths in turn."""
    cycle = [0, T, max(T - 1, 0), min(1, T), T // 2]
    return np.array([cycle[b % len(cycle)] for b in range(B)], dtype=np.int64)


def make_problem(cell, shape, dtype, batch_first, bias=True, given=None, seed=None):
    """Inputs of one call as a dict keyed like the parameters, in `dtype`.
    Weights scaled by 1/sqrt(D + H) keep the gates' pre-activations O(1),
    where the gradients are neither saturated to zero nor explosive."""
    T, B, D, H = shape
    G = GATES[cell]
    given = dict.fromkeys(STATES[cell], True) if given is None else given
    rng = np.random.default_rng(sum(shape) if seed is None else seed)
    scale = 1 / np.sqrt(max(D + H, 1))
    a = {"x": rng.standard_normal((B, T, D) if batch_first else (T, B, D))}
    for name in STATES[cell]:
        a[name] = rng.standard_normal((B, H)) if given[name] else None
    a["w_ih"] = scale * rng.standard_normal((G * H, D))
    a["w_hh"] = scale * rng.standard_normal((G * H, H))
    for name in ("b_ih", "b_hh"):
        a[name] = 0.5 * rng.standard_normal(G * H) if bias else None
    return {k: None if v is None else v.astype(dtype) for k, v in a.items()}


def make_grad_outputs(cell, shape, dtype, batch_first, seed=1):
    """dy and the gradients of the final states, all given."""
    T, B, _, H = shape
    rng = np.random.default_rng(seed)
    d = {"dy": rng.standard_normal((B, T, H) if batch_first else (T, B, H))}
    for name in D_STATES[cell]:
        d[name] = rng.standard_normal((B, H))
    return {k: v.astype(dtype) for k, v in d.items()}


def forward(lib, cell, a, **options):
    """lib.lstm_forward or lib.gru_forward (lib: fusedrnn or its reference)."""
    f = lib.lstm_forward if cell == "lstm" else lib.gru_forward
    return f(a["x"], *(a[s] for s in STATES[cell]), a["w_ih"], a["w_hh"], a["b_ih"],
             a["b_hh"], **options)


def backward(lib, cell, a, y, reserve, d, **options):
    """The matching backward; d holds dy, dh_n (and dc_n), each possibly None."""
    f = lib.lstm_backward if cell == "lstm" else lib.gru_backward
    return f(a["x"], *(a[s] for s in STATES[cell]), a["w_ih"], a["w_hh"], a["b_ih"],
             a["b_hh"], y, reserve, d["dy"], *(d[k] for k in D_STATES[cell]), **options)


def grad_output_choices(cell):
    """Every combination of dy, dh_n (and dc_n) given or None, as tuples of
    the names given."""
    names = ("dy",) + D_STATES[cell]
    return [tuple(n for n, g in zip(names, given) if g)
            for given in itertools.product([True, False], repeat=len(names))]


def select(d, given):
    return {k: (v if k in given else None) for k, v in d.items()}


def outputs_of(cell, out):
    return {name: getattr(out, name) for name in OUTPUTS[cell]}


# The largest relative errors of the main grid, per (cell, dtype, output).
ERRORS = {}


def record_error(cell, dtype, name, actual, expected):
    expected = np.asarray(expected, np.float64)
    if expected.size == 0:
        return
    err = np.max(np.abs(actual.astype(np.float64) - expected)) / max(1.0, np.max(np.abs(expected)))
    key = (cell, np.dtype(dtype).name, name)
    ERRORS[key] = max(ERRORS.get(key, 0.0), float(err))


@pytest.fixture(scope="module", autouse=True)
def error_report():
    yield
    path = os.environ.get("FUSEDRNN_CELL_ERRORS")
    if path and ERRORS:
        with open(path, "w") as f:
            json.dump({"/".join(k): v for k, v in sorted(ERRORS.items())}, f, indent=1)


@functools.lru_cache(maxsize=None)
def reference_results(cell, shape, dtype, batch_first, bias, given, lengths, reverse):
    """The reference's forward outputs and, for every choice of the gradient
    outputs given, its gradients; `given` is a tuple of (state, bool) pairs.
    Cached: the three ISAs' runs of one case share it."""
    a = make_problem(cell, shape, dtype, batch_first, bias, dict(given))
    d = make_grad_outputs(cell, shape, dtype, batch_first)
    options = dict(lengths=mixed_lengths(*shape[:2]) if lengths else None, reverse=reverse,
                   batch_first=batch_first)
    out = forward(reference, cell, a, training=True, **options)
    grads = {choice: backward(reference, cell, a, out.y, out.reserve, select(d, choice),
                              **options)
             for choice in grad_output_choices(cell)}
    return outputs_of(cell, out), grads


def check_against_reference(assert_close, cell, shape, dtype, batch_first, bias, given, lengths,
                            reverse, record=False, label=""):
    """The kernel's forward and, for every choice of gradient outputs, its
    backward (with the training forward's reserve) against the reference."""
    a = make_problem(cell, shape, dtype, batch_first, bias, given)
    d = make_grad_outputs(cell, shape, dtype, batch_first)
    options = dict(lengths=mixed_lengths(*shape[:2]) if lengths else None, reverse=reverse,
                   batch_first=batch_first)
    expected_out, expected_grads = reference_results(cell, shape, dtype, batch_first, bias,
                                                     tuple(given.items()), lengths, reverse)
    out = forward(fusedrnn, cell, a, training=True, **options)
    for name, want in expected_out.items():
        got = getattr(out, name)
        assert_close(got, want, dtype, f"{label}{name}")
        if record:
            record_error(cell, dtype, name, got, want)
    for choice, want in expected_grads.items():
        grads = backward(fusedrnn, cell, a, out.y, out.reserve, select(d, choice), **options)
        assert type(grads) is type(want)
        for name in GRADS[cell]:
            got = getattr(grads, name)
            assert_close(got, getattr(want, name), dtype,
                         f"{label}{name} (given: {', '.join(choice) or 'none'})")
            if record:
                record_error(cell, dtype, name, got, getattr(want, name))


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@flag("batch_first")
@flag("reverse")
@flag("lengths")
@flag("bias")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell,given", CELL_STATES, ids=CELL_STATES_IDS)
def test_matches_reference(assert_close, cell, given, dtype, bias, lengths, reverse, batch_first,
                           shape):
    check_against_reference(assert_close, cell, shape, dtype, batch_first, bias, given, lengths,
                            reverse, record=True)


# Sizes swept with the options fixed (bias, both states, mixed lengths, every
# gradient output given). D = 19 is two 8 x 8 transpose blocks and a rest.
SWEEPS = {
    "hidden": [(3, 5, 19, H) for H in range(1, 71)],
    "batch": [(3, B, 19, 13) for B in range(1, 27)],
    "degenerate": [(0, 4, 3, 5), (1, 4, 3, 5), (1, 13, 3, 17), (2, 1, 1, 1), (4, 0, 3, 5),
                   (4, 3, 0, 5), (4, 3, 5, 0), (0, 0, 0, 0), (0, 6, 2, 1), (1, 26, 1, 2)],
    # Past the GEMM engine's blocking bounds (kernels.h): T*B > KC_MAX = 512
    # rows in the weight-gradient products, B > MR_MAX = 32, G*H > NR_MAX = 64.
    "blocking": [(9, 65, 3, 70), (17, 33, 5, 20)],
}


@pytest.mark.parametrize("sweep", SWEEPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_sizes_match_reference(assert_close, cell, dtype, sweep):
    for shape in SWEEPS[sweep]:
        label = "T{}B{}D{}H{}: ".format(*shape)
        given = dict.fromkeys(STATES[cell], True)
        check_against_reference(assert_close, cell, shape, dtype, False, True, given, True,
                                False, label=label)


def child(code, timeout=120):
    """Run `code` in a fresh interpreter; fail with its stderr unless it exits 0."""
    run = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                         text=True, timeout=timeout)
    assert run.returncode == 0, f"child exited with {run.returncode}:\n{run.stderr[-4000:]}"
    return run.stdout


@pytest.mark.parametrize("cell", CELLS)
def test_bitwise_identical_for_any_thread_count(cell, isa):
    """1, 2 and 3 threads give the same bits, forward and backward, with and
    without lengths, reverse and batch_first. In a child: a thread pool bug
    can hang, and the child's timeout turns that into a failure."""
    child(f"""
        import itertools
        import numpy as np
        import fusedrnn
        cell, isa = {cell!r}, {isa!r}
        states = ("h0", "c0") if cell == "lstm" else ("h0",)
        fw = fusedrnn.lstm_forward if cell == "lstm" else fusedrnn.gru_forward
        bw = fusedrnn.lstm_backward if cell == "lstm" else fusedrnn.gru_backward
        G = 4 if cell == "lstm" else 3
        T, B, D, H = 6, 8, 40, 96
        fusedrnn.set_isa(isa)
        saved = fusedrnn.get_num_threads()
        try:
            for dtype, (lengths, reverse, batch_first) in itertools.product(
                    (np.float32, np.float64),
                    [(False, False, False), (True, True, False), (True, False, True)]):
                rng = np.random.default_rng(3)
                x = rng.standard_normal((B, T, D) if batch_first else (T, B, D)).astype(dtype)
                s0 = [rng.standard_normal((B, H)).astype(dtype) for _ in states]
                w = [(rng.standard_normal((G * H, n)) / np.sqrt(D + H)).astype(dtype)
                     for n in (D, H)]
                b = [rng.standard_normal(G * H).astype(dtype) for _ in range(2)]
                dy = rng.standard_normal((B, T, H) if batch_first else (T, B, H)).astype(dtype)
                dn = [rng.standard_normal((B, H)).astype(dtype) for _ in states]
                opts = dict(lengths=np.array([6, 0, 3, 1, 6, 5, 2, 4]) if lengths else None,
                            reverse=reverse, batch_first=batch_first)
                results = {{}}
                for n in (1, 2, 3):
                    fusedrnn.set_num_threads(n)
                    out = fw(x, *s0, *w, *b, training=True, **opts)
                    grads = bw(x, *s0, *w, *b, out.y, out.reserve, dy, *dn, **opts)
                    results[n] = dict(**{{k: v for k, v in out._asdict().items()
                                         if k != "reserve"}}, **grads._asdict())
                for n in (2, 3):
                    for name, value in results[1].items():
                        assert np.array_equal(value, results[n][name]), (
                            f"{{cell}} {{np.dtype(dtype).name}} {{opts}}: {{name}} differs "
                            f"between 1 and {{n}} threads")
        finally:
            fusedrnn.set_num_threads(saved)
        assert fusedrnn.get_num_threads() == saved
    """)


ROUND_TRIP_SHAPE = (5, 7, 6, 9)


@flag("batch_first")
@flag("reverse")
@flag("lengths")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_reserve_round_trip_and_inference_are_bitwise(cell, dtype, lengths, reverse,
                                                      batch_first):
    """Backward with the training forward's reserve gives the bits of
    backward with reserve=None (recomputing it); the inference forward
    gives the bits of the training forward and no reserve."""
    shape = ROUND_TRIP_SHAPE
    a = make_problem(cell, shape, dtype, batch_first)
    d = make_grad_outputs(cell, shape, dtype, batch_first)
    options = dict(lengths=mixed_lengths(*shape[:2]) if lengths else None, reverse=reverse,
                   batch_first=batch_first)
    train = forward(fusedrnn, cell, a, training=True, **options)
    infer = forward(fusedrnn, cell, a, **options)
    assert isinstance(train.reserve, np.ndarray) and train.reserve.ndim == 1
    assert train.reserve.dtype == np.dtype(dtype)
    assert infer.reserve is None
    assert forward(fusedrnn, cell, a, training=False, **options).reserve is None
    for name in OUTPUTS[cell]:
        np.testing.assert_array_equal(getattr(infer, name), getattr(train, name), err_msg=name)
    with_reserve = backward(fusedrnn, cell, a, train.y, train.reserve, d, **options)
    recomputed = backward(fusedrnn, cell, a, train.y, None, d, **options)
    for name in GRADS[cell]:
        np.testing.assert_array_equal(getattr(with_reserve, name), getattr(recomputed, name),
                                      err_msg=name)


def snapshot(arrays):
    """Byte copies: NaN compares equal to itself, and -0.0 differs from 0.0."""
    return {k: (v.dtype, v.shape, v.tobytes()) for k, v in arrays.items() if v is not None}


def assert_unchanged(arrays, before):
    for k, v in arrays.items():
        if v is not None:
            assert (v.dtype, v.shape, v.tobytes()) == before[k], f"{k} was modified"


@pytest.mark.parametrize("reserve_given", [True, False], ids=["reserve", "no_reserve"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_inputs_are_never_written(cell, dtype, reserve_given):
    shape = ROUND_TRIP_SHAPE
    a = make_problem(cell, shape, dtype, batch_first=False)
    d = make_grad_outputs(cell, shape, dtype, batch_first=False)
    lengths = mixed_lengths(*shape[:2])
    before = snapshot(dict(a, lengths=lengths))
    out = forward(fusedrnn, cell, a, training=True, lengths=lengths)
    assert_unchanged(dict(a, lengths=lengths), before)
    extra = dict(y=out.y, reserve=out.reserve if reserve_given else None, **d)
    before = snapshot(dict(a, lengths=lengths, **extra))
    backward(fusedrnn, cell, a, out.y, extra["reserve"], d, lengths=lengths)
    assert_unchanged(dict(a, lengths=lengths, **extra), before)


LAYOUTS = ["F", "strided", "negative", "readonly"]


def laid_out(a, layout):
    """`a` (None stays None) with the same values in another memory layout."""
    if a is None:
        return None
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":  # every third element of a larger buffer along each axis
        big = np.full(tuple(3 * n + 1 for n in a.shape), np.nan if a.dtype.kind == "f" else 99,
                      a.dtype)
        view = big[tuple(slice(1, None, 3) for _ in a.shape)]
        view[...] = a
        return view
    if layout == "negative":
        return np.ascontiguousarray(a[(slice(None, None, -1),) * a.ndim])[
            (slice(None, None, -1),) * a.ndim]
    b = a.copy()
    b.flags.writeable = False
    return b


@pytest.mark.parametrize("layout", LAYOUTS)
@flag("batch_first")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_any_layout_gives_the_same_bits(cell, dtype, batch_first, layout):
    """Every array argument (lengths too) in Fortran order, as a strided
    view, with negative strides or read-only: the results are bitwise those
    of C-contiguous arguments. The reserve is passed as the forward returned
    it: a copy of it at another address is test_reserve_copied_elsewhere."""
    shape = (4, 5, 6, 7)
    a = make_problem(cell, shape, dtype, batch_first)
    d = make_grad_outputs(cell, shape, dtype, batch_first)
    lengths = mixed_lengths(*shape[:2])
    options = dict(reverse=True, batch_first=batch_first)
    out = forward(fusedrnn, cell, a, training=True, lengths=lengths, **options)
    grads = backward(fusedrnn, cell, a, out.y, out.reserve, d, lengths=lengths, **options)
    recomputed = backward(fusedrnn, cell, a, out.y, None, d, lengths=lengths, **options)

    a2 = {k: laid_out(v, layout) for k, v in a.items()}
    d2 = {k: laid_out(v, layout) for k, v in d.items()}
    if layout in ("F", "strided"):
        assert not a2["x"].flags.c_contiguous
    out2 = forward(fusedrnn, cell, a2, training=True, lengths=laid_out(lengths, layout),
                   **options)
    for name in OUTPUTS[cell]:
        np.testing.assert_array_equal(getattr(out2, name), getattr(out, name), err_msg=name)
    for reserve, want in ((out.reserve, grads), (out2.reserve, grads), (None, recomputed)):
        grads2 = backward(fusedrnn, cell, a2, laid_out(out.y, layout), reserve, d2,
                          lengths=laid_out(lengths, layout), **options)
        for name in GRADS[cell]:
            np.testing.assert_array_equal(getattr(grads2, name), getattr(want, name),
                                          err_msg=name)


def copy_elsewhere(reserve):
    """A copy of `reserve` whose data (past the 8-element header) starts at a
    different address modulo 64 than the original's: what np.copy, pickling
    or np.load may give, by chance; here deterministically."""
    item = reserve.itemsize
    start = reserve[8:].ctypes.data % 64
    buf = np.empty(reserve.size + 64 // item, reserve.dtype)
    for offset in range(64 // item):
        copy = buf[offset:offset + reserve.size]
        if copy[8:].ctypes.data % 64 != start:
            copy[...] = reserve
            return copy
    raise AssertionError("unreachable")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_reserve_copied_elsewhere(cell, dtype):
    """The reserve is an ordinary array the caller holds: an equal copy of it
    (np.copy, pickle, np.save/np.load) must give the same gradients."""
    shape = (4, 5, 6, 7)
    a = make_problem(cell, shape, dtype, batch_first=False)
    d = make_grad_outputs(cell, shape, dtype, batch_first=False)
    out = forward(fusedrnn, cell, a, training=True)
    copy = copy_elsewhere(out.reserve)
    assert copy.tobytes() == out.reserve.tobytes()
    grads = backward(fusedrnn, cell, a, out.y, out.reserve, d)
    from_copy = backward(fusedrnn, cell, a, out.y, copy, d)
    for name in GRADS[cell]:
        np.testing.assert_array_equal(getattr(from_copy, name), getattr(grads, name),
                                      err_msg=name)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_reserve_size_is_its_shape_from_sizes_alone(cell):
    """The kernel's reserve is exactly T*B*reserve_rows*H elements (none for
    the RNN): the size Problem computes without asking the kernel, and the
    shape the torch ops' fake implementations give it."""
    from fusedrnn import _cells, _engine
    for T, B, D, H in itertools.product([0, 1, 3, 100], [0, 1, 7, 64], [1, 5], [0, 1, 13, 129]):
        for dtype in (np.float32, np.float64):
            p = _engine.Problem(_cells.CELLS[cell], dtype, T, B, D, H, training=True)
            assert p.reserve_size() == int(np.prod(p.reserve_shape())), (T, B, D, H, dtype)
            assert fusedrnn._kernel.reserve_size(p) == p.reserve_size(), (T, B, D, H, dtype)


class _NaNFilledNumPy:
    """numpy, except that np.empty and np.empty_like return NaN-filled arrays."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def empty(*args, **kwargs):
        a = np.empty(*args, **kwargs)
        a.fill(np.nan)
        return a

    @staticmethod
    def empty_like(*args, **kwargs):
        a = np.empty_like(*args, **kwargs)
        a.fill(np.nan)
        return a


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_every_output_is_written_and_no_unwritten_reserve_row_is_read(cell, dtype,
                                                                       monkeypatch):
    """With every buffer the API allocates (outputs, gradients, the reserve)
    starting as NaN instead of whatever np.empty holds, the results are
    bitwise the usual ones: every output element is written (padded steps of
    y and dx as zeros), and the reserve rows that the forward leaves
    unwritten (past a sequence's length) never reach the backward."""
    cases = []
    for shape in [(4, 5, 6, 7), (6, 13, 17, 33), (0, 3, 2, 2), (3, 0, 2, 2), (3, 2, 0, 2),
                  (3, 2, 2, 0), (1, 1, 1, 1)]:
        for lengths, reverse, batch_first in [(True, False, False), (True, True, True),
                                              (False, True, False)]:
            options = dict(lengths=mixed_lengths(*shape[:2]) if lengths else None,
                           reverse=reverse, batch_first=batch_first)
            cases.append((make_problem(cell, shape, dtype, batch_first),
                          make_grad_outputs(cell, shape, dtype, batch_first), options))

    def run_all():
        results = []
        for a, d, options in cases:
            out = forward(fusedrnn, cell, a, training=True, **options)
            results.append((outputs_of(cell, out),
                            backward(fusedrnn, cell, a, out.y, out.reserve, d, **options),
                            backward(fusedrnn, cell, a, out.y, None, d, **options)))
        return results

    usual = run_all()
    # The engine allocates the outputs and gradients, the API the reserve.
    for module in (fusedrnn._engine, fusedrnn._api):
        monkeypatch.setattr(module, "np", _NaNFilledNumPy())
    for (a, d, options), want, got in zip(cases, usual, run_all()):
        label = "T{}B{}D{}H{} ".format(*(a["x"].shape[1::-1] if options["batch_first"]
                                         else a["x"].shape[:2]), a["x"].shape[2],
                                       a["w_hh"].shape[1]) + str(options)
        for name in OUTPUTS[cell]:
            np.testing.assert_array_equal(got[0][name], want[0][name], err_msg=f"{label} {name}")
        for which in (1, 2):
            for name in GRADS[cell]:
                np.testing.assert_array_equal(getattr(got[which], name),
                                              getattr(want[which], name),
                                              err_msg=f"{label} {name}")


# Ignored values: x past a sequence's length, h0 and c0 of an empty
# sequence, and dy and y past a sequence's length are not part of the maths.
IGNORED_SHAPE = (6, 5, 3, 7)
IGNORED_LENGTHS = np.array([6, 0, 3, 1, 4])


def assert_same(actual, expected, dtype, name, assert_close):
    """Non-finite exactly where the reference is and equal there, close elsewhere."""
    expected = np.asarray(expected)
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(actual), finite), \
        f"{name}: non-finite where the reference is finite, or the other way round"
    assert np.array_equal(actual[~finite], expected[~finite].astype(dtype), equal_nan=True), name
    assert_close(np.where(finite, actual, 0).astype(dtype), np.where(finite, expected, 0), dtype,
                 name)


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@flag("batch_first")
@flag("reverse")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_ignored_values_stay_out(assert_close, cell, dtype, reverse, batch_first, poison):
    T, B, D, H = IGNORED_SHAPE
    a = make_problem(cell, IGNORED_SHAPE, dtype, batch_first=False, seed=5)
    d = make_grad_outputs(cell, IGNORED_SHAPE, dtype, batch_first=False, seed=6)
    for b, n in enumerate(IGNORED_LENGTHS):
        a["x"][n:, b] = poison
        d["dy"][n:, b] = poison
        if n == 0:
            for s in STATES[cell]:
                a[s][b] = poison
    if batch_first:
        a["x"] = np.ascontiguousarray(a["x"].transpose(1, 0, 2))
        d["dy"] = np.ascontiguousarray(d["dy"].transpose(1, 0, 2))
    options = dict(lengths=IGNORED_LENGTHS, reverse=reverse, batch_first=batch_first)

    out = forward(fusedrnn, cell, a, training=True, **options)
    want = forward(reference, cell, a, training=True, **options)
    for name in OUTPUTS[cell]:
        assert_same(getattr(out, name), getattr(want, name), dtype, name, assert_close)
    # y past a sequence's length is not read either.
    y = out.y.copy()
    y_tm = y.transpose(1, 0, 2) if batch_first else y
    for b, n in enumerate(IGNORED_LENGTHS):
        y_tm[n:, b] = poison
    for reserve in (out.reserve, None):
        grads = backward(fusedrnn, cell, a, y, reserve, d, **options)
        expected = backward(reference, cell, a, y, want.reserve, d, **options)
        for name in GRADS[cell]:
            assert_same(getattr(grads, name), getattr(expected, name), dtype, name, assert_close)
        for name in ("dw_ih", "dw_hh", "db_ih", "db_hh"):
            assert np.isfinite(getattr(grads, name)).all(), name
