"""What the tests share: the cells as the public API spells them (CELLS, the
one table of what each cell's functions take), random problems for any
cell, any cell's forward and backward called alike through fusedrnn or
fusedrnn.reference, and the comparison with the reference under the
package's one tolerance table (fusedrnn._tolerances).

pyproject's pytest configuration puts tests/ on sys.path (`pythonpath`), so
that test modules `import helpers` under any import mode. conftest.py hands
assert_close, numerical_gradient, change_in_place and initial_state to the
tests as fixtures.
"""

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

import fusedrnn
from fusedrnn import reference
from fusedrnn._tolerances import TOLERANCE, scaled_errors


class Cell(NamedTuple):
    """A cell as its NumPy functions, fusedrnn's layer and torch take it."""

    name: str  # "rnn", "lstm", "gru": the functions' prefix (fusedrnn.lstm_forward)
    layer: str  # fusedrnn's layer, torch.nn's module and fusedrnn.torch's drop-in
    gates: int  # G: w_ih is [G*H, D], w_hh [G*H, H], each bias [G*H]
    states: tuple  # the initial states, h first: the forward's arguments after x
    biases: tuple  # the forward's last arguments: the rnn's one bias, or b_ih and b_hh
    output: type  # what the forward returns: the rnn's pair (y, h_n), or a NamedTuple
    grads: type  # what the backward returns, a gradient per input of the forward
    nonlinearities: tuple  # the rnn's choice of activation; () where there is none

    @property
    def gated(self):
        """A training forward returns a reserve, which the backward takes in
        place of y (it never reads y); the rnn's backward reads y."""
        return self.gates > 1

    @property
    def d_states(self):
        """The gradients of the final states, as the backward names them."""
        return ("dh_n", "dc_n")[:len(self.states)]

    @property
    def outputs(self):
        """The forward's results, in order (without the gated cells' reserve)."""
        return ("y", "h_n", "c_n")[:1 + len(self.states)]


CELLS = {
    "rnn": Cell("rnn", "RNN", 1, ("h0",), ("bias",), tuple, fusedrnn.RNNGrads,
                ("tanh", "relu", "sigmoid")),
    "lstm": Cell("lstm", "LSTM", 4, ("h0", "c0"), ("b_ih", "b_hh"), fusedrnn.LSTMOutput,
                 fusedrnn.LSTMGrads, ()),
    "gru": Cell("gru", "GRU", 3, ("h0",), ("b_ih", "b_hh"), fusedrnn.GRUOutput,
                fusedrnn.GRUGrads, ()),
}
GATED = [name for name, cell in CELLS.items() if cell.gated]

DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


def flag(name):
    """A boolean parameter whose ids read `name` / `no_name`."""
    return pytest.mark.parametrize(name, [False, True], ids=[f"no_{name}", name])


def variants(cells=CELLS):
    """pytest params (cell, options): each of `cells` once, the rnn once per
    nonlinearity, the option only it has."""
    return [pytest.param(cell, {"nonlinearity": n} if n else {}, id=f"{cell}-{n}" if n else cell)
            for cell in cells for n in CELLS[cell].nonlinearities or [None]]


def states_given(cell):
    """Every combination of `cell`'s initial states given (True) or None, as
    {state: bool}."""
    states = CELLS[cell].states
    return [dict(zip(states, flags))
            for flags in itertools.product([False, True], repeat=len(states))]


def states_id(given):
    return "-".join(name if g else f"no_{name}" for name, g in given.items())


def grad_output_choices(cell):
    """Every combination of dy, dh_n (and dc_n) given or None, as tuples of
    the names given."""
    names = ("dy",) + CELLS[cell].d_states
    return [tuple(n for n, g in zip(names, given) if g)
            for given in itertools.product([True, False], repeat=len(names))]


def mixed_lengths(T, B):
    """Per-sequence lengths cycling through 0, T and lengths in between, so
    that one batch mixes empty, full and partial sequences (B = 1 gets the
    empty one, the case most likely to be mishandled)."""
    cycle = [0, T, T // 2, 1, T - 1]
    return np.array([min(max(cycle[b % len(cycle)], 0), T) for b in range(B)], dtype=np.int64)


def random_problem(cell, shape, dtype=np.float64, *, batch_first=False, seed=0, given=None,
                   bias=True, weight_scale=None):
    """(a, d): the inputs of `cell`'s forward as a dict keyed like its
    parameters, None for an initial state (`given`: {state: bool}, default
    all given) or the biases (bias=False) left out, and the gradients of its
    outputs, dy, dh_n (and dc_n), all in `dtype`.

    x and d are standard normal, the states and biases have standard
    deviation 0.5, the weights weight_scale, by default 1/sqrt(D + H): the
    pre-activations stay O(1), where the gradients are neither saturated to
    zero nor explosive. Drawn in the order of the parameters, nothing for
    what is left out."""
    T, B, D, H = shape
    spec = CELLS[cell]
    given = dict.fromkeys(spec.states, True) if given is None else given
    scale = 1 / np.sqrt(max(D + H, 1)) if weight_scale is None else weight_scale
    rng = np.random.default_rng(seed)
    seq = (B, T) if batch_first else (T, B)
    a = {"x": rng.standard_normal(seq + (D,))}
    for name in spec.states:
        a[name] = 0.5 * rng.standard_normal((B, H)) if given[name] else None
    a["w_ih"] = scale * rng.standard_normal((spec.gates * H, D))
    a["w_hh"] = scale * rng.standard_normal((spec.gates * H, H))
    for name in spec.biases:
        a[name] = 0.5 * rng.standard_normal(spec.gates * H) if bias else None
    d = {"dy": rng.standard_normal(seq + (H,))}
    for name in spec.d_states:
        d[name] = rng.standard_normal((B, H))
    return ({k: None if v is None else v.astype(dtype) for k, v in a.items()},
            {k: v.astype(dtype) for k, v in d.items()})


def forward(lib, cell, a, training=False, **options):
    """`lib`'s forward of `cell` (lib: fusedrnn or fusedrnn.reference, which
    spell their functions alike) on the inputs `a`, keyed like its
    parameters, a missing key None; the result as the function returns it.
    training reaches the gated cells only: the rnn's forward keeps nothing
    for its backward."""
    spec = CELLS[cell]
    if spec.gated:
        options["training"] = training
    return getattr(lib, f"{cell}_forward")(
        a["x"], *(a.get(s) for s in spec.states), a["w_ih"], a["w_hh"],
        *(a.get(b) for b in spec.biases), **options)


def outputs_of(cell, result):
    """{name: array} of a forward's result, the reserve left out."""
    return dict(zip(CELLS[cell].outputs, result))


def reserve_of(cell, result):
    """The reserve of a gated cell's forward; None for the rnn."""
    return result.reserve if CELLS[cell].gated else None


def backward(lib, cell, a, y, reserve, d, **options):
    """`lib`'s backward of `cell` for the forward on `a` that gave y (and,
    for a gated cell, `reserve`: None recomputes it; the rnn takes none), with
    the gradient outputs `d` (dy, dh_n, dc_n; a missing key is None)."""
    spec = CELLS[cell]
    inputs = [a["x"], *(a.get(s) for s in spec.states), a["w_ih"], a["w_hh"]]
    grad_outputs = [d.get("dy"), *(d.get(k) for k in spec.d_states)]
    if spec.gated:
        inputs += [a.get(b) for b in spec.biases] + [y, reserve]
    else:
        assert reserve is None, "the rnn's backward takes no reserve"
        inputs.append(y)
    return getattr(lib, f"{cell}_backward")(*inputs, *grad_outputs, **options)


def run(lib, cell, a, d, *, with_reserve=True, **options):
    """Every output and gradient by name: `lib`'s forward (a training one)
    and its backward at the forward's y, with the forward's reserve, or None
    with with_reserve=False."""
    out = forward(lib, cell, a, training=True, **options)
    reserve = reserve_of(cell, out) if with_reserve else None
    grads = backward(lib, cell, a, out[0], reserve, d, **options)
    return {**outputs_of(cell, out), **grads._asdict()}


def assert_matches_reference(cell, a, d, dtype, label="", tol=None, **options):
    """fusedrnn's forward and backward of `cell` on (a, d), the backward with
    the training forward's reserve, against the reference's: every output
    and gradient of its type, shape and dtype, within `tol` (by default the
    dtype's tolerance). The
    reference differentiates at fusedrnn's own y: the rnn's backward reads
    y, and relu's derivative at 0 depends on which side of 0 a rounded
    pre-activation fell (the gated cells' reference reads y not at all)."""
    out = forward(fusedrnn, cell, a, training=True, **options)
    expected = outputs_of(cell, forward(reference, cell, a, **options))
    for name, got in outputs_of(cell, out).items():
        assert_close(got, expected[name], dtype, label + name, tol)
    grads = backward(fusedrnn, cell, a, out[0], reserve_of(cell, out), d, **options)
    expected = backward(reference, cell, a, out[0], None, d, **options)
    assert type(grads) is CELLS[cell].grads
    for name in grads._fields:
        assert_close(getattr(grads, name), getattr(expected, name), dtype, label + name, tol)


def assert_close(actual, expected, dtype, name, tol=None):
    """`actual` (a kernel output) has `dtype`, the shape of `expected` (the
    reference's float64 result) and agrees with it within `tol`, by default
    TOLERANCE[dtype] (fusedrnn._tolerances says how)."""
    dtype = np.dtype(dtype)
    expected = np.asarray(expected, dtype=np.float64)
    assert isinstance(actual, np.ndarray), f"{name}: expected an ndarray, got {type(actual)}"
    assert actual.dtype == dtype, f"{name}: expected dtype {dtype}, got {actual.dtype}"
    assert actual.shape == expected.shape, \
        f"{name}: expected shape {expected.shape}, got {actual.shape}"
    if expected.size == 0:
        return
    tol = TOLERANCE[dtype] if tol is None else tol
    bad = scaled_errors(actual, expected) > tol
    if bad.any():
        rms = np.sqrt(np.mean(expected ** 2))
        error = np.abs(actual.astype(np.float64) - expected)
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{name}: {bad.sum()} of {bad.size} elements off, max error {np.max(error):.3g} "
            f"(tolerance {tol:g} x (|expected| + rms {rms:.3g})); "
            f"first at {first}: got {float(actual[first]):.17g}, expected {expected[first]:.17g}")


LAYOUTS = ["C", "F", "strided", "negative", "readonly"]


def laid_out(a, layout):
    """`a` (None stays None) with the same values in another memory layout:
    a C-ordered copy, Fortran order, every third element of a larger buffer
    along each axis (the gaps NaN, or 99 for integers, so that a read of one
    shows), negative strides, or read-only."""
    if a is None:
        return None
    if layout == "C":
        return np.array(a, order="C", copy=True)
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.full(tuple(3 * n + 1 for n in a.shape), np.nan if a.dtype.kind == "f" else 99,
                      a.dtype)
        view = big[tuple(slice(1, None, 3) for _ in a.shape)]
        view[...] = a
        return view
    if layout == "negative":
        flip = (slice(None, None, -1),) * a.ndim
        return np.ascontiguousarray(a[flip])[flip]
    assert layout == "readonly", layout
    b = a.copy()
    b.flags.writeable = False
    return b


def snapshot(arrays):
    """Byte copies of the arrays (and lists) in `arrays`, None skipped: NaN
    compares equal to itself, and -0.0 differs from 0.0."""
    return {k: (np.asarray(v).dtype, np.shape(v), np.asarray(v).tobytes())
            for k, v in arrays.items() if v is not None}


def assert_unchanged(arrays, before):
    for k, v in arrays.items():
        if v is not None:
            assert (np.asarray(v).dtype, np.shape(v), np.asarray(v).tobytes()) == before[k], \
                f"{k} was modified by the call"


def run_child(code, timeout=120):
    """Run `code` in a fresh interpreter that can import helpers, where a
    hang becomes a failure at the timeout and a crash ends the child only;
    fail with its stderr unless it exits 0."""
    code = f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n" \
        + textwrap.dedent(code)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=timeout)
    assert run.returncode == 0, f"child exited with {run.returncode}:\n{run.stderr[-4000:]}"


def numerical_gradient(f, a, eps=1e-6):
    """Central differences of the scalar f() with respect to every element of
    the array a, which f() reads; a is perturbed in place and restored."""
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        saved = a[i]
        a[i] = saved + eps
        plus = f()
        a[i] = saved - eps
        minus = f()
        a[i] = saved
        grad[i] = (plus - minus) / (2 * eps)
    return grad


def change_in_place(params, how):
    """Change every array of `params` in place, as an optimiser step or
    load_state_dict does between a forward and its backward. Returns the
    state dict to load for "load_state_dict", else None."""
    if how == "sgd_step":
        fusedrnn.SGD(params, lr=0.5).step({k: np.ones_like(p) for k, p in params.items()})
    elif how == "load_state_dict":
        return {k: np.full_like(p, 0.25) for k, p in params.items()}
    else:  # assignment into the array, as a user would do by hand
        for p in params.values():
            p[...] = -p
    return None


def initial_state(cell, shape, rng):
    """Random initial state as an ElmanRNN (or layer) of `cell` takes it: one
    array of `shape`, or for "lstm" the pair (h0, c0)."""
    states = tuple(rng.normal(size=shape) for _ in CELLS[cell].states)
    return states if len(states) > 1 else states[0]


def torch_results(torch, cell, a, d, *, lengths=None, reverse=False, batch_first=False,
                  **options):
    """What torch.nn's module of `cell` computes for its forward and backward
    on (a, d) (`options`: the rnn's nonlinearity): y, the final states and
    the gradient of every input of the forward, as NumPy arrays in a's dtype
    and layout, keyed like fusedrnn's results, for the loss sum(y * dy) +
    sum(h_n * dh_n) (+ sum(c_n * dc_n)).

    The module gets a's weights. A bias or initial state left out (None) is
    zeros there, which still has its gradient; the rnn's one bias is torch's
    bias_ih, its bias_hh zero. reverse is the _reverse direction of a
    bidirectional module, which runs each packed sequence from its own end;
    lengths go through pack_padded_sequence(enforce_sorted=False).

    Torch rejects empty sequences (and T = 0), so it runs on the non-empty
    rows only; an empty row's results are what lengths say they are: zero y
    and dx, the initial states as final states, their loss weights as the
    initial states' gradients, nothing for the parameters.
    """
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    spec = CELLS[cell]
    x = a["x"]
    T, B = x.shape[1::-1] if batch_first else x.shape[:2]
    D, H = x.shape[2], a["w_hh"].shape[1]

    def given(v, shape):
        return np.zeros(shape, x.dtype) if v is None else v

    states = {s: given(a.get(s), (B, H)) for s in spec.states}
    d = {k: given(d.get(k), shape) for k, shape in
         [("dy", x.shape[:2] + (H,)), *((k, (B, H)) for k in spec.d_states)]}
    n = np.full(B, T) if lengths is None else np.asarray(lengths)
    keep = np.flatnonzero(n)

    def rows(v, over_time):
        """The kept rows of v: the batch axis of a sequence array, else axis 0."""
        return v[:, keep] if over_time and not batch_first else v[keep]

    expected = {"y": np.zeros_like(d["dy"]), "dx": np.zeros_like(x)}
    for s, v in states.items():
        expected[s[0] + "_n"] = v.copy()
        expected["d" + s] = d["d" + s[0] + "_n"].copy()
    G = spec.gates
    for name, shape in [("w_ih", (G * H, D)), ("w_hh", (G * H, H)),
                        *((b, (G * H,)) for b in spec.biases)]:
        expected["d" + name] = np.zeros(shape, x.dtype)
    if keep.size == 0:
        return expected

    torch.manual_seed(0)  # the unused forward direction of a bidirectional module
    module = getattr(torch.nn, spec.layer)(D, H, batch_first=batch_first, bidirectional=reverse,
                                           dtype=getattr(torch, x.dtype.name), **options)
    suffix = "_reverse" if reverse else ""
    params = {"w_ih": f"weight_ih_l0{suffix}", "w_hh": f"weight_hh_l0{suffix}",
              **dict(zip(spec.biases, (f"bias_ih_l0{suffix}", f"bias_hh_l0{suffix}")))}
    with torch.no_grad():
        for param in module.parameters():
            param.zero_()
        for name, torch_name in params.items():
            if a.get(name) is not None:
                getattr(module, torch_name).copy_(torch.from_numpy(a[name]))

    def leaf(v):
        return torch.tensor(v, requires_grad=True)

    x_t = leaf(rows(x, True))
    state_leaves = {s: leaf(rows(v, False)) for s, v in states.items()}
    # A bidirectional module takes the initial states [forward; reverse].
    hx = [torch.stack([torch.zeros_like(v), v]) if reverse else v[None]
          for v in state_leaves.values()]
    hx = tuple(hx) if len(hx) > 1 else hx[0]
    if lengths is None:
        y, state_n = module(x_t, hx)
    else:
        packed = pack_padded_sequence(x_t, torch.from_numpy(n[keep]), batch_first=batch_first,
                                      enforce_sorted=False)
        y, state_n = module(packed, hx)
        y, _ = pad_packed_sequence(y, batch_first=batch_first, total_length=T)
    y = y[..., H:] if reverse else y
    state_n = state_n if isinstance(state_n, tuple) else (state_n,)
    outputs = {"y": y, **{s[0] + "_n": v[-1] for s, v in zip(spec.states, state_n)}}
    sum((value * torch.from_numpy(rows(d["d" + name], name == "y"))).sum()
        for name, value in outputs.items()).backward()

    def put(name, value, over_time):
        if over_time and not batch_first:
            expected[name][:, keep] = value
        else:
            expected[name][keep] = value

    put("y", y.detach().numpy(), True)
    put("dx", x_t.grad.numpy(), True)
    for s, v in state_leaves.items():
        put(s[0] + "_n", outputs[s[0] + "_n"].detach().numpy(), False)
        put("d" + s, v.grad.numpy(), False)
    for name, torch_name in params.items():
        expected["d" + name] = getattr(module, torch_name).grad.numpy()
    return expected
