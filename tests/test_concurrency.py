"""Concurrency: the GIL is released while the kernel runs; Python threads
calling forward and backward at once get bitwise the results of serial calls;
the thread count may change between calls and while other threads compute.

Four callers share one worker pool: whichever finds it busy runs on its own
thread, which gives the same bits (threads.c), so every comparison here is
exact.
"""

import threading
import time

import numpy as np
import pytest

import fusedrnn

pytestmark = pytest.mark.usefixtures("isa", "watchdog")  # watchdog: a deadlock fails the run

CALLERS = 4


@pytest.fixture
def restore_threads():
    before = fusedrnn.get_num_threads()
    yield
    fusedrnn.set_num_threads(before)


def problem(seed, dtype, T=20, B=16, D=64, H=97):
    """Large enough that the GEMMs and the step split across 2 threads."""
    rng = np.random.default_rng(seed)
    arrays = dict(x=rng.standard_normal((T, B, D)).astype(dtype),
                  h0=rng.standard_normal((B, H)).astype(dtype),
                  w_ih=(rng.standard_normal((H, D)) / np.sqrt(D)).astype(dtype),
                  w_hh=(rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype))
    options = dict(nonlinearity=("tanh", "relu", "sigmoid")[seed % 3], reverse=bool(seed % 2),
                   lengths=rng.integers(0, T + 1, B))
    return arrays, options, rng.standard_normal((T, B, H)).astype(dtype)


def forward_and_backward(arrays, options, dy):
    y, h_n = fusedrnn.rnn_forward(**arrays, **options)
    grads = fusedrnn.rnn_backward(**arrays, y=y, dy=dy, dh_n=h_n, **options)
    return (y, h_n) + tuple(grads)


def run_concurrently(fn, n):
    """fn(i) on n threads released together; returns the results in order and
    re-raises the first exception a thread met."""
    results, errors = [None] * n, []
    start = threading.Barrier(n)

    def body(i):
        try:
            start.wait()
            results[i] = fn(i)
        except BaseException as e:  # noqa: B036 - handed to the main thread
            errors.append(e)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
        assert not t.is_alive(), "a caller hangs"
    if errors:
        raise errors[0]
    return results


def assert_bitwise_equal(results, serial):
    names = ("y", "h_n") + fusedrnn.RNNGrads._fields
    for i, (got, want) in enumerate(zip(results, serial)):
        for name, a, b in zip(names, got, want):
            assert a.dtype == b.dtype and np.array_equal(a, b), \
                f"caller {i}: {name} differs from the serial call"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_concurrent_callers_match_serial_calls(restore_threads, dtype):
    fusedrnn.set_num_threads(2)
    problems = [problem(seed, dtype) for seed in range(CALLERS)]
    serial = [forward_and_backward(*p) for p in problems]
    for _ in range(5):  # a few rounds: who gets the pool varies
        assert_bitwise_equal(run_concurrently(lambda i: forward_and_backward(*problems[i]), CALLERS),
                             serial)


def test_thread_count_changed_while_others_compute(restore_threads):
    """One thread keeps changing the count (1, 2, 3, 8) while four compute:
    each call reads the count once, and every count gives the same bits."""
    problems = [problem(seed, np.float64) for seed in range(CALLERS)]
    fusedrnn.set_num_threads(1)
    serial = [forward_and_backward(*p) for p in problems]
    stop = threading.Event()

    def churn():
        counts = [1, 2, 3, 8]
        k = 0
        while not stop.is_set():
            fusedrnn.set_num_threads(counts[k % len(counts)])
            k += 1
            time.sleep(0.0005)

    churner = threading.Thread(target=churn)
    churner.start()
    try:
        for _ in range(5):
            assert_bitwise_equal(
                run_concurrently(lambda i: forward_and_backward(*problems[i]), CALLERS), serial)
    finally:
        stop.set()
        churner.join()


def test_thread_count_changed_between_calls(restore_threads):
    """Growing and shrinking the count between calls (the pool starts workers
    on demand and keeps them) never changes a result."""
    arrays, options, dy = problem(5, np.float32)
    results = []
    for n in (1, 3, 2, 8, 1, 64, 2):
        fusedrnn.set_num_threads(n)
        results.append(forward_and_backward(arrays, options, dy))
    assert_bitwise_equal(results[1:], results[:1] * (len(results) - 1))


@pytest.mark.parametrize("op", ["forward", "backward"])
def test_gil_released_during_kernel_call(restore_threads, op):
    """While one thread is inside a long kernel call, this thread keeps
    running Python. With the GIL held, it would stand still for the whole
    call: the longest pause it sees must be well under the call's length."""
    fusedrnn.set_num_threads(1)
    arrays, _, dy = problem(0, np.float64, T=30, B=64, D=256, H=256)
    y, _ = fusedrnn.rnn_forward(**arrays)
    call = ((lambda: fusedrnn.rnn_forward(**arrays)) if op == "forward"
            else (lambda: fusedrnn.rnn_backward(**arrays, y=y, dy=dy)))
    span = []

    def worker():
        for _ in range(3):  # long enough to dwarf scheduling noise
            start = time.perf_counter()
            call()
            span.append((start, time.perf_counter()))

    thread = threading.Thread(target=worker)
    ticks = []
    thread.start()
    while thread.is_alive():
        ticks.append(time.perf_counter())
        time.sleep(1e-4)  # gives up the GIL, then needs it back to go on
    thread.join()
    for start, end in span:
        inside = [start] + [t for t in ticks if start < t < end] + [end]
        longest_pause = max(np.diff(inside))
        assert longest_pause < 0.5 * (end - start), \
            (f"this thread stood still for {longest_pause * 1e3:.1f} ms of a "
             f"{(end - start) * 1e3:.1f} ms kernel call: the GIL was held")
