# cython: language_level=3
"""Thin wrapper over csrc/include/fusedrnn.h.

The Python layer (_api.py) has already checked and converted every argument:
arrays arrive C-contiguous and aligned to their dtype, of one float dtype, with
matching shapes, or None. A call comes as a Problem and named groups of
buffers (_engine.py), read here into the C structs: the arrays become
pointers, the kernel runs once with the GIL released, and a status code
becomes an exception.

Compiled against CPython's Limited API (CMakeLists.txt, docs/design.md §9).
NumPy's C API stays: NumPy's headers support the Limited API, and its array
reads (PyArray_DATA, ...) are inline loads from NumPy's own struct, cheaper
than the buffer protocol's acquire and release of every array.
"""
cimport numpy as cnp
import threading

import numpy as np
from cpython.tuple cimport PyTuple_GetItem
from libc.stdint cimport int64_t, uint8_t, uintptr_t

cnp.import_array()

ISAS = ("scalar", "avx2", "avx512")  # every name the kernel knows, slowest first


cdef inline const void *data(object a):
    """An array's memory, or an address given as an int: fusedrnn.torch hands
    over the memory of tensors it has checked (contiguous, aligned, of the
    problem's dtype and shape), which costs less than a NumPy view of each."""
    if a is None:
        return NULL
    if isinstance(a, int):
        return <const void *><uintptr_t>a
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline void *out_data(object a):
    return <void *>data(a)


cdef inline fusedrnn_dtype dtype_enum(object dtype):
    """float64, bfloat16 or float32, the only floats of 8, 2 and 4 bytes the
    layers above pass: told apart by size, which costs less than comparing
    NumPy dtypes (a visible share of a call at batch 1)."""
    cdef Py_ssize_t size = dtype.itemsize
    return FUSEDRNN_F64 if size == 8 else FUSEDRNN_BF16 if size == 2 else FUSEDRNN_F32


# The enum of fusedrnn.h, for the Python layer: one source for the values
# (the cells' come with their description, cell_table).
ACTIVATIONS = {"tanh": FUSEDRNN_TANH, "relu": FUSEDRNN_RELU, "sigmoid": FUSEDRNN_SIGMOID}


def cell_table():
    """Every cell the kernel knows, by number: a dict of its description
    (fusedrnn_cell_info's fields) each."""
    cdef const fusedrnn_cell_info *c
    table = []
    for cell in range(FUSEDRNN_CELL_COUNT):
        c = fusedrnn_cell_describe(<fusedrnn_cell>cell)
        table.append({"id": cell, "name": c.name.decode(), "gates": c.gates,
                      "has_c": bool(c.has_c), "has_act": bool(c.has_act),
                      "reserve_rows": c.reserve_rows,
                      "bias_grads_differ": bool(c.bias_grads_differ)})
    return table


cdef fusedrnn_problem problem_of(object problem):
    """The fusedrnn_problem of a Problem."""
    cdef fusedrnn_problem p
    p.cell = <fusedrnn_cell>(<int>problem.cell.id)
    p.dtype = FUSEDRNN_F32_BF16 if problem.bf16_products else dtype_enum(problem.dtype)
    p.T, p.B, p.D, p.H = problem.T, problem.B, problem.D, problem.H
    p.act = <fusedrnn_act>(<int>problem.act)
    p.reverse, p.batch_first = problem.reverse, problem.batch_first
    p.threads, p.training = problem.threads, problem.training
    return p


# The groups (_engine's Inputs, Outputs, GradInputs, Grads) are named tuples
# whose fields are the C structs' in their order (tests/test_api.py holds
# them to it): read by position here, which costs a fraction of reading each
# field by name (a visible share of a call at batch 1). Through
# PyTuple_GetItem rather than Cython's tuple unpacking, which under the
# Limited API calls PySequence_GetItem: on a named tuple, a lookup of
# __getitem__ by name for every field (the NumPy API's calls at batch 1 took
# ~10% longer that way).

cdef inline const void *field(object group, Py_ssize_t k):
    """The memory of a group's k-th buffer (data)."""
    return data(<object>PyTuple_GetItem(group, k))


cdef inline void *out_field(object group, Py_ssize_t k):
    return <void *>field(group, k)


cdef fusedrnn_inputs inputs_of(object a):
    """The fusedrnn_inputs of an Inputs."""
    cdef fusedrnn_inputs i
    i.x, i.h0, i.c0 = field(a, 0), field(a, 1), field(a, 2)
    i.w_ih, i.w_hh, i.b_ih, i.b_hh = field(a, 3), field(a, 4), field(a, 5), field(a, 6)
    i.lengths = <const int64_t *>field(a, 7)
    i.resets = <const uint8_t *>field(a, 8)
    i.packed = field(a, 9)
    return i


cdef int check(fusedrnn_status status) except -1:
    if status == FUSEDRNN_OK:
        return 0
    if status == FUSEDRNN_EOVERFLOW:
        raise MemoryError("fusedrnn: the problem's buffers do not fit in 64-bit sizes")
    if status == FUSEDRNN_EINVAL:
        raise ValueError("fusedrnn: the kernel rejected a size, option or length")
    if status == FUSEDRNN_EPACKED:
        raise ValueError("fusedrnn: the packed weights were made for another ISA, cell, dtype "
                         "or size than this call's: pack them again for it")
    raise RuntimeError(f"fusedrnn: kernel status {<int>status}")


# Each calling thread keeps its workspaces for the next call, one for the
# forward and one for the backward: a fresh one of tens of MB (an LSTM's
# gates at L) comes from mmap, and the kernel's first touch of every page
# then costs more than a tenth of the call. Two, since a training loop
# alternates a forward and a backward whose workspaces differ more than
# fourfold (one kept buffer was dropped and faulted in anew on every call).
# Each is kept while calls need between a quarter and all of it, and freed
# with the thread.
_workspaces = threading.local()


cdef object workspace(size_t n, str kind):
    """A buffer of at least n bytes: the thread's kept one for `kind`
    ("forward" or "backward"), or a new one."""
    if n == 0:
        raise MemoryError("fusedrnn: the workspace size overflows")
    kept = getattr(_workspaces, kind, None)
    if kept is not None and n <= kept.nbytes <= 4 * <object>n:
        return kept
    setattr(_workspaces, kind, None)   # let the old one go before asking for the new
    try:
        buffer = np.empty(n, np.uint8)
    except MemoryError:
        raise MemoryError(f"fusedrnn: cannot allocate a {n}-byte workspace") from None
    setattr(_workspaces, kind, buffer)
    return buffer


def reserve_size(problem):
    """The kernel's own count of the reserve, in elements of the problem's
    reserve_dtype (0: the cell keeps none), which Problem.reserve_size computes
    without the kernel: the tests hold the two equal."""
    cdef fusedrnn_problem p = problem_of(problem)
    cdef size_t n = fusedrnn_reserve_size(&p)
    # 0 is also the size of an empty reserve (no rows or no units)
    if n == 0 and fusedrnn_cell_describe(p.cell).reserve_rows and (<object>p.T) * p.B * p.H != 0:
        raise MemoryError("fusedrnn: the reserve's size overflows")
    itemsize = np.dtype(problem.reserve_dtype).itemsize
    return (<object>n + itemsize - 1) // itemsize


def packed_size(problem):
    """The bytes of a pack of the weights for the problem's cell, dtype, D
    and H on the active ISA (fusedrnn_packed_size)."""
    cdef fusedrnn_problem p = problem_of(problem)
    cdef size_t n = fusedrnn_packed_size(&p)
    if n == 0:
        raise MemoryError("fusedrnn: the size of the packed weights overflows")
    return n


def pack(problem, w_ih, w_hh, b_ih, b_hh, out):
    """Write the pack of the weights (fusedrnn_pack) on the active ISA
    into `out`: a uint8 array, or the address (an int) of packed_size(problem)
    bytes. The weights and biases are arrays or addresses, the biases None
    for zeros."""
    cdef fusedrnn_problem p = problem_of(problem)
    cdef size_t n = out.nbytes if isinstance(out, np.ndarray) else fusedrnn_packed_size(&p)
    cdef const void *wi = data(w_ih)
    cdef const void *wh = data(w_hh)
    cdef const void *bi = data(b_ih)
    cdef const void *bh = data(b_hh)
    cdef void *dst = out_data(out)
    cdef fusedrnn_status status
    with nogil:
        status = fusedrnn_pack(&p, wi, wh, bi, bh, dst, n)
    if status == FUSEDRNN_EWORKSPACE:
        raise ValueError(f"fusedrnn: the pack needs {fusedrnn_packed_size(&p)} bytes, got {n}")
    check(status)


def forward(problem, inputs, outputs):
    """One forward call: a Problem, Inputs, Outputs."""
    cdef fusedrnn_problem p = problem_of(problem)
    cdef fusedrnn_inputs i = inputs_of(inputs)
    cdef fusedrnn_outputs o
    o.y, o.h_n = out_field(outputs, 0), out_field(outputs, 1)
    o.c_n, o.reserve = out_field(outputs, 2), out_field(outputs, 3)
    cdef size_t n = fusedrnn_forward_workspace(&p)
    buffer = workspace(n, "forward")
    cdef void *ws = out_data(buffer)
    cdef fusedrnn_status status
    with nogil:
        status = fusedrnn_forward(&p, &i, &o, ws, n)
    check(status)


def backward(problem, inputs, grad_inputs, grads):
    """One backward call: a Problem, Inputs, GradInputs, Grads."""
    cdef fusedrnn_problem p = problem_of(problem)
    cdef fusedrnn_inputs i = inputs_of(inputs)
    cdef fusedrnn_grad_inputs gi
    gi.y, gi.reserve = field(grad_inputs, 0), field(grad_inputs, 1)
    gi.dy, gi.dh_n, gi.dc_n = field(grad_inputs, 2), field(grad_inputs, 3), field(grad_inputs, 4)
    cdef fusedrnn_grads g
    g.dx, g.dh0, g.dc0 = out_field(grads, 0), out_field(grads, 1), out_field(grads, 2)
    g.dw_ih, g.dw_hh = out_field(grads, 3), out_field(grads, 4)
    g.db_ih, g.db_hh = out_field(grads, 5), out_field(grads, 6)
    cdef size_t n = fusedrnn_backward_workspace(&p)
    buffer = workspace(n, "backward")
    cdef void *ws = out_data(buffer)
    cdef fusedrnn_status status
    with nogil:
        status = fusedrnn_backward(&p, &i, &gi, &g, ws, n)
    check(status)


cdef bint bounds(object a, uintptr_t *lo, uintptr_t *hi) except -1:
    """[lo, hi): the bytes an array's elements lie within, NumPy's memory
    bounds (np.may_share_memory's test), exact for a contiguous array. False
    for None and for an empty array, which has no memory to share."""
    if a is None:
        return False
    cdef cnp.ndarray arr = <cnp.ndarray?>a
    if cnp.PyArray_SIZE(arr) == 0:
        return False
    cdef uintptr_t low = <uintptr_t>cnp.PyArray_DATA(arr)
    cdef uintptr_t high = low + <uintptr_t>cnp.PyArray_ITEMSIZE(arr)
    cdef cnp.npy_intp step
    cdef int k
    for k in range(cnp.PyArray_NDIM(arr)):
        step = (cnp.PyArray_DIMS(arr)[k] - 1) * cnp.PyArray_STRIDES(arr)[k]
        if step < 0:
            low -= <uintptr_t>(-step)
        else:
            high += <uintptr_t>step
    lo[0], hi[0] = low, high
    return True


def first_overlap(tuple arrays, Py_ssize_t n):
    """(i, j), i < j, of the first pair of `arrays` (NumPy arrays or None)
    whose memory bounds overlap with i < n, or None: the first n are written,
    the others only read and free to overlap one another. Here rather than as
    np.may_share_memory over every pair, which costs ~0.2 us a pair: an LSTM
    backward has over a hundred pairs, against a call of ~200 us at batch 1."""
    cdef Py_ssize_t i, j, m = len(arrays)
    cdef uintptr_t lo_i, hi_i, lo_j, hi_j
    for i in range(min(n, m)):
        if not bounds(arrays[i], &lo_i, &hi_i):
            continue
        for j in range(i + 1, m):
            if bounds(arrays[j], &lo_j, &hi_j) and lo_i < hi_j and lo_j < hi_i:
                return i, j
    return None


def set_isa(str name):
    if fusedrnn_set_isa(name.encode()) != FUSEDRNN_OK:
        raise ValueError(f"ISA {name!r} is not available here: choose one of {available_isas()}")


def get_isa():
    return fusedrnn_get_isa().decode()


def available_isas():
    return [name for name in ISAS if fusedrnn_isa_supported(name.encode())]


def activation(int act, bint derivative, z, y, out):
    """out = act(z), or z * act'(y): the active ISA's vector epilogue on 1-D arrays."""
    check(fusedrnn_activation(dtype_enum(z.dtype), <fusedrnn_act>act, derivative, z.shape[0],
                              data(z), data(y), out_data(out)))


def share_openmp(str library):
    """Run multi-thread calls on the threads of this loaded OpenMP runtime
    (a path or soname); False if it is not loaded or is not GNU's ABI."""
    return bool(fusedrnn_share_openmp(library.encode()))


def hold_worker(int worker, int microseconds):
    """Tests: the pool's worker `worker` waits this long before each call it is woken for."""
    fusedrnn_hold_worker(worker, microseconds)


PEAK_MAX_SECONDS = FUSEDRNN_PEAK_MAX_SECONDS  # peak_gflops's longest measurement


def bf16_dot():
    """Whether the active ISA has a bf16 dot product this CPU runs (what the
    bfloat16 peak measures, and what bf16 calls' products then run on)."""
    return bool(fusedrnn_bf16_dot_supported())


def peak_gflops(dtype, double seconds):
    cdef fusedrnn_dtype d = dtype_enum(dtype)
    with nogil:
        rate = fusedrnn_peak_gflops(d, seconds)
    return rate
