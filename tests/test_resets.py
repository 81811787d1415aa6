"""resets: episodes that start inside a sequence. The reference (the
specification) against running each piece as a sequence of its own and
against finite differences; the kernel against the reference on every cell,
direction, layout, lengths, dtype and ISA, forward and every gradient; the
same bits for 1, 2 and 3 threads, and for no flag set as for resets=None;
the argument's checks; the NumPy layers, stacked and bidirectional.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fusedrnn
from fusedrnn import reference
from helpers import (CELLS, DTYPES, assert_close, assert_matches_reference, assert_unchanged,
                     backward, flag, forward, mixed_lengths, outputs_of, random_problem,
                     reserve_of, run, run_child, snapshot, variants)
from test_layers import make_inputs, make_layer, reference_backward, reference_forward

# Every cell the kernel has: the RNN with each nonlinearity, the LSTM, the
# GRU and the reset-first GRU.
CELL_VARIANTS = variants() + [pytest.param("gru", {"linear_before_reset": False},
                                           id="gru-reset_first")]

SHAPE = (7, 5, 3, 4)   # T, B, D, H: mixed_lengths gives 0, 7, 3, 1, 6


def random_resets(T, B, batch_first, seed=0):
    """Flags in x's layout, about a third of them set: at t = 0 and past a
    sequence's length too (where they change nothing), and sequences with
    several pieces."""
    flags = np.random.default_rng(seed).random((T, B)) < 0.35
    return flags.T.copy() if batch_first else flags


def time_major(a, batch_first):
    return None if a is None else (np.swapaxes(a, 0, 1) if batch_first else a)


def pieces(flags, length):
    """The time ranges [start, end) a sequence of `length` steps is cut into
    by its flags (time-major, one sequence's): a flag at t cuts between t-1
    and t, in either direction."""
    cuts = [t for t in range(1, length) if flags[t]]
    bounds = [0, *cuts, length]
    return list(zip(bounds[:-1], bounds[1:]))


def run_by_pieces(cell, a, d, lengths, resets, reverse, batch_first, **options):
    """Every output and gradient of `cell` on (a, d), from the reference run on
    each piece of each sequence as a batch of one with the sequence's initial
    state and no resets: y and dx are the pieces' own rows, the final state
    is that of the piece with the sequence's last step (the last piece
    forwards, the first in reverse), and dh0 (dc0) and the parameters'
    gradients sum over the pieces. The final state's gradient enters that
    piece only."""
    spec = CELLS[cell]
    x = time_major(a["x"], batch_first)
    T, B = x.shape[:2]
    H = a["w_hh"].shape[1]
    flags = time_major(resets, batch_first)
    dy = time_major(d["dy"], batch_first)
    got = {"y": np.zeros((T, B, H)), "dx": np.zeros(x.shape)}
    for s in spec.states:
        got[s[0] + "_n"] = np.zeros((B, H))
        got["d" + s] = np.zeros((B, H))
    params = [k for k in a if k not in ("x", *spec.states)]
    for k in params:
        got["d" + k] = np.zeros(a[k].shape)
    for b in range(B):
        states = {s: None if a[s] is None else a[s][b:b + 1] for s in spec.states}
        length = T if lengths is None else int(lengths[b])
        if length == 0:   # no piece: the initial states are the final ones
            for s in spec.states:
                got[s[0] + "_n"][b] = 0 if a[s] is None else a[s][b]
                got["d" + s][b] = d["d" + s[0] + "_n"][b]
            continue
        spans = pieces(flags[:, b], length)
        last = spans[0] if reverse else spans[-1]
        for start, end in spans:
            piece = dict(a, x=x[start:end, b:b + 1], **states)
            grads = {"dy": dy[start:end, b:b + 1]}
            if (start, end) == last:
                grads.update({k: d[k][b:b + 1] for k in spec.d_states})
            result = run(reference, cell, piece, grads, reverse=reverse, **options)
            got["y"][start:end, b] = result["y"][:, 0]
            got["dx"][start:end, b] = result["dx"][:, 0]
            for s in spec.states:
                got["d" + s][b] += result["d" + s][0]
                if (start, end) == last:
                    got[s[0] + "_n"][b] = result[s[0] + "_n"][0]
            for k in params:
                got["d" + k] += result["d" + k]
    for k in ("y", "dx"):
        got[k] = time_major(got[k], batch_first)
    return got


@flag("batch_first")
@flag("reverse")
@pytest.mark.parametrize("cell, options", CELL_VARIANTS)
def test_reference_equals_the_pieces_run_apart(cell, options, reverse, batch_first):
    """The specification: a reset cuts a sequence into pieces, each of which
    runs as a sequence of its own from the initial state; dh0 (dc0) and the
    weights' gradients are the sums over the pieces."""
    T, B = SHAPE[:2]
    a, d = random_problem(cell, SHAPE, batch_first=batch_first, seed=4)
    lengths = mixed_lengths(T, B)
    resets = random_resets(T, B, batch_first, seed=5)
    options = dict(options, reverse=reverse, batch_first=batch_first)
    expected = run_by_pieces(cell, a, d, lengths, resets, **options)
    got = run(reference, cell, a, d, lengths=lengths, resets=resets, **options)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert_allclose(got[name], value, rtol=1e-12, atol=1e-12, err_msg=name)
    # and the flags did cut: the same call without them differs
    plain = run(reference, cell, a, d, lengths=lengths, **options)
    assert not np.allclose(plain["y"], got["y"])


@flag("batch_first")
@flag("reverse")
@pytest.mark.parametrize("cell, options", CELL_VARIANTS)
def test_reference_gradients_match_finite_differences(cell, options, reverse, batch_first,
                                                      numerical_gradient):
    """Every gradient of the reference's backward with resets against central
    differences of L = sum(y dy) + sum(h_n dh_n) (+ sum(c_n dc_n))."""
    spec = CELLS[cell]
    T, B = 5, 3
    a, d = random_problem(cell, (T, B, 2, 3), batch_first=batch_first, seed=6)
    resets = random_resets(T, B, batch_first, seed=7)
    options = dict(options, lengths=[5, 4, 2], resets=resets, reverse=reverse,
                   batch_first=batch_first)

    def loss():
        out = outputs_of(cell, forward(reference, cell, a, **options))
        return sum(np.sum(out[n] * d["d" + n]) for n in spec.outputs)

    grads = run(reference, cell, a, d, **options)
    for name, value in a.items():
        assert_allclose(grads["d" + name], numerical_gradient(loss, value), rtol=1e-6, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("lengths", [False, True], ids=["full", "lengths"])
@flag("batch_first")
@flag("reverse")
@pytest.mark.parametrize("cell, options", CELL_VARIANTS)
def test_kernel_matches_the_reference(cell, options, reverse, batch_first, lengths, dtype, isa):
    """Forward (inference and training) and every gradient, the backward
    from the training forward's reserve, against the reference."""
    T, B = SHAPE[:2]
    a, d = random_problem(cell, SHAPE, dtype, batch_first=batch_first, seed=8)
    options = dict(options, reverse=reverse, batch_first=batch_first,
                   lengths=mixed_lengths(T, B) if lengths else None,
                   resets=random_resets(T, B, batch_first, seed=9))
    assert_matches_reference(cell, a, d, dtype, **options)
    if CELLS[cell].gated:   # inference: the chunked forward, no reserve
        expected = outputs_of(cell, forward(reference, cell, a, **options))
        for name, got in outputs_of(cell, forward(fusedrnn, cell, a, **options)).items():
            assert_close(got, expected[name], dtype, "inference " + name)


@flag("reverse")
@pytest.mark.parametrize("cell, options", CELL_VARIANTS[-3:])
def test_inference_over_several_chunks(cell, options, reverse, isa):
    """A gated cell's inference forward computes its input side a chunk of
    about 1024 rows at a time: resets across chunk boundaries."""
    T, B = 700, 3   # chunks of 342 steps
    a, _ = random_problem(cell, (T, B, 2, 3), np.float64, seed=17)
    options = dict(options, reverse=reverse, lengths=[T, T - 5, 400],
                   resets=random_resets(T, B, False, seed=18))
    expected = outputs_of(cell, forward(reference, cell, a, **options))
    for name, got in outputs_of(cell, forward(fusedrnn, cell, a, **options)).items():
        assert_close(got, expected[name], np.float64, name)


@flag("reverse")
@pytest.mark.parametrize("cell, options", CELL_VARIANTS[-3:])
def test_no_product_crosses_a_cut(cell, options, reverse, isa):
    """A gated cell's backward reads y only as the state before a step, in
    dW_hh: the last row of a piece that a reset ends is no step's state
    before, so NaN there reaches no gradient (the pair is left out, not
    multiplied by zero)."""
    T, B = SHAPE[:2]
    a, d = random_problem(cell, SHAPE, seed=19)
    lengths = mixed_lengths(T, B)
    resets = random_resets(T, B, False, seed=20)
    options = dict(options, reverse=reverse, lengths=lengths, resets=resets)
    out = forward(fusedrnn, cell, a, training=True, **options)
    expected = backward(fusedrnn, cell, a, out.y, out.reserve, d, **options)
    y = out.y.copy()
    cut = 0
    for b in range(B):
        for t in range(1, lengths[b]):
            if resets[t, b]:   # the piece before the cut ends at t-1, or in reverse at t
                y[t if reverse else t - 1, b] = np.nan
                cut += 1
    assert cut > 0
    got = backward(fusedrnn, cell, a, y, out.reserve, d, **options)
    for name, value in expected._asdict().items():
        assert value.tobytes() == getattr(got, name).tobytes(), name


@pytest.mark.parametrize("cell, options", CELL_VARIANTS)
def test_backward_without_a_reserve_recomputes_it_with_the_resets(cell, options):
    """A gated cell's backward without a reserve runs the forward again: with
    the call's resets, or its gradients would be another forward's."""
    T, B = SHAPE[:2]
    a, d = random_problem(cell, SHAPE, seed=10)
    options = dict(options, resets=random_resets(T, B, False, seed=11))
    with_reserve = run(fusedrnn, cell, a, d, **options)
    without = run(fusedrnn, cell, a, d, with_reserve=False, **options)
    for name, value in with_reserve.items():
        assert np.array_equal(value, without[name]), name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell, options", CELL_VARIANTS)
def test_bitwise_identical_for_any_thread_count(cell, options, dtype, isa):
    """1, 2 and 3 threads give the same bits with resets, forward and
    backward, on a size whose steps and products are split between threads.
    In a child: a thread pool bug can hang, and the child's timeout turns
    that into a failure."""
    run_child(f"""
        import numpy as np
        import fusedrnn
        from helpers import mixed_lengths, random_problem, run
        from test_resets import random_resets
        cell, options, dtype = {cell!r}, {options!r}, np.{dtype}
        fusedrnn.set_isa({isa!r})
        T, B = 12, 16
        for reverse, batch_first in [(False, False), (True, True)]:
            a, d = random_problem(cell, (T, B, 32, 128), dtype, batch_first=batch_first, seed=3)
            opts = dict(options, reverse=reverse, batch_first=batch_first,
                        lengths=mixed_lengths(T, B), resets=random_resets(T, B, batch_first))
            results = {{}}
            for n in (1, 2, 3):
                fusedrnn.set_num_threads(n)
                results[n] = run(fusedrnn, cell, a, d, **opts)
            for n in (2, 3):
                for name, value in results[1].items():
                    assert value.tobytes() == results[n][name].tobytes(), (
                        f"{{opts}}: {{name}} differs between 1 and {{n}} threads")
    """)


@pytest.mark.parametrize("flags", ["bool", "int64"])
@flag("batch_first")
@flag("reverse")
@pytest.mark.parametrize("cell, options", CELL_VARIANTS)
def test_no_flag_set_is_bitwise_resets_none(cell, options, reverse, batch_first, flags, isa):
    T, B = SHAPE[:2]
    a, d = random_problem(cell, SHAPE, np.float32, batch_first=batch_first, seed=12)
    options = dict(options, reverse=reverse, batch_first=batch_first,
                   lengths=mixed_lengths(T, B))
    none = run(fusedrnn, cell, a, d, **options)
    zeros = np.zeros((B, T) if batch_first else (T, B), flags)
    cleared = run(fusedrnn, cell, a, d, resets=zeros, **options)
    for name, value in none.items():
        assert value.tobytes() == cleared[name].tobytes(), name


@pytest.mark.parametrize("cell, options", CELL_VARIANTS)
def test_any_nonzero_integer_is_a_flag(cell, options):
    """Integers: nonzero is set, whatever the value (256 and -1 as well,
    which a cast to uint8 would turn into 0 and 255); the same as bools."""
    T, B = SHAPE[:2]
    a, d = random_problem(cell, SHAPE, seed=13)
    flags = random_resets(T, B, False, seed=14)
    values = np.where(flags, np.array([256, -1, 3, 1, 7])[np.arange(B)], 0)
    as_bools = run(fusedrnn, cell, a, d, resets=flags, **options)
    as_ints = run(fusedrnn, cell, a, d, resets=values, **options)
    as_lists = run(fusedrnn, cell, a, d, resets=flags.tolist(), **options)
    for name, value in as_bools.items():
        assert np.array_equal(value, as_ints[name]), name
        assert np.array_equal(value, as_lists[name]), name
    if CELLS[cell].gated:   # the same flags, the same call: the reserve is accepted
        small = np.where(flags, np.int8(-3), np.int8(0))   # one byte, neither 0 nor 1
        out = forward(fusedrnn, cell, a, training=True, resets=small, **options)
        grads = backward(fusedrnn, cell, a, out.y, out.reserve, d, resets=flags, **options)
        for name, value in grads._asdict().items():
            assert np.array_equal(value, as_bools[name]), name


BAD_RESETS = {
    "transposed": (lambda T, B: np.zeros((B, T), bool), ValueError,
                   r"resets: expected shape \(7, 5\) \(T, B, x's layout\), got \(5, 7\)"),
    "one_dimensional": (lambda T, B: np.zeros(T * B, bool), ValueError,
                        r"resets: expected shape \(7, 5\) \(T, B, x's layout\), got \(35,\)"),
    "float": (lambda T, B: np.zeros((T, B)), TypeError,
              "resets: expected a bool or integer array, got dtype float64"),
    "ragged": (lambda T, B: [[0, 1], [0]], ValueError, "resets: cannot be read as an array"),
}


@pytest.mark.parametrize("bad", BAD_RESETS)
@pytest.mark.parametrize("cell, options", CELL_VARIANTS)
def test_bad_resets_raise_a_clear_error_and_write_nothing(cell, options, bad):
    """Refused before the kernel runs: out= and grads_out= keep their bytes."""
    make, error, match = BAD_RESETS[bad]
    T, B = SHAPE[:2]
    a, d = random_problem(cell, SHAPE, seed=15)
    out = forward(fusedrnn, cell, a, training=True, **options)
    result = tuple(np.full_like(v, 7) if v is not None else None for v in out)
    before = snapshot(dict(enumerate(result)))
    with pytest.raises(error, match=match):
        forward(fusedrnn, cell, a, training=True, out=result, resets=make(T, B), **options)
    assert_unchanged(dict(enumerate(result)), before)
    grads = backward(fusedrnn, cell, a, out[0], reserve_of(cell, out), d, **options)
    grads_out = tuple(np.full_like(g, 7) for g in grads)
    before = snapshot(dict(enumerate(grads_out)))
    with pytest.raises(error, match=match):
        backward(fusedrnn, cell, a, out[0], reserve_of(cell, out), d, grads_out=grads_out,
                 resets=make(T, B), **options)
    assert_unchanged(dict(enumerate(grads_out)), before)


def test_batch_first_resets_are_batch_major():
    a, _ = random_problem("lstm", SHAPE, batch_first=True)
    with pytest.raises(ValueError, match=r"resets: expected shape \(5, 7\) \(B, T, x's layout\)"):
        forward(fusedrnn, "lstm", a, batch_first=True, resets=np.zeros((7, 5), bool))


@pytest.mark.parametrize("architecture", [(2, False), (1, True), (2, True)],
                         ids=["2layers", "bidirectional", "2layers_bidirectional"])
@pytest.mark.parametrize("dtype", DTYPES)
@flag("batch_first")
@pytest.mark.parametrize("cell", CELLS)
def test_layers_pass_resets_to_every_layer_and_direction(cell, batch_first, dtype, architecture,
                                                            isa):
    """fusedrnn.RNN/LSTM/GRU with resets against the reference composition
    (tests/test_layers.py's), every layer and direction given the flags."""
    num_layers, bidirectional = architecture
    layer = make_layer(cell, num_layers, bidirectional, dtype, batch_first=batch_first)
    x, states, dy, d_states = make_inputs(cell, dtype, batch_first, num_layers, bidirectional)
    T, B = (x.shape[1], x.shape[0]) if batch_first else x.shape[:2]
    lengths = np.array([T, 0, T - 2])[:B]
    resets = random_resets(T, B, batch_first, seed=16)
    names = CELLS[cell].states
    hx = tuple(states) if len(names) > 1 else states[0]
    y, finals = layer.forward(x, hx, lengths, resets)
    dx, d_initial = layer.backward(dy, tuple(d_states) if len(names) > 1 else d_states[0])
    finals, d_initial = ([v] if len(names) == 1 else list(v) for v in (finals, d_initial))
    ref_y, ref_finals, calls = reference_forward(cell, layer.params, x, states, lengths,
                                                 num_layers, bidirectional, batch_first,
                                                 resets=resets)
    ref_dx, ref_initial, ref_grads = reference_backward(cell, calls, dy, d_states, num_layers,
                                                        bidirectional, lengths, batch_first,
                                                        resets=resets)
    assert_close(y, ref_y, dtype, "y")
    assert_close(dx, ref_dx, dtype, "dx")
    for s, final, d_start in zip(names, finals, d_initial):
        assert_close(final, ref_finals[s[0] + "_n"], dtype, s[0] + "_n")
        assert_close(d_start, ref_initial["d" + s], dtype, "d" + s)
    for name, g in layer.grads.items():
        assert_close(g, ref_grads[name], dtype, name)


@pytest.mark.parametrize("cell", CELLS)
def test_network_restarts_at_a_reset(cell, isa):
    """fusedrnn.ElmanRNN passes resets to its layer: a flag at t = 3 gives
    the outputs of the two pieces run apart from the same initial state."""
    net = fusedrnn.ElmanRNN(2, 5, 3, cell=cell, dtype=np.float64, seed=0)
    x = np.random.default_rng(21).normal(size=(7, 2, 2))
    h0 = net.rnn.forward(x[:2])[1]   # a state of the layer's own form (LSTM: a pair)
    resets = np.zeros((7, 2), bool)
    resets[3] = True
    y, _ = net.forward(x, h0, resets=resets)
    apart = np.concatenate([net.forward(x[:3], h0)[0], net.forward(x[3:], h0)[0]])
    assert_allclose(y, apart, rtol=1e-12, atol=1e-12)
    assert not np.allclose(y, net.forward(x, h0)[0])
