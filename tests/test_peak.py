"""peak_gflops(dtype, seconds): the FMA probe's run time is bounded.

`seconds` is how long the C loop in csrc/probe.c keeps timing runs. Before
it was checked, `seconds=float("inf")` looped for ever with the GIL released
and no way for Ctrl-C to get in. Now:
- the Python API takes a real number in (0, PEAK_MAX_SECONDS] and raises
  TypeError (not a number, or a bool) or ValueError (NaN, infinite, <= 0,
  too long) naming `seconds`, with the bound and the value it got;
- the C function, which trusts no caller either, makes one run of a
  non-finite or non-positive duration and caps a finite one at the bound.

Every call that could loop runs in a child process with a timeout, so a
regression fails the test instead of hanging the run.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import fusedrnn
from fusedrnn import _kernel

pytestmark = pytest.mark.usefixtures("isa")

TIMEOUT = 30  # seconds; every call below takes well under one when it is right


def in_child(isa, tmp_path, code):
    """Run `code` (after `import fusedrnn`) in a fresh interpreter with `isa`
    forced; its stdout, stripped. A timeout is a test failure: the call hung."""
    env = dict(os.environ, FUSEDRNN_ISA=isa)
    try:
        done = subprocess.run([sys.executable, "-c", "import fusedrnn, numpy as np\n" + code],
                              env=env, capture_output=True, text=True, timeout=TIMEOUT,
                              cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail(f"still running after {TIMEOUT} s: {code}")
    assert done.returncode == 0, f"exit status {done.returncode}: {done.stderr[-2000:]}"
    return done.stdout.strip()


def outcome(isa, tmp_path, seconds_expression):
    """'TypeError: message', 'ValueError: message' or 'ok' for
    fusedrnn.peak_gflops(seconds=<seconds_expression>)."""
    return in_child(isa, tmp_path, f"""
from fractions import Fraction
try:
    rate = fusedrnn.peak_gflops(seconds={seconds_expression})
except (TypeError, ValueError) as e:
    print(f"{{type(e).__name__}}: {{e}}")
else:
    print("ok" if rate > 0 and rate == rate and rate != float("inf") else f"bad rate {{rate}}")
""")


NOT_NUMBERS = ["True", "np.True_", "'0.2'", "None", "0.2j", "np.array([0.2])"]
BAD_VALUES = ["float('nan')", "float('inf')", "float('-inf')", "np.float32('nan')", "0", "-0.0",
              "-1", "60.000001", "1e300", "2 ** 1100"]


@pytest.mark.parametrize("seconds", NOT_NUMBERS)
def test_seconds_that_is_not_a_number_is_a_type_error(isa, tmp_path, seconds):
    got = outcome(isa, tmp_path, seconds)
    assert got.startswith("TypeError: seconds: expected a real number"), got
    assert got.endswith(f"got {eval(seconds)!r}"), got


@pytest.mark.parametrize("seconds", BAD_VALUES)
def test_seconds_out_of_range_is_a_value_error(isa, tmp_path, seconds):
    got = outcome(isa, tmp_path, seconds)
    bound = f"{_kernel.PEAK_MAX_SECONDS:g}"
    assert got.startswith(f"ValueError: seconds: expected a finite number of seconds in "
                          f"(0, {bound}]"), got
    assert got.endswith(f"got {eval(seconds)!r}"), got


def test_seconds_in_range_measures(isa, tmp_path):
    """An int, a float, NumPy scalars and a Fraction: any real number."""
    got = in_child(isa, tmp_path, """
from fractions import Fraction
for seconds in (0.01, 1, np.float32(0.01), np.int64(1), Fraction(1, 100)):
    rate = fusedrnn.peak_gflops(seconds=seconds)
    print(rate > 0 and np.isfinite(rate))
""")
    assert got.split() == ["True"] * 5


def test_bound_is_sixty_seconds():
    assert _kernel.PEAK_MAX_SECONDS == 60.0


@pytest.mark.parametrize("seconds", ["float('inf')", "float('nan')", "float('-inf')", "-1.0",
                                     "0.0"])
def test_kernel_makes_one_run_of_a_duration_that_is_not_finite_and_positive(
        isa, tmp_path, seconds):
    """The C entry point straight, past the Python checks, for every dtype:
    one run (~0.1 ms), a finite positive rate, no hang."""
    got = in_child(isa, tmp_path, f"""
import time
from fusedrnn import _kernel
from fusedrnn._checks import FLOATS
for dtype in FLOATS:
    t0 = time.monotonic()
    rate = _kernel.peak_gflops(dtype, {seconds})
    print(time.monotonic() - t0, rate)
""")
    for line in got.splitlines():
        elapsed, rate = map(float, line.split())
        assert elapsed < 5, f"{elapsed:.2f} s for seconds={seconds}"
        assert math.isfinite(rate) and rate > 0, rate


def test_peak_gflops_default_still_works():
    rate = fusedrnn.peak_gflops(np.float64)
    assert math.isfinite(rate) and rate > 0


def test_bfloat16_peak_is_the_dot_products_where_the_cpu_has_one(isa):
    """bfloat16: vdpbf16ps does twice the float32 FMA's multiply-adds per
    instruction, so its peak is near twice float32's on a CPU with
    AVX512_BF16 running the avx512 kernels; elsewhere it is float32's own.
    Loose bounds (a shared machine): what tells the two apart is 2x. Each
    the best of three readings taken in turn with the other's: a busy
    moment on the machine lowers one reading, not both bests (one reading
    each, under the sanitizers beside another worker, put the same FMA loop
    at 14.1 and 9.0 GFLOP/s)."""
    pytest.importorskip("ml_dtypes")
    best = {"bfloat16": 0.0, "float32": 0.0}
    for _ in range(3):
        for dtype in best:
            best[dtype] = max(best[dtype], fusedrnn.peak_gflops(dtype, 0.1))
    bf16, f32 = best["bfloat16"], best["float32"]
    dot = _kernel.bf16_dot()
    assert dot == (isa == "avx512" and _cpu_has_avx512_bf16()), isa
    low, high = (1.4, 2.6) if dot else (0.6, 1.5)
    assert low < bf16 / f32 < high, (isa, bf16, f32)


def _cpu_has_avx512_bf16():
    """The kernel's cpuid answer, checked against the kernel's (Linux) own report."""
    with open("/proc/cpuinfo") as f:
        return " avx512_bf16" in f.read()
