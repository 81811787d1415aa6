"""The NumPy reference checked on its own: its gradients against central finite
differences, and its outputs against the properties the README's API section states.

The reference is the oracle for every fast path, so nothing here uses the
compiled kernel; everything is float64.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fusedrnn import reference

NONLINEARITIES = ["tanh", "relu", "sigmoid"]

# (T, B, D, H) and the lengths used when a test asks for lengths. Together the
# lengths cover an empty sequence (0), a full one (T) and partial ones, also
# mixed inside one batch.
CASES = {
    "T1B1D1H1": ((1, 1, 1, 1), [0]),
    "T3B2D4H5": ((3, 2, 4, 5), [3, 1]),
    "T4B3D2H3": ((4, 3, 2, 3), [0, 4, 2]),
    "T5B4D3H2": ((5, 4, 3, 2), [5, 0, 3, 1]),
}

# Central differences: the truncation error (~EPS**2) is far below the
# rounding error (~1e-16 * |L| / EPS ~ 1e-10 here), and both are far below
# the tolerances, while a wrong gradient term is off by O(0.1).
EPS = 1e-6
RTOL = 1e-6
ATOL = 1e-8

# relu has a kink at 0: a central difference straddling it measures neither
# side's slope. Perturbations of EPS move a pre-activation by O(EPS), so
# keeping every |z| above this margin keeps each difference on one side.
KINK_MARGIN = 1e-3

GRADIENT_OF = {"dx": "x", "dh0": "h0", "dw_ih": "w_ih", "dw_hh": "w_hh", "dbias": "bias"}


def min_abs_pre_activation(arrays, lengths, reverse):
    """Smallest |z| over all valid steps, z = W_ih x_t + W_hh h_prev + b.

    Written per sequence with plain loops (not the reference's batched
    bookkeeping) so that it does not lean on the code under test.
    """
    x, h, w_ih, w_hh, bias = (arrays[k] for k in ("x", "h0", "w_ih", "w_hh", "bias"))
    T, B, _ = x.shape
    smallest = np.inf
    for b in range(B):
        n = T if lengths is None else lengths[b]
        h_prev = h[b]
        for t in (reversed(range(n)) if reverse else range(n)):
            z = w_ih @ x[t, b] + w_hh @ h_prev + bias
            smallest = min(smallest, np.abs(z).min())
            h_prev = np.maximum(z, 0.0)
    return smallest


def make_problem(shape, lengths, nonlinearity, reverse, bias_given=True, h0_given=True):
    """Time-major float64 inputs as a dict keyed like rnn_forward's parameters,
    plus loss weights G [T,B,H] and Gh [B,H].

    A missing bias or h0 is represented by explicit zeros, which is what None
    means, so that finite differences can still perturb it. For relu the
    seed is the first one (deterministically) whose pre-activations all keep
    clear of the kink.
    """
    T, B, D, H = shape
    for seed in range(100):
        rng = np.random.default_rng(seed)
        # Weights scaled by 0.5 keep tanh and sigmoid out of saturation, where
        # the gradients would be too small to catch a wrong term.
        arrays = {
            "x": rng.normal(size=(T, B, D)),
            "h0": 0.5 * rng.normal(size=(B, H)) if h0_given else np.zeros((B, H)),
            "w_ih": 0.5 * rng.normal(size=(H, D)),
            "w_hh": 0.5 * rng.normal(size=(H, H)),
            "bias": 0.5 * rng.normal(size=H) if bias_given else np.zeros(H),
        }
        if nonlinearity != "relu" or min_abs_pre_activation(arrays, lengths, reverse) > KINK_MARGIN:
            return arrays, rng.normal(size=(T, B, H)), rng.normal(size=(B, H))
    raise AssertionError("no seed keeps every relu pre-activation away from 0")


def to_batch_first(a):
    return np.ascontiguousarray(a.transpose(1, 0, 2))


def check_gradients(numerical_gradient, shape, lengths, nonlinearity, reverse, batch_first,
                    bias_given=True, h0_given=True, dy_given=True, dh_n_given=True):
    """Every gradient of L = sum(y * G) + sum(h_n * Gh) from rnn_backward
    against central differences; an absent dy or dh_n is a zero G or Gh."""
    arrays, G, Gh = make_problem(shape, lengths, nonlinearity, reverse, bias_given, h0_given)
    if batch_first:
        arrays["x"], G = to_batch_first(arrays["x"]), to_batch_first(G)
    G = G if dy_given else np.zeros_like(G)
    Gh = Gh if dh_n_given else np.zeros_like(Gh)
    options = dict(nonlinearity=nonlinearity, lengths=lengths, reverse=reverse,
                   batch_first=batch_first)

    def loss():
        y, h_n = reference.rnn_forward(**arrays, **options)
        return np.sum(y * G) + np.sum(h_n * Gh)

    # The analytic side gets None wherever the caller would pass None.
    h0 = arrays["h0"] if h0_given else None
    bias = arrays["bias"] if bias_given else None
    y, _ = reference.rnn_forward(arrays["x"], h0, arrays["w_ih"], arrays["w_hh"], bias, **options)
    grads = reference.rnn_backward(arrays["x"], h0, arrays["w_ih"], arrays["w_hh"], y,
                                   G if dy_given else None, Gh if dh_n_given else None,
                                   **options)

    for grad_name, input_name in GRADIENT_OF.items():
        assert_allclose(getattr(grads, grad_name),
                        numerical_gradient(loss, arrays[input_name], EPS),
                        rtol=RTOL, atol=ATOL, err_msg=grad_name)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
@pytest.mark.parametrize("case", CASES)
def test_gradients_match_finite_differences(case, nonlinearity, with_lengths, reverse, batch_first,
                                           numerical_gradient):
    shape, lengths = CASES[case]
    check_gradients(numerical_gradient, shape, lengths if with_lengths else None, nonlinearity,
                    reverse, batch_first)


@pytest.mark.parametrize("dh_n_given", [False, True])
@pytest.mark.parametrize("dy_given", [False, True])
@pytest.mark.parametrize("h0_given", [False, True])
@pytest.mark.parametrize("bias_given", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
def test_optional_arguments_match_finite_differences(nonlinearity, reverse, bias_given, h0_given,
                                                     dy_given, dh_n_given, numerical_gradient):
    shape, lengths = CASES["T4B3D2H3"]
    check_gradients(numerical_gradient, shape, lengths, nonlinearity, reverse, batch_first=False,
                    bias_given=bias_given, h0_given=h0_given, dy_given=dy_given,
                    dh_n_given=dh_n_given)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
@pytest.mark.parametrize("case", CASES)
def test_padded_steps_are_zero_and_h_n_is_the_last_valid_state(case, nonlinearity, reverse):
    shape, lengths = CASES[case]
    arrays, _, _ = make_problem(shape, lengths, nonlinearity, reverse)
    y, h_n = reference.rnn_forward(**arrays, nonlinearity=nonlinearity, lengths=lengths,
                                   reverse=reverse)
    for b, n in enumerate(lengths):
        assert np.all(y[n:, b] == 0)
        if n == 0:
            assert_array_equal(h_n[b], arrays["h0"][b])
        else:
            # A reversed sequence's last step is time 0.
            assert_array_equal(h_n[b], y[0 if reverse else n - 1, b])


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
@pytest.mark.parametrize("case", CASES)
def test_each_sequence_behaves_as_if_run_alone(case, nonlinearity, reverse):
    """lengths must make a padded batch equivalent to running each sequence
    x[:n] on its own, forwards and backwards; in particular a reversed one
    starts from its own last valid step, not from T-1."""
    shape, lengths = CASES[case]
    arrays, G, Gh = make_problem(shape, lengths, nonlinearity, reverse)
    x, h0, w_ih, w_hh = arrays["x"], arrays["h0"], arrays["w_ih"], arrays["w_hh"]
    options = dict(nonlinearity=nonlinearity, reverse=reverse)
    y, h_n = reference.rnn_forward(**arrays, lengths=lengths, **options)
    grads = reference.rnn_backward(x, h0, w_ih, w_hh, y, G, Gh, lengths=lengths, **options)

    dw_ih, dw_hh, dbias = 0.0, 0.0, 0.0
    # Empty sequences are skipped: they add nothing to the weight gradients,
    # and their h_n and dh0 are covered by the tests above.
    for b in np.flatnonzero(lengths):
        n, rows = lengths[b], slice(b, b + 1)
        y_b, h_n_b = reference.rnn_forward(x[:n, rows], h0[rows], w_ih, w_hh, arrays["bias"],
                                           **options)
        grads_b = reference.rnn_backward(x[:n, rows], h0[rows], w_ih, w_hh, y_b, G[:n, rows],
                                         Gh[rows], **options)
        assert_allclose(y[:n, b], y_b[:, 0], rtol=1e-12, atol=1e-15)
        assert_allclose(h_n[b], h_n_b[0], rtol=1e-12, atol=1e-15)
        assert_allclose(grads.dx[:n, b], grads_b.dx[:, 0], rtol=1e-12, atol=1e-15)
        assert_allclose(grads.dh0[b], grads_b.dh0[0], rtol=1e-12, atol=1e-15)
        dw_ih, dw_hh, dbias = dw_ih + grads_b.dw_ih, dw_hh + grads_b.dw_hh, dbias + grads_b.dbias
    assert_allclose(grads.dw_ih, dw_ih, rtol=1e-12, atol=1e-15)
    assert_allclose(grads.dw_hh, dw_hh, rtol=1e-12, atol=1e-15)
    assert_allclose(grads.dbias, dbias, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
@pytest.mark.parametrize("case", CASES)
def test_reverse_is_forward_over_time_flipped_input(case, nonlinearity):
    shape, _ = CASES[case]
    arrays, G, Gh = make_problem(shape, None, nonlinearity, reverse=True)
    x, h0, w_ih, w_hh = arrays["x"], arrays["h0"], arrays["w_ih"], arrays["w_hh"]
    y, h_n = reference.rnn_forward(**arrays, nonlinearity=nonlinearity, reverse=True)
    grads = reference.rnn_backward(x, h0, w_ih, w_hh, y, G, Gh, nonlinearity=nonlinearity,
                                   reverse=True)

    flipped = dict(arrays, x=x[::-1])
    y_f, h_n_f = reference.rnn_forward(**flipped, nonlinearity=nonlinearity)
    grads_f = reference.rnn_backward(x[::-1], h0, w_ih, w_hh, y_f, G[::-1], Gh,
                                     nonlinearity=nonlinearity)
    assert_allclose(y, y_f[::-1], rtol=1e-12, atol=1e-15)
    assert_allclose(h_n, h_n_f, rtol=1e-12, atol=1e-15)
    assert_allclose(grads.dx, grads_f.dx[::-1], rtol=1e-12, atol=1e-15)
    for name in ("dh0", "dw_ih", "dw_hh", "dbias"):
        assert_allclose(getattr(grads, name), getattr(grads_f, name), rtol=1e-12, atol=1e-15,
                        err_msg=name)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("case", CASES)
def test_batch_first_is_the_transposed_time_major_result(case, with_lengths, reverse):
    shape, lengths = CASES[case]
    lengths = lengths if with_lengths else None
    arrays, G, Gh = make_problem(shape, lengths, "tanh", reverse)
    x, h0, w_ih, w_hh = arrays["x"], arrays["h0"], arrays["w_ih"], arrays["w_hh"]
    options = dict(lengths=lengths, reverse=reverse)
    y, h_n = reference.rnn_forward(**arrays, **options)
    grads = reference.rnn_backward(x, h0, w_ih, w_hh, y, G, Gh, **options)

    x_bf, G_bf = to_batch_first(x), to_batch_first(G)
    y_bf, h_n_bf = reference.rnn_forward(**dict(arrays, x=x_bf), batch_first=True, **options)
    grads_bf = reference.rnn_backward(x_bf, h0, w_ih, w_hh, y_bf, G_bf, Gh, batch_first=True,
                                      **options)
    assert_allclose(y_bf, to_batch_first(y), rtol=1e-12, atol=1e-15)
    assert_allclose(h_n_bf, h_n, rtol=1e-12, atol=1e-15)
    assert_allclose(grads_bf.dx, to_batch_first(grads.dx), rtol=1e-12, atol=1e-15)
    for name in ("dh0", "dw_ih", "dw_hh", "dbias"):
        assert_allclose(getattr(grads_bf, name), getattr(grads, name), rtol=1e-12, atol=1e-15,
                        err_msg=name)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
@pytest.mark.parametrize("case", CASES)
def test_padded_steps_take_no_gradient(case, nonlinearity, reverse):
    """y at a padded step is a constant 0: dx there is 0, and dy there is
    ignored (G below is nonzero at every step, padded ones included)."""
    shape, lengths = CASES[case]
    arrays, G, Gh = make_problem(shape, lengths, nonlinearity, reverse)
    x, h0, w_ih, w_hh = arrays["x"], arrays["h0"], arrays["w_ih"], arrays["w_hh"]
    options = dict(nonlinearity=nonlinearity, lengths=lengths, reverse=reverse)
    y, _ = reference.rnn_forward(**arrays, **options)
    grads = reference.rnn_backward(x, h0, w_ih, w_hh, y, G, Gh, **options)

    G_valid_only = G.copy()
    for b, n in enumerate(lengths):
        assert np.all(grads.dx[n:, b] == 0)
        G_valid_only[n:, b] = 0
    grads_valid_only = reference.rnn_backward(x, h0, w_ih, w_hh, y, G_valid_only, Gh, **options)
    for name in GRADIENT_OF:
        assert_array_equal(getattr(grads, name), getattr(grads_valid_only, name), err_msg=name)


@pytest.mark.parametrize("batch_first", [False, True])
def test_inputs_are_not_modified(batch_first):
    shape, lengths = CASES["T4B3D2H3"]
    arrays, G, Gh = make_problem(shape, lengths, "tanh", reverse=False)
    if batch_first:
        arrays["x"], G = to_batch_first(arrays["x"]), to_batch_first(G)
    lengths = np.array(lengths)
    options = dict(lengths=lengths, batch_first=batch_first)
    inputs = [*arrays.values(), G, Gh, lengths]
    before = [a.copy() for a in inputs]

    y, _ = reference.rnn_forward(**arrays, **options)
    y_before = y.copy()
    reference.rnn_backward(arrays["x"], arrays["h0"], arrays["w_ih"], arrays["w_hh"], y, G, Gh,
                           **options)
    for a, a_before in zip(inputs + [y], before + [y_before]):
        assert_array_equal(a, a_before)
