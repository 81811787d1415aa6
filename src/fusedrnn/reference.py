"""The NumPy reference: the specification every fast path is checked against.

Written for clarity, not speed: float64 throughout, an explicit loop over time
steps, the batch handled with array operations. Same signatures and semantics
as :func:`fusedrnn.rnn_forward` and :func:`fusedrnn.rnn_backward`; results are
always float64. Inputs are assumed valid (the fast API does the checking).

Shapes use the vocabulary T (time), B (batch), D (input size), H (hidden size).
"""

from typing import NamedTuple

import numpy as np


class RNNGrads(NamedTuple):
    """Gradients of a loss with respect to every input of :func:`rnn_forward`."""

    dx: np.ndarray  # x-shaped
    dh0: np.ndarray  # [B,H]
    dw_ih: np.ndarray  # [H,D]
    dw_hh: np.ndarray  # [H,H]
    dbias: np.ndarray  # [H]


def _sigmoid(z):
    # Split on the sign so that exp never overflows.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


# nonlinearity -> (act(z), act'(z) expressed through y = act(z))
ACTIVATIONS = {
    "tanh": (np.tanh, lambda y: 1.0 - y * y),
    "relu": (lambda z: np.maximum(z, 0.0), lambda y: (y > 0).astype(np.float64)),
    "sigmoid": (_sigmoid, lambda y: y * (1.0 - y)),
}


def _time_major(a, batch_first):
    a = np.asarray(a, dtype=np.float64)
    return a.transpose(1, 0, 2) if batch_first else a


def _prepare(x, h0, w_hh, bias, lengths, batch_first):
    x = _time_major(x, batch_first)
    T, B, _ = x.shape
    H = np.shape(w_hh)[0]
    h0 = np.zeros((B, H)) if h0 is None else np.asarray(h0, dtype=np.float64)
    bias = np.zeros(H) if bias is None else np.asarray(bias, dtype=np.float64)
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths, dtype=np.int64)
    return x, T, B, H, h0, bias, lengths


def _step_rows(s, lengths, reverse):
    """Batch rows still running at step s, and the time index each is at.

    Sequence b runs steps 0..lengths[b]-1; forwards step s is time s, in
    reverse it is time lengths[b]-1-s (each sequence from its own end).
    """
    b = np.nonzero(s < lengths)[0]
    t = lengths[b] - 1 - s if reverse else np.full(b.shape, s)
    return b, t


def rnn_forward(x, h0, w_ih, w_hh, bias=None, *, nonlinearity="tanh",
                lengths=None, reverse=False, batch_first=False):
    """h_t = act(W_ih x_t + W_hh h_{t-1} + b). Returns (y, h_n)."""
    act, _ = ACTIVATIONS[nonlinearity]
    x, T, B, H, h0, bias, lengths = _prepare(x, h0, w_hh, bias, lengths, batch_first)
    w_ih = np.asarray(w_ih, dtype=np.float64)
    w_hh = np.asarray(w_hh, dtype=np.float64)

    y = np.zeros((T, B, H))  # steps past a sequence's length stay zero
    h = h0.copy()
    for s in range(T):
        b, t = _step_rows(s, lengths, reverse)
        h[b] = act(x[t, b] @ w_ih.T + h[b] @ w_hh.T + bias)
        y[t, b] = h[b]
    y = y.transpose(1, 0, 2) if batch_first else y
    return y, h


def rnn_backward(x, h0, w_ih, w_hh, y, dy, dh_n=None, *, nonlinearity="tanh",
                 lengths=None, reverse=False, batch_first=False):
    """Backpropagation through time. Returns RNNGrads(dx, dh0, dw_ih, dw_hh, dbias).

    `y` is the output of rnn_forward for the same arguments; `dy` (y-shaped)
    and `dh_n` ([B,H]) are the loss gradients with respect to y and h_n, None
    meaning zero.
    """
    _, dact = ACTIVATIONS[nonlinearity]
    x, T, B, H, h0, _, lengths = _prepare(x, h0, w_hh, None, lengths, batch_first)
    w_ih = np.asarray(w_ih, dtype=np.float64)
    w_hh = np.asarray(w_hh, dtype=np.float64)
    y = _time_major(y, batch_first)
    dy = np.zeros_like(y) if dy is None else _time_major(dy, batch_first)
    dh = np.zeros((B, H)) if dh_n is None else np.array(dh_n, dtype=np.float64)

    dx = np.zeros_like(x)
    dw_ih = np.zeros_like(w_ih)
    dw_hh = np.zeros_like(w_hh)
    dbias = np.zeros(H)
    for s in reversed(range(T)):
        b, t = _step_rows(s, lengths, reverse)
        dz = (dy[t, b] + dh[b]) * dact(y[t, b])  # [b,H]
        if s == 0:
            h_prev = h0[b]
        else:
            h_prev = y[t + 1, b] if reverse else y[t - 1, b]
        dx[t, b] = dz @ w_ih
        dw_ih += dz.T @ x[t, b]
        dw_hh += dz.T @ h_prev
        dbias += dz.sum(axis=0)
        dh[b] = dz @ w_hh
    dx = dx.transpose(1, 0, 2) if batch_first else dx
    return RNNGrads(dx, dh, dw_ih, dw_hh, dbias)
