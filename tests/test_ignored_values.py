"""Values the contract says are ignored never reach a result (issue: NaN from
ignored padding), for every cell. x and dy past a sequence's length, the
initial states of an empty sequence, and y past a sequence's last step are
not part of the maths: NaN or inf there must leave every output and
gradient as the reference gives it. The deferred weight-gradient products
run over all T*B rows at once, and 0 * NaN is NaN, so each such row has to
be kept out of them, not merely multiplied by zero."""

import numpy as np
import pytest

import fusedrnn
from fusedrnn import reference
from helpers import CELLS, DTYPES, backward, flag, forward, outputs_of, random_problem, \
    reserve_of

pytestmark = pytest.mark.usefixtures("isa")

SHAPE = (6, 5, 3, 7)
LENGTHS = [6, 0, 3, 1, 4]


def assert_same(actual, expected, dtype, name, assert_close):
    """Non-finite exactly where the reference is and equal there, close elsewhere."""
    expected = np.asarray(expected)
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(actual), finite), \
        f"{name}: non-finite where the reference is finite, or the other way round"
    assert np.array_equal(actual[~finite], expected[~finite].astype(dtype), equal_nan=True), name
    assert_close(np.where(finite, actual, 0).astype(dtype), np.where(finite, expected, 0), dtype,
                 name)


def parameter_gradients(cell, grads):
    """The gradients of the weights and biases: sums over every step and row."""
    spec = CELLS[cell]
    return [name for name in grads._fields
            if name != "dx" and name not in ("d" + s for s in spec.states)]


def run_both(assert_close, cell, a, d, y_poison=None, **options):
    """fusedrnn's forward and backward against the reference's on the same
    inputs; y_poison: the value put in y past each sequence's last step
    before the backward. Returns fusedrnn's gradients of each backward: with
    the training forward's reserve, and (gated cells) with None."""
    dtype = a["x"].dtype
    out = forward(fusedrnn, cell, a, training=True, **options)
    want = forward(reference, cell, a, **options)
    expected = outputs_of(cell, want)
    for name, value in outputs_of(cell, out).items():
        assert_same(value, expected[name], dtype, name, assert_close)
    y = out[0].copy()
    if y_poison is not None:
        y_tm = y.transpose(1, 0, 2) if options["batch_first"] else y
        for b, n in enumerate(options["lengths"]):
            y_tm[n:, b] = y_poison
    reserves = [reserve_of(cell, out)] + ([None] if CELLS[cell].gated else [])
    results = []
    for reserve in reserves:
        grads = backward(fusedrnn, cell, a, y, reserve, d, **options)
        expected = backward(reference, cell, a, y, None, d, **options)
        for name in grads._fields:
            assert_same(getattr(grads, name), getattr(expected, name), dtype, name, assert_close)
        results.append(grads)
    return results


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@flag("batch_first")
@flag("reverse")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_padding_and_the_states_of_empty_sequences(assert_close, cell, dtype, reverse,
                                                   batch_first, poison):
    a, d = random_problem(cell, SHAPE, dtype, seed=5)
    for b, n in enumerate(LENGTHS):
        a["x"][n:, b] = poison
        d["dy"][n:, b] = poison
        if n == 0:
            for s in CELLS[cell].states:
                a[s][b] = poison
    if batch_first:
        a["x"] = np.ascontiguousarray(a["x"].transpose(1, 0, 2))
        d["dy"] = np.ascontiguousarray(d["dy"].transpose(1, 0, 2))
    options = dict(lengths=LENGTHS, reverse=reverse, batch_first=batch_first)
    for grads in run_both(assert_close, cell, a, d, y_poison=poison, **options):
        for name in parameter_gradients(cell, grads):
            assert np.isfinite(getattr(grads, name)).all(), name


@pytest.mark.parametrize("dtype", DTYPES)
@flag("reverse")
@flag("batch_first")
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_infinite_state_at_the_last_step(assert_close, dtype, reverse, batch_first, lengths):
    """The rnn's relu passes +inf through: a sequence whose last step reaches
    inf has an infinite y there, which no later step of that sequence reads.
    In the batch-first layout without lengths, that row sits just before the
    next sequence's first step."""
    T, B, _, _ = SHAPE
    a, d = random_problem("rnn", SHAPE, dtype, seed=2, bias=False)
    a["w_ih"] = np.abs(a["w_ih"])  # +inf in, +inf out of every unit
    for b, n in enumerate(lengths or [T] * B):
        if n > 0:
            a["x"][n - 1 if not reverse else 0, b] = np.inf
    if batch_first:
        a["x"] = np.ascontiguousarray(a["x"].transpose(1, 0, 2))
        d["dy"] = np.ascontiguousarray(d["dy"].transpose(1, 0, 2))
    (grads,) = run_both(assert_close, "rnn", a, d, nonlinearity="relu", lengths=lengths,
                        reverse=reverse, batch_first=batch_first)
    assert np.isfinite(grads.dw_hh).all()
