"""PyTorch front end: `RNN`, a drop-in for `torch.nn.RNN`, and `rnn_layer`,
the autograd op for one layer and direction that it is built from.

Tensors reach the kernel through `Tensor.numpy()` and its results come back
through `torch.from_numpy()`: both share memory, so the op copies no
contiguous CPU tensor on the way in or out (a non-contiguous one is copied
once, by the NumPy API). The kernel uses fusedrnn's thread count
(`fusedrnn.set_num_threads`, `FUSEDRNN_NUM_THREADS`), not torch's: it runs its
own pool, whatever torch's intra-op setting.

Importing this module imports torch; `import fusedrnn` alone does not.
"""

import torch
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import PackedSequence

import fusedrnn

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
    return _RNNLayer.apply(x, h0, w_ih, w_hh, bias, nonlinearity, lengths, reverse,
                           batch_first)


def _check_tensors(**tensors):
    """RuntimeError, as torch's own CPU kernels raise for a device or dtype
    they cannot handle, before .numpy() would fail less clearly."""
    dtype = tensors["x"].dtype
    for name, t in tensors.items():
        if t is None:
            continue
        if t.device.type != "cpu":
            raise RuntimeError(f"fusedrnn.torch: {name} is on device {t.device}, but fusedrnn "
                               f"runs on the CPU only; move it with .cpu()")
        if t.dtype not in _DTYPES:
            raise RuntimeError(f"fusedrnn.torch: {name} has dtype {t.dtype}, but fusedrnn "
                               f"supports torch.float32 and torch.float64 only")
        if t.dtype != dtype:
            raise RuntimeError(f"fusedrnn.torch: {name} has dtype {t.dtype}, expected "
                               f"{dtype} (the dtype of x)")


def _array(t):
    # detach(): numpy() refuses tensors that require grad. It shares memory
    # either way.
    return None if t is None else t.detach().numpy()


class _RNNLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, h0, w_ih, w_hh, bias, nonlinearity, lengths, reverse, batch_first):
        ctx.options = dict(nonlinearity=nonlinearity, lengths=lengths, reverse=reverse,
                           batch_first=batch_first)
        y, h_n = fusedrnn.rnn_forward(*map(_array, (x, h0, w_ih, w_hh, bias)), **ctx.options)
        y, h_n = torch.from_numpy(y), torch.from_numpy(h_n)
        # The backward takes act' from y: the only result of the forward it needs.
        ctx.save_for_backward(x, h0, w_ih, w_hh, y)
        # An unused output's gradient stays None, which the kernel reads as
        # zero without a buffer of zeros being made and read.
        ctx.set_materialize_grads(False)
        return y, h_n

    @staticmethod
    @once_differentiable
    def backward(ctx, dy, dh_n):
        x, h0, w_ih, w_hh, y = ctx.saved_tensors
        grads = fusedrnn.rnn_backward(*map(_array, (x, h0, w_ih, w_hh, y, dy, dh_n)),
                                      **ctx.options)
        # dx, dh0, dw_ih, dw_hh, dbias line up with the first five inputs;
        # the options get None.
        return (*(torch.from_numpy(g) if needed else None
                  for g, needed in zip(grads, ctx.needs_input_grad)), None, None, None, None)


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
        y, h_n = self._run(padded, hx, torch.bincount(b, minlength=B), False)
        return PackedSequence(y[t, b], batch_sizes, sorted_indices, unsorted_indices), h_n

    def _check_args(self, input, hx, batch_sizes):
        self.check_input(input, batch_sizes)
        if hx is not None:
            self.check_hidden_size(hx, self.get_expected_hidden_size(input, batch_sizes))

    def _run(self, x, hx, lengths, batch_first):
        """All layers and directions over x [T,B,D] ([B,T,D] with batch_first);
        returns (output, h_n [layers*directions,B,H])."""
        directions = 2 if self.bidirectional else 1
        h_n = []
        for layer in range(self.num_layers):
            if layer and self.training and self.dropout:
                x = torch.nn.functional.dropout(x, self.dropout, training=True)
            outputs = []
            for direction in range(directions):
                i = layer * directions + direction  # torch's order of hx and all_weights
                w_ih, w_hh, *biases = self.all_weights[i]
                y, h = rnn_layer(x, None if hx is None else hx[i], w_ih, w_hh,
                                 biases[0] + biases[1] if biases else None,
                                 nonlinearity=self.nonlinearity, lengths=lengths,
                                 reverse=direction == 1, batch_first=batch_first)
                outputs.append(y)
                h_n.append(h)
            x = torch.cat(outputs, -1) if directions == 2 else outputs[0]
        return x, torch.stack(h_n)
