"""One benchmark per implementation, shape, mode, dtype and thread count; each
times one run and then checks what the run returned.

extra_info records flops, gflops and pct_peak (of fusedrnn.peak_gflops(dtype)
times the thread count), in `--benchmark-json` output.
"""

import itertools

import numpy as np
import pytest

from fusedrnn import reference
from fusedrnn._bench import MODES, PEERS, SHAPES, flops, num_threads

DTYPES = ("float32", "float64")
THREADS = (1, 2)
QUICK_SHAPES = ("S", "M")
# The reference takes up to over a second per run on L and XL, times
# pytest-benchmark's five rounds at the least. The thread count is
# fusedrnn's and torch's; NumPy's BLAS under the reference picks its own, so
# a second count would time the same thing again.
REFERENCE_SHAPES = ("S", "M")
REFERENCE_THREADS = (1,)
# y_t depends on x up to step t only: the reference on this many steps checks
# the start of y at a fraction of a full run's cost.
CHECK_STEPS = 2


def pytest_generate_tests(metafunc):
    shapes = QUICK_SHAPES if metafunc.config.getoption("--bench-quick") else SHAPES
    cases = [
        pytest.param(impl, shape, mode, dtype, threads,
                     id=f"{impl}-{shape}-{mode}-{dtype}-{threads}thread")
        for impl, shape, mode, dtype, threads in itertools.product(PEERS, shapes, MODES,
                                                                   DTYPES, THREADS)
        if impl != "reference" or (shape in REFERENCE_SHAPES and threads in REFERENCE_THREADS)
    ]
    metafunc.parametrize(("impl", "shape", "mode", "dtype", "threads"), cases)


def test_rnn(benchmark, quick, peak_gflops, problems, first_results, assert_agree,
             impl, shape, mode, dtype, threads):
    if impl in ("torch", "fusedrnn.torch"):
        pytest.importorskip("torch")
    p = problems(shape, dtype)
    run = PEERS[impl](p)[mode]
    benchmark.group = f"{shape} {mode} {dtype}"
    with num_threads(threads):
        outputs = benchmark.pedantic(run, rounds=1, iterations=1) if quick else benchmark(run)

    n_flops = flops(SHAPES[shape], mode)
    benchmark.extra_info["flops"] = n_flops
    if benchmark.stats:  # None under --benchmark-disable
        gflops = n_flops / benchmark.stats.stats.median / 1e9
        benchmark.extra_info["gflops"] = gflops
        benchmark.extra_info["pct_peak"] = 100 * gflops / (peak_gflops(dtype) * threads)

    y, h_n, *grads = outputs
    arrays = {"y": y, "h_n": h_n, **(grads[0]._asdict() if grads else {})}
    T, B, D, H = SHAPES[shape]
    expected = {"y": (T, B, H), "h_n": (B, H), "dx": (T, B, D), "dh0": (B, H), "dw_ih": (H, D),
                "dw_hh": (H, H), "dbias": (H,)}
    assert {name: a.shape for name, a in arrays.items()} == {name: expected[name] for name in arrays}
    for name, a in arrays.items():
        assert np.isfinite(a).all(), f"{name}: not finite"
    ref_y, _ = reference.rnn_forward(p.x[:CHECK_STEPS], p.h0, p.w_ih, p.w_hh, p.bias)
    assert_agree(y[:CHECK_STEPS], ref_y, dtype, f"y[:{CHECK_STEPS}] against the reference")

    # Every output against the first implementation and thread count timed
    # on the same problem: fusedrnn on one thread, unless deselected.
    key = (shape, mode, dtype)
    if key in first_results:
        first, first_arrays = first_results[key]
        for name, a in arrays.items():
            assert_agree(a, first_arrays[name], dtype, f"{name} against {first}")
    else:
        first_results[key] = f"{impl} on {threads} thread(s)", arrays
