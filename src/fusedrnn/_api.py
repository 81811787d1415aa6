"""The NumPy API: check and convert arguments, allocate the results (or
check the caller's, out= and grads_out=), call the kernel once. Everything
numeric happens in C."""

import numbers
import zlib

import numpy as np

from . import _engine, _kernel
from ._checks import (activation, as_array, disjoint, flag, float_array, float_dtype, optional,
                      out_arrays)
from ._cells import CELLS, GRU, LSTM, RNN
from ._engine import kernel_buffer
from ._types import GRUGrads, GRUOutput, LSTMGrads, LSTMOutput, RNNGrads

_ISA_NAMES = _kernel.ISAS

# What out= and grads_out= are checked and named by: the public result
# tuples' fields and the place of each in _engine's outputs (y, h_n, c_n,
# reserve) or grads (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh); the names of
# the inputs each call reads, in the order it passes them.
_OUTPUTS = {RNN: (("y", "h_n"), (0, 1)), LSTM: (LSTMOutput._fields, (0, 1, 2, 3)),
            GRU: (GRUOutput._fields, (0, 1, 3))}
_GRADS = {RNN: (RNNGrads._fields, (0, 1, 3, 4, 5)), LSTM: (LSTMGrads._fields, range(7)),
          GRU: (GRUGrads._fields, (0, 1, 3, 4, 5, 6))}
_RNN_FORWARD_READS = ("x", "h0", "w_ih", "w_hh", "bias", "lengths")
_RNN_BACKWARD_READS = ("x", "h0", "w_ih", "w_hh", "y", "dy", "dh_n", "lengths")
_GATED_READS = ("x", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh", "lengths")
_GATED_BACKWARD_READS = (*_GATED_READS, "y", "reserve", "dy", "dh_n", "dc_n")


def _contiguous(**arrays):
    """What the kernel reads: C-contiguous, aligned buffers (kernel_buffer),
    copied only when needed (a copy of a huge zero-stride view can fail: the
    message names it)."""
    def copy(name, a):
        try:
            return kernel_buffer(a)
        except MemoryError as e:
            raise MemoryError(f"{name}: no memory for a C-contiguous copy: {e}") from None
    return [copy(name, a) for name, a in arrays.items()]


_MAX_BYTES = np.iinfo(np.intp).max


def _check_sizes(cell, T, B, H, itemsize):
    """The buffers the call allocates ([T,B,H] outputs, [T,B,G*H] workspace,
    the [T,B,reserve_rows*H] reserve, [B,H]) must have byte sizes that fit
    in 64 bits. Checked on Python integers, which do not overflow, before
    anything is allocated. The input-shaped buffers ([T,B,D], [G*H,D],
    [G*H,H]) fit: the caller's arrays have those shapes, and NumPy caps an
    array's size."""
    rows = max(cell.reserve_rows, 1)   # the reserve holds the gates and more
    if max(T * B * rows * H, B * H) * itemsize <= _MAX_BYTES:
        return   # the common case, without building the messages (a visible cost at batch 1)
    for what, count in ((f"T*B*{f'{rows}*' if rows > 1 else ''}H", T * B * rows * H),
                        ("B*H", B * H)):
        if count * itemsize > _MAX_BYTES:
            raise MemoryError(f"{what} = {count} elements of {itemsize} bytes (T={T}, B={B}, "
                              f"H={H}) do not fit in a 64-bit size")


def _lengths(lengths, B, T):
    if lengths is None:
        return None
    a = as_array("lengths", lengths)
    if a.dtype.kind not in "iu" and a.size:  # [] (B = 0) becomes a float array
        raise TypeError(f"lengths: expected an integer array, got dtype {a.dtype}")
    if a.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},), got {a.shape}")
    if B and (a.min() < 0 or a.max() > T):
        raise ValueError(f"lengths: expected 0 <= lengths[b] <= T = {T}, "
                         f"got values from {a.min()} to {a.max()}")
    return a


def _common(x, h0, w_ih, w_hh, lengths, batch_first, cell=RNN, c0=None):
    """Check what forward and backward share; returns the arrays as given
    (not yet copied to C order, nor lengths to int64) and the sizes. The
    weights of a cell with G gates are (G*H, D) and (G*H, H)."""
    x = float_array("x", x, 3)
    dtype = x.dtype
    B, T, D = x.shape if batch_first else (x.shape[1], x.shape[0], x.shape[2])
    G = cell.gates
    w_hh = float_array("w_hh", w_hh, 2, dtype)
    H = w_hh.shape[1]
    if w_hh.shape[0] != G * H:
        expected = "a square (H, H) array" if G == 1 else \
            f"shape ({G}*H, H) for {cell.a_name}, ({G * H}, {H}) for H = {H}"
        raise ValueError(f"w_hh: expected {expected}, got shape {w_hh.shape}")
    w_ih = float_array("w_ih", w_ih, (G * H, D), dtype)
    h0 = optional("h0", h0, (B, H), dtype)
    c0 = optional("c0", c0, (B, H), dtype)
    _check_sizes(cell, T, B, H, dtype.itemsize)
    return x, h0, c0, w_ih, w_hh, _lengths(lengths, B, T), T, B, D, H


def _options(reverse, batch_first):
    return flag("reverse", reverse), flag("batch_first", batch_first)


def _given(name, given, result, shapes, dtype, read_names, read):
    """The arrays the caller gave as `name` (out=, grads_out=: a tuple of
    the public `result`'s fields, _OUTPUTS or _GRADS) to write the results
    into, checked against `shapes` (_engine's, in its order) and sharing no
    memory with `read` (the inputs as the caller gave them) or one another;
    returned in _engine's order. Called only when given: a call without one
    allocates as before, at no extra cost."""
    fields, places = result
    out_arrays(name, given, fields, [shapes[i] for i in places], dtype)
    disjoint(name, fields, given, read_names, read)
    arrays = [None] * len(shapes)
    for i, a in zip(places, given):
        arrays[i] = a
    return tuple(arrays)


def rnn_forward(x, h0, w_ih, w_hh, bias=None, *, nonlinearity="tanh",
                lengths=None, reverse=False, batch_first=False, out=None):
    """Run one RNN layer over a batch of sequences: h_t = act(W_ih x_t + W_hh h_{t-1} + b).

    x: (T, B, D), or (B, T, D) with batch_first. h0: (B, H) or None (zeros).
    w_ih: (H, D). w_hh: (H, H). bias: (H,) or None (zero).
    lengths: integers (B,), 0 <= lengths[b] <= T, or None (all T): steps at or
    past a sequence's length give zeros in y and leave its state unchanged.
    reverse: run each sequence from its last valid step back to step 0.

    Returns (y, h_n): y has x's layout with H last; h_n (B, H) is each
    sequence's state after its last valid step.

    out: arrays (y, h_n) to write the results into and return, such as a
    previous call's result: each exactly of its shape and x's dtype,
    C-contiguous, aligned, writeable and sharing no memory with an input or
    with the other.
    """
    act = activation(nonlinearity)
    reverse, batch_first = _options(reverse, batch_first)
    x, h0, _, w_ih, w_hh, lengths, T, B, D, H = _common(x, h0, w_ih, w_hh, lengths, batch_first)
    bias = optional("bias", bias, (H,), x.dtype)
    shapes = _engine.output_shapes(RNN, T, B, H, batch_first, False)
    outputs = _engine.empty(shapes, x.dtype) if out is None else _given(
        "out", out, _OUTPUTS[RNN], shapes, x.dtype, _RNN_FORWARD_READS,
        (x, h0, w_ih, w_hh, bias, lengths))
    inputs = (*_contiguous(x=x, h0=h0), None, *_contiguous(w_ih=w_ih, w_hh=w_hh, bias=bias),
              None, kernel_buffer(lengths, np.int64))
    _engine.forward(RNN, act, (T, B, D, H), x.dtype, inputs, outputs, reverse, batch_first)
    return outputs[:2]


def rnn_backward(x, h0, w_ih, w_hh, y, dy, dh_n=None, *, nonlinearity="tanh",
                 lengths=None, reverse=False, batch_first=False, grads_out=None):
    """Backpropagation through time for the rnn_forward call with the same arguments.

    y: the y that rnn_forward returned. dy: y-shaped gradient of the loss with
    respect to y, or None (zero). dh_n: (B, H) gradient with respect to h_n, or
    None (zero).

    Returns RNNGrads(dx, dh0, dw_ih, dw_hh, dbias); dbias is the gradient for
    the bias whether or not one was used. grads_out: arrays to write them
    into, as rnn_forward's out.
    """
    act = activation(nonlinearity)
    reverse, batch_first = _options(reverse, batch_first)
    x, h0, _, w_ih, w_hh, lengths, T, B, D, H = _common(x, h0, w_ih, w_hh, lengths, batch_first)
    seq = _engine.seq_shape(T, B, H, batch_first)
    y = float_array("y", y, seq, x.dtype)
    dy = optional("dy", dy, seq, x.dtype)
    dh_n = optional("dh_n", dh_n, (B, H), x.dtype)
    # One bias: its gradient is the kernel's db_ih, and db_hh is not asked for.
    shapes = (*_engine.grad_shapes(RNN, T, B, D, H, batch_first)[:6], None)
    grads = _engine.empty(shapes, x.dtype) if grads_out is None else _given(
        "grads_out", grads_out, _GRADS[RNN], shapes, x.dtype, _RNN_BACKWARD_READS,
        (x, h0, w_ih, w_hh, y, dy, dh_n, lengths))
    x, h0, w_ih, w_hh, y, dy, dh_n = _contiguous(x=x, h0=h0, w_ih=w_ih, w_hh=w_hh, y=y, dy=dy,
                                                 dh_n=dh_n)
    _engine.backward(RNN, act, (T, B, D, H), x.dtype,
                     (x, h0, None, w_ih, w_hh, None, None, kernel_buffer(lengths, np.int64)),
                     (y, None, dy, dh_n, None),
                     grads, reverse, batch_first)
    dx, dh0, _, dw_ih, dw_hh, dbias, _ = grads
    return RNNGrads(dx, dh0, dw_ih, dw_hh, dbias)


# The gated cells. Their reserve, what the forward keeps for the backward, is
# a header naming the call it came from, then the kernel's reserve
# (fusedrnn_reserve_size bytes), so that a reserve handed to the backward of
# another problem is refused rather than read. The header is _FIELDS int64
# values stored as their bits (exact for any size, in either dtype):
_FIELDS = ("cell", "T", "B", "D", "H", "reverse", "batch_first", "lengths")
_HEADER_BYTES = 8 * len(_FIELDS)


def _header_len(dtype):
    return _HEADER_BYTES // dtype.itemsize


def _reserve_header(cell, T, B, D, H, reverse, batch_first, lengths):
    """The header's values; `lengths` enters as a checksum (-1: none), so that a
    reserve of the same sizes but other lengths, whose padded rows the forward
    never wrote, is refused too."""
    checksum = -1 if lengths is None else zlib.crc32(lengths.tobytes())
    return np.array([cell.id, T, B, D, H, reverse, batch_first, checksum], np.int64)


def _gated_arrays(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, batch_first):
    """What a gated cell's forward and backward check alike: the inputs, in
    the kernel's order, as given (checked, for out= and grads_out= to be
    checked against) and as the kernel reads them, and the sizes."""
    x, h0, c0, w_ih, w_hh, lengths, T, B, D, H = _common(x, h0, w_ih, w_hh, lengths,
                                                         batch_first, cell, c0)
    GH = cell.gates * H
    b_ih = optional("b_ih", b_ih, (GH,), x.dtype)
    b_hh = optional("b_hh", b_hh, (GH,), x.dtype)
    given = (x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths)
    inputs = (*_contiguous(x=x, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh),
              kernel_buffer(lengths, np.int64))
    return given, inputs, T, B, D, H


def _gated_forward(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, batch_first,
                   training, out):
    reverse, batch_first = _options(reverse, batch_first)
    training = flag("training", training)
    given, inputs, T, B, D, H = _gated_arrays(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths,
                                              batch_first)
    return _run_gated_forward(cell, inputs, T, B, D, H, reverse, batch_first, training, out,
                              given)


def _run_gated_forward(cell, inputs, T, B, D, H, reverse, batch_first, training, out=None,
                       given=None):
    """(y, h_n, c_n, reserve): the reserve with its header, or None; into
    `out` when given, checked against the inputs as `given`."""
    dtype = inputs[0].dtype
    shapes = _engine.output_shapes(cell, T, B, H, batch_first, False)
    if training:   # the NumPy API's reserve: the header, then the kernel's
        n = _header_len(dtype)
        shapes = (*shapes[:3], (n + _engine.reserve_elements(cell, T, B, D, H, dtype),))
    y, h_n, c_n, reserve = _engine.empty(shapes, dtype) if out is None else _given(
        "out", out, _OUTPUTS[cell], shapes, dtype, _GATED_READS, given)
    kernel_reserve = None
    if training:
        reserve[:n].view(np.int64)[:] = _reserve_header(cell, T, B, D, H, reverse, batch_first,
                                                        inputs[7])
        kernel_reserve = reserve[n:]
    _engine.forward(cell, 0, (T, B, D, H), dtype, inputs, (y, h_n, c_n, kernel_reserve), reverse,
                    batch_first, training)
    return y, h_n, c_n, reserve


def _header_text(header):
    """A reserve header as the call it names: "LSTM T=3, B=2, D=4, H=5,
    reverse=False, batch_first=False, lengths=None"; a value that names no
    cell or flag (a header overwritten by something else) is shown as it is."""
    def value(name, v):
        v = int(v)
        if name == "cell":
            return next((c.name for c in CELLS.values() if c.id == v), f"cell={v}")
        if name in ("reverse", "batch_first") and v in (0, 1):
            return f"{name}={bool(v)}"
        if name == "lengths":
            return "lengths=None" if v == -1 else f"lengths with checksum {v}"
        return f"{name}={v}"
    parts = [value(n, v) for n, v in zip(_FIELDS, header)]
    return f"{parts[0]} {', '.join(parts[1:])}"


def _check_reserve(reserve, cell, T, B, D, H, reverse, batch_first, lengths, dtype):
    """The reserve of the forward of this very problem, or a clear error."""
    if not isinstance(reserve, np.ndarray):
        raise TypeError(f"reserve: expected the reserve array a training forward returned "
                        f"(or None), got {type(reserve).__name__}")
    if reserve.dtype != dtype:
        raise TypeError(f"reserve: expected dtype {dtype} (the dtype of x), got {reserve.dtype}")
    n = _header_len(dtype)
    size = n + _engine.reserve_elements(cell, T, B, D, H, dtype)
    header = _reserve_header(cell, T, B, D, H, reverse, batch_first, lengths)
    if reserve.shape != (size,):
        raise ValueError(f"reserve: expected shape ({size},), from the training forward of this "
                         f"{cell.name} (T={T}, B={B}, D={D}, H={H}), got {reserve.shape}")
    got = np.ascontiguousarray(reserve[:n]).view(np.int64)
    if not np.array_equal(got, header):
        raise ValueError(f"reserve: it comes from a different call ({_header_text(got)}); "
                         f"this one is {_header_text(header)}")
    return kernel_buffer(reserve[n:])


def _gated_backward(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, reserve, dy, dh_n, dc_n,
                    lengths, reverse, batch_first, grads_out):
    reverse, batch_first = _options(reverse, batch_first)
    given, inputs, T, B, D, H = _gated_arrays(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths,
                                              batch_first)
    dtype = inputs[0].dtype
    seq = _engine.seq_shape(T, B, H, batch_first)
    y = float_array("y", y, seq, dtype)
    dy = optional("dy", dy, seq, dtype)
    dh_n = optional("dh_n", dh_n, (B, H), dtype)
    dc_n = optional("dc_n", dc_n, (B, H), dtype)
    kernel_reserve = None if reserve is None else _check_reserve(
        reserve, cell, T, B, D, H, reverse, batch_first, inputs[7], dtype)
    shapes = _engine.grad_shapes(cell, T, B, D, H, batch_first)
    grads = _engine.empty(shapes, dtype) if grads_out is None else _given(
        "grads_out", grads_out, _GRADS[cell], shapes, dtype, _GATED_BACKWARD_READS,
        (*given, y, reserve, dy, dh_n, dc_n))
    y, dy, dh_n, dc_n = _contiguous(y=y, dy=dy, dh_n=dh_n, dc_n=dc_n)
    if kernel_reserve is None:   # recompute it: one more forward
        kernel_reserve = _run_gated_forward(cell, inputs, T, B, D, H, reverse, batch_first,
                                            True)[3][_header_len(dtype):]
    _engine.backward(cell, 0, (T, B, D, H), dtype, inputs,
                     (y, kernel_reserve, dy, dh_n, dc_n), grads, reverse, batch_first)
    return grads


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, *, lengths=None, reverse=False,
                 batch_first=False, training=False, out=None):
    """Run one LSTM layer over a batch of sequences, with PyTorch's maths and layout.

    Gates i, f, g, o are the row blocks of w_ih (4H, D), w_hh (4H, H), b_ih
    and b_hh (4H,) (None: zero). h0, c0: (B, H) or None (zeros). lengths,
    reverse, batch_first: as for rnn_forward. training: also return the
    reserve, what lstm_backward needs from this call.

    Returns LSTMOutput(y, h_n, c_n, reserve); reserve is None unless training.
    out: arrays to write them into, as rnn_forward's (a previous call's
    result with the same shapes and training); its reserve None unless
    training.
    """
    return LSTMOutput(*_gated_forward(LSTM, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths,
                                      reverse, batch_first, training, out))


def lstm_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, reserve, dy, dh_n=None, dc_n=None, *,
                  lengths=None, reverse=False, batch_first=False, grads_out=None):
    """Backpropagation through time for the lstm_forward call with the same arguments.

    y: its y. reserve: its reserve (training=True), or None to recompute it
    (one more forward). dy, dh_n, dc_n: the loss's gradients with respect to
    y, h_n and c_n, None meaning zero.

    Returns LSTMGrads(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh).
    grads_out: arrays to write them into, as rnn_forward's out.
    """
    return LSTMGrads(*_gated_backward(LSTM, x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, reserve,
                                      dy, dh_n, dc_n, lengths, reverse, batch_first, grads_out))


def gru_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, lengths=None, reverse=False,
                batch_first=False, training=False, out=None):
    """Run one GRU layer over a batch of sequences, with PyTorch's maths and layout.

    Gates r, z, n are the row blocks of w_ih (3H, D), w_hh (3H, H), b_ih and
    b_hh (3H,) (None: zero); n = tanh(W_in x + b_in + r (W_hn h + b_hn)).
    Otherwise as lstm_forward, without a cell state.

    Returns GRUOutput(y, h_n, reserve); reserve is None unless training.
    """
    y, h_n, _, reserve = _gated_forward(GRU, x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths,
                                        reverse, batch_first, training, out)
    return GRUOutput(y, h_n, reserve)


def gru_backward(x, h0, w_ih, w_hh, b_ih, b_hh, y, reserve, dy, dh_n=None, *, lengths=None,
                 reverse=False, batch_first=False, grads_out=None):
    """Backpropagation through time for the gru_forward call with the same arguments.

    Returns GRUGrads(dx, dh0, dw_ih, dw_hh, db_ih, db_hh); db_ih and db_hh
    differ in the n gate. grads_out: arrays to write them into, as
    rnn_forward's out.
    """
    dx, dh0, _, dw_ih, dw_hh, db_ih, db_hh = _gated_backward(
        GRU, x, h0, None, w_ih, w_hh, b_ih, b_hh, y, reserve, dy, dh_n, None, lengths,
        reverse, batch_first, grads_out)
    return GRUGrads(dx, dh0, dw_ih, dw_hh, db_ih, db_hh)


def set_isa(name):
    """Force the micro-kernels of one ISA ("scalar", "avx2", "avx512") for later calls."""
    if name not in _ISA_NAMES:
        raise ValueError(f"ISA: expected one of {', '.join(map(repr, _ISA_NAMES))}, got {name!r}")
    _kernel.set_isa(name)


def _seconds(seconds):
    """peak_gflops's duration: a real number (int, float, NumPy scalar,
    Fraction; never a bool) in (0, PEAK_MAX_SECONDS]. The C loop runs without
    the GIL, so Ctrl-C could not stop an infinite one."""
    most = _kernel.PEAK_MAX_SECONDS
    if isinstance(seconds, (bool, np.bool_)) or not isinstance(seconds, numbers.Real):
        raise TypeError(f"seconds: expected a real number, got {seconds!r}")
    # Compared before any conversion: exact for huge ints (float() would
    # overflow), and false for NaN.
    if not 0 < seconds <= most:
        raise ValueError(f"seconds: expected a finite number of seconds in (0, {most:g}], "
                         f"got {seconds!r}")
    return float(seconds)


def peak_gflops(dtype=np.float32, seconds=0.2):
    """GFLOP/s of a tight FMA loop on one thread with the active ISA, measured now.

    seconds: how long to measure, in (0, 60]; the best of runs of ~0.1 ms.
    Benchmarks divide by this (times the thread count) to report efficiency.
    """
    return _kernel.peak_gflops(float_dtype(dtype) == np.float64, _seconds(seconds))


get_isa = _kernel.get_isa
available_isas = _kernel.available_isas
