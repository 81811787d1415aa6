"""fusedrnn.torch against torch.nn.RNN with the same weights: outputs, h_n and
every gradient over the module's options; gradcheck of the one-layer op;
zero-copy; torch's exceptions for bad input."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils.rnn import pack_padded_sequence  # noqa: E402

import fusedrnn  # noqa: E402
import fusedrnn.torch as ftorch  # noqa: E402

T, B, D, H = 5, 3, 4, 6

# torch's RNN and the kernel round differently (their own GEMMs, tanh); both
# are within rounding of the exact result on these small problems.
TOLERANCE = {torch.float32: dict(rtol=1e-4, atol=1e-5),
             torch.float64: dict(rtol=1e-10, atol=1e-12)}


def twins(dtype=torch.float64, **options):
    """A torch.nn.RNN and a fusedrnn.torch.RNN with the same weights."""
    reference = torch.nn.RNN(D, H, dtype=dtype, **options)
    fused = ftorch.RNN(D, H, dtype=dtype, **options)
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def leaf(*shape, dtype, generator):
    return torch.randn(*shape, dtype=dtype, generator=generator).requires_grad_()


def run(module, x, hx):
    """(output, h_n, gradients) of sum(output * g) + sum(h_n * g') for fixed
    random g, g': dy and dh_n both reach the backward."""
    x, hx = [None if a is None else a.detach().clone().requires_grad_() for a in (x, hx)]
    output, h_n = module(x, hx)
    out = output.data if isinstance(output, torch.nn.utils.rnn.PackedSequence) else output
    generator = torch.Generator().manual_seed(1)
    loss = (out * torch.randn(out.shape, dtype=out.dtype, generator=generator)).sum() \
        + (h_n * torch.randn(h_n.shape, dtype=h_n.dtype, generator=generator)).sum()
    module.zero_grad()
    loss.backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    grads.update(x=x.grad, hx=None if hx is None else hx.grad)
    return out, h_n, grads


def assert_same_as_torch(reference, fused, x, hx):
    want_out, want_h_n, want_grads = run(reference, x, hx)
    out, h_n, grads = run(fused, x, hx)
    tolerance = TOLERANCE[out.dtype]
    torch.testing.assert_close(out, want_out, **tolerance, msg=lambda m: f"output: {m}")
    torch.testing.assert_close(h_n, want_h_n, **tolerance, msg=lambda m: f"h_n: {m}")
    assert grads.keys() == want_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, want_grads[name], **tolerance,
                                   msg=lambda m: f"gradient of {name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_matches_torch(dtype, nonlinearity, bias, num_layers, bidirectional, batch_first):
    reference, fused = twins(dtype, nonlinearity=nonlinearity, bias=bias, num_layers=num_layers,
                             bidirectional=bidirectional, batch_first=batch_first)
    g = torch.Generator().manual_seed(0)
    x = leaf(*((B, T) if batch_first else (T, B)), D, dtype=dtype, generator=g)
    hx = leaf(num_layers * (1 + bidirectional), B, H, dtype=dtype, generator=g)
    assert_same_as_torch(reference, fused, x, hx)


def test_matches_torch_without_hx():
    reference, fused = twins(num_layers=2, bidirectional=True)
    x = leaf(T, B, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert_same_as_torch(reference, fused, x, None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("lengths, enforce_sorted", [([5, 3, 3, 1], True),
                                                     ([2, 5, 1, 4], False),
                                                     ([5, 3, 3, 1], False)])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_packed_sequence_matches_torch(dtype, lengths, enforce_sorted, bidirectional,
                                       batch_first):
    reference, fused = twins(dtype, num_layers=2, bidirectional=bidirectional,
                             batch_first=batch_first)
    g = torch.Generator().manual_seed(0)
    padded = leaf(*((len(lengths), T) if batch_first else (T, len(lengths))), D, dtype=dtype,
                  generator=g)
    hx = leaf(2 * (1 + bidirectional), len(lengths), H, dtype=dtype, generator=g)
    packed = pack_padded_sequence(padded, lengths, batch_first=batch_first,
                                  enforce_sorted=enforce_sorted)
    # PackedInput takes the data as a tensor argument: run() gets its gradient.
    assert_same_as_torch(PackedInput(reference, packed), PackedInput(fused, packed), packed.data,
                         hx)


def test_packed_output_is_torch_packed_sequence():
    reference, fused = twins()
    packed = pack_padded_sequence(torch.randn(T, 4, D, dtype=torch.float64), [2, 5, 1, 4],
                                  enforce_sorted=False)
    out, _ = fused(packed)
    want, _ = reference(packed)
    assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
    for field in ("batch_sizes", "sorted_indices", "unsorted_indices"):
        assert torch.equal(getattr(out, field), getattr(want, field))


class PackedInput(torch.nn.Module):
    """`module` on a PackedSequence with `packed`'s layout and the data given,
    so that run() can take the gradient with respect to the data."""

    def __init__(self, module, packed):
        super().__init__()
        self.module, self.packed = module, packed

    def forward(self, data, hx):
        output, h_n = self.module(self.packed._replace(data=data), hx)
        return output.data, h_n


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
def test_unbatched_input_matches_torch(batch_first, with_hx):
    reference, fused = twins(num_layers=2, bidirectional=True, batch_first=batch_first)
    g = torch.Generator().manual_seed(0)
    x = leaf(T, D, dtype=torch.float64, generator=g)
    hx = leaf(4, H, dtype=torch.float64, generator=g) if with_hx else None
    assert_same_as_torch(reference, fused, x, hx)
    output, h_n = fused(x, hx)
    assert output.shape == (T, 2 * H) and h_n.shape == (4, H)


def test_same_initialisation_and_state_dict_both_ways():
    torch.manual_seed(0)
    reference = torch.nn.RNN(D, H, num_layers=2, bidirectional=True)
    torch.manual_seed(0)
    fused = ftorch.RNN(D, H, num_layers=2, bidirectional=True)
    assert isinstance(fused, torch.nn.Module)
    for (name, p), (want_name, want) in zip(fused.state_dict().items(),
                                            reference.state_dict().items()):
        assert name == want_name and torch.equal(p, want)
    other = torch.nn.RNN(D, H, num_layers=2, bidirectional=True)
    other.load_state_dict(fused.state_dict())
    fused.load_state_dict(other.state_dict())
    assert all(torch.equal(p, q) for p, q in zip(fused.parameters(), other.parameters()))


def test_no_grad_inference():
    reference, fused = twins(num_layers=2)
    x = torch.randn(T, B, D, dtype=torch.float64)
    with torch.no_grad():
        output, h_n = fused(x)
        want, want_h_n = reference(x)
    assert not output.requires_grad and not h_n.requires_grad
    torch.testing.assert_close(output, want)
    torch.testing.assert_close(h_n, want_h_n)


def test_non_contiguous_input_and_hx_match_torch():
    reference, fused = twins(num_layers=2)
    g = torch.Generator().manual_seed(0)
    x = leaf(B, T, 2 * D, dtype=torch.float64, generator=g)
    hx = leaf(B, 2, H, dtype=torch.float64, generator=g)
    views = x.transpose(0, 1)[..., ::2], hx.transpose(0, 1)
    assert not any(v.is_contiguous() for v in views)
    assert_same_as_torch(reference, fused, *views)


def test_bias_gradients_accumulate_each_in_its_own_memory():
    """Both biases get dbias; two backward passes leave twice the gradient in
    each, as in torch (memory shared between the two .grad would take three
    times in one)."""
    reference, fused = twins()
    x = torch.randn(T, B, D, dtype=torch.float64)
    for module in (reference, fused):
        for _ in range(2):
            module(x)[0].sum().backward()
    assert fused.bias_ih_l0.grad.data_ptr() != fused.bias_hh_l0.grad.data_ptr()
    for name in ("bias_ih_l0", "bias_hh_l0"):
        torch.testing.assert_close(getattr(fused, name).grad, getattr(reference, name).grad)


class Doubled(torch.nn.Module):
    def forward(self, w):
        return 2 * w


def test_parametrised_weight_matches_torch():
    """The kernel gets the parametrised weight, and the gradient reaches the
    parameter underneath."""
    reference, fused = twins(num_layers=2)
    for module in (reference, fused):
        torch.nn.utils.parametrize.register_parametrization(module, "weight_hh_l1", Doubled())
    x = leaf(T, B, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert_same_as_torch(reference, fused, x, None)


def test_module_passes_tensor_memory_to_the_kernel(monkeypatch):
    """RNN's path straight to the kernel copies no contiguous tensor either:
    the kernel reads x, hx and the weights where they are and writes the
    output in place (h_n is stacked from the layers' final states)."""
    seen = []
    forward = fusedrnn._kernel.forward

    def address(a):
        return a.__array_interface__["data"][0] if hasattr(a, "__array_interface__") else a

    def spy(problem, inputs, outputs):   # inputs: x, h0, c0, w_ih, w_hh, b_ih, b_hh, lengths
        seen.append([address(a) for a in inputs[:7]] + [address(outputs[0])])
        return forward(problem, inputs, outputs)

    monkeypatch.setattr(fusedrnn._kernel, "forward", spy)
    fused = ftorch.RNN(D, H, bias=False)
    x, hx = torch.randn(T, B, D), torch.randn(1, B, H)
    with torch.no_grad():
        output, h_n = fused(x, hx)
    assert seen == [[x.data_ptr(), hx.data_ptr(), None, fused.weight_ih_l0.data_ptr(),
                     fused.weight_hh_l0.data_ptr(), None, None, output.data_ptr()]]


# --- dropout between layers -----------------------------------------------

def test_dropout_off_in_eval_mode():
    reference, fused = twins(num_layers=3, dropout=0.5)
    reference.eval()
    fused.eval()
    x = torch.randn(T, B, D, dtype=torch.float64)
    torch.testing.assert_close(fused(x)[0], reference(x)[0])


def test_dropout_of_one_zeroes_every_layer_input_after_the_first():
    """With p = 1 torch's dropout is deterministic: the second layer sees zeros."""
    reference, fused = twins(num_layers=2, dropout=1.0)
    x = leaf(T, B, D, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert_same_as_torch(reference, fused, x, None)


def test_dropout_in_training_mode_drops_and_scales():
    """Layer 2's input is layer 1's output with elements zeroed at rate p and
    the rest scaled by 1/(1-p): a one-layer model fed that input reproduces
    the second layer."""
    torch.manual_seed(0)
    fused = ftorch.RNN(D, H, num_layers=2, dropout=0.5, dtype=torch.float64)
    x = torch.randn(T, B, D, dtype=torch.float64)
    torch.manual_seed(1)
    output, _ = fused(x)
    first = ftorch.rnn_layer(x, None, fused.weight_ih_l0, fused.weight_hh_l0,
                             fused.bias_ih_l0 + fused.bias_hh_l0)[0]
    torch.manual_seed(1)
    dropped = torch.nn.functional.dropout(first, 0.5, training=True)
    assert 0 < (dropped == 0).sum() < dropped.numel()
    want = ftorch.rnn_layer(dropped, None, fused.weight_ih_l1, fused.weight_hh_l1,
                            fused.bias_ih_l1 + fused.bias_hh_l1)[0]
    torch.testing.assert_close(output, want)


# --- the one-layer op --------------------------------------------------------

@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("lengths", [None, [5, 0, 2]])
def test_gradcheck(nonlinearity, reverse, batch_first, lengths):
    g = torch.Generator().manual_seed(0)
    x = leaf(*((B, T) if batch_first else (T, B)), D, dtype=torch.float64, generator=g)
    h0, w_ih, w_hh, bias = (leaf(*shape, dtype=torch.float64, generator=g)
                            for shape in ((B, H), (H, D), (H, H), (H,)))
    options = dict(nonlinearity=nonlinearity, lengths=lengths, reverse=reverse,
                   batch_first=batch_first)
    assert torch.autograd.gradcheck(
        lambda *args: ftorch.rnn_layer(*args, **options), (x, h0, w_ih, w_hh, bias))


def test_gradcheck_without_h0_and_bias():
    g = torch.Generator().manual_seed(0)
    x, w_ih, w_hh = (leaf(*shape, dtype=torch.float64, generator=g)
                     for shape in ((T, B, D), (H, D), (H, H)))
    assert torch.autograd.gradcheck(lambda x, w_ih, w_hh: ftorch.rnn_layer(x, None, w_ih, w_hh),
                                    (x, w_ih, w_hh))


def test_gradients_of_non_contiguous_inputs():
    """Transposed and strided views give the gradients of their contiguous copies."""
    g = torch.Generator().manual_seed(0)
    x, h0, w_ih, w_hh = (leaf(*shape, dtype=torch.float64, generator=g)
                         for shape in ((B, T, 2 * D), (H, B), (D, H), (H, H)))
    bias = leaf(2 * H, dtype=torch.float64, generator=g)
    views = (x.transpose(0, 1)[..., ::2], h0.t(), w_ih.t(), w_hh.t(), bias[::2])
    assert not any(v.is_contiguous() for v in views)
    copies = [v.detach().contiguous().requires_grad_() for v in views]
    for args in (views, copies):
        y, h_n = ftorch.rnn_layer(*args)
        (y.sum() + (h_n ** 2).sum()).backward()
    for leaf_, copy in zip((x, h0, w_ih, w_hh, bias), copies):
        torch.testing.assert_close(leaf_.grad, gradient_through_view(leaf_, copy.grad))


def misaligned(t):
    """A copy of t in memory one byte past an aligned address: contiguous,
    and not aligned to its dtype (torch.frombuffer takes a byte offset)."""
    buf = bytearray(t.numel() * t.element_size() + 1)
    m = torch.frombuffer(buf, dtype=t.dtype, count=t.numel(), offset=1).view(t.shape)
    m.copy_(t)
    assert m.is_contiguous() and m.data_ptr() % t.element_size() != 0
    return m


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_misaligned_tensors_reach_the_kernel_as_aligned_copies(isa, kernel_sees_aligned_arrays,
                                                                dtype):
    """Misaligned input, hx and weights give the module (its path straight to
    the kernel) and rnn_layer (through the NumPy API) bitwise the outputs and
    gradients of aligned ones, and are left unchanged; the kernel only ever
    sees aligned arrays."""
    g = torch.Generator().manual_seed(0)
    x, hx = torch.randn(T, B, D, dtype=dtype, generator=g), torch.randn(2, B, H, dtype=dtype,
                                                                       generator=g)
    weights = ftorch.RNN(D, H, num_layers=2, dtype=dtype).state_dict()

    def module_results(move):
        fused = ftorch.RNN(D, H, num_layers=2, dtype=dtype)
        for name, w in weights.items():
            setattr(fused, name, torch.nn.Parameter(move(w)))
        x_, hx_ = move(x).requires_grad_(), move(hx).requires_grad_()
        output, h_n = fused(x_, hx_)
        (output.sum() + (h_n ** 2).sum()).backward()
        inputs = [(x_, x), (hx_, hx)] + [(getattr(fused, k), w) for k, w in weights.items()]
        return [output, h_n] + [a.grad for a, _ in inputs], inputs

    def layer_results(move):
        originals = (x, hx[0], weights["weight_ih_l0"], weights["weight_hh_l0"],
                     weights["bias_ih_l0"])
        args = [move(a).requires_grad_() for a in originals]
        y, h_n = ftorch.rnn_layer(*args)
        (y.sum() + (h_n ** 2).sum()).backward()
        return [y, h_n] + [a.grad for a in args], list(zip(args, originals))

    for results in (module_results, layer_results):
        expected, _ = results(torch.clone)
        actual, inputs = results(misaligned)
        assert not any(a.data_ptr() % a.element_size() == 0 for a, _ in inputs)
        for a, e in zip(actual, expected):
            assert torch.equal(a, e)
        for a, original in inputs:
            assert torch.equal(a.detach(), original)
    assert "forward" in kernel_sees_aligned_arrays and "backward" in kernel_sees_aligned_arrays


def gradient_through_view(base, grad_of_view):
    """The gradient a base receives from the view of it taken in the test above."""
    views = {(B, T, 2 * D): lambda a: a.transpose(0, 1)[..., ::2], (H, B): torch.t,
             (D, H): torch.t, (H, H): torch.t, (2 * H,): lambda a: a[::2]}
    out = torch.zeros_like(base)
    views[tuple(base.shape)](out).copy_(grad_of_view)
    return out


def test_zero_copy(monkeypatch):
    """Contiguous tensors reach the kernel as their own memory, and y, h_n and
    the gradients are the memory the kernel wrote."""
    seen = {}

    def address(a):
        return a.__array_interface__["data"][0] if hasattr(a, "__array_interface__") else a

    def spy(name):
        run = getattr(fusedrnn._kernel, name)

        def wrapper(problem, *buffers):
            seen[name] = [[address(a) for a in group] for group in buffers]
            return run(problem, *buffers)
        monkeypatch.setattr(fusedrnn._kernel, name, wrapper)

    spy("forward")
    spy("backward")
    g = torch.Generator().manual_seed(0)
    args = [leaf(*shape, dtype=torch.float32, generator=g)
            for shape in ((T, B, D), (B, H), (H, D), (H, H), (H,), (H,))]
    x, h0, w_ih, w_hh, b_ih, b_hh = args
    y, h_n = ftorch.rnn_layer(*args)
    dy = torch.randn(y.shape)
    y.backward(dy)
    ptr = [a.data_ptr() for a in args]
    assert seen["forward"] == [[ptr[0], ptr[1], None, *ptr[2:], None],
                               [y.data_ptr(), h_n.data_ptr(), None, None]]
    assert seen["backward"][:2] == [[ptr[0], ptr[1], None, *ptr[2:], None],
                                    [y.data_ptr(), None, dy.data_ptr(), None, None]]
    # The kernel writes both bias gradients, each into memory of its own.
    assert seen["backward"][2] == [x.grad.data_ptr(), h0.grad.data_ptr(), None,
                                   w_ih.grad.data_ptr(), w_hh.grad.data_ptr(),
                                   b_ih.grad.data_ptr(), b_hh.grad.data_ptr()]
    assert torch.equal(b_ih.grad, b_hh.grad) and b_ih.grad.data_ptr() != b_hh.grad.data_ptr()


# --- bad input -----------------------------------------------------------------

def bad_inputs():
    """(what, input, hx) that torch.nn.RNN(D, H, num_layers=2) rejects."""
    x = torch.randn(T, B, D)
    return [
        ("wrong input size", torch.randn(T, B, D + 1), None),
        ("1-D input", torch.randn(D), None),
        ("4-D input", torch.randn(1, T, B, D), None),
        ("hx of the wrong shape", x, torch.randn(2, B + 1, H)),
        ("hx of too few layers", x, torch.randn(1, B, H)),
        ("2-D hx for batched input", x, torch.randn(2, H)),
        ("3-D hx for unbatched input", torch.randn(T, D), torch.randn(2, 1, H)),
        ("input dtype not the weights'", x.double(), None),
    ]


@pytest.mark.parametrize("what, x, hx", bad_inputs(), ids=[case[0] for case in bad_inputs()])
def test_bad_input_raises_what_torch_raises(what, x, hx):
    torch.manual_seed(0)
    reference = torch.nn.RNN(D, H, num_layers=2)
    fused = ftorch.RNN(D, H, num_layers=2)
    with pytest.raises((RuntimeError, ValueError)) as want:
        reference(x, hx)
    with pytest.raises(want.type) as got:
        fused(x, hx)
    assert str(got.value) == str(want.value)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.complex64])
def test_unsupported_dtype_is_a_runtime_error(dtype):
    fused = ftorch.RNN(D, H, dtype=dtype)
    with pytest.raises(RuntimeError, match=f"{dtype}.*supports torch.float32 and torch.float64"):
        fused(torch.randn(T, B, D).to(dtype))


def test_non_cpu_tensors_are_a_runtime_error():
    """The meta device stands in for CUDA, which this machine lacks: the
    check is on the device type, not on its name."""
    fused = ftorch.RNN(D, H, device="meta")
    with pytest.raises(RuntimeError, match="input is on device meta.*CPU only"):
        fused(torch.randn(T, B, D, device="meta"))


def test_weight_replaced_by_one_of_the_wrong_shape_is_a_runtime_error():
    """torch.nn.RNN's checks leave out the weights; the kernel trusts their shapes."""
    fused = ftorch.RNN(D, H)
    fused.weight_hh_l0 = torch.nn.Parameter(torch.randn(H + 1, H + 1))
    with pytest.raises(RuntimeError, match=r"weight_hh_l0 has shape \(7, 7\), expected \(6, 6\)"):
        fused(torch.randn(T, B, D))


def test_hx_of_another_dtype_is_a_runtime_error():
    fused = ftorch.RNN(D, H)
    with pytest.raises(RuntimeError, match="hx has dtype torch.float64, expected torch.float32 "
                                           r"\(the dtype of input\)"):
        fused(torch.randn(T, B, D), torch.randn(1, B, H, dtype=torch.float64))


def test_op_rejects_mixed_dtypes_and_bad_shapes():
    x, h0, w_ih, w_hh = (torch.randn(*shape) for shape in ((T, B, D), (B, H), (H, D), (H, H)))
    with pytest.raises(RuntimeError, match="w_hh has dtype torch.float64, expected torch.float32"):
        ftorch.rnn_layer(x, h0, w_ih, w_hh.double())
    with pytest.raises(RuntimeError, match=r"w_ih has shape \(6, 5\), expected \(6, 4\)"):
        ftorch.rnn_layer(x, h0, torch.randn(H, D + 1), w_hh)


def test_import_fusedrnn_does_not_import_torch():
    code = "import sys, fusedrnn; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_readme_example_prints_what_it_claims(capsys):
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"## PyTorch\n.*?```python\n(.*?)```", readme, re.S)[1]
    exec(compile(code, "README.md", "exec"), {})
    claimed = re.search(r"^# (\(.*\))$", code, re.M)[1]
    assert capsys.readouterr().out.strip() == claimed
