"""The pytest-benchmark suite: `python -m pytest bench`. The default
`python -m pytest` does not collect it (pyproject's testpaths is tests/).

`--bench-quick` runs shapes S and M only, one round of one call each: a smoke
test of the whole suite (CI runs it), not a measurement.
"""

import functools

import numpy as np
import pytest

import fusedrnn
from fusedrnn._bench import SHAPES, problem


def pytest_addoption(parser):
    parser.addoption("--bench-quick", action="store_true",
                     help="shapes S and M only, one round each: a smoke test")


@pytest.fixture(scope="session")
def quick(request):
    return request.config.getoption("--bench-quick")


@pytest.fixture(scope="session")
def peak_gflops():
    """fusedrnn.peak_gflops(dtype), measured on first use, once per dtype."""
    return functools.cache(fusedrnn.peak_gflops)


@pytest.fixture(scope="session")
def problems():
    """The Problem of a shape name and dtype, built once: every implementation
    and thread count times the same data, so their results can be compared."""
    @functools.cache
    def get(shape, dtype):
        return problem(SHAPES[shape], dtype, np.random.default_rng(0))
    return get


@pytest.fixture(scope="session")
def first_results():
    """(shape, mode, dtype) -> the outputs of the first implementation timed
    on it; later ones are checked against them."""
    return {}


# Two implementations agree on element i within tol * (|a_i| + rms(a)): as
# the tolerance of tests/conftest.py, relative for large elements and
# absolute at the array's typical size for small ones (gradient sums after
# cancellation). Both sides round here, over T steps of dot products up to
# 1760 terms long; fusedrnn and torch differ by 6e-6 in float32 and 2e-14 in
# float64 on XL, well inside these.
AGREEMENT = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-11}


def assert_agree(got, want, dtype, name):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{name}: shape {got.shape}, expected {want.shape}"
    rms = np.sqrt(np.mean(want ** 2))
    error = np.abs(got - want)
    # Written so that a NaN counts as a failure.
    bad = ~(error <= AGREEMENT[np.dtype(dtype)] * (np.abs(want) + rms))
    assert not bad.any(), (f"{name}: {bad.sum()} of {bad.size} elements off, "
                           f"max error {error.max():.3g}, rms {rms:.3g}")


@pytest.fixture(name="assert_agree")
def assert_agree_fixture():
    return assert_agree
