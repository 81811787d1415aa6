"""Every cell's compiled kernel against the NumPy reference, on every ISA.

The forward (y, h_n, c_n) and every gradient, over a full factorial of the
options (dtype, the rnn's nonlinearity, bias, each initial state given or
None, lengths, reverse, batch_first, and inside each case every choice of
dy, dh_n, dc_n given or None) on a few shapes: sizes of 1, odd sizes that
fill no vector register or tile evenly, T = 0 and 1, B = 0, D = 0 or H = 0
(fusedrnn.h: each >= 0), one shape past every ISA's blocking bounds. Then a
sweep of sizes with the options fixed and the inputs one element past an
aligned start, as a slice of a caller's buffer would be: H from 1 to 70
(every gate block is H columns of the G*H-column products, so this meets
every register-tile and panel remainder, up to past two AVX-512 float
panels of 32), B from 1 to 26 (past two AVX-512 row tiles of 12), D = 19
(two 8 x 8 transpose blocks and a rest), and the degenerate sizes.

Then what must hold exactly: padded steps and pass-through values; for the
gated cells, backward with the training forward's reserve or recomputing
it, training and inference forwards, a byte-identical copy of the reserve
at another address; inputs in any memory layout; inputs never written;
every output element written.

The reference works in float64 from the very same dtype-rounded inputs and
does not depend on the ISA, so each case's reference results are computed
once and shared by the ISAs' runs, which come one after the other
(reference_results); the rnn's backward, which reads the kernel's y, is
the exception.

Set FUSEDRNN_CELL_ERRORS=path to have the largest errors of the main grid
written there as JSON: max |kernel - reference| / max(1, max |reference|)
per cell, dtype and output.
"""

import functools
import itertools
import json
import os

import numpy as np
import pytest

import fusedrnn
from fusedrnn import reference
from helpers import CELLS, DTYPES, GATED, LAYOUTS, assert_unchanged, backward, flag, forward, \
    grad_output_choices, laid_out, mixed_lengths, outputs_of, random_problem, reserve_of, run, \
    snapshot, states_given, states_id, variants

pytestmark = pytest.mark.usefixtures("isa")

# The ISAs as the innermost parameter, so that the runs of one case follow
# each other and share its reference results (a small cache then holds them).
EVERY_ISA = pytest.mark.parametrize("isa", fusedrnn.available_isas(), indirect=True)

# The full factorial runs on these. T1B1D1H1 is the size-1 case (lengths [0]:
# a batch of one empty sequence); T4B5D3H8 has the lengths cycle's every kind
# of sequence (0, T, partial) in one batch; T6B13D17H33 has odd sizes that
# fill no vector evenly, 13 rows (one AVX-512 row tile of 12 and a rest) and
# 33, 4*33 = 132 or 3*33 = 99 gate columns; T9B65D3H70 is past the GEMM
# engine's blocking bounds (kernels.h: T*B > KC_MAX = 512 rows in the
# weight-gradient products, B > MR_MAX = 32, G*H > NR_MAX = 64), so that its
# block loops run more than once.
SHAPES = {
    "T5B3D4H7": (5, 3, 4, 7),
    "T1B1D1H1": (1, 1, 1, 1),
    "T0B2D3H4": (0, 2, 3, 4),
    "T4B5D3H8": (4, 5, 3, 8),
    "T6B13D17H33": (6, 13, 17, 33),
    "T6B17D5H33": (6, 17, 5, 33),
    "T2B33D17H1": (2, 33, 17, 1),
    "T3B0D2H2": (3, 0, 2, 2),
    "T4B2D0H3": (4, 2, 0, 3),
    "T3B2D3H0": (3, 2, 3, 0),
    "T9B65D3H70": (9, 65, 3, 70),
}

# Each cell (the rnn with each nonlinearity) with every combination of its
# initial states given or None.
VARIANT_STATES = [pytest.param(*v.values, given, id=f"{v.id}-{states_id(given)}")
                  for v in variants() for given in states_given(v.values[0])]


def select(d, given):
    """The gradient outputs `d` with those not in `given` None."""
    return {k: (v if k in given else None) for k, v in d.items()}


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


def inputs(cell, shape, dtype, batch_first, bias, given, unaligned):
    """The case's inputs and gradient outputs (random_problem, seeded by the
    shape), unaligned: each one element past the start of its buffer."""
    a, d = random_problem(cell, shape, dtype, batch_first=batch_first, seed=sum(shape),
                          given=given, bias=bias)
    if unaligned:
        a, d = ({k: None if v is None else one_past(v) for k, v in arrays.items()}
                for arrays in (a, d))
    return a, d


def one_past(a):
    """A C-contiguous copy of `a` starting one element past its buffer's start."""
    return np.concatenate([a.ravel()[:1], a.ravel()])[1:].reshape(a.shape)


@functools.lru_cache(maxsize=128)
def reference_results(cell, options, shape, dtype, batch_first, bias, given, lengths, reverse):
    """The reference's outputs and, for a gated cell, its gradients for every
    choice of the gradient outputs given; `options`, `given` and `lengths`
    as tuples. The rnn's backward differentiates at the kernel's own y,
    which differs between ISAs: the caller computes it.

    The backward is linear in the gradient outputs: the gradients for a
    choice of them are the sum of those for each one alone (and zero for
    none), which takes the reference's slow LSTM backward three times, not
    eight."""
    a, d = inputs(cell, shape, dtype, batch_first, bias, dict(given), False)
    options = dict(options, lengths=None if lengths is None else np.array(lengths),
                   reverse=reverse, batch_first=batch_first)
    out = forward(reference, cell, a, training=True, **options)
    if not CELLS[cell].gated:
        return outputs_of(cell, out), None
    alone = {name: backward(reference, cell, a, out.y, out.reserve, {name: d[name]}, **options)
             for name in d}

    def summed(choice):
        return CELLS[cell].grads(*(
            sum((getattr(alone[name], field) for name in choice[1:]),
                getattr(alone[choice[0]], field)) if choice
            else np.zeros_like(getattr(alone["dy"], field))
            for field in CELLS[cell].grads._fields))
    return outputs_of(cell, out), {choice: summed(choice) for choice in grad_output_choices(cell)}


def check_against_reference(assert_close, cell, options, shape, dtype, batch_first, bias, given,
                            lengths, reverse, unaligned=False, record=False, label=""):
    """The kernel's forward (a training one) and, for every choice of gradient
    outputs given, its backward (with the forward's reserve) against the
    reference. The rnn's reference backward differentiates at the kernel's
    y: relu's derivative at 0 depends on which side of 0 a rounded
    pre-activation fell."""
    a, d = inputs(cell, shape, dtype, batch_first, bias, given, unaligned)
    lengths = None if lengths is None else tuple(int(n) for n in lengths)
    expected_out, expected_grads = reference_results(
        cell, tuple(options.items()), shape, dtype, batch_first, bias, tuple(given.items()),
        lengths, reverse)
    options = dict(options, lengths=None if lengths is None else np.array(lengths),
                   reverse=reverse, batch_first=batch_first)
    out = forward(fusedrnn, cell, a, training=True, **options)
    for name, got in outputs_of(cell, out).items():
        assert_close(got, expected_out[name], dtype, f"{label}{name}")
        if record:
            record_error(cell, dtype, name, got, expected_out[name])
    for choice in grad_output_choices(cell):
        grads = backward(fusedrnn, cell, a, out[0], reserve_of(cell, out), select(d, choice),
                         **options)
        want = expected_grads[choice] if expected_grads else backward(
            reference, cell, a, out[0], None, select(d, choice), **options)
        assert type(grads) is CELLS[cell].grads
        for name in grads._fields:
            got = getattr(grads, name)
            assert_close(got, getattr(want, name), dtype,
                         f"{label}{name} (given: {', '.join(choice) or 'none'})")
            if record:
                record_error(cell, dtype, name, got, getattr(want, name))


@EVERY_ISA
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
@flag("batch_first")
@flag("reverse")
@flag("lengths")
@flag("bias")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell, options, given", VARIANT_STATES)
def test_matches_reference(assert_close, cell, options, given, dtype, bias, lengths, reverse,
                           batch_first, shape):
    check_against_reference(assert_close, cell, options, shape, dtype, batch_first, bias, given,
                            mixed_lengths(*shape[:2]) if lengths else None, reverse,
                            record=True)


# Sizes swept with the options fixed (bias, every state, lengths, every
# choice of gradient outputs).
SWEEPS = {
    "hidden": [(3, 5, 19, H) for H in range(1, 71)],
    "batch": [(3, B, 19, 33) for B in range(1, 27)],
    "degenerate": [(0, 4, 3, 5), (1, 4, 3, 5), (1, 13, 3, 17), (2, 1, 1, 1), (4, 0, 3, 5),
                   (4, 3, 0, 5), (4, 3, 5, 0), (0, 0, 0, 0), (0, 6, 2, 1), (1, 26, 1, 2)],
    # Past the GEMM engine's blocking bounds, as T9B65D3H70 above.
    "blocking": [(9, 65, 3, 70), (17, 33, 5, 20)],
}


def sweep_lengths(T, B):
    """Full, empty and partial sequences in turn, a full one first: B = 1
    runs a whole sequence, and a short last step for some sequences shrinks
    the row count within a call."""
    cycle = [T, 0, T - 1, 1, T // 2]
    return [min(max(cycle[b % len(cycle)], 0), T) for b in range(B)]


@EVERY_ISA
@pytest.mark.parametrize("sweep", SWEEPS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_sizes_match_reference(assert_close, cell, dtype, sweep):
    for shape in SWEEPS[sweep]:
        check_against_reference(assert_close, cell, {}, shape, dtype, False, True,
                                dict.fromkeys(CELLS[cell].states, True), sweep_lengths(*shape[:2]),
                                False, unaligned=True, label="T{}B{}D{}H{}: ".format(*shape))


@flag("batch_first")
@flag("reverse")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_padding_and_pass_through_are_exact(cell, dtype, reverse, batch_first):
    """What docs/api.md states as values, not approximations: padded steps of
    y and dx are exactly 0, h_n is exactly the last valid state and an empty
    sequence's final states are exactly its initial ones, its initial
    states' gradients exactly its final states'. dy is nonzero at padded
    steps too: the kernel must ignore it there."""
    shape = SHAPES["T6B17D5H33"]
    T, B, _, _ = shape
    lengths = mixed_lengths(T, B)
    a, d = random_problem(cell, shape, dtype, batch_first=batch_first, seed=2)
    options = dict(lengths=lengths, reverse=reverse, batch_first=batch_first)
    out = forward(fusedrnn, cell, a, training=True, **options)
    grads = backward(fusedrnn, cell, a, out[0], reserve_of(cell, out), d, **options)

    outputs = outputs_of(cell, out)
    y_tm = outputs["y"].transpose(1, 0, 2) if batch_first else outputs["y"]
    dx_tm = grads.dx.transpose(1, 0, 2) if batch_first else grads.dx
    for b, n in enumerate(lengths):
        assert np.all(y_tm[n:, b] == 0), f"y: padded steps of sequence {b} (length {n})"
        assert np.all(dx_tm[n:, b] == 0), f"dx: padded steps of sequence {b} (length {n})"
        if n == 0:
            for state in CELLS[cell].states:
                final = state[0] + "_n"
                np.testing.assert_array_equal(outputs[final][b], a[state][b],
                                              err_msg=f"{final}[{b}] (length 0)")
                np.testing.assert_array_equal(getattr(grads, "d" + state)[b], d["d" + final][b],
                                              err_msg=f"d{state}[{b}] (length 0)")
        else:
            # A reversed sequence's last step is time 0.
            np.testing.assert_array_equal(outputs["h_n"][b], y_tm[0 if reverse else n - 1, b],
                                          err_msg=f"h_n[{b}] (length {n})")


ROUND_TRIP_SHAPE = (5, 7, 6, 9)


@flag("batch_first")
@flag("reverse")
@flag("lengths")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", GATED)
def test_reserve_round_trip_and_inference_are_bitwise(cell, dtype, lengths, reverse,
                                                      batch_first):
    """Backward with the training forward's reserve gives the bits of
    backward with reserve=None (recomputing it); the inference forward
    gives the bits of the training forward and no reserve."""
    shape = ROUND_TRIP_SHAPE
    a, d = random_problem(cell, shape, dtype, batch_first=batch_first)
    options = dict(lengths=mixed_lengths(*shape[:2]) if lengths else None, reverse=reverse,
                   batch_first=batch_first)
    train = forward(fusedrnn, cell, a, training=True, **options)
    infer = forward(fusedrnn, cell, a, **options)
    assert isinstance(train.reserve, np.ndarray) and train.reserve.ndim == 1
    assert train.reserve.dtype == np.dtype(dtype)
    assert infer.reserve is None
    assert forward(fusedrnn, cell, a, training=False, **options).reserve is None
    for name, value in outputs_of(cell, infer).items():
        np.testing.assert_array_equal(value, getattr(train, name), err_msg=name)
    with_reserve = backward(fusedrnn, cell, a, train.y, train.reserve, d, **options)
    recomputed = backward(fusedrnn, cell, a, train.y, None, d, **options)
    for name in with_reserve._fields:
        np.testing.assert_array_equal(getattr(with_reserve, name), getattr(recomputed, name),
                                      err_msg=name)


# Each cell's backward as it is called: the gated cells' with the training
# forward's reserve or with None, the rnn's with none.
CELL_RESERVES = [pytest.param(cell, with_reserve,
                              id=f"{cell}-{'reserve' if with_reserve else 'no_reserve'}")
                 for cell in CELLS for with_reserve in ([True, False] if CELLS[cell].gated
                                                        else [False])]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell, with_reserve", CELL_RESERVES)
def test_inputs_are_never_written(cell, with_reserve, dtype):
    shape = ROUND_TRIP_SHAPE
    a, d = random_problem(cell, shape, dtype)
    lengths = mixed_lengths(*shape[:2])
    before = snapshot(dict(a, lengths=lengths))
    out = forward(fusedrnn, cell, a, training=True, lengths=lengths)
    assert_unchanged(dict(a, lengths=lengths), before)
    extra = dict(y=out[0], reserve=reserve_of(cell, out) if with_reserve else None, **d)
    before = snapshot(dict(a, lengths=lengths, **extra))
    backward(fusedrnn, cell, a, out[0], extra["reserve"], d, lengths=lengths)
    assert_unchanged(dict(a, lengths=lengths, **extra), before)


@pytest.mark.parametrize("layout", [layout for layout in LAYOUTS if layout != "C"])
@flag("batch_first")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_any_layout_gives_the_same_bits(cell, dtype, batch_first, layout):
    """Every array argument (lengths too) in Fortran order, as a strided
    view, with negative strides or read-only: the results are bitwise those
    of C-contiguous arguments. A gated cell's reserve is passed as the
    forward returned it (either forward's), or None: a copy of it at
    another address is test_reserve_copied_elsewhere."""
    shape = (4, 5, 6, 7)
    a, d = random_problem(cell, shape, dtype, batch_first=batch_first)
    lengths = mixed_lengths(*shape[:2])
    options = dict(reverse=True, batch_first=batch_first)
    out = forward(fusedrnn, cell, a, training=True, lengths=lengths, **options)
    grads = backward(fusedrnn, cell, a, out[0], reserve_of(cell, out), d, lengths=lengths,
                     **options)

    a2 = {k: laid_out(v, layout) for k, v in a.items()}
    d2 = {k: laid_out(v, layout) for k, v in d.items()}
    if layout in ("F", "strided"):
        assert not a2["x"].flags.c_contiguous
    out2 = forward(fusedrnn, cell, a2, training=True, lengths=laid_out(lengths, layout),
                   **options)
    want = outputs_of(cell, out)
    for name, value in outputs_of(cell, out2).items():
        np.testing.assert_array_equal(value, want[name], err_msg=name)
    cases = [(None, grads)]
    if CELLS[cell].gated:
        recomputed = backward(fusedrnn, cell, a, out[0], None, d, lengths=lengths, **options)
        cases = [(out.reserve, grads), (out2.reserve, grads), (None, recomputed)]
    for reserve, want in cases:
        grads2 = backward(fusedrnn, cell, a2, laid_out(out[0], layout), reserve, d2,
                          lengths=laid_out(lengths, layout), **options)
        for name in grads2._fields:
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
@pytest.mark.parametrize("cell", GATED)
def test_reserve_copied_elsewhere(cell, dtype):
    """The reserve is an ordinary array the caller holds: an equal copy of it
    (np.copy, pickle, np.save/np.load) must give the same gradients."""
    a, d = random_problem(cell, (4, 5, 6, 7), dtype)
    out = forward(fusedrnn, cell, a, training=True)
    copy = copy_elsewhere(out.reserve)
    assert copy.tobytes() == out.reserve.tobytes()
    grads = backward(fusedrnn, cell, a, out.y, out.reserve, d)
    from_copy = backward(fusedrnn, cell, a, out.y, copy, d)
    for name in grads._fields:
        np.testing.assert_array_equal(getattr(from_copy, name), getattr(grads, name),
                                      err_msg=name)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_reserve_size_is_its_shape_from_sizes_alone(cell):
    """The kernel's reserve is exactly T*B*reserve_rows*H elements (none for
    the RNN; bfloat16: a row more of float32 values, y's, two elements each):
    the size Problem computes without asking the kernel, and the shape the
    torch ops' fake implementations give it."""
    from fusedrnn import _cells, _engine
    from fusedrnn._checks import FLOATS
    for T, B, D, H in itertools.product([0, 1, 3, 100], [0, 1, 7, 64], [1, 5], [0, 1, 13, 129]):
        for dtype in FLOATS:
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
    """With every buffer the API allocates (outputs, gradients, a gated
    cell's reserve) starting as NaN instead of whatever np.empty holds, the
    results are bitwise the usual ones: every output element is written
    (padded steps of y and dx as zeros), and the reserve rows that the
    forward leaves unwritten (past a sequence's length) never reach the
    backward."""
    cases = []
    for shape in [(4, 5, 6, 7), (6, 13, 17, 33), (0, 3, 2, 2), (3, 0, 2, 2), (3, 2, 0, 2),
                  (3, 2, 2, 0), (1, 1, 1, 1)]:
        for lengths, reverse, batch_first in [(True, False, False), (True, True, True),
                                              (False, True, False)]:
            options = dict(lengths=mixed_lengths(*shape[:2]) if lengths else None,
                           reverse=reverse, batch_first=batch_first)
            cases.append((shape, *random_problem(cell, shape, dtype, batch_first=batch_first),
                          options))

    def run_all():
        results = []
        for _, a, d, options in cases:
            results.append(run(fusedrnn, cell, a, d, **options))
            if CELLS[cell].gated:
                results.append(run(fusedrnn, cell, a, d, with_reserve=False, **options))
        return results

    usual = run_all()
    # The engine allocates the outputs and gradients, the API the reserve.
    for module in (fusedrnn._engine, fusedrnn._api):
        monkeypatch.setattr(module, "np", _NaNFilledNumPy())
    runs = len(usual) // len(cases)
    for i, (want, got) in enumerate(zip(usual, run_all())):
        shape, _, _, options = cases[i // runs]
        for name, value in want.items():
            np.testing.assert_array_equal(got[name], value,
                                          err_msg="T{}B{}D{}H{} ".format(*shape)
                                          + f"{options} {name}")
