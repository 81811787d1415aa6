"""The bench's step-by-step cases (`python -m fusedrnn bench --steps`):
fusedrnn.torch's drop-ins called once per step, as a decoder or an RL loop
steps a cell and as a stream feeds a layer frame by frame, against
torch.nn's; and what a drop-in's call costs over the NumPy API's, beside
the floor of a torch operator and of an autograd.Function that do nothing.

A builder takes a cell and a Problem (fusedrnn._bench) and returns a run
(or {mode: run}); a run returns {name: array} read after its timing, as the
bench's peers do, so that each implementation's results are checked against
the first's. Importing this module does not import torch.
"""

import functools
import time
from functools import partial
from typing import NamedTuple

import numpy as np

from . import _bench, _peers


class Sizes(NamedTuple):
    """What the cases run on (D = H throughout)."""

    loop_steps: int        # T of a cell's loop
    loop_batches: tuple    # B of a cell's loop
    loop_hidden: tuple     # H of a cell's loop
    stream_steps: int      # T = 1 calls in a timed run of a stream (B = 1)
    stream_hidden: tuple   # H of a stream
    overhead: dict         # name -> (T, B, D, H) of the per-call cases
    copy_mb: int           # the array NumPy copies to measure the memory bandwidth
    copy_tries: int


OVERHEAD_SHAPES = {"S": _bench.SHAPES["S"], "T=1": (1, 1, 64, 64)}
FULL = Sizes(100, (1, 32), (64, 128, 512, 1024), 100, (128, 512, 1024), OVERHEAD_SHAPES, 256, 5)
# A smoke test: arrays too small for the copy to measure the memory, and
# too few steps to measure anything.
QUICK = Sizes(5, (1, 32), (64,), 5, (128,), OVERHEAD_SHAPES, 16, 1)

# The drop-in's cost over the NumPy API that the per-call case aims at: at
# most this much over the floor (a no-op operator for fwd, a no-op
# autograd.Function for fwd+bwd).
TARGETS = {"fwd": 10e-6, "fwd+bwd": 15e-6}


def time_and_check(runs, repeats, dtype, show=lambda impl: None, tol=None):
    """({implementation: median seconds}, messages) of `runs` ({implementation:
    run}), each timed in turn after `show(implementation)`: a message for
    every array of a result that disagrees with the first run's array of
    that name (a no-op's result has none), beyond `tol` (default: the
    bench's tolerance of `dtype`)."""
    seconds, failures, first = {}, [], None
    for impl, run in runs.items():
        show(impl)
        seconds[impl], result, _ = _bench.median_seconds(run, repeats)
        if first is None:
            first = result
        else:
            want = {name: first[name] for name in result}
            failures += [f"{impl}: {message}"
                         for message in _bench.disagreements(result, want, dtype, tol)]
    return seconds, failures


# --- stepping ---------------------------------------------------------------

def _stepper(module, cell, p, layer=False):
    """(`module`'s cell, or with `layer` its layer, with p's weights; a
    function that runs p's T steps from p's initial state, one call a step,
    and returns each step's output). A cell steps h = cell(x[t], h) ((h, c)
    for the LSTM); a layer is called on x[t:t+1] (T = 1) with the state it
    returned for the step before."""
    import torch

    lstm = _bench.CELLS[cell].lstm
    rnn = _bench.torch_module(module, cell, p, step=not layer)
    x = torch.from_numpy(p.x)
    # Sliced once, outside the timing: the steps' inputs are the caller's.
    xs = x.split(1) if layer else x.unbind(0)
    # A layer's states are [layers, B, H], a cell's [B, H].
    states = tuple(torch.from_numpy(a[None] if layer else a)
                   for a in (p.h0, p.c0) if a is not None)
    state0 = states if lstm else states[0]
    if layer:
        step = rnn   # (y, state)
    else:
        def step(x_t, state):
            state = rnn(x_t, state)
            return (state[0] if lstm else state), state

    def steps():
        state, outputs = state0, []
        for x_t in xs:
            y, state = step(x_t, state)
            outputs.append(y)
        return outputs

    return rnn, steps


def _outputs(outputs, shape, **more):
    """The steps' outputs as y [T,B,H], and `more` ({name: a function giving
    an array}), read after the timing."""
    import torch
    # (float32: RNNCell under autocast returns bf16)
    return _peers.Results({"y": lambda: torch.stack(outputs).detach().float().reshape(shape)
                           .numpy(), **more})


def _inference(steps, shape):
    """A run of `steps` under torch.no_grad()."""
    import torch

    def forward():
        with torch.no_grad():
            outputs = steps()
        return _outputs(outputs, shape)
    return forward


# A cell loop's modes: each of fusedrnn._bench's, online training, and the
# first two with the steps under torch.autocast("cpu", dtype=torch.bfloat16)
# ("/ac").
LOOP_MODES = ("fwd", "fwd+bwd", "online", "fwd/ac", "fwd+bwd/ac")
ONLINE_LR = 1e-3

# How far torch.nn's cells under autocast may be from fusedrnn.torch's in
# the /ac rows, in the bench's scaled error (_bench.scaled_errors). torch.nn
# rounds x, the weights and every step's state to bf16 and carries that
# through T = 100 steps; fusedrnn.torch rounds the products' operands only
# with a bf16 dot product, and without one computes in float32 throughout
# (docs/design.md, "bfloat16"). Worst elements measured on an Intel Xeon
# without AVX512_BF16, out of up to 4M: 0.26-0.40 (weight gradients at
# H = 512 and 1024), above _bench.BF16_AGREEMENT's 0.25, which layers over
# the kernel's shapes stay within; a wrong gate, layout or bias is off by
# O(1) in most elements.
AUTOCAST_LOOP_AGREEMENT = 0.5


def cell_loop(module, cell, p):
    """{mode: run} of `module`'s cell (torch.nn's or fusedrnn.torch's) over
    p's T steps: fwd under torch.no_grad(); fwd+bwd with the parameters
    requiring grad, loss = the sum of every step's h, loss.backward(), each
    parameter's .grad set to None first so that nothing accumulates; online:
    each step trained alone, as streaming and RL training do (the state
    detached, loss = the step's h summed, backward, then torch.optim.SGD's
    step: the weights change at every call), from the same weights at every
    run; and fwd, fwd+bwd with the steps under a bf16 autocast
    (LOOP_MODES)."""
    import torch

    rnn, steps = _stepper(module, cell, p)
    params = dict(rnn.named_parameters())
    initial = {name: w.detach().clone() for name, w in params.items()}
    optimiser = torch.optim.SGD(params.values(), lr=ONLINE_LR)
    lstm = _bench.CELLS[cell].lstm
    xs = torch.from_numpy(p.x).unbind(0)
    state0 = tuple(torch.from_numpy(a) for a in (p.h0, p.c0) if a is not None)

    def autocast(steps):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return steps()
        return run

    def forward_backward(steps):
        def run():
            for w in params.values():
                w.grad = None
            outputs = steps()
            torch.stack(outputs).float().sum().backward()
            return _outputs(outputs, p.dy.shape, **{
                f"d{name}": (lambda w=w: w.grad.numpy()) for name, w in params.items()})
        return run

    def online():
        with torch.no_grad():
            for name, w in params.items():
                w.copy_(initial[name])
        state, outputs = state0 if lstm else state0[0], []
        for x_t in xs:
            optimiser.zero_grad()
            state = rnn(x_t, state)
            h = state[0] if lstm else state
            h.sum().backward()
            optimiser.step()
            outputs.append(h.detach())
            state = tuple(s.detach() for s in state) if lstm else h.detach()
        return _outputs(outputs, p.dy.shape)

    runs = {"fwd": _inference(steps, p.dy.shape), "fwd+bwd": forward_backward(steps),
            "online": online, "fwd/ac": _inference(autocast(steps), p.dy.shape),
            "fwd+bwd/ac": forward_backward(autocast(steps))}
    assert tuple(runs) == LOOP_MODES
    return runs


LOOPS = {"fusedrnn.torch": partial(cell_loop, "fusedrnn.torch"),
         "torch.nn": partial(cell_loop, "torch.nn")}


def _stream(module, cell, p, layer):
    """A run of p's T steps through `module`'s layer at T = 1 (or its cell),
    under torch.no_grad()."""
    return _inference(_stepper(module, cell, p, layer)[1], p.dy.shape)


def _numpy_stream(cell, p, packed):
    """A run of p's T steps through the NumPy API, one call (T = 1) a step with
    the state carried: the weights as arrays, which each call packs, or with
    `packed` packed once beforehand (fusedrnn.pack_weights)."""
    import fusedrnn

    lstm = _bench.CELLS[cell].lstm
    biases = (p.b_ih,) if cell == "rnn" else (p.b_ih, p.b_hh)
    weights = (fusedrnn.pack_weights(cell, p.w_ih, p.w_hh, *biases),) if packed else \
        (p.w_ih, p.w_hh, *biases)
    forward = getattr(fusedrnn, f"{cell}_forward")
    xs = [p.x[t:t + 1] for t in range(p.x.shape[0])]
    state0 = (p.h0, p.c0) if lstm else (p.h0,)

    def run():
        state, ys = state0, []
        for x_t in xs:
            out = forward(x_t, *state, *weights)
            ys.append(out[0])
            state = out[1:3] if lstm else out[1:2]
        return _peers.Results({"y": lambda: np.concatenate(ys).reshape(p.dy.shape)})
    return run


# The implementations a stream is timed on, the first the one the others
# are checked against. fusedrnn.torch's layer keeps its weights packed
# between calls; the NumPy API's rows show the call without and with a pack.
STREAMS = {"fusedrnn.torch": partial(_stream, "fusedrnn.torch", layer=True),
           "numpy": partial(_numpy_stream, packed=False),
           "numpy-packed": partial(_numpy_stream, packed=True),
           "torch-cell": partial(_stream, "torch.nn", layer=False),
           "torch-layer": partial(_stream, "torch.nn", layer=True)}


def streaming(cell, p, repeats, impls=STREAMS, show=lambda impl: None):
    """({implementation: median seconds per step}, messages) of streaming
    p's T steps (B = 1) through each of `impls` ({name: builder (cell, p) ->
    run}), checked as time_and_check does. Another way to stream (packed
    weights, say) is one more entry in `impls`: its row's columns follow."""
    seconds, failures = time_and_check({impl: build(cell, p) for impl, build in impls.items()},
                                       repeats, p.x.dtype, show)
    return {impl: s / p.x.shape[0] for impl, s in seconds.items()}, failures


def copy_bandwidth(megabytes, tries):
    """Bytes per second of NumPy copying an array of `megabytes` MiB into
    another (np.copyto, on one thread), each byte counted read once and
    written once; the best of `tries` copies after one that faults the
    destination's pages in."""
    source = np.ones(megabytes * 2 ** 20 // 8)
    target = np.empty_like(source)
    np.copyto(target, source)
    best = np.inf
    for _ in range(tries):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best


# --- per call ---------------------------------------------------------------

@functools.cache
def _noop_operator():
    """An operator fusedrnn_bench::noop_layer with the schema of
    fusedrnn.torch's layer operators that only makes its outputs (empty
    tensors of their shapes), and its library, which must stay alive."""
    import torch

    from fusedrnn import torch as ftorch

    library = torch.library.Library("fusedrnn_bench", "DEF")
    library.define("noop_layer" + ftorch._LAYER)

    def noop(x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, resets, nonlinearity, reverse,
             batch_first, training):
        B, H = x.shape[0 if batch_first else 1], w_hh.shape[1]
        return (x.new_empty((*x.shape[:-1], H)), x.new_empty((B, H)),
                x.new_empty((B, H) if c0 is not None else (0,)), x.new_empty((0,)))

    library.impl("noop_layer", noop, "CompositeExplicitAutograd")
    return torch.ops.fusedrnn_bench.noop_layer.default, library


@functools.cache
def _noop_function():
    """An autograd.Function over a layer's tensors (x, h0, c0, w_ih, w_hh,
    b_ih, b_hh), returning (y, h_n, c_n) as the drop-in's node does, whose
    forward and backward only make their results (empty tensors of their
    shapes)."""
    import torch

    class NoOp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, h0, c0, w_ih, w_hh, b_ih, b_hh):
            ctx.shapes = [None if t is None else t.shape
                          for t in (x, h0, c0, w_ih, w_hh, b_ih, b_hh)]
            ctx.set_materialize_grads(False)
            B, H = h0.shape
            return (x.new_empty((*x.shape[:-1], H)), x.new_empty((B, H)),
                    x.new_empty((B, H) if c0 is not None else (0,)))

        @staticmethod
        def backward(ctx, dy, dh_n, dc_n):
            return tuple(dy.new_empty(shape) if needed else None
                         for shape, needed in zip(ctx.shapes, ctx.needs_input_grad))

    return NoOp


def per_call(cell, p):
    """{mode: {implementation: run}} of one call on p: the NumPy API
    (fusedrnn's functions, as the kernel table times them), fusedrnn.torch's
    layer (fwd under torch.no_grad(); fwd+bwd with the parameters requiring
    grad, y.sum().backward(), their .grad set to None first), and the floor:
    for fwd the no-op operator, for fwd+bwd the no-op Function with the same
    loss. p's dy is replaced by ones and its dh_n, dc_n by zeros, so that the
    NumPy backward's gradients are those of y.sum(), which the drop-in's are
    checked against."""
    import torch

    p = p._replace(dy=np.ones_like(p.dy), dh_n=np.zeros_like(p.dh_n),
                   dc_n=None if p.dc_n is None else np.zeros_like(p.dc_n))
    spec = _bench.CELLS[cell]
    numpy_api = _bench.PEERS["fusedrnn"](cell, p)
    rnn = _bench.torch_module("fusedrnn.torch", cell, p)
    weights = [rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0]
    # The NumPy API's names of their gradients: the rnn's one bias is b_ih's.
    fields = spec.grads._fields
    names = fields[fields.index("dw_ih"):]
    x = torch.from_numpy(p.x)
    h0, c0 = (None if a is None else torch.from_numpy(a) for a in (p.h0, p.c0))
    hx = (h0[None], c0[None]) if spec.lstm else h0[None]
    operator = _noop_operator()[0]
    function = _noop_function()

    def forward():
        with torch.no_grad():
            y, _ = rnn(x, hx)
        return _peers.Results({"y": y.numpy})

    def forward_backward():
        for w in weights:
            w.grad = None
        y, _ = rnn(x, hx)
        y.sum().backward()
        return _peers.Results({"y": y.detach().numpy, **{
            name: (lambda w=w: w.grad.numpy()) for name, w in zip(names, weights)}})

    def noop_forward():
        with torch.no_grad():
            operator(x, h0, c0, *weights, None, None, "tanh", False, False, False)
        return {}

    def noop_forward_backward():
        for w in weights:
            w.grad = None
        y, _, _ = function.apply(x, h0, c0, *weights)
        y.sum().backward()
        return {}

    return {"fwd": {"NumPy-API": numpy_api["fwd"], "fusedrnn.torch": forward,
                    "floor": noop_forward},
            "fwd+bwd": {"NumPy-API": numpy_api["fwd+bwd"], "fusedrnn.torch": forward_backward,
                        "floor": noop_forward_backward}}
