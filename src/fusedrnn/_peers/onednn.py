"""oneDNN's RNN primitives through its C API, by ctypes: vanilla RNN (tanh),
LSTM and linear-before-reset GRU (lbr_gru, torch's GRU maths), the forward
for inference, and a training forward followed by the backward.

The library is PyPI's onednn-cpu-gomp 2023.2.0 (oneDNN 3.2, OpenMP threads;
its headers are in onednn-devel-cpu-gomp): ctypes needs no compiler at run
time. The newer `onednn` package is a SYCL build that cannot make a CPU
engine here. The enum values and argument numbers below are oneDNN 3.2's
(include/oneapi/dnnl/dnnl_types.h, dnnl_common_types.h); load() refuses
another major version.

Layouts (oneDNN's RNN docs and headers):
- src_layer/dst_layer are tnc ([T,B,C]: fusedrnn's x and y as they are);
  src_iter/dst_iter (and _iter_c) are ldnc ([layers, directions, B, H]: h0
  and h_n with two axes of 1).
- weights are logically ldigo ([L, D, in, gates, out]). fusedrnn's w_ih is
  [G*H, in], which is the same numbers as ldgoi; it is described to oneDNN as
  ldigo with ldgoi's strides, so no transpose is needed, and reordered once,
  outside the timing, into whatever layout the primitive picks (`any`).
- gate order: LSTM i, f, c~, o: torch's (i, f, g, o). GRU u, r, o where torch
  has r, z, n, with u = z: the first two gate blocks swap.
- bias: ldgo [L, D, G, H], one row per gate (the LSTM's b_ih + b_hh; the rnn's
  one bias); lbr_gru has 4 rows: u, r, o from the input side (b_ih + b_hh for
  u and r, b_in for o) and the 4th, b_hn, inside the reset product.
- the backward adds into diff_weights and diff_bias unless told otherwise:
  rnn_flags_diff_weights_overwrite makes it write them.

Data types: a float32 problem is f32 throughout. A bfloat16 one
(ml_dtypes.bfloat16 arrays) runs the configuration oneDNN's RNN docs list for
bf16 ("Data Type Support"): bf16 src/dst layer (x, y), src/dst iter (h0,
h_n) and weights; f32 bias and LSTM cell state (c0, c_n); and in the
backward every diff_* tensor f32, the only choice 3.2 has (with bf16 diff
memories its backward primitives are unimplemented). 3.2 would also take a
bf16 bias and cell state; f32 ones keep the sum b_ih + b_hh and c unrounded,
as fusedrnn keeps them, where bf16 ones would add an error of this setup's,
not of oneDNN's kernels. The bf16 values of c0, dy, dh_n and dc_n are widened
to f32 once, outside the timing (exactly).
"""

import ctypes
import ctypes.util
import glob
import os
import sys

import numpy as np

from .._checks import BFLOAT16
from . import PeerUnavailable, Results, Unsupported

# --- oneDNN 3.2 constants -----------------------------------------------------
SUCCESS = 0
CPU = 1  # dnnl_cpu
STREAM_IN_ORDER = 1
BF16, F32 = 2, 3  # dnnl_bf16, dnnl_f32
FORMAT_ANY = 1  # dnnl_format_tag_any
FORWARD_TRAINING, FORWARD_INFERENCE, BACKWARD = 64, 96, 128
ELTWISE_TANH = 0x21
LEFT2RIGHT = 1  # dnnl_unidirectional_left2right
DIFF_WEIGHTS_OVERWRITE = 1  # dnnl_rnn_flags_diff_weights_overwrite
QUERY_EXEC_ARG_MD = 255  # dnnl_query_exec_arg_md: indexed by DNNL_ARG_*
MAX_NDIMS = 12

ARG_SRC_LAYER, ARG_SRC_ITER, ARG_SRC_ITER_C = 1, 2, 3
ARG_DST_LAYER, ARG_DST_ITER, ARG_DST_ITER_C = 17, 18, 19
ARG_WEIGHTS_LAYER, ARG_WEIGHTS_ITER, ARG_BIAS = 33, 34, 41
ARG_WORKSPACE = 64
ARG_FROM, ARG_TO = 1, 17
DIFF = 128  # DNNL_ARG_DIFF_x = 128 + DNNL_ARG_x for every argument used here

STATUS = {1: "out of memory", 2: "invalid arguments", 3: "unimplemented",
          5: "runtime error", 6: "not required"}

Dims = ctypes.c_int64 * MAX_NDIMS
md_t = ctypes.c_void_p  # dnnl_memory_desc_t and the other handles: opaque pointers


class ExecArg(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_int), ("memory", ctypes.c_void_p)]


class Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("patch", ctypes.c_int),
                ("hash", ctypes.c_char_p), ("cpu_runtime", ctypes.c_uint),
                ("gpu_runtime", ctypes.c_uint)]


def _find_library():
    """libdnnl.so.3: pip puts it in <prefix>/lib (site-packages/../../),
    beside python's own lib directory; else wherever the loader finds it."""
    prefixes = dict.fromkeys([sys.prefix, sys.exec_prefix, sys.base_prefix])
    for prefix in prefixes:
        found = sorted(glob.glob(os.path.join(prefix, "lib", "libdnnl.so.3*")))
        if found:
            return found[0]
    return ctypes.util.find_library("dnnl")


def _load():
    path = _find_library()
    if path is None:
        raise PeerUnavailable("libdnnl.so.3 not found")
    try:
        lib = ctypes.CDLL(path)
    except OSError as e:
        raise PeerUnavailable(f"{path}: {e}") from None
    lib.dnnl_version.restype = ctypes.POINTER(Version)
    version = lib.dnnl_version().contents
    if version.major != 3:
        raise PeerUnavailable(f"{path} is oneDNN {version.major}.{version.minor}, not 3.x")
    lib.dnnl_primitive_desc_query_md.restype = md_t
    lib.dnnl_primitive_desc_query_md.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.dnnl_memory_desc_get_size.restype = ctypes.c_size_t
    lib.dnnl_memory_desc_get_size.argtypes = [md_t]
    lib.dnnl_memory_desc_equal.argtypes = [md_t, md_t]
    lib.dnnl_primitive_execute.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                           ctypes.POINTER(ExecArg)]
    lib.dnnl_stream_wait.argtypes = [ctypes.c_void_p]
    # oneDNN's OpenMP runtime: dlsym through the library's handle finds the
    # libgomp it was linked against (one copy per process, shared with
    # torch's when both are loaded, since they have the same soname).
    lib.omp_set_num_threads.argtypes = [ctypes.c_int]
    return path, version, lib


_path, _version, _lib = _load()

# oneDNN's data types as NumPy's; bf16 only with ml_dtypes installed.
NUMPY = {F32: np.dtype(np.float32), **({BF16: BFLOAT16} if BFLOAT16 is not None else {})}
# A problem's dtype -> the data type of its layers, hidden states and weights.
DATA = {dtype: code for code, dtype in NUMPY.items()}


def _check(status, what):
    if status != SUCCESS:
        raise RuntimeError(f"{what}: {STATUS.get(status, f'status {status}')}")


def _new(function, *args):
    """Call a dnnl_*_create function whose first argument is the handle it
    makes; the handle."""
    handle = ctypes.c_void_p()
    _check(getattr(_lib, function)(ctypes.byref(handle), *args), function)
    return handle


_engine = _new("dnnl_engine_create", CPU, ctypes.c_size_t(0))
_stream = _new("dnnl_stream_create", _engine, STREAM_IN_ORDER)


def describe():
    return (f"onednn {_version.major}.{_version.minor}.{_version.patch} ({_path}): "
            "vanilla_rnn (tanh), lstm, lbr_gru primitives by ctypes, weights reordered once "
            "into the primitive's layout outside the timing; fwd: forward_inference; fwd+bwd: "
            "forward_training then backward; OpenMP threads (omp_set_num_threads), the "
            "primitives made anew for each thread count; bfloat16: bf16 x, y, h and weights, "
            "f32 bias, LSTM cell state and gradients (oneDNN's bf16 RNN configuration)")


_threads = None


def set_num_threads(n):
    global _threads
    _lib.omp_set_num_threads(n)
    _threads = n


def get_num_threads():
    return _threads if _threads is not None else os.cpu_count()


def honours_threads(n):
    return True


# --- memory -------------------------------------------------------------------

class _Owner:
    """Keeps what a built peer made alive with it, and frees oneDNN's objects
    (primitives, their descriptors, memory descriptors and objects) when it
    goes."""

    def __init__(self):
        self.handles = []  # (destroy function, handle)
        self.buffers = []  # NumPy arrays oneDNN memory objects point into

    def own(self, destroy, handle):
        self.handles.append((destroy, handle))
        return handle

    def __del__(self):
        for destroy, handle in reversed(self.handles):
            getattr(_lib, destroy)(handle)


def _desc(owner, dims, strides=None, data_type=F32):
    """A memory descriptor of `data_type` (F32, BF16): plain with `strides`
    (in elements), or `any` (the primitive picks) without."""
    n = len(dims)
    if strides is None:
        md = _new("dnnl_memory_desc_create_with_tag", n, Dims(*dims), data_type, FORMAT_ANY)
    else:
        md = _new("dnnl_memory_desc_create_with_strides", n, Dims(*dims), data_type,
                  Dims(*strides))
    return owner.own("dnnl_memory_desc_destroy", md)


def _dense(dims):
    """Row-major strides of `dims`."""
    strides = np.cumprod((list(dims[1:]) + [1])[::-1])[::-1]
    return [int(s) for s in strides]


def _memory(owner, md, array=None, dtype=np.uint8):
    """A memory object over `array` (C-contiguous, of md's data type and
    size), or over a new zeroed buffer of md's size, of `dtype` (bytes for
    a layout only the primitive reads); (memory, the buffer)."""
    if array is None:
        size = _lib.dnnl_memory_desc_get_size(md)
        array = np.zeros(size // np.dtype(dtype).itemsize, dtype)
    owner.buffers.append(array)
    memory = _new("dnnl_memory_create", md, _engine, ctypes.c_void_p(array.ctypes.data))
    return owner.own("dnnl_memory_destroy", memory), array


def _primitive(owner, function, *args):
    pd = owner.own("dnnl_primitive_desc_destroy", _new(function, _engine, *args))
    prim = owner.own("dnnl_primitive_destroy", _new("dnnl_primitive_create", pd))
    return pd, prim


def _arg_md(pd, arg):
    # Wrapped: a bare int would go to the next call as a 32-bit C int.
    return ctypes.c_void_p(_lib.dnnl_primitive_desc_query_md(pd, QUERY_EXEC_ARG_MD, arg))


def _execute(prim, args):
    """args: {DNNL_ARG_*: memory}."""
    packed = (ExecArg * len(args))(*(ExecArg(a, m) for a, m in args.items()))
    _check(_lib.dnnl_primitive_execute(prim, _stream, len(args), packed), "execute")
    _check(_lib.dnnl_stream_wait(_stream), "stream wait")


def _packed_args(args):
    """The argument array built once: a run passes the same memories."""
    return len(args), (ExecArg * len(args))(*(ExecArg(a, m) for a, m in args.items()))


def _run(prim, packed):
    n, array = packed
    _check(_lib.dnnl_primitive_execute(prim, _stream, n, array), "execute")
    _check(_lib.dnnl_stream_wait(_stream), "stream wait")


def _into(owner, pd, arg, user_md, user_memory):
    """user_memory in the layout the primitive `pd` wants for `arg`: the same
    memory when the layouts agree, else a reorder done now (once, outside
    the timing: the weights do not change between runs)."""
    want = _arg_md(pd, arg)
    if _lib.dnnl_memory_desc_equal(want, user_md):
        return user_memory
    memory, _ = _memory(owner, want)
    _, reorder = _primitive_reorder(owner, user_md, want)
    _execute(reorder, {ARG_FROM: user_memory, ARG_TO: memory})
    return memory


def _primitive_reorder(owner, src_md, dst_md):
    pd = owner.own("dnnl_primitive_desc_destroy",
                   _new("dnnl_reorder_primitive_desc_create", src_md, _engine, dst_md, _engine,
                        None))
    prim = owner.own("dnnl_primitive_destroy", _new("dnnl_primitive_create", pd))
    return pd, prim


# --- cells --------------------------------------------------------------------

# torch's gate blocks in oneDNN's order: GRU's u (torch's z) and r swap.
GATE_ORDER = {"rnn": [0], "lstm": [0, 1, 2, 3], "gru": [1, 0, 2]}


def _gates(w, order):
    """w [G*H, ...] with its gate blocks in `order`, contiguous, in w's dtype."""
    blocks = np.split(np.asarray(w), len(order))
    return np.ascontiguousarray(np.concatenate([blocks[g] for g in order]))


def _from_ldigo(w, k, G, H):
    """Dense ldigo weights (one layer, one direction) as [G*H, k]."""
    return w.reshape(k, G * H).T


def _bias(cell, p):
    """The ldgo bias rows of the cell, [rows, H], float32 (summed in float32,
    as fusedrnn sums a bfloat16 problem's)."""
    G = len(GATE_ORDER[cell])
    H = p.w_hh.shape[1]
    if cell == "rnn":
        return p.b_ih.reshape(1, H).astype(np.float32)
    b_ih, b_hh = (b.reshape(G, H).astype(np.float32) for b in (p.b_ih, p.b_hh))
    if cell == "lstm":
        return b_ih + b_hh
    # lbr_gru: u, r from both sides; o = b_in; then b_hn apart.
    z, r, n = 1, 0, 2
    return np.stack([b_ih[z] + b_hh[z], b_ih[r] + b_hh[r], b_ih[n], b_hh[n]])


def _pd_function(cell, direction):
    name = {"rnn": "vanilla_rnn", "lstm": "lstm", "gru": "lbr_gru"}[cell]
    return f"dnnl_{name}_{direction}_primitive_desc_create"


def build(cell, p):
    """oneDNN's RNN primitives take their thread count when they are created:
    a forward_inference made on 2 threads went on running on 2 after
    omp_set_num_threads(1) (twice the CPU time of its wall time, measured).
    So each thread count gets its own primitives, made by its first run,
    which the bench's untimed warm-up is."""
    if p.x.dtype not in DATA:
        raise Unsupported(f"oneDNN's RNN primitives have no {p.x.dtype}")
    made = {}

    def on_threads(mode):
        def run():
            if _threads not in made:
                made[_threads] = _build(cell, p)
            return made[_threads][mode]()
        return run

    return {mode: on_threads(mode) for mode in ("fwd", "fwd+bwd")}


def _build(cell, p):
    owner = _Owner()
    T, B, D = p.x.shape
    H = p.w_hh.shape[1]
    order = GATE_ORDER[cell]
    G = len(order)
    lstm = cell == "lstm"
    bias_rows = _bias(cell, p)
    data = DATA[p.x.dtype]  # of x, y, h and the weights; the rest is f32 (see the top)

    # Plain descriptors of the user's arrays, key -> (dims, data type); the
    # diff_ ones are the backward's gradients of those without.
    plain = {"layer_in": ([T, B, D], data), "layer_out": ([T, B, H], data),
             "iter": ([1, 1, B, H], data), "iter_c": ([1, 1, B, H], F32),
             "bias": ([1, 1, len(bias_rows), H], F32), "diff_layer_in": ([T, B, D], F32),
             "diff_layer_out": ([T, B, H], F32), "diff_iter": ([1, 1, B, H], F32)}
    md = {key: _desc(owner, dims, _dense(dims), code) for key, (dims, code) in plain.items()}
    types = {key: code for key, (_, code) in plain.items()}

    # Weights: ldigo dims over the [G*H, in] arrays (ldgoi in memory).
    for key, k in (("w_ih", D), ("w_hh", H)):
        md[key] = _desc(owner, [1, 1, k, G, H], [G * H * k, G * H * k, 1, H * k, k], data)
        types[key] = data
    any_w_ih = _desc(owner, [1, 1, D, G, H], data_type=data)
    any_w_hh = _desc(owner, [1, 1, H, G, H], data_type=data)
    c_md = [md["iter_c"]] if lstm else []  # the LSTM's src_iter_c / dst_iter_c
    no_md = [None, None] if lstm else []  # its peephole and projection weights: none

    def forward_pd(prop_kind):
        head = [prop_kind, ELTWISE_TANH] if cell == "rnn" else [prop_kind]
        args = [*head, LEFT2RIGHT, md["layer_in"], md["iter"], *c_md, any_w_ih, any_w_hh,
                *no_md, md["bias"], md["layer_out"], md["iter"], *c_md, 0]
        if cell == "rnn":
            args += [ctypes.c_float(0), ctypes.c_float(0)]  # alpha, beta: unused by tanh
        return _primitive(owner, _pd_function(cell, "forward"), *args, None)

    # The user's memories: the problem's arrays in place where oneDNN reads
    # them as they are (else a copy in its data type, made now); the weights
    # with their gates in oneDNN's order.
    def mem(key, array=None):
        dtype = NUMPY[types[key]]
        if array is not None:
            array = np.ascontiguousarray(array, dtype)
        return _memory(owner, md[key], array, dtype)

    x_m, _ = mem("layer_in", p.x)
    h0_m, _ = mem("iter", p.h0)
    c0_m, _ = mem("iter_c", p.c0) if lstm else (None, None)
    w_ih_m, _ = mem("w_ih", _gates(p.w_ih, order))
    w_hh_m, _ = mem("w_hh", _gates(p.w_hh, order))
    bias_m, _ = mem("bias", bias_rows)
    y_m, y = mem("layer_out")
    hn_m, h_n = mem("iter")
    cn_m, c_n = mem("iter_c") if lstm else (None, None)

    def forward_args(pd):
        args = {ARG_SRC_LAYER: x_m, ARG_SRC_ITER: h0_m,
                ARG_WEIGHTS_LAYER: _into(owner, pd, ARG_WEIGHTS_LAYER, md["w_ih"], w_ih_m),
                ARG_WEIGHTS_ITER: _into(owner, pd, ARG_WEIGHTS_ITER, md["w_hh"], w_hh_m),
                ARG_BIAS: bias_m, ARG_DST_LAYER: y_m, ARG_DST_ITER: hn_m}
        if lstm:
            args |= {ARG_SRC_ITER_C: c0_m, ARG_DST_ITER_C: cn_m}
        return args

    def states():
        out = {"y": lambda: y.reshape(T, B, H).copy(), "h_n": lambda: h_n.reshape(B, H).copy()}
        if lstm:
            out["c_n"] = lambda: c_n.reshape(B, H).copy()
        return out

    inference_pd, inference = forward_pd(FORWARD_INFERENCE)
    inference_args = _packed_args(forward_args(inference_pd))

    def forward():
        _run(inference, inference_args)
        return Results(states())

    training_pd, training = forward_pd(FORWARD_TRAINING)
    training_dict = forward_args(training_pd)
    training_dict[ARG_WORKSPACE], _ = _memory(owner, _arg_md(training_pd, ARG_WORKSPACE))
    training_args = _packed_args(training_dict)

    # The backward: the gradients into plain arrays of the user's layouts
    # (the weights' as [G*H, in] in oneDNN's gate order), weights read in
    # the layout the backward picks (its own, not the forward's).
    diff_c = [md["diff_iter"]] * lstm
    # The weight gradients in dense ldigo ([in, G, H] per layer): the
    # backward takes no strided ldgoi view for them (unimplemented).
    diff_w_ih = _desc(owner, [1, 1, D, G, H], _dense([1, 1, D, G, H]))
    diff_w_hh = _desc(owner, [1, 1, H, G, H], _dense([1, 1, H, G, H]))
    bwd_args = [BACKWARD, ELTWISE_TANH] if cell == "rnn" else [BACKWARD]
    bwd_args += [LEFT2RIGHT, md["layer_in"], md["iter"], *c_md, any_w_ih, any_w_hh, *no_md,
                 md["bias"], md["layer_out"], md["iter"], *c_md,
                 md["diff_layer_in"], md["diff_iter"], *diff_c, diff_w_ih, diff_w_hh, *no_md,
                 md["bias"], md["diff_layer_out"], md["diff_iter"], *diff_c,
                 DIFF_WEIGHTS_OVERWRITE]
    if cell == "rnn":
        bwd_args += [ctypes.c_float(0), ctypes.c_float(0)]
    backward_pd, backward = _primitive(owner, _pd_function(cell, "backward"), *bwd_args,
                                       training_pd, None)
    dy_m, _ = mem("diff_layer_out", p.dy)
    dhn_m, _ = mem("diff_iter", p.dh_n)
    dx_m, dx = mem("diff_layer_in")
    dh0_m, dh0 = mem("diff_iter")
    dw_ih_m, dw_ih = _memory(owner, diff_w_ih, dtype=np.float32)
    dw_hh_m, dw_hh = _memory(owner, diff_w_hh, dtype=np.float32)
    dbias_m, dbias = mem("bias")
    args = {ARG_SRC_LAYER: x_m, ARG_SRC_ITER: h0_m,
            ARG_WEIGHTS_LAYER: _into(owner, backward_pd, ARG_WEIGHTS_LAYER, md["w_ih"], w_ih_m),
            ARG_WEIGHTS_ITER: _into(owner, backward_pd, ARG_WEIGHTS_ITER, md["w_hh"], w_hh_m),
            ARG_BIAS: bias_m, ARG_DST_LAYER: y_m, ARG_DST_ITER: hn_m,
            ARG_WORKSPACE: training_dict[ARG_WORKSPACE],
            DIFF + ARG_DST_LAYER: dy_m, DIFF + ARG_DST_ITER: dhn_m,
            DIFF + ARG_SRC_LAYER: dx_m, DIFF + ARG_SRC_ITER: dh0_m,
            DIFF + ARG_WEIGHTS_LAYER: dw_ih_m, DIFF + ARG_WEIGHTS_ITER: dw_hh_m,
            DIFF + ARG_BIAS: dbias_m}
    if lstm:
        dcn_m, _ = mem("diff_iter", p.dc_n)
        dc0_m, dc0 = mem("diff_iter")
        args |= {ARG_SRC_ITER_C: c0_m, ARG_DST_ITER_C: cn_m,
                 DIFF + ARG_DST_ITER_C: dcn_m, DIFF + ARG_SRC_ITER_C: dc0_m}
    backward_args = _packed_args(args)

    def grads():
        """The gradients in fusedrnn's names, layouts and torch's gate order
        (GATE_ORDER is its own inverse)."""
        rows = dbias.reshape(-1, H)
        out = {"dx": lambda: dx.reshape(T, B, D).copy(),
               "dh0": lambda: dh0.reshape(B, H).copy(),
               "dw_ih": lambda: _gates(_from_ldigo(dw_ih, D, G, H), order),
               "dw_hh": lambda: _gates(_from_ldigo(dw_hh, H, G, H), order)}
        if cell == "rnn":
            out["dbias"] = lambda: rows[0].copy()
        elif cell == "lstm":
            out["dc0"] = lambda: dc0.reshape(B, H).copy()
            out["db_ih"] = out["db_hh"] = lambda: rows.reshape(-1).copy()
        else:  # rows u, r, o, u' -> torch's r, z, n for each side
            out["db_ih"] = lambda: rows[[1, 0, 2]].reshape(-1)
            out["db_hh"] = lambda: rows[[1, 0, 3]].reshape(-1)
        return out

    def forward_backward():
        _run(training, training_args)
        _run(backward, backward_args)
        return Results(states() | grads())

    # The closures hold `owner`, and with it every oneDNN object and buffer.
    forward.owner = forward_backward.owner = owner
    return {"fwd": forward, "fwd+bwd": forward_backward}
