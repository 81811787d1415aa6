# cython: language_level=3
"""Thin wrapper over csrc/include/fusedrnn.h.

The Python layer (_api.py) has already checked and converted every argument:
arrays arrive C-contiguous and aligned to their dtype, of one float dtype, with
matching shapes, or None. Here they become pointers, the kernel runs once with
the GIL released, and a status code becomes an exception.
"""
cimport numpy as cnp
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

cnp.import_array()

ISAS = ("scalar", "avx2", "avx512")  # every name the kernel knows, slowest first


cdef inline const void *data(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline fusedrnn_dtype dtype_of(object a):
    return FUSEDRNN_F64 if (<cnp.ndarray>a).dtype.itemsize == 8 else FUSEDRNN_F32


cdef fusedrnn_problem problem(object x, object w_hh, int64_t T, int64_t B, int act,
                              bint reverse, bint batch_first, int threads):
    cdef fusedrnn_problem p
    p.dtype = dtype_of(x)
    p.T = T
    p.B = B
    p.D = (<cnp.ndarray>x).shape[2]
    p.H = (<cnp.ndarray>w_hh).shape[0]
    p.act = <fusedrnn_act>act
    p.reverse = reverse
    p.batch_first = batch_first
    p.threads = threads
    return p


cdef int check(fusedrnn_status status) except -1:
    if status == FUSEDRNN_OK:
        return 0
    if status == FUSEDRNN_EOVERFLOW:
        raise MemoryError("fusedrnn: the problem's buffers do not fit in 64-bit sizes")
    if status == FUSEDRNN_EINVAL:
        raise ValueError("fusedrnn: the kernel rejected a size, option or length")
    raise RuntimeError(f"fusedrnn: kernel status {<int>status}")


cdef void *workspace(size_t n) except NULL:
    if n == 0:
        raise MemoryError("fusedrnn: the workspace size overflows")
    cdef void *ws = malloc(n)
    if ws == NULL:
        raise MemoryError(f"fusedrnn: cannot allocate a {n}-byte workspace")
    return ws


def forward(x, h0, w_ih, w_hh, bias, lengths, y, h_n, int64_t T, int64_t B, int act,
            bint reverse, bint batch_first, int threads):
    cdef fusedrnn_problem p = problem(x, w_hh, T, B, act, reverse, batch_first, threads)
    cdef size_t n = fusedrnn_forward_workspace(&p)
    cdef void *ws = workspace(n)
    cdef const void *px = data(x)
    cdef const void *ph0 = data(h0)
    cdef const void *pwi = data(w_ih)
    cdef const void *pwh = data(w_hh)
    cdef const void *pb = data(bias)
    cdef const int64_t *plen = <const int64_t *>data(lengths)
    cdef void *py = <void *>data(y)
    cdef void *phn = <void *>data(h_n)
    cdef fusedrnn_status status
    with nogil:
        status = fusedrnn_forward(&p, px, ph0, pwi, pwh, pb, plen, py, phn, ws, n)
    free(ws)
    check(status)


def backward(x, h0, w_ih, w_hh, lengths, y, dy, dh_n, dx, dh0, dw_ih, dw_hh, dbias,
             int64_t T, int64_t B, int act, bint reverse, bint batch_first, int threads):
    cdef fusedrnn_problem p = problem(x, w_hh, T, B, act, reverse, batch_first, threads)
    cdef size_t n = fusedrnn_backward_workspace(&p)
    cdef void *ws = workspace(n)
    cdef const void *px = data(x)
    cdef const void *ph0 = data(h0)
    cdef const void *pwi = data(w_ih)
    cdef const void *pwh = data(w_hh)
    cdef const int64_t *plen = <const int64_t *>data(lengths)
    cdef const void *py = data(y)
    cdef const void *pdy = data(dy)
    cdef const void *pdhn = data(dh_n)
    cdef void *pdx = <void *>data(dx)
    cdef void *pdh0 = <void *>data(dh0)
    cdef void *pdwi = <void *>data(dw_ih)
    cdef void *pdwh = <void *>data(dw_hh)
    cdef void *pdb = <void *>data(dbias)
    cdef fusedrnn_status status
    with nogil:
        status = fusedrnn_backward(&p, px, ph0, pwi, pwh, plen, py, pdy, pdhn,
                                   pdx, pdh0, pdwi, pdwh, pdb, ws, n)
    free(ws)
    check(status)


def set_isa(str name):
    if fusedrnn_set_isa(name.encode()) != FUSEDRNN_OK:
        raise ValueError(f"ISA {name!r} is not available here: choose one of {available_isas()}")


def get_isa():
    return fusedrnn_get_isa().decode()


def available_isas():
    return [name for name in ISAS if fusedrnn_isa_supported(name.encode())]


def activation(int act, bint derivative, z, y, out):
    """out = act(z), or z * act'(y): the active ISA's vector epilogue on 1-D arrays."""
    check(fusedrnn_activation(dtype_of(z), <fusedrnn_act>act, derivative, z.shape[0],
                              data(z), data(y), <void *>data(out)))


PEAK_MAX_SECONDS = FUSEDRNN_PEAK_MAX_SECONDS  # peak_gflops's longest measurement


def peak_gflops(bint double, double seconds):
    cdef fusedrnn_dtype dtype = FUSEDRNN_F64 if double else FUSEDRNN_F32
    with nogil:
        rate = fusedrnn_peak_gflops(dtype, seconds)
    return rate
