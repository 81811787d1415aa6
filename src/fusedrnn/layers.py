"""`RNN`: a stacked, optionally bidirectional RNN layer over NumPy arrays, with
torch.nn.RNN's parameter names, shapes, initialisation and semantics.

Each (layer, direction) is one rnn_forward / rnn_backward call: every time
loop runs in C, and Python only chains the calls, concatenating the two
directions' outputs (forward | reverse) as the next layer's input.
"""

import numpy as np

from ._api import rnn_backward, rnn_forward
from ._checks import activation, as_array, flag, float_dtype, positive_int


def _array(name, a, shape, dtype):
    """`a` as an array of exactly `dtype` and `shape`; None stays None.

    No silent casting: a float64 array handed to a float32 layer is a
    mistake worth hearing about (as in torch), not a cost to hide.
    """
    if a is None:
        return None
    a = np.asarray(a)
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the layer's dtype), got {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
    return a


class _Parameters:
    """state_dict / load_state_dict over a ``params`` dict (name -> array)."""

    def state_dict(self):
        """A copy of every parameter, keyed as ``params``."""
        return {name: p.copy() for name, p in self.params.items()}

    def load_state_dict(self, state_dict):
        """Copy parameters in from a dict with exactly the keys and shapes of
        state_dict(), for example a torch state dict converted to NumPy.
        Values are rounded to the model's dtype; the arrays are updated in
        place, so an optimiser built on ``params`` keeps working."""
        missing = [k for k in self.params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in self.params]
        if missing or unexpected:
            raise ValueError(f"state_dict: missing keys {missing}, unexpected keys {unexpected}")
        values = {name: as_array(name, value) for name, value in state_dict.items()}
        for name, p in self.params.items():  # check all before changing any
            if values[name].dtype.kind not in "fiu":
                raise TypeError(f"{name}: expected a real-valued array, got dtype "
                                f"{values[name].dtype}")
            if values[name].shape != p.shape:
                raise ValueError(f"{name}: expected shape {p.shape}, got {values[name].shape}")
        for name, p in self.params.items():
            np.copyto(p, values[name], casting="unsafe")


class RNN(_Parameters):
    """A multi-layer Elman RNN, h_t = act(W_ih x_t + W_hh h_{t-1} + b_ih + b_hh),
    with torch.nn.RNN's constructor, parameters and forward semantics.

    Parameters live in ``self.params`` (name -> array, updated in place by the
    optimisers); ``backward`` fills ``self.grads`` with the same keys. For layer
    k the names are ``weight_ih_l{k}`` [H, D_k], ``weight_hh_l{k}`` [H, H],
    ``bias_ih_l{k}`` and ``bias_hh_l{k}`` [H], and the same with the suffix
    ``_reverse`` for the reverse direction; D_0 = input_size, D_k = H * dirs
    after. All start uniform in (-1/sqrt(H), 1/sqrt(H)), drawn from
    ``np.random.default_rng(seed)``.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, bidirectional=False, dtype=np.float32, seed=None):
        self.input_size = positive_int("input_size", input_size)
        self.hidden_size = positive_int("hidden_size", hidden_size)
        self.num_layers = positive_int("num_layers", num_layers)
        activation(nonlinearity)  # raises ValueError for an unknown name
        self.nonlinearity = nonlinearity
        self.bias = flag("bias", bias)
        self.batch_first = flag("batch_first", batch_first)
        self.bidirectional = flag("bidirectional", bidirectional)
        self.dtype = float_dtype(dtype)
        self.num_directions = 2 if self.bidirectional else 1

        H = self.hidden_size
        bound = 1.0 / np.sqrt(H)
        rng = np.random.default_rng(seed)
        # Drawn in float64 and rounded, so that a seed gives the same numbers
        # (to the dtype's precision) in float32 and float64.
        self.params = {}
        for name, shape in self._parameter_shapes():
            self.params[name] = rng.uniform(-bound, bound, shape).astype(self.dtype)
        self.grads = {}
        self._cache = None

    def _suffixes(self):
        return ["", "_reverse"][:self.num_directions]

    def _parameter_shapes(self):
        """(name, shape) in torch.nn.RNN's order: by layer, then direction."""
        H = self.hidden_size
        for k in range(self.num_layers):
            D = self.input_size if k == 0 else H * self.num_directions
            for sfx in self._suffixes():
                yield f"weight_ih_l{k}{sfx}", (H, D)
                yield f"weight_hh_l{k}{sfx}", (H, H)
                if self.bias:
                    yield f"bias_ih_l{k}{sfx}", (H,)
                    yield f"bias_hh_l{k}{sfx}", (H,)

    def _cells(self, k):
        """(direction, parameter-name tag, index into h0/h_n) of layer k's kernel calls."""
        for d, sfx in enumerate(self._suffixes()):
            yield d, f"l{k}{sfx}", k * self.num_directions + d

    def _kernel_bias(self, tag):
        # torch keeps two biases that only ever appear summed; the kernel takes the sum.
        if not self.bias:
            return None
        return self.params[f"bias_ih_{tag}"] + self.params[f"bias_hh_{tag}"]

    def forward(self, x, h0=None, lengths=None):
        """Run every layer over x.

        x: [T, B, input_size], or [B, T, input_size] with batch_first.
        h0: [num_layers * dirs, B, H] or None (zeros). lengths: integers [B]
        or None, as in rnn_forward (a PackedSequence's lengths in torch).

        Returns (y, h_n): y [T, B, dirs * H] (or batch-first), the last layer's
        states with the directions concatenated forward | reverse; h_n
        [num_layers * dirs, B, H], each sequence's state after its last valid step.
        Keeps copies of what backward needs: x, h0, lengths and the weights.
        """
        x = np.asarray(x)
        if x.dtype != self.dtype:
            raise TypeError(f"x: expected dtype {self.dtype} (the layer's dtype), got {x.dtype}")
        if x.ndim != 3 or x.shape[2] != self.input_size:
            layout = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
            raise ValueError(f"x: expected a 3-D array {layout} with input_size = "
                             f"{self.input_size}, got shape {x.shape}")
        B = x.shape[0] if self.batch_first else x.shape[1]
        state_shape = (self.num_layers * self.num_directions, B, self.hidden_size)
        h0 = _array("h0", h0, state_shape, self.dtype)

        options = dict(nonlinearity=self.nonlinearity, lengths=lengths,
                       batch_first=self.batch_first)
        inputs, outputs = [], []  # per layer: its input; per (layer, direction): its y
        # Per (layer, direction): copies of (w_ih, w_hh) as this forward used
        # them. backward needs the weights of the forward it differentiates,
        # and params are live arrays that an optimiser step or
        # load_state_dict may change in place in between; reading them then
        # would silently give the gradients of other weights. Copies rather
        # than detecting a change: a sound check needs the old values (a
        # checksum of the whole array costs what a copy does and can
        # collide), and a copy is always right. They cost H * (H + D) per
        # layer and direction, beside the T * B * H of its y kept already.
        # The biases are not kept: the backward does not read them.
        weights = []
        h_n = np.empty(state_shape, self.dtype)
        layer_input = x
        for k in range(self.num_layers):
            inputs.append(layer_input)
            ys = []
            for d, tag, i in self._cells(k):
                w = (self.params[f"weight_ih_{tag}"].copy(),
                     self.params[f"weight_hh_{tag}"].copy())
                y, h_n[i] = rnn_forward(layer_input, None if h0 is None else h0[i], *w,
                                        self._kernel_bias(tag), reverse=d == 1, **options)
                ys.append(y)
                weights.append(w)
            outputs.extend(ys)
            layer_input = np.concatenate(ys, axis=2)
        # backward reads x, h0 and lengths again: keep copies, so that a caller
        # reusing those buffers before backward cannot silently change the gradients.
        inputs[0] = x.copy()
        if lengths is not None:
            options["lengths"] = np.array(lengths)
        self._cache = (inputs, outputs, weights, None if h0 is None else h0.copy(), state_shape,
                       options)
        return layer_input, h_n

    def backward(self, dy, dh_n=None):
        """Backpropagation through time for the last forward call.

        dy: the gradient of the loss with respect to forward's y (same shape),
        or None (zero). dh_n: [num_layers * dirs, B, H] with respect to h_n,
        or None (zero).

        Returns (dx, dh0), shaped like x and h_n, and fills ``self.grads``
        (same keys as ``self.params``; bias_ih and bias_hh get the same gradient).
        The gradients are those of the weights forward ran with, even if
        ``self.params`` changed since.
        """
        if self._cache is None:
            raise RuntimeError("backward: call forward first; backward differentiates "
                               "the last forward call")
        inputs, outputs, weights, h0, state_shape, options = self._cache
        H = self.hidden_size
        dy = _array("dy", dy, outputs[-1].shape[:2] + (self.num_directions * H,), self.dtype)
        dh_n = _array("dh_n", dh_n, state_shape, self.dtype)

        grads = {}
        dh0 = np.empty(state_shape, self.dtype)
        d_output = dy  # gradient with respect to the current layer's output
        for k in reversed(range(self.num_layers)):
            d_input = 0  # both directions read the layer's input: their dx add up
            for d, tag, i in self._cells(k):
                g = rnn_backward(inputs[k], None if h0 is None else h0[i], *weights[i],
                                 outputs[i],
                                 None if d_output is None else d_output[:, :, d * H:(d + 1) * H],
                                 None if dh_n is None else dh_n[i], reverse=d == 1, **options)
                dh0[i] = g.dh0
                d_input = d_input + g.dx
                grads[f"weight_ih_{tag}"] = g.dw_ih
                grads[f"weight_hh_{tag}"] = g.dw_hh
                if self.bias:
                    grads[f"bias_ih_{tag}"] = g.dbias
                    # A copy, not the same array: in-place updates such as
                    # clipping must not reach one gradient twice.
                    grads[f"bias_hh_{tag}"] = g.dbias.copy()
            d_output = d_input
        self.grads = {name: grads[name] for name in self.params}  # torch's key order
        return d_output, dh0
