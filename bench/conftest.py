"""The pytest-benchmark suite: `python -m pytest bench`. The default
`python -m pytest` does not collect it (pyproject's testpaths is tests/).

`--bench-quick` runs shapes S and M only, one round of one call each: a smoke
test of the whole suite (CI runs it), not a measurement.
"""

import functools

import numpy as np
import pytest

import fusedrnn
from fusedrnn._bench import PEERS, SHAPES, disagreements, problem


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
    """The Problem of a cell, shape name and dtype, built once: every
    implementation and thread count times the same data, so their results
    can be compared."""
    @functools.cache
    def get(cell, shape, dtype):
        return problem(SHAPES[shape], dtype, np.random.default_rng(0), cell)
    return get


@pytest.fixture(scope="session")
def reference_results(problems):
    """The reference's fwd+bwd results on a cell, shape name and dtype's
    Problem, computed once: what a bfloat16 run is checked against."""
    @functools.cache
    def get(cell, shape, dtype):
        return PEERS["reference"](cell, problems(cell, shape, dtype))["fwd+bwd"]()
    return get


@pytest.fixture(scope="session")
def first_results():
    """(cell, shape, mode, dtype) -> the outputs of the first implementation
    timed on it; later ones are checked against them."""
    return {}


def assert_agree(got, want, dtype, what):
    """{name: array} `got` agrees with `want` (fusedrnn._bench.disagreements, under
    the one tolerance table of fusedrnn._tolerances)."""
    messages = disagreements(got, want, dtype)
    assert not messages, f"{what}: " + "; ".join(messages)


@pytest.fixture(name="assert_agree")
def assert_agree_fixture():
    return assert_agree
