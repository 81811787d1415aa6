"""Arrays that are C-contiguous but not aligned to their dtype.

`np.frombuffer(buf, np.float32, n, offset=1)` is such an array: its flags say
C-contiguous, so a C-contiguity check alone lets it through, but every float
in it starts one byte past a multiple of 4. The C kernel reads its buffers as
float/double/int64_t pointers, and a misaligned one is undefined behaviour
(UndefinedBehaviorSanitizer aborts on the first load; an auto-vectorised
loop that peels to a 16-byte boundary never gets there and faults). The API
copies such an argument like any other non-conforming input.

Every array argument of rnn_forward and rnn_backward, misaligned in turn,
must (1) reach the kernel as an aligned copy, (2) give bitwise the results of
an aligned copy of itself and (3) be left unchanged. (2) and (3) run in a
child process: if a misaligned buffer did reach the kernel it could crash.
"""

import os
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fusedrnn

pytestmark = pytest.mark.usefixtures("isa")

T, B, D, H = 4, 3, 5, 6
FORWARD = ("x", "h0", "w_ih", "w_hh", "bias", "lengths")
BACKWARD = ("x", "h0", "w_ih", "w_hh", "y", "dy", "dh_n", "lengths")
CASES = [pytest.param(op, name, id=f"{op}-{name}")
         for op, names in (("forward", FORWARD), ("backward", BACKWARD)) for name in names]
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]


def misaligned(a):
    """A copy of `a` in memory that starts one byte past an aligned address:
    C-contiguous, writeable and not aligned to its dtype."""
    view = np.frombuffer(bytearray(a.nbytes + 1), a.dtype, a.size, offset=1).reshape(a.shape)
    view[...] = a
    assert view.flags.c_contiguous and not view.flags.aligned
    return view


def problem(dtype):
    """Every argument of both calls; y is rnn_forward's result for the others."""
    rng = np.random.default_rng(0)
    p = dict(x=rng.normal(size=(T, B, D)).astype(dtype),
             h0=rng.normal(size=(B, H)).astype(dtype),
             w_ih=(0.5 * rng.normal(size=(H, D))).astype(dtype),
             w_hh=(0.5 * rng.normal(size=(H, H))).astype(dtype),
             bias=rng.normal(size=H).astype(dtype),
             dy=rng.normal(size=(T, B, H)).astype(dtype),
             dh_n=rng.normal(size=(B, H)).astype(dtype),
             lengths=np.array([4, 0, 2], np.int64))
    p["y"], _ = fusedrnn.rnn_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["bias"],
                                     lengths=p["lengths"])
    return p


def call(op, p):
    if op == "forward":
        return fusedrnn.rnn_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["bias"],
                                    lengths=p["lengths"])
    return fusedrnn.rnn_backward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["y"], p["dy"],
                                 p["dh_n"], lengths=p["lengths"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op, name", CASES)
def test_misaligned_argument_reaches_the_kernel_as_an_aligned_copy(
        kernel_sees_aligned_arrays, op, name, dtype):
    p = problem(dtype)
    expected = call(op, p)
    p[name] = misaligned(p[name])
    before = p[name].copy()
    actual = call(op, p)
    assert kernel_sees_aligned_arrays[-1] == op
    for e, a in zip(expected, actual):
        assert_array_equal(a, e, strict=True)
    assert_array_equal(p[name], before, strict=True)


CHILD = """
import numpy as np
import fusedrnn
T, B, D, H = 7, 5, 19, 23   # odd sizes: vector loops get remainders
FORWARD = ("x", "h0", "w_ih", "w_hh", "bias", "lengths")
BACKWARD = ("x", "h0", "w_ih", "w_hh", "y", "dy", "dh_n", "lengths")

def misaligned(a):
    view = np.frombuffer(bytearray(a.nbytes + 1), a.dtype, a.size, offset=1).reshape(a.shape)
    view[...] = a
    assert view.flags.c_contiguous and not view.flags.aligned
    return view

def call(op, p):
    if op == "forward":
        return fusedrnn.rnn_forward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["bias"],
                                    lengths=p["lengths"])
    return fusedrnn.rnn_backward(p["x"], p["h0"], p["w_ih"], p["w_hh"], p["y"], p["dy"],
                                 p["dh_n"], lengths=p["lengths"])

fusedrnn.set_num_threads(2)
for dtype in (np.float32, np.float64):
    rng = np.random.default_rng(1)
    p = dict(x=rng.normal(size=(T, B, D)).astype(dtype),
             h0=rng.normal(size=(B, H)).astype(dtype),
             w_ih=(0.3 * rng.normal(size=(H, D))).astype(dtype),
             w_hh=(0.3 * rng.normal(size=(H, H))).astype(dtype),
             bias=rng.normal(size=H).astype(dtype),
             dy=rng.normal(size=(T, B, H)).astype(dtype),
             dh_n=rng.normal(size=(B, H)).astype(dtype),
             lengths=np.array([7, 0, 3, 6, 1], np.int64))
    p["y"], _ = call("forward", p)
    for op, names in (("forward", FORWARD), ("backward", BACKWARD)):
        expected = call(op, p)
        every = {n: misaligned(p[n]) for n in names}       # all of them at once
        for changed in [{n: every[n]} for n in names] + [every]:
            q = dict(p, **changed)
            actual = call(op, q)
            for e, a in zip(expected, actual):
                assert a.dtype == e.dtype and np.array_equal(a, e), (op, list(changed))
            for n, a in changed.items():
                assert np.array_equal(a, p[n]), f"{op} changed its input {n}"
print("same")
"""


def test_misaligned_arguments_give_the_aligned_results(isa, tmp_path):
    """Each argument misaligned alone, then all at once, for both dtypes and
    both calls: bitwise the aligned results, inputs unchanged. In a child
    process, where a crash or a sanitizer abort is a failure, not the end of
    the test run."""
    env = dict(os.environ, FUSEDRNN_ISA=isa)
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "same", \
        f"exit status {done.returncode}: {done.stderr[-3000:]}"
