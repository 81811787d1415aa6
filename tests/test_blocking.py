"""Layouts and blocking that the kernel chooses from the sizes of a call:
each choice forced and compared with the NumPy reference, forward and every
gradient, on every ISA this CPU runs."""

import numpy as np
import pytest

import fusedrnn
from helpers import CELLS, DTYPES, assert_matches_reference, flag, mixed_lengths, \
    random_problem, run

pytestmark = pytest.mark.usefixtures("isa")


@flag("lengths")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cell", CELLS)
def test_wide_gate_rows(cell, dtype, lengths):
    """Gate-gradient rows of 2 KB or more (H = 512: G*H >= 512 elements in
    either dtype) are laid out in the backward's workspace at a stride padded
    to an odd number of cache lines (rnn_tmpl.h, spread_ld): the step reads
    them, the deferred products read them in place and transposed."""
    shape = (3, 5, 4, 512)
    for batch_first in (False, True):
        a, d = random_problem(cell, shape, dtype, batch_first=batch_first, seed=7)
        assert_matches_reference(cell, a, d, dtype, f"batch_first={batch_first}: ",
                                 lengths=mixed_lengths(*shape[:2]) if lengths else None,
                                 batch_first=batch_first)


@pytest.fixture
def restore_threads():
    before = fusedrnn.get_num_threads()
    yield
    fusedrnn.set_num_threads(before)


@pytest.mark.parametrize("cell", CELLS)
def test_serial_parts_on_the_team(restore_threads, cell):
    """T*B*G*H >= 2^21, so that the bias sums and the RNN's dz = dy are split
    between threads too (rnn_tmpl.h, threads_for's grains): the results are
    bitwise those of one thread, and agree with the reference. Many rows
    and few units keep it quick on the scalar kernels."""
    a, d = random_problem(cell, (64, 1024, 2, 32), np.float32, seed=3)
    results = []
    for n in (1, 2, 3):
        fusedrnn.set_num_threads(n)
        results.append(run(fusedrnn, cell, a, d))
    for other in results[1:]:
        for name, value in results[0].items():
            assert np.array_equal(value, other[name]), name
    assert_matches_reference(cell, a, d, np.float32)
