"""ONNX export of models holding fusedrnn.torch's drop-ins, with both of
torch.onnx.export's exporters (the TorchScript-based one, dynamo=False, and
the torch.export-based one, dynamo=True): every exported model passes the
onnx checker, holds ONNX's own RNN, LSTM or GRU nodes and nothing of
fusedrnn's, and ONNX Runtime computes on it what the eager drop-in computes.

The layers' matrix is every cell (RNN tanh and relu, LSTM, GRU) x
bidirectional x 1 or 2 layers x batch_first x packed input, with initial
states; in full with the TorchScript-based exporter (a fraction of a second
an export), pairwise with the torch.export-based one (seconds an export):
every cell with every value of each other axis, and every pair of values of
any two of those axes (test_dynamo_matrix_covers_every_pair). Beside it: no
states and unbatched input, sequences packed sorted, dynamic batch and time
(a drop-in inside a model), the cells stepped over a sequence, the layer
functions, and resets= refused by name.

Packed input reaches each exporter the one way it takes: the TorchScript-based
exporter turns pack_padded_sequence ... pad_packed_sequence inside the model
into sequence_lens (torch's own rewrite, as for torch.nn), while the
torch.export-based one has no translation of pack_padded_sequence, and takes
a PackedSequence as the model's input (its four tensors become the ONNX
model's inputs).
"""

import io
import itertools
import warnings

import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import fusedrnn.torch as ftorch  # noqa: E402

T, B, D, H = 5, 3, 4, 6
LENGTHS = [3, 5, 1]   # varied, unsorted, the longest T
CLOSE = dict(rtol=1e-5, atol=1e-5)   # float32: ONNX Runtime's kernels sum in another order
EXPORTERS = {"torchscript": False, "dynamo": True}

# (the drop-in's class name, its nonlinearity, if any)
CELLS = [("RNN", "tanh"), ("RNN", "relu"), ("LSTM", None), ("GRU", None)]
CELL_IDS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]
AXES = ("bidirectional", "num_layers", "batch_first", "packed")


def axes(values):
    """The axes' values of a 0/1 vector: num_layers is 1 or 2."""
    bidirectional, two_layers, batch_first, packed = values
    return bool(bidirectional), 1 + two_layers, bool(batch_first), bool(packed)


FULL = [(cell, *axes(v)) for cell in CELLS for v in itertools.product((0, 1), repeat=4)]
# Each cell with one vector of the four two-valued axes and its complement:
# every cell sees both values of every axis. The vectors are chosen so that
# each pair of axes is equal in one (0000) and differs in another (0011,
# 0101 or 0110), which with the complements gives every pair of axes all
# four pairs of values.
_VECTORS = [(0, 0, 0, 0), (0, 0, 1, 1), (0, 1, 0, 1), (0, 1, 1, 0)]
PAIRWISE = [(cell, *axes(v)) for cell, vector in zip(CELLS, _VECTORS)
            for v in (vector, tuple(1 - a for a in vector))]


def matrix_id(case):
    (name, nonlinearity), bidirectional, layers, batch_first, packed = case
    return "-".join([CELL_IDS[CELLS.index((name, nonlinearity))],
                     "bi" if bidirectional else "uni", f"{layers}layers",
                     "batch_first" if batch_first else "time_first",
                     "packed" if packed else "padded"])


def data(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def leaves(value):
    """The tensors of nested tuples (a PackedSequence's four, less a None),
    in order: the inputs an exported model takes, the outputs it gives."""
    if isinstance(value, torch.Tensor):
        return [value]
    if value is None:
        return []
    return [t for v in value for t in leaves(v)]


def export(model, args, dynamo):
    """The checked ModelProto of model(*args) from torch.onnx.export."""
    model.eval()
    if dynamo:
        pytest.importorskip("onnxscript")   # the torch.export-based exporter's translations
        proto = torch.onnx.export(model, args, dynamo=True, verbose=False).model_proto
    else:
        buffer = io.BytesIO()
        with warnings.catch_warnings():   # torch deprecates this exporter, and says so
            warnings.simplefilter("ignore")
            torch.onnx.export(model, args, buffer, dynamo=False)
        proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    return proto


def assert_runs_as_eager(model, args, dynamo, operator, nodes):
    """Exports model(*args), checks that it holds `nodes` ONNX `operator`
    nodes of the standard domain and nothing outside it, and that ONNX
    Runtime's results on it are the eager model's."""
    proto = export(model, args, dynamo)
    ops = [(node.domain, node.op_type) for node in proto.graph.node]
    assert ops.count(("", operator)) == nodes, ops
    assert all(domain in ("", "ai.onnx") for domain, _ in ops), ops
    session = ort.InferenceSession(proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    feeds = leaves(args)
    assert len(session.get_inputs()) == len(feeds)
    got = session.run(None, {i.name: t.numpy() for i, t in zip(session.get_inputs(), feeds)})
    with torch.no_grad():
        want = leaves(model(*args))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert w.abs().max() > 0.05   # something computed, not zeros on both sides
        torch.testing.assert_close(torch.from_numpy(g), w, **CLOSE)


class PackPadded(torch.nn.Module):
    """A model on padded input and lengths that packs it for its layer, as
    the TorchScript-based exporter takes packing."""

    def __init__(self, rnn, enforce_sorted=False):
        super().__init__()
        self.rnn, self.enforce_sorted = rnn, enforce_sorted

    def forward(self, x, lengths, hx=None):
        batch_first = self.rnn.batch_first
        packed = pack_padded_sequence(x, lengths, batch_first=batch_first,
                                      enforce_sorted=self.enforce_sorted)
        y, h_n = self.rnn(packed, hx)
        y, _ = pad_packed_sequence(y, batch_first=batch_first,
                                   total_length=x.shape[1 if batch_first else 0])
        return y, h_n


class OnPacked(torch.nn.Module):
    """A model on a PackedSequence, as the torch.export-based exporter takes
    packing: returns the packed rows of the output."""

    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, packed, hx=None):
        y, h_n = self.rnn(packed, hx)
        return y.data, h_n


def layer_case(name, nonlinearity, bidirectional, layers, batch_first, packed, dynamo,
               states=True):
    """(model, args, expected nodes) of one case of the layers' matrix."""
    options = {} if nonlinearity is None else {"nonlinearity": nonlinearity}
    rnn = getattr(ftorch, name)(D, H, num_layers=layers, bidirectional=bidirectional,
                                batch_first=batch_first, **options)
    with torch.no_grad():   # biases large enough for relu to leave most units on
        for seed, p in enumerate(rnn.parameters(), 10):   # each direction's its own
            p.copy_(data(*p.shape, seed=seed) * 0.4)
    directions = 2 if bidirectional else 1
    hx = None
    if states:
        h0 = data(layers * directions, B, H, seed=3)
        hx = (h0, data(layers * directions, B, H, seed=4)) if name == "LSTM" else h0
    x = data(*((B, T, D) if batch_first else (T, B, D)), seed=1)
    lengths = torch.tensor(LENGTHS)
    if not packed:
        model, args = rnn, (x, hx)
    elif dynamo:
        model = OnPacked(rnn)
        args = (pack_padded_sequence(x, lengths, batch_first=batch_first, enforce_sorted=False),
                hx)
    else:
        model, args = PackPadded(rnn), (x, lengths, hx)
    # torch.nn's translation makes one node per layer, both directions in
    # it; fusedrnn's one per layer and direction, as its kernel calls are.
    return model, args, layers * (directions if dynamo else 1)


def test_dynamo_matrix_covers_every_pair():
    """Any two axes of the matrix, the cell one of them, take every pair of
    their values in PAIRWISE."""
    for i, j in itertools.combinations(range(len(AXES) + 1), 2):
        pairs = {(case[i], case[j]) for case in PAIRWISE}
        assert pairs == {(case[i], case[j]) for case in FULL}, (i, j)


@pytest.mark.parametrize("case", FULL, ids=matrix_id)
def test_layers_torchscript_exporter(case):
    (name, nonlinearity), *options = case
    model, args, nodes = layer_case(name, nonlinearity, *options, dynamo=False)
    assert_runs_as_eager(model, args, False, name, nodes)


@pytest.mark.parametrize("case", PAIRWISE, ids=matrix_id)
def test_layers_dynamo_exporter(case):
    (name, nonlinearity), *options = case
    model, args, nodes = layer_case(name, nonlinearity, *options, dynamo=True)
    assert_runs_as_eager(model, args, True, name, nodes)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_no_states_and_unbatched_input(exporter):
    """Without hx (zeros), and on an unbatched (T, D) sequence."""
    dynamo = EXPORTERS[exporter]
    lstm = ftorch.LSTM(D, H, num_layers=2, bidirectional=True)
    for x in (data(T, B, D, seed=1), data(T, D, seed=2)):
        assert_runs_as_eager(lstm, (x,), dynamo, "LSTM", 4 if dynamo else 2)


class Tagger(torch.nn.Module):
    """A drop-in inside a model, a linear head after it."""

    def __init__(self):
        super().__init__()
        self.rnn = ftorch.GRU(D, H, num_layers=2, bidirectional=True, batch_first=True)
        self.head = torch.nn.Linear(2 * H, 3)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_dynamic_batch_and_time(exporter):
    """Exported with the batch and time axes dynamic (each exporter's way of
    saying so), the model runs on other sizes than the example's."""
    model = Tagger().eval()
    example = data(2, T, D, seed=1)
    if EXPORTERS[exporter]:
        pytest.importorskip("onnxscript")
        axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("time")}
        proto = torch.onnx.export(model, (example,), dynamo=True, verbose=False,
                                  dynamic_shapes={"x": axes}).model_proto
    else:
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), buffer, dynamo=False, input_names=["x"],
                              dynamic_axes={"x": {0: "batch", 1: "time"}})
        proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for batch, steps in ((3, 2), (1, 9)):
        x = data(batch, steps, D, seed=batch)
        with torch.no_grad():
            want = model(x)
        torch.testing.assert_close(torch.from_numpy(session.run(None, {name: x.numpy()})[0]),
                                   want, **CLOSE)


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_packed_sorted(exporter):
    """Sequences packed longest first (enforce_sorted=True: no sorted_indices)."""
    dynamo = EXPORTERS[exporter]
    rnn = ftorch.GRU(D, H, bidirectional=True, batch_first=True)
    x, lengths = data(B, T, D, seed=1), torch.tensor(sorted(LENGTHS, reverse=True))
    if dynamo:
        model, args = OnPacked(rnn), (pack_padded_sequence(x, lengths, batch_first=True),)
        assert args[0].sorted_indices is None
    else:
        model, args = PackPadded(rnn, enforce_sorted=True), (x, lengths)
    assert_runs_as_eager(model, args, dynamo, "GRU", 2 if dynamo else 1)


class Steps(torch.nn.Module):
    """A cell stepped over a sequence, as a decoder's loop does."""

    def __init__(self, cell):
        super().__init__()
        self.cell = cell

    def forward(self, x, hx):
        outputs = []
        for x_t in x:
            hx = self.cell(x_t, hx)
            outputs.append(hx[0] if isinstance(hx, tuple) else hx)
        return torch.stack(outputs), hx


@pytest.mark.parametrize("exporter", EXPORTERS)
@pytest.mark.parametrize("cell", CELLS, ids=CELL_IDS)
def test_cells(exporter, cell):
    """The cells stepped over a sequence. The TorchScript-based exporter
    writes torch.nn's cells' products and activations; the torch.export-based
    one a node of the layer's operator per step (a sequence of one)."""
    name, nonlinearity = cell
    dynamo = EXPORTERS[exporter]
    options = {} if nonlinearity is None else {"nonlinearity": nonlinearity}
    module = getattr(ftorch, name + "Cell")(D, H, **options)
    h = data(B, H, seed=3)
    hx = (h, data(B, H, seed=4)) if name == "LSTM" else h
    assert_runs_as_eager(Steps(module), (data(T, B, D, seed=1), hx), dynamo, name,
                         T if dynamo else 0)


class Layer(torch.nn.Module):
    """One of fusedrnn.torch's layer functions on a module's weights, with
    lengths, reversed and batch-first."""

    def __init__(self, function, nonlinearity=None):
        super().__init__()
        self.function, self.nonlinearity = function, nonlinearity
        gates = {"rnn_layer": 1, "lstm_layer": 4, "gru_layer": 3}[function]
        self.w_ih = torch.nn.Parameter(data(gates * H, D, seed=5) * 0.4)
        self.w_hh = torch.nn.Parameter(data(gates * H, H, seed=6) * 0.4)
        self.b_ih = torch.nn.Parameter(data(gates * H, seed=7) * 0.4)

    def forward(self, x, h0, lengths):
        options = dict(lengths=lengths, reverse=True, batch_first=True)
        if self.function == "lstm_layer":
            return ftorch.lstm_layer(x, h0, h0 * 0.5, self.w_ih, self.w_hh, self.b_ih, None,
                                     **options)
        if self.nonlinearity:
            options["nonlinearity"] = self.nonlinearity
        return getattr(ftorch, self.function)(x, h0, self.w_ih, self.w_hh, self.b_ih, None,
                                              **options)


# rnn_layer with the one activation torch.nn's RNN lacks.
FUNCTIONS = [("rnn_layer", "sigmoid", "RNN"), ("lstm_layer", None, "LSTM"),
             ("gru_layer", None, "GRU")]


@pytest.mark.parametrize("function, nonlinearity, operator", FUNCTIONS,
                         ids=[f[0] for f in FUNCTIONS])
def test_layer_functions_dynamo_exporter(function, nonlinearity, operator):
    """The layer functions, one bias of two given, with lengths (as
    sequence_lens: zeros past each one in y) reversed and batch-first."""
    args = (data(B, T, D, seed=1), data(B, H, seed=2), torch.tensor(LENGTHS))
    assert_runs_as_eager(Layer(function, nonlinearity), args, True, operator, 1)


def test_layer_functions_torchscript_exporter_refused():
    """Only the modules export through the TorchScript-based exporter: the
    functions are refused by name, pointing to dynamo=True."""
    args = (data(B, T, D, seed=1), data(B, H, seed=2), torch.tensor(LENGTHS))
    with pytest.raises(RuntimeError, match=r"fusedrnn\.torch\.gru_layer exports to ONNX "
                                           r"with torch\.onnx\.export\(\.\.\., dynamo=True\)"):
        export(Layer("gru_layer"), args, dynamo=False)


class WithResets(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = ftorch.LSTM(D, H)

    def forward(self, x, resets):
        return self.rnn(x, resets=resets)[0]


@pytest.mark.parametrize("exporter", EXPORTERS)
def test_resets_refused(exporter):
    """resets= has no ONNX form: the export fails naming it, and the model
    still computes with it in eager mode afterwards."""
    model = WithResets()
    x, resets = data(T, B, D, seed=1), torch.zeros(T, B, dtype=torch.bool)
    resets[2, 1] = True
    with pytest.raises(RuntimeError, match="resets= cannot be exported to ONNX"):
        export(model, (x, resets), EXPORTERS[exporter])
    restarted = model(x, resets)
    torch.testing.assert_close(restarted[2:, 1], model.rnn(x[2:, 1:2])[0][:, 0])
    assert not torch.equal(restarted, model(x, torch.zeros_like(resets)))

