"""Layouts and blocking that the kernel chooses from the sizes of a call:
each choice forced and compared with the NumPy reference, forward and every
gradient, on every ISA this CPU runs."""

import numpy as np
import pytest

import fusedrnn
from fusedrnn import _bench, reference

pytestmark = pytest.mark.usefixtures("isa")

DTYPES = [np.float32, np.float64]


@pytest.mark.parametrize("seq", ["padded", "packed"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_wide_gate_rows(cell, dtype, seq):
    """Gate-gradient rows of 2 KB or more (H = 512: G*H >= 512 elements in
    either dtype) are laid out in the backward's workspace at a stride padded
    to an odd number of cache lines (rnn_tmpl.h, spread_ld): the step reads
    them, the deferred products read them in place and transposed."""
    p = _bench.problem((3, 5, 4, 512), dtype, np.random.default_rng(7), cell, seq)
    want = _bench.CELLS[cell].run(reference, p, True)
    for batch_first in (False, True):
        q = p
        if batch_first:
            q = p._replace(x=p.x.swapaxes(0, 1).copy(), dy=p.dy.swapaxes(0, 1).copy())
        got = _bench.CELLS[cell].run(fusedrnn, q, True, batch_first=batch_first)
        if batch_first:
            got = dict(got, y=got["y"].swapaxes(0, 1), dx=got["dx"].swapaxes(0, 1))
        assert _bench.disagreements(got, want, dtype) == []


@pytest.fixture
def restore_threads():
    before = fusedrnn.get_num_threads()
    yield
    fusedrnn.set_num_threads(before)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_serial_parts_on_the_team(restore_threads, cell):
    """T*B*G*H >= 2^21, so that the bias sums and the RNN's dz = dy are split
    between threads too (rnn_tmpl.h, threads_for's grains): the results are
    bitwise those of one thread, and agree with the reference. Many rows
    and few units keep it quick on the scalar kernels."""
    p = _bench.problem((64, 1024, 2, 32), np.float32, np.random.default_rng(3), cell)
    results = []
    for n in (1, 2, 3):
        fusedrnn.set_num_threads(n)
        results.append(_bench.CELLS[cell].run(fusedrnn, p, True))
    for other in results[1:]:
        for name, a in results[0].items():
            assert np.array_equal(a, other[name]), name
    assert _bench.disagreements(results[1], _bench.CELLS[cell].run(reference, p, True),
                                np.float32) == []

