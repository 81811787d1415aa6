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

import os
import warnings

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence

from . import _cells, _engine, _kernel
from ._checks import ACTIVATIONS
from ._engine import GradInputs, Inputs

__all__ = ["GRU", "LSTM", "RNN", "gru_layer", "lstm_layer", "rnn_layer"]

# The dtypes fusedrnn has, as NumPy's.
_NUMPY = {torch.float32: np.dtype(np.float32), torch.float64: np.dtype(np.float64)}


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
    """The thread count of an operator's call: fusedrnn's if chosen, else torch's."""
    return None if _engine.num_threads_chosen() else torch.get_num_threads()


# --- checks -----------------------------------------------------------------
# The operators check what they are given, with RuntimeError as torch's own
# operators raise: they can be called directly, and the kernel trusts every
# size it is handed. Shape checks compare sizes only, so they hold for the
# symbolic sizes of torch.compile too.

def _check_tensors(**tensors):
    """Every tensor on the CPU, float32 or float64, all of the first's dtype."""
    first = next(iter(tensors))
    dtype = tensors[first].dtype
    for name, t in tensors.items():
        if t is None:
            continue
        if not t.is_cpu:
            raise RuntimeError(f"fusedrnn.torch: {name} is on device {t.device}, but fusedrnn "
                               f"runs on the CPU only; move it with .cpu()")
        if t.dtype not in _NUMPY:
            raise RuntimeError(f"fusedrnn.torch: {name} has dtype {t.dtype}, but fusedrnn "
                               f"supports torch.float32 and torch.float64 only")
        if t.dtype != dtype:
            raise RuntimeError(f"fusedrnn.torch: {name} has dtype {t.dtype}, expected "
                               f"{dtype} (the dtype of {first})")


def _check_shape(name, t, shape):
    if t is not None and tuple(t.shape) != tuple(shape):
        raise RuntimeError(f"fusedrnn.torch: {name} has shape {tuple(t.shape)}, expected "
                           f"{tuple(shape)}")


def _check_layer(cell, inputs, nonlinearity, reverse, batch_first, training, threads=None):
    """The Problem of one layer's call, after checking every argument
    (`inputs`: Inputs of tensors)."""
    x, w_hh, c0, lengths = inputs.x, inputs.w_hh, inputs.c0, inputs.lengths
    _check_tensors(x=x, h0=inputs.h0, c0=c0, w_ih=inputs.w_ih, w_hh=w_hh, b_ih=inputs.b_ih,
                   b_hh=inputs.b_hh)
    if x.dim() != 3:
        raise RuntimeError(f"fusedrnn.torch: x must be 3-D, (T, B, D) or (B, T, D) with "
                           f"batch_first, got shape {tuple(x.shape)}")
    if w_hh.dim() != 2:
        raise RuntimeError(f"fusedrnn.torch: w_hh must be 2-D, got shape {tuple(w_hh.shape)}")
    T, B = (x.shape[1], x.shape[0]) if batch_first else (x.shape[0], x.shape[1])
    D, H = x.shape[2], w_hh.shape[1]
    GH = cell.gates * H
    for name, shape in (("w_hh", (GH, H)), ("w_ih", (GH, D)), ("h0", (B, H)), ("c0", (B, H)),
                        ("b_ih", (GH,)), ("b_hh", (GH,)), ("lengths", (B,))):
        _check_shape(name, getattr(inputs, name), shape)
    if c0 is not None and not cell.has_c:
        raise RuntimeError(f"fusedrnn.torch: c0 must be None: {cell.a_name} has no cell state")
    if lengths is not None and (lengths.dtype != torch.int64 or not lengths.is_cpu):
        raise RuntimeError(f"fusedrnn.torch: lengths must be an int64 CPU tensor, got "
                           f"{lengths.dtype} on {lengths.device}")
    if nonlinearity not in ACTIVATIONS or (not cell.has_act and nonlinearity != "tanh"):
        takes = f"one of {', '.join(map(repr, ACTIVATIONS))}" if cell.has_act else "'tanh'"
        raise RuntimeError(f"fusedrnn.torch: nonlinearity {nonlinearity!r}: the {cell.name} "
                           f"takes {takes}")
    return _engine.Problem(cell, _NUMPY[x.dtype], T, B, D, H, ACTIVATIONS[nonlinearity], reverse,
                           batch_first, threads=threads, training=training)


def _check_backward(cell, inputs, d, nonlinearity, reverse, batch_first, threads=None):
    """The Problem of one layer's backward, after checking every argument
    (`d`: GradInputs of tensors) and those of its forward."""
    problem = _check_layer(cell, inputs, nonlinearity, reverse, batch_first, True, threads)
    B, H = problem.B, problem.H
    _check_tensors(x=inputs.x, y=d.y, reserve=d.reserve, dy=d.dy, dh_n=d.dh_n, dc_n=d.dc_n)
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
        if t is not None and not (t.is_contiguous() and t.data_ptr() % t.element_size() == 0):
            t = t.clone(memory_format=torch.contiguous_format)
            keep.append(t)
        addresses.append(None if t is None else t.data_ptr())
    return tensors._make(addresses)


def _empty(like, shapes):
    """Tensors of `shapes` (Outputs, Grads) in like's dtype, as the same
    group; a 0-element one for a None, since an operator returns a tensor
    for every result it declares."""
    return shapes._make([like.new_empty((0,) if s is None else s) for s in shapes])


def _result_addresses(results, shapes):
    """Where the kernel writes each result, as the group of `shapes`: None
    for the placeholders _empty made for a None shape."""
    return shapes._make([None if s is None else t.data_ptr() for t, s in zip(results, shapes)])


# --- the operators ----------------------------------------------------------
# All three have the same signature, c0 for the LSTM only and nonlinearity
# for the RNN only, so that one implementation, one fake and one autograd
# formula serve them. The forward returns (y, h_n, c_n, reserve): c_n is
# empty but for the LSTM, the reserve (what the backward reads) empty but
# for a gated cell's training call.

_FORWARD_SCHEMA = (
    "(Tensor x, Tensor? h0, Tensor? c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
    "Tensor? lengths, str nonlinearity, bool reverse, bool batch_first, bool training) "
    "-> (Tensor y, Tensor h_n, Tensor c_n, Tensor reserve)")
_BACKWARD_SCHEMA = (
    "(Tensor x, Tensor? h0, Tensor? c0, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, "
    "Tensor? lengths, Tensor y, Tensor reserve, Tensor? dy, Tensor? dh_n, Tensor? dc_n, "
    "str nonlinearity, bool reverse, bool batch_first) "
    "-> (Tensor dx, Tensor dh0, Tensor dc0, Tensor dw_ih, Tensor dw_hh, Tensor db_ih, "
    "Tensor db_hh)")


def _forward_fake(cell):
    def fake(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, nonlinearity, reverse, batch_first,
             training):
        problem = _check_layer(cell, Inputs(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths),
                               nonlinearity, reverse, batch_first, training)
        return tuple(_empty(x, problem.output_shapes()))
    return fake


def _forward_impl(cell):
    def forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, nonlinearity, reverse, batch_first,
                training):
        inputs = Inputs(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths)
        problem = _check_layer(cell, inputs, nonlinearity, reverse, batch_first, training,
                               _threads())
        shapes = problem.output_shapes()
        outputs = _empty(x, shapes)
        if lengths is not None:
            # The kernel writes no reserve row past a sequence's length:
            # zeros there, so that the result is a function of the inputs.
            outputs.reserve.zero_()
        keep = []
        _engine.forward(problem, _addresses(inputs, keep), _result_addresses(outputs, shapes))
        return tuple(outputs)
    return forward


def _backward_fake(cell):
    def fake(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, y, reserve, dy, dh_n, dc_n,
             nonlinearity, reverse, batch_first):
        problem = _check_backward(cell, Inputs(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths),
                                  GradInputs(y, reserve, dy, dh_n, dc_n), nonlinearity, reverse,
                                  batch_first)
        return tuple(_empty(x, problem.grad_shapes()))
    return fake


def _backward_impl(cell):
    def backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, y, reserve, dy, dh_n, dc_n,
                 nonlinearity, reverse, batch_first):
        inputs = Inputs(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths)
        grad_inputs = GradInputs(y, reserve, dy, dh_n, dc_n)
        problem = _check_backward(cell, inputs, grad_inputs, nonlinearity, reverse, batch_first,
                                  _threads())
        if not cell.reserve_rows:
            # A 0-element placeholder for the reserve a cell keeps none of:
            # the kernel is not handed it.
            grad_inputs = GradInputs(y, None, dy, dh_n, dc_n)
        shapes = problem.grad_shapes()
        grads = _empty(x, shapes)
        keep = []
        _engine.backward(problem, _addresses(inputs, keep), _addresses(grad_inputs, keep),
                         _result_addresses(grads, shapes))
        return tuple(grads)
    return backward


def _autograd(forward_op, backward_op, cell):
    """The Autograd kernel of forward_op: an autograd.Function around the
    call below autograd, whose backward calls backward_op.

    Registered directly rather than through torch.library.register_autograd,
    which would do the same at a cost of about 45 us per call for an
    operator of 12 arguments (torch 2.13 rebuilds the schema's argument list
    for every argument it fills in): more than the kernel's time at batch 1."""

    class Layer(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, nonlinearity, reverse,
                    batch_first, training):
            with torch._C._AutoDispatchBelowAutograd():
                y, h_n, c_n, reserve = forward_op(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths,
                                                  nonlinearity, reverse, batch_first, training)
            # The backward reads y (the RNN's act' comes from it) and the reserve.
            ctx.save_for_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, y, reserve)
            ctx.options = (nonlinearity, reverse, batch_first)
            ctx.mark_non_differentiable(reserve)
            # An unused result's gradient stays None, which the kernel reads
            # as zero without a buffer of zeros being made and read.
            ctx.set_materialize_grads(False)
            return y, h_n, c_n, reserve

        @staticmethod
        def backward(ctx, dy, dh_n, dc_n, _):
            grads = backward_op(*ctx.saved_tensors, dy, dh_n,
                                dc_n if cell.has_c else None, *ctx.options)
            # One per input of the forward: the tensors', then None for
            # lengths and the four options.
            return (*(g if needed else None for g, needed in zip(grads, ctx.needs_input_grad)),
                    None, None, None, None, None)

    def kernel(*args):
        # Nothing to differentiate (torch.no_grad, or no input that wants a
        # gradient): the call below autograd, without a graph node.
        if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad
                                           for a in args[:7]):
            return Layer.apply(*args)
        with torch._C._AutoDispatchBelowAutograd():
            return forward_op(*args)

    return kernel


# The operators are defined for every device (CompositeExplicitAutograd),
# so that a tensor elsewhere than on the CPU gets _check_tensors's message.
_LIBRARY = torch.library.Library("fusedrnn", "DEF")


def _register(name, schema, impl, fake):
    _LIBRARY.define(name + schema)
    _LIBRARY.impl(name, impl, "CompositeExplicitAutograd")
    torch.library.register_fake(f"fusedrnn::{name}", fake, lib=_LIBRARY)
    return getattr(torch.ops.fusedrnn, name).default


def _define(cell):
    """The operator fusedrnn::{cell}_layer and its backward, for one cell."""
    name = f"{cell.key}_layer"
    backward_op = _register(f"{name}_backward", _BACKWARD_SCHEMA, _backward_impl(cell),
                            _backward_fake(cell))
    forward_op = _register(name, _FORWARD_SCHEMA, _forward_impl(cell), _forward_fake(cell))
    _LIBRARY.impl(name, _autograd(forward_op, backward_op, cell), "Autograd")
    return forward_op


# The cells of torch.nn's RNN, LSTM and GRU (torch's GRU has no reset-first form).
_OPS = {cell.key: _define(cell) for cell in (_cells.RNN, _cells.LSTM, _cells.GRU)}


def _layer(cell, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, nonlinearity, reverse,
           batch_first):
    """(y, h_n, c_n) of one operator call; a gated cell keeps a reserve only
    when autograd will want the backward."""
    if lengths is not None:
        lengths = torch.as_tensor(lengths)
        if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
            raise RuntimeError(f"fusedrnn.torch: lengths must hold integers, got {lengths.dtype}")
        lengths = lengths.to(torch.int64)
    training = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh))
    y, h_n, c_n, _ = _OPS[cell.key](x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths,
                                    nonlinearity, reverse, batch_first, training)
    return y, h_n, c_n


def rnn_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, nonlinearity="tanh", lengths=None,
              reverse=False, batch_first=False):
    """One RNN layer in one direction, h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh),
    differentiable with respect to every tensor argument.

    The arguments are those of `fusedrnn.rnn_forward` as tensors, with
    torch's two biases (either may be None): x [T,B,D] (or [B,T,D] with
    batch_first), h0 [B,H] or None, w_ih [H,D], w_hh [H,H], b_ih and b_hh
    [H], lengths [B] int64 or None. Returns (y, h_n). CPU float32 or float64
    tensors, all of one dtype.
    """
    y, h_n, _ = _layer(_cells.RNN, x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths, nonlinearity,
                       reverse, batch_first)
    return y, h_n


def lstm_layer(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, *, lengths=None, reverse=False,
               batch_first=False):
    """One LSTM layer in one direction, torch.nn.LSTM's maths (gates i, f, g, o):
    as `fusedrnn.lstm_forward` with tensors, w_ih [4H,D], w_hh [4H,H], b_ih
    and b_hh [4H]. Returns (y, h_n, c_n)."""
    return _layer(_cells.LSTM, x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, "tanh", reverse,
                  batch_first)


def gru_layer(x, h0, w_ih, w_hh, b_ih=None, b_hh=None, *, lengths=None, reverse=False,
              batch_first=False):
    """One GRU layer in one direction, torch.nn.GRU's maths (gates r, z, n; b_hn
    inside the reset product): as `fusedrnn.gru_forward` with tensors,
    w_ih [3H,D], w_hh [3H,H], b_ih and b_hh [3H]. Returns (y, h_n)."""
    y, h_n, _ = _layer(_cells.GRU, x, h0, None, w_ih, w_hh, b_ih, b_hh, lengths, "tanh",
                       reverse, batch_first)
    return y, h_n


# --- the modules ------------------------------------------------------------

class _DropIn:
    """forward for the subclasses of torch.nn.RNN, LSTM and GRU below: torch's
    checks and conventions, fusedrnn's operators per layer and direction.

    Invalid input is handed to torch's own forward, which raises its own
    exception for it before computing anything: the messages stay torch's."""

    _cell = None   # the subclass's cell

    def forward(self, input, hx=None):
        if getattr(self, "proj_size", 0) > 0:
            return self._torch_forward(input, hx)
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
        self._check_args(input, states, None)
        output, states = self._run(input, states, None, self.batch_first)
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
        self._check_args(data, states, batch_sizes)
        # Packed row i is step t[i] of sequence b[i] (b in the caller's
        # order, as hx and h_n are): scatter into a zero [T,B,D] buffer, run
        # with each sequence's length (steps past it are skipped, not
        # computed on padding), gather the valid rows of y back. Index
        # operations rather than torch's pad_packed_sequence, whose backward
        # took 5x as long on an L-sized batch (143 against 29 ms).
        t = torch.repeat_interleave(torch.arange(len(batch_sizes)), batch_sizes)
        rank = torch.arange(len(t)) - (torch.cumsum(batch_sizes, 0) - batch_sizes)[t]
        b = rank if sorted_indices is None else sorted_indices[rank]
        T, B = len(batch_sizes), int(batch_sizes[0])
        padded = data.new_zeros(T, B, data.shape[1]).index_put((t, b), data)
        lengths = torch.bincount(b, minlength=B)
        y, states = self._run(padded, states, lengths, False)
        return (PackedSequence(y[t, b], batch_sizes, sorted_indices, unsorted_indices),
                self._result_states(states))

    def _check_args(self, input, states, batch_sizes):
        if states is None:
            self.check_input(input, batch_sizes)
        else:
            self.check_forward_args(input, self._result_states(states), batch_sizes)

    def _run(self, x, states, lengths, batch_first):
        """All layers and directions over x [T,B,D] ([B,T,D] with batch_first);
        returns (output, the final states, each [layers*directions,B,H])."""
        _check_tensors(input=x, **({} if states is None else dict(zip(("hx", "cx"), states))))
        directions = 2 if self.bidirectional else 1
        nonlinearity = getattr(self, "nonlinearity", "tanh")
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
                                     nonlinearity, direction == 1, batch_first)
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
    training mode. CPU float32 and float64 only. A PackedSequence runs
    through the kernel's `lengths`: steps past a sequence's end are skipped,
    not computed on padding.
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
