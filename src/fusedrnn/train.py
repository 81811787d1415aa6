"""What a training loop needs around a model: gradient clipping, two
optimisers over a parameter dict, truncated BPTT over long sequences, and
sampling from a softmax output with a temperature.

The optimisers and the clipping work on dicts of arrays (a model's
``params`` and ``grads``) and update the parameters in place.
"""

import numbers

import numpy as np

from ._checks import as_array, is_real, positive_int


def _number(name, value, expected, ok):
    """value as a float; TypeError for a non-number, ValueError unless ok(value)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected {expected}, got {value!r}")
    value = float(value)
    if not ok(value):  # NaN fails every comparison, so it fails here
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return value


def _positive(name, value):
    return _number(name, value, "a positive number", lambda v: v > 0)


def _fraction(name, value):
    return _number(name, value, "a number in [0, 1)", lambda v: 0 <= v < 1)


def clip_grad_norm(grads, max_norm):
    """Scale every gradient in ``grads`` (a dict of arrays, in place) so that
    their global L2 norm, taken over all of them together, is at most
    ``max_norm``. Returns the norm before clipping.

    Clipping by the global norm keeps the update's direction, which
    per-array or per-element clipping would not: it only shortens the steps
    that an exploding gradient, a classic of BPTT, would make too long.
    """
    max_norm = _positive("max_norm", max_norm)
    norm = float(np.sqrt(sum(np.sum(np.square(g, dtype=np.float64)) for g in grads.values())))
    if norm > max_norm:
        for g in grads.values():
            g *= max_norm / norm
    return norm


class _Optimizer:
    def __init__(self, params, lr):
        if not isinstance(params, dict) or not params:
            raise TypeError(f"params: expected a non-empty dict of name -> array, got "
                            f"{type(params).__name__}")
        for name, p in params.items():
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f":
                raise TypeError(f"params[{name!r}]: expected a float ndarray (updated in place)")
        self.params = params
        self.lr = _positive("lr", lr)

    def _checked(self, grads):
        missing = [k for k in self.params if k not in grads]
        if missing:
            raise ValueError(f"grads: missing keys {missing} (call backward first?)")
        for name, p in self.params.items():
            if np.shape(grads[name]) != p.shape:
                raise ValueError(f"grads[{name!r}]: expected shape {p.shape}, "
                                 f"got {np.shape(grads[name])}")
        return ((p, grads[name]) for name, p in self.params.items())


class SGD(_Optimizer):
    """Stochastic gradient descent with momentum, as torch.optim.SGD:
    v = momentum v + g, p -= lr v."""

    def __init__(self, params, lr, momentum=0.0):
        super().__init__(params, lr)
        self.momentum = _fraction("momentum", momentum)
        self.velocity = {name: np.zeros_like(p) for name, p in params.items()}

    def step(self, grads):
        """Update ``params`` in place from ``grads`` (same keys and shapes)."""
        for (p, g), v in zip(self._checked(grads), self.velocity.values()):
            v *= self.momentum
            v += g
            p -= self.lr * v


class Adam(_Optimizer):
    """Adam (Kingma and Ba, 2015): steps of lr * m_hat / (sqrt(v_hat) + eps),
    from running means of the gradient (m) and of its square (v), corrected
    for their zero start."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        super().__init__(params, lr)
        if np.ndim(betas) != 1 or len(betas) != 2:
            raise ValueError(f"betas: expected two numbers (beta1, beta2), got {betas!r}")
        self.beta1, self.beta2 = (_fraction(f"betas[{i}]", b) for i, b in enumerate(betas))
        self.eps = _positive("eps", eps)
        self.m = {name: np.zeros_like(p) for name, p in params.items()}
        self.v = {name: np.zeros_like(p) for name, p in params.items()}
        self.t = 0

    def step(self, grads):
        """Update ``params`` in place from ``grads`` (same keys and shapes)."""
        self.t += 1
        correction1, correction2 = 1 - self.beta1 ** self.t, 1 - self.beta2 ** self.t
        for (p, g), m, v in zip(self._checked(grads), self.m.values(), self.v.values()):
            m += (1 - self.beta1) * (g - m)
            v += (1 - self.beta2) * (g * g - v)
            p -= self.lr * (m / correction1) / (np.sqrt(v / correction2) + self.eps)


def truncated_bptt(model, optimizer, x, target, chunk, h0=None, max_norm=None):
    """One pass of truncated backpropagation through time over long sequences.

    x [T, B, D] (or [B, T, D] for a batch_first model) is cut along time into
    chunks of ``chunk`` steps. For each: forward from the state the previous
    chunk ended in, the model's loss against the matching slice of
    ``target``, backward with no gradient into that carried state (the
    truncation: the state is carried, its gradient is not), the gradients
    clipped to ``max_norm`` when given, and an optimiser step.

    model: an `ElmanRNN` (forward / loss / backward / grads), of any cell.
    h0: the initial state as the model's forward takes it (for an LSTM the
    pair (h0, c0)), or None (zeros). Returns (the chunks' losses as a list,
    the final state, in the same form, to pass as h0 to the next call).
    """
    chunk = positive_int("chunk", chunk)
    axis = 1 if model.batch_first else 0
    x, target = np.asarray(x), np.asarray(target)
    # Checked before the first step, which would otherwise change the model
    # before a short target failed (or leave a long one's tail unused).
    if x.ndim == 3 and target.shape[:2] != x.shape[:2]:
        raise ValueError(f"target: expected x's time and batch axes {x.shape[:2]} first, "
                         f"got shape {target.shape}")
    losses = []
    h = h0
    for start in range(0, x.shape[axis], chunk):
        steps = slice(start, start + chunk)
        _, h = model.forward(x[:, steps] if axis else x[steps], h)
        losses.append(model.loss(target[:, steps] if axis else target[steps]))
        model.backward()
        if max_norm is not None:
            clip_grad_norm(model.grads, max_norm)
        optimizer.step(model.grads)
    return losses, h


def sample(probs, temperature=1.0, rng=None):
    """Draw one index per row of ``probs`` (a softmax output, classes on the
    last axis) from the distribution sharpened or flattened by
    ``temperature``: p_i^(1/T), renormalised, the same as
    softmax(logits / T). Below 1 it favours the likeliest classes (towards
    argmax), above 1 it flattens towards uniform.

    rng: a numpy Generator, an int seed or None. Returns integers of shape
    ``probs.shape[:-1]``.
    """
    temperature = _positive("temperature", temperature)
    probs = as_array("probs", probs)
    if not is_real(probs.dtype):
        raise TypeError(f"probs: expected a real-valued array, got dtype {probs.dtype}")
    probs = probs.astype(np.float64)
    if probs.ndim < 1 or probs.shape[-1] == 0:
        raise ValueError(f"probs: expected classes on the last axis, got shape {probs.shape}")
    if np.any(probs < 0) or not np.all(np.isfinite(probs)) or np.any(probs.sum(axis=-1) == 0):
        raise ValueError("probs: expected finite, non-negative probabilities, "
                         "some positive in every row")
    rng = np.random.default_rng(rng)
    with np.errstate(divide="ignore"):  # log(0) = -inf: a class that stays impossible
        logits = np.log(probs) / temperature
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    cumulative = np.cumsum(weights, axis=-1)
    # Inverse CDF, vectorised over rows: the first class whose cumulative
    # weight exceeds a uniform draw times the row's total.
    u = rng.random(probs.shape[:-1] + (1,)) * cumulative[..., -1:]
    return np.minimum((cumulative <= u).sum(axis=-1), probs.shape[-1] - 1)
