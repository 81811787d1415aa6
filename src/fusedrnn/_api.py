"""The NumPy API: check and convert arguments, allocate the results (or
check the caller's, out= and grads_out=), call the kernel once. Everything
numeric happens in C.

Every call runs the same way for every cell: its arguments checked into a
Problem (_engine.py) and the named groups of the kernel's buffers, which
the one forward (_forward) and the one backward (_backward) hand to the
kernel. What differs between cells comes from the cell (_cells.py)."""

import functools
import numbers
import zlib

import numpy as np

from . import _engine, _kernel
from ._cells import CELLS, GRU, GRU_RESET_FIRST, LSTM, RNN, Cell
from ._checks import (activation, as_array, disjoint, dtype_reason, flag, float_array,
                      float_dtype, optional, out_arrays)
from ._engine import GradInputs, Inputs, Outputs, kernel_buffer
from ._types import GRUGrads, GRUOutput, LSTMGrads, LSTMOutput, RNNGrads

_ISA_NAMES = _kernel.ISAS

# The arguments' names for the kernel's inputs, as Inputs of strings, in
# messages: the fields' own, but for the RNN's one bias, the kernel's b_ih.
_INPUT_NAMES = Inputs(*Inputs._fields)
_RNN_INPUT_NAMES = _INPUT_NAMES._replace(b_ih="bias")

# The public results' fields are the kernel's names (fusedrnn.h) but for
# the RNN's one bias gradient, the kernel's db_ih.
_KERNEL_NAMES = {"dbias": "db_ih"}
_RNN_OUTPUT_FIELDS = ("y", "h_n")


@functools.lru_cache(maxsize=None)
def _kernel_names(fields):
    """The kernel's names of a public result's fields (a handful of tuples)."""
    return tuple(_KERNEL_NAMES.get(field, field) for field in fields)


def _contiguous(group, names=None):
    """`group` (Inputs, GradInputs) as the kernel reads it: every array
    C-contiguous and aligned (kernel_buffer), lengths int64, each copied only
    when it is not; the group itself when none is (the common case, without
    a new group's cost at batch 1). A copy can fail (of a huge zero-stride
    view): the message names the array, by `names` (default: the fields)."""
    buffers, copied = [], False
    for name, a in zip(names or group._fields, group):
        if a is not None:
            try:
                buffer = kernel_buffer(a, np.int64 if name == "lengths" else None)
            except MemoryError as e:
                raise MemoryError(f"{name}: no memory for a C-contiguous copy: {e}") from None
            copied = copied or buffer is not a
            a = buffer
        buffers.append(a)
    return group._make(buffers) if copied else group


_MAX_BYTES = np.iinfo(np.intp).max


def _check_sizes(problem):
    """The buffers the call allocates ([T,B,H] outputs, [T,B,G*H] workspace,
    the [T,B,reserve_rows*H] reserve, [B,H]) must have byte sizes that fit
    in 64 bits. Checked on Python integers, which do not overflow, before
    anything is allocated. The input-shaped buffers ([T,B,D], [G*H,D],
    [G*H,H]) fit: the caller's arrays have those shapes, and NumPy caps an
    array's size."""
    # a bfloat16 call's reserve holds float32 values: counted at 4 bytes, all of it
    T, B, H, itemsize = problem.T, problem.B, problem.H, max(problem.dtype.itemsize, 4)
    rows = problem.reserve_rows() or 1   # per (t, b): y's one row, or the reserve's
    if (T * B * rows * H + B * H) * itemsize <= _MAX_BYTES:
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


def _resets(resets, T, B, batch_first):
    """resets as the kernel reads them: x's (T, B), or (B, T) with
    batch_first, of bool or integers, nonzero meaning set; as uint8 0 or 1
    (the same flags always the same bytes, which the reserve's header
    checksums), a new array, not yet C-contiguous."""
    if resets is None:
        return None
    a = as_array("resets", resets)
    if a.dtype.kind not in "biu" and a.size:  # [] (T*B = 0) becomes a float array
        raise TypeError(f"resets: expected a bool or integer array, got dtype {a.dtype}")
    shape = (B, T) if batch_first else (T, B)
    if a.shape != shape:
        raise ValueError(f"resets: expected shape {shape} ({'B, T' if batch_first else 'T, B'}"
                         f", x's layout), got {a.shape}")
    return (a != 0).view(np.uint8)


def _common(cell, names, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, reverse, batch_first,
            act=0, training=False, resets=None):
    """Check the inputs of a call, as the caller gave them (named `names`,
    an Inputs of strings), and its options; returns its Problem and the
    inputs checked, as Inputs of the arrays given (not yet copied to C
    order, nor lengths to int64: out= and grads_out= are checked against
    these; resets as uint8 flags of their own). The
    weights of a cell with G gates are (G*H, D) and (G*H, H)."""
    reverse, batch_first = flag("reverse", reverse), flag("batch_first", batch_first)
    training = flag("training", training)
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
    problem = _engine.Problem(cell, dtype, T, B, D, H, act, reverse, batch_first,
                              training=training)
    _check_sizes(problem)
    lengths = _lengths(lengths, B, T)
    resets = _resets(resets, T, B, batch_first)
    b_ih = optional(names.b_ih, b_ih, (G * H,), dtype)
    b_hh = optional("b_hh", b_hh, (G * H,), dtype)
    return problem, Inputs(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, resets)


class _Required:
    """The default of an argument a call needs unless w_ih is a
    PackedWeights (the weights) or always (a backward's y, reserve, dy, which
    follow them): leaving it out is the TypeError Python gives."""

    def __repr__(self):
        return "<required>"


_REQUIRED = _Required()


def _missing(function, names, values):
    """Raise Python's TypeError for the first of `values` left out."""
    for name, value in zip(names, values):
        if value is _REQUIRED:
            raise TypeError(f"{function}() missing required argument: '{name}'")


class PackedWeights:
    """A layer's weights and biases packed once for the forward's and the
    backward's kernels (fusedrnn.pack_weights), which every forward and
    backward function takes in place of w_ih, w_hh and the biases.

    It holds a copy of the weights and biases as given (a snapshot: later
    changes to the caller's arrays do not reach it) and the pack: W_hh and
    W_ih^T laid out as the forward's products read them, the bias the input
    side adds, and W_hh and W_ih as the backward's read them, `nbytes` bytes
    (about 2*G*H*(H+D) elements, docs/api.md). A forward or backward given
    it copies no weights.
    The pack is tied to the ISA active when it was made (`isa`): after
    set_isa to another, calls refuse it.

    Attributes: cell (its _cells.Cell), dtype, input_size (D), hidden_size
    (H), isa, nbytes (the pack's; the copies of the weights come on top)."""

    __slots__ = ("cell", "dtype", "input_size", "hidden_size", "isa", "nbytes", "_buffer",
                 "_weights")

    def __init__(self):
        raise TypeError("PackedWeights: made by fusedrnn.pack_weights(cell, w_ih, w_hh, ...)")

    def __repr__(self):
        return (f"PackedWeights({self.cell.name}, {self.dtype}, input_size={self.input_size}, "
                f"hidden_size={self.hidden_size}, isa={self.isa!r}, nbytes={self.nbytes})")

    def _for_call(self, cell, x, given):
        """The weights and biases (as Inputs' w_ih, w_hh, b_ih, b_hh) for a
        call of `cell` on x, after checking that the pack fits it and that
        no weight is given beside it (`given`: the call's w_hh and biases by
        name, None or _REQUIRED meaning left out)."""
        for name, value in given.items():
            if value is not None and value is not _REQUIRED:
                raise TypeError(f"{name}: w_ih is a PackedWeights, which holds the weights and "
                                f"biases: leave out {', '.join(given)}")
        what = f"w_ih: packed weights of {self.cell.a_name}"
        if cell is not self.cell:
            raise ValueError(f"{what}, for a call of {cell.a_name}")
        x = float_array("x", x, 3)
        if x.dtype != self.dtype:
            raise TypeError(f"{what} in {self.dtype}, for x in {x.dtype}")
        if x.shape[2] != self.input_size:
            raise ValueError(f"{what} with input size D = {self.input_size}, for x with "
                             f"D = {x.shape[2]} (shape {x.shape})")
        isa = _kernel.get_isa()
        if isa != self.isa:
            raise ValueError(f"{what} packed for the ISA {self.isa!r}, which is no longer the "
                             f"active one ({isa!r}): pack them again")
        w_ih, w_hh, b_ih, b_hh = self._weights
        return w_ih, w_hh, b_ih, b_hh


def _cell_named(cell):
    """pack_weights' cell: a _cells.Cell, or the key of one."""
    if isinstance(cell, Cell):
        return cell
    if isinstance(cell, str) and cell in CELLS:
        return CELLS[cell]
    raise ValueError(f"cell: expected one of {', '.join(map(repr, CELLS))} or a _cells.Cell, "
                     f"got {cell!r}")


def _snapshot(name, a, shape, dtype):
    """A read-only C-contiguous copy of a weight (None stays None)."""
    if a is None:
        return None
    a = as_array(name, a)
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the dtype of w_ih), got {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
    a = np.array(a, dtype, order="C", copy=True)
    a.setflags(write=False)
    return a


def pack_weights(cell, w_ih, w_hh, b_ih=None, b_hh=None, *, bias=None):
    """Pack a layer's weights once for many forward calls (PackedWeights).

    cell: "rnn", "lstm", "gru" (or "gru_linear_before_reset_false", or a
    _cells.Cell). w_ih (G*H, D), w_hh (G*H, H), both float32, both float64
    or both bfloat16; the biases (G*H,) or None (zero): b_ih and b_hh, or for
    the RNN its one bias, `bias` (or the fourth argument), as rnn_forward
    takes it.
    The arrays are copied: later changes to them do not reach the pack.
    Packed for the active ISA (get_isa).

        packed = fusedrnn.pack_weights("lstm", w_ih, w_hh, b_ih, b_hh)
        y, h_n, c_n, _ = fusedrnn.lstm_forward(x, h0, c0, packed)
    """
    cell = _cell_named(cell)
    if cell is RNN:
        if b_hh is not None:
            raise TypeError("b_hh: the RNN takes one bias, `bias`")
        if bias is not None and b_ih is not None:
            raise TypeError("bias: given twice (as the fourth argument too)")
        b_ih, names = (b_ih if bias is None else bias), _RNN_INPUT_NAMES
    elif bias is not None:
        raise TypeError(f"bias: the RNN's one bias; {cell.a_name} takes b_ih and b_hh")
    else:
        names = _INPUT_NAMES
    w_ih = float_array("w_ih", w_ih, 2)
    dtype, G = w_ih.dtype, cell.gates
    w_hh = as_array("w_hh", w_hh)
    if w_hh.ndim != 2 or w_hh.shape[0] != G * w_hh.shape[1]:
        raise ValueError(f"w_hh: expected shape ({G}*H, H) for {cell.a_name}, got {w_hh.shape}")
    H = w_hh.shape[1]
    D = w_ih.shape[1]
    weights = (_snapshot("w_ih", w_ih, (G * H, D), dtype),
               _snapshot("w_hh", w_hh, (G * H, H), dtype),
               _snapshot(names.b_ih, b_ih, (G * H,), dtype),
               _snapshot("b_hh", b_hh, (G * H,), dtype))
    problem = _engine.Problem(cell, dtype, 0, 0, D, H)
    isa = _kernel.get_isa()
    nbytes = _kernel.packed_size(problem)
    try:
        memory = np.empty(nbytes + 63, np.uint8)
    except MemoryError:
        raise MemoryError(f"pack_weights: cannot allocate the {nbytes}-byte pack") from None
    start = -memory.ctypes.data % 64
    buffer = memory[start:start + nbytes]   # 64-byte aligned: the panels' cache lines whole
    _kernel.pack(problem, *weights, buffer)
    buffer.setflags(write=False)
    packed = object.__new__(PackedWeights)
    packed.cell, packed.dtype, packed.input_size, packed.hidden_size = cell, dtype, D, H
    packed.isa, packed.nbytes, packed._buffer, packed._weights = isa, nbytes, buffer, weights
    return packed


def _given(name, given, fields, shapes, dtype, read_names, read, reserve_dtype=None):
    """The arrays the caller gave as `name` (out=, grads_out=: a tuple of
    the public result's `fields`) to write the results into, checked against
    `shapes` (Outputs or Grads) and sharing no memory with `read` (the
    inputs as the caller gave them) or one another; returned as the group
    of `shapes`, by the kernel's names, None for the fields the public
    result has not. Called only when given: a call without one allocates
    as before, at no extra cost."""
    kernel = _kernel_names(fields)
    out_arrays(name, given, fields, [getattr(shapes, k) for k in kernel], dtype, reserve_dtype)
    disjoint(name, fields, given, read_names, read)
    return type(shapes)(**dict(zip(kernel, given)))


# The reserve of a cell that keeps one, what the forward keeps for the
# backward, is a header naming the call it came from, then the kernel's
# reserve (Problem.reserve_size elements), so that a reserve handed to the
# backward of another problem is refused rather than read. The header is
# _FIELDS int64 values stored as their bits (exact for any size, in either
# dtype):
_FIELDS = ("cell", "T", "B", "D", "H", "reverse", "batch_first", "lengths", "resets")
_HEADER_BYTES = 8 * len(_FIELDS)


def _header_len(dtype):
    return _HEADER_BYTES // dtype.itemsize


def _checksum(a):
    return -1 if a is None else zlib.crc32(a.tobytes())


def _reserve_header(p, inputs):
    """The header's values for Problem p; the inputs' lengths (int64) and
    resets (uint8) enter as checksums (-1: None), so that a reserve of the
    same sizes but other lengths, whose padded rows the forward never wrote,
    or other resets, whose pieces it ran, is refused too."""
    return np.array([p.cell.id, p.T, p.B, p.D, p.H, p.reverse, p.batch_first,
                     _checksum(inputs.lengths), _checksum(inputs.resets)], np.int64)


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
        if name in ("lengths", "resets"):
            return f"{name}=None" if v == -1 else f"{name} with checksum {v}"
        return f"{name}={v}"
    parts = [value(n, v) for n, v in zip(_FIELDS, header)]
    return f"{parts[0]} {', '.join(parts[1:])}"


def _check_reserve(reserve, problem, inputs):
    """The reserve of the forward of this very problem on `inputs` (as the
    kernel reads them), or a clear error; returns the kernel's part."""
    dtype = problem.reserve_dtype
    if not isinstance(reserve, np.ndarray):
        raise TypeError(f"reserve: expected the reserve array a training forward returned "
                        f"(or None), got {type(reserve).__name__}")
    if reserve.dtype != dtype:
        raise TypeError(f"reserve: expected dtype {dtype} "
                        f"({dtype_reason(dtype, problem.dtype)}), got {reserve.dtype}")
    n = _header_len(dtype)
    size = n + problem.reserve_size()
    header = _reserve_header(problem, inputs)
    if reserve.shape != (size,):
        raise ValueError(f"reserve: expected shape ({size},), from the training forward of this "
                         f"{problem.dtype} {problem.cell.name} (T={problem.T}, B={problem.B}, "
                         f"D={problem.D}, "
                         f"H={problem.H}), got {reserve.shape}")
    got = np.ascontiguousarray(reserve[:n]).view(np.int64)
    if not np.array_equal(got, header):
        raise ValueError(f"reserve: it comes from a different call ({_header_text(got)}); "
                         f"this one is {_header_text(header)}")
    return reserve[n:]


def _with_pack(inputs, packed):
    """Inputs for the kernel: given a PackedWeights (whose raw weights
    `inputs` holds), its pack in place of the weights and biases."""
    if packed is None:
        return inputs
    return inputs._replace(w_ih=None, w_hh=None, b_ih=None, b_hh=None, packed=packed._buffer)


def _forward(problem, given, names, out, fields, packed=None):
    """The forward of `problem` on the checked inputs `given` (named
    `names`): its Outputs, written into `out` (a tuple of the public
    result's `fields`) when given. A training call's reserve, of a cell
    that keeps one, is the API's: the header, then the kernel's. `packed`:
    the PackedWeights whose raw weights `given` holds, which the kernel
    reads instead."""
    dtype, n = problem.dtype, _header_len(problem.reserve_dtype)
    inputs = _with_pack(_contiguous(given, names), packed)
    shapes = problem.output_shapes()
    if shapes.reserve is not None:
        shapes = Outputs(shapes.y, shapes.h_n, shapes.c_n, (n + problem.reserve_size(),))
    outputs = _engine.empty(shapes, dtype, problem.reserve_dtype) if out is None else _given(
        "out", out, fields, shapes, dtype, names, given, problem.reserve_dtype)
    kernel_outputs = outputs
    if outputs.reserve is not None:
        outputs.reserve[:n].view(np.int64)[:] = _reserve_header(problem, inputs)
        kernel_outputs = Outputs(outputs.y, outputs.h_n, outputs.c_n, outputs.reserve[n:])
    _engine.forward(problem, inputs, kernel_outputs)
    return outputs


def _backward(problem, given, names, d, grads_out, fields, packed=None):
    """The backward of `problem` on the checked inputs `given` (named
    `names`) and `d`, GradInputs as the caller gave them: its Grads, written
    into `grads_out` (a tuple of the public result's `fields`) when given.
    Without a reserve, a cell that keeps one recomputes it: one more
    forward. `packed`: as for _forward, for both."""
    dtype, B, H = problem.dtype, problem.B, problem.H
    seq = problem.seq_shape(H)
    y = float_array("y", d.y, seq, dtype)
    dy = optional("dy", d.dy, seq, dtype)
    dh_n = optional("dh_n", d.dh_n, (B, H), dtype)
    dc_n = optional("dc_n", d.dc_n, (B, H), dtype)
    inputs = _contiguous(given, names)
    reserve = None if d.reserve is None else _check_reserve(d.reserve, problem, inputs)
    shapes = problem.grad_shapes()
    grads = _engine.empty(shapes, dtype) if grads_out is None else _given(
        "grads_out", grads_out, fields, shapes, dtype, (*names, *GradInputs._fields),
        (*given, y, d.reserve, dy, dh_n, dc_n))   # the GradInputs as given
    inputs = _with_pack(inputs, packed)
    if reserve is None and problem.cell.reserve_rows:   # recompute it
        outputs = _engine.empty(problem.output_shapes(), dtype, problem.reserve_dtype)
        _engine.forward(problem, inputs, outputs)
        reserve = outputs.reserve
    _engine.backward(problem, inputs, _contiguous(GradInputs(y, reserve, dy, dh_n, dc_n)), grads)
    return grads


def rnn_forward(x, h0, w_ih, w_hh=_REQUIRED, bias=None, *, nonlinearity="tanh",
                lengths=None, reverse=False, batch_first=False, out=None, resets=None):
    """Run one RNN layer over a batch of sequences: h_t = act(W_ih x_t + W_hh h_{t-1} + b).

    x: (T, B, D), or (B, T, D) with batch_first. h0: (B, H) or None (zeros).
    w_ih: (H, D). w_hh: (H, H). bias: (H,) or None (zero).
    lengths: integers (B,), 0 <= lengths[b] <= T, or None (all T): steps at or
    past a sequence's length give zeros in y and leave its state unchanged.
    reverse: run each sequence from its last valid step back to step 0.
    resets: bools or integers (T, B), or (B, T) with batch_first, nonzero
    where an episode starts, or None: resets[t, b] cuts sequence b between
    t-1 and t into pieces that each run from h0, as separate sequences
    would. In reverse the piece ending at t-1 runs backwards from h0. A flag
    at t = 0 or at t >= lengths[b] changes nothing.

    Returns (y, h_n): y has x's layout with H last; h_n (B, H) is each
    sequence's state after its last valid step.

    out: arrays (y, h_n) to write the results into and return, such as a
    previous call's result: each exactly of its shape and x's dtype,
    C-contiguous, aligned, writeable and sharing no memory with an input or
    with the other.

    w_ih may be a PackedWeights of an RNN (pack_weights), which holds the
    weights and the bias: w_hh and bias are then left out. So in every
    forward and backward function.
    """
    act = activation(nonlinearity)
    packed = None
    if type(w_ih) is PackedWeights:
        packed = w_ih
        w_ih, w_hh, bias, _ = packed._for_call(RNN, x, {"w_hh": w_hh, "bias": bias})
    elif w_hh is _REQUIRED:
        _missing("rnn_forward", ("w_hh",), (w_hh,))
    problem, given = _common(RNN, _RNN_INPUT_NAMES, x, h0, None, w_ih, w_hh, bias, None, lengths,
                             reverse, batch_first, act, resets=resets)
    o = _forward(problem, given, _RNN_INPUT_NAMES, out, _RNN_OUTPUT_FIELDS, packed)
    return o.y, o.h_n


def rnn_backward(x, h0, w_ih, w_hh=_REQUIRED, y=_REQUIRED, dy=_REQUIRED, dh_n=None, *,
                 nonlinearity="tanh", lengths=None, reverse=False, batch_first=False,
                 grads_out=None, resets=None):
    """Backpropagation through time for the rnn_forward call with the same arguments.

    y: the y that rnn_forward returned. dy: y-shaped gradient of the loss with
    respect to y, or None (zero). dh_n: (B, H) gradient with respect to h_n, or
    None (zero). lengths and resets must be the forward's: dh0 sums what
    reaches h0 at the start of every piece.

    Returns RNNGrads(dx, dh0, dw_ih, dw_hh, dbias); dbias is the gradient for
    the bias whether or not one was used. grads_out: arrays to write them
    into, as rnn_forward's out.

    w_ih may be a PackedWeights: w_hh left out, y and dy by name; the
    kernel reads the pack's panels.
    """
    act = activation(nonlinearity)
    packed = None
    if type(w_ih) is PackedWeights:
        packed = w_ih
        w_ih, w_hh, _, _ = packed._for_call(RNN, x, {"w_hh": w_hh})
    if w_hh is _REQUIRED or y is _REQUIRED or dy is _REQUIRED:
        _missing("rnn_backward", ("w_hh", "y", "dy"), (w_hh, y, dy))
    problem, given = _common(RNN, _RNN_INPUT_NAMES, x, h0, None, w_ih, w_hh, None, None, lengths,
                             reverse, batch_first, act, training=True, resets=resets)
    # db_hh, the kernel's copy of db_ih, is dropped: the RNN here has one bias
    g = _backward(problem, given, _RNN_INPUT_NAMES, GradInputs(y, None, dy, dh_n),
                  grads_out, RNNGrads._fields, packed)
    return RNNGrads(g.dx, g.dh0, g.dw_ih, g.dw_hh, g.db_ih)


def _gated_weights(name, cell, x, w_ih, w_hh, b_ih, b_hh, **needed):
    """(pack or None, w_ih, w_hh, b_ih, b_hh) of a gated cell's call `name`:
    a PackedWeights given as w_ih stands for the four weights. An argument
    left out (the weights, and `needed`, a backward's y, reserve and dy) is
    the TypeError Python gives for a missing one."""
    packed = None
    if type(w_ih) is PackedWeights:
        packed = w_ih
        w_ih, w_hh, b_ih, b_hh = packed._for_call(cell, x,
                                                  {"w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh})
    needed = {"w_hh": w_hh, "b_ih": b_ih, "b_hh": b_hh, **needed}
    _missing(name, tuple(needed), tuple(needed.values()))
    return packed, w_ih, w_hh, b_ih, b_hh


def lstm_forward(x, h0, c0, w_ih, w_hh=_REQUIRED, b_ih=None, b_hh=None, *, lengths=None,
                 reverse=False, batch_first=False, training=False, out=None, resets=None):
    """Run one LSTM layer over a batch of sequences, with PyTorch's maths and layout.

    Gates i, f, g, o are the row blocks of w_ih (4H, D), w_hh (4H, H), b_ih
    and b_hh (4H,) (None: zero). h0, c0: (B, H) or None (zeros). lengths,
    reverse, batch_first, resets: as for rnn_forward (each piece starts
    from h0 and c0). training: also return the reserve, what lstm_backward
    needs from this call.

    Returns LSTMOutput(y, h_n, c_n, reserve); reserve is None unless training.
    out: arrays to write them into, as rnn_forward's (a previous call's
    result with the same shapes and training); its reserve None unless
    training.

    w_ih may be a PackedWeights (pack_weights): w_hh, b_ih, b_hh left out.
    """
    packed, w_ih, w_hh, b_ih, b_hh = _gated_weights("lstm_forward", LSTM, x, w_ih, w_hh, b_ih,
                                                    b_hh)
    problem, given = _common(LSTM, _INPUT_NAMES, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths,
                             reverse, batch_first, training=training, resets=resets)
    o = _forward(problem, given, _INPUT_NAMES, out, LSTMOutput._fields, packed)
    return LSTMOutput(o.y, o.h_n, o.c_n, o.reserve)


def lstm_backward(x, h0, c0, w_ih, w_hh=_REQUIRED, b_ih=_REQUIRED, b_hh=_REQUIRED, y=_REQUIRED,
                  reserve=_REQUIRED, dy=_REQUIRED, dh_n=None, dc_n=None, *, lengths=None,
                  reverse=False, batch_first=False, grads_out=None, resets=None):
    """Backpropagation through time for the lstm_forward call with the same arguments.

    y: its y. reserve: its reserve (training=True), or None to recompute it
    (one more forward). dy, dh_n, dc_n: the loss's gradients with respect to
    y, h_n and c_n, None meaning zero. lengths and resets must be the
    forward's (a reserve from other ones is refused): dh0 and dc0 sum what
    reaches h0 and c0 at the start of every piece.

    Returns LSTMGrads(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh).
    grads_out: arrays to write them into, as rnn_forward's out.

    w_ih may be a PackedWeights: w_hh, b_ih, b_hh left out, y, reserve and
    dy by name; the kernel reads the pack's panels.
    """
    packed, w_ih, w_hh, b_ih, b_hh = _gated_weights(
        "lstm_backward", LSTM, x, w_ih, w_hh, b_ih, b_hh, y=y, reserve=reserve, dy=dy)
    problem, given = _common(LSTM, _INPUT_NAMES, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths,
                             reverse, batch_first, training=True, resets=resets)
    g = _backward(problem, given, _INPUT_NAMES, GradInputs(y, reserve, dy, dh_n, dc_n),
                  grads_out, LSTMGrads._fields, packed)
    return LSTMGrads(g.dx, g.dh0, g.dc0, g.dw_ih, g.dw_hh, g.db_ih, g.db_hh)


def _gru(linear_before_reset):
    """The cell of gru_forward's and gru_backward's linear_before_reset."""
    return GRU if flag("linear_before_reset", linear_before_reset) else GRU_RESET_FIRST


def gru_forward(x, h0, w_ih, w_hh=_REQUIRED, b_ih=None, b_hh=None, *, lengths=None,
                reverse=False, batch_first=False, training=False, out=None,
                linear_before_reset=True, resets=None):
    """Run one GRU layer over a batch of sequences, with PyTorch's maths and layout.

    Gates r, z, n are the row blocks of w_ih (3H, D), w_hh (3H, H), b_ih and
    b_hh (3H,) (None: zero); n = tanh(W_in x + b_in + r (W_hn h + b_hn)).
    Otherwise as lstm_forward (lengths, resets, ...), without a cell state.

    linear_before_reset=False: the reset gate applied to h before the
    product, n = tanh(W_in x + b_in + W_hn (r h) + b_hn), ONNX's default
    (Keras' reset_after=False). Its backward must be given the same.

    Returns GRUOutput(y, h_n, reserve); reserve is None unless training.

    w_ih may be a PackedWeights of this form of the GRU: w_hh, b_ih, b_hh
    left out.
    """
    cell = _gru(linear_before_reset)
    packed, w_ih, w_hh, b_ih, b_hh = _gated_weights("gru_forward", cell, x, w_ih, w_hh, b_ih,
                                                    b_hh)
    problem, given = _common(cell, _INPUT_NAMES, x, h0, None, w_ih, w_hh,
                             b_ih, b_hh, lengths, reverse, batch_first, training=training,
                             resets=resets)
    o = _forward(problem, given, _INPUT_NAMES, out, GRUOutput._fields, packed)
    return GRUOutput(o.y, o.h_n, o.reserve)


def gru_backward(x, h0, w_ih, w_hh=_REQUIRED, b_ih=_REQUIRED, b_hh=_REQUIRED, y=_REQUIRED,
                 reserve=_REQUIRED, dy=_REQUIRED, dh_n=None, *, lengths=None, reverse=False,
                 batch_first=False, grads_out=None, linear_before_reset=True,
                 resets=None):
    """Backpropagation through time for the gru_forward call with the same arguments
    (lengths and resets too, as for lstm_backward).

    Returns GRUGrads(dx, dh0, dw_ih, dw_hh, db_ih, db_hh); db_ih and db_hh
    differ in the n gate (with linear_before_reset=False they are equal: b_hn
    is not scaled by r). grads_out: arrays to write them into, as
    rnn_forward's out.

    w_ih may be a PackedWeights, as for lstm_backward.
    """
    cell = _gru(linear_before_reset)
    packed, w_ih, w_hh, b_ih, b_hh = _gated_weights(
        "gru_backward", cell, x, w_ih, w_hh, b_ih, b_hh, y=y, reserve=reserve, dy=dy)
    problem, given = _common(cell, _INPUT_NAMES, x, h0, None, w_ih, w_hh,
                             b_ih, b_hh, lengths, reverse, batch_first, training=True,
                             resets=resets)
    g = _backward(problem, given, _INPUT_NAMES, GradInputs(y, reserve, dy, dh_n),
                  grads_out, GRUGrads._fields, packed)
    return GRUGrads(g.dx, g.dh0, g.dw_ih, g.dw_hh, g.db_ih, g.db_hh)


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

    dtype: float32, float64, or bfloat16 ("bfloat16" or ml_dtypes.bfloat16): the
    bf16 dot product's rate (vdpbf16ps, twice the float32 FMA's multiply-adds
    per instruction) on a CPU with AVX512_BF16 running the avx512 kernels, else
    the float32 FMA's, which bfloat16 calls run on there.
    seconds: how long to measure, in (0, 60]; the best of runs of ~0.1 ms.
    Benchmarks divide by this (times the thread count) to report efficiency.
    """
    return _kernel.peak_gflops(float_dtype(dtype), _seconds(seconds))


get_isa = _kernel.get_isa
available_isas = _kernel.available_isas
