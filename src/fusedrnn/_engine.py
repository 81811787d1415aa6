"""The kernel calls, once every argument is known good: C-contiguous arrays
aligned to their dtype (`kernel_buffer`), of one float dtype, with matching
shapes (or None), lengths int64 within [0, T] (or None). The NumPy API gets
there by checking every argument; fusedrnn.torch by what torch has checked.
The caller allocates the results (NumPy arrays, or the memory of torch
tensors) with the shapes given here, and the kernel writes into them.

Every tuple is in the order of the C structs (csrc/include/fusedrnn.h):
  inputs      (x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths)
  outputs     (y, h_n, c_n, reserve)
  grad_inputs (y, reserve, dy, dh_n, dc_n)
  grads       (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh)
with None for what a cell or call has not (c for a cell without one, the
reserve for a cell that keeps none and for inference). Cells are
_cells.Cell: what each has comes from its description.
"""

import os

import numpy as np

from . import _kernel
from ._checks import MAX_THREADS, positive_int


def kernel_buffer(a, dtype=None):
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


def seq_shape(T, B, n, batch_first):
    return (B, T, n) if batch_first else (T, B, n)


def reserve_shape(cell, T, B, H):
    """The kernel's reserve of a cell that keeps one: exactly
    T*B*reserve_rows*H elements (fusedrnn.h), the gates and one state per
    row. Plain arithmetic, so that it holds for torch's symbolic sizes too."""
    return (T, B, cell.reserve_rows * H)


def output_shapes(cell, T, B, H, batch_first, training):
    """Shapes of (y, h_n, c_n, reserve), None for what the call does not return."""
    return (seq_shape(T, B, H, batch_first), (B, H), (B, H) if cell.has_c else None,
            reserve_shape(cell, T, B, H) if training and cell.reserve_rows else None)


def grad_shapes(cell, T, B, D, H, batch_first):
    """Shapes of (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh). The kernel writes
    db_hh (db_ih's copy but where they differ) only when asked for it."""
    GH = cell.gates * H
    return (seq_shape(T, B, D, batch_first), (B, H), (B, H) if cell.has_c else None,
            (GH, D), (GH, H), (GH,), (GH,))


def empty(shapes, dtype):
    """NumPy arrays of `shapes` (None stays None)."""
    return tuple(None if s is None else np.empty(s, dtype) for s in shapes)


def _problem(cell, act, sizes, dtype, reverse, batch_first, training=False, threads=None):
    return (cell.id, act, *sizes, reverse, batch_first, threads or _num_threads, training, dtype)


def forward(cell, act, sizes, dtype, inputs, outputs, reverse, batch_first, training=False,
            threads=None):
    """One forward call into `outputs`: sizes (T, B, D, H), dtype float32 or
    float64; act is the RNN's nonlinearity (0 for the gated cells);
    training: a gated cell writes the reserve. The buffers are arrays, or
    addresses (ints) of memory laid out as the arrays would be. threads:
    the most the call uses (None: fusedrnn's count)."""
    _kernel.forward(_problem(cell, act, sizes, dtype, reverse, batch_first, training, threads),
                    inputs, outputs)


def backward(cell, act, sizes, dtype, inputs, grad_inputs, grads, reverse, batch_first,
             threads=None):
    """One backward call into `grads`."""
    _kernel.backward(_problem(cell, act, sizes, dtype, reverse, batch_first, threads=threads),
                     inputs, grad_inputs, grads)


def reserve_elements(cell, T, B, D, H, dtype):
    """The kernel's own count of a cell's reserve, in elements of dtype."""
    return _kernel.reserve_size(_problem(cell, 0, (T, B, D, H), dtype, False, False, True))


def _threads_from_env():
    value = os.environ.get("FUSEDRNN_NUM_THREADS")
    if value is None:
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        return positive_int("FUSEDRNN_NUM_THREADS", int(value), MAX_THREADS)
    except ValueError:
        raise ValueError(f"FUSEDRNN_NUM_THREADS: expected a positive integer, got {value!r}") from None


_num_threads = _threads_from_env()
# Whether the count was chosen (FUSEDRNN_NUM_THREADS, set_num_threads) rather
# than defaulted: fusedrnn.torch follows torch's count unless it was.
_chosen = "FUSEDRNN_NUM_THREADS" in os.environ


def set_num_threads(n):
    """Set the most threads later kernel calls use (n >= 1). Small problems use
    fewer, where splitting would cost more than it saves; results are bitwise
    the same for any count. fusedrnn.torch follows torch.get_num_threads()
    until this (or FUSEDRNN_NUM_THREADS) sets a count."""
    global _num_threads, _chosen
    _num_threads = positive_int("n", n, MAX_THREADS)
    _chosen = True


def get_num_threads():
    """The number of threads kernel calls use (default: FUSEDRNN_NUM_THREADS or the CPU count)."""
    return _num_threads


def num_threads_chosen():
    """True once FUSEDRNN_NUM_THREADS or set_num_threads has set the count."""
    return _chosen


def restore_num_threads(n, chosen):
    """Put back a count and whether it was chosen, as read before a change."""
    global _num_threads, _chosen
    _num_threads, _chosen = n, chosen
