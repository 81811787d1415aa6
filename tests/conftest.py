"""The fixtures: the ISA sweep, a watchdog, a guard on what reaches the
kernel, and helpers.py's assert_close (a result against the reference under
the package's one tolerance table), numerical_gradient, change_in_place and
initial_state.

Kernel-running modules opt in to the ISA sweep with
`pytestmark = pytest.mark.usefixtures("isa")` (or by taking `isa` as an
argument); the reference-only tests stay unparametrized.
"""

import faulthandler
import sys

import numpy as np
import pytest

import fusedrnn
import helpers


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


@pytest.fixture(name="assert_close")
def assert_close_fixture():
    return helpers.assert_close


@pytest.fixture(name="numerical_gradient")
def numerical_gradient_fixture():
    return helpers.numerical_gradient


@pytest.fixture(name="change_in_place")
def change_in_place_fixture():
    return helpers.change_in_place


@pytest.fixture(name="initial_state")
def initial_state_fixture():
    return helpers.initial_state
