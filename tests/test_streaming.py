"""Streaming: a sequence fed in chunks, the state carried from one call to
the next, is bitwise the one call over the whole sequence, for every cell,
in the NumPy API and the PyTorch drop-ins (layers, and cells stepped one
frame at a time), on every ISA and thread count. Each step's arithmetic
does not depend on how many steps a call holds."""

import numpy as np
import pytest

import fusedrnn

pytestmark = pytest.mark.usefixtures("isa")

T, B, D, H = 11, 3, 5, 34   # H not a multiple of any ISA's panel width
CHUNKS = [[1] * T, [4, 1, 6], [T - 1, 1]]


def weights(G, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) * 0.3
            for s in ((G * H, D), (G * H, H), (G * H,), (G * H,))]


def run_numpy(cell, x, state, w):
    """One call: (y, the state after it)."""
    if cell == "lstm":
        o = fusedrnn.lstm_forward(x, *state, *w)
        return o.y, (o.h_n, o.c_n)
    if cell == "gru":
        o = fusedrnn.gru_forward(x, state[0], *w)
        return o.y, (o.h_n,)
    y, h_n = fusedrnn.rnn_forward(x, state[0], w[0], w[1], w[2])
    return y, (h_n,)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("chunks", CHUNKS, ids=["frames", "uneven", "two"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_numpy_chunks_equal_one_call(cell, dtype, chunks, threads):
    G = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    w = weights(G, dtype)
    x = np.random.default_rng(1).standard_normal((T, B, D)).astype(dtype)
    state0 = tuple(np.random.default_rng(2 + i).standard_normal((B, H)).astype(dtype)
                   for i in range(2 if cell == "lstm" else 1))
    previous = fusedrnn.get_num_threads()
    fusedrnn.set_num_threads(threads)
    try:
        y_all, final = run_numpy(cell, x, state0, w)
        state, pieces, t = state0, [], 0
        for n in chunks:
            y, state = run_numpy(cell, x[t:t + n], state, w)
            pieces.append(y)
            t += n
    finally:
        fusedrnn.set_num_threads(previous)
    np.testing.assert_array_equal(np.concatenate(pieces), y_all)
    for a, b in zip(state, final):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("chunks", CHUNKS, ids=["frames", "uneven", "two"])
@pytest.mark.parametrize("module", ["RNN", "LSTM", "GRU"])
def test_drop_in_chunks_and_cells_equal_one_call(module, chunks):
    torch = pytest.importorskip("torch")
    import fusedrnn.torch as ftorch
    torch.manual_seed(0)
    layer = getattr(ftorch, module)(D, H)
    cell = getattr(ftorch, module + "Cell")(D, H)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    x = torch.randn(T, B, D)
    with torch.no_grad():
        y_all, final = layer(x)
        state, pieces, t = None, [], 0
        for n in chunks:
            y, state = layer(x[t:t + n], state)
            pieces.append(y)
            t += n
        # The cell, a frame at a time: the layer's kernel step by step.
        h = None
        frames = []
        for t in range(T):
            h = cell(x[t], h)
            frames.append(h[0] if module == "LSTM" else h)
    assert torch.equal(torch.cat(pieces), y_all)
    for a, b in zip(state if module == "LSTM" else (state,),
                    final if module == "LSTM" else (final,)):
        assert torch.equal(a, b)
    assert torch.equal(torch.stack(frames), y_all)
