"""bfloat16 (ml_dtypes.bfloat16 arrays) through the NumPy API, against the
float64 reference on the same bf16 values: every cell and option, forward and
every gradient, on every ISA, at the bf16 tolerance, and the gated cells
within one rounding of the float32 result at any T; out= and grads_out=;
packed weights; the single steps; empty problems; the reserve (its size, the
round trip, a copy at any address, refused by a call of another dtype); bad
input refused before anything is written; the stacked and bidirectional
layers against the reference composition rounded where the layers store
bf16; the network's output layer and loss in float32; without ml_dtypes,
the error naming it.
"""

import re
from pathlib import Path

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes")

import fusedrnn  # noqa: E402
import test_steps  # noqa: E402
from fusedrnn import _kernel, reference  # noqa: E402
from fusedrnn._tolerances import TOLERANCE  # noqa: E402
from helpers import (CELLS, assert_close, assert_matches_reference, assert_unchanged,  # noqa: E402
                     backward, flag, forward, grad_output_choices, mixed_lengths, outputs_of,
                     random_problem, reserve_of, run_child, snapshot, states_given, states_id,
                     variants)
from test_layers import (ARCHITECTURES, LENGTHS, check_against_composition,  # noqa: E402
                         make_inputs, make_layer)
from test_packed import assert_same, bits, pack_of, packed_backward, packed_forward  # noqa: E402
from test_resets import random_resets  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
FLOAT32 = np.dtype(np.float32)

# Every cell the kernel has: the RNN with each nonlinearity, the LSTM, the
# GRU and the reset-first GRU.
RESET_FIRST = pytest.param("gru", {"linear_before_reset": False}, id="gru-reset_first")
CELL_VARIANTS = variants() + [RESET_FIRST]
GATED_VARIANTS = variants(["lstm", "gru"]) + [RESET_FIRST]

SHAPE = (7, 5, 3, 4)   # T, B, D, H: mixed_lengths gives 0, 7, 3, 1, 6

# A bf16 result is the float32 kernels' on the same bf16 inputs, rounded once
# to 8 significant bits: within 2^-8 of it, and it within float32's
# tolerance of the reference.
ONE_ROUNDING = 2.0 ** -8 + TOLERANCE[FLOAT32]


def bf16(a):
    """`a` rounded to bfloat16 (None stays None)."""
    return None if a is None else np.asarray(a).astype(BF16)


def nan_like(result):
    """Arrays of `result`'s shapes and dtypes filled with NaN (None stays
    None), as a tuple to hand as out= or grads_out=: an element a call does
    not write stays NaN."""
    return tuple(None if a is None else np.full_like(a, np.nan) for a in result)


# --- against the reference ----------------------------------------------------

@flag("resets")
@flag("batch_first")
@flag("reverse")
@flag("lengths")
@pytest.mark.parametrize("cell, options", CELL_VARIANTS)
def test_every_cell_and_option_matches_the_reference(cell, options, lengths, reverse,
                                                     batch_first, resets, isa):
    """Each combination of the initial states given or left out; every
    output and gradient bf16, within the bf16 tolerance."""
    T, B = SHAPE[:2]
    call = dict(options, reverse=reverse, batch_first=batch_first)
    if lengths:
        call["lengths"] = mixed_lengths(T, B)
    if resets:
        call["resets"] = random_resets(T, B, batch_first)
    for given in states_given(cell):
        a, d = random_problem(cell, SHAPE, BF16, batch_first=batch_first, given=given)
        assert_matches_reference(cell, a, d, BF16, f"{states_id(given)}: ", **call)


@pytest.mark.parametrize("cell, options", CELL_VARIANTS)
def test_biases_and_gradients_left_out(cell, options, isa):
    """No biases, and each combination of dy, dh_n (dc_n) left out."""
    for names in grad_output_choices(cell):
        a, d = random_problem(cell, SHAPE, BF16, bias=False, seed=1)
        d = {k: v for k, v in d.items() if k in names}
        assert_matches_reference(cell, a, d, BF16, f"given {names}: ", **options)


@pytest.mark.parametrize("T", [5, 60])
@pytest.mark.parametrize("cell, options", GATED_VARIANTS)
def test_gated_results_at_any_T(cell, options, T, isa):
    """At any T: the backward reads y as its forward computed it (float32,
    kept in the reserve), not the rounded bf16 y, through which dW_hh =
    sum_t dgates_t h_{t-1}^T took a rounding per step (2e-2 of its scale
    for the GRU at T = 50). Without bf16 products (no AVX512_BF16, or
    another ISA forced) the results are the float32 ones rounded once; with
    them, each product rounds its A operand too (h_{t-1}, the gate
    gradients), and the bf16 tolerance holds at T = 60 as at T = 5."""
    a, d = random_problem(cell, (T, 2, 8, 64), BF16, seed=T)
    tol = TOLERANCE[BF16] if _kernel.bf16_dot() else ONE_ROUNDING
    assert_matches_reference(cell, a, d, BF16, f"T={T}: ", tol=tol, **options)


def _dot_on(isa):
    """Whether `isa`'s table has the bf16 dot product on this CPU."""
    previous = fusedrnn.get_isa()
    try:
        fusedrnn.set_isa(isa)
        return _kernel.bf16_dot()
    finally:
        fusedrnn.set_isa(previous)


DOT = [isa for isa in fusedrnn.available_isas() if _dot_on(isa)]


@pytest.mark.skipif(not DOT, reason="no ISA here has a bf16 dot product")
@pytest.mark.parametrize("cell", CELLS)
def test_dot_products_round_their_operands(cell):
    """Where the table has the bf16 dot product, the products read h_{t-1}
    rounded to bf16: the results differ from the float32 kernels' on the
    same values (an ISA without it), by about bf16's precision, and are as
    close to the reference."""
    a, _ = random_problem(cell, (20, 4, 16, 32), BF16, seed=3)
    plain = next(isa for isa in fusedrnn.available_isas() if isa not in DOT)
    previous = fusedrnn.get_isa()
    y = {}
    try:
        for isa in (DOT[0], plain):
            fusedrnn.set_isa(isa)
            y[isa] = forward(fusedrnn, cell, a)[0].astype(np.float64)
    finally:
        fusedrnn.set_isa(previous)
    a64 = {k: v.astype(np.float64) if isinstance(v, np.ndarray) and v.dtype == BF16 else v
           for k, v in a.items()}
    y64 = forward(reference, cell, a64)[0]
    rms = np.sqrt(np.mean(y64 ** 2))
    apart = np.abs(y[DOT[0]] - y[plain]).max() / rms
    assert 0 < apart < 2e-2, apart
    for isa in y:
        assert np.abs(y[isa] - y64).max() / rms < 2e-2, isa


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "sigmoid"])
def test_rnn_step(nonlinearity, isa):
    """rnn_cell and rnn_cell_backward against the reference's one-step
    sequence, differentiated at the step's h: the RNN's backward takes act'
    from the h it is given, here rounded to bf16 (test_steps' float check
    gives the reference its own h)."""
    a, d = random_problem("rnn", (1, 3, 5, 4), BF16)
    x, weights = a["x"], (a["w_ih"], a["w_hh"])
    h = fusedrnn.rnn_cell(x[0], a["h0"], *weights, a["bias"], nonlinearity=nonlinearity)
    y, _ = reference.rnn_forward(x, a["h0"], *weights, a["bias"], nonlinearity=nonlinearity)
    assert_close(h, y[0], BF16, "h")
    g = fusedrnn.rnn_cell_backward(x[0], a["h0"], *weights, h, d["dh_n"],
                                   nonlinearity=nonlinearity)
    want = reference.rnn_backward(x, a["h0"], *weights, h[None], None, d["dh_n"],
                                  nonlinearity=nonlinearity)
    for name in g._fields:
        value = getattr(want, name)
        assert_close(getattr(g, name), value[0] if name == "dx" else value, BF16, name)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("cell", ["lstm", "gru", "gru_reset_first"])
def test_gated_step(cell, training, isa):
    """test_steps' check of the gated steps, in bf16 (their reference reads
    no h of the step's)."""
    test_steps.test_gated_cell(cell, BF16, training)


@pytest.mark.parametrize("cell, options", CELL_VARIANTS)
def test_zero_time_steps(cell, options, isa):
    """T = 0: the final states are the initial ones, their gradients dh_n
    (dc_n), every other gradient zero; all bf16."""
    a, d = random_problem(cell, (0, 3, 2, 4), BF16)
    assert_matches_reference(cell, a, d, BF16, tol=0, **options)


# --- out=, grads_out=, packed weights -------------------------------------------

@pytest.mark.parametrize("cell, options", CELL_VARIANTS)
def test_out_and_grads_out_take_the_results(cell, options, isa):
    """The results in the very arrays given, bitwise those of a call without
    them; lengths, so that the reserve rows past a sequence's end stay
    unwritten and the backward must not read them."""
    a, d = random_problem(cell, SHAPE, BF16)
    call = dict(options, lengths=mixed_lengths(*SHAPE[:2]))
    want = forward(fusedrnn, cell, a, training=True, **call)
    out = nan_like(want)
    got = forward(fusedrnn, cell, a, training=True, out=out, **call)
    assert all(g is o for g, o in zip(got, out)), "not the arrays given"
    assert_same(outputs_of(cell, got), outputs_of(cell, want), "out")
    want_grads = backward(fusedrnn, cell, a, want[0], reserve_of(cell, want), d, **call)
    grads_out = nan_like(want_grads)
    grads = backward(fusedrnn, cell, a, got[0], reserve_of(cell, got), d, grads_out=grads_out,
                     **call)
    assert all(g is o for g, o in zip(grads, grads_out)), "not the arrays given"
    assert_same(grads._asdict(), want_grads._asdict(), "grads_out")


@pytest.mark.parametrize("cell, options", CELL_VARIANTS)
def test_packed_weights_give_the_same_bits(cell, options, isa):
    """A bf16 pack (of float32 panels of the widened weights) serves the
    forward and the backward: bitwise the results with the weights
    themselves, with lengths and reverse, and batch_first."""
    T, B = SHAPE[:2]
    for call in ({}, {"lengths": mixed_lengths(T, B), "reverse": True}, {"batch_first": True}):
        a, d = random_problem(cell, SHAPE, BF16, batch_first=call.get("batch_first", False))
        packed = pack_of(cell, a, options)
        assert (packed.dtype, packed.isa) == (BF16, isa)
        label = f"{call}"
        raw = forward(fusedrnn, cell, a, True, **options, **call)
        got = packed_forward(cell, a, packed, True, **options, **call)
        assert_same(outputs_of(cell, got), outputs_of(cell, raw), label)
        want = backward(fusedrnn, cell, a, raw[0], reserve_of(cell, raw), d, **options, **call)
        grads = packed_backward(cell, a, packed, got[0], reserve_of(cell, got), d, **options,
                                **call)
        assert_same(grads._asdict(), want._asdict(), label)


# --- the reserve ------------------------------------------------------------------

@pytest.mark.parametrize("cell, options", GATED_VARIANTS)
def test_the_reserve_round_trip(cell, options, isa):
    """The reserve: float32 (the recurrence's values), the API's header of
    nine int64 (18 float32 elements), then per (t, b) G + 2 rows of H values
    (the gates, the state row and y). The backward gives the same bits with
    it, without it (recomputed) and with a copy at another address, 4 bytes
    past a multiple of 8."""
    T, B, D, H = SHAPE
    G = CELLS[cell].gates
    a, d = random_problem(cell, SHAPE, BF16)
    out = forward(fusedrnn, cell, a, training=True, **options)
    assert out.reserve.dtype == np.float32
    assert out.reserve.shape == (18 + T * B * (G + 2) * H,)
    moved = np.empty(out.reserve.size + 1, np.float32)[1:]
    moved[...] = out.reserve
    assert moved.ctypes.data % 8 == 4
    want = backward(fusedrnn, cell, a, out[0], out.reserve, d, **options)
    for reserve, label in ((None, "recomputed"), (moved, "moved")):
        got = backward(fusedrnn, cell, a, out[0], reserve, d, **options)
        assert_same(got._asdict(), want._asdict(), label)


@pytest.mark.parametrize("cell, options", GATED_VARIANTS)
def test_a_reserve_of_another_dtype_is_refused(cell, options):
    """A float32 call's reserve in a bf16 backward, and a bf16 one in a
    float32 backward of the same values (both float32 arrays, of G + 1 and
    G + 2 rows a step): refused with a ValueError naming the call's dtype,
    grads_out and the inputs left as they were."""
    a, d = random_problem(cell, SHAPE, BF16)
    a32 = {k: None if v is None else v.astype(np.float32) for k, v in a.items()}
    d32 = {k: v.astype(np.float32) for k, v in d.items()}
    ours = forward(fusedrnn, cell, a, training=True, **options)
    theirs = forward(fusedrnn, cell, a32, training=True, **options)
    for inputs, grads, y, reserve, dtype in ((a, d, ours[0], theirs.reserve, "bfloat16"),
                                             (a32, d32, theirs[0], ours.reserve, "float32")):
        grads_out = nan_like(backward(fusedrnn, cell, inputs, y, None, grads, **options))
        before = snapshot({**inputs, **grads, "y": y, "reserve": reserve,
                           **dict(enumerate(grads_out))})
        with pytest.raises(ValueError, match=f"^reserve: expected shape .* of this {dtype} "):
            backward(fusedrnn, cell, inputs, y, reserve, grads, grads_out=grads_out, **options)
        assert_unchanged({**inputs, **grads, "y": y, "reserve": reserve,
                          **dict(enumerate(grads_out))}, before)


# --- bad input ------------------------------------------------------------------

def _with(**changes):
    """A change to a problem's arrays: {name: function of the array}."""
    return lambda a: {**a, **{k: f(a[k]) for k, f in changes.items()}}


def _float32(a):
    return a.astype(np.float32)


def _float16(a):
    return a.astype(np.float16)


# (what is wrong, the pass, the change to the inputs (forward: a, backward:
# a and d in one dict), the message; every one a TypeError). out= and
# grads_out= are bf16 but where the case makes them float32.
BAD = {
    "weights_float32": ("forward", _with(w_ih=_float32, w_hh=_float32),
                        r"w_hh: expected dtype bfloat16 \(the dtype of x\), got float32"),
    "x_float16": ("forward", _with(x=_float16),
                  "x: expected a float32, float64 or bfloat16 array, got dtype float16"),
    "h0_float16": ("forward", _with(h0=_float16),
                   "h0: expected a float32, float64 or bfloat16 array, got dtype float16"),
    "h0_float32": ("forward", _with(h0=_float32),
                   r"h0: expected dtype bfloat16 \(the dtype of x\), got float32"),
    "w_ih_float16": ("forward", _with(w_ih=_float16),
                     "w_ih: expected a float32, float64 or bfloat16 array, got dtype float16"),
    "out_float32": ("forward", None,
                    r"out.y: expected dtype bfloat16 \(the dtype of x\), got float32"),
    "x_float16_backward": ("backward", _with(x=_float16),
                           "x: expected a float32, float64 or bfloat16 array, got dtype float16"),
    "dy_float16": ("backward", _with(dy=_float16),
                   "dy: expected a float32, float64 or bfloat16 array, got dtype float16"),
    "dy_float64": ("backward", _with(dy=lambda a: a.astype(np.float64)),
                   r"dy: expected dtype bfloat16 \(the dtype of x\), got float64"),
    "grads_out_float32": ("backward", None,
                          r"grads_out.dx: expected dtype bfloat16 \(the dtype of x\), got "
                          r"float32"),
}


@pytest.mark.parametrize("case", BAD)
@pytest.mark.parametrize("cell", CELLS)
def test_bad_input_is_refused_and_nothing_written(cell, case):
    """A TypeError naming the array, and the dtype it should have (that of
    x) when it has another of the three; the inputs, and the arrays given
    to write into, left as they were."""
    op, change, message = BAD[case]
    a, d = random_problem(cell, SHAPE, BF16)
    out = forward(fusedrnn, cell, a, training=True)
    grads = backward(fusedrnn, cell, a, out[0], reserve_of(cell, out), d)
    if op == "forward":
        given = a if change is None else change(a)
        into = nan_like(out)
    else:
        given = {**a, **d} if change is None else change({**a, **d})
        into = nan_like(grads)
    if change is None:   # the arrays to write into are the wrong ones
        into = tuple(None if v is None else v.astype(np.float32) for v in into)
    arrays = {**given, "y": out[0], "reserve": reserve_of(cell, out),
              **{f"into{i}": v for i, v in enumerate(into)}}
    before = snapshot(arrays)
    with pytest.raises(TypeError, match=f"^{message}$"):
        if op == "forward":
            forward(fusedrnn, cell, given, training=True, out=into)
        else:
            backward(fusedrnn, cell, given, out[0], reserve_of(cell, out), given,
                     grads_out=into)
    assert_unchanged(arrays, before)


@pytest.mark.parametrize("cell, options", CELL_VARIANTS)
def test_a_pack_of_another_dtype_is_refused(cell, options):
    """A bf16 pack for float32 x, and a float32 pack for bf16 x."""
    a, _ = random_problem(cell, SHAPE, BF16)
    a32 = {k: None if v is None else v.astype(np.float32) for k, v in a.items()}
    name = {"rnn": "an RNN", "lstm": "an LSTM", "gru": "a GRU"}[cell]
    if options.get("linear_before_reset") is False:
        name += " (linear_before_reset=False)"
    for pack_from, x_from, dtype, other in ((a, a32, "bfloat16", "float32"),
                                            (a32, a, "float32", "bfloat16")):
        packed = pack_of(cell, pack_from, options)
        message = f"w_ih: packed weights of {name} in {dtype}, for x in {other}"
        with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
            packed_forward(cell, x_from, packed, **options)


# --- the layers and the network ---------------------------------------------------

@pytest.mark.parametrize("lengths, batch_first", [(None, False), (LENGTHS, True)],
                         ids=["full-time_major", "lengths-batch_first"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("cell", CELLS)
def test_layers_match_the_reference_composition(cell, architecture, lengths, batch_first, isa):
    """fusedrnn.RNN, LSTM and GRU with dtype="bfloat16", stacked and
    bidirectional: each kernel call is the reference on its bf16 inputs,
    rounded once, so the expected results are the reference composition's
    in float64 with what one call hands the next rounded to bf16 as the
    layers store it (a layer's y, the next layer's input; each direction's
    dx and their sum; the RNN's one bias, b_ih + b_hh). Every result and
    parameter gradient bf16, within the bf16 tolerance."""
    num_layers, bidirectional = ARCHITECTURES[architecture]
    layer = make_layer(cell, num_layers, bidirectional, "bfloat16", batch_first=batch_first)
    assert layer.dtype == BF16 and all(p.dtype == BF16 for p in layer.params.values())
    x, states, dy, d_states = make_inputs(cell, BF16, batch_first, num_layers, bidirectional)
    check_against_composition(assert_close, layer, cell, x, states, dy, d_states, lengths,
                              num_layers, bidirectional, batch_first, BF16, stored=bf16)


@pytest.mark.parametrize("cell", CELLS)
def test_state_dicts_cross_between_dtypes(cell):
    """A float32 layer's state dict loads into a bf16 layer rounded to it,
    and a bf16 one into a float32 layer exactly (bf16 values are float32
    ones)."""
    narrow = make_layer(cell, dtype=BF16, seed=1)
    wide = make_layer(cell, dtype=np.float32, seed=2)
    narrow.load_state_dict(wide.state_dict())
    for name, p in narrow.params.items():
        assert bits(p) == bits(bf16(wide.params[name])), name
    wide = make_layer(cell, dtype=np.float32, seed=3)
    wide.load_state_dict(narrow.state_dict())
    for name, p in wide.params.items():
        assert bits(p) == bits(narrow.params[name].astype(np.float32)), name


T, B, D, H, O = 5, 3, 4, 6, 3


def network_results(net, x, target, lengths):
    """A training step's forward, loss and backward: (y, the loss, dx, the
    gradients), the gradients copied (the next forward replaces them)."""
    y, _ = net.forward(x, lengths=lengths)
    loss = net.loss(target)
    dx, _ = net.backward()
    return y, loss, dx, dict(net.grads)


@pytest.mark.parametrize("activation", ["identity", "tanh", "sigmoid", "softmax"])
@pytest.mark.parametrize("cell", CELLS)
def test_network_output_layer_and_loss_run_in_float32(cell, activation):
    """ElmanRNN(dtype="bfloat16"): the recurrent layer above, then the
    output layer and the loss in float32 on the layer's bf16 h, what they
    return rounded once. Against a float64 network with the same parameters
    whose recurrent layer hands it the same h and takes back its dh: y and
    the output layer's gradients within one rounding, the loss to float32's
    precision, and the recurrent layer's gradients its own backward of that
    dh in bf16."""
    options = dict(num_layers=2, bidirectional=True, output_activation=activation, seed=0,
                   cell=cell)
    net = fusedrnn.ElmanRNN(D, H, O, dtype="bfloat16", **options)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(T, B, D)).astype(BF16)
    target = rng.integers(0, O, (T, B)) if activation == "softmax" else \
        rng.uniform(0, 1, (T, B, O))
    lengths = [T, 2, 0]
    y, loss, dx, grads = network_results(net, x, target, lengths)
    assert isinstance(loss, float)
    assert y.dtype == dx.dtype == BF16
    assert all(g.dtype == BF16 for g in grads.values())

    h, _ = net.rnn.forward(x, None, lengths)   # the same bits the network's forward got
    twin = fusedrnn.ElmanRNN(D, H, O, dtype=np.float64, **options)
    twin.load_state_dict({k: v.astype(np.float64) for k, v in net.params.items()})
    handed = []
    twin.rnn.forward = lambda *_: (h.astype(np.float64), None)
    twin.rnn.backward = lambda dh, _: handed.append(dh) or (None, None)
    y64, loss64, _, grads64 = network_results(twin, x.astype(np.float64), target, lengths)
    assert_close(y, y64, BF16, "y", ONE_ROUNDING)
    # float32 arithmetic on the same values: ~1e-7 relative (1e-4 with the
    # targets and the output in bf16)
    assert loss == pytest.approx(loss64, rel=1e-5)
    for name in ("weight_hy", "bias_hy"):
        assert_close(grads[name], grads64[name], BF16, name, ONE_ROUNDING)
    layer_dx, _ = net.rnn.backward(bf16(handed[0]))
    assert_close(dx, layer_dx, BF16, "dx")
    for name, g in net.rnn.grads.items():
        assert_close(grads[name], g, BF16, name)


def test_training_helpers():
    """sample() draws from bf16 probabilities what it draws from the same
    values in float64; the optimisers refuse bf16 parameters (docs/api.md)."""
    probs = bf16(np.random.default_rng(0).dirichlet(np.ones(5), size=(6, 3)))
    draws = fusedrnn.sample(probs, rng=1)
    assert bits(draws) == bits(fusedrnn.sample(probs.astype(np.float64), rng=1))
    net = fusedrnn.ElmanRNN(2, 3, 4, dtype="bfloat16")
    for optimizer in (fusedrnn.SGD, fusedrnn.Adam):
        with pytest.raises(TypeError, match=r"^params\['weight_ih_l0'\]: expected a float "):
            optimizer(net.params, lr=0.1)


def test_the_docs_example_runs():
    """docs/api.md's bfloat16 section: its example runs and asserts its dtypes."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    section = text.split("\n## bfloat16\n")[1].split("\n## ")[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "docs/api.md", "exec"), {})


# --- without ml_dtypes --------------------------------------------------------------

def test_without_ml_dtypes_the_dtype_name_is_refused_naming_it(monkeypatch):
    """_checks.BFLOAT16 is None when ml_dtypes does not import: "bfloat16"
    as a dtype is then a TypeError saying what to install, wherever a dtype
    is taken."""
    monkeypatch.setattr(fusedrnn._checks, "BFLOAT16", None)
    message = (r"^dtype: bfloat16 needs the ml_dtypes package \(pip install ml_dtypes, or "
               r"fusedrnn\[bfloat16\]\)$")
    for make in (lambda: fusedrnn.LSTM(2, 3, dtype="bfloat16"),
                 lambda: fusedrnn.ElmanRNN(2, 3, 4, dtype="bfloat16"),
                 lambda: fusedrnn.peak_gflops("bfloat16")):
        with pytest.raises(TypeError, match=message):
            make()


def test_without_ml_dtypes_float32_and_float64_work_alone():
    """In a child where ml_dtypes cannot be imported: the dtypes are float32
    and float64 (and their tolerances), "bfloat16" is the TypeError naming
    ml_dtypes, and a float32 layer runs."""
    run_child("""
        sys.modules["ml_dtypes"] = None   # its import now fails
        import numpy as np
        import pytest
        import fusedrnn
        from fusedrnn._checks import BFLOAT16, FLOATS
        from fusedrnn._tolerances import TOLERANCE
        assert BFLOAT16 is None
        assert FLOATS == (np.dtype(np.float32), np.dtype(np.float64))
        assert set(TOLERANCE) == set(FLOATS)
        with pytest.raises(TypeError, match="^dtype: bfloat16 needs the ml_dtypes package"):
            fusedrnn.GRU(2, 3, dtype="bfloat16")
        y, h_n = fusedrnn.GRU(2, 3).forward(np.ones((4, 1, 2), np.float32))
        assert y.dtype == np.float32 and y.shape == (4, 1, 3)
    """)
