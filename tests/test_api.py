"""The Python API's behaviour around the numbers: fresh outputs of the right
shape and dtype, untouched inputs, any memory layout, lists, empty problems,
the RNNGrads type, the thread and ISA settings, and determinism.

The seeds' worked example lives in test_seeds.py; agreement with the
reference in test_kernel.py.
"""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fusedrnn

T, B, D, H = 4, 3, 5, 6
LENGTHS = np.array([4, 0, 2])


def make_problem(dtype=np.float64, batch_first=False, seed=0):
    """Every argument of rnn_forward and rnn_backward, all given, as a dict
    of C-contiguous arrays in `dtype` (lengths: int64)."""
    rng = np.random.default_rng(seed)
    seq = (B, T) if batch_first else (T, B)
    return dict(
        x=rng.normal(size=(*seq, D)).astype(dtype),
        h0=rng.normal(size=(B, H)).astype(dtype),
        w_ih=(0.5 * rng.normal(size=(H, D))).astype(dtype),
        w_hh=(0.5 * rng.normal(size=(H, H))).astype(dtype),
        bias=rng.normal(size=H).astype(dtype),
        dy=rng.normal(size=(*seq, H)).astype(dtype),
        dh_n=rng.normal(size=(B, H)).astype(dtype),
        lengths=LENGTHS.copy(),
    )


def run(p, **options):
    """rnn_forward then rnn_backward on the problem p (a make_problem dict,
    possibly altered); returns (y, h_n, grads)."""
    y, h_n = fusedrnn.rnn_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["bias"],
                                  lengths=p["lengths"], **options)
    grads = fusedrnn.rnn_backward(p["x"], p["h0"], p["w_ih"], p["w_hh"], y, p["dy"], p["dh_n"],
                                  lengths=p["lengths"], **options)
    return y, h_n, grads


def assert_same_results(a, b):
    """Two run() results are bitwise identical, output by output."""
    (y_a, h_n_a, grads_a), (y_b, h_n_b, grads_b) = a, b
    assert_array_equal(y_a, y_b, err_msg="y", strict=True)
    assert_array_equal(h_n_a, h_n_b, err_msg="h_n", strict=True)
    for name in fusedrnn.RNNGrads._fields:
        assert_array_equal(getattr(grads_a, name), getattr(grads_b, name), err_msg=name,
                           strict=True)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_outputs_are_fresh_arrays_of_the_right_shape_and_dtype(dtype, batch_first):
    p = make_problem(dtype, batch_first)
    y, h_n, grads = run(p, batch_first=batch_first)
    seq = (B, T) if batch_first else (T, B)
    outputs = {"y": (y, (*seq, H)), "h_n": (h_n, (B, H)), "dx": (grads.dx, (*seq, D)),
               "dh0": (grads.dh0, (B, H)), "dw_ih": (grads.dw_ih, (H, D)),
               "dw_hh": (grads.dw_hh, (H, H)), "dbias": (grads.dbias, (H,))}
    for name, (out, shape) in outputs.items():
        assert type(out) is np.ndarray, name
        assert out.shape == shape, name
        assert out.dtype == dtype, name
        assert out.flags.writeable, name
        # Fresh: no output is a view of an input (y is the backward's input
        # here) or of another output.
        others = [*p.values(), *(o for n, (o, _) in outputs.items() if n != name)]
        assert not any(np.shares_memory(out, a) for a in others), name


@pytest.mark.usefixtures("isa")
def test_two_calls_return_independent_arrays():
    """No output buffer is cached and handed out again."""
    p = make_problem()
    first, second = run(p), run(p)
    for a, b in zip((first[0], first[1], *first[2]), (second[0], second[1], *second[2])):
        assert not np.shares_memory(a, b)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_inputs_are_not_modified(batch_first):
    p = make_problem(batch_first=batch_first)
    y, _ = fusedrnn.rnn_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["bias"],
                                lengths=p["lengths"], batch_first=batch_first)
    inputs = dict(p, y=y)
    before = {name: a.copy() for name, a in inputs.items()}

    fusedrnn.rnn_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["bias"],
                         lengths=p["lengths"], batch_first=batch_first)
    fusedrnn.rnn_backward(p["x"], p["h0"], p["w_ih"], p["w_hh"], y, p["dy"], p["dh_n"],
                          lengths=p["lengths"], batch_first=batch_first)
    for name, a in inputs.items():
        assert_array_equal(a, before[name], err_msg=name, strict=True)


@pytest.mark.usefixtures("isa")
def test_read_only_inputs_are_accepted():
    p = make_problem()
    expected = run(p)
    for a in p.values():
        a.setflags(write=False)
    assert_same_results(run(p), expected)


def strided_copy(a, layout):
    """The values of `a` in memory that is not C-contiguous: Fortran order,
    every other element of a larger buffer, or a reversed axis of a copy."""
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "every_other":
        wide = np.zeros((*a.shape[:-1], 2 * a.shape[-1]), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    flipped = a[::-1].copy()
    return flipped[::-1]


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("layout", ["fortran", "every_other", "negative_stride"])
def test_non_contiguous_inputs_give_the_contiguous_results(layout):
    p = make_problem()
    strided = {name: strided_copy(a, layout) for name, a in p.items()}
    # Guard against a layout that happens to be contiguous (1-D Fortran order).
    assert not strided["x"].flags.c_contiguous and not strided["w_hh"].flags.c_contiguous
    # The API copies such inputs into C order once, so the kernel sees the
    # same values in the same order: the results must match to the bit.
    assert_same_results(run(strided), run(p))


@pytest.mark.usefixtures("isa")
def test_transposed_views_give_the_contiguous_results():
    """The everyday non-contiguous input: a batch-first array viewed as time-major."""
    p = make_problem()
    views = dict(p, x=np.ascontiguousarray(p["x"].transpose(1, 0, 2)).transpose(1, 0, 2),
                 w_hh=np.ascontiguousarray(p["w_hh"].T).T)
    assert not views["x"].flags.c_contiguous and not views["w_hh"].flags.c_contiguous
    assert_same_results(run(views), run(p))


@pytest.mark.usefixtures("isa")
def test_python_lists_of_floats_are_accepted():
    p = make_problem()
    as_lists = {name: a.tolist() for name, a in p.items()}
    y, h_n, grads = run(as_lists)
    assert y.dtype == np.float64 and grads.dw_hh.dtype == np.float64
    assert_same_results((y, h_n, grads), run(p))


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_zero_time_steps(dtype, batch_first):
    """T = 0: nothing runs, so h_n is h0 (zeros without one), dh0 is dh_n and
    every other gradient is zero."""
    rng = np.random.default_rng(0)
    x = np.empty((B, 0, D) if batch_first else (0, B, D), dtype)
    h0 = rng.normal(size=(B, H)).astype(dtype)
    w_ih = rng.normal(size=(H, D)).astype(dtype)
    w_hh = rng.normal(size=(H, H)).astype(dtype)
    dh_n = rng.normal(size=(B, H)).astype(dtype)
    options = dict(batch_first=batch_first)

    y, h_n = fusedrnn.rnn_forward(x, h0, w_ih, w_hh, rng.normal(size=H).astype(dtype), **options)
    assert y.shape == ((B, 0, H) if batch_first else (0, B, H)) and y.dtype == dtype
    assert_array_equal(h_n, h0, strict=True)
    _, h_n_without_h0 = fusedrnn.rnn_forward(x, None, w_ih, w_hh, **options)
    assert_array_equal(h_n_without_h0, np.zeros((B, H), dtype), strict=True)

    grads = fusedrnn.rnn_backward(x, h0, w_ih, w_hh, y, np.empty_like(y), dh_n, **options)
    assert grads.dx.shape == x.shape and grads.dx.dtype == dtype
    assert_array_equal(grads.dh0, dh_n, strict=True)
    assert_array_equal(grads.dw_ih, np.zeros((H, D), dtype), strict=True)
    assert_array_equal(grads.dw_hh, np.zeros((H, H), dtype), strict=True)
    assert_array_equal(grads.dbias, np.zeros(H, dtype), strict=True)
    # Without dh_n nothing reaches h0.
    grads = fusedrnn.rnn_backward(x, h0, w_ih, w_hh, y, None, None, **options)
    assert_array_equal(grads.dh0, np.zeros((B, H), dtype), strict=True)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_empty_batch(dtype, batch_first):
    """B = 0: empty sequence outputs and states, zero weight gradients."""
    rng = np.random.default_rng(0)
    x = np.empty((0, T, D) if batch_first else (T, 0, D), dtype)
    h0 = np.empty((0, H), dtype)
    w_ih = rng.normal(size=(H, D)).astype(dtype)
    w_hh = rng.normal(size=(H, H)).astype(dtype)
    options = dict(batch_first=batch_first, lengths=np.empty(0, np.int64))

    y, h_n = fusedrnn.rnn_forward(x, h0, w_ih, w_hh, rng.normal(size=H).astype(dtype), **options)
    assert y.shape == ((0, T, H) if batch_first else (T, 0, H)) and y.dtype == dtype
    assert h_n.shape == (0, H) and h_n.dtype == dtype

    grads = fusedrnn.rnn_backward(x, h0, w_ih, w_hh, y, np.empty_like(y), np.empty((0, H), dtype),
                                  **options)
    assert grads.dx.shape == x.shape and grads.dx.dtype == dtype
    assert grads.dh0.shape == (0, H) and grads.dh0.dtype == dtype
    assert_array_equal(grads.dw_ih, np.zeros((H, D), dtype), strict=True)
    assert_array_equal(grads.dw_hh, np.zeros((H, H), dtype), strict=True)
    assert_array_equal(grads.dbias, np.zeros(H, dtype), strict=True)


def test_rnn_grads_is_a_named_tuple():
    assert issubclass(fusedrnn.RNNGrads, tuple)
    assert fusedrnn.RNNGrads._fields == ("dx", "dh0", "dw_ih", "dw_hh", "dbias")
    grads = run(make_problem())[2]
    assert type(grads) is fusedrnn.RNNGrads
    dx, dh0, dw_ih, dw_hh, dbias = grads  # unpacks in field order
    assert dx is grads.dx and dh0 is grads.dh0 and dw_ih is grads.dw_ih
    assert dw_hh is grads.dw_hh and dbias is grads.dbias


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_repeated_calls_are_bitwise_identical(dtype):
    p = make_problem(dtype)
    assert_same_results(run(p), run(p))


@pytest.mark.usefixtures("isa")
def test_results_do_not_depend_on_the_thread_count():
    """docs/design.md §4: threads split output tiles, never a reduction,
    so the bits do not depend on how many there are."""
    previous = fusedrnn.get_num_threads()
    p = make_problem(np.float32)
    try:
        fusedrnn.set_num_threads(1)
        one = run(p)
        fusedrnn.set_num_threads(2)
        two = run(p)
    finally:
        fusedrnn.set_num_threads(previous)
    assert_same_results(one, two)


@pytest.fixture
def restore_num_threads():
    previous = fusedrnn.get_num_threads()
    yield
    fusedrnn.set_num_threads(previous)


@pytest.mark.usefixtures("restore_num_threads")
def test_set_num_threads_round_trips():
    for n in (1, 3, 2):
        fusedrnn.set_num_threads(n)
        assert fusedrnn.get_num_threads() == n


@pytest.mark.usefixtures("restore_num_threads")
@pytest.mark.parametrize("n, error", [(0, ValueError), (-1, ValueError), (1.5, TypeError),
                                      ("x", TypeError)])
def test_set_num_threads_rejects_non_positive_and_non_integers(n, error):
    fusedrnn.set_num_threads(2)
    with pytest.raises(error):
        fusedrnn.set_num_threads(n)
    assert fusedrnn.get_num_threads() == 2  # a rejected value changes nothing


def test_get_num_threads_is_a_positive_int():
    n = fusedrnn.get_num_threads()
    assert type(n) is int and n >= 1


@pytest.fixture
def restore_isa():
    previous = fusedrnn.get_isa()
    yield
    fusedrnn.set_isa(previous)


def test_available_isas_contains_scalar_and_the_active_one():
    isas = fusedrnn.available_isas()
    assert "scalar" in isas
    assert fusedrnn.get_isa() in isas
    assert set(isas) <= {"scalar", "avx2", "avx512"}


@pytest.mark.usefixtures("restore_isa")
def test_get_isa_reflects_set_isa():
    # Ends on "scalar" again: switching back from a faster ISA works too.
    for name in [*fusedrnn.available_isas(), "scalar"]:
        fusedrnn.set_isa(name)
        assert fusedrnn.get_isa() == name


@pytest.mark.usefixtures("restore_isa")
@pytest.mark.parametrize("name", ["sse9", "", "AVX2", None])
def test_set_isa_rejects_unknown_names(name):
    fusedrnn.set_isa("scalar")
    with pytest.raises(ValueError, match="ISA"):
        fusedrnn.set_isa(name)
    assert fusedrnn.get_isa() == "scalar"  # a rejected name changes nothing


@pytest.mark.usefixtures("restore_isa")
def test_set_isa_rejects_known_names_this_cpu_cannot_run():
    unsupported = sorted({"scalar", "avx2", "avx512"} - set(fusedrnn.available_isas()))
    if not unsupported:
        pytest.skip("this CPU runs every ISA the kernel knows")
    fusedrnn.set_isa("scalar")
    for name in unsupported:
        with pytest.raises(ValueError, match=name):
            fusedrnn.set_isa(name)
    assert fusedrnn.get_isa() == "scalar"


def test_buffer_groups_are_the_c_structs_in_their_order():
    """_kernel unpacks _engine's groups as tuples into the C structs: each
    group's fields must be the struct's, in the header's order."""
    import pathlib
    import re

    from fusedrnn import _engine
    header = (pathlib.Path(__file__).parents[1] / "csrc/include/fusedrnn.h").read_text()
    for group, struct in ((_engine.Inputs, "fusedrnn_inputs"),
                          (_engine.Outputs, "fusedrnn_outputs"),
                          (_engine.GradInputs, "fusedrnn_grad_inputs"),
                          (_engine.Grads, "fusedrnn_grads")):
        body = re.search(r"typedef struct \{([^}]*)\} " + struct + ";", header).group(1)
        fields = tuple(re.findall(r"\*\s*(?:FUSEDRNN_RESTRICT\s+)?(\w+)", body))
        assert group._fields == fields, (struct, fields)
