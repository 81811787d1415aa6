"""`ElmanRNN`: the seeds' whole network, an `RNN` (or an `LSTM` or `GRU`,
with ``cell=``) followed by an output layer, with the loss that belongs to
each output activation.

    h_t = act(W_xh x_t + W_hh h_{t-1} + b_h)        (the RNN, in C)
    y_t = O(W_hy h_t + b_y)                          (one GEMM over all T*B rows)

Cross-entropy and binary cross-entropy are computed from the output layer's
pre-activation z (the logits), where the pairing of O with its loss makes
the gradient simple and the arithmetic stable: dL/dz = (y - target) / N for
softmax with cross-entropy and for sigmoid with binary cross-entropy, never
through the log of a rounded probability.
"""

import numpy as np

from . import _blas
from ._checks import compute_dtype, is_real, positive_int
from .layers import LAYERS, _array, _Parameters


def _sigmoid(z):
    # Split on the sign so that exp never overflows.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype)


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# O -> (O(z), the vector-Jacobian product dL/dz from y = O(z) and dL/dy)
OUTPUT_ACTIVATIONS = {
    "identity": (lambda z: z, lambda y, dy: dy),
    "tanh": (np.tanh, lambda y, dy: dy * (1 - y * y)),
    "sigmoid": (_sigmoid, lambda y, dy: dy * y * (1 - y)),
    "softmax": (_softmax, lambda y, dy: y * (dy - np.sum(dy * y, axis=-1, keepdims=True))),
}

# O -> the loss it is paired with
LOSSES = {"identity": "mse", "tanh": "mse", "sigmoid": "bce", "softmax": "cross_entropy"}


def _mse(z, y, target, valid):
    """Mean of (y - target)^2 over the valid positions' elements; dL/dy."""
    n = max(int(valid.sum()) * y.shape[-1], 1)
    diff = (y - target) * valid[..., None]
    return float(np.sum(diff * diff)) / n, 2 * diff / n


def _bce(z, y, target, valid):
    """Binary cross-entropy of sigmoid(z) against targets in [0, 1], from the
    logits: -t log s - (1-t) log(1-s) = max(z, 0) - t z + log(1 + exp(-|z|)),
    finite for any z."""
    n = max(int(valid.sum()) * y.shape[-1], 1)
    losses = np.maximum(z, 0) - target * z + np.log1p(np.exp(-np.abs(z)))
    mask = valid[..., None]
    return float(np.sum(losses * mask)) / n, (y - target) * mask / n


def _cross_entropy(z, y, target, valid):
    """Mean over the counted positions of -log softmax(z)[target], as
    logsumexp(z) - z[target] after subtracting the row maximum;
    dL/dz = softmax(z) - onehot(target), over the count."""
    n = max(int(valid.sum()), 1)
    rows = np.nonzero(valid)
    z, y, target = z[rows], y[rows], target[rows]
    shifted = z - z.max(axis=-1, keepdims=True)
    each = np.arange(len(target))
    loss = np.sum(np.log(np.exp(shifted).sum(axis=-1)) - shifted[each, target])
    dz_rows = y.copy()
    dz_rows[each, target] -= 1
    dz = np.zeros(valid.shape + y.shape[-1:], y.dtype)
    dz[rows] = dz_rows / n
    return float(loss) / n, dz


_LOSS_FUNCTIONS = {"mse": _mse, "bce": _bce, "cross_entropy": _cross_entropy}


class ElmanRNN(_Parameters):
    """A recurrent layer (an RNN, LSTM or GRU) with an output layer: y_t = O(W_hy h_t + b_y).

    The seeds' notation maps to the parameter names (``self.params``) as:

    ====================  ===================================  ==============
    seeds                 parameter                            shape
    ====================  ===================================  ==============
    W_xh (U)              ``weight_ih_l0``                     [H, D]
    W_hh (W)              ``weight_hh_l0``                     [H, H]
    b_h (B)               ``bias_ih_l0 + bias_hh_l0``          [H]
    W_hy (V)              ``weight_hy``                        [O, dirs * H]
    b_y (C)               ``bias_hy``                          [O]
    ====================  ===================================  ==============

    Deeper layers add ``weight_ih_l1`` and so on, a bidirectional network the
    ``_reverse`` twins (see `RNN`); the output layer reads the last layer's
    states, forward | reverse. ``output_activation`` O is ``"identity"``,
    ``"tanh"`` (both trained with mean squared error), ``"sigmoid"`` (binary
    cross-entropy) or ``"softmax"`` (cross-entropy on integer class targets).
    ``bias=False`` drops b_h and b_y. The output layer's parameters start
    uniform in (-1/sqrt(dirs * H), 1/sqrt(dirs * H)) like torch.nn.Linear's.

    ``cell`` chooses the recurrent layer: ``"rnn"`` (the default, the seeds'
    network), ``"lstm"`` or ``"gru"``, the layers `RNN`, `LSTM`, `GRU`, whose
    parameters (the gates as row blocks: W_xh is [G * H, D]) and state it
    takes on. ``nonlinearity`` is the RNN's alone: the gated cells' gate
    activations are fixed.

    The state, h0 in forward and h_n in what it returns, is the layer's:
    [num_layers * dirs, B, H] for rnn and gru, the pair (h, c) of two such
    arrays for lstm; backward's dh_n and returned dh0 likewise. So a state
    returned by forward can be passed back to it as it is (truncated BPTT,
    sampling one step at a time) whatever the cell.

    Training step: ``y, h_n = net.forward(x)``, ``loss = net.loss(target)``,
    ``net.backward()``, then an optimiser step on ``net.params`` with ``net.grads``.
    """

    def __init__(self, input_size, hidden_size, output_size, num_layers=1,
                 nonlinearity="tanh", output_activation="identity", bias=True,
                 batch_first=False, bidirectional=False, dtype=np.float32, seed=None,
                 ignore_index=-100, cell="rnn"):
        if not isinstance(output_activation, str) or output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output_activation: expected one of "
                             f"{', '.join(map(repr, OUTPUT_ACTIVATIONS))}, "
                             f"got {output_activation!r}")
        if not isinstance(ignore_index, (int, np.integer)) or isinstance(ignore_index, bool):
            raise TypeError(f"ignore_index: expected an integer, got {ignore_index!r}")
        if not isinstance(cell, str) or cell not in LAYERS:
            raise ValueError(f"cell: expected one of {', '.join(map(repr, LAYERS))}, "
                             f"got {cell!r}")
        layer = dict(num_layers=num_layers, bias=bias, batch_first=batch_first,
                     bidirectional=bidirectional, dtype=dtype, seed=seed)
        if cell == "rnn":
            layer["nonlinearity"] = nonlinearity
        elif not (isinstance(nonlinearity, str) and nonlinearity == "tanh"):
            raise ValueError(f"nonlinearity: applies to cell='rnn' only (the gates of "
                             f"cell={cell!r} have fixed activations), got {nonlinearity!r}")
        self.cell = cell
        # Named rnn whatever the cell: the recurrent part of the network.
        self.rnn = LAYERS[cell](input_size, hidden_size, **layer)
        self.output_size = positive_int("output_size", output_size)
        self.output_activation = output_activation
        self.loss_name = LOSSES[output_activation]
        self.ignore_index = int(ignore_index)
        self.dtype = self.rnn.dtype
        # The output layer and the loss run in float32 for a bfloat16 network,
        # as the kernel does, and round what they return once.
        self._compute = compute_dtype(self.dtype)
        self.batch_first = self.rnn.batch_first

        features = self.rnn.hidden_size * self.rnn.num_directions
        bound = 1.0 / np.sqrt(features)
        # A generator of its own, so the RNN's weights for a seed are the same
        # with or without an output layer on top.
        rng = np.random.default_rng(None if seed is None else [seed, 1])
        own = {"weight_hy": rng.uniform(-bound, bound, (self.output_size, features))}
        if self.rnn.bias:
            own["bias_hy"] = rng.uniform(-bound, bound, self.output_size)
        # One dict over the same arrays as the RNN's: an optimiser updating
        # these in place updates the RNN.
        self.params = {**self.rnn.params, **{k: v.astype(self.dtype) for k, v in own.items()}}
        self.grads = {}
        self._cache = None
        self._dz = None

    def forward(self, x, h0=None, lengths=None, resets=None):
        """x, lengths and resets as for `RNN.forward`; h0 the initial state, as the layer takes it
        (for lstm the pair (h0, c0)), or None (zeros). Returns (y, h_n): y
        [T, B, output_size] (or batch-first), O(W_hy h_t + b_y) at every
        step, and the layer's final state (for lstm the pair (h_n, c_n)).

        Past a sequence's length h_t is zero, so y_t there is O(b_y); the
        losses leave those positions out."""
        h, h_n = self.rnn.forward(x, h0, lengths, resets)
        h = h.astype(self._compute, copy=False)
        # backward needs W_hy as it is now; params may change in place before
        # it (an optimiser step, load_state_dict): keep a copy, as the RNN
        # keeps its weights. b_y is not needed: z, kept below, holds it.
        w_hy = self.params["weight_hy"].astype(self._compute)
        rows = h.reshape(-1, h.shape[-1])  # [T*B, dirs*H]: one GEMM for every step
        with _blas.serial():   # none of BLAS's threads left spinning on the kernel's cores
            z = rows @ w_hy.T
        if self.rnn.bias:
            z += self.params["bias_hy"]
        z = z.reshape(h.shape[:2] + (self.output_size,))
        y = OUTPUT_ACTIVATIONS[self.output_activation][0](z)
        # y goes to the caller (a copy, in the network's dtype), who may
        # change it: loss and backward read this one.
        self._cache = (h, z, y, self._valid(h.shape[:2], lengths), w_hy)
        self._dz = None
        return y.astype(self.dtype), h_n

    def _valid(self, seq_shape, lengths):
        """Boolean [T, B] (or [B, T]): the positions before each sequence's end."""
        T = seq_shape[1] if self.batch_first else seq_shape[0]
        if lengths is None:
            return np.ones(seq_shape, bool)
        valid = np.arange(T)[:, None] < np.asarray(lengths)[None, :]  # [T, B]
        return valid.T if self.batch_first else valid

    def loss(self, target):
        """The loss paired with the output activation, for the last forward
        call, averaged over the valid positions (and the output elements for
        mse and bce). Keeps dL/dz for backward().

        target: for "softmax", integers [T, B] (or [B, T]) in [0, output_size)
        or equal to ignore_index (left out); otherwise an array shaped like y
        (in [0, 1] for "sigmoid"). Targets past a sequence's length are
        neither checked nor counted: any value can pad them.
        """
        if self._cache is None:
            raise RuntimeError("loss: call forward first; the loss is of the last forward call")
        _, z, y, valid, _ = self._cache
        target = np.asarray(target)
        if self.loss_name == "cross_entropy":
            if target.dtype.kind not in "iu":
                raise TypeError(f"target: expected integer class indices, got dtype "
                                f"{target.dtype}")
            if target.shape != valid.shape:
                raise ValueError(f"target: expected shape {valid.shape}, got {target.shape}")
            valid = valid & (target != self.ignore_index)
            counted = target[valid]
            if counted.size and (counted.min() < 0 or counted.max() >= self.output_size):
                raise ValueError(f"target: expected class indices in [0, {self.output_size}) "
                                 f"or ignore_index = {self.ignore_index}, got values from "
                                 f"{counted.min()} to {counted.max()}")
            target = np.where(valid, target, 0)
        else:
            if not is_real(target.dtype):
                raise TypeError(f"target: expected a real-valued array, got dtype {target.dtype}")
            if target.shape != y.shape:
                raise ValueError(f"target: expected shape {y.shape}, got {target.shape}")
            # Padding may hold anything (NaN too): only counted targets are
            # checked, and the others are zeroed so that no NaN * 0 gets in.
            counted = target[valid]
            if self.loss_name == "bce" and not np.all((counted >= 0) & (counted <= 1)):
                raise ValueError("target: expected values in [0, 1] for binary cross-entropy, "
                                 f"got values from {counted.min()} to {counted.max()}")
            target = np.where(valid[..., None], target, 0).astype(self._compute)
        value, grad = _LOSS_FUNCTIONS[self.loss_name](z, y, target, valid)
        # The fused pairs give dL/dz directly; mse's dL/dy still goes through O.
        self._dz = (OUTPUT_ACTIVATIONS[self.output_activation][1](y, grad)
                    if self.loss_name == "mse" else grad)
        return value

    def backward(self, dy=None, dh_n=None):
        """Gradients of every parameter into ``self.grads`` for the last forward call.

        dy: the gradient of your own loss with respect to y, or None to use
        the loss of the last loss() call. dh_n: the gradient with respect to
        the final state, as the layer's backward takes it (for lstm the pair
        (dh_n, dc_n)), or None (zero).

        Returns (dx, the initial state's gradient) as the layer's backward:
        (dx, dh0), or (dx, (dh0, dc0)) for lstm.
        """
        if self._cache is None:
            raise RuntimeError("backward: call forward first; backward differentiates "
                               "the last forward call")
        h, z, y, _, w_hy = self._cache
        if dy is None:
            if self._dz is None:
                raise RuntimeError("backward: without dy, call loss(target) first (after "
                                   "forward); its gradient is the one propagated")
            dz = self._dz
        else:
            dy = _array("dy", dy, y.shape, self.dtype).astype(self._compute, copy=False)
            dz = OUTPUT_ACTIVATIONS[self.output_activation][1](y, dy)
        dz_rows = dz.reshape(-1, self.output_size)  # [T*B, O]
        with _blas.serial():
            grads = {"weight_hy": dz_rows.T @ h.reshape(-1, h.shape[-1])}
            dh = (dz_rows @ w_hy).reshape(h.shape)
        if self.rnn.bias:
            grads["bias_hy"] = dz_rows.sum(axis=0)
        grads = {k: g.astype(self.dtype, copy=False) for k, g in grads.items()}
        dx, dh0 = self.rnn.backward(dh.astype(self.dtype, copy=False), dh_n)
        self.grads = {**self.rnn.grads, **grads}
        return dx, dh0
