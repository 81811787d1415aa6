"""PyTorch front end: the drop-ins `RNN`, `LSTM` and `GRU` for `torch.nn.RNN`,
`torch.nn.LSTM` and `torch.nn.GRU`, and the functions `rnn_layer`,
`lstm_layer` and `gru_layer`, one layer in one direction each, that they are
built from.

The functions call operators registered with `torch.library`
(`torch.ops.fusedrnn.rnn_layer`, `.lstm_layer`, `.gru_layer` and their
`_backward`s), with fake implementations that give their results' shapes and
autograd formulas whose backward is itself such an operator. So the kernel
is one opaque node to autograd, to `torch.compile` (which traces through
the modules into one graph) and to `torch.jit.trace` (which records the
operator, not the values it returned).

Inside an operator, tensors reach the kernel through `Tensor.numpy()`, and
its results are written straight into tensors allocated for them: nothing
contiguous is copied on the way in or out (a non-contiguous or misaligned
tensor is copied once).

Threads: the operators use torch's thread count (`torch.get_num_threads()`)
unless fusedrnn's was chosen (`fusedrnn.set_num_threads`,
`FUSEDRNN_NUM_THREADS`), and when torch runs on OpenMP they run on torch's
own OpenMP threads: after each of torch's operators those spin for a few
milliseconds waiting for the next, and a pool of fusedrnn's own would have
to fight them for the cores (docs/design.md §8).

Importing this module imports torch and registers the operators; it changes
no torch setting. `import fusedrnn` alone does not import torch.
"""

import functools
import math
import os
import threading
import warnings

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence

from . import _cells, _engine, _kernel
from ._checks import ACTIVATIONS, BFLOAT16
from ._engine import GradInputs, Grads, Inputs

__all__ = ["GRU", "GRUCell", "LSTM", "LSTMCell", "RNN", "RNNCell", "gru_cell", "gru_layer",
           "lstm_cell", "lstm_layer", "rnn_cell", "rnn_layer"]

# The dtypes fusedrnn has, as NumPy's (bfloat16 ml_dtypes', which the torch
# extra installs).
_NUMPY = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64),
          **({torch.bfloat16: BFLOAT16} if BFLOAT16 is not None else {})}
_DTYPES = "torch.float32, torch.float64 and torch.bfloat16"


# --- threads ----------------------------------------------------------------

def _openmp_runtime():
    """The path of the OpenMP runtime torch has loaded, if torch's parallel
    backend is OpenMP, or None. Read from the process's mapped files: torch's
    wheels carry their own libgomp, which is not the system's."""
    if "OpenMP" not in torch.__config__.parallel_info().split("ATen parallel backend:")[-1]:
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split(None, 5)[-1].strip() for line in maps if "/lib" in line}
    except OSError:
        return None
    for path in sorted(paths):
        name = os.path.basename(path)
        if name.startswith(("libgomp", "libomp", "libiomp5")) and ".so" in name:
            return path
    return None


def _runtime():
    """Run on torch's OpenMP threads (see the module's docstring); the name
    of that runtime, or None when fusedrnn keeps its own pool."""
    path = _openmp_runtime()
    return path if path is not None and _kernel.share_openmp(path) else None


OPENMP = _runtime()


def _threads():
    """The thread count of an operator's call: fusedrnn's if chosen, else
    torch's. Always the count itself: a module keeps the Problems of its
    calls under it (_Packs._pack), so a later set_num_threads must change
    the key."""
    return _engine.get_num_threads() if _engine.num_threads_chosen() else \
        torch.get_num_threads()


# --- checks -----------------------------------------------------------------
# The operators check what they are given, with RuntimeError as torch's own
# operators raise: they can be called directly, and the kernel trusts every
# size it is handed. Shape checks compare sizes only, so they hold for the
# symbolic sizes of torch.compile too.

def _check_tensors(**tensors):
    """Every tensor on the CPU, float32, float64 or bfloat16, all of the first's dtype."""
    dtype = next(iter(tensors.values())).dtype
    if dtype in _NUMPY:
        for t in tensors.values():
            if t is not None and (t.dtype != dtype or not t.is_cpu):
                break
        else:   # the common case, in one pass without building a message
            return
    first = next(iter(tensors))
    for name, t in tensors.items():
        if t is None:
            continue
        if not t.is_cpu:
            raise RuntimeError(f"fusedrnn.torch: {name} is on device {t.device}, but fusedrnn "
                               f"runs on the CPU only; move it with .cpu()")
        if t.dtype == torch.bfloat16 and BFLOAT16 is None:
            raise RuntimeError(f"fusedrnn.torch: {name} has dtype torch.bfloat16, which needs "
                               f"the ml_dtypes package (pip install ml_dtypes, or "
                               f"fusedrnn[torch])")
        if t.dtype not in _NUMPY:
            raise RuntimeError(f"fusedrnn.torch: {name} has dtype {t.dtype}, but fusedrnn "
                               f"supports {_DTYPES} only")
        if t.dtype != dtype:
            raise RuntimeError(f"fusedrnn.torch: {name} has dtype {t.dtype}, expected "
                               f"{dtype} (the dtype of {first})")


def _check_shape(name, t, shape):
    if t is not None and t.shape != shape:
        raise RuntimeError(f"fusedrnn.torch: {name} has shape {tuple(t.shape)}, expected "
                           f"{tuple(shape)}")


def _check_layer(cell, inputs, nonlinearity, reverse, batch_first, training, threads=None,
                 step=False, bf16_products=False):
    """The Problem of one layer's call, after checking every argument
    (`inputs`: Inputs of tensors); with `step`, of a cell's one step (x
    [B,D]); with `bf16_products`, a float32 call's products on bf16
    operands (_engine.Problem)."""
    x, w_hh, c0, lengths = inputs.x, inputs.w_hh, inputs.c0, inputs.lengths
    _check_tensors(x=x, h0=inputs.h0, c0=c0, w_ih=inputs.w_ih, w_hh=w_hh, b_ih=inputs.b_ih,
                   b_hh=inputs.b_hh)
    if x.dim() != (2 if step else 3):
        raise RuntimeError(f"fusedrnn.torch: input must be 2-D (B, D), got shape "
                           f"{tuple(x.shape)}" if step else
                           f"fusedrnn.torch: x must be 3-D, (T, B, D) or (B, T, D) with "
                           f"batch_first, got shape {tuple(x.shape)}")
    if w_hh.dim() != 2:
        raise RuntimeError(f"fusedrnn.torch: w_hh must be 2-D, got shape {tuple(w_hh.shape)}")
    if step:
        T, B = 1, x.shape[0]
    else:
        T, B = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
    D, H = x.shape[-1], w_hh.shape[1]
    GH = cell.gates * H
    _check_shape("w_hh", w_hh, (GH, H))
    _check_shape("w_ih", inputs.w_ih, (GH, D))
    _check_shape("h0", inputs.h0, (B, H))
    _check_shape("c0", c0, (B, H))
    _check_shape("b_ih", inputs.b_ih, (GH,))
    _check_shape("b_hh", inputs.b_hh, (GH,))
    _check_shape("lengths", lengths, (B,))
    _check_shape("resets", inputs.resets, (B, T) if batch_first else (T, B))
    if c0 is not None and not cell.has_c:
        raise RuntimeError(f"fusedrnn.torch: c0 must be None: {cell.a_name} has no cell state")
    if lengths is not None and (lengths.dtype != torch.int64 or not lengths.is_cpu):
        raise RuntimeError(f"fusedrnn.torch: lengths must be an int64 CPU tensor, got "
                           f"{lengths.dtype} on {lengths.device}")
    resets = inputs.resets
    if resets is not None and (resets.dtype not in (torch.bool, torch.uint8) or not resets.is_cpu):
        raise RuntimeError(f"fusedrnn.torch: resets must be a bool or uint8 CPU tensor, got "
                           f"{resets.dtype} on {resets.device}")
    if nonlinearity not in ACTIVATIONS or (not cell.has_act and nonlinearity != "tanh"):
        takes = f"one of {', '.join(map(repr, ACTIVATIONS))}" if cell.has_act else "'tanh'"
        raise RuntimeError(f"fusedrnn.torch: nonlinearity {nonlinearity!r}: the {cell.name} "
                           f"takes {takes}")
    if bf16_products and x.dtype != torch.float32:
        raise RuntimeError(f"fusedrnn.torch: bf16_products is for float32 tensors, got "
                           f"{x.dtype}")
    return (_Step if step else _engine.Problem)(cell, _NUMPY[x.dtype], T, B, D, H,
                                                ACTIVATIONS[nonlinearity], reverse, batch_first,
                                                threads=threads, training=training,
                                                bf16_products=bf16_products)


def _check_backward(cell, inputs, d, nonlinearity, reverse, batch_first, threads=None,
                    step=False, bf16_products=False):
    """The Problem of one layer's backward, after checking every argument
    (`d`: GradInputs of tensors) and those of its forward."""
    problem = _check_layer(cell, inputs, nonlinearity, reverse, batch_first, True, threads,
                           step, bf16_products)
    B, H = problem.B, problem.H
    _check_tensors(x=inputs.x, y=d.y, dy=d.dy, dh_n=d.dh_n, dc_n=d.dc_n)
    if d.reserve.dtype != _reserve_dtype(inputs.x.dtype):
        raise RuntimeError(f"fusedrnn.torch: reserve has dtype {d.reserve.dtype}, expected "
                           f"{_reserve_dtype(inputs.x.dtype)} (the reserve of a "
                           f"{inputs.x.dtype} call)")
    seq = problem.seq_shape(H)
    for name, shape in (("y", seq), ("dy", seq), ("dh_n", (B, H)), ("dc_n", (B, H))):
        _check_shape(name, getattr(d, name), shape)
    if cell.reserve_rows:
        # An empty reserve is what an inference forward returns, which
        # torch.jit.trace under no_grad records.
        if d.reserve.numel() == 0 and problem.T * B * H != 0:
            raise RuntimeError(f"fusedrnn.torch: {cell.key}_layer_backward needs the "
                               f"reserve of a training forward (a call that needed gradients), "
                               f"got an empty one")
        _check_shape("reserve", d.reserve, problem.reserve_shape())
    return problem


def _addresses(tensors, keep):
    """The kernel's view of a group of tensors (Inputs, GradInputs): the
    address of each one's memory (None for None), as the same group. A
    tensor that is not contiguous, or not aligned to its dtype
    (torch.frombuffer with an odd byte offset makes one), is copied first,
    and the copy kept in `keep` for the call."""
    addresses = []
    for t in tensors:
        if t is None:
            addresses.append(None)
            continue
        at = t.data_ptr()
        if not t.is_contiguous() or at % t.element_size():
            t = t.clone(memory_format=torch.contiguous_format)
            keep.append(t)
            at = t.data_ptr()
        addresses.append(at)
    return tensors._make(addresses)


def _reserve_dtype(dtype):
    """The reserve's dtype in a call on tensors of `dtype`: theirs, but
    float32 for bfloat16 (_engine.Problem.reserve_dtype)."""
    return torch.float32 if dtype == torch.bfloat16 else dtype


def _empty(like, shapes, placeholders=True):
    """Tensors of `shapes` (Outputs, Grads) in like's dtype (an Outputs'
    reserve in _reserve_dtype's), as the same group; for a None a 0-element
    one with `placeholders`, since an operator returns a tensor for every
    result it declares, else None."""
    return shapes._make([
        None if s is None and not placeholders else
        like.new_empty((0,) if s is None else s, dtype=_reserve_dtype(like.dtype))
        if name == "reserve" else like.new_empty((0,) if s is None else s)
        for name, s in zip(shapes._fields, shapes)])


def _result_addresses(results, shapes):
    """Where the kernel writes each result, as the group of `shapes`: None
    for a None shape (whose result is None or a placeholder)."""
    return shapes._make([None if s is None else t.data_ptr() for t, s in zip(results, shapes)])


# --- the kernel calls ------------------------------------------------------

class _Step(_engine.Problem):
    """A cell's step: a layer's problem with T = 1 whose x and y have no time
    axis ([B,D] and [B,H], the same memory as [1,B,D] and [1,B,H])."""

    __slots__ = ()

    def seq_shape(self, n):
        return (self.B, n)

    def h_n_shape(self):
        # h_n is y: the kernel need not write it (fusedrnn.h), nor an operator return it
        return None


def _forward(problem, inputs, placeholders, read=None):
    """The kernel's forward of a checked call (`inputs`: Inputs of tensors;
    `read`: the kernel's view of them, _addresses', when the caller has
    it); returns (y, h_n, c_n, reserve), None for what the call does not
    write, or with `placeholders` a 0-element tensor, since an operator
    returns a tensor for every result it declares."""
    shapes = problem.output_shapes()
    outputs = _empty(inputs.x, shapes, placeholders)
    if inputs.lengths is not None and outputs.reserve is not None:
        # The kernel writes no reserve row past a sequence's length: zeros
        # there, so that the result is a function of the inputs.
        outputs.reserve.zero_()
    keep = []
    if read is None:
        read = _addresses(inputs, keep)
    _engine.forward(problem, read, _result_addresses(outputs, shapes))
    return outputs


def _backward(problem, inputs, grad_inputs, wanted=None, read=None):
    """The kernel's backward of a checked call: Grads of tensors, a 0-element
    one for the dc0 of a cell without c (each is an operator's result).
    With `wanted` (a bool per gradient), the unwanted ones are None
    (_grad_layout): autograd asks for no dx when x needs none, nor for dh0
    when h0 is None. `read`: as _forward's."""
    if not problem.cell.reserve_rows:
        # A 0-element placeholder for the reserve a cell keeps none of: the
        # kernel is not handed it.
        grad_inputs = grad_inputs._replace(reserve=None)
    keep = []   # what must live until the kernel has run: copies, unwanted results' tensors
    if wanted is None:
        shapes = problem.grad_shapes()
        grads = _empty(inputs.x, shapes)
        addresses = _result_addresses(grads, shapes)
    else:
        grads, addresses = _wanted(inputs.x, problem, wanted, keep)
    if read is None:
        read = _addresses(inputs, keep)
    _engine.backward(problem, read, _addresses(grad_inputs, keep), addresses)
    return grads


_SCRATCH = threading.local()
_SCRATCH_MOST = 1 << 20   # bytes: larger results are rare, and an allocation a small share
# The gradients the kernel leaves out when given nowhere to write them
# (fusedrnn.h): its products for dx, dh0, dw_ih and dw_hh are skipped.
_OPTIONAL = frozenset({"dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_hh"})


@functools.lru_cache(maxsize=256)
def _grad_layout(problem, wanted):
    """Where a backward's gradients go when autograd wants those of `wanted`
    (a bool each), per gradient: None where none is written (one the call
    has not, or an unwanted one the kernel may leave out: a first layer's
    dx, frozen weights); for another unwanted one, an offset into this
    thread's scratch memory, each at its own (the kernel's results must not
    overlap) when together they fit in _SCRATCH_MOST bytes; else a shape,
    of a tensor returned when wanted and dropped after the call when not.
    Worked out once per problem: a module keeps the problems of its calls
    (_Packs._pack), and at batch 1 this costs a visible share of a call."""
    shapes = problem.grad_shapes()
    skipped = [s is None or (not want and name in _OPTIONAL)
               for name, s, want in zip(shapes._fields, shapes, wanted)]
    sizes = [0 if skip or want else math.prod(s) * problem.dtype.itemsize
             for s, want, skip in zip(shapes, wanted, skipped)]
    scratch = any(sizes) and sum(sizes) + 64 * len(sizes) <= _SCRATCH_MOST
    layout, at = [], 0
    for s, size, skip in zip(shapes, sizes, skipped):
        if skip:
            layout.append(None)
        elif size and scratch:
            at = (at + 63) // 64 * 64
            layout.append(at)
            at += size
        else:
            layout.append(s)
    return tuple(layout)


def _wanted(like, problem, wanted, keep):
    """(Grads, where the kernel writes each) for the wanted gradients:
    tensors for those, None for the others, which go where _grad_layout
    says; `keep` receives what must live until the kernel has run."""
    grads, addresses = [], []
    scratch = None
    for place, want in zip(_grad_layout(problem, wanted), wanted):
        if place is None:
            grads.append(None)
            addresses.append(None)
        elif type(place) is int:
            if scratch is None:
                scratch = getattr(_SCRATCH, "buffer", None)
                if scratch is None:
                    scratch = _SCRATCH.buffer = torch.empty(_SCRATCH_MOST, dtype=torch.uint8)
            grads.append(None)
            addresses.append(scratch.data_ptr() + place)
        else:
            t = like.new_empty(place)
            addresses.append(t.data_ptr())
            if want:
                grads.append(t)
            else:   # written by the kernel, then dropped
                keep.append(t)
                grads.append(None)
    return Grads(*grads), Grads(*addresses)


# --- autograd ---------------------------------------------------------------

# The kernel's backward is not itself differentiable: a second derivative
# must fail, not see gradients without history, which torch takes as
# constants (silently zero second derivatives).
_TWICE = ("fusedrnn.torch: second derivatives (a double backward: create_graph=True, "
          "gradgradcheck) are not supported by fusedrnn's kernels; compute them with "
          "torch.nn's RNN, LSTM, GRU or cells")


class _Fused(torch.autograd.Function):
    """One kernel call as one autograd node: the forward of `call` (a _Direct
    or an _Operator), whose backward is `call`'s backward. Returns (y, h_n,
    c_n, reserve); the reserve is not differentiable."""

    @staticmethod
    def forward(ctx, call, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        y, h_n, c_n, reserve = call.forward(call.inputs(x, h0, c0, w_ih, w_hh, b_ih, b_hh))
        # The backward reads y (the RNN's act' comes from it) and the reserve.
        ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, reserve)
        ctx.call = call
        if reserve is not None:
            ctx.mark_non_differentiable(reserve)
        # An unused result's gradient stays None, which the kernel reads as
        # zero without a buffer of zeros being made and read.
        ctx.set_materialize_grads(False)
        return y, h_n, c_n, reserve

    @staticmethod
    def backward(ctx, dy, dh_n, dc_n, _):
        dc_n = dc_n if ctx.call.cell.has_c else None
        wanted = ctx.needs_input_grad[1:]
        if torch.is_grad_enabled():   # create_graph=True: a second derivative may follow
            grads = _Backward.apply(ctx.call, wanted, *ctx.saved_tensors, dy, dh_n, dc_n)
        else:
            grads = _Backward.run(ctx.call, wanted, *ctx.saved_tensors, dy, dh_n, dc_n)
        # One per input of the forward: `call`'s, then the tensors'.
        return (None, *(g if needed else None
                        for g, needed in zip(grads, ctx.needs_input_grad[1:])))


class _Backward(torch.autograd.Function):
    """A _Fused node's backward as a node of its own, where a second
    derivative may follow: its results depend on everything it reads, so
    that differentiating them reaches its backward, which raises."""

    @staticmethod
    def run(call, wanted, x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, reserve, dy, dh_n, dc_n):
        """The gradients of the forward's inputs; `wanted` (one bool each)
        says which autograd will use."""
        return call.backward(call.inputs(x, h0, c0, w_ih, w_hh, b_ih, b_hh),
                             GradInputs(y, reserve, dy, dh_n, dc_n), wanted)

    @staticmethod
    def forward(ctx, *args):
        return tuple(_Backward.run(*args))

    @staticmethod
    def backward(ctx, *grads):
        raise RuntimeError(_TWICE)


class _Direct:
    """Eager mode: the kernel called from the autograd node itself, its
    arguments checked once for the forward and its backward. The operators'
    path (_Operator) costs two more passes through torch's dispatcher, and
    the checks again, about 30 us a call: more than a step's kernel at
    small sizes."""

    __slots__ = ("cell", "problem", "given", "read", "copies")

    def __init__(self, problem, inputs):
        self.cell, self.problem, self.given = problem.cell, problem, inputs

    def inputs(self, *tensors):
        """The Inputs of the call's tensors (x, h0, c0, the weights): the
        given ones' lengths, resets and pack with them."""
        return Inputs(*tensors, *self.given[len(tensors):])

    def forward(self, inputs):
        # The kernel's view of the given tensors (without the weights a pack
        # holds) is kept for the backward, which autograd hands the same
        # tensors, unchanged (it checks their versions), with the copies
        # made of any that were not contiguous.
        self.copies = []
        self.read = _addresses(self.given, self.copies)
        return _forward(self.problem, inputs, False, self.read)

    def backward(self, inputs, grad_inputs, wanted):
        return _backward(self.problem, inputs, grad_inputs, wanted, self.read)


def _eager(x):
    """Whether a call on x runs in plain eager mode, where _Direct may run: a
    plain tensor, no tracing (torch.compile, jit.trace, torch.export), no
    functorch transform, no torch function or dispatch mode. Anywhere else
    the registered operators run, which those see and trace."""
    return (type(x) is torch.Tensor and not torch.jit.is_tracing()
            and not torch.compiler.is_compiling()
            and not torch._C._are_functorch_transforms_active()
            and torch._C._len_torch_dispatch_stack() == 0
            and not torch._C._is_torch_function_mode_enabled())


# --- the operators ----------------------------------------------------------
# A layer's operators have one signature for every cell, c0 for the LSTM
# only and nonlinearity for the RNN only, so that one implementation, one
# fake and one autograd formula serve them; a cell's are the same without
# the sequence's options. The forward returns (y, h_n, c_n, reserve) (a
# cell's: h, c, reserve): c_n is empty but for the LSTM, the reserve (what
# the backward reads) empty but for a gated cell's training call.

_WEIGHTS = "Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh"
_SEQUENCE = "Tensor x, Tensor? h0, Tensor? c0, " + _WEIGHTS + ", Tensor? lengths, Tensor? resets"
_LAYER = ("(" + _SEQUENCE + ", str nonlinearity, bool reverse, bool batch_first, bool training) "
          "-> (Tensor y, Tensor h_n, Tensor c_n, Tensor reserve)")
_LAYER_BACKWARD = (
    "(" + _SEQUENCE + ", Tensor y, Tensor reserve, Tensor? dy, Tensor? dh_n, Tensor? dc_n, "
    "str nonlinearity, bool reverse, bool batch_first) -> (Tensor dx, Tensor dh0, Tensor dc0, "
    "Tensor dw_ih, Tensor dw_hh, Tensor db_ih, Tensor db_hh)")
# A cell's bf16_products: float32 tensors whose products read bf16 operands
# (FUSEDRNN_F32_BF16), what the cells compute under autocast.
_CELL = ("(Tensor input, Tensor? hx, Tensor? cx, " + _WEIGHTS + ", str nonlinearity, "
         "bool training, bool bf16_products=False) -> (Tensor h, Tensor c, Tensor reserve)")
_CELL_BACKWARD = (
    "(Tensor input, Tensor? hx, Tensor? cx, " + _WEIGHTS + ", Tensor h, Tensor reserve, "
    "Tensor? dh, Tensor? dc, str nonlinearity, bool bf16_products=False) -> (Tensor dinput, "
    "Tensor dhx, Tensor dcx, Tensor dw_ih, Tensor dw_hh, Tensor db_ih, Tensor db_hh)")


class _Signature:
    """How the arguments of a kind of operator (a layer's, a cell's) map onto
    a kernel call, for its implementations, fakes and autograd kernel:
    `tensors` inputs (Inputs' first fields), then the schema's options: a
    layer's (nonlinearity, reverse, batch_first), a cell's (nonlinearity),
    for a forward training, and a cell's bf16_products."""

    def __init__(self, name, tensors, step):
        self.name, self.tensors, self.step = name, tensors, step

    def sequence(self, options):
        """(nonlinearity, reverse, batch_first) of the schema's options."""
        return (options[0], False, False) if self.step else options

    def options(self, options, forward):
        """((nonlinearity, reverse, batch_first), training (a forward's, else
        None), bf16_products) of a call's schema options; a cell's
        bf16_products may be left out (its default), as torch hands a
        kernel only what the caller gave."""
        n = 1 if self.step else 3
        products = len(options) > n + forward and options[n + forward]
        return self.sequence(options[:n]), options[n] if forward else None, products

    def backward_options(self, options):
        """The backward's schema options of its forward's."""
        sequence, _, products = self.options(options, True)
        return (sequence[0], products) if self.step else sequence

    def problem(self, cell, args, threads=None):
        """The checked Problem of a forward's arguments, and its Inputs."""
        n = self.tensors
        inputs = Inputs(*args[:n])
        sequence, training, products = self.options(args[n:], True)
        return _check_layer(cell, inputs, *sequence, training, threads, self.step,
                            products), inputs

    def backward_problem(self, cell, args, threads=None):
        """The same for a backward's arguments, and its GradInputs: a layer's
        (y, reserve, dy, dh_n, dc_n), a cell's (h, reserve, dh, dc), whose h
        is its one step's y (and h_n) and dh the gradient of that y."""
        inputs = Inputs(*args[:self.tensors])
        n = 4 if self.step else 5
        grad_inputs = args[self.tensors:self.tensors + n]
        grad_inputs = GradInputs(*grad_inputs[:3], None, grad_inputs[3]) if self.step \
            else GradInputs(*grad_inputs)
        sequence, _, products = self.options(args[self.tensors + n:], False)
        problem = _check_backward(cell, inputs, grad_inputs, *sequence, threads, self.step,
                                  products)
        return problem, inputs, grad_inputs

    def grad_args(self, grad_inputs):
        """The backward operator's arguments of GradInputs (the inverse of the above)."""
        if self.step:
            return grad_inputs.y, grad_inputs.reserve, grad_inputs.dy, grad_inputs.dc_n
        return tuple(grad_inputs)

    def results(self, outputs):
        """The operator's results of a forward's (y, h_n, c_n, reserve)."""
        y, h_n, c_n, reserve = outputs
        return (y, c_n, reserve) if self.step else (y, h_n, c_n, reserve)


_LAYER_SIGNATURE = _Signature("layer", 9, False)
_CELL_SIGNATURE = _Signature("cell", 7, True)


class _Operator:
    """The registered operators' path: the forward and backward operators
    called below autograd, so that tracing records them."""

    __slots__ = ("cell", "lengths", "resets", "ops", "signature", "options")

    def __init__(self, cell, ops, signature, args):
        self.cell, self.ops, self.signature = cell, ops, signature
        # A layer's lengths and resets follow the tensors of Inputs; a cell has neither.
        self.lengths, self.resets = (None, None) if signature.step else args[7:9]
        self.options = args[signature.tensors:]   # the forward's

    def inputs(self, *tensors):
        return Inputs(*tensors, lengths=self.lengths, resets=self.resets)

    def forward(self, inputs):
        with torch._C._AutoDispatchBelowAutograd():
            results = self.ops[0](*inputs[:self.signature.tensors], *self.options)
        if self.signature.step:
            y, c, reserve = results
            return y, None, c, reserve
        return results

    def backward(self, inputs, grad_inputs, wanted):
        # An operator returns every result (`wanted` does not apply).
        return self.ops[1](*inputs[:self.signature.tensors],
                           *self.signature.grad_args(grad_inputs),
                           *self.signature.backward_options(self.options))


def _define(cell, signature, forward_schema, backward_schema):
    """The forward and backward operators fusedrnn::{cell}_{layer or cell},
    their fakes, and the forward's autograd kernel."""
    name = f"{cell.key}_{signature.name}"

    def forward(*args):
        problem, inputs = signature.problem(cell, args, _threads())
        return signature.results(_forward(problem, inputs, True))

    def forward_fake(*args):
        if torch.onnx.is_in_onnx_export():
            # Reached only by the torch.export-based ONNX exporter's second
            # try, a strict (Dynamo) capture after the first failed: Dynamo
            # reads is_in_onnx_export() as False, so the drop-ins trace their
            # operators rather than ONNX's nodes (_onnx_call). Failing here
            # leaves the exporter to report the first capture's error.
            raise RuntimeError(f"fusedrnn.torch: fusedrnn::{name} has no ONNX translation; "
                               f"in an ONNX export the drop-ins write ONNX's nodes, which "
                               f"torch.export's strict mode does not let them see")
        problem, inputs = signature.problem(cell, args)
        return signature.results(_empty(inputs.x, problem.output_shapes()))

    def backward(*args):
        problem, inputs, grad_inputs = signature.backward_problem(cell, args, _threads())
        return tuple(_backward(problem, inputs, grad_inputs))

    def backward_fake(*args):
        problem, inputs, _ = signature.backward_problem(cell, args)
        return tuple(_empty(inputs.x, problem.grad_shapes()))

    backward_op = _register(name + "_backward", backward_schema, backward, backward_fake)
    ops = (_register(name, forward_schema, forward, forward_fake), backward_op)

    def autograd(*args):
        """The Autograd kernel: a _Fused node over the operators, or with
        nothing to differentiate (torch.no_grad, or no input that wants a
        gradient) the call below autograd, without a node. Registered
        directly rather than through torch.library.register_autograd, which
        would do the same at a cost of about 45 us per call for an operator
        of 12 arguments (torch 2.13 rebuilds the schema's argument list for
        every argument it fills in)."""
        if _wants_grad(args[:7]):
            results = _Fused.apply(_Operator(cell, ops, signature, args), *args[:7])
            return signature.results(results)
        with torch._C._AutoDispatchBelowAutograd():
            return ops[0](*args)

    _LIBRARY.impl(name, autograd, "Autograd")

    def autocast(keys, *args):
        """The AutocastCPU kernel: the tensors cast as _autocast says, then
        the operator below autocast (autograd records the casts)."""
        n = signature.tensors
        tensors = _autocast(cell, signature.step, args[:7]) + args[7:n]
        options = args[n:]
        if _bf16_products(cell, signature.step, tensors[0].dtype):
            options = (*options[:2], True)   # a cell's (nonlinearity, training, bf16_products)
        with torch._C._ExcludeDispatchKeyGuard(
                torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastCPU)):
            results = ops[0](*tensors, *options)
        return _autocast_results(cell, signature.step, results)

    _LIBRARY.impl(name, autocast, "AutocastCPU", with_keyset=True)
    return ops[0]


def _wants_grad(tensors):
    """Whether autograd will want a backward of a call on `tensors`."""
    if torch.is_grad_enabled():
        for t in tensors:
            if t is not None and t.requires_grad:
                return True
    return False


# The operators are defined for every device (CompositeExplicitAutograd),
# so that a tensor elsewhere than on the CPU gets _check_tensors's message.
_LIBRARY = torch.library.Library("fusedrnn", "DEF")


def _register(name, schema, impl, fake):
    _LIBRARY.define(name + schema)
    _LIBRARY.impl(name, impl, "CompositeExplicitAutograd")
    torch.library.register_fake(f"fusedrnn::{name}", fake, lib=_LIBRARY)
    return getattr(torch.ops.fusedrnn, name).default


# The cells of torch.nn's RNN, LSTM and GRU (torch's GRU has no reset-first form).
_TORCH_CELLS = (_cells.RNN, _cells.LSTM, _cells.GRU)
_OPS = {cell.key: _define(cell, _LAYER_SIGNATURE, _LAYER, _LAYER_BACKWARD)
        for cell in _TORCH_CELLS}
_CELL_OPS = {cell.key: _define(cell, _CELL_SIGNATURE, _CELL, _CELL_BACKWARD)
             for cell in _TORCH_CELLS}


# --- autocast ---------------------------------------------------------------
# Under torch.autocast("cpu", dtype=torch.bfloat16) a drop-in computes in
# bfloat16 exactly where torch.nn's module of the same kind does, with the
# same dtypes out: torch 2.13's CPU autocast runs RNN and LSTM (oneDNN's bf16
# kernel) in bf16 and returns bf16. Its GRU is a bf16 product per step
# (autocast's linear) under float32 gate maths, and returns float32: the
# drop-in's GRU layer runs fusedrnn's bf16 path (products in bf16, sums and
# state in float32, rounded once at the end) and returns its results widened
# to float32 (_AUTOCAST_FLOAT_OUT). The cells are bf16 products too, and
# LSTMCell and GRUCell return float32, RNNCell bf16: their drop-ins keep
# float32 tensors (widening bf16 ones, exactly) and compute with bf16
# products (_AUTOCAST_BF16_PRODUCTS, FUSEDRNN_F32_BF16), RNNCell's result
# rounded to bf16 once (_AUTOCAST_BF16_OUT). A cell's state goes from one
# call to the next, and a bf16 call would round LSTMCell's and GRUCell's at
# every step, where torch.nn's stays float32; RNNCell's results are those of
# a bf16 call, without casting its weights at every call.
# tests/test_torch_bfloat16.py holds the table to torch.nn's behaviour. Under
# any other autocast dtype (float16, which fusedrnn has not) the drop-ins
# compute in float32.
_AUTOCAST_BF16 = {(_cells.RNN, False), (_cells.LSTM, False), (_cells.GRU, False)}
_AUTOCAST_FLOAT_OUT = {(_cells.GRU, False)}
_AUTOCAST_BF16_PRODUCTS = {(_cells.RNN, True), (_cells.LSTM, True), (_cells.GRU, True)}
_AUTOCAST_BF16_OUT = {(_cells.RNN, True)}


def _bf16_autocast():
    """Whether a bfloat16 autocast is in force on the CPU."""
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def _autocasting(cell, step, kinds=_AUTOCAST_BF16):
    """Whether a call of this kind is one of `kinds` under a bf16 autocast in
    force: by default, one that computes in bf16."""
    return (cell, step) in kinds and _bf16_autocast()


def _bf16_products(cell, step, dtype):
    """Whether a call of this kind on `dtype` tensors computes float32 with
    bf16 products under the autocast in force (_AUTOCAST_BF16_PRODUCTS)."""
    return dtype == torch.float32 and _autocasting(cell, step, _AUTOCAST_BF16_PRODUCTS)


def _autocast_results(cell, step, results):
    """A call's results (tensors or None) as torch.nn's module of its kind
    returns them under the autocast in force: the bf16 ones widened to
    float32 where that module returns float32, the float32 ones rounded to
    bf16 where it returns bf16 (differentiably)."""
    kind = (cell, step)
    if kind in _AUTOCAST_FLOAT_OUT:
        have, want = torch.bfloat16, torch.float32
    elif kind in _AUTOCAST_BF16_OUT:
        have, want = torch.float32, torch.bfloat16
    else:
        return results
    if not _bf16_autocast():
        return results
    return tuple(t.to(want) if t is not None and t.dtype == have else t for t in results)


def _autocast(cell, step, tensors, packs=None):
    """`tensors` (x, the states, then the weights, or a prefix) as autocast
    has a call on them compute: under a bfloat16 autocast, for a kind of call
    torch computes in bf16, each float32 one cast to bf16, for one it
    computes with bf16 products each bf16 one widened to float32
    (differentiably: their gradients come back in their dtypes); else
    unchanged. packs: (module, index) of a module that keeps its weights'
    bf16 copies for calls no gradient follows (_Packs._lowered)."""
    if _autocasting(cell, step, _AUTOCAST_BF16_PRODUCTS):
        return tuple(t.float() if t is not None and t.dtype == torch.bfloat16 else t
                     for t in tensors)
    if not _autocasting(cell, step):
        return tensors
    def lower(group):
        return tuple(t.to(torch.bfloat16) if t is not None and t.dtype == torch.float32 else t
                     for t in group)
    states, weights = tensors[:3], tensors[3:]
    kept = None
    if packs is not None and weights and not _wants_grad(tensors) and all(
            w is None or w.dtype == torch.float32 for w in weights):
        kept = packs[0]._lowered(packs[1], weights)
    return lower(states) + (kept if kept is not None else lower(weights))


# --- ONNX export ------------------------------------------------------------
# torch.onnx.export translates torch.nn's RNN, LSTM and GRU into ONNX's RNN,
# LSTM and GRU nodes, but knows nothing of fusedrnn's operators. Each of its
# two exporters sets the flag of torch.onnx.is_in_onnx_export() for the whole
# export, so that while one runs, and only then, the drop-ins give it what it
# can translate; nothing is registered with torch, and no setting changes.
#
# - The TorchScript-based exporter (dynamo=False) traces with torch.jit: the
#   modules and cells run torch.nn's own forward (_torchscript_export), the
#   same maths, which that exporter turns into standard nodes as it does for
#   torch.nn. Only that way does a model's pack_padded_sequence ...
#   pad_packed_sequence become sequence_lens: the exporter rewrites the
#   aten::lstm (gru, rnn_tanh, rnn_relu) it finds after a pack, and would see
#   fusedrnn's own handling of a PackedSequence (index operations on the
#   packed rows) as operations on the padded tensor it substitutes for them.
# - The torch.export-based exporter (dynamo=True) runs the drop-ins on fake
#   tensors: each kernel call, a layer in one direction or a cell's step,
#   becomes the ONNX node itself (_onnx_call), through torch.onnx.ops, which
#   that exporter writes out as it is. torch.nn's forward would not do there:
#   torch.export decomposes torch.nn.RNN into one product per step, and no
#   PackedSequence of torch.nn's reaches ONNX (torch.nn reads its batch size
#   from the data, which torch.export refuses).

# The ONNX RNN node's activations by fusedrnn's names.
_ONNX_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu", "sigmoid": "Sigmoid"}

_ONNX_RESETS = ("fusedrnn.torch: resets= cannot be exported to ONNX: the RNN, LSTM and GRU "
                "nodes have no restart within a sequence. Export the model without it, "
                "or give each piece between restarts as a sequence of its own")


def _torchscript_export():
    """Whether torch.onnx.export's TorchScript-based exporter is tracing the
    call (see "ONNX export" above): then the modules run torch.nn's forward.
    Tracing is asked first, so that plain eager calls pay one cheap check."""
    return torch.jit.is_tracing() and torch.onnx.is_in_onnx_export()


def _onnx_call(cell, signature, tensors, sequence, options):
    """_call's results, (y, h_n, c_n) or a step's (h, None, c), as ONNX's node
    for torch.onnx.export(dynamo=True): a step is a sequence of one."""
    if torch.jit.is_tracing():
        # Only the modules export through the TorchScript-based exporter.
        raise RuntimeError(f"fusedrnn.torch.{cell.key}_{signature.name} exports to ONNX with "
                           f"torch.onnx.export(..., dynamo=True); with dynamo=False only the "
                           f"modules (RNN, LSTM, GRU and the cells) do")
    # The operators' checks, which the node is written without.
    _check_layer(cell, Inputs(*tensors, *sequence), *signature.sequence(options), False,
                 step=signature.step)
    x, h0, c0, *weights = tensors
    if signature.step:
        _, h, c = _onnx_node(cell, x.unsqueeze(0), h0, c0, weights, None, options[0], False)
        return h, None, c
    lengths, resets = sequence
    if resets is not None:
        raise RuntimeError(_ONNX_RESETS)
    nonlinearity, reverse, batch_first = options
    # ONNX Runtime runs these nodes on time-major sequences only (layout=0).
    if batch_first:
        x = x.transpose(0, 1)
    y, h_n, c_n = _onnx_node(cell, x, h0, c0, weights, lengths, nonlinearity, reverse)
    return (y.transpose(0, 1) if batch_first else y), h_n, c_n


def _onnx_node(cell, x, h0, c0, weights, lengths, nonlinearity, reverse):
    """(y [T,B,H], h_n [B,H], c_n or None) of one layer in one direction over
    x [T,B,D], as the one ONNX node of the cell (_cells.ONNX_OPERATORS): the
    weights (w_ih, w_hh, b_ih, b_hh) in ONNX's gate order, the two biases in
    one, lengths as sequence_lens."""
    from torch.onnx.ops import symbolic_multi_out   # imported by the export alone

    w_ih, w_hh, b_ih, b_hh = weights
    operator, order = _cells.ONNX_OPERATORS[cell.key]
    H = w_hh.shape[1]

    def onnx_gates(w):
        """[G*H, ...] in torch's gate order -> [1, G*H, ...] in ONNX's."""
        return torch.cat([w[g * H:(g + 1) * H] for g in order]).unsqueeze(0)

    bias = None
    if b_ih is not None or b_hh is not None:   # ONNX's B: the input side's, then the recurrent's
        bias = torch.cat([onnx_gates(w_hh.new_zeros(w_hh.shape[0]) if b is None else b)
                          for b in (b_ih, b_hh)], 1)
    attributes = {"hidden_size": H, "direction": "reverse" if reverse else "forward"}
    if cell.has_act:
        attributes["activations"] = [_ONNX_ACTIVATIONS[nonlinearity]]
    if cell is _cells.GRU:
        attributes["linear_before_reset"] = 1   # torch's b_hn inside the reset product
    states = (h0, c0) if cell.has_c else (h0,)
    T, B = x.shape[0], x.shape[1]
    results = symbolic_multi_out(
        operator,
        [x, onnx_gates(w_ih), onnx_gates(w_hh), bias,
         None if lengths is None else lengths.to(torch.int32),
         *(None if s is None else s.unsqueeze(0) for s in states)],
        attributes, dtypes=[x.dtype] * (1 + len(states)),
        shapes=[(T, 1, B, H)] + [(1, B, H)] * len(states))
    y, h_n = results[0].squeeze(1), results[1].squeeze(0)
    return y, h_n, results[2].squeeze(0) if cell.has_c else None


def _call(cell, signature, tensors, sequence, options, packs=None):
    """(y, h_n, c_n) of one call: in eager mode the kernel from a _Fused node
    (or none when nothing wants a gradient), else the operator. `tensors`:
    x, h0, c0 and the weights; sequence: a layer's (lengths, resets), a
    cell's (); options: the schema's, but training; packs:
    (module, index) of a module that keeps its weights packed (_Packs)."""
    x = tensors[0]
    if not _eager(x):   # the operators' autocast kernels cast as below
        if torch.onnx.is_in_onnx_export():
            return _onnx_call(cell, signature, tensors, sequence, options)
        ops = _OPS if signature is _LAYER_SIGNATURE else _CELL_OPS
        # (a cell's bf16_products is the AutocastCPU kernel's to set)
        results = ops[cell.key](*tensors, *sequence, *options, _wants_grad(tensors))
        return (results[0], None, results[1]) if signature.step else results[:3]
    weights = tensors[3:]   # the module's, before autocast's casts: what a pack is kept for
    tensors = _autocast(cell, signature.step, tensors, packs)
    training = _wants_grad(tensors)
    inputs = Inputs(*tensors, *sequence)
    threads = _threads()
    products = _bf16_products(cell, signature.step, tensors[0].dtype)

    def check():
        return _check_layer(cell, inputs, *signature.sequence(options), training, threads,
                            signature.step, products)

    if packs is None:
        problem = check()
    else:
        # A module has checked x and the states against its sizes: what is
        # left to check depends on these alone, and on the weights (_pack).
        key = None if any(t is not None for t in sequence) else (
            x.shape, tensors[0].dtype, tensors[1] is None, tensors[2] is None, options,
            training, threads)
        problem, pack = packs[0]._pack(packs[1], key, check, weights, tensors[3:], products)
        if pack is not None:
            # The kernel reads the weights from the pack alone (fusedrnn.h).
            inputs = Inputs(*tensors[:3], None, None, None, None, *inputs[7:9], pack)
    if training:
        y, h_n, c_n, _ = _Fused.apply(_Direct(problem, inputs), *tensors)
    else:
        y, h_n, c_n, _ = _forward(problem, inputs, False)
    return _autocast_results(cell, signature.step, (y, h_n, c_n))


def _layer(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, nonlinearity, reverse,
           batch_first, packs=None, resets=None):
    """(y, h_n, c_n) of one layer's call; a gated cell keeps a reserve only
    when autograd will want the backward."""
    if lengths is not None:
        lengths = torch.as_tensor(lengths)
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise RuntimeError(f"fusedrnn.torch: lengths must hold integers, got {lengths.dtype}")
        lengths = lengths.to(torch.int64)
    if resets is not None:
        resets = torch.as_tensor(resets)
        if resets.is_floating_point() or resets.is_complex():
            raise RuntimeError(f"fusedrnn.torch: resets must hold bools or integers, got "
                               f"{resets.dtype}")
        if resets.dtype not in (torch.bool, torch.uint8):
            resets = resets != 0   # the kernel reads bytes: bool's 0 and 1 are two of them
    return _call(cell, _LAYER_SIGNATURE, (x, h0, c0, w_ih, w_hh, b_ih, b_hh), (lengths, resets),
                 (nonlinearity, reverse, batch_first), packs)


def rnn_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh", lengths=None,
              reverse=False, batch_first=False, resets=None):
    """One RNN layer in one direction, h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),
    differentiable with respect to every tensor argument.

    The arguments are those of `fusedrnn.rnn_forward` as tensors, with
    torch's two biases (either may be None): x [T,B,D] (or [B,T,D] with
    batch_first), h0 [B,H] or None, w_ih [H,D], w_hh [H,H], b_ih and b_hh
    [H], lengths [B] int64 or None, resets [T,B] ([B,T] with batch_first)
    bool or None (where set, the sequence restarts from h0 before the step,
    as fusedrnn.rnn_forward's). Returns (y, h_n). CPU float32, float64 or bfloat16
    tensors, all of one dtype.
    """
    y, h_n, _ = _layer(_cells.RNN, x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths, nonlinearity,
                       reverse, batch_first, resets=resets)
    return y, h_n


def lstm_layer(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, *, lengths=None, reverse=False,
               batch_first=False, resets=None):
    """One LSTM layer in one direction, torch.nn.LSTM's maths (gates i, f, g, o):
    as `fusedrnn.lstm_forward` with tensors, w_ih [4H,D], w_hh [4H,H], b_ih
    and b_hh [4H]. Returns (y, h_n, c_n)."""
    return _layer(_cells.LSTM, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, "tanh", reverse,
                  batch_first, resets=resets)


def gru_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, lengths=None, reverse=False,
              batch_first=False, resets=None):
    """One GRU layer in one direction, torch.nn.GRU's maths (gates r, z, n; b_hn
    inside the reset product): as `fusedrnn.gru_forward` with tensors,
    w_ih [3H,D], w_hh [3H,H], b_ih and b_hh [3H]. Returns (y, h_n)."""
    y, h_n, _ = _layer(_cells.GRU, x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths, "tanh",
                       reverse, batch_first, resets=resets)
    return y, h_n


def _step(cell, input, hx, cx, w_ih, w_hh, b_ih, b_hh, nonlinearity, packs=None):
    """(h, c) of one step of a cell: one kernel call, both products and the
    cell's maths."""
    h, _, c = _call(cell, _CELL_SIGNATURE, (input, hx, cx, w_ih, w_hh, b_ih, b_hh), (),
                    (nonlinearity,), packs)
    return h, c


def rnn_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh"):
    """One step of an RNN cell, h = act(W_ih input + b_ih + W_hh hx + b_hh),
    differentiable: input [B,D], hx [B,H] or None (zeros), w_ih [H,D], w_hh
    [H,H], b_ih and b_hh [H] or None. Returns h [B,H]. The function of
    `RNNCell`, as `rnn_layer` is `RNN`'s."""
    return _step(_cells.RNN, input, hx, None, w_ih, w_hh, b_ih, b_hh, nonlinearity)[0]


def lstm_cell(input, hx, cx, w_ih, w_hh, b_ih=None, b_hh=None):
    """One step of an LSTM cell (gates i, f, g, o), w_ih [4H,D], w_hh [4H,H],
    b_ih and b_hh [4H]; hx, cx [B,H] or None. Returns (h, c)."""
    return _step(_cells.LSTM, input, hx, cx, w_ih, w_hh, b_ih, b_hh, "tanh")


def gru_cell(input, hx, w_ih, w_hh, b_ih=None, b_hh=None):
    """One step of a GRU cell (gates r, z, n; b_hn inside the reset
    product), w_ih [3H,D], w_hh [3H,H], b_ih and b_hh [3H]. Returns h."""
    return _step(_cells.GRU, input, hx, None, w_ih, w_hh, b_ih, b_hh, "tanh")[0]


# --- the modules ------------------------------------------------------------

class _Packs:
    """A module's weights packed for the kernel (fusedrnn_pack), one pack per
    layer and direction, kept between calls while the weights are unchanged,
    so that a call does not pack them again (at batch 1 packing costs about
    as much as the products). Eager mode only; the operators' path packs per
    call."""

    def _pack(self, i, key, check, weights, used, products=False):
        """(problem, pack) of a call with layer and direction i's weights:
        the Problem check() returns after checking every argument, and the
        weights packed for it (a uint8 tensor), or None where a pack could go
        stale unseen (_kept). `weights`: the module's (w_ih, w_hh, b_ih,
        b_hh); `used`: what the call computes with, the same tensors or
        autocast's bf16 copies of them, which are made from them. `key`: the
        shapes and options of the call's other arguments, on which alone
        check()'s result then depends (None: unknown): it is kept with the
        pack, checked once (at batch 1 the checks cost as much as the kernel).
        `products`: the call's bf16_products, whose pack is another."""
        made = []

        def make():
            made.append(check())
            pack = torch.empty(_kernel.packed_size(made[0]), dtype=torch.uint8)
            _kernel.pack(made[0], *[None if w is None else w.data_ptr() for w in used],
                         pack.data_ptr())
            return pack, {}   # and the problems checked with these weights, by key

        kept = self._kept(("pack", i, used[1].dtype, products), _kernel.get_isa(), weights,
                          make)
        if kept is None:
            return check(), None
        pack, problems = kept
        problem = None if key is None else problems.get(key)
        if problem is None:
            problem = made[0] if made else check()
            if key is not None:
                problems[key] = problem
        return problem, pack

    def _lowered(self, i, weights):
        """Layer and direction i's weights as bf16 copies, for autocast's calls
        that no gradient follows (_autocast), kept as a pack is (_kept), so
        that such a call does not cast every weight again."""
        return self._kept(("bf16", i), None, weights, lambda: tuple(
            None if w is None else w.to(torch.bfloat16) for w in weights))

    def _kept(self, key, isa, weights, make):
        """What make() makes of the module's `weights`, kept under `key` and
        reused while each weight is the same tensor, at the same address,
        with the same version counter (which every in-place change bumps: an
        optimiser's step, load_state_dict, copy_, under no_grad too), on the
        same `isa`: assigning .data changes the address, .to()/.double() the
        tensors. None for weights that are not the module's parameters (a
        parametrisation computes new ones at each call) and for inference
        tensors, which have no version counter: what is made of them could
        go stale unseen.

        Also None, made only at the next call with the same weights, when
        the weights before them served a single call: an optimiser's step
        after every call (online training, a layer's training loop) would
        make it anew at each call, and a call that packs per call packs only
        what it reads, into memory it reuses. (An LSTMCell at H = 1024,
        batch 1, with SGD after every call took 75 ms a step on Zen 4,
        19 ms packing per call: 84 MB allocated, faulted in and filled.)"""
        kept_all = self.__dict__.setdefault("_fusedrnn_packs", {})
        kept = kept_all.get(key)
        try:
            stamp = (isa, [None if w is None else (w.data_ptr(), w._version) for w in weights])
        except RuntimeError:   # an inference tensor
            return None
        if kept is not None and kept[0] == stamp and all(
                a is b for a, b in zip(kept[2], weights)):
            if kept[1] is None:   # these weights serve a second call
                kept[1] = make()
            kept[3] += 1
            return kept[1]
        params = self._parameters
        names = self._weight_names(key[1])
        if any(w is not None and (params.get(name) is not w or not w.is_contiguous())
               for name, w in zip(names, weights)):
            return None
        value = None if kept is not None and kept[3] == 1 else make()
        # The weights are kept with the key, so that their identities are
        # compared with living tensors; then the calls they served.
        kept_all[key] = [stamp, value, weights, 1]
        return value

    def _weight_names(self, i):
        """The names of layer and direction i's (w_ih, w_hh, b_ih, b_hh)."""
        return self._all_weights[i] if "_all_weights" in self.__dict__ else \
            ("weight_ih", "weight_hh", "bias_ih", "bias_hh")

    def _nonlinearity(self):
        # Read from the instance's own attributes: a module without one
        # (LSTM, GRU) would otherwise raise and catch an AttributeError,
        # whose message costs microseconds at every call.
        return self.__dict__.get("nonlinearity", "tanh")

    def __getstate__(self):
        # A copy or a pickle packs anew: its weights are other tensors.
        state = dict(super().__getstate__())
        state.pop("_fusedrnn_packs", None)
        return state


class _DropIn(_Packs):
    """forward for the subclasses of torch.nn.RNN, LSTM and GRU below: torch's
    checks and conventions, fusedrnn's operators per layer and direction.

    Invalid input is handed to torch's own forward, which raises its own
    exception for it before computing anything: the messages stay torch's."""

    _cell = None   # the subclass's cell

    # resets may be given by position too: torch.onnx.export(dynamo=False) calls
    # a model's forward with every parameter's default appended by position,
    # keyword-only ones included (a drop-in exported on its own would fail).
    def forward(self, input, hx=None, resets=None):
        if resets is not None and (self.proj_size > 0 or isinstance(input, PackedSequence)):
            raise ValueError("fusedrnn.torch: resets is not supported with "
                             + ("proj_size > 0" if self.proj_size > 0
                                else "a PackedSequence: give padded input, resets and lengths "
                                     "to the layer functions"))
        if self.proj_size > 0:
            return self._torch_forward(input, hx)
        if _torchscript_export():
            if resets is not None:
                raise RuntimeError(_ONNX_RESETS)
            return super().forward(input, hx)
        has_c = self._cell.has_c   # hx is the pair (h0, c0)
        if has_c and hx is not None and not (isinstance(hx, tuple) and len(hx) == 2):
            return super().forward(input, hx)
        states = None if hx is None else (hx if has_c else (hx,))
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, states)
        if input.dim() not in (2, 3) or (
                states is not None and any(h.dim() != input.dim() for h in states)):
            return super().forward(input, hx)
        batched = input.dim() == 3
        # An unbatched input is [T,D] and gets a batch of one where
        # batch_first says the batch is; the states [layers*dirs,H] get it
        # in the middle.
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
            states = None if states is None else tuple(h.unsqueeze(1) for h in states)
            # resets [T] gets the batch where x has it ([T,1], or [1,T] batch_first)
            resets = None if resets is None else torch.as_tensor(resets).unsqueeze(batch_dim)
        self._check_args(input, states, None)
        output, states = self._run(input, states, None, self.batch_first, resets)
        if not batched:
            output, states = output.squeeze(batch_dim), tuple(h.squeeze(1) for h in states)
        return output, self._result_states(states)

    def _result_states(self, states):
        return states if self._cell.has_c else states[0]

    def _torch_forward(self, input, hx):
        # fusedrnn's LSTM has no projection: torch computes it, and says so once.
        if not self.__dict__.get("_warned_proj_size"):
            self._warned_proj_size = True
            warnings.warn(f"fusedrnn.torch.LSTM: proj_size={self.proj_size} is computed by "
                          f"torch.nn.LSTM's own implementation, not fusedrnn's kernel",
                          stacklevel=3)
        return super().forward(input, hx)

    def _forward_packed(self, packed, states):
        data, batch_sizes, sorted_indices, unsorted_indices = packed
        self.check_input(data, batch_sizes)
        # Packed row i is step t[i] of sequence b[i] (b in the caller's
        # order, as hx and h_n are): scatter into a zero [T,B,D] buffer, run
        # with each sequence's length (steps past it are skipped, not
        # computed on padding), gather the valid rows of y back. Index
        # operations rather than torch's pad_packed_sequence, whose backward
        # took 5x as long on an L-sized batch (143 against 29 ms). The sizes
        # are read from shapes (the batch from sorted_indices), and
        # torch.export is told that t has a row per packed row, so that it
        # traces this without reading the data, as the ONNX export needs;
        # sequences packed sorted have their batch in batch_sizes[0] alone.
        T = len(batch_sizes)
        B = batch_sizes[0].item() if sorted_indices is None else len(sorted_indices)
        t = torch.repeat_interleave(batch_sizes)
        torch._check(t.shape[0] == data.shape[0], lambda: "fusedrnn.torch: the batch_sizes of "
                     "a PackedSequence must sum to its data's length")
        rank = torch.arange(len(data)) - (torch.cumsum(batch_sizes, 0) - batch_sizes)[t]
        b = rank if sorted_indices is None else sorted_indices[rank]
        padded = data.new_zeros(T, B, data.shape[1]).index_put((t, b), data)
        if states is not None:   # torch's checks of hx, against the padded input
            self._check_args(padded.transpose(0, 1) if self.batch_first else padded, states,
                             None)
        # The j-th longest sequence runs while more than j sequences do.
        lengths = (batch_sizes > torch.arange(B).unsqueeze(1)).sum(1)
        if unsorted_indices is not None:
            lengths = lengths[unsorted_indices]
        y, states = self._run(padded, states, lengths, False)
        return (PackedSequence(y[t, b], batch_sizes, sorted_indices, unsorted_indices),
                self._result_states(states))

    def _check_args(self, input, states, batch_sizes):
        if states is None:
            self.check_input(input, batch_sizes)
        else:
            self.check_forward_args(input, self._result_states(states), batch_sizes)

    def _run(self, x, states, lengths, batch_first, resets=None):
        """All layers and directions over x [T,B,D] ([B,T,D] with batch_first),
        each restarting where `resets` says; returns (output, the final
        states, each [layers*directions,B,H])."""
        if states is not None:
            x, *states = _autocast(self._cell, False, (x, *states))
        else:
            x, = _autocast(self._cell, False, (x,))
        _check_tensors(input=x, **({} if states is None else dict(zip(("hx", "cx"), states))))
        directions = 2 if self.bidirectional else 1
        nonlinearity = self._nonlinearity()
        finals = []
        for layer in range(self.num_layers):
            if layer and self.training and self.dropout:
                x = torch.nn.functional.dropout(x, self.dropout, training=True)
            outputs = []
            for direction in range(directions):
                i = layer * directions + direction   # torch's order of hx and all_weights
                h0, c0 = (None, None) if states is None else \
                    (states[0][i], states[1][i] if len(states) == 2 else None)
                y, h_n, c_n = _layer(self._cell, x, h0, c0, *self._weights(i), lengths,
                                     nonlinearity, direction == 1, batch_first, (self, i),
                                     resets)
                outputs.append(y)
                finals.append((h_n, c_n) if self._cell.has_c else (h_n,))
            x = torch.cat(outputs, -1) if directions == 2 else outputs[0]
        # One layer and direction: unsqueeze costs a third of stack.
        return x, tuple(s[0].unsqueeze(0) if len(s) == 1 else torch.stack(s)
                        for s in zip(*finals))

    def _weights(self, i):
        """Layer and direction i's (w_ih, w_hh, b_ih, b_hh), biases None without
        bias. Looked up in _parameters (Module.__getattr__ takes longer than
        the kernel's per-step time), else by getattr, as all_weights does,
        which sees a parametrised weight: it has left _parameters."""
        params = self._parameters
        names = self._all_weights[i]
        weights = [params[name] if name in params else getattr(self, name) for name in names]
        # torch's checks leave out the weights, which can be replaced or
        # reparametrised: named here, as the operator cannot name them.
        GH, D = self._cell.gates * self.hidden_size, self.input_size
        if i >= (2 if self.bidirectional else 1):
            D = self.hidden_size * (2 if self.bidirectional else 1)
        for name, w, shape in zip(names, weights, ((GH, D), (GH, self.hidden_size), (GH,), (GH,))):
            _check_shape(name, w, shape)
        return weights if self.bias else weights + [None, None]


class RNN(_DropIn, torch.nn.RNN):
    """`torch.nn.RNN` computed by fusedrnn's kernel.

    Same constructor, parameters (names, shapes, initialisation), state_dict,
    forward(input, hx=None) -> (output, h_n) and input checks: batched 3-D,
    unbatched 2-D and PackedSequence input, dropout between layers in
    training mode. CPU float32, float64 and bfloat16 (and torch.autocast). A PackedSequence runs
    through the kernel's `lengths`: steps past a sequence's end are skipped,
    not computed on padding.

    An extension of torch's signature: forward(input, hx=None,
    resets=None), resets a bool tensor shaped as input without its last
    dimension ([T,B], [B,T] with batch_first, [T] unbatched): where set, each
    layer and direction of that sequence restarts from hx before the step,
    as separate sequences would (episode starts in reinforcement learning),
    in the kernel, forward and backward.
    """

    _cell = _cells.RNN


class LSTM(_DropIn, torch.nn.LSTM):
    """`torch.nn.LSTM` computed by fusedrnn's kernel: as `RNN`, with
    forward(input, (h0, c0)=None) -> (output, (h_n, c_n)). With proj_size > 0
    torch's own implementation runs, with a warning once per module."""

    _cell = _cells.LSTM


class GRU(_DropIn, torch.nn.GRU):
    """`torch.nn.GRU` computed by fusedrnn's kernel: as `RNN`."""

    _cell = _cells.GRU


class _CellDropIn(_Packs):
    """forward for the subclasses of torch.nn.RNNCell, LSTMCell and GRUCell
    below: one fused kernel call per step. Input torch's own forward would
    refuse (dimensions, sizes) is handed to it, which raises its own
    exception: the messages stay torch's."""

    _cell = None   # the subclass's cell

    def forward(self, input, hx=None):
        has_c = self._cell.has_c   # hx is the pair (h, c)
        if _torchscript_export() or (
                has_c and hx is not None and not (isinstance(hx, tuple) and len(hx) == 2)):
            return super().forward(input, hx)
        states = (None, None) if hx is None else (tuple(hx) if has_c else (hx, None))
        batched = input.dim() == 2
        if input.dim() not in (1, 2) or input.shape[-1] != self.input_size or any(
                h is not None and (h.dim() != input.dim() or h.shape[-1] != self.hidden_size
                                   or h.shape[:-1] != input.shape[:-1]) for h in states):
            return super().forward(input, hx)
        if not batched:
            input = input.unsqueeze(0)
            states = tuple(None if h is None else h.unsqueeze(0) for h in states)
        input, *states = _autocast(self._cell, True, (input, *states))
        _check_tensors(input=input, hx=states[0], cx=states[1])
        params = self._parameters
        weights = [params[name] if name in params else getattr(self, name)
                   for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h, c = _step(self._cell, input, *states, *weights, self._nonlinearity(),
                     (self, 0))
        if not batched:
            h, c = h.squeeze(0), None if c is None else c.squeeze(0)
        return (h, c) if has_c else h


class RNNCell(_CellDropIn, torch.nn.RNNCell):
    """`torch.nn.RNNCell` computed by fusedrnn's kernel: the same constructor,
    parameters, state_dict and forward(input, hx=None) -> h, batched [B,D] or
    unbatched [D] input; each call is one kernel call (both products and the
    activation), differentiable. CPU float32, float64 and bfloat16 (and torch.autocast)."""

    _cell = _cells.RNN


class LSTMCell(_CellDropIn, torch.nn.LSTMCell):
    """`torch.nn.LSTMCell` computed by fusedrnn's kernel: as `RNNCell`, with
    forward(input, (h, c)=None) -> (h, c)."""

    _cell = _cells.LSTM


class GRUCell(_CellDropIn, torch.nn.GRUCell):
    """`torch.nn.GRUCell` computed by fusedrnn's kernel: as `RNNCell`."""

    _cell = _cells.GRU
