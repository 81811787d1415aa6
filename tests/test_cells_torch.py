"""The compiled LSTM and GRU against torch.nn.LSTM and torch.nn.GRU, on every ISA.

tests/test_reference_cells.py holds the reference to torch; this holds the
kernel to it directly, so that a reading of PyTorch's equations shared by
the reference and the kernel cannot hide. torch's weights (weight_ih_l0,
weight_hh_l0, bias_ih_l0, bias_hh_l0) are set to ours; y, h_n, c_n and the
gradients of every input (x, h0, c0, both weights, both biases) from
autograd, with the loss sum(y*dy) + sum(h_n*dh_n) (+ sum(c_n*dc_n)), must
equal fusedrnn's forward and its backward with those dy, dh_n, dc_n.

lengths go through pack_padded_sequence(enforce_sorted=False), which
refuses a length of 0, so every length here is >= 1; reverse is the
_reverse direction of a bidirectional module (which runs each packed
sequence from its own end, as fusedrnn's reverse does). A bias or initial
state that fusedrnn gets as None is zeros on torch's side, which then
still gives its gradient.

float64 on both sides differs only in the order of roundings (conftest's
float64 tolerance); float32 compares with torch in float32, each side with
its own rounding, under a looser bound than conftest's float32 one.
"""

import numpy as np
import pytest

import fusedrnn
from fusedrnn._tolerances import TOLERANCE

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.usefixtures("isa")

STATES = {"lstm": ("h0", "c0"), "gru": ("h0",)}
D_STATES = {"lstm": ("dh_n", "dc_n"), "gru": ("dh_n",)}
GATES = {"lstm": 4, "gru": 3}


@pytest.fixture(autouse=True, scope="module")
def torch_on_one_thread():
    """torch's own threads would only compete with the other tests' runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def torch_close(actual, expected, dtype, name, assert_close):
    """conftest's assert_close, with twice the table's bound for float32:
    torch rounds in float32 too, so each side may be off by one bound from
    the exact result."""
    tol = 2 * TOLERANCE[np.dtype(dtype)] if np.dtype(dtype) == np.float32 else None
    assert_close(actual, expected, dtype, name, tol=tol)


def lengths_for(T, B):
    """Mixed lengths from 1 to T, in no particular order (torch takes no 0)."""
    cycle = [T, 1, max(T // 2, 1), max(T - 1, 1), max(T // 3, 1)]
    return np.array([cycle[b % len(cycle)] for b in range(B)], dtype=np.int64)


def make(cell, shape, dtype, batch_first, seed=0):
    """Inputs (all given) and loss weights dy, dh_n (, dc_n) in `dtype`."""
    T, B, D, H = shape
    G = GATES[cell]
    rng = np.random.default_rng(seed)
    seq = (B, T) if batch_first else (T, B)
    scale = 1 / np.sqrt(D + H)
    a = {"x": rng.standard_normal(seq + (D,))}
    for s in STATES[cell]:
        a[s] = rng.standard_normal((B, H))
    a["w_ih"] = scale * rng.standard_normal((G * H, D))
    a["w_hh"] = scale * rng.standard_normal((G * H, H))
    a["b_ih"] = 0.5 * rng.standard_normal(G * H)
    a["b_hh"] = 0.5 * rng.standard_normal(G * H)
    d = {"dy": rng.standard_normal(seq + (H,))}
    for s in D_STATES[cell]:
        d[s] = rng.standard_normal((B, H))
    return ({k: v.astype(dtype) for k, v in a.items()},
            {k: v.astype(dtype) for k, v in d.items()})


def torch_results(cell, a, d, lengths, reverse, batch_first):
    """torch's y, h_n (, c_n) and the gradient of every input, as NumPy
    arrays in x's dtype and layout, keyed like fusedrnn's fields."""
    dtype = a["x"].dtype
    tdtype = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}[dtype]
    D = a["x"].shape[2]
    H = a["w_hh"].shape[1]
    T = a["x"].shape[1 if batch_first else 0]
    torch.manual_seed(0)  # the other direction of a bidirectional module
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](
        D, H, bias=True, batch_first=batch_first, bidirectional=reverse, dtype=tdtype)
    suffix = "_reverse" if reverse else ""
    params = {"w_ih": f"weight_ih_l0{suffix}", "w_hh": f"weight_hh_l0{suffix}",
              "b_ih": f"bias_ih_l0{suffix}", "b_hh": f"bias_hh_l0{suffix}"}
    with torch.no_grad():
        for name, torch_name in params.items():
            getattr(module, torch_name).copy_(torch.from_numpy(a[name]))

    def leaf(v):
        return torch.tensor(v, requires_grad=True)

    x = leaf(a["x"])
    states = {s: leaf(a[s]) for s in STATES[cell]}
    # A bidirectional module takes the initial states [forward; reverse].
    hx = [torch.stack([torch.zeros_like(v), v]) if reverse else v[None] for v in states.values()]
    hx = tuple(hx) if cell == "lstm" else hx[0]
    if lengths is None:
        y, state_n = module(x, hx)
    else:
        packed = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.from_numpy(lengths), batch_first=batch_first, enforce_sorted=False)
        y, state_n = module(packed, hx)
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, batch_first=batch_first,
                                                      total_length=T)
    y = y[..., H:] if reverse else y
    state_n = state_n if cell == "lstm" else (state_n,)
    outputs = {"y": y}
    for s, v in zip(STATES[cell], state_n):
        outputs[s[0] + "_n"] = v[-1]  # h0 -> h_n, c0 -> c_n
    loss = sum((outputs[name[1:]] * torch.from_numpy(w)).sum() for name, w in d.items())
    loss.backward()
    result = {k: v.detach().numpy() for k, v in outputs.items()}
    result["dx"] = x.grad.numpy()
    for s, v in states.items():
        result["d" + s] = v.grad.numpy()
    for name, torch_name in params.items():
        result["d" + name] = getattr(module, torch_name).grad.numpy()
    return result


def fusedrnn_results(cell, a, d, lengths, reverse, batch_first, bias, states):
    """fusedrnn's forward and backward, None for the bias and initial states
    when they are not given (torch then has zeros)."""
    called = dict(a)
    if not bias:
        called["b_ih"] = called["b_hh"] = None
    if not states:
        for s in STATES[cell]:
            called[s] = None
    options = dict(lengths=lengths, reverse=reverse, batch_first=batch_first)
    args = [called["x"], *(called[s] for s in STATES[cell]), called["w_ih"], called["w_hh"],
            called["b_ih"], called["b_hh"]]
    forward = fusedrnn.lstm_forward if cell == "lstm" else fusedrnn.gru_forward
    backward = fusedrnn.lstm_backward if cell == "lstm" else fusedrnn.gru_backward
    out = forward(*args, training=True, **options)
    grads = backward(*args, out.y, out.reserve, d["dy"], *(d[s] for s in D_STATES[cell]),
                     **options)
    result = {k: v for k, v in out._asdict().items() if k != "reserve"}
    result.update(grads._asdict())
    return result


def compare(assert_close, cell, shape, dtype, with_lengths, reverse, batch_first, bias=True,
            states=True):
    T, B, _, _ = shape
    a, d = make(cell, shape, dtype, batch_first)
    if not bias:
        a["b_ih"], a["b_hh"] = np.zeros_like(a["b_ih"]), np.zeros_like(a["b_hh"])
    if not states:
        for s in STATES[cell]:
            a[s] = np.zeros_like(a[s])
    lengths = lengths_for(T, B) if with_lengths else None
    expected = torch_results(cell, a, d, lengths, reverse, batch_first)
    actual = fusedrnn_results(cell, a, d, lengths, reverse, batch_first, bias, states)
    assert set(actual) == set(expected)
    for name, want in expected.items():
        torch_close(actual[name], want, dtype, name, assert_close)


DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


def flag(name):
    return pytest.mark.parametrize(name, [False, True], ids=[f"no_{name}", name])


@flag("states")
@flag("bias")
@flag("batch_first")
@flag("reverse")
@flag("lengths")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_matches_torch(assert_close, cell, dtype, lengths, reverse, batch_first, bias, states):
    compare(assert_close, cell, (7, 5, 4, 6), dtype, lengths, reverse, batch_first, bias, states)


@flag("reverse")
@flag("lengths")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_matches_torch_on_a_larger_problem(assert_close, cell, dtype, lengths, reverse):
    """Odd sizes past a register tile of rows (B = 13) and across panels
    (G*H = 132 or 99 columns), batch-first."""
    compare(assert_close, cell, (9, 13, 17, 33), dtype, lengths, reverse, batch_first=True)
