"""The kernel calls, once every argument is known good: C-contiguous arrays
aligned to their dtype (`kernel_buffer`), of one float dtype, with matching
shapes (or None), lengths int64 within [0, T] (or None), resets uint8 of
x's (T, B) or (B, T) (or None). The NumPy API gets
there by checking every argument; fusedrnn.torch by what torch has checked.
The caller allocates the results (NumPy arrays, or the memory of torch
tensors) with the shapes its Problem gives, and the kernel writes into them.

A call is a Problem, mirroring fusedrnn_problem, and named groups of
buffers mirroring the C structs (csrc/include/fusedrnn.h), None for what a
cell or call has not (c for a cell without one, the reserve for a cell that
keeps none and for inference). _kernel reads each by its names.
"""

import os
from typing import NamedTuple

import numpy as np

from . import _kernel
from ._checks import MAX_THREADS, positive_int

_FLOAT32 = np.dtype(np.float32)


class Inputs(NamedTuple):
    """fusedrnn_inputs: what a forward reads, and its backward."""

    x: object = None
    h0: object = None
    c0: object = None
    w_ih: object = None
    w_hh: object = None
    b_ih: object = None
    b_hh: object = None
    lengths: object = None
    resets: object = None
    packed: object = None   # a pack's bytes (PackedWeights), for a forward or backward


class Outputs(NamedTuple):
    """fusedrnn_outputs: what a forward writes."""

    y: object = None
    h_n: object = None
    c_n: object = None
    reserve: object = None


class GradInputs(NamedTuple):
    """fusedrnn_grad_inputs: what a backward reads besides the Inputs."""

    y: object = None
    reserve: object = None
    dy: object = None
    dh_n: object = None
    dc_n: object = None


class Grads(NamedTuple):
    """fusedrnn_grads: what a backward writes. The kernel writes db_hh
    (db_ih's copy but where a cell's differ) only when given one."""

    dx: object = None
    dh0: object = None
    dc0: object = None
    dw_ih: object = None
    dw_hh: object = None
    db_ih: object = None
    db_hh: object = None


class Problem:
    """fusedrnn_problem: one layer in one direction. cell: a _cells.Cell;
    dtype: NumPy's float32, float64 or bfloat16 dtype; the sizes T, B, D, H; act: the
    nonlinearity's value (_checks.ACTIVATIONS) for a cell that takes one;
    reverse, batch_first; threads: the most the call uses (None:
    fusedrnn's count); training: a forward keeps the reserve for the
    backward (a backward's problem is that of its training forward);
    bf16_products: float32 buffers whose products read bf16 operands
    (FUSEDRNN_F32_BF16, fusedrnn.h), fusedrnn.torch's under autocast.

    And the one place for the shapes of the call's buffers: plain
    arithmetic, so that they hold for torch's symbolic sizes too (the fake
    implementations of fusedrnn.torch's operators take theirs from here)."""

    __slots__ = ("cell", "dtype", "T", "B", "D", "H", "act", "reverse", "batch_first",
                 "threads", "training", "bf16_products")

    def __init__(self, cell, dtype, T, B, D, H, act=0, reverse=False, batch_first=False,
                 threads=None, training=False, bf16_products=False):
        self.cell, self.dtype = cell, dtype
        self.T, self.B, self.D, self.H = T, B, D, H
        self.act, self.reverse, self.batch_first = act, reverse, batch_first
        self.threads = threads or _num_threads
        self.training = training
        self.bf16_products = bf16_products

    def seq_shape(self, n):
        """x's shape for n = D, y's for n = H: [T,B,n], or [B,T,n] with batch_first."""
        return (self.B, self.T, n) if self.batch_first else (self.T, self.B, n)

    def h_n_shape(self):
        """h_n's shape, [B,H]; None where the caller has it in y (a step)."""
        return (self.B, self.H)

    def reserve_rows(self):
        """The kernel's reserve per (t, b), in rows of H values of
        reserve_dtype (fusedrnn.h): a cell's reserve_rows, its gates and a state
        (0 for a cell that keeps none); a bfloat16 call keeps y's float32
        row too, which its backward reads in place of the rounded y."""
        rows = self.cell.reserve_rows
        return rows + 1 if rows and self.dtype.itemsize == 2 else rows

    def reserve_shape(self):
        """The kernel's reserve of a cell that keeps one: reserve_rows()
        rows of H values of reserve_dtype per (t, b)."""
        return (self.T, self.B, self.reserve_rows() * self.H)

    def reserve_size(self):
        """The reserve's size in elements of reserve_dtype: the product of its shape."""
        return self.T * self.B * self.reserve_rows() * self.H

    @property
    def reserve_dtype(self):
        """The reserve's elements: the dtype's, but float32 for bfloat16 (its
        recurrence runs in float32, and the reserve keeps those values)."""
        return _FLOAT32 if self.dtype.itemsize == 2 else self.dtype

    def output_shapes(self):
        """Outputs of shapes, None for what the call does not write."""
        B, H, cell = self.B, self.H, self.cell
        return Outputs(self.seq_shape(H), self.h_n_shape(), (B, H) if cell.has_c else None,
                       self.reserve_shape() if self.training and cell.reserve_rows else None)

    def grad_shapes(self):
        """Grads of shapes, None for what the call does not write."""
        B, D, H, cell = self.B, self.D, self.H, self.cell
        GH = cell.gates * H
        return Grads(self.seq_shape(D), (B, H), (B, H) if cell.has_c else None, (GH, D), (GH, H),
                     (GH,), (GH,))


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


def empty(shapes, dtype, reserve_dtype=None):
    """NumPy arrays of `shapes` (Outputs or Grads; None stays None), as the
    same group, in `dtype`; an Outputs' reserve in `reserve_dtype` if given."""
    return shapes._make([None if s is None else
                         np.empty(s, reserve_dtype if name == "reserve" and reserve_dtype else dtype)
                         for name, s in zip(shapes._fields, shapes)])


def forward(problem, inputs, outputs):
    """One forward call into `outputs`. The buffers are arrays, or addresses
    (ints) of memory laid out as the arrays would be."""
    _kernel.forward(problem, inputs, outputs)


def backward(problem, inputs, grad_inputs, grads):
    """One backward call into `grads`."""
    _kernel.backward(problem, inputs, grad_inputs, grads)


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
