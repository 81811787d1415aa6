"""The NumPy API of single steps: rnn_cell, lstm_cell and gru_cell, and
their backwards. A step is the layer's call with T = 1, and x, y without
the time axis ([B,D], [B,H]: the same memory as [1,B,D], [1,B,H], so
nothing is copied): one kernel call, both products and the cell's maths,
with the layer's checks, rules and errors."""

from typing import NamedTuple, Optional

import numpy as np

from . import _api
from ._checks import float_array


class LSTMStep(NamedTuple):
    """The result of :func:`lstm_cell`."""

    h: np.ndarray  # [B,H]: h after the step
    c: np.ndarray  # [B,H]: c after the step
    reserve: Optional[np.ndarray]  # what lstm_cell_backward needs; None unless training


class GRUStep(NamedTuple):
    """The result of :func:`gru_cell`."""

    h: np.ndarray  # [B,H]: h after the step
    reserve: Optional[np.ndarray]  # what gru_cell_backward needs; None unless training


def _seq(name, a):
    """A step's [B,n] array as the layer's one-step sequence [1,B,n] (a view)."""
    return float_array(name, a, 2)[None]


def _step_grads(grads):
    """The layer's gradients with dx as the step's [B,D]."""
    return grads._replace(dx=grads.dx[0])


def rnn_cell(x, h0, w_ih, w_hh, bias=None, *, nonlinearity="tanh"):
    """One RNN step, h = act(W_ih x + W_hh h0 + bias): x (B, D), h0 (B, H) or
    None (zeros), the weights as for rnn_forward. Returns h (B, H)."""
    y, _ = _api.rnn_forward(_seq("x", x), h0, w_ih, w_hh, bias, nonlinearity=nonlinearity)
    return y[0]


def rnn_cell_backward(x, h0, w_ih, w_hh, h, dh, *, nonlinearity="tanh"):
    """The gradients of rnn_cell's step: h its result, dh (B, H) the loss's
    gradient with respect to h. Returns RNNGrads(dx (B, D), dh0, dw_ih,
    dw_hh, dbias)."""
    return _step_grads(_api.rnn_backward(_seq("x", x), h0, w_ih, w_hh, _seq("h", h), None, dh,
                                         nonlinearity=nonlinearity))


def lstm_cell(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, *, training=False):
    """One LSTM step (torch.nn.LSTMCell's maths): x (B, D), h0 and c0 (B, H)
    or None (zeros), the weights as for lstm_forward. training: also return
    the reserve lstm_cell_backward reads. Returns LSTMStep(h, c, reserve)."""
    o = _api.lstm_forward(_seq("x", x), h0, c0, w_ih, w_hh, b_ih, b_hh, training=training)
    return LSTMStep(o.y[0], o.c_n, o.reserve)


def lstm_cell_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, h, reserve, dh, dc=None):
    """The gradients of lstm_cell's step: h and reserve from its result (the
    reserve None to recompute it), dh and dc (B, H) the loss's gradients with
    respect to h and c (None: zero). Returns LSTMGrads, dx (B, D)."""
    return _step_grads(_api.lstm_backward(_seq("x", x), h0, c0, w_ih, w_hh, b_ih, b_hh,
                                          _seq("h", h), reserve, None, dh, dc))


def gru_cell(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, training=False,
             linear_before_reset=True):
    """One GRU step (torch.nn.GRUCell's maths; linear_before_reset as for
    gru_forward). Returns GRUStep(h, reserve)."""
    o = _api.gru_forward(_seq("x", x), h0, w_ih, w_hh, b_ih, b_hh, training=training,
                         linear_before_reset=linear_before_reset)
    return GRUStep(o.y[0], o.reserve)


def gru_cell_backward(x, h0, w_ih, w_hh, b_ih, b_hh, h, reserve, dh, *,
                      linear_before_reset=True):
    """The gradients of gru_cell's step, as lstm_cell_backward's without c.
    Returns GRUGrads, dx (B, D)."""
    return _step_grads(_api.gru_backward(_seq("x", x), h0, w_ih, w_hh, b_ih, b_hh, _seq("h", h),
                                         reserve, None, dh,
                                         linear_before_reset=linear_before_reset))
