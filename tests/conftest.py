"""Shared by the kernel tests: the ISA fixture and the one tolerance table.

Kernel-running modules opt in to the ISA sweep with
`pytestmark = pytest.mark.usefixtures("isa")` (or by taking `isa` as an
argument); the reference-only tests stay unparametrized.

Tests get `assert_close` as a fixture rather than by `from conftest import`,
which only works when pytest puts tests/ on sys.path (not with
--import-mode=importlib).
"""

import faulthandler
import sys

import numpy as np
import pytest

import fusedrnn


@pytest.fixture
def watchdog():
    """For tests whose failure could be a hang: after 5 minutes, print every
    thread's stack and end the process, so that CI fails instead of stalling.
    Written to the real stderr, which pytest's capture may have replaced."""
    faulthandler.dump_traceback_later(300, exit=True, file=sys.__stderr__)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(params=fusedrnn.available_isas())
def isa(request):
    """Forces one ISA for the test and restores the previous choice after, so
    that docs/design.md §11's "the suite runs on every ISA" holds."""
    previous = fusedrnn.get_isa()
    fusedrnn.set_isa(request.param)
    yield request.param
    fusedrnn.set_isa(previous)


@pytest.fixture
def kernel_sees_aligned_arrays(monkeypatch):
    """Every array the kernel (fusedrnn._kernel.forward, .backward) is handed
    must be C-contiguous and aligned to its dtype, or the test fails. A call
    that breaks the rule is refused before the kernel runs, so that a
    misaligned read cannot take the test process down (under
    UndefinedBehaviorSanitizer it aborts). Yields a list that gets the name
    of every kernel function called, so that a test can tell the kernel ran."""
    from fusedrnn import _kernel
    calls = []

    def guard(name, run):
        def checked(problem, *groups):
            # Buffers come in tuples (inputs, outputs, ...), as arrays or as
            # the addresses fusedrnn.torch passes; the problem names the dtype.
            itemsize = np.dtype(problem.dtype).itemsize
            bad = [(g, i) for g, group in enumerate(groups) for i, a in enumerate(group)
                   if (isinstance(a, np.ndarray) and not (a.flags.c_contiguous and a.flags.aligned))
                   or (isinstance(a, int) and a % itemsize)]
            assert not bad, (f"_kernel.{name}: buffers (group, index) {bad} are not C-contiguous "
                             f"and aligned")
            calls.append(name)
            return run(problem, *groups)
        monkeypatch.setattr(_kernel, name, checked)

    guard("forward", _kernel.forward)
    guard("backward", _kernel.backward)
    yield calls


# Kernel against reference, per dtype. The bound on element i is
#     tol * (|expected_i| + rms(expected)),
# relative for the large elements and absolute, at the array's typical
# magnitude, for the small ones: an element that is a sum of terms much larger
# than itself (a gradient entry after cancellation) carries the rounding error
# of those terms, not of its own size. The float32 value leaves room for
# vectorised tanh/sigmoid approximations and for the recurrence amplifying
# rounding over T steps; float64 leaves room for the same at double precision.
TOLERANCE = {
    np.dtype(np.float32): 2e-4,
    np.dtype(np.float64): 1e-10,
}


def assert_close(actual, expected, dtype, name):
    """`actual` (a kernel output) has `dtype`, the shape of `expected` (the
    reference's float64 result) and agrees with it within TOLERANCE[dtype]."""
    dtype = np.dtype(dtype)
    expected = np.asarray(expected, dtype=np.float64)
    assert isinstance(actual, np.ndarray), f"{name}: expected an ndarray, got {type(actual)}"
    assert actual.dtype == dtype, f"{name}: expected dtype {dtype}, got {actual.dtype}"
    assert actual.shape == expected.shape, \
        f"{name}: expected shape {expected.shape}, got {actual.shape}"
    if expected.size == 0:
        return
    tol = TOLERANCE[dtype]
    rms = np.sqrt(np.mean(expected ** 2))
    error = np.abs(actual.astype(np.float64) - expected)
    bad = ~(error <= tol * (np.abs(expected) + rms))  # written so that NaN counts as a failure
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise AssertionError(
            f"{name}: {bad.sum()} of {bad.size} elements off, max error {np.max(error):.3g} "
            f"(tolerance {tol:g} x (|expected| + rms {rms:.3g})); "
            f"first at {first}: got {float(actual[first]):.17g}, expected {expected[first]:.17g}")


@pytest.fixture(name="assert_close")
def assert_close_fixture():
    return assert_close


def numerical_gradient(f, a, eps=1e-6):
    """Central differences of the scalar f() with respect to every element of
    the array a, which f() reads; a is perturbed in place and restored."""
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        saved = a[i]
        a[i] = saved + eps
        plus = f()
        a[i] = saved - eps
        minus = f()
        a[i] = saved
        grad[i] = (plus - minus) / (2 * eps)
    return grad


@pytest.fixture(name="numerical_gradient")
def numerical_gradient_fixture():
    return numerical_gradient


def change_in_place(params, how):
    """Change every array of `params` in place, as an optimiser step or
    load_state_dict does between a forward and its backward. Returns the
    state dict to load for "load_state_dict", else None."""
    if how == "sgd_step":
        fusedrnn.SGD(params, lr=0.5).step({k: np.ones_like(p) for k, p in params.items()})
    elif how == "load_state_dict":
        return {k: np.full_like(p, 0.25) for k, p in params.items()}
    else:  # assignment into the array, as a user would do by hand
        for p in params.values():
            p[...] = -p
    return None


@pytest.fixture(name="change_in_place")
def change_in_place_fixture():
    return change_in_place


def initial_state(cell, shape, rng):
    """Random initial state as an ElmanRNN (or layer) of `cell` takes it: one
    array of `shape`, or for "lstm" the pair (h0, c0)."""
    if cell == "lstm":
        return rng.normal(size=shape), rng.normal(size=shape)
    return rng.normal(size=shape)


@pytest.fixture(name="initial_state")
def initial_state_fixture():
    return initial_state
