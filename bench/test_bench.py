"""One benchmark per implementation, cell, shape, mode, dtype and thread
count; each times one run and then checks what the run returned.

The cells are rnn, lstm and gru (fusedrnn._bench.CELLS); fusedrnn.torch has
the rnn only, so its LSTM and GRU cases are not generated. The outside peers
(oneDNN, ONNX Runtime, JAX) are skipped where not installed and for the cases
they do not have (float64 for oneDNN and ONNX Runtime, bfloat16 for ONNX
Runtime and JAX, ONNX Runtime's backward). bfloat16 (with ml_dtypes) runs
the torch modules under torch.autocast, as `python -m fusedrnn bench --dtype
bfloat16` does, and checks every implementation against the reference rather
than against the first one timed.

extra_info records flops, gflops and pct_peak (of fusedrnn.peak_gflops(dtype)
times the thread count), in `--benchmark-json` output.
"""

import itertools

import numpy as np
import pytest

from fusedrnn import _peers, reference
from fusedrnn._bench import CELLS, MODES, PEERS, SHAPES, flops, for_mode, num_threads
from fusedrnn._checks import BFLOAT16

DTYPES = ("float32", "float64") + (("bfloat16",) if BFLOAT16 is not None else ())
THREADS = (1, 2)
QUICK_SHAPES = ("S", "M")
# The reference takes up to seconds per run on L and XL, times
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
        pytest.param(impl, cell, shape, mode, dtype, threads,
                     id=f"{impl}-{cell}-{shape}-{mode}-{dtype}-{threads}thread")
        for impl, cell, shape, mode, dtype, threads in itertools.product(
            PEERS, CELLS, shapes, MODES, DTYPES, THREADS)
        # The compiled torch modules: a compile per case (seconds each) is
        # for `python -m fusedrnn bench --compare torch-compiled`, not here.
        if "compiled" not in impl
        and (impl != "reference" or (shape in REFERENCE_SHAPES and threads in REFERENCE_THREADS))
    ]
    metafunc.parametrize(("impl", "cell", "shape", "mode", "dtype", "threads"), cases)


def expected_shapes(cell, shape, mode):
    """{name: shape} of what a run of `mode` returns."""
    T, B, D, H = SHAPES[shape]
    spec = CELLS[cell]
    G = spec.gates
    shapes = {"y": (T, B, H), "h_n": (B, H), **({"c_n": (B, H)} if spec.lstm else {})}
    if mode == "fwd+bwd":
        every = {"dx": (T, B, D), "dh0": (B, H), "dc0": (B, H), "dw_ih": (G * H, D),
                 "dw_hh": (G * H, H), "dbias": (H,), "db_ih": (G * H,), "db_hh": (G * H,)}
        shapes |= {name: every[name] for name in spec.grads._fields}
    return shapes


def test_cell(benchmark, quick, peak_gflops, problems, reference_results, first_results,
              assert_agree, impl, cell, shape, mode, dtype, threads):
    if impl in ("torch", "fusedrnn.torch"):
        pytest.importorskip("torch")
    p = problems(cell, shape, dtype)
    try:
        runs = PEERS[impl](cell, p)
    except (_peers.PeerUnavailable, _peers.Unsupported) as e:
        pytest.skip(f"{impl}: {e}")
    if mode not in runs:
        pytest.skip(f"{impl} has no {mode}")
    run = runs[mode]
    benchmark.group = f"{cell} {shape} {mode} {dtype}"
    with num_threads(threads):
        outputs = benchmark.pedantic(run, rounds=1, iterations=1) if quick else benchmark(run)

    n_flops = flops(SHAPES[shape], mode, cell)
    benchmark.extra_info["flops"] = n_flops
    if benchmark.stats:  # None under --benchmark-disable
        gflops = n_flops / benchmark.stats.stats.median / 1e9
        benchmark.extra_info["gflops"] = gflops
        benchmark.extra_info["pct_peak"] = 100 * gflops / (peak_gflops(dtype) * threads)

    assert {name: a.shape for name, a in outputs.items()} == expected_shapes(cell, shape, mode)
    for name, a in outputs.items():
        assert np.isfinite(a).all(), f"{name}: not finite"
    start = p._replace(x=p.x[:CHECK_STEPS], dy=p.dy[:CHECK_STEPS])
    ref_y = CELLS[cell].run(reference, start, False)["y"]
    assert_agree({"y": outputs["y"][:CHECK_STEPS]}, {"y": ref_y}, dtype,
                 f"y[:{CHECK_STEPS}] against the reference")

    # Every output against the first implementation and thread count timed
    # on the same problem: fusedrnn on one thread, unless deselected. In
    # bfloat16 each rounds in its own places: every one against the reference.
    key = (cell, shape, mode, dtype)
    if dtype == "bfloat16":
        assert_agree(outputs, for_mode(reference_results(cell, shape, dtype), cell, mode), dtype,
                     "against the reference")
    elif key in first_results:
        first, first_outputs = first_results[key]
        assert_agree(outputs, first_outputs, dtype, f"against {first}")
    else:
        first_results[key] = f"{impl} on {threads} thread(s)", outputs
