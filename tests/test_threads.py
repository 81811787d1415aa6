"""Thread count and floating-point mode: what a call must leave unchanged."""

import numpy as np
import pytest

import fusedrnn

pytestmark = pytest.mark.usefixtures("isa")


@pytest.fixture
def restore_threads():
    before = fusedrnn.get_num_threads()
    yield
    fusedrnn.set_num_threads(before)


def problem(rng, T, B, D, H, dtype, lengths):
    return dict(
        x=rng.standard_normal((T, B, D)).astype(dtype),
        h0=rng.standard_normal((B, H)).astype(dtype),
        w_ih=(rng.standard_normal((H, D)) / np.sqrt(D)).astype(dtype),
        w_hh=(rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype),
    ), dict(lengths=rng.integers(0, T + 1, B) if lengths else None)


# Large enough that both the step (B*H*H) and the GEMMs are split over 2 threads.
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("lengths, reverse", [(False, False), (True, True)], ids=["full", "lengths-reverse"])
def test_bitwise_identical_for_any_thread_count(restore_threads, dtype, lengths, reverse):
    rng = np.random.default_rng(7)
    arrays, opts = problem(rng, 20, 16, 64, 97, dtype, lengths)
    dy = rng.standard_normal((20, 16, 97)).astype(dtype)
    results = []
    for n in (1, 2, 3):
        fusedrnn.set_num_threads(n)
        y, h_n = fusedrnn.rnn_forward(**arrays, reverse=reverse, **opts)
        grads = fusedrnn.rnn_backward(**arrays, y=y, dy=dy, dh_n=h_n, reverse=reverse, **opts)
        results.append((y, h_n) + tuple(grads))
    for n, other in zip((2, 3), results[1:]):
        for name, a, b in zip(("y", "h_n") + fusedrnn.RNNGrads._fields, results[0], other):
            assert np.array_equal(a, b), f"{name} differs between 1 and {n} threads"


def test_denormal_mode_restored():
    """The kernel flushes denormals inside; the caller's mode must come back."""
    tiny = np.finfo(np.float32).tiny
    assert np.float32(tiny) / np.float32(4) > 0, "precondition: denormals on"
    rng = np.random.default_rng(0)
    arrays, opts = problem(rng, 3, 2, 4, 5, np.float32, False)
    fusedrnn.rnn_forward(**arrays)
    denormal = np.array([tiny], np.float32) / np.float32(4)
    assert denormal[0] > 0, "denormals are flushed after a kernel call"
