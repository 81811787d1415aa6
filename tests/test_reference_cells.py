"""The NumPy reference's LSTM and GRU checked on their own: every gradient
against central finite differences, the reserve round trip, and, the check
that does not lean on our reading of the equations, everything against
torch.nn.LSTM and torch.nn.GRU in float64.

Nothing here uses the compiled kernel; everything is float64.
"""

import itertools

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from fusedrnn import GRUGrads, GRUOutput, LSTMGrads, LSTMOutput, reference

CELLS = ["lstm", "gru"]
GATES = {"lstm": 4, "gru": 3}
STATES = {"lstm": ("h0", "c0"), "gru": ("h0",)}  # the initial states, h first
FORWARD = {"lstm": reference.lstm_forward, "gru": reference.gru_forward}
BACKWARD = {"lstm": reference.lstm_backward, "gru": reference.gru_backward}

# (T, B, D, H) and the lengths used when a test asks for lengths: an empty
# sequence (0), a full one (T) and partial ones, also mixed in one batch; T=0
# is an empty problem.
CASES = {
    "T0B1D1H1": ((0, 1, 1, 1), [0]),
    "T1B2D3H1": ((1, 2, 3, 1), [1, 0]),
    "T3B2D1H2": ((3, 2, 1, 2), [3, 1]),
    "T4B3D2H3": ((4, 3, 2, 3), [0, 4, 2]),
}

# As in test_reference.py: central differences with EPS carry a rounding
# error of ~1e-10, far below these tolerances, while a wrong gradient term is
# off by O(0.1).
EPS = 1e-6
RTOL = 1e-6
ATOL = 1e-8

# Against torch, both in float64: only the order of the roundings differs.
TORCH_RTOL = 1e-10
TORCH_ATOL = 1e-12


def make_problem(cell, shape, bias_given=True, given=None, seed=0):
    """Time-major float64 inputs as a dict keyed like the forward's
    parameters, with explicit zeros for an absent bias or initial state (what
    None means, and something finite differences can perturb), plus the
    loss weights: a dict from output name ("y", "h_n", "c_n") to its weight.

    `given` maps an initial state's name to whether it is given (default all).
    """
    T, B, D, H = shape
    G = GATES[cell]
    given = dict.fromkeys(STATES[cell], True) if given is None else given
    rng = np.random.default_rng(seed)
    # Weights scaled by 0.5 keep the gates out of saturation, where the
    # gradients would be too small to catch a wrong term.
    arrays = {"x": rng.normal(size=(T, B, D))}
    for name in STATES[cell]:
        arrays[name] = 0.5 * rng.normal(size=(B, H)) if given[name] else np.zeros((B, H))
    arrays["w_ih"] = 0.5 * rng.normal(size=(G * H, D))
    arrays["w_hh"] = 0.5 * rng.normal(size=(G * H, H))
    for name in ("b_ih", "b_hh"):
        arrays[name] = 0.5 * rng.normal(size=G * H) if bias_given else np.zeros(G * H)
    outputs = ("y", "h_n", "c_n") if cell == "lstm" else ("y", "h_n")
    loss_weights = {name: rng.normal(size=(T, B, H) if name == "y" else (B, H))
                    for name in outputs}
    return arrays, loss_weights


def as_called(arrays, bias_given=True, given=None):
    """The arrays as the caller passes them: None for what is not given."""
    called = dict(arrays)
    for name, is_given in (given or {}).items():
        called[name] = called[name] if is_given else None
    if not bias_given:
        called["b_ih"] = called["b_hh"] = None
    return called


def to_batch_first(a):
    return np.ascontiguousarray(a.transpose(1, 0, 2))


def forward(cell, a, **options):
    """The reference's forward on the dict a; its result's fields by name."""
    out = FORWARD[cell](a["x"], *(a[s] for s in STATES[cell]), a["w_ih"], a["w_hh"],
                        a["b_ih"], a["b_hh"], **options)
    return out._asdict()


def backward(cell, a, y, reserve, dy, d_n, **options):
    """The reference's backward on the dict a; d_n lists dh_n (and dc_n)."""
    return BACKWARD[cell](a["x"], *(a[s] for s in STATES[cell]), a["w_ih"], a["w_hh"],
                          a["b_ih"], a["b_hh"], y, reserve, dy, *d_n, **options)


def check_gradients(numerical_gradient, cell, shape, lengths, reverse, batch_first,
                    bias_given=True, given=None, dy_given=True, d_n_given=True):
    """Every gradient of L = sum(y*wy) + sum(h_n*wh) (+ sum(c_n*wc)) from the
    backward against central differences; an absent dy or dh_n/dc_n is a
    zero weight in L."""
    arrays, weights = make_problem(cell, shape, bias_given, given)
    if batch_first:
        arrays["x"], weights["y"] = to_batch_first(arrays["x"]), to_batch_first(weights["y"])
    if not dy_given:
        weights["y"] = np.zeros_like(weights["y"])
    if not d_n_given:
        weights = {k: (w if k == "y" else np.zeros_like(w)) for k, w in weights.items()}
    options = dict(lengths=lengths, reverse=reverse, batch_first=batch_first)

    def loss():
        out = forward(cell, arrays, **options)
        return sum(np.sum(out[name] * w) for name, w in weights.items())

    called = as_called(arrays, bias_given, given)
    out = forward(cell, called, **options)
    d_n = [weights[k] if d_n_given else None for k in weights if k != "y"]
    grads = backward(cell, called, out["y"], None, weights["y"] if dy_given else None, d_n,
                     **options)

    errors = {}
    for grad_name in grads._fields:
        numerical = numerical_gradient(loss, arrays[grad_name[1:]], EPS)
        actual = getattr(grads, grad_name)
        assert actual.dtype == np.float64, grad_name
        assert_allclose(actual, numerical, rtol=RTOL, atol=ATOL, err_msg=grad_name)
        errors[grad_name] = np.max(np.abs(actual - numerical), initial=0.0)
    return errors


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences(cell, case, with_lengths, reverse, batch_first,
                                           numerical_gradient):
    shape, lengths = CASES[case]
    check_gradients(numerical_gradient, cell, shape, lengths if with_lengths else None, reverse,
                    batch_first)


# Each cell with every combination of its initial states given or None.
GIVEN = [(cell, dict(zip(STATES[cell], flags)))
         for cell in CELLS for flags in itertools.product([False, True], repeat=len(STATES[cell]))]


@pytest.mark.parametrize("d_n_given", [False, True])
@pytest.mark.parametrize("dy_given", [False, True])
@pytest.mark.parametrize("bias_given", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell,given", GIVEN,
                         ids=[f"{c}-" + "-".join(f"{k}{int(v)}" for k, v in g.items())
                              for c, g in GIVEN])
def test_optional_arguments_match_finite_differences(cell, given, reverse, bias_given, dy_given,
                                                     d_n_given, numerical_gradient):
    shape, lengths = CASES["T4B3D2H3"]
    check_gradients(numerical_gradient, cell, shape, lengths, reverse, batch_first=False,
                    bias_given=bias_given, given=given, dy_given=dy_given, d_n_given=d_n_given)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cell", CELLS)
def test_backward_with_the_reserve_equals_backward_recomputing(cell, case, with_lengths, reverse,
                                                               batch_first):
    shape, lengths = CASES[case]
    arrays, weights = make_problem(cell, shape)
    if batch_first:
        arrays["x"], weights["y"] = to_batch_first(arrays["x"]), to_batch_first(weights["y"])
    options = dict(lengths=lengths if with_lengths else None, reverse=reverse,
                   batch_first=batch_first)
    d_n = [w for k, w in weights.items() if k != "y"]

    out = forward(cell, arrays, training=True, **options)
    assert isinstance(out["reserve"], np.ndarray) and out["reserve"].dtype == np.float64
    inference = forward(cell, arrays, **options)
    assert inference["reserve"] is None
    for name, value in inference.items():
        if name != "reserve":
            assert_array_equal(value, out[name], err_msg=name)

    with_reserve = backward(cell, arrays, out["y"], out["reserve"], weights["y"], d_n, **options)
    recomputed = backward(cell, arrays, out["y"], None, weights["y"], d_n, **options)
    for name in with_reserve._fields:
        assert_array_equal(getattr(with_reserve, name), getattr(recomputed, name), err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_result_types_and_float64_for_float32_inputs(cell):
    shape, lengths = CASES["T4B3D2H3"]
    arrays, weights = make_problem(cell, shape)
    arrays32 = {k: v.astype(np.float32) for k, v in arrays.items()}
    options = dict(lengths=np.array(lengths, dtype=np.int32), batch_first=True)
    arrays32["x"] = to_batch_first(arrays32["x"])
    out = FORWARD[cell](arrays32["x"], *(arrays32[s] for s in STATES[cell]), arrays32["w_ih"],
                        arrays32["w_hh"], arrays32["b_ih"], arrays32["b_hh"], training=True,
                        **options)
    assert type(out) is {"lstm": LSTMOutput, "gru": GRUOutput}[cell]
    T, B, D, H = shape
    assert out.y.shape == (B, T, H)
    grads = backward(cell, arrays32, out.y, out.reserve, to_batch_first(weights["y"]),
                     [w for k, w in weights.items() if k != "y"], **options)
    assert type(grads) is {"lstm": LSTMGrads, "gru": GRUGrads}[cell]
    for name, value in [*out._asdict().items(), *grads._asdict().items()]:
        assert value.dtype == np.float64, name
    for name in grads._fields:
        assert getattr(grads, name).shape == arrays32[name[1:]].shape, name


@pytest.mark.parametrize("cell", CELLS)
def test_inputs_are_not_modified(cell):
    shape, lengths = CASES["T4B3D2H3"]
    arrays, weights = make_problem(cell, shape)
    lengths = np.array(lengths)
    inputs = [*arrays.values(), *weights.values(), lengths]
    before = [a.copy() for a in inputs]
    out = forward(cell, arrays, lengths=lengths, training=True)
    out_before = {k: v.copy() for k, v in out.items()}
    backward(cell, arrays, out["y"], out["reserve"], weights["y"],
             [w for k, w in weights.items() if k != "y"], lengths=lengths)
    for a, a_before in zip(inputs, before):
        assert_array_equal(a, a_before)
    for name, value in out.items():
        assert_array_equal(value, out_before[name], err_msg=name)


# Against PyTorch.

@pytest.fixture(name="torch")
def torch_fixture():
    return pytest.importorskip("torch")


def torch_results(torch, cell, arrays, weights, lengths, reverse, batch_first, bias_given):
    """The forward's outputs and every gradient of the loss from torch.nn.LSTM
    or torch.nn.GRU in float64, keyed like the reference's fields; None for
    the bias gradients when there is no bias. The problem and the results
    are time-major whatever batch_first, which is torch's layout only.

    Torch rejects empty sequences (and T = 0), so it runs on the non-empty
    rows only; an empty row's results are what lengths say they are: zero y
    and dx, the initial state as final state, its loss weight as the initial
    state's gradient, nothing for the weights.
    """
    T, B, _ = arrays["x"].shape
    H = arrays["w_hh"].shape[1]
    n = np.full(B, T) if lengths is None else np.asarray(lengths)
    keep = np.flatnonzero(n)
    state_outputs = {"h0": "h_n", "c0": "c_n"}
    expected = {"y": np.zeros((T, B, H)), "dx": np.zeros_like(arrays["x"])}
    for s in STATES[cell]:
        expected[state_outputs[s]] = arrays[s].copy()
        expected["d" + s] = weights[state_outputs[s]].copy()
    for name in ("w_ih", "w_hh", "b_ih", "b_hh"):
        expected["d" + name] = np.zeros_like(arrays[name]) if bias_given or name[0] == "w" else None
    if keep.size == 0:
        return expected

    torch.manual_seed(0)  # the unused forward direction of a bidirectional module
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        arrays["x"].shape[2], H, bias=bias_given, batch_first=batch_first,
        bidirectional=reverse, dtype=torch.float64)
    suffix = "_reverse" if reverse else ""
    params = {"w_ih": f"weight_ih_l0{suffix}", "w_hh": f"weight_hh_l0{suffix}"}
    if bias_given:
        params.update(b_ih=f"bias_ih_l0{suffix}", b_hh=f"bias_hh_l0{suffix}")
    with torch.no_grad():
        for name, torch_name in params.items():
            getattr(module, torch_name).copy_(torch.from_numpy(arrays[name]))

    def leaf(a):
        return torch.tensor(a, dtype=torch.float64, requires_grad=True)

    x = leaf(arrays["x"][:, keep])  # time-major here; transposed for batch_first
    states = {s: leaf(arrays[s][keep]) for s in STATES[cell]}
    # A bidirectional module takes [forward; reverse] initial states.
    hx = [torch.stack([torch.zeros_like(v), v]) if reverse else v[None]
          for v in states.values()]
    hx = tuple(hx) if cell == "lstm" else hx[0]
    inputs = x.transpose(0, 1) if batch_first else x
    if lengths is None:
        y, state_n = module(inputs, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            inputs, torch.from_numpy(n[keep]), batch_first=batch_first, enforce_sorted=False)
        y, state_n = module(packed, hx)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=batch_first,
                                                      total_length=T)
    y = y.transpose(0, 1) if batch_first else y
    y = y[..., H:] if reverse else y
    state_n = state_n if cell == "lstm" else (state_n,)
    outputs = {"y": y, **{state_outputs[s]: v[-1] for s, v in zip(STATES[cell], state_n)}}

    loss = sum((outputs[name] * torch.from_numpy(w[:, keep] if name == "y" else w[keep])).sum()
               for name, w in weights.items())
    loss.backward()
    expected["y"][:, keep] = y.detach().numpy()
    expected["dx"][:, keep] = x.grad.numpy()
    for s, v in states.items():
        expected[state_outputs[s]][keep] = outputs[state_outputs[s]].detach().numpy()
        expected["d" + s][keep] = v.grad.numpy()
    for name, torch_name in params.items():
        expected["d" + name] = getattr(module, torch_name).grad.numpy()
    return expected


def compare_with_torch(torch, cell, shape, lengths, reverse, batch_first, bias_given, given):
    """The reference's outputs and gradients against torch's; returns the
    largest absolute difference per name."""
    arrays, weights = make_problem(cell, shape, bias_given, given)
    expected = torch_results(torch, cell, arrays, weights, lengths, reverse, batch_first,
                             bias_given)
    called = as_called(arrays, bias_given, given)
    d_n = [w for k, w in weights.items() if k != "y"]
    options = dict(lengths=lengths, reverse=reverse, batch_first=batch_first)
    if batch_first:  # the results are compared time-major
        called["x"] = to_batch_first(called["x"])
        out = forward(cell, called, training=True, **options)
        grads = backward(cell, called, out["y"], out["reserve"], to_batch_first(weights["y"]),
                         d_n, **options)
        out["y"] = to_batch_first(out["y"])
        grads = grads._replace(dx=to_batch_first(grads.dx))
    else:
        out = forward(cell, called, training=True, **options)
        grads = backward(cell, called, out["y"], out["reserve"], weights["y"], d_n, **options)

    actual = {**{k: v for k, v in out.items() if k != "reserve"}, **grads._asdict()}
    errors = {}
    for name, want in expected.items():
        if want is None:  # the bias gradients without a bias: finite differences check them
            continue
        assert_allclose(actual[name], want, rtol=TORCH_RTOL, atol=TORCH_ATOL, err_msg=name)
        errors[name] = np.max(np.abs(actual[name] - want), initial=0.0)
    return errors


@pytest.mark.parametrize("given", [True, False], ids=["states", "no_states"])
@pytest.mark.parametrize("bias_given", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch(torch, cell, case, with_lengths, reverse, batch_first, bias_given, given):
    shape, lengths = CASES[case]
    compare_with_torch(torch, cell, shape, lengths if with_lengths else None, reverse,
                       batch_first, bias_given, dict.fromkeys(STATES[cell], given))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_matches_torch_on_a_larger_problem(torch, cell, reverse):
    """Longer sequences and a wider state than the finite differences can
    afford, lengths in no particular order."""
    compare_with_torch(torch, cell, (9, 5, 4, 6), [3, 9, 0, 7, 1], reverse, batch_first=False,
                       bias_given=True, given=None)
