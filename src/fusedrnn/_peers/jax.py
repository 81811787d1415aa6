"""JAX: the same maths per cell written with jax.numpy, the time loop a
jax.lax.scan, jitted; the forward, and the forward with its gradients by
jax.vjp (the cotangents dy, dh_n, dc_n fed in as the NumPy backward takes
them).

As a JAX user would write it: the input side x W_ihᵀ + b of every step is
one product before the scan, the scan does the recurrent product and the
gates. The arrays are put on the device once, outside the timing; a run
ends with block_until_ready (JAX dispatches asynchronously).

Threads: XLA's CPU client sizes its thread pool once, when the backend
starts, and nothing changes it afterwards. The bench cannot give JAX a
thread count per row: its rows run on the pool it started with (all cores,
unless XLA_FLAGS has --xla_cpu_multi_thread_eigen=false, which makes the
products single-threaded), and honours_threads says so.
"""

import os

import numpy as np

import jax
import jaxlib
import jax.numpy as jnp
from jax import lax

from . import Results, Unsupported

# float64 problems stay float64 (JAX makes float32 of them otherwise).
jax.config.update("jax_enable_x64", True)

_SINGLE = "--xla_cpu_multi_thread_eigen=false" in os.environ.get("XLA_FLAGS", "")
_POOL = 1 if _SINGLE else os.cpu_count()


def describe():
    threads = ("1 (XLA_FLAGS --xla_cpu_multi_thread_eigen=false)" if _SINGLE else
               f"XLA's pool of {_POOL}, fixed when jax starts: not limited by --threads")
    return (f"jax {jax.__version__} (jaxlib {jaxlib.__version__}, backend {jax.default_backend()}): lax.scan of the cell's maths, jitted; "
            f"fwd+bwd by jax.vjp; threads: {threads}")


def set_num_threads(n):
    pass  # not possible once jax has started: see honours_threads


def get_num_threads():
    return _POOL


def honours_threads(n):
    """Whether a run is on n threads: only when n is the pool's size."""
    return n == _POOL


# --- the cells' steps: (carry, the input side of one step) -> (carry, h) ---
# Weights in torch's layout and gate order: [G*H, in], gates stacked.

def _rnn_step(w_hh):
    def step(h, xw):
        h = jnp.tanh(xw + h @ w_hh.T)
        return h, h
    return step


def _lstm_step(w_hh):
    def step(carry, xw):
        h, c = carry
        i, f, g, o = jnp.split(xw + h @ w_hh.T, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h
    return step


def _gru_step(w_hh, b_hh):
    def step(h, xw):
        xr, xz, xn = jnp.split(xw, 3, axis=-1)
        hr, hz, hn = jnp.split(h @ w_hh.T + b_hh, 3, axis=-1)
        r = jax.nn.sigmoid(xr + hr)
        z = jax.nn.sigmoid(xz + hz)
        n = jnp.tanh(xn + r * hn)  # linear before reset: r scales W_hn h + b_hn
        h = (1 - z) * n + z * h
        return h, h
    return step


def _forward(cell, x, states0, w_ih, w_hh, b_ih, b_hh):
    """(y, final states as a tuple): h_n, and c_n for the LSTM."""
    xw = x @ w_ih.T + b_ih  # [T, B, G*H]: every step's input side at once
    if cell == "rnn":
        h_n, y = lax.scan(_rnn_step(w_hh), states0[0], xw)
        return y, (h_n,)
    if cell == "lstm":
        xw = xw + b_hh  # the LSTM's two biases simply add
        (h_n, c_n), y = lax.scan(_lstm_step(w_hh), states0, xw)
        return y, (h_n, c_n)
    h_n, y = lax.scan(_gru_step(w_hh, b_hh), states0[0], xw)
    return y, (h_n,)


def _functions(cell):
    """The jitted forward and forward-with-gradients of `cell`. jax.jit keeps
    its compiled code per shape and dtype, so a second problem of the same
    shape (another thread count, the pytest suite) compiles nothing."""
    def forward(x, states0, w_ih, w_hh, b_ih, b_hh):
        return _forward(cell, x, states0, w_ih, w_hh, b_ih, b_hh)

    def forward_backward(x, states0, w_ih, w_hh, b_ih, b_hh, dy, d_states_n):
        # The rnn has one bias: b_hh is passed as None and gets no gradient.
        outputs, pullback = jax.vjp(forward, x, states0, w_ih, w_hh, b_ih, b_hh)
        return outputs, pullback((dy, d_states_n))

    return jax.jit(forward), jax.jit(forward_backward)


FUNCTIONS = {cell: _functions(cell) for cell in ("rnn", "lstm", "gru")}


def build(cell, p):
    if p.x.dtype not in (np.float32, np.float64):
        # jax.numpy on bf16 arrays would run the scan's maths at XLA's own
        # precision per operation, a policy the bench neither sets nor checks.
        raise Unsupported(f"not timed in {p.x.dtype}: float32 and float64 only")
    forward_fn, forward_backward_fn = FUNCTIONS[cell]
    lstm = cell == "lstm"
    put = jax.device_put
    x, w_ih, w_hh, b_ih = map(put, (p.x, p.w_ih, p.w_hh, p.b_ih))
    b_hh = None if p.b_hh is None else put(p.b_hh)
    states0 = tuple(put(a) for a in ((p.h0, p.c0) if lstm else (p.h0,)))
    dy = put(p.dy)
    d_states_n = tuple(put(a) for a in ((p.dh_n, p.dc_n) if lstm else (p.dh_n,)))
    state_names = ("h_n", "c_n")[:len(states0)]

    def named(y, states_n):
        return {"y": lambda: np.asarray(y),
                **{name: (lambda s=s: np.asarray(s)) for name, s in zip(state_names, states_n)}}

    def forward():
        outputs = jax.block_until_ready(forward_fn(x, states0, w_ih, w_hh, b_ih, b_hh))
        return Results(named(*outputs))

    def forward_backward():
        (y, states_n), grads = jax.block_until_ready(
            forward_backward_fn(x, states0, w_ih, w_hh, b_ih, b_hh, dy, d_states_n))
        gx, gstates0, gw_ih, gw_hh, gb_ih, gb_hh = grads
        out = {"dx": gx, "dh0": gstates0[0]}
        if lstm:
            out["dc0"] = gstates0[1]
        out |= {"dw_ih": gw_ih, "dw_hh": gw_hh}
        if cell == "rnn":
            out["dbias"] = gb_ih
        else:
            out |= {"db_ih": gb_ih, "db_hh": gb_hh}
        return Results(named(y, states_n) | {name: (lambda g=g: np.asarray(g))
                                             for name, g in out.items()})

    return {"fwd": forward, "fwd+bwd": forward_backward}
