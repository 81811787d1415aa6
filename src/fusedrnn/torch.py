"""PyTorch front end: `RNN`, a drop-in for `torch.nn.RNN`, and `rnn_layer`,
the autograd op for one layer and direction that it is built from.

Tensors reach the kernel through `Tensor.numpy()` and its results come back
through `torch.from_numpy()`: both share memory, so no contiguous CPU tensor
is copied on the way in or out (a non-contiguous one is copied once). The
kernel uses fusedrnn's thread count (`fusedrnn.set_num_threads`,
`FUSEDRNN_NUM_THREADS`), not torch's: it runs its own pool, whatever torch's
intra-op setting.

Importing this module imports torch; `import fusedrnn` alone does not.
"""

import torch
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence

import fusedrnn
from fusedrnn import _engine
from fusedrnn._checks import activation

__all__ = ["RNN", "rnn_layer"]

_DTYPES = (torch.float32, torch.float64)


def rnn_layer(x, h0, w_ih, w_hh, bias=None, *, nonlinearity="tanh", lengths=None,
              reverse=False, batch_first=False):
    """One RNN layer in one direction, h_t = act(W_ih x_t + W_hh h_{t-1} + b),
    differentiable with respect to every tensor argument.

    The arguments and results are those of `fusedrnn.rnn_forward` as tensors:
    x [T,B,D] (or [B,T,D] with batch_first), h0 [B,H] or None, w_ih [H,D],
    w_hh [H,H], bias [H] or None, lengths [B] integers or None. Returns
    (y, h_n). CPU float32 or float64 tensors, all of one dtype.
    """
    _check_tensors(x=x, h0=h0, w_ih=w_ih, w_hh=w_hh, bias=bias)
    call = _Checked(nonlinearity=nonlinearity, lengths=lengths, reverse=reverse,
                    batch_first=batch_first)
    return _apply(call, x, h0, w_ih, w_hh, *([] if bias is None else [bias]))


def _check_tensors(**tensors):
    """RuntimeError, as torch's own CPU kernels raise for a device or dtype
    they cannot handle, before .numpy() would fail less clearly. All must
    have the first tensor's dtype."""
    first = next(iter(tensors))
    dtype = tensors[first].dtype
    for name, t in tensors.items():
        if t is None:
            continue
        if not t.is_cpu:
            raise RuntimeError(f"fusedrnn.torch: {name} is on device {t.device}, but fusedrnn "
                               f"runs on the CPU only; move it with .cpu()")
        if t.dtype not in _DTYPES:
            raise RuntimeError(f"fusedrnn.torch: {name} has dtype {t.dtype}, but fusedrnn "
                               f"supports torch.float32 and torch.float64 only")
        if t.dtype != dtype:
            raise RuntimeError(f"fusedrnn.torch: {name} has dtype {t.dtype}, expected "
                               f"{dtype} (the dtype of {first})")


def _arrays(*tensors):
    # numpy() refuses a tensor that requires grad unless forced; forced, it
    # detaches (sharing memory) and, for the CPU float tensors that
    # _check_tensors lets through, copies nothing.
    return [None if t is None else t.numpy(force=True) for t in tensors]


def _apply(call, x, h0, w_ih, w_hh, *biases):
    """(y, h_n) from call.forward, through autograd when a gradient is
    wanted. The kernel's bias is the sum of `biases` (none, rnn_layer's
    one, or torch's b_ih and b_hh)."""
    tensors = (x, h0, w_ih, w_hh, *biases)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _RNNLayer.apply(call, *tensors)
    # Nothing to differentiate (inference, torch.no_grad): the graph node
    # that autograd.Function.apply builds would cost a third of the
    # kernel's time at batch 1.
    y, h_n = call.forward(*_arrays(*tensors))
    return torch.from_numpy(y), torch.from_numpy(h_n)


class _RNNLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, call, x, h0, w_ih, w_hh, *biases):
        y, h_n = call.forward(*_arrays(x, h0, w_ih, w_hh, *biases))
        y, h_n = torch.from_numpy(y), torch.from_numpy(h_n)
        ctx.call = call
        # The backward takes act' from y: the only result of the forward it needs.
        ctx.save_for_backward(x, h0, w_ih, w_hh, y)
        # An unused output's gradient stays None, which the kernel reads as
        # zero without a buffer of zeros being made and read.
        ctx.set_materialize_grads(False)
        return y, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_n):
        dx, dh0, dw_ih, dw_hh, dbias = ctx.call.backward(*_arrays(*ctx.saved_tensors, dy, dh_n))
        # Each bias gets dbias in its own memory: autograd may keep a
        # gradient it is handed as the leaf's .grad, and accumulating into
        # one bias's .grad must not change the other's.
        dbiases = [dbias] + [dbias.copy() for _ in ctx.needs_input_grad[6:]]
        # call gets None; the rest line up with the tensor inputs.
        return None, *(torch.from_numpy(g) if needed else None
                       for g, needed in zip((dx, dh0, dw_ih, dw_hh, *dbiases),
                                            ctx.needs_input_grad[1:]))


class _Checked:
    """rnn_layer's kernel calls: fusedrnn's NumPy API, which checks every
    argument and names the one that is wrong."""

    def __init__(self, **options):
        self.options = options

    def forward(self, x, h0, w_ih, w_hh, bias=None):
        return fusedrnn.rnn_forward(x, h0, w_ih, w_hh, bias, **self.options)

    def backward(self, x, h0, w_ih, w_hh, y, dy, dh_n):
        return fusedrnn.rnn_backward(x, h0, w_ih, w_hh, y, dy, dh_n, **self.options)


class _Trusted:
    """RNN's kernel calls, straight to the NumPy API's unchecked tail: its
    checks would repeat what is already known. torch.nn.RNN's check_input
    and check_hidden_size have checked the input's size and dimensions, its
    dtype against the weights' and hx's shape; RNN._run has checked every
    tensor's device and dtype, and the weights' shapes; lengths come from
    a PackedSequence, int64 and at most T by construction; autograd hands
    the backward dy and dh_n of y's and h_n's shape and dtype. What is left
    is the kernel's need for C-contiguous, aligned buffers: a tensor that is
    not (non-contiguous; or misaligned, which torch.frombuffer with an odd
    byte offset can make) is copied here by _engine.kernel_buffer, which
    returns any other as it is."""

    def __init__(self, nonlinearity, lengths, reverse, batch_first):
        self.act = activation(nonlinearity)
        self.lengths, self.reverse, self.batch_first = lengths, reverse, batch_first

    def forward(self, x, h0, w_ih, w_hh, *biases):
        x, h0, w_ih, w_hh, *biases = map(_engine.kernel_buffer, (x, h0, w_ih, w_hh, *biases))
        b_ih, b_hh = biases or (None, None)
        T, B, H = self._sizes(x, w_hh)
        y, h_n, _, _ = _engine.empty(_engine.output_shapes(_engine.RNN, T, B, H, self.batch_first,
                                                           False), x.dtype)
        _engine.forward(_engine.RNN, self.act, (x, h0, None, w_ih, w_hh, b_ih, b_hh, self.lengths),
                        (y, h_n, None, None), self.reverse, self.batch_first)
        return y, h_n

    def backward(self, *arrays):
        x, h0, w_ih, w_hh, y, dy, dh_n = map(_engine.kernel_buffer, arrays)
        T, B, H = self._sizes(x, w_hh)
        grads = _engine.empty(_engine.grad_shapes(_engine.RNN, T, B, w_ih.shape[1], H,
                                                  self.batch_first), x.dtype)
        _engine.backward(_engine.RNN, self.act, (x, h0, None, w_ih, w_hh, None, None, self.lengths),
                         (y, None, dy, dh_n, None), grads, self.reverse, self.batch_first)
        dx, dh0, _, dw_ih, dw_hh, dbias, _ = grads
        return dx, dh0, dw_ih, dw_hh, dbias

    def _sizes(self, x, w_hh):
        T, B = (x.shape[1], x.shape[0]) if self.batch_first else x.shape[:2]
        return T, B, w_hh.shape[1]


class RNN(torch.nn.RNN):
    """`torch.nn.RNN` computed by fusedrnn's kernel.

    Same constructor, parameters (names, shapes, initialisation), state_dict,
    forward(input, hx=None) -> (output, h_n) and input checks: batched 3-D,
    unbatched 2-D and PackedSequence input, dropout between layers in
    training mode. CPU float32 and float64 only.

    torch's two biases reach the kernel as their sum, so both receive the
    kernel's bias gradient, as they do in torch. A PackedSequence runs
    through the kernel's `lengths`: steps past a sequence's end are skipped,
    not computed on padding.
    """

    def forward(self, input, hx=None):
        if isinstance(input, PackedSequence):
            return self._forward_packed(input, hx)
        # torch's messages and exception types for the number of dimensions.
        if input.dim() not in (2, 3):
            raise ValueError(f"RNN: Expected input to be 2D or 3D, got {input.dim()}D tensor instead")
        batched = input.dim() == 3
        if hx is not None and hx.dim() != input.dim():
            kind = "batched 3-D" if batched else "unbatched 2-D"
            raise RuntimeError(f"For {kind} input, hx should also be {input.dim()}-D "
                               f"but got {hx.dim()}-D tensor")
        # An unbatched input is [T,D] and gets a batch of one where
        # batch_first says the batch is; hx [layers*directions,H] gets it in
        # the middle.
        batch_dim = 0 if self.batch_first else 1
        if not batched:
            input = input.unsqueeze(batch_dim)
            hx = None if hx is None else hx.unsqueeze(1)
        self._check_args(input, hx, None)
        output, h_n = self._run(input, hx, None, self.batch_first)
        return (output, h_n) if batched else (output.squeeze(batch_dim), h_n.squeeze(1))

    def _forward_packed(self, packed, hx):
        data, batch_sizes, sorted_indices, unsorted_indices = packed
        self._check_args(data, hx, batch_sizes)
        # Packed row i is step t[i] of sequence b[i] (b in the caller's
        # order, as hx and h_n are): scatter into a zero [T,B,D] buffer, run
        # with each sequence's length, gather the valid rows of y back.
        t = torch.repeat_interleave(torch.arange(len(batch_sizes)), batch_sizes)
        rank = torch.arange(len(t)) - (torch.cumsum(batch_sizes, 0) - batch_sizes)[t]
        b = rank if sorted_indices is None else sorted_indices[rank]
        T, B = len(batch_sizes), int(batch_sizes[0])
        padded = data.new_zeros(T, B, data.shape[1]).index_put((t, b), data)
        lengths = torch.bincount(b, minlength=B).numpy()
        y, h_n = self._run(padded, hx, lengths, False)
        return PackedSequence(y[t, b], batch_sizes, sorted_indices, unsorted_indices), h_n

    def _check_args(self, input, hx, batch_sizes):
        self.check_input(input, batch_sizes)
        if hx is not None:
            self.check_hidden_size(hx, self.get_expected_hidden_size(input, batch_sizes))

    def _run(self, x, hx, lengths, batch_first):
        """All layers and directions over x [T,B,D] ([B,T,D] with batch_first);
        returns (output, h_n [layers*directions,B,H])."""
        _check_tensors(input=x, hx=hx)
        directions = 2 if self.bidirectional else 1
        calls = [_Trusted(self.nonlinearity, lengths, direction == 1, batch_first)
                 for direction in range(directions)]
        h_n = []
        for layer in range(self.num_layers):
            if layer and self.training and self.dropout:
                x = torch.nn.functional.dropout(x, self.dropout, training=True)
            outputs = []
            for direction, call in enumerate(calls):
                i = layer * directions + direction  # torch's order of hx and all_weights
                w_ih, w_hh, *biases = self._weights(i, x)
                y, h = _apply(call, x, None if hx is None else hx[i], w_ih, w_hh, *biases)
                outputs.append(y)
                h_n.append(h)
            x = torch.cat(outputs, -1) if directions == 2 else outputs[0]
        return x, torch.stack(h_n)

    def _weights(self, i, x):
        """Layer and direction i's [w_ih, w_hh, b_ih, b_hh] (no biases
        without bias), checked for the kernel, which trusts their shapes:
        torch.nn.RNN's checks leave out the weights, which can be replaced
        or reparametrised. Looked up in _parameters (Module.__getattr__
        takes longer than the kernel's per-step time), else by getattr, as
        all_weights does, which sees a parametrised weight: it has left
        _parameters."""
        params = self._parameters
        weights = {name: params[name] if name in params else getattr(self, name)
                   for name in self._all_weights[i]}
        _check_tensors(input=x, **weights)
        H, D = self.hidden_size, x.shape[-1]
        for (name, w), shape in zip(weights.items(), ((H, D), (H, H), (H,), (H,))):
            if w.shape != shape:
                raise RuntimeError(f"fusedrnn.torch: {name} has shape {tuple(w.shape)}, "
                                   f"expected {shape}")
        return weights.values()
