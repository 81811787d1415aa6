"""fusedrnn.ElmanRNN: the seeds' worked example, every gradient against
central finite differences for each output activation with its loss, the
loss values against hand-computed ones (including where a naive formula
overflows), padding, dtypes and bad arguments."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

import fusedrnn

pytestmark = pytest.mark.usefixtures("isa")

LN3 = np.log(3.0)


def seeds_network(dtype):
    """The seeds' scalar network: W_xh = 0.5, W_hh = 0.3, b_h = 0.1, W_hy = 0.4, b_y = 0.2."""
    net = fusedrnn.ElmanRNN(1, 1, 1, output_activation="identity", dtype=dtype)
    net.load_state_dict(dict(weight_ih_l0=[[0.5]], weight_hh_l0=[[0.3]], bias_ih_l0=[0.1],
                             bias_hh_l0=[0.0], weight_hy=[[0.4]], bias_hy=[0.2]))
    return net


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_seeds_worked_example(dtype):
    """X = [1, 2, 3], h_0 = 0. The seed gives y = 0.415, 0.540, 0.581 from
    rounded states (tanh(1.261) = 0.8514, not 0.850), so within 1.5e-3 of
    those and within 1e-5 of the values worked out by hand to 5 decimals
    (as in test_seeds.py)."""
    y, h_n = seeds_network(dtype).forward(np.array([1, 2, 3], dtype).reshape(3, 1, 1))
    assert y.shape == (3, 1, 1) and y.dtype == dtype
    assert_allclose(y.ravel(), [0.415, 0.540, 0.581], rtol=0, atol=1.5e-3)
    assert_allclose(y.ravel(), [0.41482, 0.54055, 0.58090], rtol=0, atol=1e-5)
    assert_allclose(h_n.ravel(), [0.95225], rtol=0, atol=1e-5)


# Targets in the form each loss takes, for outputs of shape `shape` = seq + (O,).
def targets(activation, shape, rng, ignore_index=-100):
    if activation == "softmax":
        t = rng.integers(0, shape[-1], size=shape[:-1])
        t.flat[1] = ignore_index  # one position padded out by the ignore index
        return t
    if activation == "sigmoid":
        return rng.uniform(0, 1, size=shape)
    return rng.normal(size=shape)


CONFIGS = {
    "1layer": dict(),
    "2layers_bidirectional_lengths_batch_first": dict(num_layers=2, bidirectional=True,
                                                      batch_first=True, lengths=[3, 1]),
}


GATED = ["lstm", "gru"]


# Every output activation with the RNN; the gated cells with two of them (the
# output layer and the losses are the same code whatever the cell).
ACTIVATION_CELLS = [*((a, "rnn") for a in ["identity", "tanh", "sigmoid", "softmax"]),
                    ("softmax", "lstm"), ("sigmoid", "gru")]


@pytest.mark.parametrize("loss_kind", ["paired_loss", "given_dy"])
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("activation, cell", ACTIVATION_CELLS,
                         ids=[f"{a}-{c}" for a, c in ACTIVATION_CELLS])
def test_gradients_match_finite_differences(activation, cell, config, loss_kind,
                                            numerical_gradient, initial_state):
    """float64, tiny sizes. paired_loss: the loss that goes with the output
    activation, backward() from it. given_dy: L = sum(R * y) for a fixed
    random R, backward(dy=R), the path for a loss of one's own. Every
    parameter, dx and the initial state's gradient (both halves of the LSTM's)."""
    options = dict(CONFIGS[config])
    lengths = options.pop("lengths", None)
    T, B, D, H, O = 3, 2, 2, 3, 3
    net = fusedrnn.ElmanRNN(D, H, O, output_activation=activation, dtype=np.float64, seed=4,
                            cell=cell, **options)
    dirs = 2 if net.rnn.bidirectional else 1
    rng = np.random.default_rng(5)
    seq = (B, T) if net.batch_first else (T, B)
    x = rng.normal(size=(*seq, D))
    h0 = initial_state(cell, (net.rnn.num_layers * dirs, B, H), rng)
    weights = rng.normal(size=(*seq, O))
    target = targets(activation, (*seq, O), rng)

    def loss():
        y, _ = net.forward(x, h0, lengths)
        return net.loss(target) if loss_kind == "paired_loss" else np.sum(weights * y)

    loss()
    dx, dh0 = net.backward(None if loss_kind == "paired_loss" else weights)
    assert list(net.grads) == list(net.params)
    for name, p in net.params.items():
        assert_allclose(net.grads[name], numerical_gradient(loss, p), rtol=1e-5, atol=1e-8,
                        err_msg=name)
    assert_allclose(dx, numerical_gradient(loss, x), rtol=1e-5, atol=1e-8, err_msg="dx")
    for got, state in zip(dh0 if cell == "lstm" else [dh0], h0 if cell == "lstm" else [h0]):
        assert_allclose(got, numerical_gradient(loss, state), rtol=1e-5, atol=1e-8,
                        err_msg="dh0")


def constant_output_network(activation, b_y, dtype=np.float64, **options):
    """A network whose pre-activation z is b_y at every step: W_hy = 0."""
    net = fusedrnn.ElmanRNN(2, 3, len(b_y), output_activation=activation, dtype=dtype, seed=0,
                            **options)
    net.params["weight_hy"][:] = 0
    net.params["bias_hy"][:] = b_y
    return net


def test_cross_entropy_values_ignore_index_and_lengths():
    """z = (0, ln 3) at every position: softmax (1/4, 3/4), so a target of 1
    costs -ln(3/4) and a target of 0 costs ln 4. T = 3, B = 2, lengths (3, 2):
    position (2, 1) is padding, and one target is the ignore index."""
    net = constant_output_network("softmax", [0.0, LN3], ignore_index=-1)
    net.forward(np.ones((3, 2, 2)), lengths=[3, 2])
    target = np.array([[1, 0], [-1, 1], [0, 1]])  # [T, B]; (2, 1) is past the length
    # Counted: (0,0)=1, (0,1)=0, (1,1)=1, (2,0)=0
    expected = (2 * -np.log(0.75) + 2 * np.log(4)) / 4
    assert net.loss(target) == pytest.approx(expected, rel=1e-12)
    net.backward()
    # dL/db_y = sum over counted positions of (softmax - onehot) / 4
    assert_allclose(net.grads["bias_hy"], [(4 * 0.25 - 2) / 4, (4 * 0.75 - 2) / 4], atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_for_huge_logits(dtype):
    """z = (1000, 0): exp(1000) overflows even float64, the loss must not."""
    net = constant_output_network("softmax", [1000.0, 0.0], dtype)
    net.forward(np.ones((1, 2, 2), dtype))
    assert net.loss(np.array([[1, 0]])) == pytest.approx(500.0, rel=1e-6)  # (1000 + 0) / 2
    net.backward()
    assert net.grads["bias_hy"].dtype == dtype
    assert_allclose(net.grads["bias_hy"], [0.5, -0.5], atol=1e-6)


def test_binary_cross_entropy_values_and_stability():
    """z = ln 3: sigmoid 3/4; targets 1, 0, 1/2 cost -ln(3/4), ln 4 and their
    mean. z = -1000: sigmoid underflows to 0, yet target 1 costs exactly 1000."""
    net = constant_output_network("sigmoid", [LN3])
    net.forward(np.ones((3, 1, 2)))
    expected = (-np.log(0.75) + np.log(4) + 0.5 * (-np.log(0.75) + np.log(4))) / 3
    assert net.loss(np.array([1.0, 0.0, 0.5]).reshape(3, 1, 1)) == pytest.approx(expected)
    net = constant_output_network("sigmoid", [-1000.0])
    net.forward(np.ones((1, 1, 2)))
    assert net.loss(np.ones((1, 1, 1))) == pytest.approx(1000.0, rel=1e-12)


@pytest.mark.parametrize("activation, y", [("identity", 0.5), ("tanh", np.tanh(0.5))])
def test_mean_squared_error_values_with_lengths(activation, y):
    net = constant_output_network(activation, [0.5, 0.5])
    net.forward(np.ones((2, 2, 2)), lengths=[2, 1])
    target = np.array([[[1, 0], [2, 0]], [[0, 0], [99, 99]]])  # (1, 1) is padding
    expected = ((1 - y) ** 2 + y ** 2 + (2 - y) ** 2 + y ** 2 + 2 * y ** 2) / 6
    assert net.loss(target) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtypes_carry_through(dtype):
    net = fusedrnn.ElmanRNN(2, 3, 4, output_activation="softmax", dtype=dtype, seed=0)
    y, h_n = net.forward(np.ones((3, 2, 2), dtype))
    assert y.dtype == dtype and h_n.dtype == dtype
    assert_allclose(y.sum(axis=-1), 1, rtol=1e-6)
    net.loss(np.zeros((3, 2), np.int64))
    dx, dh0 = net.backward()
    assert dx.dtype == dtype and dh0.dtype == dtype
    assert all(g.dtype == dtype for g in net.grads.values())
    for name, p in net.rnn.params.items():
        assert net.params[name] is p  # one set of arrays: optimisers update the RNN


def test_seeds_notation_names_and_no_bias():
    net = fusedrnn.ElmanRNN(2, 3, 4, bias=False)
    assert list(net.params) == ["weight_ih_l0", "weight_hh_l0", "weight_hy"]
    net = fusedrnn.ElmanRNN(2, 3, 4, bidirectional=True)
    assert net.params["weight_hy"].shape == (4, 6)


def test_bad_arguments():
    with pytest.raises(ValueError, match="^output_activation: expected one of 'identity'.*'relu'"):
        fusedrnn.ElmanRNN(2, 3, 4, output_activation="relu")
    with pytest.raises(ValueError, match="^output_size: expected a positive integer, got 0"):
        fusedrnn.ElmanRNN(2, 3, 0)
    with pytest.raises(TypeError, match="^ignore_index: expected an integer"):
        fusedrnn.ElmanRNN(2, 3, 4, ignore_index=0.5)
    with pytest.raises(ValueError, match="^nonlinearity"):
        fusedrnn.ElmanRNN(2, 3, 4, nonlinearity="softmax")

    net = fusedrnn.ElmanRNN(2, 3, 4, output_activation="softmax")
    with pytest.raises(RuntimeError, match="^loss: call forward first"):
        net.loss(np.zeros((3, 2), int))
    with pytest.raises(RuntimeError, match="^backward: call forward first"):
        net.backward()
    net.forward(np.ones((3, 2, 2), np.float32))
    with pytest.raises(RuntimeError, match=r"^backward: without dy, call loss\(target\) first"):
        net.backward()
    with pytest.raises(TypeError, match="^target: expected integer class indices, got dtype float64"):
        net.loss(np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"^target: expected shape \(3, 2\), got \(3, 2, 4\)"):
        net.loss(np.zeros((3, 2, 4), int))
    with pytest.raises(ValueError, match=r"^target: expected class indices in \[0, 4\).*from 0 to 4"):
        net.loss(np.array([[0, 1], [2, 3], [4, 0]]))
    with pytest.raises(ValueError, match=r"^target: .*from -2 to 3"):
        net.loss(np.array([[0, 1], [2, 3], [-2, 0]]))
    with pytest.raises(ValueError, match=r"^dy: expected shape \(3, 2, 4\)"):
        net.backward(np.zeros((3, 2, 3), np.float32))

    net = fusedrnn.ElmanRNN(2, 3, 1, output_activation="sigmoid")
    net.forward(np.ones((3, 2, 2), np.float32))
    with pytest.raises(ValueError, match=r"^target: expected values in \[0, 1\].*to 1.5"):
        net.loss(np.full((3, 2, 1), 1.5))
    with pytest.raises(TypeError, match="^target: expected a real-valued array, got dtype <U1"):
        net.loss(np.full((3, 2, 1), "a"))
    with pytest.raises(ValueError, match=r"^target: expected shape \(3, 2, 1\), got \(3, 2\)"):
        net.loss(np.zeros((3, 2)))


@pytest.mark.parametrize("activation", ["identity", "sigmoid"])
def test_padding_targets_are_neither_checked_nor_counted(activation):
    """Past a sequence's length a target may be anything, NaN or out of
    [0, 1] for sigmoid: the loss and the gradients are those of any other
    padding value."""
    net = constant_output_network(activation, [0.5])
    net.forward(np.ones((2, 2, 2)), lengths=[2, 1])
    target = np.full((2, 2, 1), 0.25)
    expected = net.loss(target)
    net.backward()
    expected_grads = dict(net.grads)
    target[1, 1] = np.nan if activation == "identity" else 7.0
    assert net.loss(target) == expected
    net.backward()
    for name, g in net.grads.items():
        assert_allclose(g, expected_grads[name], rtol=0, atol=0, err_msg=name)


@pytest.mark.parametrize("loss_kind", ["paired_loss", "given_dy"])
def test_changing_the_returned_y_changes_nothing(loss_kind):
    net = fusedrnn.ElmanRNN(2, 3, 4, output_activation="softmax", dtype=np.float64, seed=0)
    target, dy = np.zeros((3, 2), np.int64), np.arange(24.0).reshape(3, 2, 4)

    def loss_and_gradients(change_y):
        y, _ = net.forward(np.arange(12.0).reshape(3, 2, 2))
        y[:] = 0.25 if change_y else y
        loss = net.loss(target)
        net.backward(None if loss_kind == "paired_loss" else dy)
        return loss, dict(net.grads)

    expected_loss, expected_grads = loss_and_gradients(change_y=False)
    loss, grads = loss_and_gradients(change_y=True)
    assert loss == expected_loss
    for name, g in grads.items():
        assert_allclose(g, expected_grads[name], rtol=0, atol=0, err_msg=name)


@pytest.mark.parametrize("changed", ["output_layer", "weight_hy", "bias_hy", "all"])
@pytest.mark.parametrize("loss_kind", ["paired_loss", "given_dy"])
def test_backward_uses_the_weights_forward_used(changed, loss_kind):
    """Parameters changed in place after forward (an optimiser step,
    load_state_dict), whether the output layer's (weight_hy, bias_hy) or the
    RNN's, leave the loss and the gradients those of the weights forward ran
    with: a fresh network with the original weights gives bitwise the same."""
    def network():
        return fusedrnn.ElmanRNN(3, 4, 5, num_layers=2, output_activation="softmax",
                                 bidirectional=True, dtype=np.float64, seed=0)

    rng = np.random.default_rng(0)
    x, dy = rng.normal(size=(6, 2, 3)), rng.normal(size=(6, 2, 5))
    target, lengths = rng.integers(0, 5, size=(6, 2)), np.array([6, 4])
    names = {"output_layer": ["weight_hy", "bias_hy"], "weight_hy": ["weight_hy"],
             "bias_hy": ["bias_hy"], "all": None}[changed]

    def loss_and_gradients(net, change):
        net.forward(x, lengths=lengths)
        if change:  # before the loss: it too is of the last forward
            net.load_state_dict({k: p + 0.5 if names is None or k in names else p
                                 for k, p in net.params.items()})
        loss = net.loss(target) if loss_kind == "paired_loss" else None
        dx, dh0 = net.backward(None if loss_kind == "paired_loss" else dy)
        return loss, dx, dh0, dict(net.grads)

    fresh, moved = network(), network()
    expected = loss_and_gradients(fresh, change=False)
    actual = loss_and_gradients(moved, change=True)
    assert any(np.any(moved.params[k] != fresh.params[k]) for k in fresh.params)
    assert actual[0] == expected[0]
    assert_allclose(actual[1], expected[1], rtol=0, atol=0, err_msg="dx")
    assert_allclose(actual[2], expected[2], rtol=0, atol=0, err_msg="dh0")
    assert actual[3].keys() == expected[3].keys()
    for name, g in actual[3].items():
        assert_allclose(g, expected[3][name], rtol=0, atol=0, err_msg=name)


@pytest.mark.parametrize("cell", ["rnn", *GATED])
def test_cell_parameters_are_the_layers(cell):
    """The recurrent part's parameters are the layer's, keys, order and (for a
    seed) values, the same arrays; the output layer's follow."""
    layer = {"rnn": fusedrnn.RNN, "lstm": fusedrnn.LSTM, "gru": fusedrnn.GRU}[cell]
    net = fusedrnn.ElmanRNN(3, 4, 5, num_layers=2, bidirectional=True, seed=2, cell=cell)
    alone = layer(3, 4, 2, bidirectional=True, seed=2)
    assert isinstance(net.rnn, layer) and net.cell == cell
    assert list(net.params) == [*alone.params, "weight_hy", "bias_hy"]
    for name, p in alone.params.items():
        assert_allclose(net.params[name], p, rtol=0, atol=0, err_msg=name)
        assert net.params[name] is net.rnn.params[name]
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    assert net.params["weight_hh_l1_reverse"].shape == (gates * 4, 4)
    assert net.params["weight_hy"].shape == (5, 8)


@pytest.mark.parametrize("cell", ["rnn", *GATED])
def test_each_cell_trains(cell):
    """Next value of a noisy sine, Adam on whole sequences: the loss falls
    to a twentieth of where it started within 60 steps (each cell gets to
    about a sixtieth)."""
    rng = np.random.default_rng(0)
    t = np.arange(41) / 3 + rng.uniform(0, 6, size=(8, 1))
    series = (np.sin(t) + 0.05 * rng.normal(size=t.shape)).T[:, :, None]  # [T + 1, B, 1]
    x, target = series[:-1].astype(np.float32), series[1:].astype(np.float32)
    net = fusedrnn.ElmanRNN(1, 16, 1, cell=cell, seed=0)
    optimizer = fusedrnn.Adam(net.params, lr=2e-2)
    losses = []
    for _ in range(60):
        net.forward(x)
        losses.append(net.loss(target))
        net.backward()
        optimizer.step(net.grads)
    assert losses[-1] < losses[0] / 20, losses[::10]


def test_cell_bad_arguments():
    with pytest.raises(ValueError, match="^cell: expected one of 'rnn', 'lstm', 'gru', got 'tcn'"):
        fusedrnn.ElmanRNN(2, 3, 4, cell="tcn")
    with pytest.raises(ValueError, match="^cell: expected one of .*, got None"):
        fusedrnn.ElmanRNN(2, 3, 4, cell=None)
    with pytest.raises(ValueError, match="^cell: .*got 'LSTM'"):
        fusedrnn.ElmanRNN(2, 3, 4, cell="LSTM")
    for cell in GATED:
        with pytest.raises(ValueError, match=f"^nonlinearity: applies to cell='rnn' only.*"
                                             f"cell='{cell}'.*'relu'"):
            fusedrnn.ElmanRNN(2, 3, 4, nonlinearity="relu", cell=cell)
    fusedrnn.ElmanRNN(2, 3, 4, nonlinearity="tanh", cell="lstm")  # the default: allowed

    net = fusedrnn.ElmanRNN(2, 3, 4, cell="lstm")
    x = np.ones((3, 2, 2), np.float32)
    with pytest.raises(TypeError, match=r"^hx: expected a pair \(h0, c0\)"):
        net.forward(x, np.zeros((1, 2, 3), np.float32))
    _, (h_n, c_n) = net.forward(x)
    assert h_n.shape == c_n.shape == (1, 2, 3)
    with pytest.raises(TypeError, match=r"^dhx: expected a pair \(dh_n, dc_n\)"):
        net.backward(np.zeros((3, 2, 4), np.float32), h_n)
