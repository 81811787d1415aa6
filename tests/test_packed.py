"""Weights packed once (fusedrnn.pack_weights, PackedWeights): a forward
or backward given a pack gives bitwise what it gives with the weights
themselves, on every ISA and thread count; a pack that does not fit the
call is refused, writing nothing; the pack is a snapshot of the arrays it
was made from."""

import re
from pathlib import Path

import numpy as np
import pytest

import fusedrnn
from fusedrnn import _cells, _engine, _kernel, reference
from helpers import (CELLS, DTYPES, assert_close, backward, forward, mixed_lengths,
                     outputs_of, random_problem, reserve_of)
from test_resets import random_resets

# Each cell the functions run, as (the helpers' cell, the options that select it).
VARIANTS = [pytest.param("rnn", {}, id="rnn"),
            pytest.param("rnn", {"nonlinearity": "relu"}, id="rnn-relu"),
            pytest.param("lstm", {}, id="lstm"),
            pytest.param("gru", {}, id="gru"),
            pytest.param("gru", {"linear_before_reset": False}, id="gru-reset-first")]


def pack_of(cell, a, options):
    """The pack of the weights and biases of `a`, for the cell the options select."""
    name = "gru_linear_before_reset_false" if options.get("linear_before_reset") is False \
        else cell
    return fusedrnn.pack_weights(name, a["w_ih"], a["w_hh"], *(a[b] for b in CELLS[cell].biases))


def packed_forward(cell, a, packed, training=False, **options):
    """The forward of `cell` on `a` with `packed` in place of its weights."""
    spec = CELLS[cell]
    if spec.gated:
        options["training"] = training
    return getattr(fusedrnn, f"{cell}_forward")(a["x"], *(a[s] for s in spec.states), packed,
                                                **options)


def packed_backward(cell, a, packed, y, reserve, d, **options):
    """The backward of `cell` with `packed` in place of its weights, the
    other arguments by name."""
    spec = CELLS[cell]
    given = {"y": y, "dy": d["dy"], **{k: d[k] for k in spec.d_states}}
    if spec.gated:
        given["reserve"] = reserve
    return getattr(fusedrnn, f"{cell}_backward")(a["x"], *(a[s] for s in spec.states), packed,
                                                 **given, **options)


def bits(a):
    """An array's dtype, shape and bytes: equal only when bitwise the same
    (-0.0 and 0.0 differ, a NaN equals itself)."""
    return None if a is None else (a.dtype, a.shape, a.tobytes())


def assert_same(got, expected, label):
    for name, value in expected.items():
        assert bits(got[name]) == bits(value), f"{label}: {name} differs"


@pytest.fixture
def restore_num_threads():
    previous, chosen = fusedrnn.get_num_threads(), _engine.num_threads_chosen()
    yield
    _engine.restore_num_threads(previous, chosen)


# Sizes whose recurrence splits over 2 or 3 threads for the gated cells
# (B*G*H*(H+D) >= 2^16 multiply-adds), with H not a multiple of any
# ISA's panel width.
D, H = 70, 130


@pytest.mark.usefixtures("restore_num_threads")
@pytest.mark.parametrize("T, B", [(1, 1), (1, 3), (7, 1), (7, 3)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell, options", VARIANTS)
def test_forward_with_a_pack_is_bitwise_the_same(cell, options, dtype, T, B, isa):
    """One pack serves every T, B, thread count and option: inference and
    training forwards (the reserve too) give the same bits as the same call
    with the weights, and agree with the reference."""
    a, _ = random_problem(cell, (T, B, D, H), dtype, seed=T * 10 + B)
    packed = pack_of(cell, a, options)
    assert packed.isa == isa
    expected = outputs_of(cell, forward(reference, cell, a, **options))
    calls = [{}, {"lengths": mixed_lengths(T, B), "reverse": True}, {"batch_first": True}]
    for n in (1, 2, 3):
        fusedrnn.set_num_threads(n)
        for call in calls:
            x = a["x"].swapaxes(0, 1).copy() if call.get("batch_first") else a["x"]
            given = {**a, "x": x}
            for training in ([False, True] if CELLS[cell].gated else [False]):
                label = f"threads={n} {call} training={training}"
                raw = forward(fusedrnn, cell, given, training, **options, **call)
                got = packed_forward(cell, given, packed, training, **options, **call)
                assert_same(outputs_of(cell, got), outputs_of(cell, raw), label)
                if training and "lengths" not in call:   # rows past a length: not written
                    assert bits(got.reserve) == bits(raw.reserve), f"{label}: reserve differs"
                if not call:
                    for name, value in outputs_of(cell, got).items():
                        assert_close(value, expected[name], dtype, f"{label} {name}")


@pytest.mark.usefixtures("restore_num_threads")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell, options", VARIANTS)
def test_several_blocks_of_the_input_product(cell, options, dtype, isa):
    """D = 600 takes two or three k blocks of the input product (kc = 512
    for float32 on AVX-512, 256 otherwise) and H = 600 two column blocks in
    float64 on AVX2 and AVX-512 (nc = 512) on one thread; on 3, the RNN's
    input product is split by columns (T*B*H*D >= 3 * 2^20): each thread's
    columns start inside the pack's panels. The backward's dx and dh0 products take several k
    blocks (K = G*H), split by columns on 3 threads too."""
    T, B = (7, 3) if cell == "rnn" else (2, 1)
    a, d = random_problem(cell, (T, B, 600, 600), dtype, seed=5)
    # one thread: every column block in one product
    assert_training_with_a_pack_the_same(cell, options, dtype, a, d, (1, 3))


def assert_training_with_a_pack_the_same(cell, options, dtype, a, d, threads):
    """On each of `threads`: a training forward given a pack of a's weights
    and the backward after it give the bits of those given the weights, and
    the forward agrees with the reference. Returns the backward given the
    weights on the first."""
    packed = pack_of(cell, a, options)
    expected = outputs_of(cell, forward(reference, cell, a, **options))
    first = None
    for n in threads:
        fusedrnn.set_num_threads(n)
        raw = forward(fusedrnn, cell, a, training=True, **options)
        got = packed_forward(cell, a, packed, training=True, **options)
        assert_same(outputs_of(cell, got), outputs_of(cell, raw), f"threads={n}")
        for name, value in outputs_of(cell, got).items():
            assert_close(value, expected[name], dtype, f"threads={n} {name}")
        raw_grads = backward(fusedrnn, cell, a, raw[0], reserve_of(cell, raw), d, **options)
        grads = packed_backward(cell, a, packed, raw[0], reserve_of(cell, raw), d, **options)
        assert_same(grads._asdict(), raw_grads._asdict(), f"threads={n} backward")
        first = first or (raw, raw_grads)
    return first


@pytest.mark.usefixtures("restore_num_threads")
@pytest.mark.parametrize("T, B", [(1, 1), (1, 3), (7, 1), (7, 3)])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell, options", VARIANTS)
def test_backward_with_a_pack_is_bitwise_the_same(cell, options, dtype, T, B, isa):
    """The backward given a pack reads its panels, not the weights, and
    gives the bits of the backward given the weights, for every thread
    count, with lengths, reverse, batch_first and resets, from the training
    forward's reserve and without it (the forward recomputed, from the pack
    too); it agrees with the reference."""
    a, d = random_problem(cell, (T, B, D, H), dtype, seed=T * 10 + B + 1)
    packed = pack_of(cell, a, options)
    calls = [{}, {"lengths": mixed_lengths(T, B), "reverse": True}, {"batch_first": True},
             {"lengths": mixed_lengths(T, B), "resets": random_resets(T, B, False, seed=T + B)},
             {"reverse": True, "batch_first": True, "resets": random_resets(T, B, True)}]
    for n in (1, 2, 3):
        fusedrnn.set_num_threads(n)
        for call in calls:
            bf = call.get("batch_first")
            given = {**a, "x": a["x"].swapaxes(0, 1).copy() if bf else a["x"]}
            dy = {**d, "dy": d["dy"].swapaxes(0, 1).copy() if bf else d["dy"]}
            out = forward(fusedrnn, cell, given, training=True, **options, **call)
            for reserve in ([reserve_of(cell, out), None] if CELLS[cell].gated else [None]):
                label = f"threads={n} {call} reserve given: {reserve is not None}"
                raw = backward(fusedrnn, cell, given, out[0], reserve, dy, **options, **call)
                got = packed_backward(cell, given, packed, out[0], reserve, dy, **options,
                                      **call)
                assert_same(got._asdict(), raw._asdict(), label)
                if n == 1 and reserve is not None and call.keys() <= {"lengths", "resets"}:
                    expected = backward(reference, cell, given, out[0], None, dy, **options,
                                        **call)
                    for name in got._fields:
                        assert_close(getattr(got, name), getattr(expected, name), dtype,
                                     f"{label} {name}")


@pytest.mark.usefixtures("restore_num_threads")
@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell, options", VARIANTS)
def test_one_step_streams_w_hh_bitwise_as_the_pack(cell, options, dtype, B, isa):
    """A call of one step without a pack packs W_hh's panels a few columns at
    a time just before its product reads them (rnn_tmpl.h, streams): with
    D = 1 the threads' slabs hold fewer columns than H = 600, so the forward
    (and the GRU's second backward phase) streams each gate in several
    pieces. Forward and backward give the bits of the call given a pack,
    on 1 to 3 threads, and agree with the reference."""
    a, d = random_problem(cell, (1, B, 1, 600), dtype, seed=B)
    raw, grads = assert_training_with_a_pack_the_same(cell, options, dtype, a, d, (1, 2, 3))
    want = backward(reference, cell, a, raw[0], None, d, **options)
    for name in grads._fields:
        assert_close(getattr(grads, name), getattr(want, name), dtype, f"backward {name}")


@pytest.mark.parametrize("cell, options", VARIANTS)
def test_a_pack_is_a_snapshot(cell, options, isa):
    """Changing the arrays a pack was made from, in place, changes nothing
    the pack gives, forward or backward."""
    a, d = random_problem(cell, (4, 2, 5, 7), np.float64, seed=3)
    original = {k: None if v is None else v.copy() for k, v in a.items()}
    packed = pack_of(cell, a, options)
    for name in ("w_ih", "w_hh", *CELLS[cell].biases):
        a[name] *= 3
        a[name] += 1
    out = forward(fusedrnn, cell, original, training=True, **options)
    got = packed_forward(cell, a, packed, training=True, **options)
    assert_same(outputs_of(cell, got), outputs_of(cell, out), "forward")
    raw = backward(fusedrnn, cell, original, out[0], reserve_of(cell, out), d, **options)
    got = packed_backward(cell, a, packed, out[0], reserve_of(cell, out), d, **options)
    assert_same(got._asdict(), raw._asdict(), "backward")


@pytest.mark.parametrize("cell", CELLS)
def test_without_biases_and_with_out(cell, isa):
    """A pack of weights without biases, and a forward given out=: the
    results land in the arrays given, as without the pack."""
    a, _ = random_problem(cell, (3, 2, 4, 5), np.float32, bias=False)
    packed = pack_of(cell, a, {})
    raw = forward(fusedrnn, cell, a)
    out = tuple(np.empty_like(v) if v is not None else None for v in raw)
    got = packed_forward(cell, a, packed, out=out)
    assert all(g is o for g, o in zip(got, out))
    assert_same(outputs_of(cell, got), outputs_of(cell, raw), "no biases, out=")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell, options", VARIANTS)
def test_what_a_pack_holds(cell, options, dtype, isa):
    """Its attributes, its size from the kernel's query, at least the
    forward's and the backward's panels 2*G*H*(H+D), the dh0 product's
    Gh*H*H (Gh: the gates of the backward's first phase) and the two
    biases, and its 64-byte aligned, read-only buffer; the weights' copies
    read-only too."""
    G, Dp, Hp = CELLS[cell].gates, 6, 9
    Gh = 2 if options.get("linear_before_reset") is False else G
    a, _ = random_problem(cell, (1, 1, Dp, Hp), dtype)
    packed = pack_of(cell, a, options)
    kernel_cell = _cells.GRU_RESET_FIRST if options.get("linear_before_reset") is False \
        else _cells.CELLS[cell]
    assert (packed.cell, packed.dtype, packed.input_size, packed.hidden_size, packed.isa) == \
        (kernel_cell, np.dtype(dtype), Dp, Hp, isa)
    problem = _engine.Problem(kernel_cell, np.dtype(dtype), 0, 0, Dp, Hp)
    assert packed.nbytes == _kernel.packed_size(problem)
    assert packed.nbytes >= (2 * G * Hp * (Hp + Dp) + Gh * Hp * Hp + 2 * G * Hp) * \
        np.dtype(dtype).itemsize
    assert packed._buffer.ctypes.data % 64 == 0 and packed._buffer.nbytes == packed.nbytes
    assert not packed._buffer.flags.writeable
    assert all(w is None or not w.flags.writeable for w in packed._weights)
    assert repr(packed).startswith(f"PackedWeights({kernel_cell.name}, {np.dtype(dtype)}")


def test_kernel_pack_takes_addresses():
    """_kernel.pack with every buffer an address (as fusedrnn.torch calls
    it) writes the bytes it writes given the arrays."""
    a, _ = random_problem("lstm", (1, 1, 6, 9), np.float32)
    problem = _engine.Problem(_cells.LSTM, np.dtype(np.float32), 0, 0, 6, 9)
    n = _kernel.packed_size(problem)
    by_array, by_address = np.zeros(n, np.uint8), np.ones(n, np.uint8)
    weights = [a[k] for k in ("w_ih", "w_hh", "b_ih", "b_hh")]
    _kernel.pack(problem, *weights, by_array)
    _kernel.pack(problem, *(w.ctypes.data for w in weights), by_address.ctypes.data)
    assert np.array_equal(by_array, by_address)
    with pytest.raises(ValueError, match=f"needs {n} bytes, got {n - 1}"):
        _kernel.pack(problem, *weights, np.zeros(n - 1, np.uint8))


def test_the_kernel_refuses_a_pack_of_another_problem():
    """The kernel's own check (FUSEDRNN_EPACKED), under the API's: a pack
    of another H handed to it directly."""
    a, _ = random_problem("lstm", (2, 1, 3, 4), np.float64)
    packed = pack_of("lstm", a, {})
    problem = _engine.Problem(_cells.LSTM, np.dtype(np.float64), 2, 1, 3, 5)
    inputs = _engine.Inputs(x=a["x"], packed=packed._buffer)
    outputs = _engine.empty(problem.output_shapes(), problem.dtype)
    with pytest.raises(ValueError, match="packed weights were made for another ISA, cell"):
        _engine.forward(problem, inputs, outputs)
    # the backward too, writing no gradient, also for a problem with no batch
    # rows (whose gradients would otherwise be zeroed without a product)
    for B in (1, 0):
        problem = _engine.Problem(_cells.LSTM, np.dtype(np.float64), 2, B, 3, 5, training=True)
        x = np.zeros((2, B, 3))
        grads = _engine.empty(problem.grad_shapes(), problem.dtype)
        for g in grads:
            g[...] = np.nan
        y = np.zeros((2, B, 5))
        reserve = np.zeros(problem.reserve_size())
        refused(lambda: _engine.backward(problem, _engine.Inputs(x=x, packed=packed._buffer),
                                         _engine.GradInputs(y, reserve), grads),
                ValueError, "packed weights were made for another ISA, cell", grads)


def refused(call, error, match, written=()):
    """`call` raises `error` matching `match` and leaves the arrays `written` as they were."""
    before = [w.copy() for w in written]
    with pytest.raises(error, match=match):
        call()
    for w, b in zip(written, before):
        assert np.array_equal(w, b, equal_nan=True), "a refused call wrote its out="


def test_a_pack_of_another_cell_dtype_or_size_is_refused():
    a, _ = random_problem("lstm", (3, 2, 4, 5), np.float32)
    lstm = pack_of("lstm", a, {})
    out = (np.full((3, 2, 5), np.nan, np.float32), np.full((2, 5), np.nan, np.float32), None)
    g, _ = random_problem("gru", (3, 2, 4, 5), np.float32)
    refused(lambda: fusedrnn.gru_forward(g["x"], g["h0"], lstm, out=out), ValueError,
            "packed weights of an LSTM, for a call of a GRU", out[:2])
    gru = pack_of("gru", g, {})
    refused(lambda: fusedrnn.gru_forward(g["x"], g["h0"], gru, linear_before_reset=False),
            ValueError, r"of a GRU, for a call of a GRU \(linear_before_reset=False\)")
    refused(lambda: fusedrnn.gru_backward(g["x"], g["h0"], gru, y=g["x"], reserve=None,
                                          dy=None, linear_before_reset=False),
            ValueError, "packed weights of a GRU, for a call of a GRU")
    refused(lambda: fusedrnn.lstm_forward(a["x"].astype(np.float64), a["h0"], a["c0"], lstm),
            TypeError, "packed weights of an LSTM in float32, for x in float64")
    refused(lambda: fusedrnn.lstm_forward(a["x"][..., :3], a["h0"], a["c0"], lstm),
            ValueError, "input size D = 4, for x with D = 3")
    refused(lambda: fusedrnn.lstm_forward(a["x"], a["h0"][:, :4], a["c0"], lstm),
            ValueError, r"h0: expected shape \(2, 5\)")


def test_a_pack_of_another_isa_is_refused():
    """A pack is tied to the ISA active when it was made: after set_isa to
    another it is refused, by the API and by the kernel, writing nothing."""
    isas = fusedrnn.available_isas()
    if len(isas) < 2:
        pytest.skip("one ISA here")
    previous = fusedrnn.get_isa()
    a, _ = random_problem("rnn", (3, 2, 4, 5), np.float64)
    try:
        for made, used in zip(isas, isas[1:] + isas[:1]):
            fusedrnn.set_isa(made)
            packed = pack_of("rnn", a, {})
            fusedrnn.set_isa(used)
            out = (np.full((3, 2, 5), np.nan), np.full((2, 5), np.nan))
            refused(lambda: fusedrnn.rnn_forward(a["x"], a["h0"], packed, out=out), ValueError,
                    f"packed for the ISA '{made}', which is no longer the active one "
                    f"\\('{used}'\\)", out)
            problem = _engine.Problem(_cells.RNN, np.dtype(np.float64), 3, 2, 4, 5)
            refused(lambda: _engine.forward(problem, _engine.Inputs(x=a["x"],
                                                                    packed=packed._buffer),
                                            _engine.Outputs(*out)),
                    ValueError, "made for another ISA", out)
            grads = tuple(np.full(shape, np.nan) for shape in
                          [(3, 2, 4), (2, 5), (5, 4), (5, 5), (5,)])
            refused(lambda: fusedrnn.rnn_backward(a["x"], a["h0"], packed, y=out[0], dy=None,
                                                  grads_out=grads), ValueError,
                    f"packed for the ISA '{made}'", grads)
            kernel_grads = _engine.Grads(*grads[:2], None, *grads[2:], np.full(5, np.nan))
            problem.training = True
            refused(lambda: _engine.backward(problem, _engine.Inputs(x=a["x"],
                                                                     packed=packed._buffer),
                                             _engine.GradInputs(out[0]), kernel_grads),
                    ValueError, "made for another ISA", grads)
    finally:
        fusedrnn.set_isa(previous)


@pytest.mark.parametrize("cell", CELLS)
def test_weights_beside_a_pack_are_refused(cell):
    a, d = random_problem(cell, (3, 2, 4, 5), np.float64)
    spec = CELLS[cell]
    packed = pack_of(cell, a, {})
    states = [a[s] for s in spec.states]
    f = getattr(fusedrnn, f"{cell}_forward")
    b = getattr(fusedrnn, f"{cell}_backward")
    for name in ("w_hh", *spec.biases):
        with pytest.raises(TypeError, match=f"{name}: w_ih is a PackedWeights"):
            f(a["x"], *states, packed, **{name: a[name]})
    rest = {"y": a["x"], "dy": None, **({"reserve": None} if spec.gated else {})}
    with pytest.raises(TypeError, match="w_hh: w_ih is a PackedWeights"):
        b(a["x"], *states, packed, a["w_hh"], **rest)
    if spec.gated:
        with pytest.raises(TypeError, match="b_ih: w_ih is a PackedWeights"):
            b(a["x"], *states, packed, None, a["b_ih"], **rest)


@pytest.mark.parametrize("cell", CELLS)
def test_weights_are_still_required_without_a_pack(cell):
    a, _ = random_problem(cell, (3, 2, 4, 5), np.float64)
    spec = CELLS[cell]
    states = [a[s] for s in spec.states]
    with pytest.raises(TypeError, match=f"{cell}_forward\\(\\) missing required argument: "
                                        "'w_hh'"):
        getattr(fusedrnn, f"{cell}_forward")(a["x"], *states, a["w_ih"])
    backward_fn = getattr(fusedrnn, f"{cell}_backward")
    with pytest.raises(TypeError, match="missing required argument: 'dy'"):
        if spec.gated:
            backward_fn(a["x"], *states, a["w_ih"], a["w_hh"], None, None, a["x"], None)
        else:
            backward_fn(a["x"], *states, a["w_ih"], a["w_hh"], a["x"])


def test_pack_weights_checks_its_arguments():
    a, _ = random_problem("lstm", (1, 1, 4, 5), np.float32)
    w_ih, w_hh, b = a["w_ih"], a["w_hh"], a["b_ih"]
    with pytest.raises(ValueError, match="cell: expected one of 'rnn', 'lstm', 'gru'"):
        fusedrnn.pack_weights("cnn", w_ih, w_hh)
    with pytest.raises(ValueError, match=r"w_hh: expected shape \(4\*H, H\) for an LSTM"):
        fusedrnn.pack_weights("lstm", w_ih, w_hh[:, :4])
    with pytest.raises(ValueError, match=r"w_ih: expected shape \(20, 4\)"):
        fusedrnn.pack_weights("lstm", w_ih[:19], w_hh)
    with pytest.raises(TypeError, match="w_hh: expected dtype float32 .the dtype of w_ih."):
        fusedrnn.pack_weights("lstm", w_ih, w_hh.astype(np.float64))
    with pytest.raises(ValueError, match=r"b_hh: expected shape \(20,\)"):
        fusedrnn.pack_weights("lstm", w_ih, w_hh, b, b[:5])
    with pytest.raises(TypeError, match="bias: the RNN's one bias; an LSTM takes b_ih and b_hh"):
        fusedrnn.pack_weights("lstm", w_ih, w_hh, bias=b)
    r, _ = random_problem("rnn", (1, 1, 4, 5), np.float32)
    with pytest.raises(TypeError, match="b_hh: the RNN takes one bias, `bias`"):
        fusedrnn.pack_weights("rnn", r["w_ih"], r["w_hh"], r["bias"], r["bias"])
    with pytest.raises(ValueError, match=r"bias: expected shape \(5,\)"):
        fusedrnn.pack_weights("rnn", r["w_ih"], r["w_hh"], bias=r["bias"][:4])
    # the RNN's bias by name or as the fourth argument: the same pack
    by_name = fusedrnn.pack_weights(_cells.RNN, r["w_ih"], r["w_hh"], bias=r["bias"])
    by_place = fusedrnn.pack_weights("rnn", r["w_ih"], r["w_hh"], r["bias"])
    assert np.array_equal(by_name._buffer, by_place._buffer)
    with pytest.raises(TypeError, match="made by fusedrnn.pack_weights"):
        fusedrnn.PackedWeights()


def test_the_docs_example_runs():
    """docs/api.md's block on packed weights runs; it asserts what it claims."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
    section = text[text.index("## Weights packed once"):text.index("## Rules for every call")]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    exec(compile(code, "docs/api.md", "exec"), {})
