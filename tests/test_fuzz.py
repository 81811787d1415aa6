"""Fuzzing the Python surface: garbage for every argument of rnn_forward and
rnn_backward, and of the thread and ISA setters.

The rule for every call: it returns the reference's answer, or it raises
TypeError, ValueError or MemoryError with a message that starts with the name
of what it rejects. Never a crash or a hang (a watchdog ends the process),
never another exception, never a modified input.

Garbage comes from a fixed catalogue per argument (wrong types, shapes and
dtypes, lists, scalars, None, huge views, byte-swapped, read-only and
non-contiguous arrays) and from hypothesis (random values for random subsets
of the arguments). Aliased and read-only-memory inputs, and sizes that
overflow or cannot be allocated, have tests of their own.
"""

import copy
import mmap
import re
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fusedrnn
from fusedrnn import reference

pytestmark = pytest.mark.usefixtures("watchdog")  # a hang fails the run

T, B, D, H = 3, 2, 4, 5  # all different, so that no size passes for another
SHAPE_OF = {"x": (T, B, D), "h0": (B, H), "w_ih": (H, D), "w_hh": (H, H), "bias": (H,),
            "y": (T, B, H), "dy": (T, B, H), "dh_n": (B, H)}
OPTIONS = ("nonlinearity", "lengths", "reverse", "batch_first")
ARGUMENTS = {"forward": ("x", "h0", "w_ih", "w_hh", "bias") + OPTIONS,
             "backward": ("x", "h0", "w_ih", "w_hh", "y", "dy", "dh_n") + OPTIONS}
ERRORS = (TypeError, ValueError, MemoryError)
# What an error message may start with: an argument, the sizes that
# overflowed, or NumPy's own words when an output cannot be allocated.
BLAMED = re.compile(r"^(x|h0|w_ih|w_hh|bias|y|dy|dh_n|lengths|nonlinearity|reverse|batch_first"
                    r"|T\*B\*H|B\*H|n|ISA)\b|^Unable to allocate")


def valid_arguments(dtype=np.float64):
    rng = np.random.default_rng(0)
    arguments = {name: (rng.standard_normal(shape) / 2).astype(dtype)
                 for name, shape in SHAPE_OF.items()}
    return dict(arguments, nonlinearity="tanh", lengths=np.array([T, 1]), reverse=False,
                batch_first=False)


def call(module, op, arguments):
    """`module`'s rnn_forward or rnn_backward (module: fusedrnn or its reference)."""
    a = arguments
    options = {name: a[name] for name in OPTIONS}
    if op == "forward":
        return module.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["bias"], **options)
    return module.rnn_backward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["y"], a["dy"], a["dh_n"],
                               **options)


def snapshot(value):
    """A copy to compare `value` with after the call. Zero-stride views of a
    few elements with a huge shape (huge_view) are left out: copying them
    would take terabytes."""
    if isinstance(value, np.ndarray):
        return None if value.nbytes > 2**24 else value.copy()
    return copy.deepcopy(value) if isinstance(value, (list, dict)) else value


def same(a, b):
    """Bit-for-bit equality of an argument and its snapshot."""
    if isinstance(a, np.ndarray):
        if b is None:
            return True
        a, b = np.asarray(a), np.asarray(b)  # a masked array's data, not its filled copy
        if a.dtype != b.dtype or a.shape != b.shape:
            return False
        return a.tolist() == b.tolist() if a.dtype.hasobject else a.tobytes() == b.tobytes()
    if isinstance(a, (list, dict)):
        return repr(a) == repr(b)
    return a is b


def check(op, arguments, assert_close):
    """The rule of this module for one call; returns the error raised, if any."""
    before = {name: snapshot(value) for name, value in arguments.items()}
    try:
        results = call(fusedrnn, op, arguments)
    except ERRORS as e:
        assert BLAMED.match(str(e)), f"{type(e).__name__} that names nothing: {e}"
        error = e
    else:
        error = None
        expected = call(reference, op, arguments)
        dtype = np.asarray(arguments["x"]).dtype
        for name, got, want in zip(("y", "h_n") if op == "forward" else fusedrnn.RNNGrads._fields,
                                   results, expected):
            assert_close(got, want, dtype, name)
    for name, value in arguments.items():
        assert same(value, before[name]), f"{op} modified {name}"
    return error


def huge_view(shape, axis):
    """A read-only zero-stride view of `shape` with axis `axis` made 2**40
    long: enormous, yet it takes no memory."""
    big = list(shape)
    big[axis] = 2**40
    return np.broadcast_to(np.zeros((), np.float64), big)


def array_garbage(name):
    """(label, value) pairs for an array argument."""
    good = valid_arguments()[name]
    shape = good.shape
    yield "none", None
    for label, scalar in [("int", 3), ("float", 1.5), ("nan", float("nan")), ("bool", True),
                          ("complex", 1j), ("str", "x"), ("bytes", b"\0"), ("dict", {}),
                          ("object", object()), ("np_float", np.float64(2.0)), ("0d", np.array(1.0))]:
        yield label, scalar
    yield "empty_list", []
    yield "ragged_list", [[1.0, 2.0], [3.0]]
    yield "list_of_str", [["a", "b"]]
    yield "nested_list", good.tolist()                       # valid: converted
    yield "list_of_arrays", list(good)                       # valid: converted
    for dtype in ["int64", "int8", "uint64", "bool", "float16", "complex128", "longdouble",
                  "object", "U1", "datetime64[s]", [("a", "f8")]]:
        yield f"dtype_{np.dtype(dtype).str}", np.zeros(shape, dtype)
    yield "byte_swapped", good.astype(good.dtype.newbyteorder())
    yield "float32_with_float64_x", good.astype(np.float32)
    yield "extra_axis", good[None]
    yield "missing_axis", good[0]
    yield "transposed", good.T                                # a wrong shape unless square
    for axis in range(len(shape)):
        wrong = list(shape)
        wrong[axis] += 1
        yield f"axis{axis}_plus_1", np.zeros(wrong)
        wrong[axis] = 0
        yield f"axis{axis}_zero", np.zeros(wrong)
        yield f"axis{axis}_huge", huge_view(shape, axis)
    yield "fortran", np.asfortranarray(good)                  # valid: copied
    yield "strided", np.repeat(good, 2, axis=-1)[..., ::2]    # valid: copied
    readonly = good.copy()
    readonly.flags.writeable = False
    yield "readonly", readonly                                # valid
    yield "masked", np.ma.masked_array(good, mask=np.ones(shape, bool))  # valid: mask ignored


OPTION_GARBAGE = {
    "nonlinearity": [None, 0, "TANH", " tanh", "tanh\0", b"tanh", ["tanh"], {"tanh": 1},
                     np.str_("relu"), object()],
    "batch_first": [None, 2, -1, 0.0, 1.0, "True", "", np.array(True), np.array([True]), [True]],
    "lengths": [3.5, [1.5, 2.0], [-1, 0], [T + 1, 0], [2**63 - 1, 0], [2**70, 0],
                np.array([2**64 - 1, 0], np.uint64), np.array([-(2**63), 0]), "ab",
                [None, None], np.array([[T, 1]]), np.array([T, 1], object), [True, False],
                np.array(T), [T, 1, 1], [], {}, np.array([T, 1], np.int8)[::-1], (T, 0)],
}
# and two valid spellings of True (for batch_first they would make h0 wrong)
OPTION_GARBAGE["reverse"] = OPTION_GARBAGE["batch_first"] + [np.True_, 1]


def catalogue():
    for name in SHAPE_OF:
        for label, value in array_garbage(name):
            yield name, label, value
    for name, values in OPTION_GARBAGE.items():
        for i, value in enumerate(values):
            yield name, f"{i}_{type(value).__name__}", value


CASES = [pytest.param(op, name, value, id=f"{op}-{name}-{label}")
         for name, label, value in catalogue() for op in ARGUMENTS if name in ARGUMENTS[op]]


@pytest.mark.parametrize("op, name, value", CASES)
def test_garbage_in_one_argument(assert_close, op, name, value):
    error = check(op, dict(valid_arguments(), **{name: value}), assert_close)
    # What is blamed, when several arguments disagree, may be the partner of
    # the bad one; a value accepted must have been a valid one (checked above).
    if error is not None and not isinstance(error, MemoryError) and name in OPTIONS:
        assert str(error).startswith(name), f"{name} garbage blamed elsewhere: {error}"


# Random garbage: any dtype, any shape up to 4-D, any values; lists, scalars,
# strings, None.
junk = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.complex_numbers(), st.text(max_size=4),
    st.lists(st.one_of(st.floats(), st.integers(), st.none()), max_size=6),
    hnp.arrays(hnp.scalar_dtypes(), hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)),
    # right shape and a float dtype: only the values are random, so a call
    # usually goes through and is compared with the reference
    st.sampled_from(list(SHAPE_OF.values())).flatmap(
        lambda shape: hnp.arrays(st.sampled_from([np.float32, np.float64]), shape,
                                 elements=st.floats(-4, 4, width=32))),
)


# function_scoped_fixture: assert_close, the one fixture used, holds no state.
@settings(max_examples=400, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.sampled_from(sorted(ARGUMENTS)), st.data())
def test_random_garbage_in_random_arguments(assert_close, op, data):
    names = data.draw(st.lists(st.sampled_from(ARGUMENTS[op]), min_size=1, max_size=4, unique=True))
    arguments = valid_arguments(data.draw(st.sampled_from([np.float32, np.float64])))
    for name in names:
        arguments[name] = data.draw(junk, label=name)
    check(op, arguments, assert_close)


def test_every_argument_is_fuzzed():
    """The catalogue covers each argument of each entry point."""
    covered = {(op, name) for name, _, _ in catalogue() for op in ARGUMENTS if name in ARGUMENTS[op]}
    assert covered == {(op, name) for op, names in ARGUMENTS.items() for name in names}


@pytest.mark.parametrize("op", sorted(ARGUMENTS))
def test_arguments_that_alias_each_other(assert_close, op):
    """Every float argument a view of one buffer, overlapping the others, and
    one array passed twice: all are inputs, so all may alias."""
    buffer = np.random.default_rng(1).standard_normal(64) / 2
    start = {"x": 0, "h0": 10, "w_ih": 5, "w_hh": 1, "bias": 3, "y": 20, "dy": 20, "dh_n": 10}
    arguments = valid_arguments()
    for name, shape in SHAPE_OF.items():
        arguments[name] = buffer[start[name]:start[name] + np.prod(shape)].reshape(shape)
    saved = buffer.copy()
    assert check(op, arguments, assert_close) is None
    assert np.array_equal(buffer, saved)


@pytest.mark.parametrize("op", sorted(ARGUMENTS))
def test_inputs_in_read_only_memory(assert_close, op, tmp_path):
    """Inputs mapped from a file without write permission: a single write by
    the kernel to any input would be a segmentation fault, not a silent change."""
    arguments = valid_arguments()
    path = tmp_path / "inputs.bin"
    with open(path, "wb") as f:
        offsets = {}
        for name in SHAPE_OF:
            offsets[name] = f.tell()
            f.write(arguments[name].tobytes())
    with open(path, "rb") as f:
        pages = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
    for name, shape in SHAPE_OF.items():
        arguments[name] = np.frombuffer(pages, np.float64, np.prod(shape), offsets[name]).reshape(shape)
    assert check(op, arguments, assert_close) is None


def sizes_whose_product_overflows():
    """x [T,B,0] with T*B = 2**59 elements (no memory) and H = 16: T*B*H*8 bytes
    is 2**66, past any 64-bit size."""
    x = np.zeros((2**30, 2**29, 0))
    return dict(x=x, h0=None, w_ih=np.zeros((16, 0)), w_hh=np.zeros((16, 16)))


@pytest.mark.parametrize("op", sorted(ARGUMENTS))
def test_sizes_that_overflow_64_bits_raise_before_allocating(op):
    a = sizes_whose_product_overflows()
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError, match=r"^T\*B\*H = 9223372036854775808 elements"):
            if op == "forward":
                fusedrnn.rnn_forward(**a)
            else:
                # y's shape is checked after the sizes: any y does
                fusedrnn.rnn_backward(**a, y=a["x"], dy=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak} bytes allocated before the size was refused"


@pytest.mark.parametrize("op", sorted(ARGUMENTS))
def test_sizes_that_cannot_be_allocated(op):
    """y of 2**55 elements of 8 bytes: the size fits in 64 bits, the buffer in
    no x86-64 address space (2**47 bytes, 2**56 with 5-level paging)."""
    x = np.zeros((2**35, 2**10, 0))
    w_hh = np.broadcast_to(np.zeros(()), (2**10, 2**10))
    with pytest.raises(MemoryError):
        if op == "forward":
            fusedrnn.rnn_forward(x, None, np.zeros((2**10, 0)), w_hh)
        else:
            fusedrnn.rnn_backward(x, None, np.zeros((2**10, 0)), w_hh,
                                  np.broadcast_to(np.zeros(()), (2**35, 2**10, 2**10)), None)


@pytest.mark.parametrize("shape", [(2**40, 0, 1), (1, 2**40, 0)], ids=["B0_huge_T", "H0_huge_TB"])
@pytest.mark.parametrize("op", sorted(ARGUMENTS))
def test_empty_problems_with_huge_sizes_return_at_once(op, shape):
    """No batch rows or no hidden units: nothing recurs, whatever T or T*B.
    The drivers used to loop over T steps of nothing (hang)."""
    x = np.zeros(shape)
    Hs = 0 if shape[2] == 0 else 3
    w_ih, w_hh = np.zeros((Hs, shape[2])), np.zeros((Hs, Hs))
    if op == "forward":
        y, h_n = fusedrnn.rnn_forward(x, None, w_ih, w_hh)
        assert y.shape == shape[:2] + (Hs,) and h_n.shape == (shape[1], Hs)
    else:
        grads = fusedrnn.rnn_backward(x, None, w_ih, w_hh, np.zeros(shape[:2] + (Hs,)), None)
        assert grads.dx.shape == shape and not grads.dx.any()
        assert grads.dw_ih.shape == (Hs, shape[2]) and not grads.dw_ih.any()


THREAD_GARBAGE = [(0, ValueError), (-1, ValueError), (2**31, ValueError), (2**100, ValueError),
                  (-(2**100), ValueError), (1.0, TypeError), ("2", TypeError), (None, TypeError),
                  (True, TypeError), (np.int64(2), None), (np.uint8(1), None), (2**31 - 1, None)]


@pytest.mark.parametrize("value, error", THREAD_GARBAGE, ids=lambda v: repr(v)[:20])
def test_thread_count_garbage(value, error):
    """Rejected values change nothing; accepted ones (however large) work at
    the next call: the kernel uses at most its pool's size."""
    before = fusedrnn.get_num_threads()
    try:
        if error is None:
            fusedrnn.set_num_threads(value)
            y, _ = fusedrnn.rnn_forward(np.ones((2, 1, 1)), None, np.ones((1, 1)), np.ones((1, 1)))
            assert np.allclose(y.ravel(), [np.tanh(1), np.tanh(1 + np.tanh(1))])
        else:
            with pytest.raises(error, match="^n: "):
                fusedrnn.set_num_threads(value)
            assert fusedrnn.get_num_threads() == before
    finally:
        fusedrnn.set_num_threads(before)


@pytest.mark.parametrize("value", [None, 0, "", "AVX2", "avx2 ", "scalar\0", b"scalar", ["scalar"],
                                   "avx1024"])
def test_isa_garbage(value):
    before = fusedrnn.get_isa()
    with pytest.raises((TypeError, ValueError), match="^ISA"):
        fusedrnn.set_isa(value)
    assert fusedrnn.get_isa() == before
