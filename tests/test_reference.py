"""The NumPy reference checked on its own, for every cell (the rnn with each
nonlinearity, the LSTM, the GRU): every gradient against central finite
differences; the properties docs/api.md states (padded steps,
a padded batch as its sequences run alone, reverse as time flipped,
batch_first as a transpose, the result types, inputs left alone); the gated
cells' reserve round trip; and, the check that does not lean on our reading
of the equations, everything against torch.nn.RNN, LSTM and GRU in float64.

The reference is the oracle for every fast path, so nothing here uses the
compiled kernel; everything is float64.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fusedrnn import reference
from helpers import CELLS, GATED, backward, forward, grad_output_choices, outputs_of, \
    random_problem, reserve_of, run, states_given, states_id, torch_results, variants

# (T, B, D, H) and the lengths used when a test asks for lengths. Together the
# lengths cover an empty sequence (0), a full one (T) and partial ones, also
# mixed inside one batch; T = 0 is an empty problem.
CASES = {
    "T0B1D1H1": ((0, 1, 1, 1), [0]),
    "T1B1D1H1": ((1, 1, 1, 1), [0]),
    "T1B2D3H1": ((1, 2, 3, 1), [1, 0]),
    "T3B2D1H2": ((3, 2, 1, 2), [3, 1]),
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

# Two computations of the same float64 numbers in another order (a batch
# against its rows, reverse against flipped time, batch_first against
# time-major): rounding apart.
SAME = dict(rtol=1e-12, atol=1e-15)

# Against torch, both in float64: only the order of the roundings differs.
TORCH = dict(rtol=1e-10, atol=1e-12)

# relu has a kink at 0: a central difference straddling it measures neither
# side's slope. Perturbations of EPS move a pre-activation by O(EPS), so
# keeping every |z| above this margin keeps each difference on one side.
KINK_MARGIN = 1e-3

def min_abs_pre_activation(a, lengths, reverse):
    """Smallest |z| of the rnn over all valid steps, z = W_ih x_t + W_hh h_prev + b.

    Written per sequence with plain loops (not the reference's batched
    bookkeeping) so that it does not lean on the code under test.
    """
    x, h, w_ih, w_hh, bias = (a[k] for k in ("x", "h0", "w_ih", "w_hh", "bias"))
    T, B, _ = x.shape
    smallest = np.inf
    for b in range(B):
        n = T if lengths is None else lengths[b]
        h_prev = h[b]
        for t in (reversed(range(n)) if reverse else range(n)):
            z = w_ih @ x[t, b] + w_hh @ h_prev + bias
            smallest = min(smallest, np.abs(z).min(initial=np.inf))
            h_prev = np.maximum(z, 0.0)
    return smallest


def make_problem(cell, shape, options=None, lengths=None, reverse=False, bias=True, given=None):
    """(a, d): time-major float64 inputs keyed like the forward's parameters
    and the loss weights dy, dh_n (, dc_n), with weights of scale 0.5, which
    keep the gates out of saturation, where the gradients would be too small
    to catch a wrong term.

    A bias or initial state left out (bias=False; `given`, {state: bool}) is
    explicit zeros, which is what None means, so that finite differences can
    still perturb it. For relu the seed is the first one (deterministically)
    whose pre-activations all keep clear of the kink.
    """
    T, B, D, H = shape
    relu = (options or {}).get("nonlinearity") == "relu"
    for seed in range(100):
        a, d = random_problem(cell, shape, seed=seed, given=given, bias=bias, weight_scale=0.5)
        for name in CELLS[cell].states:
            a[name] = np.zeros((B, H)) if a[name] is None else a[name]
        for name in CELLS[cell].biases:
            a[name] = np.zeros(CELLS[cell].gates * H) if a[name] is None else a[name]
        if not relu or min_abs_pre_activation(a, lengths, reverse) > KINK_MARGIN:
            return a, d
    raise AssertionError("no seed keeps every relu pre-activation away from 0")


def as_called(cell, a, bias=True, given=None):
    """The inputs as the caller passes them: None for what is not given."""
    called = dict(a)
    for name, is_given in (given or {}).items():
        called[name] = called[name] if is_given else None
    if not bias:
        called.update(dict.fromkeys(CELLS[cell].biases))
    return called


def to_batch_first(a):
    return np.ascontiguousarray(a.transpose(1, 0, 2))


def input_of(grad_name):
    """The input a gradient is of: dx -> x, dbias -> bias, db_hh -> b_hh."""
    return grad_name[1:]


def check_gradients(numerical_gradient, cell, options, shape, lengths, reverse, batch_first,
                    bias=True, given=None, grads_given=None):
    """Every gradient of L = sum(y * dy) + sum(h_n * dh_n) (+ sum(c_n * dc_n))
    from the backward against central differences; a gradient output not in
    `grads_given` (default all) is None to the backward and a zero weight in
    the loss."""
    a, d = make_problem(cell, shape, options, lengths, reverse, bias, given)
    if batch_first:
        a["x"], d["dy"] = to_batch_first(a["x"]), to_batch_first(d["dy"])
    grads_given = tuple(d) if grads_given is None else grads_given
    weights = {k: v if k in grads_given else np.zeros_like(v) for k, v in d.items()}
    options = dict(options, lengths=lengths, reverse=reverse, batch_first=batch_first)

    def loss():
        out = outputs_of(cell, forward(reference, cell, a, **options))
        return sum(np.sum(out[name] * weights["d" + name]) for name in out)

    # The analytic side gets None wherever the caller would pass None.
    called = as_called(cell, a, bias, given)
    y = forward(reference, cell, called, **options)[0]
    grads = backward(reference, cell, called, y, None, {k: d[k] for k in grads_given},
                     **options)
    for grad_name in grads._fields:
        actual = getattr(grads, grad_name)
        assert actual.dtype == np.float64, grad_name
        assert_allclose(actual, numerical_gradient(loss, a[input_of(grad_name)], EPS),
                        rtol=RTOL, atol=ATOL, err_msg=grad_name)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cell, options", variants())
def test_gradients_match_finite_differences(cell, options, case, with_lengths, reverse,
                                           batch_first, numerical_gradient):
    shape, lengths = CASES[case]
    check_gradients(numerical_gradient, cell, options, shape, lengths if with_lengths else None,
                    reverse, batch_first)


# Each cell (the rnn with each nonlinearity) with every combination of its
# initial states and of its gradient outputs given or None.
OPTIONAL = [pytest.param(*variant.values, given, grads,
                         id=f"{variant.id}-{states_id(given)}-{'-'.join(grads) or 'no_grads'}")
            for variant in variants() for given in states_given(variant.values[0])
            for grads in grad_output_choices(variant.values[0])]


@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "bias"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell, options, given, grads_given", OPTIONAL)
def test_optional_arguments_match_finite_differences(cell, options, given, grads_given, reverse,
                                                     bias, numerical_gradient):
    shape, lengths = CASES["T4B3D2H3"]
    check_gradients(numerical_gradient, cell, options, shape, lengths, reverse,
                    batch_first=False, bias=bias, given=given, grads_given=grads_given)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cell, options", variants())
def test_padded_steps_are_zero_and_final_states_are_the_last_valid_ones(cell, options, case,
                                                                        reverse):
    """y is exactly 0 past each sequence's length; h_n is exactly y at its
    last valid step, and for an empty sequence every final state is exactly
    its initial state."""
    shape, lengths = CASES[case]
    a, _ = make_problem(cell, shape, options, lengths, reverse)
    out = outputs_of(cell, forward(reference, cell, a, lengths=lengths, reverse=reverse,
                                   **options))
    for b, n in enumerate(lengths):
        assert np.all(out["y"][n:, b] == 0)
        if n == 0:
            for state in CELLS[cell].states:
                assert_array_equal(out[state[0] + "_n"][b], a[state][b], err_msg=state)
        else:
            # A reversed sequence's last step is time 0.
            assert_array_equal(out["h_n"][b], out["y"][0 if reverse else n - 1, b])


def by_kind(cell, results):
    """`results` (every output and gradient by name) split into those over
    time ([T,B,...]), those per sequence ([B,H]) and the parameters'."""
    spec = CELLS[cell]
    per_sequence = spec.outputs[1:] + tuple("d" + s for s in spec.states)
    over_time = {k: v for k, v in results.items() if k in ("y", "dx")}
    return (over_time, {k: v for k, v in results.items() if k in per_sequence},
            {k: v for k, v in results.items() if k not in over_time and k not in per_sequence})


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cell, options", variants())
def test_each_sequence_behaves_as_if_run_alone(cell, options, case, reverse):
    """lengths must make a padded batch equivalent to running each sequence
    x[:n] on its own, forwards and backwards; in particular a reversed one
    starts from its own last valid step, not from T-1."""
    shape, lengths = CASES[case]
    a, d = make_problem(cell, shape, options, lengths, reverse)
    options = dict(options, reverse=reverse)
    over_time, per_sequence, params = by_kind(cell, run(reference, cell, a, d, lengths=lengths,
                                                        **options))

    summed = dict.fromkeys(params, 0.0)
    # Empty sequences are skipped: they add nothing to the weight gradients,
    # and their final states and initial states' gradients are covered by
    # the tests above.
    for b in np.flatnonzero(lengths):
        n, rows = lengths[b], slice(b, b + 1)
        alone = {k: v if k.startswith("w") or k in CELLS[cell].biases else v[:n, rows]
                 if k in ("x", "dy") else v[rows] for k, v in {**a, **d}.items()}
        over_time_b, per_sequence_b, params_b = by_kind(cell, run(reference, cell, alone, alone,
                                                                  **options))
        for name, value in over_time.items():
            assert_allclose(value[:n, b], over_time_b[name][:, 0], **SAME, err_msg=name)
        for name, value in per_sequence.items():
            assert_allclose(value[b], per_sequence_b[name][0], **SAME, err_msg=name)
        summed = {name: summed[name] + params_b[name] for name in params}
    for name, value in params.items():
        assert_allclose(value, summed[name], **SAME, err_msg=name)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cell, options", variants())
def test_reverse_is_forward_over_time_flipped_input(cell, options, case):
    shape, _ = CASES[case]
    a, d = make_problem(cell, shape, options, reverse=True)
    results = run(reference, cell, a, d, reverse=True, **options)
    flipped = run(reference, cell, dict(a, x=a["x"][::-1]), dict(d, dy=d["dy"][::-1]),
                  **options)
    for name, value in results.items():
        want = flipped[name][::-1] if name in ("y", "dx") else flipped[name]
        assert_allclose(value, want, **SAME, err_msg=name)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cell", CELLS)
def test_batch_first_is_the_transposed_time_major_result(cell, case, with_lengths, reverse):
    shape, lengths = CASES[case]
    lengths = lengths if with_lengths else None
    a, d = make_problem(cell, shape, lengths=lengths, reverse=reverse)
    options = dict(lengths=lengths, reverse=reverse)
    results = run(reference, cell, a, d, **options)
    batch_first = run(reference, cell, dict(a, x=to_batch_first(a["x"])),
                      dict(d, dy=to_batch_first(d["dy"])), batch_first=True, **options)
    for name, value in results.items():
        want = to_batch_first(value) if name in ("y", "dx") else value
        assert_allclose(batch_first[name], want, **SAME, err_msg=name)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cell, options", variants())
def test_padded_steps_take_no_gradient(cell, options, case, reverse):
    """y at a padded step is a constant 0: dx there is 0, and dy there is
    ignored (dy below is nonzero at every step, padded ones included)."""
    shape, lengths = CASES[case]
    a, d = make_problem(cell, shape, options, lengths, reverse)
    options = dict(options, lengths=lengths, reverse=reverse)
    y = forward(reference, cell, a, **options)[0]
    grads = backward(reference, cell, a, y, None, d, **options)

    dy_valid_only = d["dy"].copy()
    for b, n in enumerate(lengths):
        assert np.all(grads.dx[n:, b] == 0)
        dy_valid_only[n:, b] = 0
    grads_valid_only = backward(reference, cell, a, y, None, dict(d, dy=dy_valid_only),
                                **options)
    for name in grads._fields:
        assert_array_equal(getattr(grads, name), getattr(grads_valid_only, name), err_msg=name)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_inputs_are_not_modified(cell, batch_first):
    """Nothing the caller passes is written, nor, by the backward, anything
    the forward returned (y, the final states, the reserve)."""
    shape, lengths = CASES["T4B3D2H3"]
    a, d = make_problem(cell, shape, lengths=lengths)
    if batch_first:
        a["x"], d["dy"] = to_batch_first(a["x"]), to_batch_first(d["dy"])
    lengths = np.array(lengths)
    options = dict(lengths=lengths, batch_first=batch_first)
    inputs = [*a.values(), *d.values(), lengths]
    before = [v.copy() for v in inputs]

    out = forward(reference, cell, a, training=True, **options)
    out_before = [None if v is None else v.copy() for v in out]
    backward(reference, cell, a, out[0], reserve_of(cell, out), d,
             **options)
    for value, value_before in zip(inputs, before):
        assert_array_equal(value, value_before)
    for value, value_before in zip(out, out_before):
        assert_array_equal(value, value_before)


@pytest.mark.parametrize("cell", CELLS)
def test_result_types_and_float64_for_float32_inputs(cell):
    shape, lengths = CASES["T4B3D2H3"]
    a, d = make_problem(cell, shape)
    a32, d32 = ({k: v.astype(np.float32) for k, v in arrays.items()} for arrays in (a, d))
    a32["x"], d32["dy"] = to_batch_first(a32["x"]), to_batch_first(d32["dy"])
    options = dict(lengths=np.array(lengths, dtype=np.int32), batch_first=True)
    out = forward(reference, cell, a32, training=True, **options)
    assert type(out) is CELLS[cell].output
    T, B, D, H = shape
    assert out[0].shape == (B, T, H)
    grads = backward(reference, cell, a32, out[0], reserve_of(cell, out),
                     d32, **options)
    assert type(grads) is CELLS[cell].grads
    for name, value in [*outputs_of(cell, out).items(), *grads._asdict().items()]:
        assert value.dtype == np.float64, name
    if CELLS[cell].gated:
        assert out.reserve.dtype == np.float64
    for name in grads._fields:
        assert getattr(grads, name).shape == a32[input_of(name)].shape, name


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cell", GATED)
def test_backward_with_the_reserve_equals_backward_recomputing(cell, case, with_lengths, reverse,
                                                               batch_first):
    shape, lengths = CASES[case]
    a, d = make_problem(cell, shape)
    if batch_first:
        a["x"], d["dy"] = to_batch_first(a["x"]), to_batch_first(d["dy"])
    options = dict(lengths=lengths if with_lengths else None, reverse=reverse,
                   batch_first=batch_first)

    out = forward(reference, cell, a, training=True, **options)
    assert isinstance(out.reserve, np.ndarray) and out.reserve.dtype == np.float64
    inference = forward(reference, cell, a, **options)
    assert inference.reserve is None
    for name, value in outputs_of(cell, inference).items():
        assert_array_equal(value, getattr(out, name), err_msg=name)

    with_reserve = backward(reference, cell, a, out.y, out.reserve, d, **options)
    recomputed = backward(reference, cell, a, out.y, None, d, **options)
    for name in with_reserve._fields:
        assert_array_equal(getattr(with_reserve, name), getattr(recomputed, name), err_msg=name)


# Against PyTorch.

@pytest.fixture(name="torch")
def torch_fixture():
    return pytest.importorskip("torch")


def compare_with_torch(torch, cell, options, shape, lengths, reverse, batch_first, bias, given):
    """The reference's outputs and gradients against torch's. A bias or
    initial state left out is None to the reference and zeros to torch,
    which gives their gradients all the same."""
    a, d = make_problem(cell, shape, options, lengths, reverse, bias, given)
    if batch_first:
        a["x"], d["dy"] = to_batch_first(a["x"]), to_batch_first(d["dy"])
    options = dict(options, lengths=lengths, reverse=reverse, batch_first=batch_first)
    expected = torch_results(torch, cell, a, d, **options)
    actual = run(reference, cell, as_called(cell, a, bias, given), d, **options)
    assert set(actual) == set(expected)
    for name, want in expected.items():
        assert_allclose(actual[name], want, **TORCH, err_msg=name)


# torch.nn.RNN has tanh and relu, not sigmoid.
TORCH_VARIANTS = [v for v in variants() if v.values[1].get("nonlinearity") != "sigmoid"]


@pytest.mark.parametrize("given", [True, False], ids=["states", "no_states"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cell, options", TORCH_VARIANTS)
def test_matches_torch(torch, cell, options, case, with_lengths, reverse, batch_first, bias,
                       given):
    shape, lengths = CASES[case]
    compare_with_torch(torch, cell, options, shape, lengths if with_lengths else None, reverse,
                       batch_first, bias, dict.fromkeys(CELLS[cell].states, given))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell, options", TORCH_VARIANTS)
def test_matches_torch_on_a_larger_problem(torch, cell, options, reverse):
    """Longer sequences and a wider state than the finite differences can
    afford, lengths in no particular order."""
    compare_with_torch(torch, cell, options, (9, 5, 4, 6), [3, 9, 0, 7, 1], reverse,
                       batch_first=False, bias=True, given=None)
