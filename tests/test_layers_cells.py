"""fusedrnn.LSTM and fusedrnn.GRU against torch.nn.LSTM / torch.nn.GRU loaded
with the same state dict (outputs, final states, dx, dh0, dc0 and every
parameter gradient) over stacking, directions, layout, lengths and dtype;
their parameters, initialisation and state dict; backward after the
parameters changed; bad arguments. Without torch, the gated cells' own
properties: GRU's two bias gradients, gradients in arrays of their own, and
gradients against finite differences (see also test_network.py).
"""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fusedrnn

pytestmark = pytest.mark.usefixtures("isa")

T, B, D, H = 5, 3, 4, 6
LENGTHS = np.array([5, 1, 3])   # >= 1: torch's pack_padded_sequence refuses empty sequences
ARCHITECTURES = {"1layer": (1, False), "2layers": (2, False), "bidirectional": (1, True),
                 "3layers_bidirectional": (3, True)}
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]
CELLS = {"lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU}
LAYERS = {"rnn": fusedrnn.RNN, **CELLS}
GATES = {"lstm": 4, "gru": 3}


def make_layer(cell, num_layers=2, bidirectional=True, dtype=np.float64, seed=0, **options):
    return LAYERS[cell](D, H, num_layers, bidirectional=bidirectional, dtype=dtype, seed=seed,
                        **options)


def make_inputs(dtype, batch_first, num_layers, bidirectional, seed=1):
    """x, initial h and c, dy, and gradients for the final h and c."""
    rng = np.random.default_rng(seed)
    dirs = 2 if bidirectional else 1
    seq = (B, T) if batch_first else (T, B)
    state = (num_layers * dirs, B, H)
    return (rng.normal(size=(*seq, D)).astype(dtype), rng.normal(size=state).astype(dtype),
            rng.normal(size=state).astype(dtype), rng.normal(size=(*seq, dirs * H)).astype(dtype),
            rng.normal(size=state).astype(dtype), rng.normal(size=state).astype(dtype))


def run_layer(layer, cell, x, h0, c0, dy, dh_n, dc_n, lengths):
    """(y, h_n, c_n, dx, dh0, dc0) of our layer; the c's None for the GRU."""
    if cell == "lstm":
        y, (h_n, c_n) = layer.forward(x, (h0, c0), lengths)
        dx, (dh0, dc0) = layer.backward(dy, (dh_n, dc_n))
        return y, h_n, c_n, dx, dh0, dc0
    y, h_n = layer.forward(x, h0, lengths)
    dx, dh0 = layer.backward(dy, dh_n)
    return y, h_n, None, dx, dh0, None


def run_torch(torch, cell, state_dict, x, h0, c0, dy, dh_n, dc_n, lengths, num_layers,
              bidirectional, batch_first):
    """The same through torch.nn.LSTM / GRU in float64, from `state_dict`:
    (y, h_n, c_n, dx, dh0, dc0, parameter gradients by name). lengths go in
    as a PackedSequence, unsorted; the loss is <y, dy> + <h_n, dh_n> (+ <c_n, dc_n>)."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    net = module(D, H, num_layers=num_layers, bidirectional=bidirectional,
                 batch_first=batch_first, dtype=torch.float64)
    net.load_state_dict({k: torch.tensor(np.asarray(v, np.float64)) for k, v in
                         state_dict.items()})
    leaf = [torch.tensor(np.asarray(a, np.float64), requires_grad=True) for a in (x, h0, c0)]
    x_t, h0_t, c0_t = leaf
    seq = x_t
    if lengths is not None:
        seq = pack_padded_sequence(x_t, torch.tensor(lengths), batch_first=batch_first,
                                   enforce_sorted=False)
    if cell == "lstm":
        y_t, (h_n_t, c_n_t) = net(seq, (h0_t, c0_t))
    else:
        y_t, h_n_t = net(seq, h0_t)
        c_n_t = None
    if lengths is not None:
        y_t, _ = pad_packed_sequence(y_t, batch_first=batch_first, total_length=T)

    def t(a):
        return torch.tensor(np.asarray(a, np.float64))
    loss = (y_t * t(dy)).sum() + (h_n_t * t(dh_n)).sum()
    if cell == "lstm":
        loss = loss + (c_n_t * t(dc_n)).sum()
    loss.backward()
    numpy = lambda a: None if a is None else a.detach().numpy()  # noqa: E731
    return (numpy(y_t), numpy(h_n_t), numpy(c_n_t), numpy(x_t.grad), numpy(h0_t.grad),
            None if cell == "gru" else numpy(c0_t.grad),
            {name: numpy(p.grad) for name, p in net.named_parameters()})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("cell", CELLS)
def test_forward_and_backward_match_torch(cell, architecture, lengths, batch_first, dtype,
                                          assert_close):
    """torch in float64 is the oracle for both dtypes: its state dict is ours
    (float32 values are exact in float64), and so are its inputs."""
    torch = pytest.importorskip("torch")
    num_layers, bidirectional = ARCHITECTURES[architecture]
    layer = make_layer(cell, num_layers, bidirectional, dtype, batch_first=batch_first)
    arrays = make_inputs(dtype, batch_first, num_layers, bidirectional)

    actual = run_layer(layer, cell, *arrays, lengths)
    expected = run_torch(torch, cell, layer.state_dict(), *arrays, lengths, num_layers,
                         bidirectional, batch_first)

    for name, a, e in zip(["y", "h_n", "c_n", "dx", "dh0", "dc0"], actual, expected):
        if cell == "gru" and name in ("c_n", "dc0"):
            continue
        assert_close(a, e, dtype, name)
    grads = expected[-1]
    assert list(layer.grads) == list(grads)  # every parameter, in torch's order
    for name, g in layer.grads.items():
        assert_close(g, grads[name], dtype, name)


@pytest.mark.parametrize("cell", CELLS)
def test_states_left_out_are_zeros(cell):
    """hx None, (None, None), one of the pair given; dy and the final
    states' gradients left out: the same as zeros passed explicitly."""
    layer = make_layer(cell)
    x, h0, c0, dy, dh_n, dc_n = make_inputs(np.float64, False, 2, True)
    zero = np.zeros_like(h0)
    if cell == "lstm":
        cases = [(None, (zero, zero)), ((None, None), (zero, zero)), ((h0, None), (h0, zero)),
                 ((None, c0), (zero, c0))]
        grads = [(None, (zero, zero)), ((None, dc_n), (zero, dc_n)), ((dh_n, None), (dh_n, zero))]
    else:
        cases, grads = [(None, zero)], [(None, zero)]
    for given, explicit in cases:
        expected = layer.forward(x, explicit)
        actual = layer.forward(x, given)
        assert_array_equal(actual[0], expected[0])
        for a, e in zip(np.atleast_1d(actual[1]), np.atleast_1d(expected[1])):
            assert_array_equal(a, e)
    for given, explicit in grads:
        layer.forward(x, (h0, c0) if cell == "lstm" else h0)
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
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    ours = CELLS[cell](D, H, num_layers=3, bias=bias, bidirectional=True)
    theirs = module(D, H, num_layers=3, bias=bias, bidirectional=True)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]


@pytest.mark.parametrize("cell", CELLS)
def test_parameter_shapes_by_hand(cell):
    """Independent of torch: the gates are row blocks, G = 4 (LSTM) or 3 (GRU);
    layer 1 of a bidirectional stack reads both directions, 2H features."""
    G = GATES[cell]
    layer = CELLS[cell](4, 6, num_layers=2, bidirectional=True)
    shapes = dict((k, v.shape) for k, v in layer.params.items())
    assert list(shapes)[:4] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    assert len(shapes) == 16
    assert shapes["weight_ih_l0"] == shapes["weight_ih_l0_reverse"] == (G * 6, 4)
    assert shapes["weight_ih_l1_reverse"] == (G * 6, 12)
    assert shapes["weight_hh_l1"] == (G * 6, 6)
    assert shapes["bias_hh_l1_reverse"] == (G * 6,)


@pytest.mark.parametrize("cell", CELLS)
def test_initialisation_is_torchs_uniform_and_follows_the_seed(cell):
    a = CELLS[cell](D, 16, 2, seed=7)
    b = CELLS[cell](D, 16, 2, seed=7)
    c = CELLS[cell](D, 16, 2, seed=8)
    wide = CELLS[cell](D, 16, 2, seed=7, dtype=np.float64)
    for name, p in a.params.items():
        assert p.dtype == np.float32
        assert np.all(np.abs(p) <= 1 / 4), name  # 1 / sqrt(H) with H = 16
        assert_array_equal(p, b.params[name])
        assert not np.array_equal(p, c.params[name]), name
        assert_array_equal(p, wide.params[name].astype(np.float32))  # drawn in float64, rounded
    values = np.concatenate([p.ravel() for p in a.params.values()])
    # Uniform on (-1/4, 1/4): mean 0, standard deviation 1/4/sqrt(3) = 0.1443,
    # extremes near the bounds; values.size is in the thousands.
    assert abs(values.mean()) < 0.01 and abs(values.std() - 0.1443) < 0.005
    assert values.min() < -0.24 and values.max() > 0.24


@pytest.mark.parametrize("cell", CELLS)
def test_initialisation_statistics_equal_torchs(cell):
    """Per parameter: the same bound (both within ±1/sqrt(H), both reaching
    near it) and standard deviations that agree, ours against torch's own
    initialisation of the same module."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    theirs = {k: v.numpy() for k, v in module(D, 32, 2).state_dict().items()}
    ours = CELLS[cell](D, 32, 2, seed=0).params
    bound = 1 / np.sqrt(32)
    for name, p in ours.items():
        q = theirs[name]
        for values in (p, q):
            assert np.all(np.abs(values) <= bound), name
            assert np.abs(values).max() > 0.9 * bound, name
        # std of n uniform draws: relative spread about 1/sqrt(n); n >= 128 here.
        assert abs(p.std() - q.std()) < 0.3 * q.std(), name


@pytest.mark.parametrize("cell", CELLS)
def test_state_dict_round_trip_with_torch(cell):
    """torch -> ours -> torch gives torch's numbers back; ours -> another of
    ours (in place, another dtype) gives the same outputs."""
    torch = pytest.importorskip("torch")
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell]
    theirs = module(D, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    ours = make_layer(cell, seed=3)
    arrays = dict(ours.params)
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert all(ours.params[k] is arrays[k] for k in arrays)  # updated in place
    back = module(D, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    back.load_state_dict({k: torch.tensor(v) for k, v in ours.state_dict().items()})
    for name, v in theirs.state_dict().items():
        assert_array_equal(back.state_dict()[name].numpy(), v.numpy(), err_msg=name)

    narrow = make_layer(cell, dtype=np.float32, seed=4)
    narrow.load_state_dict(ours.state_dict())
    x = make_inputs(np.float64, False, 2, True)[0]
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
    x, h0, _, dy, dh_n, _ = make_inputs(np.float64, False, 2, True)
    layer.forward(x, h0, LENGTHS)
    layer.backward(dy, dh_n)
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
    x, h0, c0, dy, dh_n, dc_n = make_inputs(np.float64, False, 2, True)
    lengths = np.array([5, 0, 3])

    def loss():
        if cell == "lstm":
            y, (h_n, c_n) = layer.forward(x, (h0, c0), lengths)
            return np.sum(y * dy) + np.sum(h_n * dh_n) + np.sum(c_n * dc_n)
        y, h_n = layer.forward(x, h0, lengths)
        return np.sum(y * dy) + np.sum(h_n * dh_n)

    loss()
    if cell == "lstm":
        dx, (dh0, dc0) = layer.backward(dy, (dh_n, dc_n))
        np.testing.assert_allclose(dc0, numerical_gradient(loss, c0), rtol=1e-5, atol=1e-8)
    else:
        dx, dh0 = layer.backward(dy, dh_n)
    grads = dict(layer.grads)
    np.testing.assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(dh0, numerical_gradient(loss, h0), rtol=1e-5, atol=1e-8)
    for name in ("weight_ih_l0", "weight_hh_l1_reverse", "bias_ih_l1", "bias_hh_l0_reverse"):
        np.testing.assert_allclose(grads[name], numerical_gradient(loss, layer.params[name]),
                                   rtol=1e-5, atol=1e-8, err_msg=name)


@pytest.mark.parametrize("how", ["sgd_step", "load_state_dict", "assignment"])
@pytest.mark.parametrize("cell", CELLS)
def test_backward_uses_the_weights_forward_used(cell, how, change_in_place):
    """Parameters (biases too) changed in place between forward and backward
    leave the gradients those of the parameters the forward ran with: a
    fresh layer with the original ones gives bitwise the same."""
    arrays = make_inputs(np.float64, False, 2, True)
    fresh, changed = make_layer(cell), make_layer(cell)
    expected = run_layer(fresh, cell, *arrays, LENGTHS)

    def forward_then_change(layer, x, h0, c0, dy, dh_n, dc_n, lengths):
        layer.forward(x, (h0, c0) if cell == "lstm" else h0, lengths)
        new = change_in_place(layer.params, how)
        if new is not None:
            layer.load_state_dict(new)
        if cell == "lstm":
            dx, (dh0, dc0) = layer.backward(dy, (dh_n, dc_n))
            return dx, dh0, dc0
        return layer.backward(dy, dh_n)

    actual = forward_then_change(changed, *arrays, LENGTHS)
    assert all(np.any(changed.params[k] != fresh.params[k]) for k in fresh.params)
    for a, e in zip(actual, [v for v in expected[3:] if v is not None]):
        assert_array_equal(a, e)
    assert changed.grads.keys() == fresh.grads.keys()
    for name, g in changed.grads.items():
        assert_array_equal(g, fresh.grads[name], err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_inputs_are_not_modified_and_backward_reads_what_forward_saw(cell):
    """Nothing the caller passes is written; and the caller's x, states and
    lengths changed in place between forward and backward (a reused buffer)
    leave the gradients as they were."""
    layer = make_layer(cell)
    arrays = make_inputs(np.float64, False, 2, True)
    copies = [a.copy() for a in arrays]
    lengths = LENGTHS.copy()
    expected = run_layer(layer, cell, *arrays, lengths), dict(layer.grads)
    for a, c in zip(arrays, copies):
        assert_array_equal(a, c)
    assert_array_equal(lengths, LENGTHS)

    x, h0, c0, dy, dh_n, dc_n = arrays
    layer.forward(x, (h0, c0) if cell == "lstm" else h0, lengths)
    x[:], h0[:], c0[:], lengths[:] = 0, 0, 0, T
    got = layer.backward(dy, (dh_n, dc_n) if cell == "lstm" else dh_n)
    assert_array_equal(got[0], expected[0][3])
    assert_array_equal(np.asarray(got[1]), np.asarray(
        (expected[0][4], expected[0][5]) if cell == "lstm" else expected[0][4]))
    for name, g in layer.grads.items():
        assert_array_equal(g, expected[1][name], err_msg=name)


@pytest.mark.parametrize("cell", CELLS)
def test_changing_the_returned_arrays_changes_nothing(cell):
    """y and the final states go to the caller: changing them leaves the backward."""
    layer = make_layer(cell, num_layers=1, bidirectional=False)
    x, _, _, dy, _, _ = make_inputs(np.float64, False, 1, False)
    layer.forward(x)
    expected = layer.backward(dy)[0]
    y, state = layer.forward(x)
    y[:] = 7
    for s in (state if cell == "lstm" else (state,)):
        s[:] = 7
    assert_array_equal(layer.backward(dy)[0], expected)


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


@pytest.mark.parametrize("cell", LAYERS)
def test_bad_call_arguments(cell):
    """Every layer, the RNN too; the LSTM's pairs are test_lstm_bad_state_arguments'."""
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
    if cell != "lstm":
        with pytest.raises(ValueError, match=r"^h0: expected shape \(4, 3, 6\), got \(1, 3, 6\)"):
            layer.forward(x, np.zeros((1, B, H), np.float32))
    layer.forward(x)
    with pytest.raises(ValueError, match=r"^dy: expected shape \(5, 3, 12\), got \(5, 3, 6\)"):
        layer.backward(np.zeros((T, B, H), np.float32))
    with pytest.raises(TypeError, match=r"^dy: expected dtype float32.*got float64"):
        layer.backward(np.zeros((T, B, 2 * H)))
    if cell != "lstm":
        with pytest.raises(ValueError, match=r"^dh_n: expected shape \(4, 3, 6\)"):
            layer.backward(None, np.zeros((4, B), np.float32))
        with pytest.raises(TypeError, match=r"^dh_n: expected dtype float32.*got float64"):
            layer.backward(None, np.zeros((4, B, H)))


BAD_CONSTRUCTORS = [
    (dict(input_size=0), ValueError, "input_size"),
    (dict(hidden_size=2.5), TypeError, "hidden_size"),
    (dict(num_layers=0), ValueError, "num_layers"),
    (dict(bias="yes"), TypeError, "bias"),
    (dict(batch_first=None), TypeError, "batch_first"),
    (dict(bidirectional=2), TypeError, "bidirectional"),
    (dict(dtype=np.float16), TypeError, "dtype.*float16"),
]


@pytest.mark.parametrize("changes, error, match", BAD_CONSTRUCTORS,
                         ids=[str(c) for c, _, _ in BAD_CONSTRUCTORS])
@pytest.mark.parametrize("cell", CELLS)
def test_bad_constructor_arguments(cell, changes, error, match):
    with pytest.raises(error, match=f"^{match}"):
        CELLS[cell](**dict(dict(input_size=D, hidden_size=H), **changes))


@pytest.mark.parametrize("cell", CELLS)
def test_no_nonlinearity_for_the_gated_cells(cell):
    """torch.nn.LSTM and GRU have none: an argument that would be ignored is refused."""
    with pytest.raises(TypeError, match="nonlinearity"):
        CELLS[cell](D, H, nonlinearity="relu")


@pytest.mark.parametrize("cell", LAYERS)
def test_gradients_are_distinct_arrays(cell):
    """No two gradients share memory (bias_ih and bias_hh are equal for the
    RNN and in most rows for the others): an in-place update of one, such as
    clipping, must not reach another twice."""
    layer = make_layer(cell)
    x, _, _, dy, _, _ = make_inputs(np.float64, False, 2, True)
    layer.forward(x)
    layer.backward(dy)
    grads = list(layer.grads.values())
    assert len(grads) == len(layer.params)
    for i, a in enumerate(grads):
        for b in grads[i + 1:]:
            assert not np.shares_memory(a, b)
