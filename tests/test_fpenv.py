"""Floating point: NaN and infinity in the inputs, and the caller's
floating-point environment.

The kernel runs in a mode of its own (fpmode.c: round to nearest, every
exception masked, denormals flushed) on the calling thread and on its
workers, and gives the caller's mode back on return. So:
- the caller's rounding mode, FTZ/DAZ and exception masks are unchanged
  after every call;
- results do not depend on the caller's mode, nor, under any mode, on the
  thread count;
- a caller that unmasked exceptions does not get SIGFPE from the kernel;
- NaN and infinity propagate as IEEE arithmetic says, like the reference;
- denormals do not: a denormal operand is read as 0 (DAZ) and a denormal
  result written as 0 (FTZ), even where a large weight would have made a
  normal number of it; the reference keeps them. Pinned as documented.

The environment is read and set through glibc's fegetenv/fesetenv on
x86-64, where fenv_t holds the x87 control word at byte 0 and MXCSR at byte 28.
"""

import contextlib
import ctypes
import ctypes.util
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

import fusedrnn
from fusedrnn import reference

pytestmark = [
    pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.machine() == "x86_64"
                            and platform.libc_ver()[0] == "glibc"),
                       reason="reads fenv_t as glibc lays it out on x86-64"),
    pytest.mark.usefixtures("isa", "watchdog"),  # watchdog: a hang on NaN fails the run
]

libm = ctypes.CDLL(ctypes.util.find_library("m"))
ROUNDING = {"nearest": 0x000, "downward": 0x400, "upward": 0x800, "toward_zero": 0xC00}
MXCSR_DAZ, MXCSR_FTZ = 0x0040, 0x8000
MXCSR_FLAGS = 0x003F  # sticky exception flags: status, not mode
FE_TRAPS = 0x01 | 0x04 | 0x08  # FE_INVALID | FE_DIVBYZERO | FE_OVERFLOW


def fenv():
    buf = ctypes.create_string_buffer(64)  # fenv_t is 32 bytes; room to spare
    assert libm.fegetenv(buf) == 0
    return buf


def mode():
    """(x87 control word, MXCSR without its sticky flags): the caller's mode."""
    raw = fenv().raw
    return int.from_bytes(raw[0:2], "little"), int.from_bytes(raw[28:32], "little") & ~MXCSR_FLAGS


@contextlib.contextmanager
def caller_mode(rounding, flush):
    """Run the body with this rounding mode and, with `flush`, FTZ and DAZ set
    in MXCSR (no C library call sets those); restore the test's mode after."""
    saved = fenv()
    try:
        assert libm.fesetround(ROUNDING[rounding]) == 0
        if flush:
            env = fenv()
            mxcsr = int.from_bytes(env.raw[28:32], "little") | MXCSR_DAZ | MXCSR_FTZ
            ctypes.memmove(ctypes.addressof(env) + 28, mxcsr.to_bytes(4, "little"), 4)
            assert libm.fesetenv(env) == 0
        yield
    finally:
        libm.fesetenv(saved)


@pytest.fixture
def restore_threads():
    before = fusedrnn.get_num_threads()
    yield
    fusedrnn.set_num_threads(before)


def problem(dtype=np.float32, T=20, B=16, D=64, H=97):
    """Large enough that the GEMMs and the step split across 2 threads."""
    rng = np.random.default_rng(11)
    return dict(x=rng.standard_normal((T, B, D)).astype(dtype),
                h0=rng.standard_normal((B, H)).astype(dtype),
                w_ih=(rng.standard_normal((H, D)) / np.sqrt(D)).astype(dtype),
                w_hh=(rng.standard_normal((H, H)) / np.sqrt(H)).astype(dtype))


def forward_and_backward(arrays, nonlinearity):
    y, h_n = fusedrnn.rnn_forward(**arrays, nonlinearity=nonlinearity)
    grads = fusedrnn.rnn_backward(**arrays, y=y, dy=y, dh_n=h_n, nonlinearity=nonlinearity)
    return (y, h_n) + tuple(grads)


MODES = [pytest.param(r, f, id=f"{r}{'-ftz-daz' if f else ''}")
         for r in ROUNDING for f in (False, True)]


@pytest.mark.parametrize("rounding, flush", MODES)
@pytest.mark.parametrize("threads", [1, 2])
def test_caller_mode_unchanged_and_results_independent_of_it(restore_threads, rounding, flush,
                                                             threads):
    arrays = problem()
    fusedrnn.set_num_threads(1)
    expected = forward_and_backward(arrays, "sigmoid")  # the test's own mode: nearest, no flush
    fusedrnn.set_num_threads(threads)
    with caller_mode(rounding, flush):
        before = mode()
        results = forward_and_backward(arrays, "sigmoid")
        after = mode()
    assert after == before, f"mode {before} became {after}"
    for name, a, b in zip(("y", "h_n") + fusedrnn.RNNGrads._fields, results, expected):
        assert np.array_equal(a, b), f"{name} depends on the caller's mode ({rounding}, flush={flush})"


def test_unmasked_exceptions_do_not_trap(isa, tmp_path):
    """With invalid, divide-by-zero and overflow unmasked, inputs that make
    inf - inf and overflow inside the kernel must not raise SIGFPE. In a
    child process: a trap kills it."""
    script = f"""
import ctypes, ctypes.util
import numpy as np
import fusedrnn
libm = ctypes.CDLL(ctypes.util.find_library("m"))
fusedrnn.set_num_threads(2)
x = np.full((3, 4, 8), 3e38, np.float32)
x[:, :, ::2] = -np.inf
x[1, 1] = np.inf
w = np.full((8, 8), 1e30, np.float32)
libm.feenableexcept({FE_TRAPS})
for act in ("tanh", "relu", "sigmoid"):
    y, h_n = fusedrnn.rnn_forward(x, None, w, w, nonlinearity=act)
    fusedrnn.rnn_backward(x, None, w, w, y, y, h_n, nonlinearity=act)
libm.fedisableexcept({FE_TRAPS})
print("survived")
"""
    env = dict(os.environ, FUSEDRNN_ISA=isa)
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "survived", \
        f"exit status {done.returncode}: {done.stderr[-2000:]}"


def assert_same_specials(actual, expected, dtype, name, assert_close):
    """NaN and +-inf exactly where the reference has them, the rest close."""
    expected = np.asarray(expected)
    for what, test in (("NaN", np.isnan), ("+inf", np.isposinf), ("-inf", np.isneginf)):
        assert np.array_equal(test(actual), test(expected)), \
            f"{name}: {what} where the reference has none, or the reverse"
    finite = np.isfinite(expected)
    assert_close(actual[finite], expected[finite], dtype, name)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu", "sigmoid"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_nan_and_inf_propagate_like_the_reference(assert_close, nonlinearity, dtype):
    """NaN in one sequence's input, +inf and -inf in others', NaN in h0 of a
    fourth, inf in dy and dh_n: every output has NaN and inf exactly where the
    reference has them. Sequences are independent in the forward pass, so
    the clean ones stay finite."""
    T, B, D, H = 5, 6, 3, 4
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, B, D)).astype(dtype)
    x[2, 0, 1] = np.nan
    x[1, 1, 0] = np.inf
    x[3, 2, 2] = -np.inf
    h0 = rng.standard_normal((B, H)).astype(dtype)
    h0[3, 0] = np.nan
    arrays = dict(x=x, h0=h0, w_ih=rng.standard_normal((H, D)).astype(dtype),
                  w_hh=(rng.standard_normal((H, H)) / 2).astype(dtype))
    options = dict(nonlinearity=nonlinearity, lengths=np.array([5, 5, 4, 5, 3, 2]))
    with np.errstate(all="ignore"):  # the reference computes inf - inf too
        y, h_n = fusedrnn.rnn_forward(**arrays, **options)
        y_ref, h_n_ref = reference.rnn_forward(**arrays, **options)
        assert_same_specials(y, y_ref, dtype, "y", assert_close)
        assert_same_specials(h_n, h_n_ref, dtype, "h_n", assert_close)
        assert np.isfinite(y[:, 4:]).all(), "a clean sequence caught a special value"

        dy = rng.standard_normal(y.shape).astype(dtype)
        dy[0, 5, 1] = np.inf
        dh_n = rng.standard_normal(h_n.shape).astype(dtype)
        dh_n[4, 2] = -np.inf
        grads = fusedrnn.rnn_backward(**arrays, y=y, dy=dy, dh_n=dh_n, **options)
        expected = reference.rnn_backward(**arrays, y=y, dy=dy, dh_n=dh_n, **options)
    for name in fusedrnn.RNNGrads._fields:
        assert_same_specials(getattr(grads, name), getattr(expected, name), dtype, name, assert_close)


# Denormals (fpmode.c): DAZ reads every denormal operand as 0 and FTZ writes
# every denormal result as 0. That is not "a change below FLT_MIN only": a
# denormal input that a large weight would have brought back to a normal
# number is lost whole. Pinned here as documented (docs/robustness.md, "Floating-point
# environment"), next to the float64 reference, which keeps it.
DENORMALS = [pytest.param(np.float32, 1e-39, 1e38, id="f32"),
             pytest.param(np.float64, 1e-309, 1e308, id="f64")]


def one_step(dtype, x=0.0, h0=0.0, w_ih=0.0, w_hh=0.0):
    """The 1 x 1 x 1 problem, as arrays of `dtype`."""
    return dict(x=np.full((1, 1, 1), x, dtype), h0=np.full((1, 1), h0, dtype),
                w_ih=np.full((1, 1), w_ih, dtype), w_hh=np.full((1, 1), w_hh, dtype))


@pytest.mark.parametrize("dtype, tiny, big", DENORMALS)
def test_denormal_inputs_are_read_as_zero(dtype, tiny, big):
    """x = 1e-39, a float32 denormal, times w_ih = 1e38 is 0.1: the reference
    gives tanh(0.1) = 0.0997, the kernel tanh(0) = 0 exactly. The same for a
    denormal h0 times a large w_hh, and in the backward pass for a denormal
    dy: dx = dy * w_ih is 0.1 in the reference and 0 from the kernel."""
    assert 0 < dtype(tiny) < np.finfo(dtype).tiny, "not a denormal"
    for arrays in (one_step(dtype, x=tiny, w_ih=big), one_step(dtype, h0=tiny, w_hh=big)):
        y, h_n = fusedrnn.rnn_forward(**arrays)
        y_ref, h_n_ref = reference.rnn_forward(**arrays)
        assert y.item() == 0 and h_n.item() == 0
        assert round(y_ref.item(), 4) == 0.0997 and round(h_n_ref.item(), 4) == 0.0997

    arrays = one_step(dtype, w_ih=big)  # x = 0: y = 0, so dz = dy
    y, _ = fusedrnn.rnn_forward(**arrays)
    dy = np.full_like(y, tiny)
    dx = fusedrnn.rnn_backward(**arrays, y=y, dy=dy).dx
    dx_ref = reference.rnn_backward(**arrays, y=y, dy=dy).dx
    assert dx.item() == 0
    assert round(dx_ref.item(), 4) == 0.1


@pytest.mark.parametrize("dtype, tiny, big", DENORMALS)
def test_denormal_results_are_written_as_zero(dtype, tiny, big):
    """x * w_ih of two normal numbers whose product is a denormal (about
    1e-39 in float32) is flushed to 0 (FTZ): the kernel's y is 0, the
    reference's the denormal itself."""
    root = np.sqrt(dtype(tiny))
    assert root >= np.finfo(dtype).tiny, "not a normal number"
    arrays = one_step(dtype, x=root, w_ih=root)
    y, _ = fusedrnn.rnn_forward(**arrays)
    y_ref, _ = reference.rnn_forward(**arrays)
    assert y.item() == 0
    assert 0 < y_ref.item() < np.finfo(dtype).tiny
