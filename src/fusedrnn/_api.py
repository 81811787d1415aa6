"""The NumPy API: check and convert arguments, allocate outputs, call the
kernel once. Everything numeric happens in C."""

import numbers
import operator
import os
import zlib

import numpy as np

from . import _kernel
from ._types import GRUGrads, GRUOutput, LSTMGrads, LSTMOutput, RNNGrads

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_ACTIVATIONS = _kernel.ACTIVATIONS
_CELLS = _kernel.CELLS
_RNN, _LSTM, _GRU = _CELLS["rnn"], _CELLS["lstm"], _CELLS["gru"]
_CELL_NAMES = {_RNN: "RNN", _LSTM: "LSTM", _GRU: "GRU"}
_WITH_ARTICLE = {_RNN: "an RNN", _LSTM: "an LSTM", _GRU: "a GRU"}
_ISA_NAMES = _kernel.ISAS


def _float_dtype(dtype):
    """`dtype` as a NumPy dtype, float32 or float64."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if dtype not in _FLOATS:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


def _as_array(name, a):
    """np.asarray, with the argument named when NumPy cannot convert it
    (ragged nested lists, for one)."""
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name}: cannot be read as an array: {e}") from None


def _float_array(name, a, shape, dtype=None):
    """`a` as a float array of the given shape (an int: any shape of that many
    dimensions). Not copied yet: copies wait until every size is checked."""
    a = _as_array(name, a)
    if a.dtype not in _FLOATS:
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the dtype of x), got {a.dtype}")
    if isinstance(shape, int):
        if a.ndim != shape:
            raise ValueError(f"{name}: expected a {shape}-D array, got shape {a.shape}")
    elif a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
    return a


def _optional(name, a, shape, dtype):
    return None if a is None else _float_array(name, a, shape, dtype)


def _kernel_buffer(a, dtype=None):
    """`a` as the kernel reads it: C-contiguous and aligned to its dtype, in
    `dtype` when given; the array itself when it already is, else a copy.
    C-contiguous is not enough: np.frombuffer(buf, np.float32, offset=1) is
    C-contiguous with every element one byte off, and the kernel's loads
    through float/double/int64_t pointers assume the dtype's alignment
    (np.ascontiguousarray hands such an array through as it is)."""
    if a is None:
        return None
    flags = a.flags
    if flags.c_contiguous and flags.aligned and (dtype is None or a.dtype == dtype):
        return a   # the common case, without np.require's cost (a few us at batch 1)
    return np.require(a, dtype, ("C", "A"))


def _contiguous(**arrays):
    """What the kernel reads: C-contiguous, aligned buffers (_kernel_buffer),
    copied only when needed (a copy of a huge zero-stride view can fail: the
    message names it)."""
    def copy(name, a):
        try:
            return _kernel_buffer(a)
        except MemoryError as e:
            raise MemoryError(f"{name}: no memory for a C-contiguous copy: {e}") from None
    return [copy(name, a) for name, a in arrays.items()]


_MAX_BYTES = np.iinfo(np.intp).max


def _check_sizes(T, B, H, itemsize, G=1):
    """The buffers the call allocates ([T,B,H] outputs, [T,B,G*H] workspace
    and reserve, [B,H]) must have byte sizes that fit in 64 bits. Checked on
    Python integers, which do not overflow, before anything is allocated.
    The input-shaped buffers ([T,B,D], [G*H,D], [G*H,H]) fit: the caller's
    arrays have those shapes, and NumPy caps an array's size."""
    per_row = ("H", H) if G == 1 else (f"{G + 1}*H", (G + 1) * H)   # the gates and a state
    for what, count in ((f"T*B*{per_row[0]}", T * B * per_row[1]), ("B*H", B * H)):
        if count * itemsize > _MAX_BYTES:
            raise MemoryError(f"{what} = {count} elements of {itemsize} bytes (T={T}, B={B}, "
                              f"H={H}) do not fit in a 64-bit size")


def _activation(nonlinearity):
    try:
        return _ACTIVATIONS[nonlinearity]
    except (KeyError, TypeError):
        raise ValueError(f"nonlinearity: expected one of {', '.join(map(repr, _ACTIVATIONS))}, "
                         f"got {nonlinearity!r}") from None


def _lengths(lengths, B, T):
    if lengths is None:
        return None
    a = _as_array("lengths", lengths)
    if a.dtype.kind not in "iu" and a.size:  # [] (B = 0) becomes a float array
        raise TypeError(f"lengths: expected an integer array, got dtype {a.dtype}")
    if a.shape != (B,):
        raise ValueError(f"lengths: expected shape ({B},), got {a.shape}")
    if B and (a.min() < 0 or a.max() > T):
        raise ValueError(f"lengths: expected 0 <= lengths[b] <= T = {T}, "
                         f"got values from {a.min()} to {a.max()}")
    return _kernel_buffer(a, np.int64)


def _common(x, h0, w_ih, w_hh, lengths, batch_first, cell=_RNN, c0=None):
    """Check what forward and backward share; returns the arrays (not yet
    copied to C order), lengths as int64 and the sizes. The weights of a
    cell with G gates are (G*H, D) and (G*H, H)."""
    x = _float_array("x", x, 3)
    dtype = x.dtype
    B, T, D = x.shape if batch_first else (x.shape[1], x.shape[0], x.shape[2])
    G = _kernel.gates(cell)
    w_hh = _float_array("w_hh", w_hh, 2, dtype)
    H = w_hh.shape[1]
    if w_hh.shape[0] != G * H:
        expected = "a square (H, H) array" if G == 1 else \
            f"shape ({G}*H, H) for {_WITH_ARTICLE[cell]}, ({G * H}, {H}) for H = {H}"
        raise ValueError(f"w_hh: expected {expected}, got shape {w_hh.shape}")
    w_ih = _float_array("w_ih", w_ih, (G * H, D), dtype)
    h0 = _optional("h0", h0, (B, H), dtype)
    c0 = _optional("c0", c0, (B, H), dtype)
    _check_sizes(T, B, H, dtype.itemsize, G)
    return x, h0, c0, w_ih, w_hh, _lengths(lengths, B, T), T, B, D, H


def _seq_shape(T, B, n, batch_first):
    return (B, T, n) if batch_first else (T, B, n)


def _options(reverse, batch_first):
    return _flag("reverse", reverse), _flag("batch_first", batch_first)


def rnn_forward(x, h0, w_ih, w_hh, bias=None, *, nonlinearity="tanh",
                lengths=None, reverse=False, batch_first=False):
    """Run one RNN layer over a batch of sequences: h_t = act(W_ih x_t + W_hh h_{t-1} + b).

    x: (T, B, D), or (B, T, D) with batch_first. h0: (B, H) or None (zeros).
    w_ih: (H, D). w_hh: (H, H). bias: (H,) or None (zero).
    lengths: integers (B,), 0 <= lengths[b] <= T, or None (all T): steps at or
    past a sequence's length give zeros in y and leave its state unchanged.
    reverse: run each sequence from its last valid step back to step 0.

    Returns (y, h_n): y has x's layout with H last; h_n (B, H) is each
    sequence's state after its last valid step.
    """
    act = _activation(nonlinearity)
    reverse, batch_first = _options(reverse, batch_first)
    x, h0, _, w_ih, w_hh, lengths, T, B, D, H = _common(x, h0, w_ih, w_hh, lengths, batch_first)
    bias = _optional("bias", bias, (H,), x.dtype)
    x, h0, w_ih, w_hh, bias = _contiguous(x=x, h0=h0, w_ih=w_ih, w_hh=w_hh, bias=bias)
    return _run_forward(x, h0, w_ih, w_hh, bias, lengths, T, B, H, act, reverse, batch_first)


def rnn_backward(x, h0, w_ih, w_hh, y, dy, dh_n=None, *, nonlinearity="tanh",
                 lengths=None, reverse=False, batch_first=False):
    """Backpropagation through time for the rnn_forward call with the same arguments.

    y: the y that rnn_forward returned. dy: y-shaped gradient of the loss with
    respect to y, or None (zero). dh_n: (B, H) gradient with respect to h_n, or
    None (zero).

    Returns RNNGrads(dx, dh0, dw_ih, dw_hh, dbias); dbias is the gradient for
    the bias whether or not one was used.
    """
    act = _activation(nonlinearity)
    reverse, batch_first = _options(reverse, batch_first)
    x, h0, _, w_ih, w_hh, lengths, T, B, D, H = _common(x, h0, w_ih, w_hh, lengths, batch_first)
    seq = _seq_shape(T, B, H, batch_first)
    y = _float_array("y", y, seq, x.dtype)
    dy = _optional("dy", dy, seq, x.dtype)
    dh_n = _optional("dh_n", dh_n, (B, H), x.dtype)
    x, h0, w_ih, w_hh, y, dy, dh_n = _contiguous(x=x, h0=h0, w_ih=w_ih, w_hh=w_hh, y=y, dy=dy,
                                                 dh_n=dh_n)
    return _run_backward(x, h0, w_ih, w_hh, lengths, y, dy, dh_n, T, B, H, act, reverse,
                         batch_first)


# The gated cells. Their reserve, what the forward keeps for the backward, is
# a header naming the call it came from, then the kernel's reserve
# (fusedrnn_reserve_size bytes), so that a reserve handed to the backward of
# another problem is refused rather than read. The header is _FIELDS int64
# values stored as their bits (exact for any size, in either dtype):
_FIELDS = ("cell", "T", "B", "D", "H", "reverse", "batch_first", "lengths")
_HEADER_BYTES = 8 * len(_FIELDS)


def _header_len(dtype):
    return _HEADER_BYTES // dtype.itemsize


def _problem(cell, act, T, B, D, H, reverse, batch_first, training=False):
    return (cell, act, T, B, D, H, reverse, batch_first, _num_threads, training)


def _reserve_header(cell, T, B, D, H, reverse, batch_first, lengths):
    """The header's values; `lengths` enters as a checksum (-1: none), so that a
    reserve of the same sizes but other lengths, whose padded rows the forward
    never wrote, is refused too."""
    checksum = -1 if lengths is None else zlib.crc32(lengths.tobytes())
    return np.array([cell, T, B, D, H, reverse, batch_first, checksum], np.int64)


def _gated_forward(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, batch_first,
                   training):
    reverse, batch_first = _options(reverse, batch_first)
    training = _flag("training", training)
    x, h0, c0, w_ih, w_hh, lengths, T, B, D, H = _common(x, h0, w_ih, w_hh, lengths,
                                                         batch_first, cell, c0)
    G = _kernel.gates(cell)
    b_ih = _optional("b_ih", b_ih, (G * H,), x.dtype)
    b_hh = _optional("b_hh", b_hh, (G * H,), x.dtype)
    x, h0, c0, w_ih, w_hh, b_ih, b_hh = _contiguous(x=x, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh,
                                                    b_ih=b_ih, b_hh=b_hh)
    return _run_gated_forward(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, T, B, D, H,
                              reverse, batch_first, training)


def _run_gated_forward(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, T, B, D, H, reverse,
                       batch_first, training):
    prob = _problem(cell, 0, T, B, D, H, reverse, batch_first, training)
    y = np.empty(_seq_shape(T, B, H, batch_first), x.dtype)
    h_n = np.empty((B, H), x.dtype)
    c_n = np.empty((B, H), x.dtype) if cell == _LSTM else None
    reserve = kernel_reserve = None
    if training:
        n = _header_len(x.dtype)
        reserve = np.empty(n + _kernel.reserve_size(prob, x.dtype), x.dtype)
        reserve[:n].view(np.int64)[:] = _reserve_header(cell, T, B, D, H, reverse, batch_first,
                                                        lengths)
        kernel_reserve = reserve[n:]
    _kernel.forward(prob, (x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths),
                    (y, h_n, c_n, kernel_reserve))
    return y, h_n, c_n, reserve


def _header_text(header):
    """A reserve header as the call it names: "LSTM T=3, B=2, D=4, H=5,
    reverse=False, batch_first=False, lengths=None"; a value that names no
    cell or flag (a header overwritten by something else) is shown as it is."""
    def value(name, v):
        v = int(v)
        if name == "cell":
            return _CELL_NAMES.get(v, f"cell={v}")
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
    prob = _problem(cell, 0, T, B, D, H, reverse, batch_first, True)
    n = _header_len(dtype)
    size = n + _kernel.reserve_size(prob, dtype)
    header = _reserve_header(cell, T, B, D, H, reverse, batch_first, lengths)
    if reserve.shape != (size,):
        raise ValueError(f"reserve: expected shape ({size},), from the training forward of this "
                         f"{_CELL_NAMES[cell]} (T={T}, B={B}, D={D}, H={H}), got {reserve.shape}")
    got = np.ascontiguousarray(reserve[:n]).view(np.int64)
    if not np.array_equal(got, header):
        raise ValueError(f"reserve: it comes from a different call ({_header_text(got)}); "
                         f"this one is {_header_text(header)}")
    return _kernel_buffer(reserve[n:])


def _gated_backward(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, reserve, dy, dh_n, dc_n,
                    lengths, reverse, batch_first):
    reverse, batch_first = _options(reverse, batch_first)
    x, h0, c0, w_ih, w_hh, lengths, T, B, D, H = _common(x, h0, w_ih, w_hh, lengths,
                                                         batch_first, cell, c0)
    G, dtype = _kernel.gates(cell), x.dtype
    b_ih = _optional("b_ih", b_ih, (G * H,), dtype)
    b_hh = _optional("b_hh", b_hh, (G * H,), dtype)
    seq = _seq_shape(T, B, H, batch_first)
    y = _float_array("y", y, seq, dtype)
    dy = _optional("dy", dy, seq, dtype)
    dh_n = _optional("dh_n", dh_n, (B, H), dtype)
    dc_n = _optional("dc_n", dc_n, (B, H), dtype)
    if reserve is not None:
        reserve = _check_reserve(reserve, cell, T, B, D, H, reverse, batch_first, lengths,
                                 dtype)
    x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, dy, dh_n, dc_n = _contiguous(
        x=x, h0=h0, c0=c0, w_ih=w_ih, w_hh=w_hh, b_ih=b_ih, b_hh=b_hh, y=y, dy=dy, dh_n=dh_n,
        dc_n=dc_n)
    if reserve is None:   # recompute it: one more forward
        reserve = _run_gated_forward(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, T, B,
                                     D, H, reverse, batch_first, True)[3][_header_len(dtype):]
    grads = (np.empty_like(x), np.empty((B, H), dtype),
             np.empty((B, H), dtype) if cell == _LSTM else None,
             np.empty_like(w_ih), np.empty_like(w_hh), np.empty(G * H, dtype),
             np.empty(G * H, dtype))
    _kernel.backward(_problem(cell, 0, T, B, D, H, reverse, batch_first),
                     (x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths),
                     (y, reserve, dy, dh_n, dc_n), grads)
    return grads


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, *, lengths=None, reverse=False,
                 batch_first=False, training=False):
    """Run one LSTM layer over a batch of sequences, with PyTorch's maths and layout.

    Gates i, f, g, o are the row blocks of w_ih (4H, D), w_hh (4H, H), b_ih
    and b_hh (4H,) (None: zero). h0, c0: (B, H) or None (zeros). lengths,
    reverse, batch_first: as for rnn_forward. training: also return the
    reserve, what lstm_backward needs from this call.

    Returns LSTMOutput(y, h_n, c_n, reserve); reserve is None unless training.
    """
    return LSTMOutput(*_gated_forward(_LSTM, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths,
                                      reverse, batch_first, training))


def lstm_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, reserve, dy, dh_n=None, dc_n=None, *,
                  lengths=None, reverse=False, batch_first=False):
    """Backpropagation through time for the lstm_forward call with the same arguments.

    y: its y. reserve: its reserve (training=True), or None to recompute it
    (one more forward). dy, dh_n, dc_n: the loss's gradients with respect to
    y, h_n and c_n, None meaning zero.

    Returns LSTMGrads(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh).
    """
    return LSTMGrads(*_gated_backward(_LSTM, x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, reserve,
                                      dy, dh_n, dc_n, lengths, reverse, batch_first))


def gru_forward(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, lengths=None, reverse=False,
                batch_first=False, training=False):
    """Run one GRU layer over a batch of sequences, with PyTorch's maths and layout.

    Gates r, z, n are the row blocks of w_ih (3H, D), w_hh (3H, H), b_ih and
    b_hh (3H,) (None: zero); n = tanh(W_in x + b_in + r (W_hn h + b_hn)).
    Otherwise as lstm_forward, without a cell state.

    Returns GRUOutput(y, h_n, reserve); reserve is None unless training.
    """
    y, h_n, _, reserve = _gated_forward(_GRU, x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths,
                                        reverse, batch_first, training)
    return GRUOutput(y, h_n, reserve)


def gru_backward(x, h0, w_ih, w_hh, b_ih, b_hh, y, reserve, dy, dh_n=None, *, lengths=None,
                 reverse=False, batch_first=False):
    """Backpropagation through time for the gru_forward call with the same arguments.

    Returns GRUGrads(dx, dh0, dw_ih, dw_hh, db_ih, db_hh); db_ih and db_hh
    differ in the n gate.
    """
    dx, dh0, _, dw_ih, dw_hh, db_ih, db_hh = _gated_backward(
        _GRU, x, h0, None, w_ih, w_hh, b_ih, b_hh, y, reserve, dy, dh_n, None, lengths,
        reverse, batch_first)
    return GRUGrads(dx, dh0, dw_ih, dw_hh, db_ih, db_hh)


# The kernel calls once every argument is known good: C-contiguous, aligned
# arrays (_kernel_buffer) of one float dtype with matching shapes (or None),
# lengths int64 within [0, T] (or None). rnn_forward/rnn_backward get there by
# checking; fusedrnn.torch by what torch.nn.RNN has already checked, and
# _kernel_buffer for the layout.

def _run_forward(x, h0, w_ih, w_hh, bias, lengths, T, B, H, act, reverse, batch_first):
    y = np.empty(_seq_shape(T, B, H, batch_first), x.dtype)
    h_n = np.empty((B, H), x.dtype)
    D = w_ih.shape[1]
    _kernel.forward(_problem(_RNN, act, T, B, D, H, reverse, batch_first),
                    (x, h0, None, w_ih, w_hh, bias, None, lengths), (y, h_n, None, None))
    return y, h_n


def _run_backward(x, h0, w_ih, w_hh, lengths, y, dy, dh_n, T, B, H, act, reverse, batch_first):
    grads = RNNGrads(np.empty_like(x), np.empty((B, H), x.dtype), np.empty_like(w_ih),
                     np.empty_like(w_hh), np.empty(H, x.dtype))
    D = w_ih.shape[1]
    _kernel.backward(_problem(_RNN, act, T, B, D, H, reverse, batch_first),
                     (x, h0, None, w_ih, w_hh, None, None, lengths),
                     (y, None, dy, dh_n, None),
                     (grads.dx, grads.dh0, None, grads.dw_ih, grads.dw_hh, grads.dbias, None))
    return grads


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
    return _kernel.peak_gflops(_float_dtype(dtype) == np.float64, _seconds(seconds))


get_isa = _kernel.get_isa
available_isas = _kernel.available_isas


_MAX_THREADS = 2**31 - 1  # the kernel takes the count as a C int (and uses at most 64)


def _positive_int(name, value, most=None):
    """A size or count: an integer >= 1 (an int-like, never a bool or a float),
    and at most `most` when given."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a positive integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected a positive integer, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value}")
    if most is not None and value > most:
        raise ValueError(f"{name}: expected at most {most}, got {value}")
    return value


def _threads_from_env():
    value = os.environ.get("FUSEDRNN_NUM_THREADS")
    if value is None:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        return _positive_int("FUSEDRNN_NUM_THREADS", int(value), _MAX_THREADS)
    except ValueError:
        raise ValueError(f"FUSEDRNN_NUM_THREADS: expected a positive integer, got {value!r}") from None


def _flag(name, value):
    """reverse and batch_first: a bool (or 0/1), never any truthy object."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{name}: expected True or False, got {value!r}")


_num_threads = _threads_from_env()


def set_num_threads(n):
    """Set the most threads later kernel calls use (n >= 1). Small problems use
    fewer, where splitting would cost more than it saves; results are bitwise
    the same for any count."""
    global _num_threads
    _num_threads = _positive_int("n", n, _MAX_THREADS)


def get_num_threads():
    """The number of threads kernel calls use (default: FUSEDRNN_NUM_THREADS or the CPU count)."""
    return _num_threads
