"""The NumPy reference: the specification every fast path is checked against.

Written for clarity, not speed: float64 throughout, an explicit loop over time
steps, the batch handled with array operations. rnn_forward and rnn_backward
have the signatures and semantics of :func:`fusedrnn.rnn_forward` and
:func:`fusedrnn.rnn_backward`; lstm_forward/lstm_backward and
gru_forward/gru_backward are PyTorch's LSTM and GRU (gate order, parameter
layout, maths), the GRU also in ONNX's default form (linear_before_reset=False,
Keras' reset_after=False). Results are always float64. Inputs are assumed
valid (the fast API does the checking), but for linear_before_reset, which
chooses between two models: a stray truthy value must not pick one silently.

Shapes use the vocabulary T (time), B (batch), D (input size), H (hidden size)
and G (gates: 4 for the LSTM, 3 for the GRU).

resets, (T, B) (x's layout: (B, T) with batch_first) or None, marks where an
episode starts: a nonzero resets[t, b] cuts sequence b between times t-1 and
t into pieces, and each piece runs from the initial state (h0, c0), as if it
were a sequence of its own. Forwards, the step at t starts from the initial
state; in reverse, each sequence runs from its last valid step down to 0,
and the step at t-1 starts from it (the piece ending at t-1 runs backwards
on its own). A flag at t = 0 or at t >= lengths[b] changes nothing; h_n
(c_n) is the state after the sequence's last valid step. Backwards, no
gradient crosses a cut: what reaches the initial state at the start of each
piece is summed into dh0 (dc0), and dw_hh pairs h0 with each piece's first
step.
"""

from typing import Callable, NamedTuple

import numpy as np

from ._checks import flag
from ._types import GRUGrads, GRUOutput, LSTMGrads, LSTMOutput, RNNGrads


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


def _flags(resets, batch_first):
    """resets as time-major bools [T,B], or None."""
    if resets is None:
        return None
    flags = np.asarray(resets) != 0
    return flags.T if batch_first else flags


def _step_rows(s, lengths, reverse):
    """Batch rows still running at step s, and the time index each is at.

    Sequence b runs steps 0..lengths[b]-1; forwards step s is time s, in
    reverse it is time lengths[b]-1-s (each sequence from its own end).
    """
    b = np.nonzero(s < lengths)[0]
    t = lengths[b] - 1 - s if reverse else np.full(b.shape, s)
    return b, t


def _restarts(resets, s, b, t, reverse):
    """Of the rows b at step s (times t), a mask of those that start a piece
    after their sequence's first (their state before the step is the
    initial one): forwards a flag at t, in reverse at t + 1, the time of the
    step before."""
    if resets is None or s == 0:
        return np.zeros(b.shape, dtype=bool)
    return resets[t + 1, b] if reverse else resets[t, b]


def rnn_forward(x, h0, w_ih, w_hh, bias=None, *, nonlinearity="tanh",
                lengths=None, reverse=False, batch_first=False, resets=None):
    """h_t = act(W_ih x_t + W_hh h_{t-1} + b). Returns (y, h_n)."""
    act, _ = ACTIVATIONS[nonlinearity]
    x, T, B, H, h0, bias, lengths = _prepare(x, h0, w_hh, bias, lengths, batch_first)
    resets = _flags(resets, batch_first)
    w_ih = np.asarray(w_ih, dtype=np.float64)
    w_hh = np.asarray(w_hh, dtype=np.float64)

    y = np.zeros((T, B, H))  # steps past a sequence's length stay zero
    h = h0.copy()
    for s in range(T):
        b, t = _step_rows(s, lengths, reverse)
        cut = b[_restarts(resets, s, b, t, reverse)]
        h[cut] = h0[cut]
        h[b] = act(x[t, b] @ w_ih.T + h[b] @ w_hh.T + bias)
        y[t, b] = h[b]
    y = y.transpose(1, 0, 2) if batch_first else y
    return y, h


def rnn_backward(x, h0, w_ih, w_hh, y, dy, dh_n=None, *, nonlinearity="tanh",
                 lengths=None, reverse=False, batch_first=False, resets=None):
    """Backpropagation through time. Returns RNNGrads(dx, dh0, dw_ih, dw_hh, dbias).

    `y` is the output of rnn_forward for the same arguments; `dy` (y-shaped)
    and `dh_n` ([B,H]) are the loss gradients with respect to y and h_n, None
    meaning zero. lengths and resets must be the forward's.
    """
    _, dact = ACTIVATIONS[nonlinearity]
    x, T, B, H, h0, _, lengths = _prepare(x, h0, w_hh, None, lengths, batch_first)
    resets = _flags(resets, batch_first)
    w_ih = np.asarray(w_ih, dtype=np.float64)
    w_hh = np.asarray(w_hh, dtype=np.float64)
    y = _time_major(y, batch_first)
    dy = np.zeros_like(y) if dy is None else _time_major(dy, batch_first)
    dh = np.zeros((B, H)) if dh_n is None else np.array(dh_n, dtype=np.float64)
    dh0 = np.zeros((B, H))  # what reached h0 at the pieces after the first

    dx = np.zeros_like(x)
    dw_ih = np.zeros_like(w_ih)
    dw_hh = np.zeros_like(w_hh)
    dbias = np.zeros(H)
    for s in reversed(range(T)):
        b, t = _step_rows(s, lengths, reverse)
        dz = (dy[t, b] + dh[b]) * dact(y[t, b])  # [b,H]
        restart = _restarts(resets, s, b, t, reverse)
        if s == 0:
            h_prev = h0[b]
        else:
            h_prev = y[t + 1, b] if reverse else y[t - 1, b]
            h_prev[restart] = h0[b[restart]]
        dx[t, b] = dz @ w_ih
        dw_ih += dz.T @ x[t, b]
        dw_hh += dz.T @ h_prev
        dbias += dz.sum(axis=0)
        dh[b] = dz @ w_hh
        cut = b[restart]  # their gradient goes to h0, none to the previous piece
        dh0[cut] += dh[cut]
        dh[cut] = 0.0
    dx = dx.transpose(1, 0, 2) if batch_first else dx
    return RNNGrads(dx, dh + dh0, dw_ih, dw_hh, dbias)


# Gated cells: the LSTM and the GRU, with PyTorch's maths and layout (and the
# GRU in ONNX's default form).
#
# All share one forward scan and one backward loop; a _Cell supplies what
# differs, a forward and a backward step. Per step the loop computes the input
# side's affine part, [b,G*H] with the gates stacked in row blocks of H,
#     gi = x_t W_ih^T + b_ih,
# and the cell's step turns it and the previous state into the new state. The
# recurrent side's products are the step's to make, through the loop's
# `recurrent(v, rows)` = v W_hh[rows]^T + b_hh[rows]: what a block of W_hh
# multiplies is the cell's business, since the GRU with
# linear_before_reset=False multiplies W_hn by r*h, known only once the step
# has r. Going back, the cell's backward step turns the gradient of the new
# state into the gradient of gi and of the previous state, calling
# `recurrent_backward(d, v, rows)` for each of its products with the gradient
# d of that product's result: it adds d^T v to dW_hh's rows and d's column
# sums to db_hh's, and returns v's gradient d W_hh[rows].
#
# The record: per valid step, the state the step started from, then what the
# cell's step saved; zero at padded steps. training=True returns it, indexed
# [T,B,(states+saved)*H] and flattened, as the reserve.

_ALL_ROWS = slice(None)


class _Cell(NamedTuple):
    gates: int  # G
    states: int  # 1 (h) or 2 (h, c); h first, and h is the output
    saved: int  # the cell's step saves saved*H values per batch row
    step: Callable  # (gi, recurrent, state) -> (new state, saved)
    step_backward: Callable  # (saved, state, d new state, recurrent_backward) -> (d_gi, d state)


def _lstm_step(gi, recurrent, state):
    """c' = f*c + i*g, h' = o*tanh(c'); saves the activated gates and c'."""
    h, c = state
    a_i, a_f, a_g, a_o = np.split(gi + recurrent(h, _ALL_ROWS), 4, axis=1)
    i, f, g, o = _sigmoid(a_i), _sigmoid(a_f), np.tanh(a_g), _sigmoid(a_o)
    c_new = f * c + i * g
    h_new = o * np.tanh(c_new)
    return (h_new, c_new), np.concatenate([i, f, g, o, c_new], axis=1)


def _lstm_step_backward(saved, state, d_new, recurrent_backward):
    h, c = state
    dh, dc = d_new
    i, f, g, o, c_new = np.split(saved, 5, axis=1)
    tanh_c = np.tanh(c_new)
    dc = dc + dh * o * (1.0 - tanh_c * tanh_c)  # c' reaches the loss directly and through h'
    d_gates = np.concatenate([dc * g * i * (1.0 - i),  # with respect to the
                              dc * c * f * (1.0 - f),  # pre-activations
                              dc * i * (1.0 - g * g),
                              dh * tanh_c * o * (1.0 - o)], axis=1)
    # gi and gh enter only through their sum; c also reaches c' through f.
    return d_gates, (recurrent_backward(d_gates, h, _ALL_ROWS), dc * f)


def _gru_step(gi, recurrent, state):
    """With gh = W_hh h + b_hh: r, z = sigmoid(gi + gh), n = tanh(gi_n + r*gh_n),
    h' = (1-z)*n + z*h; saves r, z, n and gh_n = W_hn h + b_hn."""
    (h,) = state
    gi_r, gi_z, gi_n = np.split(gi, 3, axis=1)
    gh_r, gh_z, gh_n = np.split(recurrent(h, _ALL_ROWS), 3, axis=1)
    r = _sigmoid(gi_r + gh_r)
    z = _sigmoid(gi_z + gh_z)
    n = np.tanh(gi_n + r * gh_n)
    h_new = (1.0 - z) * n + z * h
    return (h_new,), np.concatenate([r, z, n, gh_n], axis=1)


def _gru_step_backward(saved, state, d_new, recurrent_backward):
    (h,) = state
    (dh,) = d_new
    r, z, n, gh_n = np.split(saved, 4, axis=1)
    d_n = dh * (1.0 - z) * (1.0 - n * n)  # with respect to the pre-activations
    d_r = d_n * gh_n * r * (1.0 - r)
    d_z = dh * (h - n) * z * (1.0 - z)
    d_gi = np.concatenate([d_r, d_z, d_n], axis=1)
    d_gh = np.concatenate([d_r, d_z, d_n * r], axis=1)  # gh_n is scaled by r
    return d_gi, (dh * z + recurrent_backward(d_gh, h, _ALL_ROWS),)


def _gru_reset_before_step(gi, recurrent, state):
    """linear_before_reset=False: r, z as in _gru_step, but the reset gate
    scales h before its product with W_hn: n = tanh(gi_n + W_hn (r*h) + b_hn),
    h' = (1-z)*n + z*h; saves r, z, n and r*h (what W_hn multiplied)."""
    (h,) = state
    H = h.shape[1]
    gi_r, gi_z, gi_n = np.split(gi, 3, axis=1)
    gh_r, gh_z = np.split(recurrent(h, slice(0, 2 * H)), 2, axis=1)
    r = _sigmoid(gi_r + gh_r)
    z = _sigmoid(gi_z + gh_z)
    rh = r * h
    n = np.tanh(gi_n + recurrent(rh, slice(2 * H, 3 * H)))
    h_new = (1.0 - z) * n + z * h
    return (h_new,), np.concatenate([r, z, n, rh], axis=1)


def _gru_reset_before_step_backward(saved, state, d_new, recurrent_backward):
    (h,) = state
    (dh,) = d_new
    H = h.shape[1]
    r, z, n, rh = np.split(saved, 4, axis=1)
    d_n = dh * (1.0 - z) * (1.0 - n * n)  # with respect to the pre-activations
    d_z = dh * (h - n) * z * (1.0 - z)
    # n's recurrent product is the only path to r: r's gradient needs W_hn^T d_n first.
    d_rh = recurrent_backward(d_n, rh, slice(2 * H, 3 * H))
    d_r = d_rh * h * r * (1.0 - r)
    d_rz = np.concatenate([d_r, d_z], axis=1)
    # h reaches h' directly, through W_hr and W_hz, and through r*h.
    dh_prev = dh * z + recurrent_backward(d_rz, h, slice(0, 2 * H)) + d_rh * r
    # Both sides' pre-activations are unscaled sums here: d_gi is also d_gh.
    return np.concatenate([d_rz, d_n], axis=1), (dh_prev,)


_LSTM = _Cell(gates=4, states=2, saved=5, step=_lstm_step, step_backward=_lstm_step_backward)
_GRU = _Cell(gates=3, states=1, saved=4, step=_gru_step, step_backward=_gru_step_backward)
_GRU_RESET_BEFORE = _Cell(gates=3, states=1, saved=4, step=_gru_reset_before_step,
                          step_backward=_gru_reset_before_step_backward)


def _gru_cell(linear_before_reset):
    return _GRU if flag("linear_before_reset", linear_before_reset) else _GRU_RESET_BEFORE


def _prepare_gated(cell, x, state0, w_ih, w_hh, b_ih, b_hh, lengths, batch_first):
    """Time-major float64 x, explicit zeros for a None state or bias, lengths
    as an array (all T for None)."""
    x = _time_major(x, batch_first)
    T, B, _ = x.shape
    H = np.shape(w_hh)[1]
    state0 = tuple(np.zeros((B, H)) if s is None else np.asarray(s, dtype=np.float64)
                   for s in state0)
    b_ih, b_hh = (np.zeros(cell.gates * H) if b is None else np.asarray(b, dtype=np.float64)
                  for b in (b_ih, b_hh))
    w_ih = np.asarray(w_ih, dtype=np.float64)
    w_hh = np.asarray(w_hh, dtype=np.float64)
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths, dtype=np.int64)
    return x, state0, w_ih, w_hh, b_ih, b_hh, lengths


def _scan(cell, x, state0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, resets):
    """The forward time loop, time-major. Returns y [T,B,H], the final state
    (a tuple of [B,H]) and the record [T,B,(states+saved)*H]."""
    T, B, _ = x.shape
    H = w_hh.shape[1]

    def recurrent(v, rows):
        return v @ w_hh[rows].T + b_hh[rows]

    y = np.zeros((T, B, H))  # steps past a sequence's length stay zero
    state = [s.copy() for s in state0]
    record = np.zeros((T, B, (cell.states + cell.saved) * H))
    for s in range(T):
        b, t = _step_rows(s, lengths, reverse)
        cut = b[_restarts(resets, s, b, t, reverse)]
        for part, part0 in zip(state, state0):
            part[cut] = part0[cut]
        prev = tuple(part[b] for part in state)
        gi = x[t, b] @ w_ih.T + b_ih
        new, saved = cell.step(gi, recurrent, prev)
        record[t, b] = np.concatenate([*prev, saved], axis=1)
        for part, value in zip(state, new):
            part[b] = value
        y[t, b] = new[0]
    return y, tuple(state), record


def _scan_backward(cell, x, w_ih, w_hh, record, dy, d_state_n, lengths, reverse, resets):
    """Backpropagation through _scan's steps, time-major. Returns dx, the
    gradient of the initial state (a tuple), dw_ih, dw_hh, db_ih, db_hh."""
    H = w_hh.shape[1]
    d_state = [d.copy() for d in d_state_n]  # of the state after the step at hand
    d_restarts = [np.zeros_like(d) for d in d_state]  # what reached it at later pieces' starts
    dx = np.zeros_like(x)
    dw_ih = np.zeros_like(w_ih)
    dw_hh = np.zeros_like(w_hh)
    db_ih = np.zeros(cell.gates * H)
    db_hh = np.zeros(cell.gates * H)

    def recurrent_backward(d, v, rows):
        dw_hh[rows] += d.T @ v
        db_hh[rows] += d.sum(axis=0)
        return d @ w_hh[rows]

    for s in reversed(range(x.shape[0])):
        b, t = _step_rows(s, lengths, reverse)
        prev = tuple(np.split(record[t, b, :cell.states * H], cell.states, axis=1))
        saved = record[t, b, cell.states * H:]
        # The new h is also the output y[t]; a padded step's dy is ignored.
        d_new = (dy[t, b] + d_state[0][b], *(d[b] for d in d_state[1:]))
        d_gi, d_prev = cell.step_backward(saved, prev, d_new, recurrent_backward)
        dx[t, b] = d_gi @ w_ih
        dw_ih += d_gi.T @ x[t, b]
        db_ih += d_gi.sum(axis=0)
        cut = b[_restarts(resets, s, b, t, reverse)]
        for part, value, restarts in zip(d_state, d_prev, d_restarts):
            part[b] = value
            restarts[cut] += part[cut]  # to the initial state, none to the previous piece
            part[cut] = 0.0
    d_state0 = tuple(d + restarts for d, restarts in zip(d_state, d_restarts))
    return dx, d_state0, dw_ih, dw_hh, db_ih, db_hh


def _gated_forward(cell, x, state0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, batch_first,
                   training, resets):
    x, state0, w_ih, w_hh, b_ih, b_hh, lengths = _prepare_gated(
        cell, x, state0, w_ih, w_hh, b_ih, b_hh, lengths, batch_first)
    y, state_n, record = _scan(cell, x, state0, w_ih, w_hh, b_ih, b_hh, lengths, reverse,
                               _flags(resets, batch_first))
    y = y.transpose(1, 0, 2) if batch_first else y
    return y, state_n, record.reshape(-1) if training else None


def _gated_backward(cell, x, state0, w_ih, w_hh, b_ih, b_hh, reserve, dy, d_state_n, lengths,
                    reverse, batch_first, resets):
    x, state0, w_ih, w_hh, b_ih, b_hh, lengths = _prepare_gated(
        cell, x, state0, w_ih, w_hh, b_ih, b_hh, lengths, batch_first)
    T, B, _ = x.shape
    H = w_hh.shape[1]
    resets = _flags(resets, batch_first)
    if reserve is None:
        record = _scan(cell, x, state0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, resets)[2]
    else:
        record = np.asarray(reserve, dtype=np.float64).reshape(
            T, B, (cell.states + cell.saved) * H)
    dy = np.zeros((T, B, H)) if dy is None else _time_major(dy, batch_first)
    d_state_n = tuple(np.zeros((B, H)) if d is None else np.asarray(d, dtype=np.float64)
                      for d in d_state_n)
    dx, d_state0, *d_params = _scan_backward(cell, x, w_ih, w_hh, record, dy, d_state_n,
                                             lengths, reverse, resets)
    dx = dx.transpose(1, 0, 2) if batch_first else dx
    return dx, d_state0, d_params


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, *, lengths=None, reverse=False,
                 batch_first=False, training=False, resets=None):
    """PyTorch's LSTM, one layer and direction. Returns LSTMOutput(y, h_n, c_n, reserve).

    With a = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh split into the row blocks
    i, f, g, o of H rows each (of w_ih [4H,D], w_hh [4H,H], b_ih and b_hh
    [4H]):
        i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o),  g = tanh(a_g),
        c_t = f*c_{t-1} + i*g,  h_t = o*tanh(c_t),  y_t = h_t.
    None for h0 or c0 ([B,H]) or for a bias means zeros. Steps at or past
    lengths[b] give zeros in y and leave sequence b's h and c unchanged; with
    reverse each sequence runs from its own last valid step back to time 0;
    resets restart pieces of a sequence from h0 and c0 (the module's
    docstring). training=True returns the reserve lstm_backward can use (the reference's
    own layout, not the kernel's); otherwise reserve is None.
    """
    y, (h_n, c_n), reserve = _gated_forward(_LSTM, x, (h0, c0), w_ih, w_hh, b_ih, b_hh, lengths,
                                            reverse, batch_first, training, resets)
    return LSTMOutput(y, h_n, c_n, reserve)


def lstm_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, reserve, dy, dh_n=None, dc_n=None, *,
                  lengths=None, reverse=False, batch_first=False, resets=None):
    """Backpropagation through time for lstm_forward with the same arguments.
    Returns LSTMGrads(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh).

    `dy` (y-shaped), `dh_n` and `dc_n` ([B,H]) are the loss gradients with
    respect to y, h_n and c_n, None meaning zero. `reserve` is lstm_forward's
    with training=True, or None, which recomputes it by running the forward.
    `y` is taken for the fast API's signature; the reference does not read
    it, everything it needs is in the reserve. lengths and resets must be
    the forward's.
    """
    dx, (dh0, dc0), d_params = _gated_backward(_LSTM, x, (h0, c0), w_ih, w_hh, b_ih, b_hh,
                                               reserve, dy, (dh_n, dc_n), lengths, reverse,
                                               batch_first, resets)
    return LSTMGrads(dx, dh0, dc0, *d_params)


def gru_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, lengths=None, reverse=False,
                batch_first=False, training=False, linear_before_reset=True, resets=None):
    """PyTorch's GRU, one layer and direction, or with linear_before_reset=False
    ONNX's default GRU. Returns GRUOutput(y, h_n, reserve).

    With gi = W_ih x_t + b_ih split into the row blocks r, z, n of H rows
    each (of w_ih [3H,D], w_hh [3H,H], b_ih and b_hh [3H]) and h = h_{t-1}:
        r = sigmoid(gi_r + W_hr h + b_hr),  z = sigmoid(gi_z + W_hz h + b_hz),
        h_t = (1-z)*n + z*h,  y_t = h_t,
    where, with linear_before_reset=True (PyTorch's GRU, ONNX's
    linear_before_reset=1), the reset gate is applied after the product:
        n = tanh(gi_n + r*(W_hn h + b_hn)),
    and with linear_before_reset=False (ONNX's default, Keras'
    reset_after=False), before it, to h only:
        n = tanh(gi_n + W_hn (r*h) + b_hn).
    None, lengths, reverse, resets and training as for lstm_forward. The reserve
    holds, per step, h_{t-1}, r, z, n and then W_hn h + b_hn
    (linear_before_reset=True) or r*h (False): a backward must be given the
    same linear_before_reset. A linear_before_reset other than a bool (or
    0/1) is a TypeError.
    """
    y, (h_n,), reserve = _gated_forward(_gru_cell(linear_before_reset), x, (h0,), w_ih, w_hh,
                                        b_ih, b_hh, lengths, reverse, batch_first, training,
                                        resets)
    return GRUOutput(y, h_n, reserve)


def gru_backward(x, h0, w_ih, w_hh, b_ih, b_hh, y, reserve, dy, dh_n=None, *, lengths=None,
                 reverse=False, batch_first=False, linear_before_reset=True, resets=None):
    """Backpropagation through time for gru_forward with the same arguments.
    Returns GRUGrads(dx, dh0, dw_ih, dw_hh, db_ih, db_hh).

    With linear_before_reset=True, n = tanh(gi_n + r*(W_hn h + b_hn)):
    db_ih and db_hh differ in the n rows (b_hn is scaled by r, b_in is not).
    With linear_before_reset=False, n = tanh(gi_n + W_hn (r*h) + b_hn):
    dw_hh's n rows pair n's gradient with r*h, and db_ih equals db_hh.
    dy, dh_n, reserve, y, lengths and resets as for lstm_backward.
    """
    dx, (dh0,), d_params = _gated_backward(_gru_cell(linear_before_reset), x, (h0,), w_ih, w_hh,
                                           b_ih, b_hh, reserve, dy, (dh_n,), lengths, reverse,
                                           batch_first, resets)
    return GRUGrads(dx, dh0, *d_params)
