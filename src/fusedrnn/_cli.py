"""`python -m fusedrnn`: what this build runs on, whether its kernel agrees with
the NumPy reference for every cell (rnn, lstm, gru), and how fast it is next
to it. `python -m fusedrnn bench`: how fast it is next to torch.nn.RNN, LSTM
and GRU, oneDNN, ONNX Runtime, JAX and the reference, over cells, shapes,
dtypes and thread counts.

Standard library and NumPy only, so that it runs from any installed wheel;
torch, the outside peers and matplotlib are imported only when asked for.
"""

import argparse
import importlib
import itertools
import sys
from typing import NamedTuple

import numpy as np

import fusedrnn  # the public namespace is what is checked and reported

from . import _bench_steps, _blas, _checks, _inloop, _kernel, _peers, reference
from ._checks import BFLOAT16, NO_BFLOAT16
from ._tolerances import TOLERANCE, scaled_errors
from ._bench import BF16_AGREEMENT, CELLS, DROP_INS, FULL, MODES, OUTSIDE, PEERS, QUICK, RIVALS, \
    SEQUENCES, SHAPES, autocast_dtypes, baseline, disagreements, flops, for_mode, \
    median_seconds, num_threads, problem, worst_error

NONLINEARITIES = ("tanh", "relu", "sigmoid")

# Sizes that are multiples of no tile width, so that the micro-kernels' edge
# tiles run, and lengths mixing an empty, full and partial sequences.
CHECK_SHAPE = (6, 5, 19, 37)  # T, B, D, H
CHECK_LENGTHS = (6, 0, 3, 1, 5)

# cell -> the shapes the report times against the reference: no XL, and L
# for the rnn only. On L one run of the reference's LSTM or GRU takes
# 0.4-1.7 s; with L for every cell the report took 35 s on 2 quiet Zen 4
# cores, over half of it on those two cells. `bench` has them all.
REPORT_SHAPES = {"rnn": ("S", "M", "L"), "lstm": ("S", "M"), "gru": ("S", "M")}


def main(argv=None):
    args = _parser().parse_args(argv)
    return args.run(args)


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m fusedrnn",
        description="Report the build, check every cell's kernel (rnn, lstm, gru; forward "
                    "and backward) against the NumPy reference and time both on the "
                    "standard shapes. Exits 1 if a check fails.")
    parser.add_argument("--quick", action="store_true",
                        help="time each case once or for a few milliseconds: "
                             "a smoke test, not a measurement")
    parser.add_argument("--no-bench", action="store_true",
                        help="only report the build and check the kernels")
    parser.set_defaults(run=_report)

    subcommands = parser.add_subparsers(title="subcommands")
    bench = subcommands.add_parser(
        "bench", help="time fusedrnn against torch.nn.RNN/LSTM/GRU and the reference",
        description="Time fusedrnn's forward and forward+backward for each cell on the "
                    "standard shapes: median time, GFLOP/s (a forward is 2*T*B*G*H*(D+H) "
                    "FLOPs with G = 1, 4, 3 gates for rnn, lstm, gru; forward+backward 3x "
                    "that), percentage of the peak measured in the same run, and speed-up "
                    "against each compared implementation (its time / fusedrnn's). Each "
                    "compared implementation's results are checked against fusedrnn's after "
                    "its timing: exits 1 if one disagrees. The thread counts are restored "
                    "afterwards.")
    bench.add_argument("--threads", nargs="+", type=_thread_count, metavar="N",
                       help="thread counts to time (default: 1 and fusedrnn.get_num_threads())")
    bench.add_argument("--cell", nargs="+", choices=CELLS, default=list(CELLS),
                       help="cells to time (default: all)")
    bench.add_argument("--dtype", nargs="+", type=_dtype_name,
                       choices=("float32", "float64", "bfloat16"), default=["float32"],
                       help="default: float32. bfloat16 (needs ml_dtypes): fusedrnn's NumPy API "
                            "on ml_dtypes.bfloat16 arrays, %% peak of the bf16 dot product's "
                            "peak; torch: its float32 modules under torch.autocast('cpu', "
                            "dtype=torch.bfloat16), eager only; onednn: its bf16 primitives; "
                            "onnxruntime, jax: none ('-'); every implementation's results "
                            "checked against the float64 reference on the same bf16 inputs "
                            f"within {BF16_AGREEMENT:g}, not against fusedrnn's")
    bench.add_argument("--shapes", nargs="+", choices=SHAPES, default=list(SHAPES),
                       help="T,B,D,H: " + ", ".join(
                           f"{name} {','.join(map(str, dims))}" for name, dims in SHAPES.items())
                       + " (default: all)")
    bench.add_argument("--seq", nargs="+", choices=SEQUENCES, default=list(SEQUENCES),
                       help="padded: every sequence T steps long; packed: lengths drawn "
                            "uniformly from 1..T, a PackedSequence for the torch modules and "
                            "`lengths` for fusedrnn (default: both; the outside peers time "
                            "padded only)")
    bench.add_argument("--compare", nargs="*", type=_peer_name,
                       choices=("torch", "torch-compiled", "reference", *OUTSIDE),
                       help="implementations to time against fusedrnn (default: torch if "
                            "installed; none when given empty). torch: torch.nn.RNN, LSTM or "
                            "GRU with the same weights, and fusedrnn.torch's drop-in for it, "
                            "against which torch's speed-up is taken. torch-compiled: the "
                            "same two under torch.compile (a compile per case: seconds "
                            "each). reference: fusedrnn.reference, slow "
                            "on L and XL. onednn, onnxruntime (forward only), jax: the outside "
                            "libraries (pip install \"fusedrnn[bench-peers]\"); one that is "
                            "missing, fails or disagrees is reported in its column and a "
                            "note, and does not stop the run or change the exit status; "
                            "with any of them the table has a 'vs best peer' column")
    bench.add_argument("--cases", choices=("kernel", "loop", "all"),
                       help="kernel: the table of shapes above, each library alone in its "
                            "process (the default, unless --steps is given); loop: fusedrnn "
                            "where users run it, beside "
                            "other libraries' threads: the drop-ins inside a PyTorch training "
                            "step against torch.nn (the loop of examples/torch_dropin.py; "
                            "with torch-compiled in --compare, both compiled too), and the "
                            "NumPy API right after a NumPy matmul against the same call "
                            "alone; all: both")
    steps = _bench_steps.FULL
    bench.add_argument("--steps", action="store_true",
                       help=f"the drop-ins one step per call, float32, on --threads (default "
                            f"here: 1), without the kernel table unless --cases asks for it "
                            f"(needs torch; --plot draws the kernel table only). Three tables: "
                            f"fusedrnn.torch's RNNCell/LSTMCell/GRUCell in a "
                            f"{steps.loop_steps}-step loop h = cell(x[t], h) against "
                            f"torch.nn's, B {' and '.join(map(str, steps.loop_batches))}, "
                            f"D = H {', '.join(map(str, steps.loop_hidden))}, fwd under "
                            f"no_grad, fwd+bwd (loss = the sum of the steps' h) and online "
                            f"training (an SGD step after every call), with "
                            f"GFLOP/s and %% of the peak; streaming, B = 1 calls of the "
                            f"drop-in layer at T = 1 with the state carried against torch.nn's "
                            f"cell and layer, D = H {', '.join(map(str, steps.stream_hidden))}, "
                            f"in us per step and as the weights' bytes per "
                            f"step over its time (GB/s), beside one core's memory bandwidth "
                            f"(np.copyto of a {steps.copy_mb} MiB array into another, best of "
                            f"{steps.copy_tries}, its bytes counted read and written: "
                            f"2 x {steps.copy_mb} MiB per copy); per call, at "
                            + " and ".join(f"{name} ({','.join(map(str, shape))})"
                                           for name, shape in steps.overhead.items())
                            + ": the drop-in's time over the NumPy API's beside the floor, a "
                              "registered torch operator of the drop-in's schema that does "
                              "nothing (fwd) or a no-op autograd.Function with the same loss "
                              "y.sum() (fwd+bwd), and the targets: at most "
                            + " and ".join(f"{t * 1e6:.0f} us ({mode})"
                                           for mode, t in _bench_steps.TARGETS.items())
                            + " over the floor")
    bench.add_argument("--plot", type=_plot_file, metavar="FILE",
                       help="write a PNG bar chart of GFLOP/s, peak marked (needs matplotlib)")
    # SUPPRESS: without --quick here, `python -m fusedrnn --quick bench`
    # keeps the --quick given before the subcommand.
    bench.add_argument("--quick", action="store_true", default=argparse.SUPPRESS,
                       help="time each case once or for a few milliseconds: "
                            "a smoke test, not a measurement")
    bench.set_defaults(run=_bench_command, usage_error=bench.error)
    return parser


# Checked while parsing, so that a missing module stops the run before any
# timing rather than after minutes of it.

def _thread_count(text):
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _dtype_name(name):
    if name == "bfloat16" and _checks.BFLOAT16 is None:
        raise argparse.ArgumentTypeError(_checks.NO_BFLOAT16)
    return name


def _peer_name(name):
    if name.startswith("torch") and not _importable("torch"):
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
    print(f"bfloat16 {_bfloat16_path(measure=not args.no_bench)}")
    print()
    with _blas.serial():   # the reference, before fusedrnn's timed runs
        checked = _check()
    if not checked:
        return 1  # timings of a wrong kernel mean nothing
    if not args.no_bench:
        print()
        rows = _time_table(REPORT_SHAPES, ["padded"], ["float32"], [fusedrnn.get_num_threads()],
                           ["reference"], QUICK if args.quick else FULL)
        if not all(row.agrees for row in rows):
            return 1
    return 0


def _bfloat16_path(measure):
    """How bfloat16 calls run here: stored as bf16, the maths in float32, the
    products on bf16 operands with AVX512_BF16's dot product where the
    active ISA has it on this CPU, else in float32 on the widened values;
    with `measure`, the products' peak (peak_gflops("bfloat16")) beside
    float32's. Without ml_dtypes, why bf16 is not checked."""
    if BFLOAT16 is None:
        return f"skipped, not checked: {NO_BFLOAT16}"
    dot = _kernel.bf16_dot()
    line = (f"stored as bf16, maths in float32; products under the {fusedrnn.get_isa()} "
            + ("kernels: bf16 dot product (AVX512_BF16, vdpbf16ps), float32 sums" if dot else
               "kernels: float32 FMA on the widened values (no bf16 dot product)"))
    if measure and dot:
        line += (f" (one thread's peak {fusedrnn.peak_gflops('bfloat16'):.1f} GFLOP/s, "
                 f"float32's {fusedrnn.peak_gflops(np.float32):.1f})")
    return line


# --- check ------------------------------------------------------------------

def _check():
    """Compare every cell's kernel with the reference for every dtype (bfloat16
    where ml_dtypes is installed); True if all pass."""
    T, B, D, H = CHECK_SHAPE
    print(f"check against fusedrnn.reference: T={T} B={B} D={D} H={H}, "
          f"lengths {list(CHECK_LENGTHS)}; rnn with {', '.join(NONLINEARITIES)}; "
          f"{', '.join(cell for cell in CELLS if cell != 'rnn')} through a training forward "
          f"and a backward with its reserve; every output and gradient")
    passed = True
    for cell in CELLS:
        for dtype, tolerance in TOLERANCE.items():
            errors = list(_errors(cell, dtype))
            max_abs = max(error for _, error, _ in errors)
            where, _, worst = max(errors, key=lambda e: e[2])
            ok = worst <= tolerance
            passed &= ok
            print(f"  {cell:4} {dtype.name:8} max abs error {max_abs:.1e}, "
                  f"worst {worst:.1e} x (|expected| + rms) ({where}), "
                  f"tolerance {tolerance:.0e}  {'PASS' if ok else 'FAIL'}")
    return passed


def _errors(cell, dtype):
    """(where, largest abs error, largest error scaled as the tolerance table
    scales it) for every output and gradient of `cell`'s forward and
    backward, for each nonlinearity of the rnn."""
    rng = np.random.default_rng(0)
    spec = CELLS[cell]
    variants = [{"nonlinearity": n} for n in NONLINEARITIES] if cell == "rnn" else [{}]
    for variant in variants:
        p = problem(CHECK_SHAPE, dtype, rng, cell)._replace(lengths=np.array(CHECK_LENGTHS))
        got = spec.run(fusedrnn, p, True, **variant)
        want = spec.run(reference, p, True, **variant)
        if cell == "rnn":
            # The reference backward gets the kernel's y, so that its error
            # is the backward's own and not the forward's carried over (relu's
            # derivative jumps where y rounds across 0). The gated cells'
            # reference backward reads its own reserve; their gates are smooth.
            want |= reference.rnn_backward(p.x, p.h0, p.w_ih, p.w_hh, got["y"], p.dy, p.dh_n,
                                           lengths=p.lengths, **variant)._asdict()
        suffix = f", {variant['nonlinearity']}" if variant else ""
        for name, w in want.items():
            # A NaN must count as the worst error, not as one that compares false.
            error = np.nan_to_num(np.abs(got[name] - w), nan=np.inf).max(initial=0.0)
            yield f"{name}{suffix}", error, scaled_errors(got[name], w).max(initial=0.0)


# --- timing -----------------------------------------------------------------

def _bench_command(args):
    compare = args.compare
    if compare is None:
        compare = ["torch"] if _importable("torch") else []
    if "bfloat16" in args.dtype and "torch-compiled" in compare:
        # torch.compile of an LSTM under autocast had not finished after 10
        # minutes on the development machine.
        args.usage_error("--dtype bfloat16 times torch eagerly under autocast: "
                         "leave torch-compiled out of --compare")
    # torch's modules are timed next to fusedrnn.torch's, their replacements.
    compare = [drop_in for impl, drop_in in DROP_INS.items() if impl in compare] + list(compare)
    threads = args.threads or list(dict.fromkeys([1, fusedrnn.get_num_threads()]))
    print(f"fusedrnn {fusedrnn.__version__}, ISA {fusedrnn.get_isa()}")
    cases = args.cases or ("" if args.steps else "kernel")
    rows = []
    if cases in ("kernel", "all"):
        rows = _time_table({cell: args.shapes for cell in args.cell}, args.seq, args.dtype,
                           threads, compare, QUICK if args.quick else FULL)
    if args.plot and rows:
        _plot(args.plot, rows)
        print(f"plot written to {args.plot}")
    agrees = all(row.agrees for row in rows)
    if cases in ("loop", "all"):
        agrees &= _loop_table(args.cell, threads, "torch-compiled" in compare, args.quick)
    if args.steps:
        agrees &= _steps_tables(args.cell, args.threads or [1], args.quick)
    return 0 if agrees else 1


def _loop_table(cells, threads, compiled, quick):
    """The in-loop cases (fusedrnn._inloop), printed as they are measured;
    False if a drop-in's losses drift from torch.nn's."""
    print("\nin the loop: fusedrnn beside other libraries' threads, default settings but "
          "the thread count (torch's and fusedrnn's both the row's)")
    agrees = True
    if _importable("torch"):
        import torch
        sizes = _inloop.LOOP_QUICK if quick else _inloop.LOOP_SIZES
        steps, warmup = (3, 1) if quick else (40, 5)
        print(f"PyTorch training step (examples/torch_dropin.py's loop): embedding "
              f"{sizes['embedding']}, the layer of {sizes['hidden']} units, linear, "
              f"cross-entropy, backward, clipping, Adam; batches of {sizes['batch']} x "
              f"{sizes['length']}; the two take turns a step each, {steps} timed after "
              f"{warmup}; median steps/s; torch {torch.__version__}")
        modes = {"eager": None}
        if compiled:
            modes["compiled"] = "aot_eager" if quick else "inductor"
        print(f"{'cell':4}  {'mode':8}  {'threads':>7}  {'torch.nn':>10}  "
              f"{'fusedrnn.torch':>14}  {'speed-up':>8}  {'loss gap':>8}")
        for cell in cells:
            for mode, backend in modes.items():
                speed = {}
                for n in threads:
                    with num_threads(n):
                        speeds, gap = _inloop.training_speeds(cell, steps, warmup, sizes, backend)
                    speed[n] = speeds["fusedrnn.torch"]
                    print(f"{cell:4}  {mode:8}  {n:>7}  {speeds['torch.nn']:10.1f}  "
                          f"{speeds['fusedrnn.torch']:14.1f}  "
                          f"{speeds['fusedrnn.torch'] / speeds['torch.nn']:7.2f}x  {gap:8.1e}",
                          flush=True)
                    # float32 sums in another order: they agree to rounding, not to the bit
                    agrees &= gap < 1e-3
                if len(speed) > 1:
                    print(f"      fusedrnn.torch's {max(speed)}-thread / 1-thread: "
                          f"{speed[max(speed)] / speed[min(speed)]:.2f}x")
    else:
        print("PyTorch training step: torch is not installed")
    shape = _inloop.NUMPY_QUICK if quick else _inloop.NUMPY_SHAPE
    print(f"NumPy API: lstm forward+backward, T,B,D,H {','.join(map(str, shape))}, alone "
          f"(0.2 s after any BLAS call) and right after a float64 256 x 256 matmul on NumPy's "
          f"BLAS ({_blas_name()}); median ms")
    print(f"{'threads':>7}  {'alone':>8}  {'after matmul':>12}  {'ratio':>6}")
    for n in threads:
        with num_threads(n):
            alone, after = _inloop.numpy_after_blas(2 if quick else 15, shape)
        print(f"{n:>7}  {alone * 1e3:8.2f}  {after * 1e3:12.2f}  {after / alone:5.2f}x",
              flush=True)
    return agrees


def _steps_tables(cells, threads, quick):
    """The step-by-step cases (fusedrnn._bench_steps), printed as they are measured;
    False if an implementation's results disagree with the first's of its
    row (fusedrnn.torch's; per call, the NumPy API's)."""
    print("\nstep by step: fusedrnn.torch's drop-ins called once per step, float32")
    if not _importable("torch"):
        print("torch is not installed")
        return True
    import torch
    sizes = _bench_steps.QUICK if quick else _bench_steps.FULL
    repeats = QUICK if quick else FULL
    peak = fusedrnn.peak_gflops(np.float32)
    bf16_peak = fusedrnn.peak_gflops("bfloat16")
    print(f"torch {torch.__version__}, the same thread count; median times; results checked "
          f"against the row's first implementation after the timing")
    rng = np.random.default_rng(0)
    progress = _Progress()
    agrees = True

    def report(failures):
        nonlocal agrees
        progress.clear()
        agrees &= not failures
        for message in failures:
            print(f"  FAIL: {message}", flush=True)

    T = sizes.loop_steps
    print(f"\ncells in a loop: h = cell(x[t], h) ((h, c) for lstm) for {T} steps, "
          f"fusedrnn.torch.{'/'.join(CELLS[c].torch_class + 'Cell' for c in cells)} against "
          f"torch.nn's with the same weights; fwd under torch.no_grad(), fwd+bwd: loss = the "
          f"sum of every step's h, loss.backward() into the parameters (.grad set to None "
          f"before each run); ratio: torch.nn's time / fusedrnn.torch's; GFLOP/s of "
          f"fusedrnn.torch: 2*T*B*G*H*(D+H) forward, 3x that fwd+bwd; % peak: of one "
          f"thread's FMA peak ({peak:.1f} GFLOP/s, fusedrnn.peak_gflops) times the threads; "
          f"online: each step trained alone (the state detached, loss = its h summed, "
          f"backward, then torch.optim.SGD's step, lr {_bench_steps.ONLINE_LR}: the weights "
          f"change at every call; its GFLOP/s count fwd+bwd's work); "
          f"/ac: the steps of both under torch.autocast('cpu', dtype=torch.bfloat16), "
          f"results checked within {_bench_steps.AUTOCAST_LOOP_AGREEMENT:g} x (|expected| + "
          f"rms), % of the bf16 peak ({bf16_peak:.1f} "
          f"GFLOP/s)")
    print(f"{'cell':4}  {'B':>3}  {'D=H':>4}  {'mode':10}  {'threads':>7}  "
          f"{'fusedrnn.torch':>14}  {'torch.nn':>14}  {'ratio':>6}  {'GFLOP/s':>8}  {'% peak':>6}")
    # (autocast's bf16 tensors need ml_dtypes, which the torch extra installs)
    modes = tuple(m for m in _bench_steps.LOOP_MODES if BFLOAT16 is not None or "/ac" not in m)
    for cell, B, H in itertools.product(cells, sizes.loop_batches, sizes.loop_hidden):
        shape = (T, B, H, H)
        p = problem(shape, np.float32, rng, cell)
        built = {impl: build(cell, p) for impl, build in _bench_steps.LOOPS.items()}
        for mode, n in itertools.product(modes, threads):
            autocast = mode.endswith("/ac")
            with num_threads(n):
                seconds, failures = _bench_steps.time_and_check(
                    {impl: runs[mode] for impl, runs in built.items()}, repeats,
                    BFLOAT16 if autocast else np.float32,
                    lambda impl: progress.show(f"timing {cell} B={B} H={H} {mode} threads={n} "
                                               f"{impl}"),
                    _bench_steps.AUTOCAST_LOOP_AGREEMENT if autocast else None)
            fused = seconds["fusedrnn.torch"]
            work = "fwd+bwd" if mode == "online" else mode.removesuffix("/ac")
            gflops = flops(shape, work, cell) / fused / 1e9
            progress.clear()
            print(f"{cell:4}  {B:3}  {H:4}  {mode:10}  {n:7}  {_ms(fused)}  "
                  f"{_ms(seconds['torch.nn'])}  {seconds['torch.nn'] / fused:5.2f}x  "
                  f"{gflops:8.2f}  {100 * gflops / ((bf16_peak if autocast else peak) * n):5.1f}%",
                  flush=True)
            report(failures)

    bandwidth = _bench_steps.copy_bandwidth(sizes.copy_mb, sizes.copy_tries)
    print(f"\nstreaming: B = 1, one call a step for {sizes.stream_steps} steps with the state "
          f"carried, D = H, under torch.no_grad(); fusedrnn.torch: the drop-in layer "
          f"(fusedrnn.torch.{'/'.join(CELLS[c].torch_class for c in cells)}) at T = 1; "
          f"torch-cell: torch.nn's cell; torch-layer: torch.nn's layer at T = 1; us per step, "
          f"and GB/s: the weights' bytes, G*H*(D+H)*4, over the step's time")
    print(f"one core's memory bandwidth: {bandwidth / 1e9:.1f} GB/s (np.copyto of a "
          f"{sizes.copy_mb} MiB array into another, best of {sizes.copy_tries}, its bytes "
          f"counted read and written)")
    streams = list(_bench_steps.STREAMS)
    print(f"{'cell':4}  {'D=H':>4}  {'threads':>7}"
          + "".join(f"  {impl:>14}  {'GB/s':>6}" for impl in streams))
    for cell, H in itertools.product(cells, sizes.stream_hidden):
        p = problem((sizes.stream_steps, 1, H, H), np.float32, rng, cell)
        weight_bytes = p.w_ih.nbytes + p.w_hh.nbytes
        for n in threads:
            with num_threads(n):
                seconds, failures = _bench_steps.streaming(
                    cell, p, repeats, show=lambda impl: progress.show(
                        f"timing {cell} H={H} threads={n} {impl}"))
            progress.clear()
            print(f"{cell:4}  {H:4}  {n:7}" + "".join(
                f"  {seconds[impl] * 1e6:11.2f} us  {weight_bytes / seconds[impl] / 1e9:6.1f}"
                for impl in streams), flush=True)
            report(failures)

    print(f"\nper call: NumPy-API: fusedrnn's functions (fwd+bwd: dy ones, dh_n and dc_n "
          f"zeros, the gradients of y.sum()); fusedrnn.torch: the drop-in layer, fwd under "
          f"torch.no_grad(), fwd+bwd y.sum().backward() into the parameters; over: "
          f"fusedrnn.torch - NumPy-API; floor: fwd, a registered torch operator with the "
          f"drop-in's schema that only makes its outputs, called under torch.no_grad(); "
          f"fwd+bwd, a torch.autograd.Function that only makes its results, "
          f"y.sum().backward(); target: over <= floor + "
          + ", ".join(f"{t * 1e6:.0f} us ({mode})" for mode, t in _bench_steps.TARGETS.items()))
    print(f"{'cell':4}  {'shape':5}  {'T,B,D,H':12}  {'mode':7}  {'threads':>7}  "
          + "".join(f"{column:>14}  " for column in ("NumPy-API", "fusedrnn.torch", "over",
                                                     "floor", "target"))
          + "met")
    for cell, (name, shape) in itertools.product(cells, sizes.overhead.items()):
        p = problem(shape, np.float32, rng, cell)
        built = _bench_steps.per_call(cell, p)
        for mode, n in itertools.product(MODES, threads):
            with num_threads(n):
                seconds, failures = _bench_steps.time_and_check(
                    built[mode], repeats, np.float32,
                    lambda impl: progress.show(f"timing {cell} {name} {mode} threads={n} {impl}"))
            over = seconds["fusedrnn.torch"] - seconds["NumPy-API"]
            target = seconds["floor"] + _bench_steps.TARGETS[mode]
            progress.clear()
            print(f"{cell:4}  {name:5}  {','.join(map(str, shape)):12}  {mode:7}  {n:7}  "
                  + "  ".join(f"{s * 1e6:11.1f} us" for s in (
                      seconds["NumPy-API"], seconds["fusedrnn.torch"], over, seconds["floor"],
                      target))
                  + f"  {'yes' if over <= target else 'no'}", flush=True)
            report(failures)
    return agrees


def _blas_name():
    """NumPy's BLAS and its thread count, as threadpoolctl reports them."""
    info = [i for i in _blas.info() if i.get("user_api") == "blas"]
    return ", ".join(f"{i['internal_api']} {i.get('version')}, {i['num_threads']} threads"
                     for i in info) or "unknown"


class _Row(NamedTuple):
    cell: str
    shape: str
    seq: str  # "padded" or "packed"
    mode: str
    dtype: str
    threads: int
    flops: int  # of one run: only the steps within the lengths count
    seconds: dict  # implementation -> median seconds per run; those that have the cell
    peak: float  # GFLOP/s: fusedrnn.peak_gflops(dtype) times the thread count
    agrees: bool  # every implementation's results agree with fusedrnn's, bfloat16's with the
                  # reference's (outside peers aside)
    # An outside peer with no time in `seconds`: why ("missing", "failed",
    # "mismatch", "-" for a case it does not have); and those whose run was
    # not on the row's thread count (JAX).
    status: dict = {}
    off_threads: frozenset = frozenset()

    def gflops(self, impl):
        return self.flops / self.seconds[impl] / 1e9

    def best_peer(self):
        """(the fastest of torch and the outside peers that ran on this
        row's thread count and agreed, its time / fusedrnn's), or None."""
        times = {impl: t for impl, t in self.seconds.items()
                 if impl in RIVALS and impl not in self.off_threads}
        if not times:
            return None
        best = min(times, key=times.get)
        return best, times[best] / self.seconds["fusedrnn"]


class _Notes:
    """Lines printed under the table's row as they come up, each only once
    (the same missing library would otherwise repeat under every row)."""

    def __init__(self):
        self.seen = set()

    def add(self, line):
        if line not in self.seen:
            self.seen.add(line)
            print(f"  note: {line}", flush=True)


def _time_table(cells, seqs, dtypes, threads, compare, repeats):
    """Time fusedrnn and each implementation in `compare` on every cell and
    its shapes (`cells`: cell -> shape names), every layout of sequences
    (`seqs`), mode, dtype and thread count, checking each one's results
    against fusedrnn's after its timing (bfloat16: every one's, fusedrnn's
    too, against the reference's); print a row as each is done (a log shows
    progress too) and a FAIL line for each disagreement, and return the rows."""
    impls = ["fusedrnn", *compare]
    outside = [impl for impl in compare if impl in OUTSIDE]
    bf16 = "bfloat16" in dtypes
    peaks = {dtype: fusedrnn.peak_gflops(dtype) for dtype in dtypes}
    print("peak of one thread (fusedrnn.peak_gflops, an FMA loop): "
          + ", ".join(f"{dtype} {peak:.1f} GFLOP/s" for dtype, peak in peaks.items())
          + ("" if not bf16 else " (bfloat16: the bf16 dot product's, vdpbf16ps)"
             if _kernel.bf16_dot() else " (bfloat16: no bf16 dot product here: the FMA's)"))
    print("median time per call; FLOPs: forward 2*T*B*G*H*(D+H), G = "
          + ", ".join(f"{CELLS[cell].gates} ({cell})" for cell in cells)
          + ", fwd+bwd 3x that (packed: the steps within the lengths); % peak: of the peak "
            "times the thread count; speed-up: the column's time / fusedrnn's (the NumPy "
            "API's), torch's / fusedrnn.torch's (compiled: both compiled)")
    print("fusedrnn: the NumPy API; lstm and gru fwd+bwd: a training forward, then the "
          "backward with its reserve")
    if "torch" in compare:
        torch = sys.modules["torch"]  # imported by _peer_name or _importable
        print(f"torch {torch.__version__}: torch.nn."
              + "/".join(CELLS[cell].torch_class for cell in cells)
              + ", same weights, same thread count; fwd under torch.no_grad(), fwd+bwd "
                "through autograd")
    if "fusedrnn.torch" in compare or "fusedrnn.torch-compiled" in compare:
        print("fusedrnn.torch: fusedrnn.torch." + "/".join(CELLS[cell].torch_class for cell in cells)
              + ", the drop-ins for torch's modules on fusedrnn's kernel")
    if "torch-compiled" in compare:
        print("-compiled: the module under torch.compile (default options), with "
              "torch._dynamo.config.allow_rnn patched on around each call; its compile is "
              "in the untimed warm-up")
    if "packed" in seqs:
        print("packed: lengths uniform in 1..T; the torch modules take pack_padded_sequence(x, "
              "lengths, enforce_sorted=False), packed inside the timed call; fusedrnn takes "
              "the lengths")
    if "reference" in compare:
        print("reference: fusedrnn.reference, NumPy in float64, on one BLAS thread (OpenBLAS's "
              "threads spin for 0.1 s after a call, on the cores fusedrnn's next run needs)")
    missing = {}  # outside peer -> why it cannot run here
    for impl in outside:
        try:
            print(_peers.load(impl).describe())
        except _peers.PeerUnavailable as e:
            missing[impl] = str(e)
            print(f"{impl}: not available, its columns say 'missing': {e}")
    if bf16:
        _bf16_header(cells, seqs, compare)
    print("each implementation's results are checked against fusedrnn's after its timing"
          + (" (bfloat16: against the reference's)" if bf16 else ""))
    if outside:
        print("outside peers (" + ", ".join(outside) + "): a failure or a disagreement is "
              "shown in the column ('failed', 'mismatch', with a note) and is not timed as "
              "right; '-': a case the peer does not have. vs best peer: the fastest of "
              + ", ".join(impl for impl in compare if impl in RIVALS)
              + " that agreed, its time / fusedrnn's; a time marked * was not on the row's "
                "thread count and is not a candidate")
    print(f"{'cell':4}  {'shape':5}  {'T,B,D,H':15}  {'seq':6}  {'mode':7}  {'dtype':8}  "
          f"{'threads':>7}  "
          f"{'fusedrnn':>14}  {'GFLOP/s':>8}  {'% peak':>6}"
          + "".join(f"  {impl:>14}  {'speed-up':>8}" for impl in compare)
          + (f"  {'vs best peer':>20}" if outside else ""))

    rng = np.random.default_rng(0)
    notes = _Notes()
    progress = _Progress()
    total = sum(len(shapes) for shapes in cells.values()) * len(impls) * len(seqs) \
        * len(MODES) * len(dtypes) * len(threads)
    started = 0
    rows = []
    errors = {}  # implementation -> (its worst error on a bfloat16 row, where)
    for cell, shape, seq in ((c, sh, q) for c, shapes in cells.items() for sh in shapes
                             for q in seqs):
        # One problem per dtype, every implementation built on it once.
        # An outside peer's entry is a status string instead when it
        # cannot run the case. A bfloat16 problem's check: the reference's
        # results, computed once.
        runs, problems, references = {}, {}, {}
        for dtype in dtypes:
            p = problems[dtype] = problem(SHAPES[shape], dtype, rng, cell, seq)
            runs[dtype] = {impl: _build_outside(impl, cell, shape, p, missing, notes)
                           if impl in OUTSIDE else PEERS[impl](cell, p)
                           for impl in impls}
            if dtype == "bfloat16":
                progress.show(f"the reference on {cell} {shape} {seq} {dtype}, for the check")
                references[dtype] = PEERS["reference"](cell, p)["fwd+bwd"]()
        for mode, dtype, n in itertools.product(MODES, dtypes, threads):
            seconds, failures, status, off_threads, lines = {}, [], {}, set(), []
            with num_threads(n):
                for impl in impls:  # fusedrnn first
                    run = runs[dtype][impl]
                    if isinstance(run, str) or mode not in run:
                        status[impl] = run if isinstance(run, str) else "-"
                        continue
                    started += 1
                    progress.show(f"timing {cell} {shape} {mode} {dtype} threads={n} "
                                  f"{impl} [{started}/{total}]")
                    if impl not in OUTSIDE:
                        seconds[impl], result, _ = median_seconds(run[mode], repeats)
                        if impl == "fusedrnn":   # what the row is checked against
                            want = result if dtype not in references else \
                                for_mode(references[dtype], cell, mode)
                        if want is not result:  # fusedrnn's own: against the reference only
                            failures += [f"{impl}: {message}"
                                         for message in disagreements(result, want, dtype)]
                    else:
                        timing, trouble = _time_outside(run[mode], repeats, want, dtype)
                        if trouble:
                            status[impl], why = trouble
                            lines.append(f"{impl}: {cell} {shape} {mode} {dtype}: {why}")
                            continue
                        seconds[impl], result = timing.seconds, timing.result
                        if not _peers.load(impl).honours_threads(n):
                            off_threads.add(impl)
                        elif timing.cores > CORES_PER_THREAD * n:
                            off_threads.add(impl)
                            lines.append(f"{impl}: {cell} {shape} {mode} {dtype}: * its runs "
                                         f"kept {timing.cores:.2f} cores busy on {n} thread(s)")
                    if dtype in references:
                        error, name = worst_error(result, want)
                        if error > errors.get(impl, (-1.0,))[0]:
                            errors[impl] = error, f"{cell} {shape} {seq} {mode} {name}"
            row = _Row(cell, shape, seq, mode, dtype, n,
                       flops(SHAPES[shape], mode, cell, problems[dtype].lengths), seconds,
                       peaks[dtype] * n, not failures, status, frozenset(off_threads))
            progress.clear()
            print(_format(row, compare), flush=True)
            against = "the reference" if dtype in references else "fusedrnn"
            for message in failures:
                print(f"  FAIL, disagrees with {against}: {message}", flush=True)
            for line in lines:
                notes.add(line)
            rows.append(row)
    for impl in outside:
        if impl in missing:
            continue
        module = _peers.load(impl)
        unhonoured = [n for n in threads if not module.honours_threads(n)]
        if unhonoured:
            notes.add(f"{impl}: * its runs were not on {', '.join(map(str, unhonoured))} "
                      f"thread(s): it used {module.get_num_threads()} (see its line above)")
    if errors:
        print("bfloat16, the worst error against the float64 reference, |got - expected| / "
              "(|expected| + rms(expected)) of an element, over the rows above:")
        for impl, (error, where) in errors.items():
            print(f"  {impl:23}  {error:8.1e}  ({where})")
    return rows


def _bf16_header(cells, seqs, compare):
    """What a bfloat16 row compares (printed above the table)."""
    print("bfloat16: fusedrnn takes and returns ml_dtypes.bfloat16 arrays, its maths in "
          "float32, its products "
          + ("on bf16 operands (vdpbf16ps)" if _kernel.bf16_dot() else
             "in float32 (no bf16 dot product here)")
          + "; its % peak is of the bf16 peak above")
    for module, impl in (("torch.nn", "torch"), ("fusedrnn.torch", "fusedrnn.torch")):
        if impl in compare:
            found = {cell: autocast_dtypes(module, cell, seqs) for cell in cells}
            print(f"{impl} in bfloat16: its float32 modules under torch.autocast('cpu', "
                  f"dtype=torch.bfloat16), x and the states float32 holding the bf16 values, "
                  f"the backward outside autocast: autocast's own policy decides what runs "
                  f"in bf16; y came back as "
                  + ", ".join(f"{cell} " + ("/".join(dict.fromkeys(by_seq.values()))
                                            if len(set(by_seq.values())) == 1 else
                                            ", ".join(f"{seq} {t}" for seq, t in by_seq.items()))
                              for cell, by_seq in found.items()))
    print(f"bfloat16 check: every implementation's results (fusedrnn's too) against "
          f"fusedrnn.reference's on the same bf16 inputs (float64, computed once per case, "
          f"untimed: slow on L and XL), within {BF16_AGREEMENT:g} x (|expected| + "
          f"rms(expected)); each rounds in its own places, so none is checked against "
          f"another's; the worst error of each is listed under the table")


def _build_outside(impl, cell, shape, p, missing, notes):
    """An outside peer's {mode: run} for the problem, or the status to show
    in its column: "missing" (in `missing`, said above the table), "-" or
    "failed" (after a note saying why). Whatever goes wrong with an outside
    peer is its column's status and a note, never the end of the run."""
    if impl in missing:
        return "missing"
    if p.lengths is not None:
        return "-"   # the bindings time full-length sequences only
    try:
        return PEERS[impl](cell, p)
    except _peers.Unsupported as e:
        notes.add(f"{impl}: {e}")
        return "-"
    except Exception as e:  # primitive creation, a session, a compile: a failure of the peer
        notes.add(f"{impl}: {cell} {shape} {p.x.dtype}: failed to build: "
                  f"{type(e).__name__}: {e}")
        return "failed"


def _time_outside(run, repeats, want, dtype):
    """(its Timing, None) for an outside peer's `run` whose results agree
    with `want` (fusedrnn's; bfloat16: the reference's); else (None,
    (status, why)): "failed" when it raised, "mismatch" when it computed
    something else (no time then: a wrong answer is not a speed)."""
    try:
        timing = median_seconds(run, repeats)
        wrong = disagreements(timing.result, want, dtype)
    except Exception as e:
        return None, ("failed", f"failed: {type(e).__name__}: {e}")
    if wrong:
        against = "the reference" if dtype == "bfloat16" else "fusedrnn"
        return None, ("mismatch", f"disagrees with {against}, not timed: " + "; ".join(wrong))
    return timing, None


# A peer whose runs kept more cores busy than this many per thread asked
# for did not keep to the row's thread count (oneDNN's primitives once did
# not): its time is starred, not a candidate for "vs best peer".
CORES_PER_THREAD = 1.25


def _format(row, compare):
    fused = row.seconds["fusedrnn"]
    gflops = row.gflops("fusedrnn")
    dims = ",".join(map(str, SHAPES[row.shape]))
    line = (f"{row.cell:4}  {row.shape:5}  {dims:15}  {row.seq:6}  {row.mode:7}  {row.dtype:8}  "
            f"{row.threads:7}  {_ms(fused)}  {gflops:8.2f}  {100 * gflops / row.peak:5.1f}%")
    for impl in compare:
        if impl in row.seconds:
            star = "*" if impl in row.off_threads else ""
            speed_up = row.seconds[impl] / row.seconds[baseline(impl)]
            line += f"  {_ms(row.seconds[impl])}  {f'{speed_up:.2f}x{star}':>8}"
        else:
            line += f"  {row.status.get(impl, '-'):>14}  {'-':>8}"
    if any(impl in OUTSIDE for impl in compare):
        best = row.best_peer()
        line += f"  {f'{best[1]:.2f}x {best[0]}' if best else '-':>20}"
    return line


def _best_label(row):
    """The plot's "vs best peer" under a case: when outside peers were asked for."""
    if not row.status and not any(impl in OUTSIDE for impl in row.seconds):
        return ""
    best = row.best_peer()
    return f"\n{best[1]:.2f}x\n{best[0]}" if best else "\n-"


def _ms(seconds):
    return f"{seconds * 1e3:11.3f} ms"


def _plot(path, rows):
    """A bar chart per dtype and thread count: GFLOP/s of each implementation
    per cell, shape and mode, on a log scale (S and the reference sit orders
    of magnitude below L), the peak as a dashed line. An outside peer that
    failed, disagreed or has no such case has no bar there. With outside peers, each case is
    labelled with "vs best peer" (the best peer's time / fusedrnn's)."""
    # Figure without pyplot: no GUI backend, no global state.
    from matplotlib.figure import Figure

    dtypes = list(dict.fromkeys(row.dtype for row in rows))
    threads = list(dict.fromkeys(row.threads for row in rows))
    impls = list(dict.fromkeys(impl for row in rows for impl in row.seconds))
    bars_across = len(rows) // len(dtypes) * len(impls)
    fig = Figure(figsize=(1.5 + 0.4 * bars_across, 3.5 * len(dtypes)), layout="constrained")
    axes = fig.subplots(len(dtypes), len(threads), squeeze=False, sharey=True)
    width = 0.8 / len(impls)
    for i, dtype in enumerate(dtypes):
        for j, n in enumerate(threads):
            ax = axes[i][j]
            cases = [row for row in rows if row.dtype == dtype and row.threads == n]
            for k, impl in enumerate(impls):
                ax.bar([c + k * width for c in range(len(cases))],
                       [row.gflops(impl) if impl in row.seconds else np.nan for row in cases],
                       width, label=impl)
            ax.axhline(cases[0].peak, color="black", linestyle="--", label="peak")
            ax.set_xticks([c + (len(impls) - 1) * width / 2 for c in range(len(cases))],
                          [f"{row.cell}\n{row.shape}\n{row.seq}\n{row.mode}" + _best_label(row)
                           for row in cases])
            ax.set_yscale("log")
            ax.set_title(f"{dtype}, {n} thread{'s' if n > 1 else ''}, "
                         f"peak {cases[0].peak:.0f} GFLOP/s")
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
