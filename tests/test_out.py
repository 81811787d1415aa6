"""out= and grads_out=: the results written into the caller's arrays.

For every cell and dtype, time-major and batch_first, with and without
lengths: bitwise the results of a call without them, in the very arrays
given (filled with NaN first, so that an element the kernel did not write
shows), a previous call's result accepted back; and every bad array refused
with the exception and the field's name documented, before anything is
written.
"""

import resource

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fusedrnn
import helpers
from helpers import CELLS, GATED, reserve_of

T, B, D, H = 5, 4, 3, 6
LENGTHS = np.array([5, 0, 2, 4])
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
LAYOUTS = [pytest.param(False, id="time_major"), pytest.param(True, id="batch_first")]
WITH_LENGTHS = [pytest.param(None, id="full"), pytest.param(LENGTHS, id="lengths")]


def problem(cell, dtype=np.float32, batch_first=False, seed=0):
    """Every input of the cell's forward and backward in one dict: its
    inputs and the gradients of its outputs."""
    a, d = helpers.random_problem(cell, (T, B, D, H), dtype, batch_first=batch_first, seed=seed)
    return {**a, **d}


def forward(cell, p, training=True, **options):
    """fusedrnn's forward of the cell on problem p; training is the gated cells' only."""
    return helpers.forward(fusedrnn, cell, p, training, **options)


def backward(cell, p, y, reserve, **options):
    """The cell's backward on problem p, for the forward that gave y and reserve."""
    return helpers.backward(fusedrnn, cell, p, y, reserve, p, **options)


def rebuilt(result, items):
    """`items` as a tuple of `result`'s type (a named result, or the RNN's pair)."""
    return type(result)(*items) if hasattr(result, "_fields") else tuple(items)


def mapped(result, make):
    """make(a) for every array of `result`, None staying None."""
    return rebuilt(result, [None if a is None else make(a) for a in result])


def nan_like(result):
    """Arrays of `result`'s shapes and dtypes, NaN everywhere: an element a
    call leaves unwritten stays NaN."""
    return mapped(result, lambda a: np.full_like(a, np.nan))


def fields_of(result):
    """A forward's or backward's result fields (the rnn's forward gives a pair)."""
    return result._fields if hasattr(result, "_fields") else ("y", "h_n")


def assert_same(got, want, names):
    for name, g, w in zip(names, got, want):
        if w is None:
            assert g is None, name
        else:
            assert_array_equal(g, w, err_msg=name, strict=True)


# --- the results ----------------------------------------------------------

@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("lengths", WITH_LENGTHS)
@pytest.mark.parametrize("batch_first", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_results_in_the_given_arrays_equal_those_without(cell, dtype, batch_first, lengths):
    p = problem(cell, dtype, batch_first)
    before = {k: a.copy() for k, a in p.items()}
    options = dict(lengths=lengths, batch_first=batch_first)
    want = forward(cell, p, **options)
    out = nan_like(want)
    got = forward(cell, p, out=out, **options)
    assert type(got) is type(want)
    assert all(g is o for g, o in zip(got, out)), "not the arrays given"
    names = fields_of(want)
    if lengths is None or not CELLS[cell].gated:
        assert_same(got, want, names)
    else:
        # A reserve's rows past a sequence's end are never written (nor
        # read): compare all but the reserve here, and the reserve by the
        # backward it gives.
        assert_same(got[:-1], want[:-1], names)
    want_grads = backward(cell, p, want[0], reserve_of(cell, want), **options)
    grads_out = nan_like(want_grads)
    grads = backward(cell, p, got[0], reserve_of(cell, got), grads_out=grads_out, **options)
    assert type(grads) is type(want_grads)
    assert all(g is o for g, o in zip(grads, grads_out)), "not the arrays given"
    assert_same(grads, want_grads, want_grads._fields)
    for k, a in p.items():
        assert_array_equal(a, before[k], err_msg=f"{k} was modified", strict=True)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("cell", GATED)
def test_inference_forward_writes_into_out_without_a_reserve(cell):
    p = problem(cell)
    want = forward(cell, p, training=False, lengths=LENGTHS)
    out = nan_like(want)
    assert out.reserve is None
    got = forward(cell, p, training=False, lengths=LENGTHS, out=out)
    assert all(g is o for g, o in zip(got, out))
    assert_same(got, want, want._fields)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_a_previous_result_is_accepted_back(cell, dtype):
    """The loop out = f(..., out=out): the first call allocates, the others
    write into its arrays and return them, each with the results of its own
    inputs (a new x every step)."""
    out = grads = None
    for step in range(3):
        p = problem(cell, dtype, seed=step)
        want = forward(cell, p, lengths=LENGTHS)
        want_grads = backward(cell, p, want[0], reserve_of(cell, want), lengths=LENGTHS)
        previous, previous_grads = out, grads
        out = forward(cell, p, lengths=LENGTHS, out=out)
        grads = backward(cell, p, out[0], reserve_of(cell, out), lengths=LENGTHS,
                         grads_out=grads)
        if step:
            assert all(a is b for a, b in zip(out, previous))
            assert all(a is b for a, b in zip(grads, previous_grads))
        assert_same(out[:2], want[:2], ("y", "h_n"))
        assert_same(grads, want_grads, want_grads._fields)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("cell", CELLS)
def test_arrays_at_any_address_aligned_to_the_dtype(cell):
    """Results in arrays one element past a vector boundary, back to back
    in one buffer (touching is not overlapping): the same bits."""
    p = problem(cell)
    want = forward(cell, p, lengths=LENGTHS)
    want_grads = backward(cell, p, want[0], reserve_of(cell, want), lengths=LENGTHS)

    def packed(result):
        buffer = np.full(1 + sum(a.size for a in result if a is not None), np.nan, np.float32)
        start = 1

        def view(a):
            nonlocal start
            start += a.size
            return buffer[start - a.size:start].reshape(a.shape)
        return mapped(result, view)

    got = forward(cell, p, lengths=LENGTHS, out=packed(want))
    grads = backward(cell, p, got[0], reserve_of(cell, got), lengths=LENGTHS,
                     grads_out=packed(want_grads))
    assert_same(got[:2], want[:2], ("y", "h_n"))
    assert_same(grads, want_grads, want_grads._fields)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("cell", CELLS)
def test_empty_problems(cell):
    for t, b in ((0, 2), (3, 0)):
        rng = np.random.default_rng(0)
        G = CELLS[cell].gates
        # The initial states, biases, dh_n and dc_n left out: None.
        p = dict(x=rng.normal(size=(t, b, D)), w_ih=rng.normal(size=(G * H, D)),
                 w_hh=rng.normal(size=(G * H, H)), dy=np.ones((t, b, H)))
        out = forward(cell, p)
        again = forward(cell, p, out=out)
        assert all(a is b for a, b in zip(again, out))
        grads = backward(cell, p, out[0], reserve_of(cell, out))
        assert all(a is b for a, b in
                   zip(backward(cell, p, out[0], reserve_of(cell, out), grads_out=grads), grads))


# --- refused --------------------------------------------------------------

def misaligned(a):
    """A copy of `a` one byte past an aligned address (tests/test_alignment.py)."""
    view = np.frombuffer(bytearray(a.nbytes + 1), a.dtype, a.size, offset=1).reshape(a.shape)
    view[...] = a
    assert view.flags.c_contiguous and not view.flags.aligned
    return view


def read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def strided(a):
    """`a`'s values in every other element of a buffer: not C-contiguous."""
    view = np.empty((*a.shape[:-1], 2 * a.shape[-1]), a.dtype)[..., ::2]
    view[...] = a
    return view


def other_dtype(a):
    return a.astype(np.float64 if a.dtype == np.float32 else np.float32)


def wrong_shape(a):
    return np.empty((*a.shape[:-1], a.shape[-1] + 1), a.dtype)


# (what is done to one field, the exception, words of its message)
BAD_ARRAYS = {
    "list": (lambda a: a.tolist(), TypeError, "expected a NumPy array"),
    "dtype": (other_dtype, TypeError, "expected dtype"),
    "shape": (wrong_shape, ValueError, "expected shape"),
    "strided": (strided, ValueError, "not C-contiguous"),
    "misaligned": (misaligned, ValueError, "not aligned"),
    "read-only": (read_only, ValueError, "not writeable"),
}


def ops():
    """(cell, op) pairs: op "forward" (out=) or "backward" (grads_out=)."""
    return [pytest.param(cell, op, id=f"{cell}-{op}")
            for cell in CELLS for op in ("forward", "backward")]


def setting(cell, op):
    """The problem, a call of `op` taking its result arrays, and fresh ones
    of a call without them (a tuple of the op's result type)."""
    p = problem(cell)
    fwd = forward(cell, p, lengths=LENGTHS)
    if op == "forward":
        def call(given):
            return forward(cell, p, lengths=LENGTHS, out=given)
        return p, call, fwd, "out"

    def call(given):
        return backward(cell, p, fwd[0], reserve_of(cell, fwd), lengths=LENGTHS, grads_out=given)
    return p, call, call(None), "grads_out"


def replaced(result, index, value):
    """`result` with entry `index` replaced by `value`."""
    items = list(result)
    items[index] = value
    return rebuilt(result, items)


def sentinel(result):
    """Fresh arrays of `result`'s shapes holding a pattern no call writes."""
    return mapped(result, lambda a: np.arange(a.size, dtype=a.dtype).reshape(a.shape) + 0.5)


def refused(call, given, error, *words):
    """call(given) raises `error` with every one of `words` in its message,
    and every array of `given` holds what it held before. Returns the message."""
    copies = [a.copy() if isinstance(a, np.ndarray) else None for a in given] \
        if isinstance(given, (tuple, list)) else []
    with pytest.raises(error) as caught:
        call(given)
    message = str(caught.value)
    for w in words:
        assert w in message, message
    for a, c in zip(given, copies):
        if c is not None:
            assert_array_equal(a, c, err_msg="written by a refused call", strict=True)
    return message


@pytest.mark.parametrize("bad", BAD_ARRAYS)
@pytest.mark.parametrize("cell, op", ops())
def test_a_bad_array_is_refused_naming_its_field(cell, op, bad):
    make, error, words = BAD_ARRAYS[bad]
    p, call, fresh, name = setting(cell, op)
    before = {k: a.copy() for k, a in p.items()}
    for index, field in enumerate(fields_of(fresh)):
        if fresh[index] is None:
            continue
        given = sentinel(fresh)
        message = refused(call, replaced(given, index, make(given[index])), error, words)
        assert message.startswith(f"{name}.{field}: "), message
    for k, a in p.items():
        assert_array_equal(a, before[k], err_msg=f"{k} was modified", strict=True)


def test_the_shape_message_gives_both_shapes():
    p = problem("lstm")
    out = forward("lstm", p, training=False)
    message = refused(lambda given: forward("lstm", p, training=False, out=given),
                      out._replace(y=np.empty((T, B, H - 1), np.float32)), ValueError)
    assert message == f"out.y: expected shape {(T, B, H)}, got {(T, B, H - 1)}"


@pytest.mark.parametrize("cell, op", ops())
def test_not_a_tuple_or_the_wrong_length_is_refused(cell, op):
    _, call, fresh, name = setting(cell, op)
    given = sentinel(fresh)
    refused(call, list(given), TypeError, f"{name}: expected a tuple")
    refused(call, given[0], TypeError, f"{name}: expected a tuple")
    refused(call, tuple(given)[:-1], ValueError, f"{name}: expected a tuple of {len(fresh)}")
    refused(call, (*given, given[0].copy()), ValueError,
            f"{name}: expected a tuple of {len(fresh)}")


@pytest.mark.parametrize("cell, op", ops())
def test_a_result_overlapping_an_input_is_refused_naming_both(cell, op):
    """Each result given an input of its shape (h_n written into h0 is the
    natural mistake), then the first result partly over x."""
    p, call, fresh, name = setting(cell, op)
    fields = fields_of(fresh)
    spec = CELLS[cell]
    reads = ("x", *spec.states, "w_ih", "w_hh")
    reads += spec.biases if op == "forward" else \
        ("dy", *spec.d_states) + (spec.biases if spec.gated else ())
    hits = 0
    for index, field in enumerate(fields):
        for k in reads:
            a = p.get(k)
            if a is None or fresh[index] is None or a.shape != fresh[index].shape:
                continue
            before = a.copy()
            refused(call, replaced(sentinel(fresh), index, a), ValueError,
                    f"{name}.{field} and {k} share memory")
            assert_array_equal(a, before, strict=True)
            hits += 1
    assert hits >= 1
    given = sentinel(fresh)
    first = given[0]
    buffer = np.zeros(first.size + p["x"].size, first.dtype)
    p["x"] = buffer[first.size // 2:][:p["x"].size].reshape(p["x"].shape)
    p["x"][...] = problem(cell)["x"]
    refused(call, replaced(given, 0, buffer[:first.size].reshape(first.shape)), ValueError,
            f"{name}.{fields[0]} and x share memory")


@pytest.mark.parametrize("cell", CELLS)
def test_a_gradient_overlapping_what_the_forward_returned_is_refused(cell):
    """The backward reads y and the reserve too."""
    p = problem(cell)
    fwd = forward(cell, p)
    grads = sentinel(backward(cell, p, fwd[0], reserve_of(cell, fwd)))
    for k, a in (("y", fwd[0]), ("reserve", reserve_of(cell, fwd))):
        if a is None:
            continue
        inside = a.reshape(-1)[-B * H:].reshape(B, H)
        refused(lambda g: backward(cell, p, fwd[0], reserve_of(cell, fwd), grads_out=g),
                grads._replace(dh0=inside), ValueError, f"grads_out.dh0 and {k} share memory")


@pytest.mark.parametrize("cell, op", ops())
def test_two_results_overlapping_are_refused_naming_both(cell, op):
    """Every pair of results sharing one element, the last of one and the
    first of the other."""
    _, call, fresh, name = setting(cell, op)
    fields = fields_of(fresh)
    present = [i for i, a in enumerate(fresh) if a is not None]
    for i in present:
        for j in (j for j in present if j > i):
            given = sentinel(fresh)
            a, b = given[i], given[j]
            buffer = np.zeros(a.size + b.size - 1, a.dtype)
            given = replaced(given, j, buffer[:b.size].reshape(b.shape))
            given = replaced(given, i, buffer[b.size - 1:].reshape(a.shape))
            refused(call, given, ValueError,
                    f"{name}.{fields[i]} and {name}.{fields[j]} share memory")


def test_inputs_may_overlap_one_another():
    """Inputs are only read: they may share memory with one another."""
    p = problem("lstm")
    p["c0"] = p["h0"]
    want = forward("lstm", p)
    got = forward("lstm", p, out=nan_like(want))
    assert_same(got, want, want._fields)


def test_a_result_in_the_gaps_of_a_strided_input_is_refused():
    """Memory bounds, not elements (as documented): h_n lying between two
    rows of a strided x is refused though they share no element."""
    p = problem("rnn")
    buffer = np.zeros((T, B, D + B * H), np.float32)
    p["x"] = buffer[:, :, :D]
    p["x"][...] = problem("rnn")["x"]
    h_n = buffer[0, 0, D:].reshape(B, H)
    assert not np.shares_memory(h_n, p["x"])
    y, _ = forward("rnn", p)
    refused(lambda given: forward("rnn", p, out=given), (y, h_n), ValueError,
            "out.h_n and x share memory")


def test_a_result_overlapping_a_reversed_input_is_refused():
    """A negative stride: x's first step is the end of its memory."""
    p = problem("rnn")
    memory = np.zeros((T, B, D), np.float32)
    p["x"] = memory[::-1]
    p["x"][...] = problem("rnn")["x"]
    y, _ = forward("rnn", p)
    h_n = memory.reshape(-1)[:B * H].reshape(B, H)   # x's last steps
    refused(lambda given: forward("rnn", p, out=given), (y, h_n), ValueError,
            "out.h_n and x share memory")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_reserve_goes_with_training(cell):
    """A training forward needs a reserve array to write into, of the size
    it returns (header included); one without training writes none and
    takes None."""
    p = problem(cell)
    training = forward(cell, p, training=True)
    inference = forward(cell, p, training=False)
    message = refused(lambda g: forward(cell, p, training=False, out=g), sentinel(training),
                      ValueError, "out.reserve: expected None")
    assert message.startswith("out.reserve: ")
    refused(lambda g: forward(cell, p, training=True, out=g), sentinel(inference), TypeError,
            "out.reserve: expected a NumPy array")
    given = sentinel(training)
    refused(lambda g: forward(cell, p, training=True, out=g),
            given._replace(reserve=given.reserve[:-1].copy()), ValueError,
            f"out.reserve: expected shape {training.reserve.shape}")


@pytest.mark.parametrize("cell, op", ops())
def test_a_failed_input_check_leaves_the_given_arrays_untouched(cell, op):
    p, call, fresh, _ = setting(cell, op)
    p["h0"] = np.empty((B + 1, H), np.float32)
    refused(call, sentinel(fresh), ValueError, "h0: expected shape")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_refused_reserve_leaves_grads_out_untouched(cell):
    p = problem(cell)
    fwd = forward(cell, p, lengths=LENGTHS)
    grads = backward(cell, p, fwd.y, fwd.reserve, lengths=LENGTHS)
    # Without the forward's lengths: another call's reserve.
    refused(lambda g: backward(cell, p, fwd.y, fwd.reserve, grads_out=g), sentinel(grads),
            ValueError, "reserve: it comes from a different call")


# --- the bench ------------------------------------------------------------

@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("cell", CELLS)
def test_the_bench_times_fusedrnn_writing_into_its_previous_results(cell):
    """Each mode's run of fusedrnn writes into the arrays of its previous
    run, with the results of a call that allocates; the modes do not share."""
    from fusedrnn import _bench
    p = _bench.problem((T, B, D, H), np.float32, np.random.default_rng(0), cell)
    runs = _bench.PEERS["fusedrnn"](cell, p)
    results = {}
    for mode, run in runs.items():
        first, second = run(), run()
        assert all(second[k] is first[k] for k in first), mode
        want = _bench.CELLS[cell].run(fusedrnn, p, mode == "fwd+bwd")
        assert set(second) == set(want)
        for k, a in want.items():
            assert_array_equal(second[k], a, err_msg=f"{mode} {k}", strict=True)
        results[mode] = second
    assert results["fwd"]["y"] is not results["fwd+bwd"]["y"]


def test_alternating_forward_and_backward_fault_no_pages():
    """A training loop alternates a forward and a backward whose workspaces
    differ more than fourfold; each is kept for the next call of its kind
    (_kernel.workspace), so that with out= and grads_out= a step touches no
    fresh page. One kept buffer for both was dropped and faulted in anew on
    every call (306 page faults a step at L). The backward's workspace here
    is above glibc's largest mmap threshold (32 MB), so a buffer let go is
    unmapped and a new one faulted in: 64 MB of gate gradients (T*B*4H),
    more than four times the forward's (T*B row pointers), for little work."""
    a, d = helpers.random_problem("lstm", (1000, 512, 1, 8), np.float32, seed=5)
    args = (a["x"], a["h0"], a["c0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"])
    out = grads = None

    def step():
        nonlocal out, grads
        out = fusedrnn.lstm_forward(*args, training=True, out=out)
        grads = fusedrnn.lstm_backward(*args, out.y, out.reserve, d["dy"], grads_out=grads)

    step(), step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step()
    assert resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before < 50
