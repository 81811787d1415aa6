"""fusedrnn.RNN, LSTM and GRU, the NumPy layers: against a composition of
the reference functions and against torch.nn's modules loaded with the same
state dict (outputs, final states, the initial states' and every
parameter's gradient) over stacking, directions, lengths, layout and dtype;
against finite differences; their parameters, initialisation and state
dict; backward after the inputs or parameters changed; bad arguments.

The composition below is written from torch's documented semantics,
independently of layers.py: layer k > 0 reads the previous layer's output,
the directions concatenated forward | reverse; the reverse direction is the
same recurrence run from each sequence's end; the rnn's one bias is
bias_ih + bias_hh, whose gradient each of them gets.
"""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fusedrnn
from fusedrnn import reference
from helpers import CELLS, DTYPES, GATED, backward, forward, outputs_of, reserve_of, variants

pytestmark = pytest.mark.usefixtures("isa")

T, B, D, H = 5, 3, 4, 6
LENGTHS = np.array([5, 0, 3])
TORCH_LENGTHS = np.array([5, 1, 3])   # torch's pack_padded_sequence refuses empty sequences
ARCHITECTURES = {"1layer": (1, False), "2layers": (2, False), "bidirectional": (1, True),
                 "3layers_bidirectional": (3, True)}
LAYERS = {cell: getattr(fusedrnn, CELLS[cell].layer) for cell in CELLS}
CELL_OF = {CELLS[cell].layer: cell for cell in CELLS}


def make_layer(cell, num_layers=2, bidirectional=True, dtype=np.float64, seed=0, **options):
    return LAYERS[cell](D, H, num_layers, bidirectional=bidirectional, dtype=dtype, seed=seed,
                        **options)


def make_inputs(cell, dtype, batch_first, num_layers, bidirectional, seed=1):
    """x, the initial states (a list: h0, and c0 for the LSTM), dy and the
    final states' gradients (a list likewise)."""
    rng = np.random.default_rng(seed)
    dirs = 2 if bidirectional else 1
    seq = (B, T) if batch_first else (T, B)
    state = (num_layers * dirs, B, H)
    n = len(CELLS[cell].states)
    return (rng.normal(size=(*seq, D)).astype(dtype),
            [rng.normal(size=state).astype(dtype) for _ in range(n)],
            rng.normal(size=(*seq, dirs * H)).astype(dtype),
            [rng.normal(size=state).astype(dtype) for _ in range(n)])


def as_hx(states):
    """A list of states as the layers take them: the LSTM's pair as a tuple,
    one state as itself; None as None."""
    if states is None:
        return None
    return tuple(states) if len(states) > 1 else states[0]


def run_layer(layer, x, states, dy, d_states, lengths):
    """Every result of the layer's forward and backward by name: y, the final
    states (h_n, c_n), dx and the initial states' gradients (dh0, dc0)."""
    names = CELLS[CELL_OF[type(layer).__name__]].states
    y, finals = layer.forward(x, as_hx(states), lengths)
    dx, d_initial = layer.backward(dy, as_hx(d_states))
    finals, d_initial = ([v] if len(names) == 1 else list(v) for v in (finals, d_initial))
    return {"y": y, **{s[0] + "_n": v for s, v in zip(names, finals)}, "dx": dx,
            **{"d" + s: v for s, v in zip(names, d_initial)}}


def suffixes(bidirectional):
    return ["", "_reverse"] if bidirectional else [""]


def cell_inputs(cell, params, k, sfx, layer_input, states0):
    """The reference's inputs for layer k's direction `sfx`: its weights and
    biases (the rnn's one bias their sum)."""
    p = {name: params.get(f"{name}_l{k}{sfx}") for name in
         ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    a = {"x": layer_input, **dict(zip(CELLS[cell].states, states0)), "w_ih": p["weight_ih"],
         "w_hh": p["weight_hh"]}
    biases = (p["bias_ih"], p["bias_hh"]) if p["bias_ih"] is not None else (None, None)
    if len(CELLS[cell].biases) == 1:
        a["bias"] = None if biases[0] is None else biases[0] + biases[1]
    else:
        a.update(zip(CELLS[cell].biases, biases))
    return a


def exact(a):
    return a


def reference_forward(cell, params, x, states0, lengths, num_layers, bidirectional,
                      batch_first, stored=exact, **options):
    """(y, the final states {name: stacked}, every call's (inputs, result))
    from the reference's forward, in float64; states0: a list of stacked
    initial states, or None. stored: what a layer in a dtype narrower than
    its arithmetic (bfloat16) does to the y one call hands on, the next
    layer's input: rounds it to that dtype."""
    dirs = len(suffixes(bidirectional))
    options = dict(options, lengths=lengths, batch_first=batch_first)
    calls, finals, layer_input = [], [], x
    for k in range(num_layers):
        ys = []
        for d, sfx in enumerate(suffixes(bidirectional)):
            i = k * dirs + d
            a = cell_inputs(cell, params, k, sfx, layer_input,
                            [None] * len(CELLS[cell].states) if states0 is None
                            else [s[i] for s in states0])
            out = forward(reference, cell, a, training=True, reverse=d == 1, **options)
            calls.append((a, out))
            ys.append(stored(out[0]))
            finals.append(outputs_of(cell, out))
        layer_input = np.concatenate(ys, axis=2)
    return layer_input, {name: np.stack([f[name] for f in finals])
                         for name in CELLS[cell].outputs[1:]}, calls


def reference_backward(cell, calls, dy, d_states, num_layers, bidirectional, lengths,
                       batch_first, stored=exact, **options):
    """(dx, the initial states' gradients {name: stacked}, every parameter's
    gradient by name) from the reference's backward for reference_forward's
    calls; d_states: a list of stacked final states' gradients, or None.
    stored: as for reference_forward, here applied to the y the rnn's
    backward differentiates at (the kernel's, stored), to each direction's
    dx and to their sum, the gradient one layer hands the one below."""
    spec = CELLS[cell]
    dirs = len(suffixes(bidirectional))
    options = dict(options, lengths=lengths, batch_first=batch_first)
    grads, d_initial = {}, [None] * (num_layers * dirs)
    d_output = dy
    for k in reversed(range(num_layers)):
        d_input = 0
        for d, sfx in enumerate(suffixes(bidirectional)):
            i = k * dirs + d
            a, out = calls[i]
            d_finals = {} if d_states is None else \
                {name: v[i] for name, v in zip(spec.d_states, d_states)}
            g = backward(reference, cell, a, stored(out[0]), reserve_of(cell, out),
                         {"dy": d_output[:, :, d * H:(d + 1) * H], **d_finals},
                         reverse=d == 1, **options)
            d_input = stored(d_input + stored(g.dx))
            d_initial[i] = [getattr(g, "d" + s) for s in spec.states]
            grads[f"weight_ih_l{k}{sfx}"] = g.dw_ih
            grads[f"weight_hh_l{k}{sfx}"] = g.dw_hh
            bias_grads = [getattr(g, "d" + b) for b in spec.biases]
            grads[f"bias_ih_l{k}{sfx}"], grads[f"bias_hh_l{k}{sfx}"] = \
                bias_grads if len(bias_grads) == 2 else bias_grads * 2
        d_output = d_input
    return d_output, {"d" + s: np.stack([v[j] for v in d_initial])
                      for j, s in enumerate(spec.states)}, grads


def check_against_composition(assert_close, layer, cell, x, states, dy, d_states, lengths,
                              num_layers, bidirectional, batch_first, dtype, **options):
    """The layer's every result and gradient against the reference composition."""
    actual = run_layer(layer, x, states, dy, d_states, lengths)
    y, finals, calls = reference_forward(cell, layer.params, x, states, lengths, num_layers,
                                         bidirectional, batch_first, **options)
    dx, d_initial, grads = reference_backward(cell, calls, dy, d_states, num_layers,
                                              bidirectional, lengths, batch_first, **options)
    expected = {"y": y, **finals, "dx": dx, **d_initial}
    assert set(actual) == set(expected)
    for name, value in expected.items():
        assert_close(actual[name], value, dtype, name)
    assert list(layer.grads) == list(layer.params)
    for name, g in layer.grads.items():
        assert_close(g, grads[name], dtype, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("cell", CELLS)
def test_forward_and_backward_match_the_reference_composition(cell, architecture, lengths,
                                                              batch_first, dtype, assert_close):
    num_layers, bidirectional = ARCHITECTURES[architecture]
    layer = make_layer(cell, num_layers, bidirectional, dtype, batch_first=batch_first)
    x, states, dy, d_states = make_inputs(cell, dtype, batch_first, num_layers, bidirectional)
    check_against_composition(assert_close, layer, cell, x, states, dy, d_states, lengths,
                              num_layers, bidirectional, batch_first, dtype)


@pytest.mark.parametrize("cell, options", variants())
def test_every_option_without_bias_and_defaults(cell, options, assert_close):
    """No bias, the initial states and the final states' gradients left out
    (zeros), each of the rnn's nonlinearities."""
    layer = make_layer(cell, bias=False, seed=3, **options)
    assert not any(name.startswith("bias") for name in layer.params)
    x, _, dy, _ = make_inputs(cell, np.float64, False, 2, True)
    check_against_composition(assert_close, layer, cell, x, None, dy, None, None, 2, True,
                              False, np.float64, **options)


def run_torch(torch, cell, state_dict, x, states, dy, d_states, lengths, num_layers,
              bidirectional, batch_first):
    """The same through torch.nn's module in float64, from `state_dict`: every
    result by name as run_layer names them, and the parameter gradients by
    name. lengths go in as a PackedSequence, unsorted; the loss is <y, dy>
    + <h_n, dh_n> (+ <c_n, dc_n>)."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    names = CELLS[cell].states
    net = getattr(torch.nn, CELLS[cell].layer)(D, H, num_layers=num_layers,
                                               bidirectional=bidirectional,
                                               batch_first=batch_first, dtype=torch.float64)
    net.load_state_dict({k: torch.tensor(np.asarray(v, np.float64))
                         for k, v in state_dict.items()})

    def t(a, grad=False):
        return torch.tensor(np.asarray(a, np.float64), requires_grad=grad)

    x_t, states_t = t(x, True), [t(s, True) for s in states]
    seq = x_t
    if lengths is not None:
        seq = pack_padded_sequence(x_t, torch.tensor(lengths), batch_first=batch_first,
                                   enforce_sorted=False)
    y_t, finals = net(seq, as_hx(states_t))
    finals = list(finals) if len(names) > 1 else [finals]
    if lengths is not None:
        y_t, _ = pad_packed_sequence(y_t, batch_first=batch_first, total_length=T)
    loss = (y_t * t(dy)).sum() + sum((f * t(g)).sum() for f, g in zip(finals, d_states))
    loss.backward()
    results = {"y": y_t, **{s[0] + "_n": f for s, f in zip(names, finals)}, "dx": x_t.grad,
               **{"d" + s: v.grad for s, v in zip(names, states_t)}}
    return ({k: v.detach().numpy() for k, v in results.items()},
            {name: p.grad.numpy() for name, p in net.named_parameters()})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("lengths", [None, TORCH_LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("cell", CELLS)
def test_forward_and_backward_match_torch(cell, architecture, lengths, batch_first, dtype,
                                          assert_close):
    """torch in float64 is the oracle for both dtypes: its state dict is ours
    (float32 values are exact in float64), and so are its inputs. The
    initial states and final states' gradients are indexed layer * dirs +
    direction."""
    torch = pytest.importorskip("torch")
    num_layers, bidirectional = ARCHITECTURES[architecture]
    layer = make_layer(cell, num_layers, bidirectional, dtype, batch_first=batch_first)
    arrays = make_inputs(cell, dtype, batch_first, num_layers, bidirectional)

    actual = run_layer(layer, *arrays, lengths)
    expected, grads = run_torch(torch, cell, layer.state_dict(), *arrays, lengths, num_layers,
                                bidirectional, batch_first)
    assert set(actual) == set(expected)
    for name, value in expected.items():
        assert_close(actual[name], value, dtype, name)
    assert list(layer.grads) == list(grads)  # every parameter, in torch's order
    for name, g in layer.grads.items():
        assert_close(g, grads[name], dtype, name)


@pytest.mark.parametrize("cell", CELLS)
def test_states_left_out_are_zeros(cell):
    """The initial states left out (hx None; for the LSTM's pair, either one
    None), and dy and the final states' gradients left out: the same as
    zeros passed explicitly."""
    layer = make_layer(cell)
    x, states, dy, d_states = make_inputs(cell, np.float64, False, 2, True)
    zero = np.zeros_like(states[0])

    def left_out(given):
        """(hx with None for what is left out, its explicit equivalent): hx
        None, and for a pair each one None in turn."""
        cases = [(None, as_hx([zero] * len(given)))]
        if len(given) > 1:
            for i in range(len(given)):
                cases.append((tuple(None if j == i else g for j, g in enumerate(given)),
                              tuple(zero if j == i else g for j, g in enumerate(given))))
            cases.append((tuple([None] * len(given)), as_hx([zero] * len(given))))
        return cases

    for given, explicit in left_out(states):
        expected = layer.forward(x, explicit)
        actual = layer.forward(x, given)
        assert_array_equal(actual[0], expected[0])
        for a, e in zip(np.atleast_1d(actual[1]), np.atleast_1d(expected[1])):
            assert_array_equal(a, e)
    for given, explicit in left_out(d_states):
        layer.forward(x, as_hx(states))
        expected = layer.backward(np.zeros((T, B, 2 * H)), explicit), dict(layer.grads)
        actual = layer.backward(None, given), dict(layer.grads)
        assert_array_equal(actual[0][0], expected[0][0])
        assert_array_equal(np.asarray(actual[0][1]), np.asarray(expected[0][1]))
        for name, g in actual[1].items():
            assert_array_equal(g, expected[1][name], err_msg=name)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("cell", CELLS)
def test_parameter_keys_shapes_and_order_are_torchs(cell, bias):
    torch = pytest.importorskip("torch")
    ours = LAYERS[cell](D, H, num_layers=3, bias=bias, bidirectional=True)
    theirs = getattr(torch.nn, CELLS[cell].layer)(D, H, num_layers=3, bias=bias,
                                                  bidirectional=True)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]


@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_keys_and_shapes_by_hand(cell):
    """Independent of torch, from its documentation: per layer and direction
    weight_ih, weight_hh, bias_ih, bias_hh, the gates their row blocks (G =
    1, 4, 3); layer 1 of a bidirectional stack reads both directions, 2H
    features."""
    G = CELLS[cell].gates
    layer = LAYERS[cell](4, 6, num_layers=2, bidirectional=True)
    expected = [(f"{name}_l{k}{sfx}", shape)
                for k, features in enumerate((4, 12)) for sfx in ("", "_reverse")
                for name, shape in (("weight_ih", (G * 6, features)), ("weight_hh", (G * 6, 6)),
                                    ("bias_ih", (G * 6,)), ("bias_hh", (G * 6,)))]
    assert [(k, v.shape) for k, v in layer.state_dict().items()] == expected


@pytest.mark.parametrize("cell", CELLS)
def test_initialisation_is_torchs_uniform_and_follows_the_seed(cell):
    a = LAYERS[cell](D, 16, 2, seed=7)
    b = LAYERS[cell](D, 16, 2, seed=7)
    c = LAYERS[cell](D, 16, 2, seed=8)
    wide = LAYERS[cell](D, 16, 2, seed=7, dtype=np.float64)
    for name, p in a.params.items():
        assert p.dtype == np.float32
        assert np.all(np.abs(p) <= 1 / 4), name  # 1 / sqrt(H) with H = 16
        assert_array_equal(p, b.params[name])
        assert not np.array_equal(p, c.params[name]), name
        assert_array_equal(p, wide.params[name].astype(np.float32))  # drawn in float64, rounded
    values = np.concatenate([p.ravel() for p in a.params.values()])
    # Uniform on (-1/4, 1/4): mean 0, standard deviation 1/4/sqrt(3) = 0.1443,
    # extremes near the bounds; values.size is 896 (rnn) or thousands.
    assert abs(values.mean()) < 0.01 and abs(values.std() - 0.1443) < 0.005
    assert values.min() < -0.24 and values.max() > 0.24


@pytest.mark.parametrize("cell", CELLS)
def test_initialisation_statistics_equal_torchs(cell):
    """Per parameter: the same bound (both within ±1/sqrt(H), both reaching
    near it) and standard deviations that agree, ours against torch's own
    initialisation of the same module."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = getattr(torch.nn, CELLS[cell].layer)
    theirs = {k: v.numpy() for k, v in module(D, 32, 2).state_dict().items()}
    ours = LAYERS[cell](D, 32, 2, seed=0).params
    bound = 1 / np.sqrt(32)
    for name, p in ours.items():
        q = theirs[name]
        for values in (p, q):
            assert np.all(np.abs(values) <= bound), name
            assert np.abs(values).max() > 0.9 * bound, name
        # std of n uniform draws: relative spread about 1/sqrt(n); n >= 32 here.
        assert abs(p.std() - q.std()) < 0.3 * q.std(), name


@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_round_trip_with_torch(cell):
    """torch -> ours -> torch gives torch's numbers back, ours updated in
    place (optimisers built on params keep working); ours -> another of ours
    in another dtype gives the same outputs."""
    torch = pytest.importorskip("torch")
    module = getattr(torch.nn, CELLS[cell].layer)
    theirs = module(D, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    ours = make_layer(cell, seed=3)
    arrays = dict(ours.params)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert all(ours.params[k] is arrays[k] for k in arrays)
    back = module(D, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    back.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    for name, v in theirs.state_dict().items():
        assert_array_equal(back.state_dict()[name].numpy(), v.numpy(), err_msg=name)

    narrow = make_layer(cell, dtype=np.float32, seed=4)
    narrow_arrays = dict(narrow.params)
    narrow.load_state_dict(ours.state_dict())
    for name, p in narrow.params.items():
        assert p is narrow_arrays[name]
        assert_array_equal(p, ours.params[name].astype(np.float32))
    x = make_inputs(cell, np.float64, False, 2, True)[0]
    np.testing.assert_allclose(narrow.forward(x.astype(np.float32))[0], ours.forward(x)[0],
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_is_a_copy(cell):
    layer = make_layer(cell)
    d = layer.state_dict()
    d["weight_hh_l0"][:] = 0
    assert np.any(layer.params["weight_hh_l0"] != 0)


def test_gru_bias_gradients_differ_in_the_n_gate_only():
    """b_ir + b_hr and b_iz + b_hz only appear summed: equal gradients in the
    r and z rows. r multiplies b_hn and not b_in: different n rows. And they
    are two arrays, so that clipping one in place leaves the other."""
    layer = make_layer("gru")
    x, states, dy, d_states = make_inputs("gru", np.float64, False, 2, True)
    run_layer(layer, x, states, dy, d_states, TORCH_LENGTHS)
    for tag in ("l0", "l1_reverse"):
        db_ih, db_hh = layer.grads[f"bias_ih_{tag}"], layer.grads[f"bias_hh_{tag}"]
        np.testing.assert_allclose(db_ih[:2 * H], db_hh[:2 * H], rtol=1e-12, atol=1e-14)
        assert np.all(np.abs(db_ih[2 * H:] - db_hh[2 * H:]) > 1e-6)
        assert not np.shares_memory(db_ih, db_hh)


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_match_finite_differences(cell, numerical_gradient):
    """Without torch: L = <y, R> + <h_n, S> (+ <c_n, U>) for fixed random R,
    S, U, float64, two layers, bidirectional, with lengths."""
    layer = make_layer(cell)
    x, states, dy, d_states = make_inputs(cell, np.float64, False, 2, True)

    def loss():
        y, finals = layer.forward(x, as_hx(states), LENGTHS)
        finals = finals if len(states) > 1 else (finals,)
        return np.sum(y * dy) + sum(np.sum(f * g) for f, g in zip(finals, d_states))

    loss()
    results = run_layer(layer, x, states, dy, d_states, LENGTHS)
    grads = dict(layer.grads)
    for name, value in [("dx", x), *(("d" + s, v) for s, v in zip(CELLS[cell].states, states))]:
        np.testing.assert_allclose(results[name], numerical_gradient(loss, value), rtol=1e-5,
                                   atol=1e-8, err_msg=name)
    for name in ("weight_ih_l0", "weight_hh_l1_reverse", "bias_ih_l1", "bias_hh_l0_reverse"):
        np.testing.assert_allclose(grads[name], numerical_gradient(loss, layer.params[name]),
                                   rtol=1e-5, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("how", ["sgd_step", "load_state_dict", "assignment"])
@pytest.mark.parametrize("cell", CELLS)
def test_backward_uses_the_weights_forward_used(cell, how, change_in_place):
    """Parameters (biases too) changed in place between forward and backward
    (an optimiser step, load_state_dict) leave the gradients those of the
    parameters the forward ran with: a fresh layer with the original ones
    gives bitwise the same."""
    x, states, dy, d_states = make_inputs(cell, np.float64, False, 2, True)
    fresh, changed = make_layer(cell), make_layer(cell)
    expected = run_layer(fresh, x, states, dy, d_states, LENGTHS)

    changed.forward(x, as_hx(states), LENGTHS)
    new = change_in_place(changed.params, how)
    if new is not None:
        changed.load_state_dict(new)
    assert all(np.any(changed.params[k] != fresh.params[k]) for k in fresh.params)
    dx, d_initial = changed.backward(dy, as_hx(d_states))
    assert_array_equal(dx, expected["dx"], err_msg="dx")
    assert_array_equal(np.asarray(d_initial),
                       np.asarray(as_hx([expected["d" + s] for s in CELLS[cell].states])))
    assert changed.grads.keys() == fresh.grads.keys()
    for name, g in changed.grads.items():
        assert_array_equal(g, fresh.grads[name], err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_inputs_are_not_modified_and_backward_reads_what_forward_saw(cell):
    """Nothing the caller passes is written; and the caller's x, states and
    lengths changed in place between forward and backward (a reused buffer)
    leave the gradients as they were."""
    layer = make_layer(cell)
    x, states, dy, d_states = make_inputs(cell, np.float64, False, 2, True)
    arrays = [x, *states, dy, *d_states]
    copies = [a.copy() for a in arrays]
    lengths = LENGTHS.copy()
    expected = run_layer(layer, x, states, dy, d_states, lengths), dict(layer.grads)
    for a, c in zip(arrays, copies):
        assert_array_equal(a, c)
    assert_array_equal(lengths, LENGTHS)

    layer.forward(x, as_hx(states), lengths)
    x[:], lengths[:] = 0, T
    for s in states:
        s[:] = 0
    dx, d_initial = layer.backward(dy, as_hx(d_states))
    assert_array_equal(dx, expected[0]["dx"])
    assert_array_equal(np.asarray(d_initial),
                       np.asarray(as_hx([expected[0]["d" + s] for s in CELLS[cell].states])))
    for name, g in layer.grads.items():
        assert_array_equal(g, expected[1][name], err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_changing_the_returned_arrays_changes_nothing(cell):
    """y and the final states go to the caller: changing them leaves the backward."""
    layer = make_layer(cell, num_layers=1, bidirectional=False)
    x, _, dy, _ = make_inputs(cell, np.float64, False, 1, False)
    layer.forward(x)
    expected = layer.backward(dy)[0]
    y, finals = layer.forward(x)
    y[:] = 7
    for s in (finals if isinstance(finals, tuple) else (finals,)):
        s[:] = 7
    assert_array_equal(layer.backward(dy)[0], expected)


@pytest.mark.parametrize("cell", CELLS)
def test_gradients_are_distinct_arrays(cell):
    """No two gradients share memory (bias_ih and bias_hh are equal for the
    rnn and in most rows for the others): an in-place update of one, such
    as clipping, must not reach another twice."""
    layer = make_layer(cell)
    x, _, dy, _ = make_inputs(cell, np.float64, False, 2, True)
    layer.forward(x)
    layer.backward(dy)
    grads = list(layer.grads.values())
    assert len(grads) == len(layer.params)
    for i, a in enumerate(grads):
        for b in grads[i + 1:]:
            assert not np.shares_memory(a, b)


def test_lstm_bad_state_arguments():
    layer = make_layer("lstm", dtype=np.float32)
    x = np.zeros((T, B, D), np.float32)
    state = np.zeros((4, B, H), np.float32)
    with pytest.raises(TypeError, match=r"^hx: expected a pair \(h0, c0\).*got ndarray"):
        layer.forward(x, np.zeros((2, 4, B, H), np.float32))   # stacked, not a pair
    with pytest.raises(TypeError, match=r"^hx: expected a pair \(h0, c0\).*tuple of length 3"):
        layer.forward(x, (state, state, state))
    with pytest.raises(TypeError, match=r"^hx: expected a pair"):
        layer.forward(x, state)
    with pytest.raises(ValueError, match=r"^h0: expected shape \(4, 3, 6\), got \(2, 3, 6\)"):
        layer.forward(x, (state[:2], state))
    with pytest.raises(ValueError, match=r"^c0: expected shape \(4, 3, 6\), got \(4, 3, 5\)"):
        layer.forward(x, (state, np.zeros((4, B, 5), np.float32)))
    with pytest.raises(TypeError, match=r"^c0: expected dtype float32.*got float64"):
        layer.forward(x, (None, state.astype(np.float64)))
    with pytest.raises(RuntimeError, match="^backward: call forward first"):
        layer.backward(None)
    layer.forward(x, (state, state))
    with pytest.raises(TypeError, match=r"^dhx: expected a pair \(dh_n, dc_n\)"):
        layer.backward(None, state)
    with pytest.raises(ValueError, match=r"^dc_n: expected shape \(4, 3, 6\), got \(4, 3\)"):
        layer.backward(None, (None, state[:, :, 0]))
    with pytest.raises(TypeError, match=r"^dh_n: expected dtype float32.*got float64"):
        layer.backward(None, (state.astype(np.float64), None))


@pytest.mark.parametrize("cell", CELLS)
def test_bad_call_arguments(cell):
    """Every layer; the LSTM's pairs are test_lstm_bad_state_arguments'."""
    one_state = len(CELLS[cell].states) == 1
    layer = make_layer(cell, dtype=np.float32)
    x = np.zeros((T, B, D), np.float32)
    with pytest.raises(RuntimeError, match="^backward: call forward first"):
        layer.backward(None)
    with pytest.raises(TypeError, match=r"^x: expected dtype float32.*got float64"):
        layer.forward(x.astype(np.float64))
    with pytest.raises(ValueError, match=r"^x: expected a 3-D array.*input_size = 4.*\(5, 3, 7\)"):
        layer.forward(np.zeros((T, B, 7), np.float32))
    with pytest.raises(ValueError, match=r"^x: expected a 3-D array.*\(5, 4\)"):
        layer.forward(np.zeros((T, D), np.float32))
    with pytest.raises(ValueError, match=r"^lengths"):
        layer.forward(x, lengths=[1, 2, 9])
    with pytest.raises(TypeError, match=r"^lengths: expected an integer array"):
        layer.forward(x, lengths=[1.0, 2.0, 3.0])
    if one_state:
        with pytest.raises(ValueError, match=r"^h0: expected shape \(4, 3, 6\), got \(1, 3, 6\)"):
            layer.forward(x, np.zeros((1, B, H), np.float32))
    layer.forward(x)
    with pytest.raises(ValueError, match=r"^dy: expected shape \(5, 3, 12\), got \(5, 3, 6\)"):
        layer.backward(np.zeros((T, B, H), np.float32))
    with pytest.raises(TypeError, match=r"^dy: expected dtype float32.*got float64"):
        layer.backward(np.zeros((T, B, 2 * H)))
    if one_state:
        with pytest.raises(ValueError, match=r"^dh_n: expected shape \(4, 3, 6\)"):
            layer.backward(None, np.zeros((4, B), np.float32))
        with pytest.raises(TypeError, match=r"^dh_n: expected dtype float32.*got float64"):
            layer.backward(None, np.zeros((4, B, H)))


BAD_CONSTRUCTORS = [
    (dict(input_size=0), ValueError, "input_size"),
    (dict(input_size=2.5), TypeError, "input_size"),
    (dict(hidden_size=-1), ValueError, "hidden_size"),
    (dict(hidden_size=2.5), TypeError, "hidden_size"),
    (dict(num_layers=0), ValueError, "num_layers"),
    (dict(num_layers=True), TypeError, "num_layers"),
    (dict(bias="yes"), TypeError, "bias"),
    (dict(batch_first=None), TypeError, "batch_first"),
    (dict(bidirectional=2), TypeError, "bidirectional"),
    (dict(dtype=np.float16), TypeError, "dtype.*float16"),
    (dict(dtype=np.int32), TypeError, "dtype.*int32"),
    (dict(dtype="nonsense"), TypeError, "dtype"),
]


@pytest.mark.parametrize("changes, error, match", BAD_CONSTRUCTORS,
                         ids=[str(c) for c, _, _ in BAD_CONSTRUCTORS])
@pytest.mark.parametrize("cell", CELLS)
def test_bad_constructor_arguments(cell, changes, error, match):
    with pytest.raises(error, match=f"^{match}"):
        LAYERS[cell](**dict(dict(input_size=D, hidden_size=H), **changes))


def test_unknown_nonlinearity_of_the_rnn():
    with pytest.raises(ValueError, match="^nonlinearity.*'tanh'.*'gelu'"):
        fusedrnn.RNN(D, H, nonlinearity="gelu")


@pytest.mark.parametrize("cell", GATED)
def test_no_nonlinearity_for_the_gated_cells(cell):
    """torch.nn.LSTM and GRU have none: an argument that would be ignored is refused."""
    with pytest.raises(TypeError, match="nonlinearity"):
        LAYERS[cell](D, H, nonlinearity="relu")


# (the entries replaced, given the gate count G; the exception; its message)
BAD_STATE_DICTS = {
    "missing": (lambda G: dict(weight_hh_l0=None), ValueError,
                r"state_dict: missing keys \['weight_hh_l0'\]"),
    "unexpected": (lambda G: dict(extra=np.zeros(1)), ValueError,
                   r"state_dict: .*unexpected keys \['extra'\]"),
    "shape": (lambda G: dict(weight_hh_l0=np.zeros((G * H, H + 1))), ValueError,
              r"weight_hh_l0: expected shape"),
    "dtype": (lambda G: dict(bias_ih_l0=np.array(["a"] * (G * H))), TypeError,
              r"bias_ih_l0: expected a real-valued"),
}


@pytest.mark.parametrize("bad", BAD_STATE_DICTS)
@pytest.mark.parametrize("cell", CELLS)
def test_bad_state_dicts_change_nothing(cell, bad):
    changes, error, match = BAD_STATE_DICTS[bad]
    layer = make_layer(cell, num_layers=1, bidirectional=False)
    before = layer.state_dict()
    d = {k: np.ones_like(v) for k, v in before.items()}
    d.update(changes(CELLS[cell].gates))
    d = {k: v for k, v in d.items() if v is not None}
    with pytest.raises(error, match=f"^{match}"):
        layer.load_state_dict(d)
    for name, p in layer.params.items():
        assert_array_equal(p, before[name])
