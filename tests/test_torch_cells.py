"""fusedrnn.torch's cells: RNNCell, LSTMCell and GRUCell against torch.nn's
cells with the same weights (values and every gradient, batched and
unbatched, with and without a state, on every ISA), their operators under
opcheck and torch.compile without graph breaks, a loop of steps against the
layer over the same sequence, torch's errors for bad input; and second
derivatives, through layers and cells, refused with a RuntimeError rather
than returned as zeros.
"""

import pytest

torch = pytest.importorskip("torch")

import fusedrnn.torch as ftorch  # noqa: E402

pytestmark = pytest.mark.usefixtures("isa")

B, D, H = 3, 4, 6
CELLS = ["RNNCell", "LSTMCell", "GRUCell"]
CLOSE = {torch.float32: dict(rtol=1e-4, atol=1e-5),
         torch.float64: dict(rtol=1e-10, atol=1e-12)}


def data(*shape, dtype=torch.float64, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=dtype, generator=g).requires_grad_(grad)


def twins(name, dtype=torch.float64, **options):
    """A torch.nn cell and its drop-in with the same weights."""
    reference = getattr(torch.nn, name)(D, H, dtype=dtype, **options)
    fused = getattr(ftorch, name)(D, H, dtype=dtype, **options)
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def state(name, batch, dtype, grad=True):
    shape = (batch, H) if batch else (H,)
    h = data(*shape, dtype=dtype, seed=1, grad=grad)
    return (h, data(*shape, dtype=dtype, seed=2, grad=grad)) if name == "LSTMCell" else h


def flat(result):
    return list(result) if isinstance(result, tuple) else [result]


def leaves(x, hx):
    return [x, *(flat(hx) if hx is not None else [])]


def results_and_grads(module, x, hx):
    """The step's results, and the gradients of a loss weighting every
    element differently with respect to x, the states and the parameters."""
    out = flat(module(x, hx))
    loss = sum((o * torch.linspace(-1, 2, o.numel(), dtype=o.dtype).view_as(o)).sum()
               for o in out)
    wrt = leaves(x, hx) + list(module.parameters())
    return out, torch.autograd.grad(loss, wrt)


@pytest.mark.parametrize("batch", [B, 1, 0])
@pytest.mark.parametrize("with_state", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name,options", [
    ("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"}), ("RNNCell", {"bias": False}),
    ("LSTMCell", {}), ("LSTMCell", {"bias": False}), ("GRUCell", {}), ("GRUCell", {"bias": False})])
def test_cell_equals_torch(name, options, dtype, with_state, batch):
    reference, fused = twins(name, dtype, **options)
    x = data(*((batch, D) if batch else (D,)), dtype=dtype, grad=True)
    hx = state(name, batch, dtype) if with_state else None
    want, want_grads = results_and_grads(reference, x, hx)
    got, got_grads = results_and_grads(fused, x, hx)
    assert [g.shape for g in got] == [w.shape for w in want]
    for g, w in zip([*got, *got_grads], [*want, *want_grads]):
        torch.testing.assert_close(g, w, **CLOSE[dtype])


@pytest.mark.parametrize("name", CELLS)
def test_cell_under_no_grad_and_without_grad(name):
    """No input wants a gradient, or torch.no_grad: the results need no
    graph node, and equal the training call's."""
    reference, fused = twins(name)
    x, hx = data(B, D), state(name, B, torch.float64, grad=False)
    want = flat(reference(x, hx))
    for p in fused.parameters():
        p.requires_grad_(False)
    for got in (flat(fused(x, hx)), flat(torch.no_grad()(fused)(x, hx))):
        assert all(g.grad_fn is None for g in got)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, **CLOSE[torch.float64])


@pytest.mark.parametrize("name", CELLS)
def test_cell_loop_equals_layer(name):
    """Stepping a cell over a sequence gives the layer's outputs and
    gradients (the same weights): the kernel's step is the layer's."""
    layer_name = name[:-4]
    cell = getattr(ftorch, name)(D, H, dtype=torch.float64)
    layer = getattr(ftorch, layer_name)(D, H, dtype=torch.float64)
    layer.load_state_dict({k + "_l0": v for k, v in cell.state_dict().items()})
    x = data(5, B, D, grad=True)
    hx = None
    outputs = []
    for t in range(x.shape[0]):
        hx = cell(x[t], hx)
        outputs.append(hx[0] if name == "LSTMCell" else hx)
    stepped = torch.stack(outputs)
    y, _ = layer(x)
    torch.testing.assert_close(stepped, y, **CLOSE[torch.float64])
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    g_cell = torch.autograd.grad((stepped * weights).sum(), [x, *cell.parameters()])
    g_layer = torch.autograd.grad((y * weights).sum(), [x, *layer.parameters()])
    for a, b in zip(g_cell, g_layer):
        torch.testing.assert_close(a, b, **CLOSE[torch.float64])


@pytest.mark.parametrize("name", CELLS)
def test_compiled_cell_loop_has_no_graph_break(name):
    """torch.compile(fullgraph=True) of a loop of steps: one graph, with
    eager's results and gradients."""
    torch._dynamo.reset()
    cell = getattr(ftorch, name)(D, H)

    def loop(x, hx):
        for t in range(x.shape[0]):
            hx = cell(x[t], hx)
        return hx[0] if name == "LSTMCell" else hx

    x = data(4, B, D, dtype=torch.float32, grad=True)
    hx = state(name, B, torch.float32, grad=False)
    compiled = torch.compile(loop, fullgraph=True, backend="aot_eager")
    got, want = compiled(x, hx), loop(x, hx)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    g_got, = torch.autograd.grad(got.sum(), x)
    g_want, = torch.autograd.grad(want.sum(), x)
    torch.testing.assert_close(g_got, g_want, rtol=0, atol=0)


CELL_OPS = {"RNNCell": torch.ops.fusedrnn.rnn_cell, "LSTMCell": torch.ops.fusedrnn.lstm_cell,
            "GRUCell": torch.ops.fusedrnn.gru_cell}
CELL_BACKWARD_OPS = {"RNNCell": torch.ops.fusedrnn.rnn_cell_backward,
                     "LSTMCell": torch.ops.fusedrnn.lstm_cell_backward,
                     "GRUCell": torch.ops.fusedrnn.gru_cell_backward}


def cell_op_args(name, training):
    """(input, hx, cx, w_ih, w_hh, b_ih, b_hh, nonlinearity, training)."""
    module = getattr(torch.nn, name)(D, H, dtype=torch.float64)
    h = state(name, B, torch.float64, grad=training)
    hx, cx = h if name == "LSTMCell" else (h, None)
    weights = [p.detach().requires_grad_(training) for p in module.parameters()]
    return (data(B, D, grad=training), hx, cx, *weights, "tanh", training)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("name", CELLS)
def test_opcheck_cell(name, training):
    torch.library.opcheck(CELL_OPS[name], cell_op_args(name, training))


@pytest.mark.parametrize("name", CELLS)
def test_opcheck_cell_backward(name):
    args = [a.detach() if isinstance(a, torch.Tensor) else a for a in cell_op_args(name, True)]
    h, c, reserve = CELL_OPS[name](*args)
    dh = data(B, H, seed=5)
    dc = data(B, H, seed=6) if name == "LSTMCell" else None
    torch.library.opcheck(CELL_BACKWARD_OPS[name], (*args[:7], h, reserve, dh, dc, "tanh"))


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell"])
def test_opcheck_cell_with_bf16_products(name):
    """bf16_products=True, what the AutocastCPU kernel passes for LSTMCell
    and GRUCell: float32 tensors, the forward (with autograd) and the
    backward; on other dtypes it is refused."""
    args = [a.float() if isinstance(a, torch.Tensor) else a for a in cell_op_args(name, True)]
    torch.library.opcheck(CELL_OPS[name], (*args, True))
    args = [a.detach() if isinstance(a, torch.Tensor) else a for a in args]
    h, c, reserve = CELL_OPS[name](*args, True)
    dh = data(B, H, seed=5, dtype=torch.float32)
    dc = data(B, H, seed=6, dtype=torch.float32) if name == "LSTMCell" else None
    torch.library.opcheck(CELL_BACKWARD_OPS[name], (*args[:7], h, reserve, dh, dc, "tanh", True))
    with pytest.raises(RuntimeError, match="bf16_products is for float32 tensors, got "
                                           "torch.float64"):
        CELL_OPS[name](*cell_op_args(name, False), True)


def test_operators_equal_the_eager_path():
    """Under a dispatch mode (which the eager path leaves to the operators),
    the operators give the eager path's results and gradients bitwise."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Seen(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    cell = ftorch.LSTMCell(D, H, dtype=torch.float64)
    x, hx = data(B, D, grad=True), state("LSTMCell", B, torch.float64)
    results = []
    for mode in (None, Seen()):
        if mode is None:
            out = cell(x, hx)
        else:
            with mode:
                out = cell(x, hx)
        grads = torch.autograd.grad(out[0].sum() + out[1].sum(), [x, *hx, *cell.parameters()])
        results.append([*out, *grads])
    assert "fusedrnn.lstm_cell.default" in mode.ops
    for a, b in zip(*results):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", CELLS)
def test_cell_errors_are_torchs(name):
    """Bad sizes and dimensions get torch's own exceptions and messages."""
    reference, fused = twins(name)
    bad = [(data(B, D + 1), None), (data(B, D, 1), None),
           (data(B, D), state(name, B + 1, torch.float64, grad=False))]
    for x, hx in bad:
        with pytest.raises(Exception) as want:
            reference(x, hx)
        with pytest.raises(type(want.value), match=str(want.value)[:30].replace("(", r"\(")):
            fused(x, hx)


@pytest.mark.parametrize("name", CELLS)
def test_cell_refuses_other_dtypes(name):
    fused = getattr(ftorch, name)(D, H).half()
    with pytest.raises(RuntimeError, match="supports torch.float32, torch.float64 and torch.bfloat16 only"):
        fused(data(B, D).half())


# --- second derivatives -------------------------------------------------------

def layer_or_cell(kind):
    if kind == "layer":
        module = ftorch.GRU(D, H, dtype=torch.float64)
        return module, lambda x: module(x[None])[0][0]
    module = ftorch.LSTMCell(D, H, dtype=torch.float64)
    return module, lambda x: module(x)[0]


@pytest.mark.parametrize("kind", ["layer", "cell"])
def test_gradient_penalty_raises(kind):
    """A gradient penalty (create_graph=True, then a backward through the
    gradient) raises instead of training on zero second derivatives."""
    module, f = layer_or_cell(kind)
    x = data(B, D, grad=True)
    g, = torch.autograd.grad(f(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="second derivatives .* not supported"):
        g.pow(2).sum().backward()
    # The first derivative itself is still right: create_graph does not change it.
    g_plain, = torch.autograd.grad(f(x).sum(), x)
    assert torch.equal(g.detach(), g_plain)


@pytest.mark.parametrize("kind", ["layer", "cell"])
def test_gradgradcheck_raises(kind):
    _, f = layer_or_cell(kind)
    with pytest.raises(RuntimeError, match="second derivatives .* not supported"):
        torch.autograd.gradgradcheck(f, (data(B, D, grad=True),))


def test_torch_nn_second_derivatives_are_not_zero():
    """What the refusal guards against: the true second derivative here is
    not zero (so silently returning zeros would be wrong)."""
    module = torch.nn.GRU(D, H, dtype=torch.float64)
    x = data(B, D, grad=True)
    g, = torch.autograd.grad(module(x[None])[0].sum(), x, create_graph=True)
    gg, = torch.autograd.grad(g.pow(2).sum(), x)
    assert gg.abs().max() > 1e-3


# --- weights packed once --------------------------------------------------------

def packs_of(module):
    """What a module keeps, by key: a pack's tensor (kept with the problems
    checked for it), the bf16 copies of the weights."""
    return {key: kept[1][0] if key[0] == "pack" else kept[1]
            for key, kept in module.__dict__.get("_fusedrnn_packs", {}).items()
            if kept[1] is not None}


CHANGES = {
    "optimiser step": lambda m: torch.optim.SGD(m.parameters(), lr=0.1).step(),
    "load_state_dict": lambda m: m.load_state_dict(
        {k: v + 0.25 for k, v in m.state_dict().items()}),
    "data assignment": lambda m: setattr(next(iter(m.parameters())), "data",
                                         next(iter(m.parameters())).data * 2),
    "copy_ under no_grad": lambda m: torch.no_grad()(
        lambda: list(m.parameters())[1].copy_(list(m.parameters())[1] * -1))(),
    "parameter replaced": lambda m: setattr(
        m, next(iter(m._parameters)),
        torch.nn.Parameter(next(iter(m.parameters())).detach() * 3)),
}


@pytest.mark.parametrize("change", CHANGES)
@pytest.mark.parametrize("name", ["LSTMCell", "GRU"])
def test_packs_are_never_stale(name, change):
    """A drop-in keeps its weights packed between calls; every way a
    parameter can change makes it pack again, and its results are always
    torch.nn's with the current weights."""
    torch.manual_seed(0)
    if name == "GRU":
        fused = ftorch.GRU(D, H, num_layers=2, bidirectional=True, dtype=torch.float64)
        reference = torch.nn.GRU(D, H, num_layers=2, bidirectional=True, dtype=torch.float64)
        x = data(5, B, D)
    else:
        fused, reference = getattr(ftorch, name)(D, H, dtype=torch.float64), None
        reference = getattr(torch.nn, name)(D, H, dtype=torch.float64)
        x = data(B, D)
    x.requires_grad_()
    for step in range(2):
        reference.load_state_dict(fused.state_dict())
        out = flat(fused(x))
        out[0].sum().backward()   # gives the optimiser its gradients
        with torch.no_grad():
            got = flat(fused(x))
        before = packs_of(fused)
        with torch.no_grad():
            again = flat(fused(x))
        after = packs_of(fused)
        assert before and after.keys() == before.keys() and all(
            after[key] is kept for key, kept in before.items()), \
            "unchanged weights: the packs are reused"
        want = flat(reference(x))
        for g, a, w in zip(got, again, want):
            torch.testing.assert_close(g, w, **CLOSE[torch.float64])
            assert torch.equal(g, a)
        CHANGES[change](fused)
    with torch.no_grad():
        got = flat(fused(x))
    reference.load_state_dict(fused.state_dict())
    for g, w in zip(got, flat(reference(x))):
        torch.testing.assert_close(g, w, **CLOSE[torch.float64])


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRU"])
def test_weights_stepped_after_every_call_are_not_packed(name):
    """Trained with an optimiser's step after every call, a drop-in stops
    packing its weights (each pack would serve one call) once a pack has
    served a single call, and packs again for weights that serve two. Its
    results and gradients are torch.nn's throughout."""
    torch.manual_seed(0)
    reference, fused = twins(name)
    x = data(*((5,) if name == "GRU" else ()), B, D, grad=True)
    optimisers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (reference, fused)]
    kept = []
    for step in range(4):
        for module, optimiser in zip((reference, fused), optimisers):
            optimiser.zero_grad()
            flat(module(x))[0].sum().backward()
        for r, f in zip(reference.parameters(), fused.parameters()):
            torch.testing.assert_close(f.grad, r.grad, **CLOSE[torch.float64])
        kept.append(bool(packs_of(fused)))
        for optimiser in optimisers:
            optimiser.step()
    assert kept == [True, False, False, False]
    with torch.no_grad():
        for call in range(2):
            got = flat(fused(x))
            kept.append(bool(packs_of(fused)))
        want = flat(reference(x))
    assert kept[4:] == [False, True]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **CLOSE[torch.float64])


@pytest.mark.parametrize("name", ["LSTMCell", "GRUCell", "GRU"])
def test_a_kept_call_check_does_not_outlive_what_it_checked(name):
    """A module keeps what it checked of a call with its pack, under the
    call's shapes, dtype and options: a call of another batch size is
    computed for that size, one of another dtype than the weights' is still
    refused, and a weight replaced by one of the wrong shape too."""
    torch.manual_seed(0)
    reference, fused = twins(name, dtype=torch.float32)
    def x_of(batch, dtype=torch.float32):
        return data(*((5,) if name == "GRU" else ()), batch, D, dtype=dtype)
    with torch.no_grad():
        for batch in (B, B + 2, B):
            for g, w in zip(flat(fused(x_of(batch))), flat(reference(x_of(batch)))):
                torch.testing.assert_close(g, w, **CLOSE[torch.float32])
        # (torch.nn.GRU's own check comes first, with its ValueError)
        with pytest.raises((RuntimeError, ValueError), match=r"torch\.float64"):
            fused(x_of(B, torch.float64))
        weight = next(n for n in fused._parameters if n.startswith("weight_hh"))
        setattr(fused, weight, torch.nn.Parameter(torch.randn(H + 1, H)))
        with pytest.raises(RuntimeError, match=f"({weight}|w_hh) has shape"):
            fused(x_of(B))


@pytest.mark.parametrize("name", ["LSTMCell", "GRU"])
def test_a_kept_call_check_follows_the_thread_count(name, monkeypatch):
    """What a module keeps of a call's check holds the call's thread count:
    a call after fusedrnn.set_num_threads (or torch.set_num_threads, when
    fusedrnn's count was not chosen) runs on the new count, not on the
    first call's."""
    import fusedrnn
    from fusedrnn import _engine
    ran_on = []
    forward = _engine.forward

    def recording(problem, *buffers):
        ran_on.append(problem.threads)
        forward(problem, *buffers)

    monkeypatch.setattr(_engine, "forward", recording)
    fused = twins(name, dtype=torch.float32)[1]
    x = data(*((5,) if name == "GRU" else ()), B, D, dtype=torch.float32)
    previous, chosen = fusedrnn.get_num_threads(), _engine.num_threads_chosen()
    torch_threads = torch.get_num_threads()
    try:
        with torch.no_grad():
            for n in (1, 2, 1):
                fusedrnn.set_num_threads(n)
                fused(x)
            _engine.restore_num_threads(previous, False)
            for n in (2, 1):
                torch.set_num_threads(n)
                fused(x)
    finally:
        _engine.restore_num_threads(previous, chosen)
        torch.set_num_threads(torch_threads)
    assert ran_on == [1, 2, 1, 2, 1]


def test_packs_follow_the_isa_and_dtype():
    import fusedrnn
    cell = ftorch.LSTMCell(D, H)
    x = data(B, D, dtype=torch.float32)
    with torch.no_grad():
        want = cell(x)
        isas = fusedrnn.available_isas()
        previous = fusedrnn.get_isa()
        try:
            for isa in isas:
                fusedrnn.set_isa(isa)
                for g, w in zip(cell(x), want):
                    torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)
        finally:
            fusedrnn.set_isa(previous)
        cell.double()
        got = cell(x.double())
    assert got[0].dtype == torch.float64


def test_packs_are_not_pickled():
    import copy
    import io
    cell = ftorch.GRUCell(D, H)
    with torch.no_grad():
        cell(data(B, D, dtype=torch.float32))
    assert packs_of(cell)
    buffer = io.BytesIO()
    torch.save(cell, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert not packs_of(loaded) and not packs_of(copy.deepcopy(cell))
    with torch.no_grad():
        torch.testing.assert_close(loaded(data(B, D, dtype=torch.float32)),
                                   cell(data(B, D, dtype=torch.float32)), rtol=0, atol=0)


# --- resets in the drop-in layers ------------------------------------------------

def pieces_of(flags):
    """The [start, end) pieces a row of reset flags cuts a sequence into."""
    starts = [0] + [t for t in range(1, len(flags)) if flags[t]]
    return list(zip(starts, starts[1:] + [len(flags)]))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("options", [{}, {"num_layers": 2, "bidirectional": True}],
                         ids=["one", "stacked-bidirectional"])
@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_resets_equal_the_pieces_run_apart(name, options, batch_first):
    """A drop-in given resets gives, for every sequence, torch.nn's module run
    on each piece separately from hx: outputs and the gradients of x, hx
    and the weights (which sum over the pieces)."""
    T, layers = 7, options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    reference = getattr(torch.nn, name)(D, H, dtype=torch.float64, batch_first=batch_first,
                                        **options)
    fused = getattr(ftorch, name)(D, H, dtype=torch.float64, batch_first=batch_first, **options)
    fused.load_state_dict(reference.state_dict())
    x = data(*((B, T, D) if batch_first else (T, B, D)), grad=True)
    h = data(layers, B, H, seed=3, grad=True)
    hx = (h, data(layers, B, H, seed=4, grad=True)) if name == "LSTM" else h
    flags = torch.zeros(T, B, dtype=torch.bool)
    flags[3, 0] = flags[5, 0] = flags[1, 2] = flags[0, 1] = True
    resets = flags.T.contiguous() if batch_first else flags
    y, _ = fused(x, hx, resets=resets)
    time_dim = 1 if batch_first else 0
    rows = []
    for b in range(B):
        xb = x.narrow(1 - time_dim, b, 1)
        hb = tuple(s[:, b:b + 1] for s in flat(hx))
        parts = [reference(xb.narrow(time_dim, t0, t1 - t0), hb if name == "LSTM" else hb[0])[0]
                 for t0, t1 in pieces_of(flags[:, b].tolist())]
        rows.append(torch.cat(parts, time_dim))
    want = torch.cat(rows, 1 - time_dim)
    torch.testing.assert_close(y, want, **CLOSE[torch.float64])
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)
    wrt = [x, *flat(hx), *fused.parameters()]
    got = torch.autograd.grad((y * weights).sum(), wrt)
    want_grads = torch.autograd.grad((want * weights).sum(), [x, *flat(hx),
                                                              *reference.parameters()])
    for g, w in zip(got, want_grads):
        torch.testing.assert_close(g, w, **CLOSE[torch.float64])


def test_resets_under_compile_and_unbatched():
    torch._dynamo.reset()
    torch._dynamo.config.allow_rnn = True
    try:
        lstm = ftorch.LSTM(D, H)
        x = data(6, D, dtype=torch.float32)
        resets = torch.tensor([0, 0, 1, 0, 1, 0], dtype=torch.bool)
        want, _ = lstm(x, resets=resets)
        compiled = torch.compile(lambda x, r: lstm(x, resets=r)[0], fullgraph=True,
                                 backend="aot_eager")
        torch.testing.assert_close(compiled(x, resets), want, rtol=0, atol=0)
        # the piece from step 4 on is the module run there from zeros
        torch.testing.assert_close(want[4:], lstm(x[4:])[0], rtol=0, atol=0)
    finally:
        torch._dynamo.config.allow_rnn = False


def test_resets_refused_where_they_cannot_apply():
    lstm = ftorch.LSTM(D, H)
    with pytest.raises(RuntimeError, match="resets has shape"):
        lstm(data(5, B, D, dtype=torch.float32), resets=torch.zeros(5, B + 1, dtype=torch.bool))
    with pytest.raises(RuntimeError, match="resets must hold bools or integers"):
        lstm(data(5, B, D, dtype=torch.float32), resets=torch.zeros(5, B))
    packed = torch.nn.utils.rnn.pack_sequence([data(3, D, dtype=torch.float32)])
    with pytest.raises(ValueError, match="PackedSequence"):
        lstm(packed, resets=torch.zeros(3, 1, dtype=torch.bool))


@pytest.mark.parametrize("name", ["LSTM", "GRUCell"])
def test_gradients_of_the_parameters_alone(name):
    """Where autograd wants no dx (x needs no gradient) and no dh0 (hx is
    None), the kernel leaves dx out and writes dh0 into scratch memory: the
    parameters' gradients are still torch.nn's, call after call."""
    reference = getattr(torch.nn, name)(D, H, dtype=torch.float64)
    fused = getattr(ftorch, name)(D, H, dtype=torch.float64)
    fused.load_state_dict(reference.state_dict())
    for seed in range(3):
        x = data(*((5, B, D) if name == "LSTM" else (B, D)), seed=seed)
        for module in (reference, fused):
            module.zero_grad()
            out = flat(module(x))[0]
            (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum() \
                .backward()
        for a, b in zip(fused.parameters(), reference.parameters()):
            torch.testing.assert_close(a.grad, b.grad, **CLOSE[torch.float64])


def test_unwanted_gradients_too_large_for_the_scratch():
    """An unwanted dh0 and dc0 (h0 None) that do not fit in the scratch
    memory (B*H floats over 1 MiB) are written into tensors of their own that
    live until the kernel has run (a dx so written was freed before, and the
    kernel wrote into freed memory): the parameters' gradients are
    torch.nn's."""
    T_, B_, D_, H_ = 2, 1100, 8, 256
    reference = torch.nn.LSTM(D_, H_)
    fused = ftorch.LSTM(D_, H_)
    fused.load_state_dict(reference.state_dict())
    x = torch.randn(T_, B_, D_)
    for module in (reference, fused):
        module(x)[0].sum().backward()
    for a, b in zip(fused.parameters(), reference.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRUCell"])
def test_gradients_nobody_wants_are_not_computed(name):
    """dx of an x that needs no gradient, and the weight gradients of frozen
    weights, are not computed: the kernel is given no memory for them (and
    skips their products); the gradients that are wanted are the same, bit
    for bit, as when every one is."""
    import fusedrnn
    fused = getattr(ftorch, name)(D, H, dtype=torch.float64)
    x = data(*((5, B, D) if name != "GRUCell" else (B, D)), seed=3)
    backward, seen = fusedrnn._kernel.backward, []

    def spy(problem, inputs, grad_inputs, grads):
        seen.append(grads)
        return backward(problem, inputs, grad_inputs, grads)

    def grads(x_grad, frozen):
        fused.zero_grad()
        for w in (fused.weight_ih_l0, fused.weight_hh_l0) if name != "GRUCell" else \
                (fused.weight_ih, fused.weight_hh):
            w.requires_grad_(not frozen)
        x_ = x.clone().requires_grad_(x_grad)
        flat(fused(x_))[0].sum().backward()
        return [x_.grad] + [p.grad for p in fused.parameters()]

    want = grads(True, False)
    monkey = pytest.MonkeyPatch()
    monkey.setattr(fusedrnn._kernel, "backward", spy)
    try:
        got = grads(False, True)
    finally:
        monkey.undo()
    assert [seen[0].dx, seen[0].dw_ih, seen[0].dw_hh] == [None, None, None]
    assert got[0] is None and got[1] is None and got[2] is None
    for g, w in zip(got[3:], want[3:]):
        assert torch.equal(g, w)
