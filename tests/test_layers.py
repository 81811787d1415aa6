"""fusedrnn.RNN against a composition of the reference functions (forward and
every gradient) over stacking, directions, lengths, layout and dtype; its
parameters, initialisation and state dict; bad arguments (those of forward
and backward, the same for every layer, in test_layers_cells.py).

The composition below is written from torch.nn.RNN's documented semantics,
independently of layers.py: layer k > 0 reads the previous layer's output,
the directions concatenated forward | reverse; the reverse direction is the
same recurrence run from each sequence's end; b = bias_ih + bias_hh.
"""

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fusedrnn
from fusedrnn import reference

pytestmark = pytest.mark.usefixtures("isa")

T, B, D, H = 5, 3, 4, 6
LENGTHS = np.array([5, 0, 3])
ARCHITECTURES = {"1layer": (1, False), "2layers": (2, False), "bidirectional": (1, True),
                 "3layers_bidirectional": (3, True)}
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


def suffixes(bidirectional):
    return ["", "_reverse"] if bidirectional else [""]


def reference_forward(params, x, h0, lengths, num_layers, bidirectional, batch_first,
                      nonlinearity="tanh"):
    """(y, h_n, every call's (input, h0, y)) from reference.rnn_forward, in float64."""
    dirs = len(suffixes(bidirectional))
    options = dict(nonlinearity=nonlinearity, lengths=lengths, batch_first=batch_first)
    calls, h_n, layer_input = [], [], x
    for k in range(num_layers):
        ys = []
        for d, sfx in enumerate(suffixes(bidirectional)):
            p = {name: params[f"{name}_l{k}{sfx}"] for name in
                 ("weight_ih", "weight_hh", "bias_ih", "bias_hh") if f"{name}_l{k}{sfx}" in params}
            bias = p["bias_ih"] + p["bias_hh"] if "bias_ih" in p else None
            h0_i = None if h0 is None else h0[k * dirs + d]
            y, h = reference.rnn_forward(layer_input, h0_i, p["weight_ih"], p["weight_hh"],
                                         bias, reverse=d == 1, **options)
            calls.append((layer_input, h0_i, y))
            ys.append(y)
            h_n.append(h)
        layer_input = np.concatenate(ys, axis=2)
    return layer_input, np.stack(h_n), calls


def reference_backward(params, calls, dy, dh_n, lengths, num_layers, bidirectional,
                       batch_first, nonlinearity="tanh"):
    """(dx, dh0, grads) from reference.rnn_backward for reference_forward's calls."""
    dirs = len(suffixes(bidirectional))
    options = dict(nonlinearity=nonlinearity, lengths=lengths, batch_first=batch_first)
    grads, dh0 = {}, [None] * (num_layers * dirs)
    d_output = dy
    for k in reversed(range(num_layers)):
        d_input = 0
        for d, sfx in enumerate(suffixes(bidirectional)):
            i = k * dirs + d
            layer_input, h0_i, y = calls[i]
            g = reference.rnn_backward(layer_input, h0_i, params[f"weight_ih_l{k}{sfx}"],
                                       params[f"weight_hh_l{k}{sfx}"], y,
                                       d_output[:, :, d * H:(d + 1) * H],
                                       None if dh_n is None else dh_n[i], reverse=d == 1,
                                       **options)
            d_input = d_input + g.dx
            dh0[i] = g.dh0
            grads[f"weight_ih_l{k}{sfx}"] = g.dw_ih
            grads[f"weight_hh_l{k}{sfx}"] = g.dw_hh
            grads[f"bias_ih_l{k}{sfx}"] = grads[f"bias_hh_l{k}{sfx}"] = g.dbias
        d_output = d_input
    return d_output, np.stack(dh0), grads


def make_inputs(dtype, batch_first, num_layers, bidirectional, seed=1):
    rng = np.random.default_rng(seed)
    dirs = 2 if bidirectional else 1
    seq = (B, T) if batch_first else (T, B)
    return (rng.normal(size=(*seq, D)).astype(dtype),
            rng.normal(size=(num_layers * dirs, B, H)).astype(dtype),
            rng.normal(size=(*seq, dirs * H)).astype(dtype),
            rng.normal(size=(num_layers * dirs, B, H)).astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_forward_and_backward_match_the_reference_composition(architecture, lengths,
                                                              batch_first, dtype, assert_close):
    num_layers, bidirectional = ARCHITECTURES[architecture]
    rnn = fusedrnn.RNN(D, H, num_layers, batch_first=batch_first, bidirectional=bidirectional,
                       dtype=dtype, seed=0)
    x, h0, dy, dh_n = make_inputs(dtype, batch_first, num_layers, bidirectional)

    y, h_n = rnn.forward(x, h0, lengths)
    dx, dh0 = rnn.backward(dy, dh_n)

    y_ref, h_n_ref, calls = reference_forward(rnn.params, x, h0, lengths, num_layers,
                                              bidirectional, batch_first)
    dx_ref, dh0_ref, grads_ref = reference_backward(rnn.params, calls, dy, dh_n, lengths,
                                                    num_layers, bidirectional, batch_first)
    assert_close(y, y_ref, dtype, "y")
    assert_close(h_n, h_n_ref, dtype, "h_n")
    assert_close(dx, dx_ref, dtype, "dx")
    assert_close(dh0, dh0_ref, dtype, "dh0")
    assert list(rnn.grads) == list(rnn.params)
    for name, g in rnn.grads.items():
        assert_close(g, grads_ref[name], dtype, name)


@pytest.mark.parametrize("nonlinearity", ["relu", "sigmoid"])
def test_other_nonlinearities_without_bias_and_defaults(nonlinearity, assert_close):
    """No bias, h0 / dh_n left out (zeros), the other activations."""
    rnn = fusedrnn.RNN(D, H, 2, nonlinearity=nonlinearity, bias=False, bidirectional=True,
                       dtype=np.float64, seed=3)
    assert not any(name.startswith("bias") for name in rnn.params)
    x, _, dy, _ = make_inputs(np.float64, False, 2, True)
    y, h_n = rnn.forward(x)
    dx, dh0 = rnn.backward(dy)
    y_ref, h_n_ref, calls = reference_forward(rnn.params, x, None, None, 2, True, False,
                                              nonlinearity)
    dx_ref, dh0_ref, grads_ref = reference_backward(rnn.params, calls, dy, None, None, 2, True,
                                                    False, nonlinearity)
    for name, actual, expected in [("y", y, y_ref), ("h_n", h_n, h_n_ref), ("dx", dx, dx_ref),
                                   ("dh0", dh0, dh0_ref),
                                   *((n, g, grads_ref[n]) for n, g in rnn.grads.items())]:
        assert_close(actual, expected, np.float64, name)


def test_bias_gradients_are_separate_arrays():
    """bias_ih and bias_hh share a value but not memory, so that an in-place
    update of one (clipping) does not hit the other."""
    rnn = fusedrnn.RNN(D, H, dtype=np.float64, seed=0)
    x, _, dy, _ = make_inputs(np.float64, False, 1, False)
    rnn.forward(x)
    rnn.backward(dy)
    assert_array_equal(rnn.grads["bias_ih_l0"], rnn.grads["bias_hh_l0"])
    assert not np.shares_memory(rnn.grads["bias_ih_l0"], rnn.grads["bias_hh_l0"])


def test_state_dict_keys_and_shapes_are_torchs():
    """torch.nn.RNN(4, 6, num_layers=2, bidirectional=True).state_dict(),
    written out by hand from torch's documentation."""
    rnn = fusedrnn.RNN(4, 6, num_layers=2, bidirectional=True)
    expected = [
        ("weight_ih_l0", (6, 4)), ("weight_hh_l0", (6, 6)), ("bias_ih_l0", (6,)),
        ("bias_hh_l0", (6,)),
        ("weight_ih_l0_reverse", (6, 4)), ("weight_hh_l0_reverse", (6, 6)),
        ("bias_ih_l0_reverse", (6,)), ("bias_hh_l0_reverse", (6,)),
        ("weight_ih_l1", (6, 12)), ("weight_hh_l1", (6, 6)), ("bias_ih_l1", (6,)),
        ("bias_hh_l1", (6,)),
        ("weight_ih_l1_reverse", (6, 12)), ("weight_hh_l1_reverse", (6, 6)),
        ("bias_ih_l1_reverse", (6,)), ("bias_hh_l1_reverse", (6,)),
    ]
    assert [(k, v.shape) for k, v in rnn.state_dict().items()] == expected


def test_initialisation_is_torchs_uniform_and_follows_the_seed():
    a = fusedrnn.RNN(D, 16, 2, seed=7)
    b = fusedrnn.RNN(D, 16, 2, seed=7)
    c = fusedrnn.RNN(D, 16, 2, seed=8)
    wide = fusedrnn.RNN(D, 16, 2, seed=7, dtype=np.float64)
    for name, p in a.params.items():
        assert p.dtype == np.float32
        assert np.all(np.abs(p) <= 1 / 4), name  # 1 / sqrt(H) with H = 16
        assert_array_equal(p, b.params[name])
        assert not np.array_equal(p, c.params[name]), name
        assert_array_equal(p, wide.params[name].astype(np.float32))
    values = np.concatenate([p.ravel() for p in a.params.values()])
    # Uniform on (-1/4, 1/4): mean 0, standard deviation 1/4/sqrt(3) = 0.144.
    assert abs(values.mean()) < 0.02 and abs(values.std() - 0.1443) < 0.01


def test_load_state_dict_round_trip_in_place():
    src = fusedrnn.RNN(D, H, 2, bidirectional=True, dtype=np.float64, seed=1)
    dst = fusedrnn.RNN(D, H, 2, bidirectional=True, dtype=np.float32, seed=2)
    arrays = dict(dst.params)
    dst.load_state_dict(src.state_dict())
    for name, p in dst.params.items():
        assert p is arrays[name]  # same arrays: optimisers built on params keep working
        assert_array_equal(p, src.params[name].astype(np.float32))
    x = make_inputs(np.float64, False, 2, True)[0]
    np.testing.assert_allclose(dst.forward(x.astype(np.float32))[0], src.forward(x)[0],
                               rtol=0, atol=1e-5)


def test_state_dict_is_a_copy():
    rnn = fusedrnn.RNN(D, H, seed=0)
    d = rnn.state_dict()
    d["weight_hh_l0"][:] = 0
    assert np.any(rnn.params["weight_hh_l0"] != 0)


def test_inputs_are_not_modified():
    rnn = fusedrnn.RNN(D, H, 2, bidirectional=True, dtype=np.float64, seed=0)
    arrays = make_inputs(np.float64, False, 2, True)
    copies = [a.copy() for a in arrays]
    x, h0, dy, dh_n = arrays
    rnn.forward(x, h0, LENGTHS)
    rnn.backward(dy, dh_n)
    for a, c in zip(arrays, copies):
        assert_array_equal(a, c)


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
def test_torch_state_dict_gives_torchs_outputs_and_gradients(batch_first):
    """torch.nn.RNN itself as the oracle, on a PackedSequence (whose lengths
    must be >= 1), with h0 and dh_n: h0 / h_n / dh0 indexed layer * dirs + direction."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(0)
    net = torch.nn.RNN(D, H, num_layers=2, bidirectional=True, batch_first=batch_first,
                       dtype=torch.float64)
    rnn = fusedrnn.RNN(D, H, 2, bidirectional=True, batch_first=batch_first, dtype=np.float64)
    rnn.load_state_dict({k: v.numpy() for k, v in net.state_dict().items()})
    x, h0, dy, dh_n = make_inputs(np.float64, batch_first, 2, True)
    x_t, h0_t = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    lengths = np.array([5, 1, 3])
    packed = pack_padded_sequence(x_t, torch.tensor(lengths), batch_first=batch_first,
                                  enforce_sorted=False)
    y_packed, h_n_t = net(packed, h0_t)
    y_t, _ = pad_packed_sequence(y_packed, batch_first=batch_first, total_length=T)
    ((y_t * torch.tensor(dy)).sum() + (h_n_t * torch.tensor(dh_n)).sum()).backward()
    y, h_n = rnn.forward(x, h0, lengths)
    dx, dh0 = rnn.backward(dy, dh_n)
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y, y_t.detach().numpy(), **tol)
    np.testing.assert_allclose(h_n, h_n_t.detach().numpy(), **tol)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), **tol)
    np.testing.assert_allclose(dh0, h0_t.grad.numpy(), **tol)
    for name, p in net.named_parameters():
        np.testing.assert_allclose(rnn.grads[name], p.grad.numpy(), **tol, err_msg=name)


def test_backward_reads_what_forward_saw():
    """The caller's x, h0 and lengths changed in place between forward and
    backward (a reused buffer) leave the gradients as they were."""
    rnn = fusedrnn.RNN(D, H, 2, bidirectional=True, dtype=np.float64, seed=0)
    x, h0, dy, dh_n = make_inputs(np.float64, False, 2, True)
    lengths = LENGTHS.copy()
    rnn.forward(x, h0, lengths)
    expected = rnn.backward(dy, dh_n), dict(rnn.grads)
    rnn.forward(x, h0, lengths)
    x[:], h0[:], lengths[:] = 0, 0, T
    actual = rnn.backward(dy, dh_n), rnn.grads
    for a, e in zip([*actual[0], *actual[1].values()], [*expected[0], *expected[1].values()]):
        assert_array_equal(a, e)


@pytest.mark.parametrize("how", ["sgd_step", "load_state_dict", "assignment"])
def test_backward_uses_the_weights_forward_used(how, change_in_place):
    """Parameters changed in place between forward and backward (an
    optimiser step, load_state_dict) leave the gradients those of the
    weights the forward ran with: a fresh model with the original weights
    gives bitwise the same dx, dh0 and grads."""
    def model():
        return fusedrnn.RNN(D, H, 2, bidirectional=True, dtype=np.float64, seed=0)

    x, h0, dy, dh_n = make_inputs(np.float64, False, 2, True)
    fresh, changed = model(), model()
    fresh.forward(x, h0, LENGTHS)
    expected = fresh.backward(dy, dh_n)
    changed.forward(x, h0, LENGTHS)
    new = change_in_place(changed.params, how)
    if new is not None:
        changed.load_state_dict(new)
    assert all(np.any(changed.params[k] != fresh.params[k]) for k in fresh.params)
    actual = changed.backward(dy, dh_n)
    assert_array_equal(actual[0], expected[0], err_msg="dx")
    assert_array_equal(actual[1], expected[1], err_msg="dh0")
    assert changed.grads.keys() == fresh.grads.keys()
    for name, g in changed.grads.items():
        assert_array_equal(g, fresh.grads[name], err_msg=name)


BAD_CONSTRUCTORS = [
    (dict(input_size=0), ValueError, "input_size"),
    (dict(input_size=2.5), TypeError, "input_size"),
    (dict(hidden_size=-1), ValueError, "hidden_size"),
    (dict(num_layers=0), ValueError, "num_layers"),
    (dict(num_layers=True), TypeError, "num_layers"),
    (dict(nonlinearity="gelu"), ValueError, "nonlinearity.*'tanh'.*'gelu'"),
    (dict(bias="yes"), TypeError, "bias"),
    (dict(batch_first=None), TypeError, "batch_first"),
    (dict(bidirectional=2), TypeError, "bidirectional"),
    (dict(dtype=np.float16), TypeError, "dtype.*float16"),
    (dict(dtype=np.int32), TypeError, "dtype.*int32"),
    (dict(dtype="nonsense"), TypeError, "dtype"),
]


@pytest.mark.parametrize("changes, error, match", BAD_CONSTRUCTORS,
                         ids=[str(c) for c, _, _ in BAD_CONSTRUCTORS])
def test_bad_constructor_arguments(changes, error, match):
    with pytest.raises(error, match=f"^{match}"):
        fusedrnn.RNN(**dict(dict(input_size=D, hidden_size=H), **changes))


@pytest.mark.parametrize("bad, error, match", [
    (dict(weight_hh_l0=None), ValueError, r"state_dict: missing keys \['weight_hh_l0'\]"),
    (dict(extra=np.zeros(1)), ValueError, r"state_dict: .*unexpected keys \['extra'\]"),
    (dict(weight_hh_l0=np.zeros((H, H + 1))), ValueError, r"weight_hh_l0: expected shape"),
    (dict(bias_ih_l0=np.array(["a"] * H)), TypeError, r"bias_ih_l0: expected a real-valued"),
], ids=["missing", "unexpected", "shape", "dtype"])
def test_bad_state_dicts_change_nothing(bad, error, match):
    rnn = fusedrnn.RNN(D, H, seed=0)
    before = rnn.state_dict()
    d = {k: np.ones_like(v) for k, v in before.items()}
    d.update(bad)
    d = {k: v for k, v in d.items() if v is not None}
    with pytest.raises(error, match=f"^{match}"):
        rnn.load_state_dict(d)
    for name, p in rnn.params.items():
        assert_array_equal(p, before[name])
