"""The compiled kernel against the NumPy reference, on every ISA: the forward
(y, h_n) and every gradient, over every combination of the options.

The reference works in float64 from the very same (dtype-rounded) inputs, so
the only difference left is the kernel's rounding, which TOLERANCE bounds.
"""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fusedrnn
from fusedrnn import reference

pytestmark = pytest.mark.usefixtures("isa")

# (T, B, D, H): sizes of 1, odd sizes that fill no vector register or tile
# evenly, T = 0 and 1, B = 0, D = 0 or H = 0 (fusedrnn.h: each >= 0), and one
# shape past every ISA's blocking bounds (kernels.h: T*B > KC_MAX = 512 rows
# in the weight-gradient GEMMs, B > MR_MAX = 32, H > NR_MAX = 64), so that
# the GEMM engine's block loops run more than once.
SHAPES = {
    "T5B3D4H7": (5, 3, 4, 7),
    "T1B1D1H1": (1, 1, 1, 1),
    "T0B2D3H4": (0, 2, 3, 4),
    "T6B17D5H33": (6, 17, 5, 33),
    "T2B33D17H1": (2, 33, 17, 1),
    "T3B0D2H2": (3, 0, 2, 2),
    "T4B2D0H3": (4, 2, 0, 3),
    "T3B2D3H0": (3, 2, 3, 0),
    "T9B65D3H70": (9, 65, 3, 70),
}
NONLINEARITIES = ["tanh", "relu", "sigmoid"]
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


def flag(name):
    """A boolean parameter whose ids read `name` / `no_name`."""
    return pytest.mark.parametrize(name, [False, True], ids=[f"no_{name}", name])


def mixed_lengths(T, B):
    """Per-sequence lengths cycling through 0, T and lengths in between, so
    that one batch mixes empty, full and partial sequences (B = 1 gets the
    empty one, the case most likely to be mishandled)."""
    cycle = [0, T, T // 2, 1, T - 1]
    return np.array([min(max(cycle[b % len(cycle)], 0), T) for b in range(B)], dtype=np.int64)


def make_inputs(shape, dtype, batch_first, bias_given, h0_given):
    """Random inputs in `dtype`, x in the layout batch_first asks for.

    Weights scaled by 1/sqrt(fan-in) keep pre-activations O(1): tanh and
    sigmoid stay out of saturation, relu's state neither dies nor explodes.
    """
    T, B, D, H = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.normal(size=(B, T, D) if batch_first else (T, B, D))
    return dict(
        x=x.astype(dtype),
        h0=rng.normal(size=(B, H)).astype(dtype) if h0_given else None,
        w_ih=(rng.normal(size=(H, D)) / np.sqrt(max(D, 1))).astype(dtype),
        w_hh=(rng.normal(size=(H, H)) / np.sqrt(max(H, 1))).astype(dtype),
        bias=rng.normal(size=H).astype(dtype) if bias_given else None,
    )


def every_option(test):
    """Parametrize over every activation, dtype and on/off option."""
    for name in ("batch_first", "reverse", "lengths", "h0", "bias"):
        test = flag(name)(test)
    test = pytest.mark.parametrize("dtype", DTYPES)(test)
    return pytest.mark.parametrize("nonlinearity", NONLINEARITIES)(test)


@pytest.fixture(params=SHAPES)
def shape(request):
    return SHAPES[request.param]


@every_option
def test_forward_matches_reference(assert_close, shape, nonlinearity, dtype, bias, h0, lengths,
                                   reverse, batch_first):
    inputs = make_inputs(shape, dtype, batch_first, bias, h0)
    T, B, _, _ = shape
    options = dict(nonlinearity=nonlinearity, reverse=reverse, batch_first=batch_first,
                   lengths=mixed_lengths(T, B) if lengths else None)

    y, h_n = fusedrnn.rnn_forward(**inputs, **options)
    y_ref, h_n_ref = reference.rnn_forward(**inputs, **options)
    assert_close(y, y_ref, dtype, "y")
    assert_close(h_n, h_n_ref, dtype, "h_n")


@pytest.mark.parametrize("grad_outputs", ["dy_dh_n", "dy", "dh_n", "none"])
@every_option
def test_backward_matches_reference(assert_close, shape, nonlinearity, dtype, bias, h0, lengths,
                                    reverse, batch_first, grad_outputs):
    inputs = make_inputs(shape, dtype, batch_first, bias, h0)
    T, B, _, H = shape
    options = dict(nonlinearity=nonlinearity, reverse=reverse, batch_first=batch_first,
                   lengths=mixed_lengths(T, B) if lengths else None)
    # Both sides differentiate at the kernel's own y: the backward is a
    # function of y, and relu's derivative at 0 depends on which side of 0
    # a rounded pre-activation fell.
    y, _ = fusedrnn.rnn_forward(**inputs, **options)
    rng = np.random.default_rng(1)
    dy = rng.normal(size=y.shape).astype(dtype) if "dy" in grad_outputs else None
    dh_n = rng.normal(size=(B, H)).astype(dtype) if "dh_n" in grad_outputs else None
    args = (inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"], y, dy, dh_n)

    grads = fusedrnn.rnn_backward(*args, **options)
    grads_ref = reference.rnn_backward(*args, **options)
    assert isinstance(grads, fusedrnn.RNNGrads)
    for name in fusedrnn.RNNGrads._fields:
        assert_close(getattr(grads, name), getattr(grads_ref, name), dtype, name)


def last_valid_time(length, reverse):
    """The time of a sequence's last step: it runs to time 0 when reversed."""
    return 0 if reverse else length - 1


@flag("batch_first")
@flag("reverse")
@pytest.mark.parametrize("dtype", DTYPES)
def test_padding_and_pass_through_are_exact(dtype, reverse, batch_first):
    """What the README states as values, not approximations: padded steps of y
    and dx are exactly 0, h_n is exactly the last valid state (h0 for an empty
    sequence) and an empty sequence's dh0 is exactly its dh_n."""
    shape = SHAPES["T6B17D5H33"]
    T, B, _, H = shape
    lengths = mixed_lengths(T, B)
    inputs = make_inputs(shape, dtype, batch_first, bias_given=True, h0_given=True)
    options = dict(lengths=lengths, reverse=reverse, batch_first=batch_first)
    y, h_n = fusedrnn.rnn_forward(**inputs, **options)
    rng = np.random.default_rng(2)
    # dy is nonzero at padded steps too: the kernel must ignore it there.
    dy = rng.normal(size=y.shape).astype(dtype)
    dh_n = rng.normal(size=(B, H)).astype(dtype)
    grads = fusedrnn.rnn_backward(inputs["x"], inputs["h0"], inputs["w_ih"], inputs["w_hh"], y,
                                  dy, dh_n, **options)

    y_tm = y.transpose(1, 0, 2) if batch_first else y
    dx_tm = grads.dx.transpose(1, 0, 2) if batch_first else grads.dx
    for b, n in enumerate(lengths):
        assert np.all(y_tm[n:, b] == 0), f"y: padded steps of sequence {b} (length {n})"
        assert np.all(dx_tm[n:, b] == 0), f"dx: padded steps of sequence {b} (length {n})"
        if n == 0:
            assert_array_equal(h_n[b], inputs["h0"][b], err_msg=f"h_n[{b}] (length 0)")
            assert_array_equal(grads.dh0[b], dh_n[b], err_msg=f"dh0[{b}] (length 0)")
        else:
            assert_array_equal(h_n[b], y_tm[last_valid_time(n, reverse), b],
                               err_msg=f"h_n[{b}] (length {n})")
