"""fusedrnn.torch.LSTM and GRU (and RNN where the three share a path) against
torch.nn.LSTM and GRU with the same weights: outputs, final states and every
gradient; PackedSequence, unbatched input, proj_size; the registered
operators under gradcheck, opcheck, torch.compile and torch.jit.trace; bad
input."""

import subprocess
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

import fusedrnn.torch as ftorch  # noqa: E402

T, B, D, H = 5, 3, 4, 6
MODULES = ["RNN", "LSTM", "GRU"]

TOLERANCE = {torch.float32: dict(rtol=1e-4, atol=1e-5),
             torch.float64: dict(rtol=1e-10, atol=1e-12)}


def twins(cell, dtype=torch.float64, **options):
    """A torch.nn module and its fusedrnn.torch drop-in with the same weights."""
    reference = getattr(torch.nn, cell)(D, H, dtype=dtype, **options)
    fused = getattr(ftorch, cell)(D, H, dtype=dtype, **options)
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def states_of(hidden):
    return list(hidden) if isinstance(hidden, tuple) else [hidden]


def run(module, x, hx):
    """(output, final states, gradients) of a loss that reaches every result:
    sum(output * g) + sum over the final states of sum(state * g')."""
    x = x.detach().clone().requires_grad_() if isinstance(x, torch.Tensor) else x
    if hx is not None:
        hx = tuple(h.detach().clone().requires_grad_() for h in states_of(hx))
        hx = hx if isinstance(module, torch.nn.LSTM) else hx[0]
    output, hidden = module(x, hx)
    out = output.data if isinstance(output, PackedSequence) else output
    g = torch.Generator().manual_seed(1)
    loss = (out * torch.randn(out.shape, dtype=out.dtype, generator=g)).sum()
    for h in states_of(hidden):
        loss = loss + (h * torch.randn(h.shape, dtype=h.dtype, generator=g)).sum()
    module.zero_grad()
    loss.backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    if isinstance(x, torch.Tensor):
        grads["input"] = x.grad
    else:
        grads["input"] = x.data.grad if x.data.grad is not None else None
    for i, h in enumerate(states_of(hx) if hx is not None else []):
        grads[f"hx[{i}]"] = h.grad
    return out, states_of(hidden), grads


def assert_same(reference, fused, x, hx=None):
    want_out, want_states, want_grads = run(reference, x, hx)
    out, states, grads = run(fused, x, hx)
    tolerance = TOLERANCE[out.dtype]
    torch.testing.assert_close(out, want_out, **tolerance, msg=lambda m: f"output: {m}")
    assert len(states) == len(want_states)
    for i, (s, w) in enumerate(zip(states, want_states)):
        torch.testing.assert_close(s, w, **tolerance, msg=lambda m: f"final state {i}: {m}")
    assert grads.keys() == want_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, want_grads[name], **tolerance,
                                   msg=lambda m: f"gradient of {name}: {m}")


def hidden(cell, layers, dtype=torch.float64, batch=B):
    g = torch.Generator().manual_seed(2)
    h = [torch.randn(layers, batch, H, dtype=dtype, generator=g)
         for _ in range(2 if cell == "LSTM" else 1)]
    return tuple(h) if cell == "LSTM" else h[0]


def data(shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


# --- the modules against torch's --------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_matches_torch(cell, dtype, bias, num_layers, bidirectional, batch_first):
    reference, fused = twins(cell, dtype, bias=bias, num_layers=num_layers,
                             bidirectional=bidirectional, batch_first=batch_first)
    x = data((B, T, D) if batch_first else (T, B, D), dtype)
    hx = hidden(cell, num_layers * (2 if bidirectional else 1), dtype)
    assert_same(reference, fused, x, hx)
    assert_same(reference, fused, x, None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lengths, enforce_sorted", [([5, 3, 3, 1], True),
                                                     ([2, 5, 1, 4], False),
                                                     ([1, 1, 1, 1], True)])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("cell", MODULES)
def test_packed_sequence_matches_torch(cell, dtype, lengths, enforce_sorted, bidirectional):
    reference, fused = twins(cell, dtype, num_layers=2, bidirectional=bidirectional)
    x = pack_padded_sequence(data((T, len(lengths), D), dtype), torch.tensor(lengths),
                             enforce_sorted=enforce_sorted)
    hx = hidden(cell, 2 * (2 if bidirectional else 1), dtype, batch=len(lengths))
    assert_same(reference, fused, x, hx)
    assert_same(reference, fused, x, None)
    output, _ = fused(x)
    assert isinstance(output, PackedSequence)
    assert torch.equal(output.batch_sizes, x.batch_sizes)


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_unbatched_input_matches_torch(cell, batch_first, with_hx):
    reference, fused = twins(cell, num_layers=2, batch_first=batch_first)
    hx = None
    if with_hx:
        hx = tuple(h[:, 0] for h in states_of(hidden(cell, 2)))
        hx = hx if cell == "LSTM" else hx[0]
    assert_same(reference, fused, data((T, D)), hx)


@pytest.mark.parametrize("cell", MODULES)
def test_drop_ins_are_torch_modules_with_torch_state(cell):
    torch.manual_seed(3)
    reference = getattr(torch.nn, cell)(D, H, num_layers=2, bidirectional=True)
    torch.manual_seed(3)
    fused = getattr(ftorch, cell)(D, H, num_layers=2, bidirectional=True)
    assert isinstance(fused, getattr(torch.nn, cell))
    assert list(fused.state_dict()) == list(reference.state_dict())
    for name, p in reference.state_dict().items():
        assert torch.equal(fused.state_dict()[name], p), name   # torch's initialisation
    reference.load_state_dict(fused.state_dict())


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_no_grad_inference_matches_torch(cell):
    reference, fused = twins(cell, torch.float32, num_layers=2)
    x = data((T, B, D), torch.float32)
    with torch.no_grad():
        want, got = reference(x), fused(x)
    torch.testing.assert_close(got[0], want[0], **TOLERANCE[torch.float32])
    assert not got[0].requires_grad


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_dropout_in_training_mode_drops_between_layers(cell):
    """dropout=1 zeroes the second layer's input: its output is then that of
    a one-layer module with the second layer's weights run on zeros."""
    fused = getattr(ftorch, cell)(D, H, num_layers=2, dropout=1.0, dtype=torch.float64)
    single = getattr(ftorch, cell)(H, H, dtype=torch.float64)
    single.load_state_dict({k.replace("l1", "l0"): v for k, v in fused.state_dict().items()
                            if "l1" in k})
    x = data((T, B, D))
    with torch.no_grad():
        output, _ = fused(x)
        want, _ = single(torch.zeros(T, B, H, dtype=torch.float64))
        assert torch.equal(output, want)
        fused.eval()   # no dropout: the first layer's output reaches the second
        assert not torch.equal(fused(x)[0], want)


def test_lstm_with_projection_runs_torch_and_warns_once():
    reference, fused = twins("LSTM", proj_size=3)
    x = data((T, B, D))
    with pytest.warns(UserWarning, match="proj_size=3 is computed by torch.nn.LSTM"):
        output, _ = fused(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused(x)   # once per module
    assert torch.equal(output, reference(x)[0])


# --- the operators -----------------------------------------------------------

def layer_args(cell, dtype=torch.float64, lengths=None, seed=0, grad=True):
    """Arguments of the one-layer function of `cell` ("RNN", "LSTM", "GRU")."""
    G = {"RNN": 1, "LSTM": 4, "GRU": 3}[cell]
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape):
        return torch.randn(*shape, dtype=dtype, generator=g).requires_grad_(grad)

    states = [leaf(B, H) for _ in range(2 if cell == "LSTM" else 1)]
    return [leaf(T, B, D), *states, leaf(G * H, D), leaf(G * H, H), leaf(G * H), leaf(G * H)]


LAYERS = {"RNN": ftorch.rnn_layer, "LSTM": ftorch.lstm_layer, "GRU": ftorch.gru_layer}
OPS = {"RNN": torch.ops.fusedrnn.rnn_layer, "LSTM": torch.ops.fusedrnn.lstm_layer,
       "GRU": torch.ops.fusedrnn.gru_layer}
BACKWARD_OPS = {"RNN": torch.ops.fusedrnn.rnn_layer_backward,
                "LSTM": torch.ops.fusedrnn.lstm_layer_backward,
                "GRU": torch.ops.fusedrnn.gru_layer_backward}


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths", [None, [5, 0, 2]])
@pytest.mark.parametrize("cell", MODULES)
def test_gradcheck(cell, reverse, batch_first, lengths):
    args = layer_args(cell)
    if batch_first:
        args[0] = args[0].detach().transpose(0, 1).contiguous().requires_grad_()
    options = dict(lengths=lengths, reverse=reverse, batch_first=batch_first)
    assert torch.autograd.gradcheck(lambda *a: LAYERS[cell](*a, **options), args)


def op_args(cell, training, lengths):
    """The operator's arguments: (x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths,
    nonlinearity, reverse, batch_first, training)."""
    x, h0, *rest = layer_args(cell, grad=training)
    c0 = rest.pop(0) if cell == "LSTM" else None
    return (x, h0, c0, *rest, None if lengths is None else torch.tensor(lengths), "tanh",
            False, False, training)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("lengths", [None, [5, 0, 2]])
@pytest.mark.parametrize("cell", MODULES)
def test_opcheck_forward(cell, training, lengths):
    torch.library.opcheck(OPS[cell], op_args(cell, training, lengths))


@pytest.mark.parametrize("lengths", [None, [5, 0, 2]])
@pytest.mark.parametrize("cell", MODULES)
def test_opcheck_backward(cell, lengths):
    args = op_args(cell, True, lengths)
    with torch.no_grad():
        y, h_n, c_n, reserve = OPS[cell](*args)
    dy, dh_n = torch.randn_like(y), torch.randn_like(h_n)
    dc_n = torch.randn_like(c_n) if cell == "LSTM" else None
    torch.library.opcheck(BACKWARD_OPS[cell], (*[a.detach() if isinstance(a, torch.Tensor) else a
                                                 for a in args[:8]], y, reserve, dy, dh_n,
                                               dc_n, "tanh", False, False))


def loss_of(cell):
    """A function of the layer's tensors through the one-layer function,
    with torch ops around it, reaching every result."""
    def loss(x, *rest):
        results = LAYERS[cell](x.tanh(), *rest, lengths=torch.tensor([5, 0, 2]))
        return sum((r * (i + 1)).sin().sum() for i, r in enumerate(results))
    return loss


@pytest.mark.parametrize("cell", MODULES)
def test_compiled_ops_equal_eager_with_default_settings(cell):
    torch._dynamo.reset()
    args = layer_args(cell)
    loss = loss_of(cell)
    compiled = torch.compile(loss, fullgraph=True)
    want, got = loss(*args), compiled(*args)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    want_grads = torch.autograd.grad(want, args)
    got_grads = torch.autograd.grad(got, args)
    for w, g in zip(want_grads, got_grads):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


class Model(torch.nn.Module):
    """A drop-in inside a model: the recurrent layers, then a linear head."""

    def __init__(self, cell):
        super().__init__()
        self.rnn = getattr(ftorch, cell)(D, H, num_layers=2, bidirectional=True,
                                         dtype=torch.float64)
        self.head = torch.nn.Linear(2 * H, 1, dtype=torch.float64)

    def forward(self, x):
        output, hidden = self.rnn(x)
        return self.head(output).sum() + sum(h.sum() for h in states_of(hidden))


@pytest.mark.parametrize("cell", MODULES)
def test_compiled_module_is_one_graph_equal_to_eager_with_allow_rnn(cell):
    """torch refuses to trace nn.RNN/LSTM/GRU instances (the drop-ins are
    subclasses) unless allow_rnn: with it, one graph, equal to eager."""
    torch._dynamo.reset()
    model, x = Model(cell), data((T, B, D))
    with torch._dynamo.config.patch(allow_rnn=True):
        explanation = torch._dynamo.explain(model)(x)
        assert (explanation.graph_count, explanation.graph_break_count) == (1, 0)
        compiled = torch.compile(model, fullgraph=True)
        got = compiled(x)
        got_grads = torch.autograd.grad(got, list(model.parameters()))
    want = model(x)
    want_grads = torch.autograd.grad(want, list(model.parameters()))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for w, g in zip(want_grads, got_grads):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("grad", [False, True])
@pytest.mark.parametrize("cell", MODULES)
def test_traced_module_computes_on_its_input(cell, grad):
    """torch.jit.trace records the operator: the traced module gives eager's
    result on an input other than the example (before the operators, a
    trace under no_grad recorded the example's outputs as constants)."""
    model = getattr(ftorch, cell)(D, H, num_layers=2, dtype=torch.float64)
    example, other = data((T, B, D), seed=0), data((T, B, D), seed=1)
    with torch.set_grad_enabled(grad):
        traced = torch.jit.trace(model, example, check_trace=False)
        got, want = traced(other), model(other)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    for g, w in zip(states_of(got[1]), states_of(want[1])):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    assert "fusedrnn::" in str(traced.inlined_graph)


def test_traced_under_no_grad_then_trained_fails_loudly():
    """A gated cell's trace under no_grad records an inference call, which
    keeps no reserve: a backward through it is refused, never computed on
    nothing."""
    model = ftorch.LSTM(D, H, dtype=torch.float64)
    with torch.no_grad():
        traced = torch.jit.trace(model, data((T, B, D)), check_trace=False)
    output, _ = traced(data((T, B, D)).requires_grad_())
    with pytest.raises(RuntimeError, match="needs the reserve of a training forward"):
        output.sum().backward()


def test_importing_changes_no_torch_setting():
    code = ("import torch, torch._dynamo\n"
            "before = dict(torch._dynamo.config.get_config_copy())\n"
            "threads = torch.get_num_threads()\n"
            "import fusedrnn.torch\n"
            "assert dict(torch._dynamo.config.get_config_copy()) == before\n"
            "assert torch.get_num_threads() == threads\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- bad input -----------------------------------------------------------------

def bad_inputs(cell):
    """(what, input, hx) that torch's module of `cell` rejects."""
    x = data((T, B, D), torch.float32)
    h = hidden(cell, 1, torch.float32)
    wrong = (torch.randn(1, B + 1, H), torch.randn(1, B, H)) if cell == "LSTM" else \
        torch.randn(1, B + 1, H)
    cases = [("wrong input size", data((T, B, D + 1), torch.float32), None),
             ("1-D input", torch.randn(D), None),
             ("4-D input", torch.randn(1, T, B, D), None),
             ("hidden of the wrong shape", x, wrong),
             ("2-D hidden for batched input",
              x, tuple(s[0] for s in states_of(h)) if cell == "LSTM" else h[0])]
    if cell == "LSTM":
        cases.append(("a tensor for (h0, c0)", x, h[0]))
        cases.append(("c0 of the wrong shape", x, (h[0], torch.randn(1, B, H + 1))))
    return cases


@pytest.mark.parametrize("cell, what, x, hx",
                         [(c, *case) for c in ["LSTM", "GRU"] for case in bad_inputs(c)],
                         ids=[f"{c}-{case[0]}" for c in ["LSTM", "GRU"] for case in bad_inputs(c)])
def test_bad_input_raises_what_torch_raises(cell, what, x, hx):
    reference, fused = twins(cell, torch.float32)
    with pytest.raises(Exception) as want:
        reference(x, hx)
    with pytest.raises(type(want.value)) as got:
        fused(x, hx)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.complex64])
@pytest.mark.parametrize("cell", MODULES)
def test_unsupported_dtype_is_a_runtime_error(cell, dtype):
    fused = getattr(ftorch, cell)(D, H, dtype=dtype)
    with pytest.raises(RuntimeError, match="supports torch.float32 and torch.float64 only"):
        fused(torch.randn(T, B, D).to(dtype))
    args = [a.detach().to(dtype) for a in layer_args(cell)]
    with pytest.raises(RuntimeError, match="supports torch.float32 and torch.float64 only"):
        LAYERS[cell](*args)


@pytest.mark.parametrize("cell", MODULES)
def test_tensors_off_the_cpu_are_a_runtime_error(cell):
    """No GPU here: the meta device stands for any device but the CPU."""
    fused = getattr(ftorch, cell)(D, H, device="meta")
    with pytest.raises(RuntimeError, match="is on device meta, but fusedrnn runs on the CPU"):
        fused(torch.randn(T, B, D, device="meta"))
    args = [a.detach().to("meta") for a in layer_args(cell)]
    with pytest.raises(RuntimeError, match="x is on device meta, but fusedrnn runs on the CPU"):
        LAYERS[cell](*args)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_operator_rejects_bad_shapes_and_mixed_dtypes(cell):
    args = layer_args(cell, torch.float32, grad=False)
    w_hh = args[-3]
    wrong = list(args)
    wrong[-3] = torch.randn(w_hh.shape[0] + 1, H)
    with pytest.raises(RuntimeError, match=r"w_hh has shape \(\d+, 6\), expected \(\d+, 6\)"):
        LAYERS[cell](*wrong)
    wrong = list(args)
    wrong[1] = args[1].double()
    with pytest.raises(RuntimeError, match="h0 has dtype torch.float64, expected torch.float32"):
        LAYERS[cell](*wrong)
    with pytest.raises(RuntimeError, match="lengths must hold integers"):
        LAYERS[cell](*args, lengths=[1.5, 2, 3])


def test_weight_of_the_wrong_shape_is_named():
    fused = ftorch.LSTM(D, H)
    fused.weight_hh_l0 = torch.nn.Parameter(torch.randn(4 * H + 1, H))
    with pytest.raises(RuntimeError, match=r"weight_hh_l0 has shape \(25, 6\), expected \(24, 6\)"):
        fused(torch.randn(T, B, D))
