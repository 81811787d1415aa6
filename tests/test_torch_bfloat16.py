"""The drop-ins in bfloat16: bf16 modules and tensors, and torch.autocast.

Under torch.autocast("cpu", dtype=torch.bfloat16) each drop-in must give
the dtypes torch.nn's module of the same kind gives (outputs, states, every
gradient), eager and compiled, and an error against the float64 result on
the same data no worse than torch.nn's there. The data (inputs, parameters,
the loss's weights) are values bf16 holds exactly, so that autocast's casts
lose nothing and what each side gets wrong is its own arithmetic's. bf16 modules
(`.to(torch.bfloat16)`) are held to the float64 result at the bf16
tolerance (fusedrnn._tolerances)."""

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ml_dtypes")

import numpy as np  # noqa: E402

import fusedrnn.torch as ft  # noqa: E402
from fusedrnn._checks import BFLOAT16  # noqa: E402
from fusedrnn._tolerances import TOLERANCE, scaled_errors  # noqa: E402

pytestmark = pytest.mark.usefixtures("isa")

LAYERS = {"RNN": (torch.nn.RNN, ft.RNN), "LSTM": (torch.nn.LSTM, ft.LSTM),
          "GRU": (torch.nn.GRU, ft.GRU)}
CELLS = {"RNNCell": (torch.nn.RNNCell, ft.RNNCell), "LSTMCell": (torch.nn.LSTMCell, ft.LSTMCell),
         "GRUCell": (torch.nn.GRUCell, ft.GRUCell)}
KINDS = {**LAYERS, **CELLS}
# Large enough that rounding at every step (torch.nn) shows against rounding
# once (fusedrnn) above the noise of single roundings.
D, H, B, T = 16, 32, 8, 20


def make(name, seed=0, **options):
    """(torch.nn's module, the drop-in) with the same parameters, float32."""
    torch_cls, ours_cls = KINDS[name]
    torch.manual_seed(seed)
    ours = ours_cls(D, H, **options)
    with torch.no_grad():
        for p in ours.parameters():
            p.copy_(bf16_exact(p))
    theirs = torch_cls(D, H, **options)
    theirs.load_state_dict(ours.state_dict())
    return theirs, ours


def bf16_exact(t):
    """t rounded to the nearest values bfloat16 holds, in t's dtype."""
    return t.to(torch.bfloat16).to(t.dtype)


def data(name, seed=1, batch_first=False):
    g = torch.Generator().manual_seed(seed)
    if name in CELLS:
        return bf16_exact(torch.randn(B, D, generator=g))
    return bf16_exact(torch.randn(*((B, T) if batch_first else (T, B)), D, generator=g))


def results(module, x, autocast=None, compiled=False):
    """The outputs of module(x) and the gradients of a fixed weighted sum of
    them with respect to x and every parameter: a dict of tensors."""
    x = x.detach().clone().requires_grad_()
    module.zero_grad()
    call = torch.compile(module, backend="aot_eager", fullgraph=True) if compiled else module
    with torch._dynamo.config.patch(allow_rnn=True), \
            torch.autocast("cpu", dtype=autocast, enabled=autocast is not None):
        out = call(x)
    flat = [out] if isinstance(out, torch.Tensor) else \
        [t for o in out for t in ((o,) if isinstance(o, torch.Tensor) else o)]
    g = torch.Generator().manual_seed(2)
    loss = sum((t.double() * bf16_exact(torch.randn(t.shape, generator=g, dtype=torch.float64)))
               .sum() for t in flat)
    loss.backward()
    got = {f"out{i}": t.detach() for i, t in enumerate(flat)}
    got["dx"] = x.grad
    got.update({"d" + n: p.grad for n, p in module.named_parameters()})
    return got


def relative_rms(actual, expected):
    """rms(actual - expected) / rms(expected), in float64."""
    a, e = actual.double().numpy(), expected.numpy()
    return float(np.sqrt(np.mean((a - e) ** 2)) / max(np.sqrt(np.mean(e ** 2)), 1e-300))


def float64_results(name, ours, x, **options):
    """The float64 results on the same (float32) data: torch.nn's module in float64."""
    theirs = KINDS[name][0](D, H, **options).double()
    theirs.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    return results(theirs, x.double())


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name", list(KINDS))
def test_autocast_gives_torch_nn_dtypes(name, compiled):
    """Every output and gradient has the dtype torch.nn's module of the same
    kind gives under a bf16 autocast: bf16 where torch computes in bf16, float32
    where it does not (fusedrnn.torch's _AUTOCAST_BF16)."""
    theirs, ours = make(name)
    x = data(name)
    want = {k: v.dtype for k, v in results(theirs, x, torch.bfloat16).items()}
    got = {k: v.dtype for k, v in results(ours, x, torch.bfloat16, compiled).items()}
    assert got == want
    # the table is not trivially float32: the layers RNN and LSTM come out in bf16
    if name in ("RNN", "LSTM", "RNNCell"):
        assert got["out0"] == torch.bfloat16


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_autocast_gru_layer_has_bf16_products_and_float32_results(compiled):
    """torch.nn.GRU under autocast is a bf16 product per step under float32
    gate maths, and returns float32: the drop-in runs its bf16 call and
    returns the results widened, so that they are float32 holding bf16's
    values, not the float32 call's."""
    _, ours = make("GRU")
    x = data("GRU")
    under = results(ours, x, torch.bfloat16, compiled)
    plain = results(ours, x)
    for key in ("out0", "out1"):
        assert under[key].dtype == torch.float32
        assert torch.equal(under[key], bf16_exact(under[key])), key
        assert not torch.equal(under[key], plain[key]), key


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
@pytest.mark.parametrize("name", list(CELLS))
def test_autocast_cells_have_bf16_products_and_float32_state(name, compiled):
    """torch.nn's cells under autocast are bf16 products under a float32
    state, LSTMCell and GRUCell returning float32, RNNCell bf16: the drop-ins
    keep float32 tensors and run the kernel's bf16 products on them
    (FUSEDRNN_F32_BF16), RNNCell's result rounded to bf16. Their results and
    gradients are then the bf16 module's before its one rounding: on bf16
    values both run the same products and sums, so the float32 results
    rounded to bf16 are the bf16 module's, bit for bit (RNNCell's output:
    its gradients take act' from the float32 y, not from the bf16 module's
    rounded one); and not the float32 call's, but where the ISA has no bf16
    dot product (its products are float32's, exact)."""
    import copy

    from fusedrnn import _kernel
    _, ours = make(name)
    x = data(name)
    under = results(ours, x, torch.bfloat16, compiled)
    plain = results(ours, x)
    bf16 = results(copy.deepcopy(ours).to(torch.bfloat16), x.to(torch.bfloat16))
    for key, value in under.items():
        rounded = name == "RNNCell" and key == "out0"
        assert value.dtype == (torch.bfloat16 if rounded else torch.float32), key
        if name != "RNNCell" or rounded:
            assert torch.equal(value.to(torch.bfloat16), bf16[key]), key
    assert torch.equal(under["dx"], plain["dx"]) != _kernel.bf16_dot()


@pytest.mark.parametrize("options", [{}, {"num_layers": 2, "bidirectional": True},
                                     {"batch_first": True}], ids=["1", "2x2", "batch_first"])
@pytest.mark.parametrize("name", list(KINDS))
def test_autocast_error_no_worse_than_torch_nn(name, options):
    """Against the float64 result on the same data, the drop-in's largest
    scaled error under autocast (outputs and every gradient) is no larger than
    torch.nn's under the same autocast (which rounds every product's operands
    and, for RNN and LSTM, h_t at each step; fusedrnn rounds its inputs and
    its results once). The error of an array is its RMS relative to the
    float64 result's: a largest element's error is one rounding of one
    element on either side, and tells the two apart less than the whole."""
    if name in CELLS and options:
        pytest.skip("the cells take no layer options")
    theirs, ours = make(name, **options)
    x = data(name, batch_first=options.get("batch_first", False))
    exact = float64_results(name, ours, x, **options)
    torch_err = results(theirs, x, torch.bfloat16)
    ours_err = results(ours, x, torch.bfloat16)
    for key, want in exact.items():
        e_ours, e_torch = relative_rms(ours_err[key], want), relative_rms(torch_err[key], want)
        assert e_ours <= e_torch, f"{key}: fusedrnn {e_ours:.2e} > torch.nn {e_torch:.2e}"


@pytest.mark.parametrize("name", list(KINDS))
def test_bfloat16_module_matches_float64(name):
    """A module .to(torch.bfloat16) takes and returns bf16, and agrees with the
    float64 result on the same (bf16) values at the bf16 tolerance."""
    _, ours = make(name)
    ours = ours.to(torch.bfloat16)
    x = data(name).to(torch.bfloat16)
    got = results(ours, x)
    want = float64_results(name, ours, x)
    tol = TOLERANCE[BFLOAT16]
    for key, expected in want.items():
        assert got[key].dtype == torch.bfloat16, key
        worst = scaled_errors(got[key].double().numpy(), expected.numpy()).max()
        assert worst <= tol, f"{key}: {worst:.2e} > {tol}"


def test_bfloat16_layer_function_with_lengths_and_reverse():
    """The functions take bf16 tensors with the sequence options: against the
    float64 call on the same values."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 3, D, generator=g).to(torch.bfloat16)
    w_ih = (torch.randn(4 * H, D, generator=g) * 0.3).to(torch.bfloat16)
    w_hh = (torch.randn(4 * H, H, generator=g) * 0.3).to(torch.bfloat16)
    lengths = torch.tensor([6, 0, 3])
    got = ft.lstm_layer(x, None, None, w_ih, w_hh, lengths=lengths, reverse=True)
    want = ft.lstm_layer(x.double(), None, None, w_ih.double(), w_hh.double(), lengths=lengths,
                         reverse=True)
    for g_, w_ in zip(got, want):
        assert g_.dtype == torch.bfloat16
        assert scaled_errors(g_.double().numpy(), w_.numpy()).max() <= TOLERANCE[BFLOAT16]


def test_float16_autocast_computes_in_float32():
    """fusedrnn has no float16: under a float16 autocast the drop-ins run in
    float32, bitwise as without autocast."""
    _, ours = make("LSTM")
    x = data("LSTM")
    plain = results(ours, x)
    half = results(ours, x, torch.float16)
    for key in plain:
        assert half[key].dtype == plain[key].dtype
        assert torch.equal(half[key], plain[key]), key


@pytest.mark.parametrize("dtype", [torch.float16, torch.int32])
def test_unsupported_dtype_is_refused(dtype):
    """Tensors of a dtype fusedrnn has not: a clear error naming the ones it has."""
    x = torch.zeros(3, 2, D, dtype=dtype)
    w_ih, w_hh = torch.zeros(H, D, dtype=dtype), torch.zeros(H, H, dtype=dtype)
    with pytest.raises(RuntimeError, match="supports torch.float32, torch.float64 and "
                                           "torch.bfloat16 only"):
        ft.rnn_layer(x, None, w_ih, w_hh)


def test_bfloat16_mixed_with_float32_is_refused_outside_autocast():
    """Outside autocast, one dtype for every tensor of a call, as in float32."""
    x = torch.zeros(3, 2, D, dtype=torch.bfloat16)
    w_ih, w_hh = torch.zeros(H, D), torch.zeros(H, H)
    with pytest.raises(RuntimeError, match="w_ih has dtype torch.float32, expected "
                                           "torch.bfloat16"):
        ft.rnn_layer(x, None, w_ih, w_hh)
    _, ours = make("GRU")
    with pytest.raises(ValueError, match="dtype"):   # torch.nn's own check, and message
        ours(x)


def test_bfloat16_operator_opcheck():
    """The registered operator in bf16 passes torch's operator checks."""
    g = torch.Generator().manual_seed(4)
    args = (torch.randn(3, 2, D, generator=g).to(torch.bfloat16).requires_grad_(),
            None, None,
            (torch.randn(4 * H, D, generator=g) * 0.3).to(torch.bfloat16).requires_grad_(),
            (torch.randn(4 * H, H, generator=g) * 0.3).to(torch.bfloat16).requires_grad_(),
            None, None, None, None, "tanh", False, False, True)
    torch.library.opcheck(torch.ops.fusedrnn.lstm_layer.default, args,
                          test_utils=("test_schema", "test_faketensor",
                                      "test_aot_dispatch_dynamic"))


def test_autocast_operator_called_directly():
    """The operator itself under autocast (its AutocastCPU kernel): bf16 out for
    an LSTM layer, float32 for a GRU layer (holding bf16's values), as torch.nn's."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3, 2, D, generator=g)
    w = {k: torch.randn(k * H, n, generator=g) * 0.3 for k, n in ((4, D), (3, D))}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        lstm = torch.ops.fusedrnn.lstm_layer(x, None, None, w[4], torch.zeros(4 * H, H), None,
                                             None, None, None, "tanh", False, False, False)
        gru = torch.ops.fusedrnn.gru_layer(x, None, None, w[3], torch.zeros(3 * H, H), None,
                                           None, None, None, "tanh", False, False, False)
    assert lstm[0].dtype == torch.bfloat16
    assert gru[0].dtype == torch.float32
    assert torch.equal(gru[0], bf16_exact(gru[0]))
    assert np.isfinite(lstm[0].float().numpy()).all()


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU", "RNNCell"])
def test_autocast_inference_keeps_bf16_weights_until_they_change(name):
    """Under autocast with no gradient to follow, a module keeps its weights'
    bf16 copies and their pack between calls (_Packs._lowered): results
    bitwise those of a call that casts them anew (one with gradients), and an
    in-place change of a weight (an optimiser's step) is seen at the next call."""
    _, ours = make(name)
    x = data(name)

    def call(grad):
        with torch.autocast("cpu", dtype=torch.bfloat16), torch.set_grad_enabled(grad):
            out = ours(x)
        return (out if isinstance(out, torch.Tensor) else out[0]).detach()

    fresh = call(True)
    assert torch.equal(call(False), fresh)
    assert torch.equal(call(False), fresh)   # the kept copies
    with torch.no_grad():
        next(ours.parameters()).mul_(0.5)
    changed = call(True)
    assert not torch.equal(changed, fresh)
    assert torch.equal(call(False), changed)
