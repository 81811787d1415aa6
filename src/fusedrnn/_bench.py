"""What `python -m fusedrnn`, `python -m fusedrnn bench` and the
pytest-benchmark suite in bench/ share: the standard shapes and their FLOP
counts, the problems timed, the implementations timed side by side (the
peers) and the timing loop.

Importing this module never imports torch; building a torch peer does.
"""

import importlib
import statistics
import sys
import time
from contextlib import contextmanager
from functools import partial
from typing import NamedTuple

import numpy as np

import fusedrnn
from fusedrnn import reference
from fusedrnn.reference import RNNGrads

# DESIGN.md section 7: T, B, D, H.
SHAPES = {
    "S": (100, 1, 64, 64),
    "M": (100, 32, 128, 128),
    "L": (100, 64, 512, 512),
    "XL": (50, 16, 1760, 1760),
}

# mode -> FLOPs of one run in units of a forward's: per forward GEMM the
# backward does two (dh through W_hh or W_ih, and the weight gradient).
MODES = {"fwd": 1, "fwd+bwd": 3}


def flops(shape, mode):
    """FLOPs of one run of `mode` on `shape` (T, B, D, H); a forward is 2*T*B*H*(D+H)."""
    T, B, D, H = shape
    return MODES[mode] * 2 * T * B * H * (D + H)


class Problem(NamedTuple):
    """The arguments of one rnn_forward and rnn_backward pair."""

    x: np.ndarray  # [T,B,D]
    h0: np.ndarray  # [B,H]
    w_ih: np.ndarray  # [H,D]
    w_hh: np.ndarray  # [H,H]
    bias: np.ndarray  # [H]
    dy: np.ndarray  # [T,B,H]
    dh_n: np.ndarray  # [B,H]


def problem(shape, dtype, rng):
    """Random arguments for `shape` (T, B, D, H). Weights scaled by
    1/sqrt(fan-in) keep tanh and sigmoid out of saturation, where a wrong
    gradient term would vanish."""
    T, B, D, H = shape

    def normal(*dims, scale=1.0):
        return (scale * rng.standard_normal(dims)).astype(dtype)

    return Problem(normal(T, B, D), normal(B, H, scale=0.5), normal(H, D, scale=D ** -0.5),
                   normal(H, H, scale=H ** -0.5), normal(H, scale=0.5), normal(T, B, H),
                   normal(B, H))


# --- peers ------------------------------------------------------------------
# A peer builds what it needs for one Problem once and returns
# {mode: a callable doing one run}. Every run returns NumPy arrays:
# (y, h_n) for "fwd", (y, h_n, RNNGrads) for "fwd+bwd".

def _numpy_peer(impl, p):
    """fusedrnn and fusedrnn.reference: the same two functions."""
    def forward():
        return impl.rnn_forward(p.x, p.h0, p.w_ih, p.w_hh, p.bias)

    def forward_backward():
        y, h_n = forward()
        return y, h_n, impl.rnn_backward(p.x, p.h0, p.w_ih, p.w_hh, y, p.dy, p.dh_n)

    return {"fwd": forward, "fwd+bwd": forward_backward}


def _torch_peer(module, p):
    """`module`.RNN with the problem's weights, in the problem's dtype:
    torch.nn.RNN, or fusedrnn.torch.RNN, which takes the same arguments."""
    import torch

    T, B, D = p.x.shape
    H = p.w_hh.shape[0]
    # torch.nn.RNN takes h0 and returns h_n as [1,B,H] (layers, batch, hidden).
    x, h0 = (torch.from_numpy(a).requires_grad_() for a in (p.x, p.h0[None]))
    dy, dh_n = torch.from_numpy(p.dy), torch.from_numpy(p.dh_n[None])
    rnn = importlib.import_module(module).RNN(D, H, dtype=x.dtype)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(torch.from_numpy(p.w_ih))
        rnn.weight_hh_l0.copy_(torch.from_numpy(p.w_hh))
        # fusedrnn's one bias stands for torch's b_ih + b_hh.
        rnn.bias_ih_l0.copy_(torch.from_numpy(p.bias))
        rnn.bias_hh_l0.zero_()
    wrt = (x, h0, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0)

    def forward():
        with torch.no_grad():
            y, h_n = rnn(x, h0)
        return y.numpy(), h_n[0].numpy()

    def forward_backward():
        y, h_n = rnn(x, h0)
        # The gradients of sum(y*dy) + sum(h_n*dh_n), fed in as the
        # outputs' gradients: the work rnn_backward does for the same dy
        # and dh_n, without building the loss. autograd.grad rather than
        # backward(): nothing accumulates into .grad from run to run.
        dx, dh0, dw_ih, dw_hh, dbias = torch.autograd.grad((y, h_n), wrt, (dy, dh_n))
        return (y.detach().numpy(), h_n[0].detach().numpy(),
                RNNGrads(dx.numpy(), dh0[0].numpy(), dw_ih.numpy(), dw_hh.numpy(), dbias.numpy()))

    return {"fwd": forward, "fwd+bwd": forward_backward}


PEERS = {
    "fusedrnn": partial(_numpy_peer, fusedrnn),
    "reference": partial(_numpy_peer, reference),
    "fusedrnn.torch": partial(_torch_peer, "fusedrnn.torch"),
    "torch": partial(_torch_peer, "torch.nn"),
}

# What each peer's speed-up is measured against: torch.nn.RNN against the
# module that replaces it (both torch modules, autograd and all), the others
# against fusedrnn's NumPy API.
BASELINE = {"reference": "fusedrnn", "fusedrnn.torch": "fusedrnn", "torch": "fusedrnn.torch"}


@contextmanager
def num_threads(n):
    """fusedrnn, and torch if a peer has loaded it, use up to `n` threads
    inside; the previous counts come back after. NumPy's BLAS, under the
    reference, keeps its own."""
    modules = [fusedrnn]  # both spell it get_num_threads/set_num_threads
    if "torch" in sys.modules:
        modules.append(sys.modules["torch"])
    previous = [m.get_num_threads() for m in modules]
    for m in modules:
        m.set_num_threads(n)
    try:
        yield
    finally:
        for m, count in zip(modules, previous):
            m.set_num_threads(count)


# --- timing -----------------------------------------------------------------

class Repeats(NamedTuple):
    """How long one implementation is timed on one case: repeat until
    `budget` seconds are spent, and for at least `min_runs` runs unless the
    runs so far took `cap` seconds (the reference on L runs for seconds)."""

    budget: float
    min_runs: int
    cap: float


# One untimed warm-up call first: a cold first run (page faults, thread pools
# starting, torch's first autograd call costs ~0.4 s) would otherwise be the
# whole sample where a single run is taken (QUICK, or runs lasting seconds).
FULL = Repeats(budget=0.3, min_runs=3, cap=2.0)
QUICK = Repeats(budget=0.02, min_runs=1, cap=0.0)


def median_seconds(fn, repeats):
    fn()
    times = []
    while sum(times) < repeats.budget or (len(times) < repeats.min_runs
                                          and sum(times) < repeats.cap):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
