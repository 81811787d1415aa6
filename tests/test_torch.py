"""fusedrnn.torch for every cell: the drop-ins RNN, LSTM and GRU against
torch.nn's modules with the same weights (outputs, final states and every
gradient over the modules' options, PackedSequence, unbatched input,
dropout, LSTM's proj_size); the one-layer functions and the registered
operators under gradcheck, opcheck, torch.compile and torch.jit.trace;
zero-copy and misaligned tensors; torch's exceptions for bad input.

Then the NumPy API's kernel against torch.nn's modules directly, on every
ISA: tests/test_reference.py holds the reference to torch, this holds the
kernel to it too, so that a reading of PyTorch's equations shared by the
reference and the kernel cannot hide.
"""

import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence  # noqa: E402

import fusedrnn  # noqa: E402
import fusedrnn.torch as ftorch  # noqa: E402
from fusedrnn._tolerances import TOLERANCE  # noqa: E402
from helpers import CELLS, DTYPES, GATED, flag, mixed_lengths, random_problem, run, \
    torch_results, variants  # noqa: E402

T, B, D, H = 5, 3, 4, 6

# The drop-ins against torch's modules, torch.testing's rtol and atol: each
# side rounds on its own (its own GEMMs, tanh), both within rounding of the
# exact result on these small problems.
CLOSE = {torch.float32: dict(rtol=1e-4, atol=1e-5),
         torch.float64: dict(rtol=1e-10, atol=1e-12)}

MODULES = [CELLS[cell].layer for cell in CELLS]  # "RNN", "LSTM", "GRU"
GATED_MODULES = [CELLS[cell].layer for cell in GATED]
CELL_OF = {CELLS[cell].layer: cell for cell in CELLS}
LAYERS = {"RNN": ftorch.rnn_layer, "LSTM": ftorch.lstm_layer, "GRU": ftorch.gru_layer}

# Each module with its options: torch.nn.RNN's nonlinearities (tanh and
# relu), the others as they come.
MODULE_VARIANTS = [pytest.param(CELLS[v.values[0]].layer, v.values[1], id=v.id)
                   for v in variants() if v.values[1].get("nonlinearity") != "sigmoid"]


def spec(module):
    """The cell of a module's name (helpers.CELLS)."""
    return CELLS[CELL_OF[module]]


def twins(module, dtype=torch.float64, **options):
    """A torch.nn module and its fusedrnn.torch drop-in with the same weights."""
    reference = getattr(torch.nn, module)(D, H, dtype=dtype, **options)
    fused = getattr(ftorch, module)(D, H, dtype=dtype, **options)
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def states_of(hidden):
    return list(hidden) if isinstance(hidden, tuple) else [hidden]


def hidden(module, layers, dtype=torch.float64, batch=B, seed=2):
    """Random initial states of `module`: h, or the LSTM's (h, c)."""
    g = torch.Generator().manual_seed(seed)
    h = [torch.randn(layers, batch, H, dtype=dtype, generator=g)
         for _ in spec(module).states]
    return tuple(h) if len(h) > 1 else h[0]


def data(shape, dtype=torch.float64, seed=0):
    return torch.randn(*shape, dtype=dtype, generator=torch.Generator().manual_seed(seed))


def run_module(module, x, hx):
    """(output, final states, gradients) of a loss that reaches every result:
    sum(output * g) + sum over the final states of sum(state * g')."""
    x = x.detach().clone().requires_grad_() if isinstance(x, torch.Tensor) else x
    if hx is not None:
        hx = tuple(h.detach().clone().requires_grad_() for h in states_of(hx))
        hx = hx if len(hx) > 1 else hx[0]
    output, hidden_n = module(x, hx)
    out = output.data if isinstance(output, PackedSequence) else output
    g = torch.Generator().manual_seed(1)
    loss = (out * torch.randn(out.shape, dtype=out.dtype, generator=g)).sum()
    for h in states_of(hidden_n):
        loss = loss + (h * torch.randn(h.shape, dtype=h.dtype, generator=g)).sum()
    module.zero_grad()
    loss.backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    grads["input"] = x.grad
    for i, h in enumerate(states_of(hx) if hx is not None else []):
        grads[f"hx[{i}]"] = h.grad
    return out, states_of(hidden_n), grads


def assert_same(reference, fused, x, hx=None):
    want_out, want_states, want_grads = run_module(reference, x, hx)
    out, states, grads = run_module(fused, x, hx)
    tolerance = CLOSE[out.dtype]
    torch.testing.assert_close(out, want_out, **tolerance, msg=lambda m: f"output: {m}")
    assert len(states) == len(want_states)
    for i, (s, w) in enumerate(zip(states, want_states)):
        torch.testing.assert_close(s, w, **tolerance, msg=lambda m: f"final state {i}: {m}")
    assert grads.keys() == want_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, want_grads[name], **tolerance,
                                   msg=lambda m: f"gradient of {name}: {m}")


# --- the modules against torch's --------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("module, options", MODULE_VARIANTS)
def test_matches_torch(module, options, dtype, bias, num_layers, bidirectional, batch_first):
    """With initial states given, and without."""
    reference, fused = twins(module, dtype, bias=bias, num_layers=num_layers,
                             bidirectional=bidirectional, batch_first=batch_first, **options)
    x = data((B, T, D) if batch_first else (T, B, D), dtype)
    hx = hidden(module, num_layers * (2 if bidirectional else 1), dtype)
    assert_same(reference, fused, x, hx)
    assert_same(reference, fused, x, None)


class PackedInput(torch.nn.Module):
    """`module` on a PackedSequence with `packed`'s layout and the data given,
    so that run_module() takes the gradient with respect to the data."""

    def __init__(self, module, packed):
        super().__init__()
        self.module, self.packed = module, packed

    def forward(self, data, hx):
        output, hidden_n = self.module(self.packed._replace(data=data), hx)
        return output.data, hidden_n


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lengths, enforce_sorted", [([5, 3, 3, 1], True),
                                                     ([2, 5, 1, 4], False),
                                                     ([5, 3, 3, 1], False),
                                                     ([1, 1, 1, 1], True)])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("module", MODULES)
def test_packed_sequence_matches_torch(module, dtype, lengths, enforce_sorted, bidirectional,
                                       batch_first):
    """Outputs, final states and every gradient, the packed data's too, with
    initial states given and without; the output a PackedSequence of the
    input's layout."""
    reference, fused = twins(module, dtype, num_layers=2, bidirectional=bidirectional,
                             batch_first=batch_first)
    padded = data(((len(lengths), T) if batch_first else (T, len(lengths))) + (D,), dtype)
    packed = pack_padded_sequence(padded, torch.tensor(lengths), batch_first=batch_first,
                                  enforce_sorted=enforce_sorted)
    hx = hidden(module, 2 * (2 if bidirectional else 1), dtype, batch=len(lengths))
    for given in (hx, None):
        assert_same(PackedInput(reference, packed), PackedInput(fused, packed), packed.data,
                    given)
    output, _ = fused(packed)
    want, _ = reference(packed)
    assert isinstance(output, PackedSequence)
    for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
        got, expected = getattr(output, field), getattr(want, field)
        # None both: a sorted batch has no permutation.
        assert got is expected is None or torch.equal(got, expected), field


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("module", MODULES)
def test_unbatched_input_matches_torch(module, with_hx, batch_first, bidirectional):
    dirs = 2 if bidirectional else 1
    reference, fused = twins(module, num_layers=2, batch_first=batch_first,
                             bidirectional=bidirectional)
    hx = None
    if with_hx:
        hx = tuple(h[:, 0] for h in states_of(hidden(module, 2 * dirs)))
        hx = hx if len(hx) > 1 else hx[0]
    x = data((T, D))
    assert_same(reference, fused, x, hx)
    output, hidden_n = fused(x, hx)
    assert output.shape == (T, dirs * H)
    assert [h.shape for h in states_of(hidden_n)] == [(2 * dirs, H)] * len(states_of(hidden_n))


@pytest.mark.parametrize("module", MODULES)
def test_drop_ins_are_torch_modules_with_torch_state(module):
    """A subclass of torch's module, initialised as torch initialises it
    (the same draws), whose state dict loads into torch's and back."""
    torch.manual_seed(3)
    reference = getattr(torch.nn, module)(D, H, num_layers=2, bidirectional=True)
    torch.manual_seed(3)
    fused = getattr(ftorch, module)(D, H, num_layers=2, bidirectional=True)
    assert isinstance(fused, getattr(torch.nn, module))
    assert list(fused.state_dict()) == list(reference.state_dict())
    for name, p in reference.state_dict().items():
        assert torch.equal(fused.state_dict()[name], p), name
    other = getattr(torch.nn, module)(D, H, num_layers=2, bidirectional=True)
    other.load_state_dict(fused.state_dict())
    fused.load_state_dict(other.state_dict())
    assert all(torch.equal(p, q) for p, q in zip(fused.parameters(), other.parameters()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("module", MODULES)
def test_no_grad_inference_matches_torch(module, dtype):
    reference, fused = twins(module, dtype, num_layers=2)
    x = data((T, B, D), dtype)
    with torch.no_grad():
        got, want = fused(x), reference(x)
    torch.testing.assert_close(got[0], want[0], **CLOSE[dtype])
    for g, w in zip(states_of(got[1]), states_of(want[1])):
        torch.testing.assert_close(g, w, **CLOSE[dtype])
    assert not any(t.requires_grad for t in [got[0], *states_of(got[1])])


@pytest.mark.parametrize("module", MODULES)
def test_non_contiguous_input_and_hx_match_torch(module):
    reference, fused = twins(module, num_layers=2)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, 2 * D, dtype=torch.float64, generator=g)
    hx = [torch.randn(B, 2, H, dtype=torch.float64, generator=g)
          for _ in spec(module).states]
    views = [x.transpose(0, 1)[..., ::2], *(h.transpose(0, 1) for h in hx)]
    assert not any(v.is_contiguous() for v in views)
    assert_same(reference, fused, views[0], tuple(views[1:]) if len(hx) > 1 else views[1])


@pytest.mark.parametrize("module", MODULES)
def test_bias_gradients_accumulate_each_in_its_own_memory(module):
    """Two backward passes leave twice the gradient in each bias, as in torch
    (the rnn's kernel computes one bias gradient for both: memory shared
    between the two .grad would take three times in one)."""
    reference, fused = twins(module)
    x = data((T, B, D))
    for m in (reference, fused):
        for _ in range(2):
            m(x)[0].sum().backward()
    assert fused.bias_ih_l0.grad.data_ptr() != fused.bias_hh_l0.grad.data_ptr()
    for name in ("bias_ih_l0", "bias_hh_l0"):
        torch.testing.assert_close(getattr(fused, name).grad, getattr(reference, name).grad)


class Doubled(torch.nn.Module):
    def forward(self, w):
        return 2 * w


@pytest.mark.parametrize("module", MODULES)
def test_parametrised_weight_matches_torch(module):
    """The kernel gets the parametrised weight, and the gradient reaches the
    parameter underneath."""
    reference, fused = twins(module, num_layers=2)
    for m in (reference, fused):
        torch.nn.utils.parametrize.register_parametrization(m, "weight_hh_l1", Doubled())
    assert_same(reference, fused, data((T, B, D)), None)


def address(a):
    """The data address of an array or of the address the kernel was given."""
    return a.__array_interface__["data"][0] if hasattr(a, "__array_interface__") else a


@pytest.mark.parametrize("module", MODULES)
def test_module_passes_tensor_memory_to_the_kernel(monkeypatch, module):
    """The modules' path straight to the kernel copies no contiguous tensor
    either: the kernel reads x and the initial states where they are, the
    weights from the module's pack alone, and writes the output in place
    (h_n is stacked from the layers' final states)."""
    seen = []
    forward = fusedrnn._kernel.forward

    def spy(problem, inputs, outputs):   # inputs: x, h0, c0, w_ih, w_hh, b_ih, b_hh, ..., packed
        seen.append([address(a) for a in inputs[:7]] + [address(outputs[0])])
        assert address(inputs.packed) is not None
        return forward(problem, inputs, outputs)

    monkeypatch.setattr(fusedrnn._kernel, "forward", spy)
    fused = getattr(ftorch, module)(D, H, bias=False)
    x, hx = torch.randn(T, B, D), hidden(module, 1, torch.float32)
    with torch.no_grad():
        output, _ = fused(x, hx)
    states = [h.data_ptr() for h in states_of(hx)]
    assert seen == [[x.data_ptr(), *states, *[None] * (2 - len(states)), None, None, None, None,
                     output.data_ptr()]]


# --- dropout between layers -----------------------------------------------

@pytest.mark.parametrize("module", MODULES)
def test_dropout_off_in_eval_mode(module):
    reference, fused = twins(module, num_layers=3, dropout=0.5)
    reference.eval()
    fused.eval()
    x = data((T, B, D))
    torch.testing.assert_close(fused(x)[0], reference(x)[0])


@pytest.mark.parametrize("module", MODULES)
def test_dropout_of_one_zeroes_every_layer_input_after_the_first(module):
    """With p = 1 torch's dropout is deterministic: the same as torch's, and
    the second layer's output that of a one-layer module with its weights
    run on zeros (with dropout off, it is not)."""
    reference, fused = twins(module, num_layers=2, dropout=1.0)
    assert_same(reference, fused, data((T, B, D)), None)
    single = getattr(ftorch, module)(H, H, dtype=torch.float64)
    single.load_state_dict({k.replace("l1", "l0"): v for k, v in fused.state_dict().items()
                            if "l1" in k})
    x = data((T, B, D))
    with torch.no_grad():
        output, _ = fused(x)
        want, _ = single(torch.zeros(T, B, H, dtype=torch.float64))
        assert torch.equal(output, want)
        fused.eval()   # no dropout: the first layer's output reaches the second
        assert not torch.equal(fused(x)[0], want)


@pytest.mark.parametrize("module", MODULES)
def test_dropout_in_training_mode_drops_and_scales(module):
    """Layer 2's input is layer 1's output with elements zeroed at rate p and
    the rest scaled by 1/(1-p): a one-layer function fed that input
    reproduces the second layer."""
    states = [None] * len(spec(module).states)
    torch.manual_seed(0)
    fused = getattr(ftorch, module)(D, H, num_layers=2, dropout=0.5, dtype=torch.float64)
    x = data((T, B, D))
    torch.manual_seed(1)
    output, _ = fused(x)

    def layer(k, layer_input):
        return LAYERS[module](layer_input, *states, *(getattr(fused, f"{name}_l{k}") for name in
                                                     ("weight_ih", "weight_hh", "bias_ih",
                                                      "bias_hh")))[0]
    torch.manual_seed(1)
    dropped = torch.nn.functional.dropout(layer(0, x), 0.5, training=True)
    assert 0 < (dropped == 0).sum() < dropped.numel()
    torch.testing.assert_close(output, layer(1, dropped))


def test_lstm_with_projection_runs_torch_and_warns_once():
    reference, fused = twins("LSTM", proj_size=3)
    x = data((T, B, D))
    with pytest.warns(UserWarning, match="proj_size=3 is computed by torch.nn.LSTM"):
        output, _ = fused(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fused(x)   # once per module
    assert torch.equal(output, reference(x)[0])


# --- the one-layer functions and the operators -------------------------------

def layer_args(module, dtype=torch.float64, seed=0, grad=True):
    """Random arguments of the one-layer function of `module`: x, the
    initial states, w_ih, w_hh, b_ih, b_hh."""
    G = spec(module).gates
    g = torch.Generator().manual_seed(seed)

    def leaf(*shape):
        return torch.randn(*shape, dtype=dtype, generator=g).requires_grad_(grad)

    states = [leaf(B, H) for _ in spec(module).states]
    return [leaf(T, B, D), *states, leaf(G * H, D), leaf(G * H, H), leaf(G * H), leaf(G * H)]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths", [None, [5, 0, 2]])
@pytest.mark.parametrize("cell, options", variants())
def test_gradcheck(cell, options, reverse, batch_first, lengths):
    args = layer_args(CELLS[cell].layer)
    if batch_first:
        args[0] = args[0].detach().transpose(0, 1).contiguous().requires_grad_()
    options = dict(options, lengths=lengths, reverse=reverse, batch_first=batch_first)
    assert torch.autograd.gradcheck(lambda *a: LAYERS[CELLS[cell].layer](*a, **options), args)


@pytest.mark.parametrize("module", MODULES)
def test_gradcheck_without_initial_states_and_biases(module):
    x, *states, w_ih, w_hh, _, _ = layer_args(module)
    none = [None] * len(states)
    assert torch.autograd.gradcheck(lambda x, w_ih, w_hh: LAYERS[module](x, *none, w_ih, w_hh),
                                    (x, w_ih, w_hh))


@pytest.mark.parametrize("module", MODULES)
def test_gradients_of_non_contiguous_inputs(module):
    """Transposed and strided views give the gradients of their contiguous copies."""
    g = torch.Generator().manual_seed(0)
    G = spec(module).gates

    def leaf(*shape):
        return torch.randn(*shape, dtype=torch.float64, generator=g).requires_grad_()

    # (leaf, the view of it passed): x strided in time-major order, the
    # states and weights transposed, the biases every other element.
    pairs = [(leaf(B, T, 2 * D), lambda a: a.transpose(0, 1)[..., ::2]),
             *((leaf(H, B), torch.t) for _ in spec(module).states),
             (leaf(D, G * H), torch.t), (leaf(H, G * H), torch.t),
             (leaf(2 * G * H), lambda a: a[::2]), (leaf(2 * G * H), lambda a: a[::2])]
    views = [view(base) for base, view in pairs]
    assert not any(v.is_contiguous() for v in views)
    copies = [v.detach().contiguous().requires_grad_() for v in views]
    for args in (views, copies):
        sum((r ** 2).sum() for r in LAYERS[module](*args)).backward()
    for (base, view), copy in zip(pairs, copies):
        want = torch.zeros_like(base)
        view(want).copy_(copy.grad)
        torch.testing.assert_close(base.grad, want)


def misaligned(t):
    """A copy of t in memory one byte past an aligned address: contiguous,
    and not aligned to its dtype (torch.frombuffer takes a byte offset)."""
    buf = bytearray(t.numel() * t.element_size() + 1)
    m = torch.frombuffer(buf, dtype=t.dtype, count=t.numel(), offset=1).view(t.shape)
    m.copy_(t)
    assert m.is_contiguous() and m.data_ptr() % t.element_size() != 0
    return m


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("module", MODULES)
def test_misaligned_tensors_reach_the_kernel_as_aligned_copies(isa, kernel_sees_aligned_arrays,
                                                                module, dtype):
    """Misaligned input, initial states and weights give the module (its path
    straight to the kernel) and the one-layer function (through the NumPy
    API) bitwise the outputs and gradients of aligned ones, and are left
    unchanged; the kernel only ever sees aligned arrays."""
    x, hx = data((T, B, D), dtype), hidden(module, 2, dtype)
    weights = getattr(ftorch, module)(D, H, num_layers=2, dtype=dtype).state_dict()

    def loss(results):
        return sum((r ** 2).sum() for r in results)

    def module_results(move):
        fused = getattr(ftorch, module)(D, H, num_layers=2, dtype=dtype)
        for name, w in weights.items():
            setattr(fused, name, torch.nn.Parameter(move(w)))
        states = [move(h).requires_grad_() for h in states_of(hx)]
        x_ = move(x).requires_grad_()
        output, hidden_n = fused(x_, tuple(states) if len(states) > 1 else states[0])
        loss([output, *states_of(hidden_n)]).backward()
        inputs = [(x_, x), *zip(states, states_of(hx))] + \
            [(getattr(fused, k), w) for k, w in weights.items()]
        return [output, *states_of(hidden_n)] + [a.grad for a, _ in inputs], inputs

    def layer_results(move):
        originals = (x, *(h[0] for h in states_of(hx)),
                     *(weights[f"{name}_l0"] for name in ("weight_ih", "weight_hh", "bias_ih",
                                                          "bias_hh")))
        args = [move(a).requires_grad_() for a in originals]
        results = LAYERS[module](*args)
        loss(results).backward()
        return list(results) + [a.grad for a in args], list(zip(args, originals))

    for results in (module_results, layer_results):
        expected, _ = results(torch.clone)
        actual, inputs = results(misaligned)
        assert not any(a.data_ptr() % a.element_size() == 0 for a, _ in inputs)
        for a, e in zip(actual, expected):
            assert torch.equal(a, e)
        for a, original in inputs:
            assert torch.equal(a.detach(), original)
    assert "forward" in kernel_sees_aligned_arrays and "backward" in kernel_sees_aligned_arrays


def test_zero_copy(monkeypatch):
    """Contiguous tensors reach the kernel as their own memory, and y, h_n and
    the gradients are the memory the kernel wrote (rnn_layer: the one bias
    gradient the kernel writes, b_hh's a copy of it)."""
    seen = {}

    def spy(name):
        run_kernel = getattr(fusedrnn._kernel, name)

        def wrapper(problem, *buffers):
            seen[name] = [[address(a) for a in group] for group in buffers]
            return run_kernel(problem, *buffers)
        monkeypatch.setattr(fusedrnn._kernel, name, wrapper)

    spy("forward")
    spy("backward")
    args = layer_args("RNN", torch.float32)
    x, h0, w_ih, w_hh, b_ih, b_hh = args
    y, h_n = ftorch.rnn_layer(*args)
    dy = torch.randn(y.shape)
    y.backward(dy)
    ptr = [a.data_ptr() for a in args]
    # Inputs: x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths, resets, packed
    assert seen["forward"] == [[ptr[0], ptr[1], None, *ptr[2:], None, None, None],
                               [y.data_ptr(), h_n.data_ptr(), None, None]]
    assert seen["backward"][:2] == [[ptr[0], ptr[1], None, *ptr[2:], None, None, None],
                                    [y.data_ptr(), None, dy.data_ptr(), None, None]]
    # The kernel writes both bias gradients, each into memory of its own.
    assert seen["backward"][2] == [x.grad.data_ptr(), h0.grad.data_ptr(), None,
                                   w_ih.grad.data_ptr(), w_hh.grad.data_ptr(),
                                   b_ih.grad.data_ptr(), b_hh.grad.data_ptr()]
    assert torch.equal(b_ih.grad, b_hh.grad) and b_ih.grad.data_ptr() != b_hh.grad.data_ptr()


OPS = {"RNN": torch.ops.fusedrnn.rnn_layer, "LSTM": torch.ops.fusedrnn.lstm_layer,
       "GRU": torch.ops.fusedrnn.gru_layer}
BACKWARD_OPS = {"RNN": torch.ops.fusedrnn.rnn_layer_backward,
                "LSTM": torch.ops.fusedrnn.lstm_layer_backward,
                "GRU": torch.ops.fusedrnn.gru_layer_backward}


def op_args(module, training, lengths, resets=False):
    """The operator's arguments: (x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths,
    resets, nonlinearity, reverse, batch_first, training); with `resets`,
    episodes starting at steps 2 and 3 of two sequences."""
    x, h0, *rest = layer_args(module, grad=training)
    c0 = rest.pop(0) if len(spec(module).states) > 1 else None
    flags = None
    if resets:
        flags = torch.zeros(T, B, dtype=torch.bool)
        flags[2, 0] = flags[3, 2] = True
    return (x, h0, c0, *rest, None if lengths is None else torch.tensor(lengths), flags, "tanh",
            False, False, training)


@pytest.mark.parametrize("resets", [False, True])
@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("lengths", [None, [5, 0, 2]])
@pytest.mark.parametrize("module", MODULES)
def test_opcheck_forward(module, training, lengths, resets):
    torch.library.opcheck(OPS[module], op_args(module, training, lengths, resets))


@pytest.mark.parametrize("resets", [False, True])
@pytest.mark.parametrize("lengths", [None, [5, 0, 2]])
@pytest.mark.parametrize("module", MODULES)
def test_opcheck_backward(module, lengths, resets):
    args = op_args(module, True, lengths, resets)
    with torch.no_grad():
        y, h_n, c_n, reserve = OPS[module](*args)
    dy, dh_n = torch.randn_like(y), torch.randn_like(h_n)
    dc_n = torch.randn_like(c_n) if len(spec(module).states) > 1 else None
    torch.library.opcheck(BACKWARD_OPS[module],
                          (*[a.detach() if isinstance(a, torch.Tensor) else a
                             for a in args[:9]], y, reserve, dy, dh_n, dc_n, "tanh", False,
                           False))


def loss_of(module):
    """A function of the layer's tensors through the one-layer function,
    with torch ops around it, reaching every result."""
    def loss(x, *rest):
        results = LAYERS[module](x.tanh(), *rest, lengths=torch.tensor([5, 0, 2]))
        return sum((r * (i + 1)).sin().sum() for i, r in enumerate(results))
    return loss


@pytest.mark.parametrize("module", MODULES)
def test_compiled_ops_equal_eager_with_default_settings(module):
    torch._dynamo.reset()
    args = layer_args(module)
    loss = loss_of(module)
    compiled = torch.compile(loss, fullgraph=True)
    want, got = loss(*args), compiled(*args)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    want_grads = torch.autograd.grad(want, args)
    got_grads = torch.autograd.grad(got, args)
    for w, g in zip(want_grads, got_grads):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


class Model(torch.nn.Module):
    """A drop-in inside a model: the recurrent layers, then a linear head."""

    def __init__(self, module):
        super().__init__()
        self.rnn = getattr(ftorch, module)(D, H, num_layers=2, bidirectional=True,
                                           dtype=torch.float64)
        self.head = torch.nn.Linear(2 * H, 1, dtype=torch.float64)

    def forward(self, x):
        output, hidden_n = self.rnn(x)
        return self.head(output).sum() + sum(h.sum() for h in states_of(hidden_n))


@pytest.mark.parametrize("module", MODULES)
def test_compiled_module_is_one_graph_equal_to_eager_with_allow_rnn(module):
    """torch refuses to trace nn.RNN/LSTM/GRU instances (the drop-ins are
    subclasses) unless allow_rnn: with it, one graph, equal to eager."""
    torch._dynamo.reset()
    model, x = Model(module), data((T, B, D))
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
@pytest.mark.parametrize("module", MODULES)
def test_traced_module_computes_on_its_input(module, grad):
    """torch.jit.trace records the operator: the traced module gives eager's
    result on an input other than the example (before the operators, a
    trace under no_grad recorded the example's outputs as constants)."""
    model = getattr(ftorch, module)(D, H, num_layers=2, dtype=torch.float64)
    example, other = data((T, B, D), seed=0), data((T, B, D), seed=1)
    with torch.set_grad_enabled(grad):
        traced = torch.jit.trace(model, example, check_trace=False)
        got, want = traced(other), model(other)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    for g, w in zip(states_of(got[1]), states_of(want[1])):
        torch.testing.assert_close(g, w, rtol=0, atol=0)
    assert "fusedrnn::" in str(traced.inlined_graph)


@pytest.mark.parametrize("module", GATED_MODULES)
def test_traced_under_no_grad_then_trained_fails_loudly(module):
    """A gated cell's trace under no_grad records an inference call, which
    keeps no reserve: a backward through it is refused, never computed on
    nothing."""
    model = getattr(ftorch, module)(D, H, dtype=torch.float64)
    with torch.no_grad():
        traced = torch.jit.trace(model, data((T, B, D)), check_trace=False)
    output, _ = traced(data((T, B, D)).requires_grad_())
    with pytest.raises(RuntimeError, match="needs the reserve of a training forward"):
        output.sum().backward()


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("module", MODULES)
def test_exported_program_holds_the_operators(module, packed):
    """torch.export.export (outside an ONNX export) records fusedrnn's
    operators, one per layer and direction, and the program computes what
    eager does on another input: padded, and packed (a PackedSequence whose
    sizes the drop-in reads from shapes, not data)."""
    model = getattr(ftorch, module)(D, H, num_layers=2, bidirectional=True,
                                    dtype=torch.float64).eval()
    example, other = data((T, B, D), seed=0), data((T, B, D), seed=1)
    if packed:
        def pack(x):
            return pack_padded_sequence(x, torch.tensor([2, 5, 3]), enforce_sorted=False)
        example, other = pack(example), pack(other)
    program = torch.export.export(model, (example,))
    layer = getattr(torch.ops.fusedrnn, f"{CELL_OF[module]}_layer").default
    assert [node.target for node in program.graph.nodes].count(layer) == 4
    got, want = program.module()(other), model(other)
    for g, w in zip([got[0].data if packed else got[0], *states_of(got[1])],
                    [want[0].data if packed else want[0], *states_of(want[1])]):
        torch.testing.assert_close(g, w, rtol=0, atol=0)


def test_packed_sequence_refuses_inconsistent_batch_sizes():
    """A PackedSequence whose batch_sizes do not count its rows."""
    packed = pack_padded_sequence(data((T, B, D)), torch.tensor([2, 5, 3]),
                                  enforce_sorted=False)
    broken = packed._replace(data=packed.data[:-1])
    with pytest.raises(RuntimeError, match="batch_sizes of a PackedSequence must sum to its "
                                           "data's length"):
        ftorch.GRU(D, H, dtype=torch.float64)(broken)


def test_import_fusedrnn_does_not_import_torch():
    code = "import sys, fusedrnn; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_changes_no_torch_setting():
    code = ("import torch, torch._dynamo\n"
            "before = dict(torch._dynamo.config.get_config_copy())\n"
            "threads = torch.get_num_threads()\n"
            "import fusedrnn.torch\n"
            "assert dict(torch._dynamo.config.get_config_copy()) == before\n"
            "assert torch.get_num_threads() == threads\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_example_prints_what_it_claims(capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"## Quick start: PyTorch\n.*?```python\n(.*?)```", readme, re.S)[1]
    exec(compile(code, "README.md", "exec"), {})
    claimed = re.search(r"^# (\(.*\))$", code, re.M)[1]
    assert capsys.readouterr().out.strip() == claimed


# --- bad input -----------------------------------------------------------------

def bad_inputs(module):
    """(what, input, hx) that torch's module of `module` with two layers rejects."""
    x = data((T, B, D), torch.float32)

    def hx(*shape):
        states = [torch.randn(*shape) for _ in spec(module).states]
        return tuple(states) if len(states) > 1 else states[0]

    cases = [("wrong input size", data((T, B, D + 1), torch.float32), None),
             ("1-D input", torch.randn(D), None),
             ("4-D input", torch.randn(1, T, B, D), None),
             ("hidden of the wrong shape", x, hx(2, B + 1, H)),
             ("hidden of too few layers", x, hx(1, B, H)),
             ("2-D hidden for batched input", x, hx(2, H)),
             ("3-D hidden for unbatched input", torch.randn(T, D), hx(2, 1, H)),
             ("input dtype not the weights'", x.double(), None)]
    if "c0" in spec(module).states:
        cases += [("a tensor for (h0, c0)", x, torch.randn(2, B, H)),
                  ("c0 of the wrong shape", x, (torch.randn(2, B, H), torch.randn(2, B, H + 1)))]
    return cases


@pytest.mark.parametrize("module, what, x, hx",
                         [(m, *case) for m in MODULES for case in bad_inputs(m)],
                         ids=[f"{m}-{case[0]}" for m in MODULES for case in bad_inputs(m)])
def test_bad_input_raises_what_torch_raises(module, what, x, hx):
    torch.manual_seed(0)
    reference = getattr(torch.nn, module)(D, H, num_layers=2)
    fused = getattr(ftorch, module)(D, H, num_layers=2)
    with pytest.raises(Exception) as want:
        reference(x, hx)
    with pytest.raises(type(want.value)) as got:
        fused(x, hx)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.complex64])
@pytest.mark.parametrize("module", MODULES)
def test_unsupported_dtype_is_a_runtime_error(module, dtype):
    fused = getattr(ftorch, module)(D, H, dtype=dtype)
    supported = "supports torch.float32, torch.float64 and torch.bfloat16 only"
    with pytest.raises(RuntimeError, match=f"{dtype}.*{supported}"):
        fused(torch.randn(T, B, D).to(dtype))
    args = [a.detach().to(dtype) for a in layer_args(module)]
    with pytest.raises(RuntimeError, match=f"{dtype}.*{supported}"):
        LAYERS[module](*args)


@pytest.mark.parametrize("module", MODULES)
def test_tensors_off_the_cpu_are_a_runtime_error(module):
    """No GPU here: the meta device stands for any device but the CPU; the
    check is on the device type, not on its name."""
    fused = getattr(ftorch, module)(D, H, device="meta")
    with pytest.raises(RuntimeError,
                       match="input is on device meta, but fusedrnn runs on the CPU only"):
        fused(torch.randn(T, B, D, device="meta"))
    args = [a.detach().to("meta") for a in layer_args(module)]
    with pytest.raises(RuntimeError, match="x is on device meta, but fusedrnn runs on the CPU"):
        LAYERS[module](*args)


@pytest.mark.parametrize("module", MODULES)
def test_weight_replaced_by_one_of_the_wrong_shape_is_a_runtime_error(module):
    """torch's own checks leave out the weights; the kernel trusts their shapes."""
    G = spec(module).gates
    fused = getattr(ftorch, module)(D, H)
    fused.weight_hh_l0 = torch.nn.Parameter(torch.randn(G * H + 1, H + 1))
    with pytest.raises(RuntimeError, match=re.escape(
            f"weight_hh_l0 has shape ({G * H + 1}, {H + 1}), expected ({G * H}, {H})")):
        fused(torch.randn(T, B, D))


@pytest.mark.parametrize("module", MODULES)
def test_initial_state_of_another_dtype_is_a_runtime_error(module):
    fused = getattr(ftorch, module)(D, H)
    for i, name in enumerate(["hx", "cx"][:len(spec(module).states)]):
        hx = [torch.randn(1, B, H) for _ in spec(module).states]
        hx[i] = hx[i].double()
        with pytest.raises(RuntimeError, match=re.escape(
                f"{name} has dtype torch.float64, expected torch.float32 (the dtype of input)")):
            fused(torch.randn(T, B, D), tuple(hx) if len(hx) > 1 else hx[0])


@pytest.mark.parametrize("module", MODULES)
def test_operator_rejects_bad_shapes_and_mixed_dtypes(module):
    G = spec(module).gates
    args = layer_args(module, torch.float32, grad=False)
    x, h0 = args[:2]
    w_ih, w_hh = args[-4:-2]

    def called_with(**changes):
        """The arguments with w_ih, w_hh or h0 replaced."""
        changed = list(args)
        for name, value in changes.items():
            changed[{"h0": 1, "w_ih": len(args) - 4, "w_hh": len(args) - 3}[name]] = value
        return changed

    with pytest.raises(RuntimeError, match="w_hh has dtype torch.float64, expected torch.float32"):
        LAYERS[module](*called_with(w_hh=w_hh.double()))
    with pytest.raises(RuntimeError, match="h0 has dtype torch.float64, expected torch.float32"):
        LAYERS[module](*called_with(h0=h0.double()))
    with pytest.raises(RuntimeError, match=re.escape(
            f"w_ih has shape ({G * H}, {D + 1}), expected ({G * H}, {D})")):
        LAYERS[module](*called_with(w_ih=torch.randn(G * H, D + 1)))
    with pytest.raises(RuntimeError, match=re.escape(
            f"w_hh has shape ({G * H + 1}, {H}), expected ({G * H}, {H})")):
        LAYERS[module](*called_with(w_hh=torch.randn(G * H + 1, H)))
    with pytest.raises(RuntimeError, match="lengths must hold integers"):
        LAYERS[module](*args, lengths=[1.5, 2, 3])


# --- the kernel against torch's modules ----------------------------------------
# The NumPy API's forward and backward against torch.nn's module with the
# same weights (helpers.torch_results). float64 on both sides differs only in
# the order of roundings (the table's float64 tolerance); float32 compares
# with torch in float32, each side rounding on its own, so each may be off by
# one bound from the exact result: twice the table's float32 tolerance.

@pytest.fixture(name="torch_on_one_thread")
def torch_on_one_thread_fixture():
    """torch's own threads would only compete with the other tests' runs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def compare_kernel(assert_close, cell, options, shape, dtype, with_lengths, reverse, batch_first,
                   bias=True, states=True):
    """A bias or initial state that fusedrnn gets as None is zeros on torch's
    side, which then still gives its gradient."""
    T_, B_ = shape[:2]
    a, d = random_problem(cell, shape, dtype, batch_first=batch_first,
                          given=dict.fromkeys(CELLS[cell].states, states), bias=bias)
    options = dict(options, lengths=mixed_lengths(T_, B_) if with_lengths else None,
                   reverse=reverse, batch_first=batch_first)
    expected = torch_results(torch, cell, a, d, **options)
    actual = run(fusedrnn, cell, a, d, **options)
    assert set(actual) == set(expected)
    tol = 2 * TOLERANCE[np.dtype(dtype)] if np.dtype(dtype) == np.float32 else None
    for name, want in expected.items():
        assert_close(actual[name], want, dtype, name, tol=tol)


KERNEL_VARIANTS = [pytest.param(*v.values, id=v.id) for v in variants()
                   if v.values[1].get("nonlinearity") != "sigmoid"]


@pytest.mark.usefixtures("isa", "torch_on_one_thread")
@flag("states")
@flag("bias")
@flag("batch_first")
@flag("reverse")
@flag("lengths")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell, options", KERNEL_VARIANTS)
def test_kernel_matches_torch(assert_close, cell, options, dtype, lengths, reverse, batch_first,
                              bias, states):
    compare_kernel(assert_close, cell, options, (7, 5, 4, 6), dtype, lengths, reverse,
                   batch_first, bias, states)


@pytest.mark.usefixtures("isa", "torch_on_one_thread")
@flag("reverse")
@flag("lengths")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell, options", KERNEL_VARIANTS)
def test_kernel_matches_torch_on_a_larger_problem(assert_close, cell, options, dtype, lengths,
                                                  reverse):
    """Odd sizes past a register tile of rows (B = 13) and across panels
    (G*H = 33, 132 or 99 columns), batch-first."""
    compare_kernel(assert_close, cell, options, (9, 13, 17, 33), dtype, lengths, reverse,
                   batch_first=True)
