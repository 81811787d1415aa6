"""The NumPy API's single steps (rnn_cell, lstm_cell, gru_cell and their
backwards) against the reference's one-step sequence in float64, every
gradient, on every ISA; the step's shapes; bad input refused with the
layer's errors."""

import numpy as np
import pytest

import fusedrnn
from fusedrnn import reference
from helpers import assert_close

pytestmark = pytest.mark.usefixtures("isa")

B, D, H = 3, 5, 4


def arrays(G, dtype, seed=0, batch=B):
    rng = np.random.default_rng(seed)

    def r(*shape):
        return rng.standard_normal(shape).astype(dtype)
    return dict(x=r(batch, D), h0=r(batch, H), c0=r(batch, H), w_ih=r(G * H, D),
                w_hh=r(G * H, H), b_ih=r(G * H), b_hh=r(G * H), dh=r(batch, H), dc=r(batch, H))


def f64(a):
    return None if a is None else a.astype(np.float64)


@pytest.mark.parametrize("batch", [B, 1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "sigmoid"])
def test_rnn_cell(nonlinearity, dtype, batch):
    a = arrays(1, dtype, batch=batch)
    h = fusedrnn.rnn_cell(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["b_ih"],
                          nonlinearity=nonlinearity)
    y, _ = reference.rnn_forward(f64(a["x"])[None], f64(a["h0"]), f64(a["w_ih"]), f64(a["w_hh"]),
                                 f64(a["b_ih"]), nonlinearity=nonlinearity)
    assert_close(h, y[0], dtype, "h")
    g = fusedrnn.rnn_cell_backward(a["x"], a["h0"], a["w_ih"], a["w_hh"], h, a["dh"],
                                   nonlinearity=nonlinearity)
    want = reference.rnn_backward(f64(a["x"])[None], f64(a["h0"]), f64(a["w_ih"]),
                                  f64(a["w_hh"]), y, None, f64(a["dh"]),
                                  nonlinearity=nonlinearity)
    assert g.dx.shape == (batch, D)
    for name in g._fields:
        assert_close(getattr(g, name), getattr(want, name)[0] if name == "dx" else
                     getattr(want, name), dtype, name)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_reset_first"])
def test_gated_cell(cell, dtype, training):
    G = 4 if cell == "lstm" else 3
    a = arrays(G, dtype)
    weights = [a[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")]
    ref_weights = [f64(w) for w in weights]
    x, ref_x = a["x"], f64(a["x"])[None]
    if cell == "lstm":
        step = fusedrnn.lstm_cell(x, a["h0"], a["c0"], *weights, training=training)
        o = reference.lstm_forward(ref_x, f64(a["h0"]), f64(a["c0"]), *ref_weights, training=True)
        assert_close(step.c, o.c_n, dtype, "c")
        g = fusedrnn.lstm_cell_backward(x, a["h0"], a["c0"], *weights, step.h, step.reserve,
                                        a["dh"], a["dc"])
        want = reference.lstm_backward(ref_x, f64(a["h0"]), f64(a["c0"]), *ref_weights, o.y,
                                       o.reserve, None, f64(a["dh"]), f64(a["dc"]))
    else:
        lbr = cell == "gru"
        step = fusedrnn.gru_cell(x, a["h0"], *weights, training=training,
                                 linear_before_reset=lbr)
        o = reference.gru_forward(ref_x, f64(a["h0"]), *ref_weights, training=True,
                                  linear_before_reset=lbr)
        g = fusedrnn.gru_cell_backward(x, a["h0"], *weights, step.h, step.reserve, a["dh"],
                                       linear_before_reset=lbr)
        want = reference.gru_backward(ref_x, f64(a["h0"]), *ref_weights, o.y, o.reserve, None,
                                      f64(a["dh"]), linear_before_reset=lbr)
    assert_close(step.h, o.y[0], dtype, "h")
    assert (step.reserve is None) == (not training)
    for name in g._fields:
        assert_close(getattr(g, name), getattr(want, name)[0] if name == "dx" else
                     getattr(want, name), dtype, name)


def test_step_refuses_a_sequence():
    """x must be a step's (B, D): a 3-D x is the layer's, and refused."""
    a = arrays(4, np.float32)
    with pytest.raises(ValueError, match="x"):
        fusedrnn.lstm_cell(a["x"][None], None, None, a["w_ih"], a["w_hh"])


def test_step_refuses_mismatched_state():
    a = arrays(3, np.float64)
    with pytest.raises(ValueError, match="h0"):
        fusedrnn.gru_cell(a["x"], a["h0"][:, :-1], a["w_ih"], a["w_hh"])


def test_backward_refuses_the_reserve_of_another_step():
    a = arrays(4, np.float64)
    weights = [a[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")]
    other = fusedrnn.lstm_cell(a["x"][:2], None, None, *weights, training=True)
    step = fusedrnn.lstm_cell(a["x"], None, None, *weights, training=True)
    with pytest.raises(ValueError, match="reserve"):
        fusedrnn.lstm_cell_backward(a["x"], None, None, *weights, step.h, other.reserve, a["dh"])
