"""The micro-kernels' edges, through the API on every ISA: every batch size
from 1 to past two row tiles (AVX2's 6 rows, AVX-512's 12) and every hidden
size from 1 to past two column panels (16 or 32 floats, 8 or 16 doubles),
so that each kernel variant (one row, two rows, short last tiles, panel
pairs, masked last vectors) and the transposes' block edges (D = 19: two
8 x 8 blocks and a rest) meet every remainder. Inputs sit one element past
an aligned start, as a slice of a caller's buffer would."""

import numpy as np
import pytest

import fusedrnn
from fusedrnn import reference

pytestmark = pytest.mark.usefixtures("isa")

BATCHES = list(range(1, 14)) + [23, 24, 25]
HIDDEN = list(range(1, 34)) + [63, 64, 65]
T, D = 3, 19


def unaligned(rng, shape, dtype):
    """A C-contiguous array starting one element past its buffer's start."""
    n = int(np.prod(shape))
    return rng.normal(size=n + 1).astype(dtype)[1:].reshape(shape)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("sizes", ["batch", "hidden"])
def test_every_tile_remainder(dtype, sizes, assert_close):
    """Batch sizes at H = 33, or hidden sizes at B = 5; forward and every
    gradient against the reference. lengths give a short last step to some
    sequences, so row counts also shrink within a call."""
    shapes = [(B, 33) for B in BATCHES] if sizes == "batch" else [(5, H) for H in HIDDEN]
    rng = np.random.default_rng(7)
    for B, H in shapes:
        scale = 1 / np.sqrt(H + D)
        args = dict(x=unaligned(rng, (T, B, D), dtype), h0=unaligned(rng, (B, H), dtype),
                    w_ih=unaligned(rng, (H, D), dtype) * dtype(scale),
                    w_hh=unaligned(rng, (H, H), dtype) * dtype(scale))
        lengths = np.array([T - b % 2 for b in range(B)])
        bias = unaligned(rng, (H,), dtype)
        y, h_n = fusedrnn.rnn_forward(**args, bias=bias, lengths=lengths)
        y_ref, h_n_ref = reference.rnn_forward(**args, bias=bias, lengths=lengths)
        assert_close(y, y_ref, dtype, f"y B={B} H={H}")
        assert_close(h_n, h_n_ref, dtype, f"h_n B={B} H={H}")
        dy, dh_n = unaligned(rng, y.shape, dtype), unaligned(rng, h_n.shape, dtype)
        grads = fusedrnn.rnn_backward(**args, y=y, dy=dy, dh_n=dh_n, lengths=lengths)
        expected = reference.rnn_backward(**args, y=y, dy=dy, dh_n=dh_n, lengths=lengths)
        for name, got, want in zip(grads._fields, grads, expected):
            assert_close(got, want, dtype, f"{name} B={B} H={H}")
