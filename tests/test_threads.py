"""Thread count and floating-point mode: what a call must leave unchanged."""

import numpy as np
import pytest

import fusedrnn
from helpers import CELLS, forward, random_problem, run_child

pytestmark = pytest.mark.usefixtures("isa")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", CELLS)
def test_bitwise_identical_for_any_thread_count(cell, dtype, isa):
    """1, 2 and 3 threads give the same bits, forward and backward, with and
    without lengths, reverse and batch_first, on sizes whose step (B*G*H*H)
    and products are split between threads; T = B = 2: the weight
    gradients' K of 2 and 4 on the kernel table's few_k, split too. In a
    child: a thread pool bug can hang, and the child's timeout turns that
    into a failure."""
    run_child(f"""
        import numpy as np
        import fusedrnn
        from helpers import run, random_problem
        cell, dtype = {cell!r}, np.{dtype}
        fusedrnn.set_isa({isa!r})
        for shape in [(20, 16, 64, 97), (6, 8, 40, 96), (2, 2, 512, 1024)]:
            T, B = shape[:2]
            rng = np.random.default_rng(7)
            for lengths, reverse, batch_first in [(False, False, False), (True, True, False),
                                                  (True, False, True)]:
                a, d = random_problem(cell, shape, dtype, batch_first=batch_first, seed=3)
                options = dict(lengths=rng.integers(0, T + 1, B) if lengths else None,
                               reverse=reverse, batch_first=batch_first)
                results = {{}}
                for n in (1, 2, 3):
                    fusedrnn.set_num_threads(n)
                    results[n] = run(fusedrnn, cell, a, d, **options)
                for n in (2, 3):
                    for name, value in results[1].items():
                        assert np.array_equal(value, results[n][name]), (
                            f"{{shape}} {{options}}: {{name}} differs between 1 and {{n}} threads")
    """)


def test_denormal_mode_restored():
    """The kernel flushes denormals inside; the caller's mode must come back."""
    tiny = np.finfo(np.float32).tiny
    assert np.float32(tiny) / np.float32(4) > 0, "precondition: denormals on"
    a, _ = random_problem("rnn", (3, 2, 4, 5), np.float32)
    forward(fusedrnn, "rnn", a)
    denormal = np.array([tiny], np.float32) / np.float32(4)
    assert denormal[0] > 0, "denormals are flushed after a kernel call"
