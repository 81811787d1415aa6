"""`RNN`, `LSTM` and `GRU`: stacked, optionally bidirectional recurrent layers
over NumPy arrays, with torch.nn.RNN / LSTM / GRU's parameter names, shapes,
initialisation and semantics.

Each (layer, direction) is one call of the NumPy API (rnn_forward /
rnn_backward, lstm_*, gru_*): every time loop runs in C, and Python only
chains the calls, concatenating the two directions' outputs (forward |
reverse) as the next layer's input. The stacking, the directions, what is
kept for the backward and the state dict are written once, in `_Layers`;
a cell adds only its number of gates, its states and its two kernel calls.
"""

import numpy as np

from ._api import (gru_backward, gru_forward, lstm_backward, lstm_forward, rnn_backward,
                   rnn_forward)
from ._checks import activation, as_array, flag, float_dtype, is_real, positive_int


def _array(name, a, shape, dtype):
    """`a` as an array of exactly `dtype` and `shape`; None stays None.

    No silent casting: a float64 array handed to a float32 layer is a
    mistake worth hearing about (as in torch), not a cost to hide.
    """
    if a is None:
        return None
    a = as_array(name, a)
    if a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the layer's dtype), got {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
    return a


def _pair(name, value, names):
    """An LSTM's (h, c) argument as a tuple of two (None for None: both zero).
    A tuple or list only: an array of shape (2, ...) would also unpack into
    two, and be a silent misreading of a stacked h."""
    if value is None:
        return (None, None)
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name}: expected a pair ({names[0]}, {names[1]}), either of them "
                        f"None, or None; got {type(value).__name__}"
                        + (f" of length {len(value)}" if isinstance(value, (tuple, list))
                           else ""))
    return tuple(value)


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
            if not is_real(values[name].dtype):
                raise TypeError(f"{name}: expected a real-valued array, got dtype "
                                f"{values[name].dtype}")
            if values[name].shape != p.shape:
                raise ValueError(f"{name}: expected shape {p.shape}, got {values[name].shape}")
        for name, p in self.params.items():
            np.copyto(p, values[name], casting="unsafe")


# The parameters of one (layer, direction), in torch's order; the kernel calls
# take them in this order too.
_PARAMETER_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class _Layers(_Parameters):
    """The layer family: stacking, directions, what backward keeps, the state dict.

    A cell (subclass) sets GATES (its weights are [GATES * H, D_k] and
    [GATES * H, H]), STATES (the letters of its states: "h", or "h" and "c")
    and two hooks, each one kernel call for one (layer, direction):

      _cell_forward(x, states0, weights, **options) -> (y, final states, saved)
      _cell_backward(x, states0, weights, y, saved, dy, d_finals, **options)
          -> (dx, d_states0, gradients of weights)

    where states0, final states and their gradients are tuples in STATES'
    order (entries may be None: zero), weights the four arrays of
    _PARAMETER_NAMES (biases None without bias), and saved whatever the
    forward hands its backward (the gated cells' reserve).
    """

    GATES = 1
    STATES = ("h",)

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 bidirectional=False, dtype=np.float32, seed=None):
        self.input_size = positive_int("input_size", input_size)
        self.hidden_size = positive_int("hidden_size", hidden_size)
        self.num_layers = positive_int("num_layers", num_layers)
        self.bias = flag("bias", bias)
        self.batch_first = flag("batch_first", batch_first)
        self.bidirectional = flag("bidirectional", bidirectional)
        self.dtype = float_dtype(dtype)
        self.num_directions = 2 if self.bidirectional else 1

        bound = 1.0 / np.sqrt(self.hidden_size)
        rng = np.random.default_rng(seed)
        # Drawn in float64 and rounded, so that a seed gives the same numbers
        # (to the dtype's precision) in every dtype.
        self.params = {}
        for name, shape in self._parameter_shapes():
            self.params[name] = rng.uniform(-bound, bound, shape).astype(self.dtype)
        self.grads = {}
        self._cache = None

    def _suffixes(self):
        return ["", "_reverse"][:self.num_directions]

    def _parameter_shapes(self):
        """(name, shape) in torch's order: by layer, then direction."""
        H, GH = self.hidden_size, self.GATES * self.hidden_size
        for k in range(self.num_layers):
            D = self.input_size if k == 0 else H * self.num_directions
            for sfx in self._suffixes():
                yield f"weight_ih_l{k}{sfx}", (GH, D)
                yield f"weight_hh_l{k}{sfx}", (GH, H)
                if self.bias:
                    yield f"bias_ih_l{k}{sfx}", (GH,)
                    yield f"bias_hh_l{k}{sfx}", (GH,)

    def _cells(self, k):
        """(direction, parameter-name tag, index into the states) of layer k's kernel calls."""
        for d, sfx in enumerate(self._suffixes()):
            yield d, f"l{k}{sfx}", k * self.num_directions + d

    def _state_shape(self, B):
        return (self.num_layers * self.num_directions, B, self.hidden_size)

    def _forward(self, x, states0, lengths, resets):
        """Every layer over x from states0 (one per STATES, each [L * dirs, B, H]
        or None); returns (y, the final states as a tuple)."""
        x = as_array("x", x)
        if x.dtype != self.dtype:
            raise TypeError(f"x: expected dtype {self.dtype} (the layer's dtype), got {x.dtype}")
        if x.ndim != 3 or x.shape[2] != self.input_size:
            layout = "(B, T, input_size)" if self.batch_first else "(T, B, input_size)"
            raise ValueError(f"x: expected a 3-D array {layout} with input_size = "
                             f"{self.input_size}, got shape {x.shape}")
        state_shape = self._state_shape(x.shape[0] if self.batch_first else x.shape[1])
        # backward reads x, the initial states, lengths and resets again: copies, so
        # that a caller reusing those buffers before backward cannot silently
        # change the gradients.
        states0 = tuple(None if s is None else _array(f"{letter}0", s, state_shape,
                                                      self.dtype).copy()
                        for letter, s in zip(self.STATES, states0))
        if lengths is not None:
            lengths = as_array("lengths", lengths).copy()
        if resets is not None:
            resets = as_array("resets", resets).copy()
        options = dict(lengths=lengths, resets=resets, batch_first=self.batch_first)

        # Per (layer, direction): copies of its parameters as this forward
        # used them. backward needs the weights of the forward it
        # differentiates, and params are live arrays that an optimiser step
        # or load_state_dict may change in place in between; reading them
        # then would silently give the gradients of other weights. Copies
        # rather than detecting a change: a sound check needs the old values
        # (a checksum of the whole array costs what a copy does and can
        # collide), and a copy is always right. They cost G * H * (H + D + 2)
        # per layer and direction, beside the T * B * H of its y kept already.
        # Not all of it is read by every backward (the RNN's reads no bias),
        # but one rule for every cell is simpler than knowing which.
        inputs, calls = [], []  # per layer: its input; per (layer, direction): what it ran with
        finals = tuple(np.empty(state_shape, self.dtype) for _ in self.STATES)
        layer_input = x.copy()
        for k in range(self.num_layers):
            inputs.append(layer_input)
            ys = []
            for d, tag, i in self._cells(k):
                weights = tuple(self.params[f"{name}_{tag}"].copy()
                                if f"{name}_{tag}" in self.params else None
                                for name in _PARAMETER_NAMES)
                y, ends, saved = self._cell_forward(layer_input, self._at(states0, i), weights,
                                                    reverse=d == 1, **options)
                for final, end in zip(finals, ends):
                    final[i] = end
                ys.append(y)
                calls.append((weights, y, saved))
            # A new array even for one direction: the caller gets this y and
            # may change it, and the backward reads the kernel's.
            layer_input = np.concatenate(ys, axis=2)
        self._cache = (inputs, calls, states0, state_shape, options)
        return layer_input, finals

    @staticmethod
    def _at(states, i):
        """Layer-direction i's slice of each state (None stays None)."""
        return tuple(None if s is None else s[i] for s in states)

    def _backward(self, dy, d_finals):
        """Backpropagation through time for the last _forward; d_finals one
        per STATES (None: zero). Returns (dx, the initial states' gradients)."""
        if self._cache is None:
            raise RuntimeError("backward: call forward first; backward differentiates "
                               "the last forward call")
        inputs, calls, states0, state_shape, options = self._cache
        H = self.hidden_size
        y_shape = calls[-1][1].shape[:2] + (self.num_directions * H,)
        dy = _array("dy", dy, y_shape, self.dtype)
        d_finals = tuple(_array(f"d{letter}_n", g, state_shape, self.dtype)
                         for letter, g in zip(self.STATES, d_finals))

        grads = {}
        d_states0 = tuple(np.empty(state_shape, self.dtype) for _ in self.STATES)
        d_output = dy  # gradient with respect to the current layer's output
        for k in reversed(range(self.num_layers)):
            d_input = 0  # both directions read the layer's input: their dx add up
            for d, tag, i in self._cells(k):
                weights, y, saved = calls[i]
                dy_i = None if d_output is None else d_output[:, :, d * H:(d + 1) * H]
                dx, d_starts, d_weights = self._cell_backward(
                    inputs[k], self._at(states0, i), weights, y, saved, dy_i,
                    self._at(d_finals, i), reverse=d == 1, **options)
                for d_state0, d_start in zip(d_states0, d_starts):
                    d_state0[i] = d_start
                d_input = d_input + dx
                for name, g in zip(_PARAMETER_NAMES, d_weights):
                    grads[f"{name}_{tag}"] = g
            d_output = d_input
        self.grads = {name: grads[name] for name in self.params}  # torch's key order
        return d_output, d_states0

    def forward(self, x, h0=None, lengths=None, resets=None):
        """Run every layer over x.

        x: [T, B, input_size], or [B, T, input_size] with batch_first.
        h0: [num_layers * dirs, B, H] or None (zeros). lengths: integers [B]
        or None, as in rnn_forward (a PackedSequence's lengths in torch).
        resets: flags [T, B] (or [B, T]) or None, as in rnn_forward: every
        layer and direction restarts at them from its own initial state.

        Returns (y, h_n): y [T, B, dirs * H] (or batch-first), the last layer's
        states with the directions concatenated forward | reverse; h_n
        [num_layers * dirs, B, H], each sequence's state after its last valid step.
        Keeps copies of what backward needs: x, h0, lengths, resets and the
        parameters.
        """
        y, (h_n,) = self._forward(x, (h0,), lengths, resets)
        return y, h_n

    def backward(self, dy, dh_n=None):
        """Backpropagation through time for the last forward call.

        dy: the gradient of the loss with respect to forward's y (same shape),
        or None (zero). dh_n: [num_layers * dirs, B, H] with respect to h_n,
        or None (zero).

        Returns (dx, dh0), shaped like x and h_n, and fills ``self.grads``
        (same keys as ``self.params``). The gradients are those of the
        weights forward ran with, even if ``self.params`` changed since.
        """
        dx, (dh0,) = self._backward(dy, (dh_n,))
        return dx, dh0


class RNN(_Layers):
    """A multi-layer Elman RNN, h_t = act(W_ih x_t + W_hh h_{t-1} + b_ih + b_hh),
    with torch.nn.RNN's constructor, parameters and forward semantics.

    Parameters live in ``self.params`` (name -> array, updated in place by the
    optimisers); ``backward`` fills ``self.grads`` with the same keys. For layer
    k the names are ``weight_ih_l{k}`` [H, D_k], ``weight_hh_l{k}`` [H, H],
    ``bias_ih_l{k}`` and ``bias_hh_l{k}`` [H], and the same with the suffix
    ``_reverse`` for the reverse direction; D_0 = input_size, D_k = H * dirs
    after. All start uniform in (-1/sqrt(H), 1/sqrt(H)), drawn from
    ``np.random.default_rng(seed)``. bias_ih and bias_hh only ever appear
    summed, so they get the same gradient (in two arrays).
    """

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, bidirectional=False, dtype=np.float32, seed=None):
        activation(nonlinearity)  # raises ValueError for an unknown name
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, bidirectional,
                         dtype, seed)

    def _cell_forward(self, x, states0, weights, **options):
        w_ih, w_hh, b_ih, b_hh = weights
        # torch keeps two biases that only ever appear summed; the kernel takes the sum.
        bias = None if b_ih is None else b_ih + b_hh
        y, h_n = rnn_forward(x, *states0, w_ih, w_hh, bias, nonlinearity=self.nonlinearity,
                             **options)
        return y, (h_n,), None

    def _cell_backward(self, x, states0, weights, y, saved, dy, d_finals, **options):
        g = rnn_backward(x, *states0, *weights[:2], y, dy, *d_finals,
                         nonlinearity=self.nonlinearity, **options)
        # A copy, not the same array: in-place updates such as clipping must
        # not reach one gradient twice.
        return g.dx, (g.dh0,), (g.dw_ih, g.dw_hh, g.dbias, g.dbias.copy())


class LSTM(_Layers):
    """A multi-layer LSTM with torch.nn.LSTM's constructor (less dropout and
    proj_size), parameters and forward semantics:

        i, f, g, o = σ, σ, tanh, σ of (W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
        c_t = f c_{t-1} + i g,   h_t = o tanh(c_t)

    The parameters are named as `RNN`'s, with the four gates i, f, g, o as
    row blocks: ``weight_ih_l{k}`` [4H, D_k], ``weight_hh_l{k}`` [4H, H],
    ``bias_ih_l{k}`` and ``bias_hh_l{k}`` [4H], each with its own gradient.
    Initialisation as `RNN`'s. The state is the pair (h, c): ``forward(x,
    hx=(h0, c0))`` returns ``(y, (h_n, c_n))`` and ``backward(dy, dhx=(dh_n,
    dc_n))`` returns ``(dx, (dh0, dc0))``, as torch's LSTM takes and returns it.
    """

    GATES = 4
    STATES = ("h", "c")

    def _cell_forward(self, x, states0, weights, **options):
        out = lstm_forward(x, *states0, *weights, training=True, **options)
        return out.y, (out.h_n, out.c_n), out.reserve

    def _cell_backward(self, x, states0, weights, y, saved, dy, d_finals, **options):
        g = lstm_backward(x, *states0, *weights, y, saved, dy, *d_finals, **options)
        return g.dx, (g.dh0, g.dc0), (g.dw_ih, g.dw_hh, g.db_ih, g.db_hh)

    def forward(self, x, hx=None, lengths=None, resets=None):
        """Run every layer over x.

        x, lengths and resets as for `RNN.forward`. hx: the pair (h0, c0), each
        [num_layers * dirs, B, H] or None (zeros), or None (both zero).

        Returns (y, (h_n, c_n)): y as for `RNN.forward`; h_n and c_n
        [num_layers * dirs, B, H], each sequence's states after its last valid step.
        """
        y, (h_n, c_n) = self._forward(x, _pair("hx", hx, ("h0", "c0")), lengths, resets)
        return y, (h_n, c_n)

    def backward(self, dy, dhx=None):
        """Backpropagation through time for the last forward call.

        dy: as for `RNN.backward`. dhx: the pair (dh_n, dc_n), the gradients
        with respect to h_n and c_n, either None (zero), or None (both zero).

        Returns (dx, (dh0, dc0)), shaped like x and hx, and fills ``self.grads``.
        """
        dx, (dh0, dc0) = self._backward(dy, _pair("dhx", dhx, ("dh_n", "dc_n")))
        return dx, (dh0, dc0)


class GRU(_Layers):
    """A multi-layer GRU with torch.nn.GRU's constructor (less dropout),
    parameters and forward semantics:

        r, z = σ(W_i{r,z} x_t + b_i{r,z} + W_h{r,z} h_{t-1} + b_h{r,z})
        n = tanh(W_in x_t + b_in + r (W_hn h_{t-1} + b_hn))
        h_t = (1 - z) n + z h_{t-1}

    The parameters are named as `RNN`'s, with the three gates r, z, n as row
    blocks ([3H, D_k], [3H, H], [3H]); bias_ih and bias_hh get gradients that
    differ in the n rows, where r multiplies only b_hn. forward and backward
    take and return h as `RNN`'s do.
    """

    GATES = 3

    def _cell_forward(self, x, states0, weights, **options):
        out = gru_forward(x, *states0, *weights, training=True, **options)
        return out.y, (out.h_n,), out.reserve

    def _cell_backward(self, x, states0, weights, y, saved, dy, d_finals, **options):
        g = gru_backward(x, *states0, *weights, y, saved, dy, *d_finals, **options)
        return g.dx, (g.dh0,), (g.dw_ih, g.dw_hh, g.db_ih, g.db_hh)


# The cell names ElmanRNN(cell=...) takes, as the kernel names them.
LAYERS = {"rnn": RNN, "lstm": LSTM, "gru": GRU}
