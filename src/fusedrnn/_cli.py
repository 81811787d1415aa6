"""`python -m fusedrnn`: what this build runs on, whether its kernel agrees with
the NumPy reference, and how fast it is next to it.

Standard library and NumPy only, so that it runs from any installed wheel.
"""

import argparse
import statistics
import sys
import time
from functools import partial
from typing import NamedTuple

import numpy as np

import fusedrnn
from fusedrnn import reference

NONLINEARITIES = ("tanh", "relu", "sigmoid")

# Errors are scaled by the largest magnitude in the reference array (at least
# 1): gradients summed over time and batch, like dw_hh, grow with T*B and so
# do their rounding errors.
TOLERANCES = {np.float32: 1e-4, np.float64: 1e-10}

# Sizes that are multiples of no tile width, so that the micro-kernels' edge
# tiles run, and lengths mixing an empty, full and partial sequences.
CHECK_SHAPE = (6, 5, 19, 37)  # T, B, D, H
CHECK_LENGTHS = (6, 0, 3, 1, 5)

# DESIGN.md section 7: T, B, D, H.
SHAPES = {"S": (100, 1, 64, 64), "M": (100, 32, 128, 128), "L": (100, 64, 512, 512)}


class Repeats(NamedTuple):
    """How long one cell of the timing table is measured: repeat until
    `budget` seconds are spent, and for at least `min_runs` runs unless the
    runs so far took `cap` seconds (the reference on L runs for seconds)."""

    budget: float
    min_runs: int
    cap: float


# No separate warm-up call: a median of three or more runs already discards a
# cold first run (page faults, BLAS threads starting); single runs are only
# taken where one lasts seconds, or in QUICK, which is a smoke test.
FULL = Repeats(budget=0.3, min_runs=3, cap=2.0)
QUICK = Repeats(budget=0.02, min_runs=1, cap=0.0)


def main(argv=None):
    args = _parser().parse_args(argv)
    return args.run(args)


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m fusedrnn",
        description="Report the build, check the kernel against the NumPy reference "
                    "and time both on the standard shapes.")
    parser.add_argument("--quick", action="store_true",
                        help="time each case once or for a few milliseconds: "
                             "a smoke test, not a measurement")
    parser.add_argument("--no-bench", action="store_true",
                        help="only report the build and check the kernel")
    # A subcommand (such as `bench`) adds a subparser whose
    # set_defaults(run=...) takes the place of this one.
    parser.set_defaults(run=_report)
    return parser


def _report(args):
    print(f"fusedrnn {fusedrnn.__version__}")
    print(f"ISA      {fusedrnn.get_isa()} (available: {', '.join(fusedrnn.available_isas())})")
    print(f"threads  {fusedrnn.get_num_threads()}")
    print()
    if not _check():
        return 1  # timings of a wrong kernel mean nothing
    if not args.no_bench:
        print()
        _bench(QUICK if args.quick else FULL)
    return 0


# --- check ------------------------------------------------------------------

def _check():
    """Compare the kernel with the reference for both dtypes; True if all pass."""
    T, B, D, H = CHECK_SHAPE
    print(f"check against fusedrnn.reference: T={T} B={B} D={D} H={H}, "
          f"lengths {list(CHECK_LENGTHS)}, {', '.join(NONLINEARITIES)}")
    passed = True
    for dtype, tolerance in TOLERANCES.items():
        errors = list(_errors(dtype))
        max_abs = max(error for _, error, _ in errors)
        where, _, worst = max(errors, key=lambda e: e[2])
        ok = worst <= tolerance
        passed &= ok
        print(f"  {np.dtype(dtype).name:8} max abs error {max_abs:.1e}, relative {worst:.1e} "
              f"({where}), tolerance {tolerance:.0e}  {'PASS' if ok else 'FAIL'}")
    return passed


def _errors(dtype):
    """(where, abs error, relative error) for every nonlinearity and every
    output of rnn_forward and rnn_backward."""
    rng = np.random.default_rng(0)
    T, B, D, H = CHECK_SHAPE
    lengths = np.array(CHECK_LENGTHS)
    for nonlinearity in NONLINEARITIES:
        x, h0, w_ih, w_hh, bias = _rnn_inputs(rng, T, B, D, H, dtype)
        dy = rng.standard_normal((T, B, H)).astype(dtype)
        dh_n = rng.standard_normal((B, H)).astype(dtype)
        options = dict(nonlinearity=nonlinearity, lengths=lengths)

        y, h_n = fusedrnn.rnn_forward(x, h0, w_ih, w_hh, bias, **options)
        ref_y, ref_h_n = reference.rnn_forward(x, h0, w_ih, w_hh, bias, **options)
        # The reference backward gets the kernel's y, so that its error is the
        # backward's own and not the forward's carried over.
        grads = fusedrnn.rnn_backward(x, h0, w_ih, w_hh, y, dy, dh_n, **options)
        ref_grads = reference.rnn_backward(x, h0, w_ih, w_hh, y, dy, dh_n, **options)

        pairs = {"y": (y, ref_y), "h_n": (h_n, ref_h_n),
                 **{name: pair for name, pair in zip(grads._fields, zip(grads, ref_grads))}}
        for name, (got, want) in pairs.items():
            # A NaN must count as the worst error, not as one that compares false.
            error = np.nan_to_num(np.abs(got - want), nan=np.inf).max()
            yield f"{name}, {nonlinearity}", error, error / max(1.0, np.abs(want).max())


def _rnn_inputs(rng, T, B, D, H, dtype):
    """x, h0, w_ih, w_hh, bias; weights scaled by 1/sqrt(fan-in) keep tanh and
    sigmoid out of saturation, where a wrong gradient term would vanish."""
    def normal(*shape, scale=1.0):
        return (scale * rng.standard_normal(shape)).astype(dtype)
    return (normal(T, B, D), normal(B, H, scale=0.5), normal(H, D, scale=D ** -0.5),
            normal(H, H, scale=H ** -0.5), normal(H, scale=0.5))


# --- timing -----------------------------------------------------------------

def _forward(impl, x, h0, w_ih, w_hh, bias, dy):
    impl.rnn_forward(x, h0, w_ih, w_hh, bias)


def _forward_backward(impl, x, h0, w_ih, w_hh, bias, dy):
    y, _ = impl.rnn_forward(x, h0, w_ih, w_hh, bias)
    impl.rnn_backward(x, h0, w_ih, w_hh, y, dy)


# mode -> (what one run does, its FLOPs in units of a forward's); the backward
# does two GEMMs' worth of work for the forward's one.
MODES = {"fwd": (_forward, 1), "fwd+bwd": (_forward_backward, 3)}
IMPLEMENTATIONS = {"fusedrnn": fusedrnn, "reference": reference}


def _bench(repeats):
    """Time every shape, mode and implementation in float32; print a table."""
    rng = np.random.default_rng(0)
    cells = len(SHAPES) * len(MODES) * len(IMPLEMENTATIONS)
    progress = _Progress()
    started = 0
    rows = []
    for shape_name, (T, B, D, H) in SHAPES.items():
        inputs = _rnn_inputs(rng, T, B, D, H, np.float32)
        dy = rng.standard_normal((T, B, H)).astype(np.float32)
        for mode, (run, flop_units) in MODES.items():
            seconds = {}
            for impl_name, impl in IMPLEMENTATIONS.items():
                started += 1
                progress.show(f"timing {shape_name} {mode} {impl_name} [{started}/{cells}]")
                seconds[impl_name] = _median_seconds(partial(run, impl, *inputs, dy), repeats)
            fused, ref = seconds["fusedrnn"], seconds["reference"]
            gflops = flop_units * 2 * T * B * H * (D + H) / fused / 1e9
            rows.append((shape_name, f"{T},{B},{D},{H}", mode, fused, gflops, ref, ref / fused))
    progress.clear()

    print("float32 inputs (the reference computes in float64), median time per call; "
          "FLOPs: forward 2*T*B*H*(D+H), fwd+bwd 3x that")
    print(f"{'shape':5}  {'T,B,D,H':14}  {'mode':7}  {'fusedrnn':>12}  {'GFLOP/s':>7}  "
          f"{'reference':>12}  {'speed-up':>8}")
    for name, dims, mode, fused, gflops, ref, speedup in rows:
        print(f"{name:5}  {dims:14}  {mode:7}  {fused * 1e3:9.3f} ms  {gflops:7.2f}  "
              f"{ref * 1e3:9.3f} ms  {speedup:7.2f}x")


def _median_seconds(fn, repeats):
    times = []
    while sum(times) < repeats.budget or (len(times) < repeats.min_runs
                                          and sum(times) < repeats.cap):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class _Progress:
    """One status line on stderr, rewritten in place with a carriage return.
    Only on a terminal: in a log file the updates would pile up on one line."""

    def __init__(self):
        self.enabled = sys.stderr.isatty()
        self.width = 0

    def show(self, text):
        if self.enabled:
            # Pad with spaces to wipe the end of a longer previous line.
            sys.stderr.write("\r" + text.ljust(self.width))
            sys.stderr.flush()
            self.width = len(text)

    def clear(self):
        self.show("")
        if self.enabled:
            sys.stderr.write("\r")
            sys.stderr.flush()
