"""Values the contract says are ignored never reach a result (issue: NaN from
ignored padding). x past a sequence's length, h0 of an empty sequence, and y
past a sequence's last step are not part of the maths: NaN or inf there must
leave every output and gradient as the reference gives it. The deferred
weight-gradient products run over all T*B rows at once, and 0 * NaN is NaN,
so each such row has to be kept out of them, not merely multiplied by zero."""

import numpy as np
import pytest

import fusedrnn
from fusedrnn import reference

pytestmark = pytest.mark.usefixtures("isa")

T, B, D, H = 6, 5, 3, 7
LENGTHS = [6, 0, 3, 1, 4]


def assert_same(actual, expected, dtype, name, assert_close):
    """Equal non-finite entries in the same places, and close elsewhere."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    finite = np.isfinite(expected)
    assert np.array_equal(np.isfinite(actual), finite), f"{name}: non-finite where the reference is not"
    assert np.array_equal(actual[~finite], expected[~finite], equal_nan=True), name
    assert_close(np.where(finite, actual, 0).astype(dtype), np.where(finite, expected, 0), dtype, name)


def problem(dtype, batch_first, rng):
    x = rng.standard_normal((T, B, D)).astype(dtype)
    h0 = rng.standard_normal((B, H)).astype(dtype)
    w_ih = (rng.standard_normal((H, D)) / np.sqrt(D)).astype(dtype)
    w_hh = (rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype)
    return x, h0, w_ih, w_hh


def run_both(assert_close, x, h0, w_ih, w_hh, lengths, nonlinearity, reverse, batch_first, rng):
    dtype = x.dtype
    xs = x.transpose(1, 0, 2).copy() if batch_first else x
    options = dict(nonlinearity=nonlinearity, lengths=lengths, reverse=reverse,
                   batch_first=batch_first)
    y, h_n = fusedrnn.rnn_forward(xs, h0, w_ih, w_hh, **options)
    y_ref, h_n_ref = reference.rnn_forward(xs, h0, w_ih, w_hh, **options)
    assert_same(y, y_ref, dtype, "y", assert_close)
    assert_same(h_n, h_n_ref, dtype, "h_n", assert_close)
    dy = rng.standard_normal(y.shape).astype(dtype)
    dh_n = rng.standard_normal(h_n.shape).astype(dtype)
    grads = fusedrnn.rnn_backward(xs, h0, w_ih, w_hh, y, dy, dh_n, **options)
    expected = reference.rnn_backward(xs, h0, w_ih, w_hh, y, dy, dh_n, **options)
    for name in fusedrnn.RNNGrads._fields:
        assert_same(getattr(grads, name), getattr(expected, name), dtype, name, assert_close)
    return grads


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_padding_of_x_and_h0_of_empty_sequences(assert_close, dtype, reverse, batch_first, poison):
    rng = np.random.default_rng(1)
    x, h0, w_ih, w_hh = problem(dtype, batch_first, rng)
    for b, n in enumerate(LENGTHS):
        x[n:, b] = poison
        if n == 0:
            h0[b] = poison
    grads = run_both(assert_close, x, h0, w_ih, w_hh, LENGTHS, "tanh", reverse, batch_first, rng)
    for name in ("dw_ih", "dw_hh", "dbias"):
        assert np.isfinite(getattr(grads, name)).all(), name


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths", [None, LENGTHS])
def test_infinite_state_at_the_last_step(assert_close, dtype, reverse, batch_first, lengths):
    """relu passes +inf through: a sequence whose last step reaches inf has an
    infinite y there, which no later step of that sequence reads. In the
    batch-first layout without lengths, that row sits just before the next
    sequence's first step."""
    rng = np.random.default_rng(2)
    x, h0, w_ih, w_hh = problem(dtype, batch_first, rng)
    w_ih = np.abs(w_ih)  # +inf in, +inf out of every unit
    ends = lengths or [T] * B
    for b, n in enumerate(ends):
        if n > 0:
            x[n - 1 if not reverse else 0, b] = np.inf
    grads = run_both(assert_close, x, h0, w_ih, w_hh, lengths, "relu", reverse, batch_first, rng)
    assert np.isfinite(grads.dw_hh).all()
