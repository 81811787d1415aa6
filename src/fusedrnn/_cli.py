"""`python -m fusedrnn`: what this build runs on, whether its kernel agrees with
the NumPy reference, and how fast it is next to it. `python -m fusedrnn bench`:
how fast it is next to torch.nn.RNN and the reference, over shapes, dtypes and
thread counts.

Standard library and NumPy only, so that it runs from any installed wheel;
torch and matplotlib are imported only when asked for.
"""

import argparse
import importlib
import sys
from typing import NamedTuple

import numpy as np

import fusedrnn
from fusedrnn import reference
from fusedrnn._bench import BASELINE, FULL, MODES, PEERS, QUICK, SHAPES, flops, \
    median_seconds, num_threads, problem

NONLINEARITIES = ("tanh", "relu", "sigmoid")

# Errors are scaled by the largest magnitude in the reference array (at least
# 1): gradients summed over time and batch, like dw_hh, grow with T*B and so
# do their rounding errors.
TOLERANCES = {np.float32: 1e-4, np.float64: 1e-10}

# Sizes that are multiples of no tile width, so that the micro-kernels' edge
# tiles run, and lengths mixing an empty, full and partial sequences.
CHECK_SHAPE = (6, 5, 19, 37)  # T, B, D, H
CHECK_LENGTHS = (6, 0, 3, 1, 5)

# The report's timings against the reference stay at a few seconds without
# XL, where one run of the reference takes over a second; `bench` has XL.
REPORT_SHAPES = ("S", "M", "L")


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
    parser.set_defaults(run=_report)

    subcommands = parser.add_subparsers(title="subcommands")
    bench = subcommands.add_parser(
        "bench", help="time fusedrnn against torch.nn.RNN and the reference",
        description="Time fusedrnn's forward and forward+backward on the standard shapes: "
                    "median time, GFLOP/s, percentage of the peak measured in the same run, "
                    "and speed-up against each compared implementation (its time / "
                    "fusedrnn's). The thread counts are restored afterwards.")
    bench.add_argument("--threads", nargs="+", type=_thread_count, metavar="N",
                       help="thread counts to time (default: 1 and fusedrnn.get_num_threads())")
    bench.add_argument("--dtype", nargs="+", choices=("float32", "float64"),
                       default=["float32"], help="default: float32")
    bench.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES),
                       help="T,B,D,H: " + ", ".join(
                           f"{name} {','.join(map(str, dims))}" for name, dims in SHAPES.items())
                       + " (default: all)")
    bench.add_argument("--compare", nargs="*", type=_peer_name, choices=("torch", "reference"),
                       help="implementations to time against fusedrnn (default: torch if "
                            "installed; none when given empty); the reference is slow on L "
                            "and XL")
    bench.add_argument("--plot", type=_plot_file, metavar="FILE",
                       help="write a PNG bar chart of GFLOP/s, peak marked (needs matplotlib)")
    # SUPPRESS: without --quick here, `python -m fusedrnn --quick bench`
    # keeps the --quick given before the subcommand.
    bench.add_argument("--quick", action="store_true", default=argparse.SUPPRESS,
                       help="time each case once or for a few milliseconds: "
                            "a smoke test, not a measurement")
    bench.set_defaults(run=_bench_command)
    return parser


# Checked while parsing, so that a missing module stops the run before any
# timing rather than after minutes of it.

def _thread_count(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _peer_name(name):
    if name == "torch" and not _importable("torch"):
        raise argparse.ArgumentTypeError("torch is not installed: pip install torch")
    return name


def _plot_file(path):
    if not _importable("matplotlib"):
        raise argparse.ArgumentTypeError("matplotlib is not installed: pip install matplotlib")
    return path


def _importable(module):
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _report(args):
    print(f"fusedrnn {fusedrnn.__version__}")
    print(f"ISA      {fusedrnn.get_isa()} (available: {', '.join(fusedrnn.available_isas())})")
    print(f"threads  {fusedrnn.get_num_threads()}")
    print()
    if not _check():
        return 1  # timings of a wrong kernel mean nothing
    if not args.no_bench:
        print()
        _time_table(REPORT_SHAPES, ["float32"], [fusedrnn.get_num_threads()], ["reference"],
                    QUICK if args.quick else FULL)
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
    lengths = np.array(CHECK_LENGTHS)
    for nonlinearity in NONLINEARITIES:
        x, h0, w_ih, w_hh, bias, dy, dh_n = problem(CHECK_SHAPE, dtype, rng)
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


# --- timing -----------------------------------------------------------------

def _bench_command(args):
    compare = args.compare
    if compare is None:
        compare = ["torch"] if _importable("torch") else []
    if "torch" in compare:
        # torch.nn.RNN is timed next to fusedrnn.torch.RNN, its replacement.
        compare = ["fusedrnn.torch", *compare]
    threads = args.threads or list(dict.fromkeys([1, fusedrnn.get_num_threads()]))
    print(f"fusedrnn {fusedrnn.__version__}, ISA {fusedrnn.get_isa()}")
    rows = _time_table(args.shapes, args.dtype, threads, compare, QUICK if args.quick else FULL)
    if args.plot:
        _plot(args.plot, rows)
        print(f"plot written to {args.plot}")
    return 0


class _Row(NamedTuple):
    shape: str
    mode: str
    dtype: str
    threads: int
    seconds: dict  # implementation -> median seconds per run
    peak: float  # GFLOP/s: fusedrnn.peak_gflops(dtype) times the thread count

    def gflops(self, impl):
        return flops(SHAPES[self.shape], self.mode) / self.seconds[impl] / 1e9


def _time_table(shapes, dtypes, threads, compare, repeats):
    """Time fusedrnn and each implementation in `compare` on every shape,
    mode, dtype and thread count; print a row as each is done (a log shows
    progress too) and return the rows."""
    impls = ["fusedrnn", *compare]
    peaks = {dtype: fusedrnn.peak_gflops(dtype) for dtype in dtypes}
    print("peak of one thread (fusedrnn.peak_gflops, an FMA loop): "
          + ", ".join(f"{dtype} {peak:.1f} GFLOP/s" for dtype, peak in peaks.items()))
    print("median time per call; FLOPs: forward 2*T*B*H*(D+H), fwd+bwd 3x that; % peak: "
          "of the peak times the thread count; speed-up: the column's time / fusedrnn's, "
          "torch's / fusedrnn.torch's for torch")
    if "torch" in compare:
        torch = sys.modules["torch"]  # imported by _peer_name or _importable
        print(f"torch {torch.__version__}: torch.nn.RNN, same weights, same thread count; "
              "fwd under torch.no_grad(), fwd+bwd through autograd")
        print("fusedrnn.torch: fusedrnn.torch.RNN, the same module on fusedrnn's kernel")
    if "reference" in compare:
        print("reference: fusedrnn.reference, NumPy in float64, on NumPy's own BLAS threads")
    print(f"{'shape':5}  {'T,B,D,H':15}  {'mode':7}  {'dtype':7}  {'threads':>7}  "
          f"{'fusedrnn':>14}  {'GFLOP/s':>8}  {'% peak':>6}"
          + "".join(f"  {impl:>14}  {'speed-up':>8}" for impl in compare))

    rng = np.random.default_rng(0)
    progress = _Progress()
    total = len(shapes) * len(MODES) * len(dtypes) * len(threads) * len(impls)
    started = 0
    rows = []
    for shape in shapes:
        # One problem per dtype, every implementation built on it once.
        runs = {}
        for dtype in dtypes:
            p = problem(SHAPES[shape], dtype, rng)
            runs[dtype] = {impl: PEERS[impl](p) for impl in impls}
        for mode in MODES:
            for dtype in dtypes:
                for n in threads:
                    seconds = {}
                    with num_threads(n):
                        for impl in impls:
                            started += 1
                            progress.show(f"timing {shape} {mode} {dtype} threads={n} {impl} "
                                          f"[{started}/{total}]")
                            seconds[impl] = median_seconds(runs[dtype][impl][mode], repeats)
                    row = _Row(shape, mode, dtype, n, seconds, peaks[dtype] * n)
                    progress.clear()
                    print(_format(row, compare), flush=True)
                    rows.append(row)
    return rows


def _format(row, compare):
    fused = row.seconds["fusedrnn"]
    gflops = row.gflops("fusedrnn")
    dims = ",".join(map(str, SHAPES[row.shape]))
    return (f"{row.shape:5}  {dims:15}  {row.mode:7}  {row.dtype:7}  {row.threads:7}  "
            f"{_ms(fused)}  {gflops:8.2f}  {100 * gflops / row.peak:5.1f}%"
            + "".join(f"  {_ms(row.seconds[impl])}  "
                      f"{row.seconds[impl] / row.seconds[BASELINE[impl]]:7.2f}x"
                      for impl in compare))


def _ms(seconds):
    return f"{seconds * 1e3:11.3f} ms"


def _plot(path, rows):
    """A bar chart per dtype and thread count: GFLOP/s of each implementation
    per shape and mode, on a log scale (S and the reference sit orders of
    magnitude below L), the peak as a dashed line."""
    # Figure without pyplot: no GUI backend, no global state.
    from matplotlib.figure import Figure

    dtypes = list(dict.fromkeys(row.dtype for row in rows))
    threads = list(dict.fromkeys(row.threads for row in rows))
    impls = list(rows[0].seconds)
    bars_across = len(rows) // len(dtypes) * len(impls)
    fig = Figure(figsize=(1.5 + 0.4 * bars_across, 3.5 * len(dtypes)), layout="constrained")
    axes = fig.subplots(len(dtypes), len(threads), squeeze=False, sharey=True)
    width = 0.8 / len(impls)
    for i, dtype in enumerate(dtypes):
        for j, n in enumerate(threads):
            ax = axes[i][j]
            cells = [row for row in rows if row.dtype == dtype and row.threads == n]
            for k, impl in enumerate(impls):
                ax.bar([c + k * width for c in range(len(cells))],
                       [row.gflops(impl) for row in cells], width, label=impl)
            ax.axhline(cells[0].peak, color="black", linestyle="--", label="peak")
            ax.set_xticks([c + (len(impls) - 1) * width / 2 for c in range(len(cells))],
                          [f"{row.shape}\n{row.mode}" for row in cells])
            ax.set_yscale("log")
            ax.set_title(f"{dtype}, {n} thread{'s' if n > 1 else ''}, "
                         f"peak {cells[0].peak:.0f} GFLOP/s")
        axes[i][0].set_ylabel("GFLOP/s")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside upper center",
               ncols=len(impls) + 1)
    fig.savefig(path, dpi=100)


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
