"""What `python -m fusedrnn`, `python -m fusedrnn bench` and the
pytest-benchmark suite in bench/ share: the standard shapes and their FLOP
counts, the cells (rnn, lstm, gru), the problems timed, the implementations
timed side by side (the peers), how their results are compared, and the
timing loop.

Importing this module never imports torch, oneDNN, ONNX Runtime or JAX;
building a peer of theirs does (the outside ones live in fusedrnn._peers).
"""

import importlib
import statistics
import sys
import time
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Callable, NamedTuple, Optional

import numpy as np

import fusedrnn  # the public namespace is what is timed (a test may replace its functions)

from . import _blas, _engine, _peers, reference
from ._checks import BFLOAT16
from ._tolerances import TOLERANCE, scaled_errors
from ._types import GRUGrads, LSTMGrads, RNNGrads

# The standard shapes (docs/design.md, docs/benchmarks.md): T, B, D, H.
SHAPES = {
    "S": (100, 1, 64, 64),
    "M": (100, 32, 128, 128),
    "L": (100, 64, 512, 512),
    "XL": (50, 16, 1760, 1760),
}

# mode -> FLOPs of one run in units of a forward's: per forward GEMM the
# backward does two (dh through W_hh or W_ih, and the weight gradient).
MODES = {"fwd": 1, "fwd+bwd": 3}


class Problem(NamedTuple):
    """The arguments of one forward and backward pair of a cell with G gates.
    For the rnn, b_ih is its one bias and b_hh is None; c0 and dc_n are the
    LSTM's only (None otherwise)."""

    x: np.ndarray  # [T,B,D]
    h0: np.ndarray  # [B,H]
    c0: Optional[np.ndarray]  # [B,H]
    w_ih: np.ndarray  # [G*H,D]
    w_hh: np.ndarray  # [G*H,H]
    b_ih: np.ndarray  # [G*H]
    b_hh: Optional[np.ndarray]  # [G*H]
    dy: np.ndarray  # [T,B,H]
    dh_n: np.ndarray  # [B,H]
    dc_n: Optional[np.ndarray]  # [B,H]
    lengths: Optional[np.ndarray] = None  # [B] int64: a packed batch's; None: all T


# --- cells ------------------------------------------------------------------
# A cell's run calls `impl`'s forward (and backward) on a Problem: impl is
# fusedrnn (or, in the bench's runs, _Reusing, which calls it) or
# fusedrnn.reference, which spell them the same. The function is looked up
# on each call, so that a test can replace fusedrnn's. The result names
# every array: y, the final states, then the gradients by
# their field names (RNNGrads, LSTMGrads, GRUGrads). The gated cells'
# backward takes the reserve of a training forward. A packed problem's
# lengths go to every call.

def _run_rnn(impl, p, backward, **options):
    options = dict(options, lengths=p.lengths)
    y, h_n = impl.rnn_forward(p.x, p.h0, p.w_ih, p.w_hh, p.b_ih, **options)
    out = {"y": y, "h_n": h_n}
    if backward:
        out |= impl.rnn_backward(p.x, p.h0, p.w_ih, p.w_hh, y, p.dy, p.dh_n,
                                 **options)._asdict()
    return out


def _run_lstm(impl, p, backward, **options):
    options = dict(options, lengths=p.lengths)
    y, h_n, c_n, reserve = impl.lstm_forward(p.x, p.h0, p.c0, p.w_ih, p.w_hh, p.b_ih, p.b_hh,
                                             training=backward, **options)
    out = {"y": y, "h_n": h_n, "c_n": c_n}
    if backward:
        out |= impl.lstm_backward(p.x, p.h0, p.c0, p.w_ih, p.w_hh, p.b_ih, p.b_hh, y, reserve,
                                  p.dy, p.dh_n, p.dc_n, **options)._asdict()
    return out


def _run_gru(impl, p, backward, **options):
    options = dict(options, lengths=p.lengths)
    y, h_n, reserve = impl.gru_forward(p.x, p.h0, p.w_ih, p.w_hh, p.b_ih, p.b_hh,
                                       training=backward, **options)
    out = {"y": y, "h_n": h_n}
    if backward:
        out |= impl.gru_backward(p.x, p.h0, p.w_ih, p.w_hh, p.b_ih, p.b_hh, y, reserve, p.dy,
                                 p.dh_n, **options)._asdict()
    return out


class Cell(NamedTuple):
    gates: int  # G: the weights are [G*H,D] and [G*H,H]
    lstm: bool  # a cell state c besides h
    run: Callable  # (impl, Problem, backward, **options) -> {name: array}
    grads: type  # the gradients' NamedTuple, fields in the order of the inputs
    torch_class: str  # the torch.nn module, and fusedrnn.torch's drop-in for it


CELLS = {
    "rnn": Cell(1, False, _run_rnn, RNNGrads, "RNN"),
    "lstm": Cell(4, True, _run_lstm, LSTMGrads, "LSTM"),
    "gru": Cell(3, False, _run_gru, GRUGrads, "GRU"),
}


def flops(shape, mode, cell="rnn", lengths=None):
    """FLOPs of one run of `mode` on `shape` (T, B, D, H) for a cell of G
    gates: a forward is 2*T*B*G*H*(D+H), its two products per step; with
    lengths, only the steps within them count."""
    T, B, D, H = shape
    steps = T * B if lengths is None else int(np.sum(lengths))
    return MODES[mode] * 2 * steps * CELLS[cell].gates * H * (D + H)


# How the batch's sequences are laid out: all of length T ("padded"), or of
# lengths drawn uniformly from 1..T, a PackedSequence for the torch modules
# ("packed").
SEQUENCES = ("padded", "packed")


def problem(shape, dtype, rng, cell="rnn", seq="padded"):
    """Random arguments of `cell` for `shape` (T, B, D, H). Weights scaled by
    1/sqrt(fan-in) keep tanh and sigmoid out of saturation, where a wrong
    gradient term would vanish."""
    T, B, D, H = shape
    G, lstm = CELLS[cell].gates, CELLS[cell].lstm
    gated = G > 1

    def normal(*dims, scale=1.0, when=True):
        return (scale * rng.standard_normal(dims)).astype(dtype) if when else None

    # Drawn in the field order, nothing for a None: for the rnn, the same
    # draws as before the gated cells were added.
    # The lengths last, so that a padded problem is the same either way.
    return Problem(normal(T, B, D), normal(B, H, scale=0.5), normal(B, H, scale=0.5, when=lstm),
                   normal(G * H, D, scale=D ** -0.5), normal(G * H, H, scale=H ** -0.5),
                   normal(G * H, scale=0.5), normal(G * H, scale=0.5, when=gated),
                   normal(T, B, H), normal(B, H), normal(B, H, when=lstm),
                   rng.integers(1, T + 1, B) if seq == "packed" else None)


# --- peers ------------------------------------------------------------------
# A peer builds what it needs for one cell's Problem once and returns
# {mode: a callable doing one run}. Every run returns {name: NumPy array},
# as a cell's run does: y and the final states for "fwd", the gradients too
# for "fwd+bwd".

class _Reusing:
    """fusedrnn's NumPy API as one run of the bench calls it: each function
    gets its own previous result back as out= (grads_out= for a backward),
    so that the timed calls write into the arrays of the untimed warm-up, as
    a training loop would and as the oneDNN peer writes into memories made
    once, rather than fault in fresh pages for a gated forward's reserve
    (2% of the call at L)."""

    def __getattr__(self, name):   # a function's first use; then an attribute
        keyword = "grads_out" if name.endswith("_backward") else "out"
        last = None

        def call(*args, **kwargs):
            nonlocal last
            kwargs[keyword] = last
            last = getattr(fusedrnn, name)(*args, **kwargs)
            return last
        setattr(self, name, call)
        return call


class _Serial:
    """A module whose functions run with NumPy's BLAS on one thread (the
    reference: fusedrnn._blas says why)."""

    def __init__(self, module):
        self.module = module

    def __getattr__(self, name):
        call = _blas.serially(getattr(self.module, name))
        setattr(self, name, call)
        return call


def _numpy_peer(impl, cell, p):
    """fusedrnn's NumPy API and fusedrnn.reference, which spell their
    functions the same: impl() is what each mode's run calls, its own."""
    run = CELLS[cell].run
    return {mode: partial(run, impl(), p, mode == "fwd+bwd") for mode in MODES}


# --- torch -------------------------------------------------------------------
# A bfloat16 problem runs torch's way of training in bf16: float32 modules,
# inputs and gradients under torch.autocast("cpu", dtype=torch.bfloat16),
# which decides per operator what runs in bf16 (autocast_dtypes says what
# it decided for the modules timed).

def tensor(a):
    """A NumPy array as a torch tensor on its memory; a bfloat16 array (which
    torch.from_numpy does not take) as a float32 copy of its values, exact:
    the float32 activations a model under torch.autocast passes on."""
    import torch
    return torch.from_numpy(a.astype(np.float32) if a.dtype == BFLOAT16 else a)


def autocast(dtype):
    """The context torch's runs of a problem of `dtype` are made in:
    torch.autocast to bfloat16 for a bfloat16 problem, else nothing."""
    if np.dtype(dtype) != BFLOAT16:
        return nullcontext()
    import torch
    return torch.autocast("cpu", dtype=torch.bfloat16)


def autocast_dtypes(module, cell, seqs=SEQUENCES):
    """{seq: the dtype (its name) of y} from `module`'s (torch.nn's or
    fusedrnn.torch's) `cell` under autocast(bfloat16), on a small problem
    of each layout of `seqs`. What autocast's policy gave the module's
    output, not all it ran in: torch 2.13's GRU on CPU returns float32, yet
    its products inside run in bf16 (its error against the reference is
    bf16's)."""
    p = problem((3, 2, 4, 5), BFLOAT16, np.random.default_rng(0), cell)
    found = {}
    for seq in seqs:
        case = p._replace(lengths=np.array([3, 1]) if seq == "packed" else None)
        found[seq] = _torch_peer(module, cell, case)["fwd"]()["y"].dtype.name
    return found


def _numpy(t):
    """A torch tensor's values as a NumPy array; a bfloat16 one as an
    ml_dtypes.bfloat16 array of its bits, so that the dtype autocast gave
    it shows."""
    import torch
    t = t.detach()
    return t.view(torch.int16).numpy().view(BFLOAT16) if t.dtype == torch.bfloat16 else t.numpy()


def torch_module(module, cell, p, step=False):
    """`module`.RNN, LSTM or GRU (with `step`, its RNNCell, LSTMCell or
    GRUCell): torch.nn's, or fusedrnn.torch's drop-in, which takes the same
    arguments; with the problem's weights, in the problem's dtype (float32
    for bfloat16, which runs under autocast)."""
    import torch

    name = CELLS[cell].torch_class + ("Cell" if step else "")
    suffix = "" if step else "_l0"   # a layer's parameters are per layer
    D, H = p.w_ih.shape[1], p.w_hh.shape[1]
    # The dtype of x's tensor, taken from an empty slice: no copy of x.
    rnn = getattr(importlib.import_module(module), name)(D, H, dtype=tensor(p.x[:0]).dtype)
    weights = {"weight_ih": p.w_ih, "weight_hh": p.w_hh, "bias_ih": p.b_ih, "bias_hh": p.b_hh}
    with torch.no_grad():
        for weight, value in weights.items():
            if value is None:   # fusedrnn's one rnn bias stands for b_ih + b_hh
                getattr(rnn, weight + suffix).zero_()
            else:
                getattr(rnn, weight + suffix).copy_(tensor(value))
    return rnn


def _torch_peer(module, cell, p, compiled=False):
    """`module`.RNN, LSTM or GRU with the problem's weights, in the problem's
    dtype: torch.nn's, or fusedrnn.torch's drop-in, which takes the same
    arguments; a packed problem's x as a PackedSequence. compiled: the
    module under torch.compile, with torch's allow_rnn switch on while it
    runs (Dynamo refuses torch's RNN modules, and their subclasses, without
    it). A bfloat16 problem: the float32 module, x and states under
    autocast (fusedrnn._bench.tensor, autocast), the backward outside it, as
    autocast's docs have a training step do."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    spec = CELLS[cell]
    T = p.x.shape[0]
    # torch takes h0 (and c0) and returns h_n (and c_n) as [1,B,H] (layers,
    # batch, hidden); the LSTM's as a tuple (h, c).
    x = tensor(p.x).requires_grad_()
    states0 = tuple(tensor(a[None]).requires_grad_() for a in (p.h0, p.c0) if a is not None)
    d_states_n = tuple(tensor(a[None]) for a in (p.dh_n, p.dc_n) if a is not None)
    dy = tensor(p.dy)
    rnn = torch_module(module, cell, p)
    state_names = ("h_n", "c_n")[:len(states0)]
    # In the order of the cell's gradient fields: x, the states, the weights,
    # the biases (the rnn's one).
    wrt = (x, *states0, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0,
           *([] if p.b_hh is None else [rnn.bias_hh_l0]))
    lengths = None if p.lengths is None else torch.from_numpy(p.lengths)
    if lengths is not None:
        # The packed output's gradient: dy's rows within the lengths, in the
        # packed order (made once, as a caller's loss would give it).
        dy = pack_padded_sequence(dy, lengths, enforce_sorted=False).data
    if compiled:
        # Every case's modules share their class's forward, and Dynamo keeps
        # at most 8 compiled versions of a function (then it runs it
        # uncompiled, with a warning): each case starts from an empty cache.
        torch._dynamo.reset()
    forward_call = torch.compile(rnn) if compiled else rnn

    def call():
        # Packing is the caller's work in a training loop: it is timed.
        inputs = x if lengths is None else pack_padded_sequence(x, lengths, enforce_sorted=False)
        with torch._dynamo.config.patch(allow_rnn=True) if compiled else nullcontext(), \
                autocast(p.x.dtype):
            y, states_n = forward_call(inputs, states0 if spec.lstm else states0[0])
        return y, (states_n if spec.lstm else (states_n,))

    def named(y, states_n, grads=()):
        """{name: array} read after the timing: padding a packed y back is
        not the module's work."""
        def y_array():
            padded = y if lengths is None else pad_packed_sequence(y, total_length=T)[0]
            return _numpy(padded)
        make = {"y": y_array}
        make |= {name: (lambda s=s: _numpy(s[0])) for name, s in zip(state_names, states_n)}
        make |= {name: (lambda g=g, name=name: _numpy(g[0] if name in ("dh0", "dc0") else g))
                 for name, g in zip(spec.grads._fields, grads)}
        return _peers.Results(make)

    def forward():
        with torch.no_grad():
            return named(*call())

    def forward_backward():
        y, states_n = call()
        # The gradients of sum(y*dy) + sum(h_n*dh_n) (+ sum(c_n*dc_n)), fed
        # in as the outputs' gradients: the work the NumPy backward does for
        # the same dy, dh_n and dc_n, without building the loss.
        # autograd.grad rather than backward(): nothing accumulates into
        # .grad from run to run.
        out = y if lengths is None else y.data
        return named(y, states_n, torch.autograd.grad((out, *states_n), wrt, (dy, *d_states_n)))

    return {"fwd": forward, "fwd+bwd": forward_backward}


def _outside_peer(name, cell, p):
    """oneDNN, ONNX Runtime or JAX (fusedrnn._peers), imported on first use.
    Raises fusedrnn._peers.PeerUnavailable when it is not installed and
    Unsupported for a case it does not have; its {mode: run} may lack
    "fwd+bwd" (ONNX Runtime has no backward)."""
    return _peers.load(name).build(cell, p)


PEERS = {
    "fusedrnn": partial(_numpy_peer, _Reusing),
    "reference": partial(_numpy_peer, lambda: _Serial(reference)),
    "fusedrnn.torch": partial(_torch_peer, "fusedrnn.torch"),
    "torch": partial(_torch_peer, "torch.nn"),
    "fusedrnn.torch-compiled": partial(_torch_peer, "fusedrnn.torch", compiled=True),
    "torch-compiled": partial(_torch_peer, "torch.nn", compiled=True),
    **{name: partial(_outside_peer, name) for name in _peers.MODULES},
}

# The libraries outside this project and torch, which "vs best peer" picks
# from; fusedrnn.torch is fusedrnn and the reference is the specification.
OUTSIDE = tuple(_peers.MODULES)
RIVALS = ("torch", "torch-compiled", *OUTSIDE)

# torch's modules and the drop-ins that replace them, eager and compiled.
DROP_INS = {"torch": "fusedrnn.torch", "torch-compiled": "fusedrnn.torch-compiled"}


def baseline(impl):
    """What `impl`'s speed-up is measured against: torch's modules against
    the drop-ins that replace them (both torch modules, autograd and all),
    the others against fusedrnn's NumPy API."""
    return DROP_INS.get(impl, "fusedrnn")


# How far a bfloat16 run's results may be from the float64 reference on the
# same bf16 inputs for the bench to count it as computing the same thing.
# fusedrnn._tolerances' 3e-2 is fusedrnn's own contract, measured with the
# reference's rnn backward given fusedrnn's rounded y; here each
# implementation's own y goes into its backward, and each rounds in its own
# places (oneDNN inside its bf16 primitives, torch wherever autocast puts
# bf16). The worst errors measured, fwd+bwd on one problem of each of S, M,
# L (padded and packed) and XL (padded): fusedrnn 0.022, oneDNN 0.056, torch
# under autocast 0.13 (an LSTM's dw_hh at L, packed); a wrong gate order,
# layout or bias is off by O(1).
BF16_AGREEMENT = 0.25


def tolerance(dtype):
    """Within what the bench's results of `dtype` agree: the tests' own
    (fusedrnn._tolerances), but BF16_AGREEMENT for bfloat16."""
    dtype = np.dtype(dtype)
    return BF16_AGREEMENT if dtype == BFLOAT16 else TOLERANCE[dtype]


def disagreements(got, want, dtype, tol=None):
    """What in `got` ({name: array}) disagrees with `want`, as messages; []
    when every array of `want` is there with its shape and agrees within
    `tol`, by default tolerance(dtype) (compared in float64, as the
    reference's results are float64 whatever the dtype)."""
    tol = tolerance(dtype) if tol is None else tol
    messages = []
    for name, w in want.items():
        if name not in got:
            messages.append(f"{name}: missing")
            continue
        g, w = np.asarray(got[name], np.float64), np.asarray(w, np.float64)
        if g.shape != w.shape:
            messages.append(f"{name}: shape {g.shape}, expected {w.shape}")
            continue
        scaled = scaled_errors(g, w)
        bad = scaled > tol
        if bad.any():
            messages.append(f"{name}: {bad.sum()} of {bad.size} elements off, worst "
                            f"{scaled.max():.3g} x (|expected| + rms), tolerance {tol:g}")
    return messages


def for_mode(results, cell, mode):
    """The results of a fwd+bwd run of `cell` cut to those a run of `mode`
    returns: fwd's are the outputs, without the gradients."""
    grads = CELLS[cell].grads._fields
    return {name: a for name, a in results.items() if mode == "fwd+bwd" or name not in grads}


def worst_error(got, want):
    """(the largest error, scaled as the tolerances scale it, of any array of
    `want` against the same name in `got`, that name); the arrays
    disagreements() finds missing or misshapen are left out."""
    errors = [(float(scaled_errors(got[name], w).max(initial=0.0)), name)
              for name, w in want.items() if name in got and np.shape(got[name]) == np.shape(w)]
    return max(errors, default=(0.0, None))


@contextmanager
def num_threads(n):
    """fusedrnn, and torch and the outside peers if loaded, use up to `n`
    threads inside; the previous counts come back after. NumPy's BLAS, under
    the reference, keeps its own; JAX keeps the pool it started with
    (fusedrnn._peers.jax.honours_threads)."""
    modules = [fusedrnn]  # all spell it get_num_threads/set_num_threads
    if "torch" in sys.modules:
        modules.append(sys.modules["torch"])
    modules += _peers.loaded()
    previous = [m.get_num_threads() for m in modules]
    chosen = _engine.num_threads_chosen()   # whether fusedrnn.torch follows torch's count
    for m in modules:
        m.set_num_threads(n)
    try:
        yield
    finally:
        for m, count in zip(modules, previous):
            m.set_num_threads(count)
        _engine.restore_num_threads(previous[0], chosen)


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


class Timing(NamedTuple):
    seconds: float  # the median of the timed runs
    result: object  # what the last run returned: checked after the timing, outside it
    cores: float    # the process's CPU time over the timed runs' wall time: how
                    # many cores they kept busy, whatever thread count was asked


def median_seconds(fn, repeats):
    """The Timing of `fn` after one untimed warm-up call."""
    fn()
    times = []
    cpu = time.process_time()
    while sum(times) < repeats.budget or (len(times) < repeats.min_runs
                                          and sum(times) < repeats.cap):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    cpu = time.process_time() - cpu
    return Timing(statistics.median(times), result, cpu / sum(times))
