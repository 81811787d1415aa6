"""The NumPy reference's GRU with linear_before_reset=False (ONNX's default,
Keras' reset_after=False), whose reset gate scales h before the product with
W_hn:
    n = tanh(W_in x + b_in + W_hn (r*h) + b_hn)
instead of PyTorch's n = tanh(W_in x + b_in + r*(W_hn h + b_hn)). Every
gradient against central finite differences, the reserve against its
documented layout, the forward against ONNX Runtime's GRU operator (an
implementation of its own), and the flag: its default, that it is not
ignored, that it takes only bools. Then the fast path,
fusedrnn.gru_forward/gru_backward(..., linear_before_reset=False), against
the reference on every ISA and against ONNX Runtime.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fusedrnn
from fusedrnn import reference
from fusedrnn._tolerances import TOLERANCE

# (T, B, D, H) and the lengths used when a test asks for lengths: an empty
# sequence (0), a full one (T) and partial ones, also mixed in one batch; T=0
# is an empty problem.
CASES = {
    "T0B1D1H1": ((0, 1, 1, 1), [0]),
    "T1B2D3H1": ((1, 2, 3, 1), [1, 0]),
    "T3B2D1H2": ((3, 2, 1, 2), [3, 1]),
    "T4B3D2H3": ((4, 3, 2, 3), [0, 4, 2]),
}

# Central differences with EPS carry a rounding error of ~1e-10, far below
# these tolerances, while a wrong gradient term is off by O(0.1).
EPS = 1e-6
RTOL = 1e-6
ATOL = 1e-8

PARAMETERS = ("x", "h0", "w_ih", "w_hh", "b_ih", "b_hh")  # gru_forward's, in order


def variant_problem(T, B, D, H, *, dtype=np.float64, batch_first=False, seed=0):
    """Random inputs of a one-layer GRU, all of `dtype`: a dict keyed like
    gru_forward's parameters (x, h0, w_ih, w_hh, b_ih, b_hh), and the loss
    weights {"y": ..., "h_n": ...} of L = sum(y*w_y) + sum(h_n*w_h), which are
    also L's gradients with respect to y and h_n, a backward's dy and dh_n.
    x and w_y are batch-first if asked. Weights scaled by 0.5 keep the gates
    out of saturation, where the gradients would be too small to catch a
    wrong term."""
    rng = np.random.default_rng(seed)
    arrays = {
        "x": rng.normal(size=(B, T, D) if batch_first else (T, B, D)),
        "h0": 0.5 * rng.normal(size=(B, H)),
        "w_ih": 0.5 * rng.normal(size=(3 * H, D)),
        "w_hh": 0.5 * rng.normal(size=(3 * H, H)),
        "b_ih": 0.5 * rng.normal(size=3 * H),
        "b_hh": 0.5 * rng.normal(size=3 * H),
    }
    weights = {"y": rng.normal(size=(B, T, H) if batch_first else (T, B, H)),
               "h_n": rng.normal(size=(B, H))}
    return ({k: a.astype(dtype) for k, a in arrays.items()},
            {k: w.astype(dtype) for k, w in weights.items()})


def backward(arrays, out, dy, dh_n, **options):
    return reference.gru_backward(*(arrays[k] for k in PARAMETERS), out.y, out.reserve, dy,
                                  dh_n, **options)


def check_gradients(numerical_gradient, shape, lengths, reverse, batch_first, absent=()):
    """Every gradient of the variant's backward against central differences
    of L. `absent` names what the calls get as None: "h0", "bias" (both),
    "dy", "dh_n"; None is zeros, so the differences perturb zeros there."""
    arrays, weights = variant_problem(*shape, batch_first=batch_first)
    called = dict(arrays)
    if "h0" in absent:
        arrays["h0"][...] = 0.0
        called["h0"] = None
    if "bias" in absent:
        arrays["b_ih"][...] = arrays["b_hh"][...] = 0.0
        called["b_ih"] = called["b_hh"] = None
    dy = None if "dy" in absent else weights["y"]
    dh_n = None if "dh_n" in absent else weights["h_n"]
    options = dict(lengths=lengths, reverse=reverse, batch_first=batch_first,
                   linear_before_reset=False)

    def loss():
        out = reference.gru_forward(**arrays, **options)
        return ((0.0 if dy is None else np.sum(out.y * dy))
                + (0.0 if dh_n is None else np.sum(out.h_n * dh_n)))

    out = reference.gru_forward(**called, training=True, **options)
    grads = backward(called, out, dy, dh_n, **options)
    for name in grads._fields:
        numerical = numerical_gradient(loss, arrays[name[1:]], EPS)
        actual = getattr(grads, name)
        assert actual.dtype == np.float64, name
        assert_allclose(actual, numerical, rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_gradients_match_finite_differences(case, with_lengths, reverse, batch_first,
                                           numerical_gradient):
    shape, lengths = CASES[case]
    check_gradients(numerical_gradient, shape, lengths if with_lengths else None, reverse,
                    batch_first)


@pytest.mark.parametrize("absent", [("h0",), ("bias",), ("dy",), ("dh_n",),
                                    ("h0", "bias", "dy")], ids="-".join)
@pytest.mark.parametrize("reverse", [False, True])
def test_optional_arguments_match_finite_differences(absent, reverse, numerical_gradient):
    shape, lengths = CASES["T4B3D2H3"]
    check_gradients(numerical_gradient, shape, lengths, reverse, batch_first=False,
                    absent=absent)


def test_bias_gradients_are_equal():
    """b_hn is added after the product, unscaled by r, so each bias is a
    plain term of every pre-activation: dL/db_hh = dL/db_ih, unlike in
    PyTorch's GRU, where they differ in the n rows."""
    arrays, weights = variant_problem(5, 3, 2, 4)
    grads = {}
    for linear_before_reset in (False, True):
        out = reference.gru_forward(**arrays, training=True,
                                    linear_before_reset=linear_before_reset)
        grads[linear_before_reset] = backward(arrays, out, weights["y"], weights["h_n"],
                                              linear_before_reset=linear_before_reset)
    assert_allclose(grads[False].db_hh, grads[False].db_ih, rtol=1e-12, atol=0.0)
    H = arrays["w_hh"].shape[1]
    assert not np.allclose(grads[True].db_hh[2 * H:], grads[True].db_ih[2 * H:])


@pytest.mark.parametrize("reverse", [False, True])
def test_reserve_holds_what_the_docstring_says(reverse):
    """Per valid step, [h_{t-1}, r, z, n, r*h_{t-1}] (each H wide), zeros at
    padded steps: r and n recomputed here from the equations and the saved
    h_{t-1}; h_t = (1-z)*n + z*h_{t-1} is y_t and the next step's h_{t-1}.
    And a backward given the reserve equals one that recomputes it."""
    T, B, D, H = 4, 3, 2, 3
    lengths = np.array([4, 0, 2])
    arrays, weights = variant_problem(T, B, D, H)
    options = dict(lengths=lengths, reverse=reverse, linear_before_reset=False)
    out = reference.gru_forward(**arrays, training=True, **options)
    record = out.reserve.reshape(T, B, 5 * H)
    w_ir, w_iz, w_in = np.split(arrays["w_ih"], 3)
    w_hr, w_hz, w_hn = np.split(arrays["w_hh"], 3)
    b_ir, b_iz, b_in = np.split(arrays["b_ih"], 3)
    b_hr, b_hz, b_hn = np.split(arrays["b_hh"], 3)

    def sigmoid(a):
        return 1.0 / (1.0 + np.exp(-a))

    # The products here are row by row, the reference's batched: a rounding apart.
    close = dict(rtol=1e-12, atol=1e-14)

    for b in range(B):
        times = range(lengths[b])
        order = list(reversed(times)) if reverse else list(times)
        h_expected = arrays["h0"][b]
        for t in order:
            h, r, z, n, rh = np.split(record[t, b], 5)
            x = arrays["x"][t, b]
            assert_array_equal(h, h_expected)
            assert_allclose(r, sigmoid(w_ir @ x + b_ir + w_hr @ h + b_hr), **close)
            assert_allclose(z, sigmoid(w_iz @ x + b_iz + w_hz @ h + b_hz), **close)
            assert_array_equal(rh, r * h)
            assert_allclose(n, np.tanh(w_in @ x + b_in + w_hn @ (r * h) + b_hn), **close)
            assert_array_equal(out.y[t, b], (1.0 - z) * n + z * h)
            h_expected = out.y[t, b]
        assert_array_equal(out.h_n[b], h_expected)
        padded = [t for t in range(T) if t >= lengths[b]]
        assert not record[padded, b].any()

    with_reserve = backward(arrays, out, weights["y"], weights["h_n"], **options)
    recomputed = backward(arrays, out._replace(reserve=None), weights["y"], weights["h_n"],
                          **options)
    for name in with_reserve._fields:
        assert_array_equal(getattr(with_reserve, name), getattr(recomputed, name), err_msg=name)


# The flag.

@pytest.mark.parametrize("reverse", [False, True])
def test_true_is_the_default(reverse):
    arrays, weights = variant_problem(4, 3, 2, 3)
    options = dict(lengths=[4, 1, 3], reverse=reverse)
    default = reference.gru_forward(**arrays, training=True, **options)
    explicit = reference.gru_forward(**arrays, training=True, linear_before_reset=True,
                                     **options)
    for name in default._fields:
        assert_array_equal(getattr(explicit, name), getattr(default, name), err_msg=name)
    default_grads = backward(arrays, default, weights["y"], weights["h_n"], **options)
    explicit_grads = backward(arrays, default, weights["y"], weights["h_n"],
                              linear_before_reset=True, **options)
    for name in default_grads._fields:
        assert_array_equal(getattr(explicit_grads, name), getattr(default_grads, name),
                           err_msg=name)


def test_the_variant_differs_from_the_default():
    """Every output and every gradient, so that no part of the variant's
    path is the default's by mistake."""
    arrays, weights = variant_problem(5, 3, 2, 4)
    results = {}
    for linear_before_reset in (False, True):
        out = reference.gru_forward(**arrays, training=True,
                                    linear_before_reset=linear_before_reset)
        grads = backward(arrays, out, weights["y"], weights["h_n"],
                         linear_before_reset=linear_before_reset)
        results[linear_before_reset] = {"y": out.y, "h_n": out.h_n, **grads._asdict()}
    for name, variant in results[False].items():
        assert not np.allclose(variant, results[True][name], rtol=1e-3, atol=0.0), name


@pytest.mark.parametrize("value, same_as", [(0, False), (1, True), (np.False_, False),
                                            (np.True_, True)])
def test_zero_one_and_numpy_bools_are_flags(value, same_as):
    """As reverse and batch_first are in the fast API (_checks.flag)."""
    arrays, weights = variant_problem(3, 2, 2, 3)
    out = reference.gru_forward(**arrays, training=True, linear_before_reset=value)
    expected = reference.gru_forward(**arrays, training=True, linear_before_reset=same_as)
    assert_array_equal(out.reserve, expected.reserve)
    grads = backward(arrays, out, weights["y"], weights["h_n"], linear_before_reset=value)
    expected_grads = backward(arrays, out, weights["y"], weights["h_n"],
                              linear_before_reset=same_as)
    for name in grads._fields:
        assert_array_equal(getattr(grads, name), getattr(expected_grads, name), err_msg=name)


@pytest.mark.parametrize("value", ["False", "", None, 2, 0.0, 1.0, [True]],
                         ids=repr)
def test_a_flag_that_is_not_a_bool_is_a_type_error(value):
    arrays, weights = variant_problem(3, 2, 2, 3)
    message = f"linear_before_reset: expected True or False, got {value!r}"
    with pytest.raises(TypeError) as error:
        reference.gru_forward(**arrays, linear_before_reset=value)
    assert str(error.value) == message
    with pytest.raises(TypeError) as error:
        reference.gru_backward(*(arrays[k] for k in PARAMETERS), None, None, weights["y"],
                               weights["h_n"], linear_before_reset=value)
    assert str(error.value) == message


# Against ONNX Runtime's GRU operator (forward only: inference sessions have
# no backward). linear_before_reset=1 is the control: it runs the default
# through the same graph, which the reference's default checks against
# torch (test_reference_cells.py), so a fault in the graph shows there too.

@pytest.fixture(name="ort")
def ort_fixture():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


def ort_gru(ort, arrays, lengths, reverse, linear_before_reset):
    """y [T,B,H] and h_n [B,H] from ONNX Runtime's GRU on the time-major
    `arrays` (variant_problem's, one float dtype), run on one thread."""
    import onnx
    from onnx import TensorProto, helper

    from fusedrnn._peers.onnxruntime import GATE_ORDER, _gates

    order = GATE_ORDER["gru"]  # ONNX's z, r, h blocks are torch's r, z, n reordered
    x = arrays["x"]
    T, B, D = x.shape
    H = arrays["w_hh"].shape[1]
    element = helper.np_dtype_to_tensor_dtype(x.dtype)
    initializers = [
        helper.make_tensor("W", element, [1, 3 * H, D], _gates(arrays["w_ih"], order).ravel()),
        helper.make_tensor("R", element, [1, 3 * H, H], _gates(arrays["w_hh"], order).ravel()),
        helper.make_tensor("B", element, [1, 6 * H],
                           np.concatenate([_gates(arrays["b_ih"], order),
                                           _gates(arrays["b_hh"], order)])),
    ]
    inputs = [helper.make_tensor_value_info("X", element, [T, B, D]),
              helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]),
              helper.make_tensor_value_info("initial_h", element, [1, B, H])]
    outputs = [helper.make_tensor_value_info("Y", element, [T, 1, B, H]),
               helper.make_tensor_value_info("Y_h", element, [1, B, H])]
    # Operator inputs by position: X, W, R, B, sequence_lens, initial_h.
    node = helper.make_node("GRU", ["X", "W", "R", "B", "sequence_lens", "initial_h"],
                            ["Y", "Y_h"], hidden_size=H,
                            linear_before_reset=int(linear_before_reset),
                            direction="reverse" if reverse else "forward")
    graph = helper.make_graph([node], "gru_variant", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    feed = {"X": x, "sequence_lens": lengths.astype(np.int32), "initial_h": arrays["h0"][None]}
    try:
        y, h_n = session.run(None, feed)
    except Exception as e:
        # Its CPU GRU registers double but refuses to run it (1.32.0); run the
        # float64 case as soon as a version does.
        if x.dtype == np.float64 and "does not support double" in str(e):
            pytest.skip(f"onnxruntime {ort.__version__}: {e}")
        raise
    return y[:, 0], h_n[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
# No empty sequence: ONNX Runtime's Y_h for one is zeros, where fusedrnn's
# h_n is h0 (a convention, not the cell's maths; finite differences cover it).
@pytest.mark.parametrize("lengths", [None, [7, 3, 1, 5]], ids=["full", "partial"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("linear_before_reset", [False, True])
def test_forward_matches_onnxruntime(ort, linear_before_reset, reverse, lengths, dtype,
                                     assert_close):
    # ONNX Runtime's inputs in dtype; the reference reads the same
    # (dtype-rounded) values in float64.
    arrays, _ = variant_problem(7, 4, 5, 6, dtype=dtype, seed=1)
    y, h_n = ort_gru(ort, arrays, lengths, reverse, linear_before_reset)
    out = reference.gru_forward(**arrays, lengths=lengths, reverse=reverse,
                                linear_before_reset=linear_before_reset)
    assert_close(y, out.y, dtype, "y")
    assert_close(h_n, out.h_n, dtype, "h_n")
    # fusedrnn's fast path against ONNX Runtime itself: both round, so twice
    # the table's bound.
    fast = fusedrnn.gru_forward(**arrays, lengths=lengths, reverse=reverse,
                                linear_before_reset=linear_before_reset)
    tol = 2 * TOLERANCE[np.dtype(dtype)]
    assert_close(fast.y, y.astype(np.float64), dtype, "fusedrnn's y", tol=tol)
    assert_close(fast.h_n, h_n.astype(np.float64), dtype, "fusedrnn's h_n", tol=tol)


# The kernel: sizes with edge tiles, rows of 2 KB and more (H = 130 float64,
# 520 float32: the padded strides and the forward's staged rows), an empty
# sequence, and two threads.
KERNEL_SHAPES = [(1, 1, 1, 1), (5, 7, 9, 19), (4, 13, 6, 64), (3, 2, 3, 130), (2, 3, 4, 520)]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("shape", KERNEL_SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_kernel_matches_reference(isa, dtype, shape, with_lengths, reverse, batch_first, threads,
                                  assert_close):
    T, B, D, H = shape
    arrays, weights = variant_problem(T, B, D, H, batch_first=batch_first, seed=T + B + H)
    lengths = [(T, 0, max(T // 2, 1))[b % 3] for b in range(B)] if with_lengths else None
    options = dict(lengths=lengths, reverse=reverse, batch_first=batch_first,
                   linear_before_reset=False)
    want = reference.gru_forward(**arrays, training=True, **options)
    grads = backward(arrays, want, weights["y"], weights["h_n"], **options)
    fast = {k: a.astype(dtype) for k, a in arrays.items()}
    dy, dh_n = weights["y"].astype(dtype), weights["h_n"].astype(dtype)
    previous = fusedrnn.get_num_threads()
    fusedrnn.set_num_threads(threads)
    try:
        inference = fusedrnn.gru_forward(**fast, **options)
        out = fusedrnn.gru_forward(**fast, training=True, **options)
        got = fusedrnn.gru_backward(*(fast[k] for k in PARAMETERS), out.y, out.reserve, dy,
                                    dh_n, **options)
        recomputed = fusedrnn.gru_backward(*(fast[k] for k in PARAMETERS), out.y, None, dy,
                                           dh_n, **options)
    finally:
        fusedrnn.set_num_threads(previous)
    for name in ("y", "h_n"):
        assert_close(getattr(out, name), getattr(want, name), dtype, name)
        assert_array_equal(getattr(inference, name), getattr(out, name), err_msg=name)
    for name in grads._fields:
        assert_close(getattr(got, name), getattr(grads, name), dtype, name)
        assert_array_equal(getattr(recomputed, name), getattr(got, name), err_msg=name)


def test_a_reserve_of_the_other_form_is_refused():
    """The reserve names the cell it came from: the default GRU's handed to
    the variant's backward (or the other way) is refused, never read."""
    arrays, weights = variant_problem(3, 2, 4, 5)
    for forward_form in (True, False):
        out = fusedrnn.gru_forward(**arrays, training=True, linear_before_reset=forward_form)
        with pytest.raises(ValueError, match=r"reserve: it comes from a different call \(GRU"):
            fusedrnn.gru_backward(*(arrays[k] for k in PARAMETERS), out.y, out.reserve,
                                  weights["y"], linear_before_reset=not forward_form)


def test_the_fast_flag_is_checked_like_the_others():
    arrays, _ = variant_problem(2, 1, 3, 4)
    with pytest.raises(TypeError, match=r"^linear_before_reset: expected True or False, got 'no'"):
        fusedrnn.gru_forward(**arrays, linear_before_reset="no")
