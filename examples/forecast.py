"""Time-series forecasting with fusedrnn.ElmanRNN (LSTM, GRU or RNN).

The series is two sines with periods of 40 and 13 steps plus Gaussian noise
(standard deviation 0.1). A recurrent network (an LSTM by default, --cell
gru or rnn) with a linear output learns to predict the next value from the
ones before it (mean squared error, truncated BPTT, Adam); then, having read
the whole observed series, it forecasts the following steps by feeding each
prediction back as its next input, and the forecast is plotted against the
noiseless truth.

    python examples/forecast.py                     # about 5 s on 2 cores (rnn: 2.5 s)
    python examples/forecast.py --cell rnn          # the Elman RNN (or --cell gru)
    python examples/forecast.py --quick --no-plot   # well under a second (the CI smoke run)

Prints the one-step-ahead mean squared error on the last tenth of the
observed series (held out from training) before and after training, and the
forecast's root mean squared error against the truth. One step ahead every
cell gets near the noise; fed its own predictions for 200 steps, the LSTM's
forecast stays on the curve far longer than the RNN's.
"""

import _common  # noqa: F401  (first: it limits NumPy's BLAS threads)

import argparse

import numpy as np

import fusedrnn
from _common import Clock, progress

OBSERVED, NOISE = 4000, 0.1


def truth(t):
    return np.sin(2 * np.pi * t / 40) + 0.5 * np.sin(2 * np.pi * t / 13)


def next_step_pairs(series, batch):
    """(x, target) [L, batch, 1] time-major: `batch` contiguous streams of
    the series side by side, each value's target the value after it."""
    L = (len(series) - 1) // batch
    streams = series[:L * batch + 1]
    x = streams[:-1].reshape(batch, L).T[:, :, None]
    target = streams[1:].reshape(batch, L).T[:, :, None]
    return x.astype(np.float32), target.astype(np.float32)


def one_step_error(net, series):
    """Mean squared error of predicting each value from all those before it."""
    net.forward(series[:-1, None, None].astype(np.float32))
    return net.loss(series[1:, None, None])


def forecast(net, history, steps):
    """Read `history`, then predict `steps` values, each fed back as the next
    input. The state is the cell's own (for the LSTM the pair (h, c)),
    passed back to forward as it came."""
    y, state = net.forward(history[:, None, None].astype(np.float32))
    predictions = []
    for _ in range(steps):
        predictions.append(float(y[-1, 0, 0]))
        y, state = net.forward(y[-1:], state)
    return np.array(predictions)


def plot(path, t_history, history, t_future, future, predicted, cell):
    import matplotlib
    matplotlib.use("Agg")  # a file, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=100)
    ax.plot(t_history, history, ".", color="0.6", markersize=3, label="observed (noisy)")
    ax.plot(t_future, future, color="black", linewidth=1.2, label="truth")
    ax.plot(t_future, predicted, color="tab:red", linewidth=1.2, linestyle="--",
            label="forecast")
    ax.axvline(t_future[0], color="0.8", linewidth=1)
    ax.set_xlabel("time step")
    ax.set_ylim(-1.9, 2.4)  # room for the legend above the curves
    ax.legend(loc="upper left", ncol=3, frameon=False)
    ax.set_title(f"fusedrnn.ElmanRNN(cell={cell!r}): forecast from the observed series, "
                 f"fed its own predictions")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", choices=("lstm", "gru", "rnn"), default="lstm",
                        help="the recurrent cell (default lstm)")
    parser.add_argument("--quick", action="store_true", help="a short run (CI)")
    parser.add_argument("--epochs", type=int, help="passes over the series (default 400, quick 6)")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units (default 64)")
    parser.add_argument("--horizon", type=int, default=200, help="steps to forecast")
    parser.add_argument("--plot", default="forecast.png", help="the PNG to write")
    parser.add_argument("--no-plot", action="store_true", help="write no PNG (no matplotlib)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else 6 if args.quick else 400
    batch, chunk = 16, 40
    if not args.no_plot:
        try:
            import matplotlib  # noqa: F401 (checked now, not after the training)
        except ImportError:
            parser.error("the plot needs matplotlib: pip install 'fusedrnn[examples]', "
                         "or pass --no-plot")

    rng = np.random.default_rng(args.seed)
    t = np.arange(OBSERVED)
    series = truth(t) + NOISE * rng.normal(size=OBSERVED)
    split = OBSERVED * 9 // 10
    x, target = next_step_pairs(series[:split], batch)

    net = fusedrnn.ElmanRNN(1, args.hidden, 1, output_activation="identity", cell=args.cell,
                            seed=args.seed)
    optimizer = fusedrnn.Adam(net.params, lr=3e-3)
    clock = Clock()
    before = one_step_error(net, series[split:])
    print(f"{OBSERVED} observed values, {batch} streams of {len(x)} for training; "
          f"cell {args.cell}, {args.hidden} hidden units")
    print(f"held-out one-step MSE before training: {before:.4f} "
          f"(the noise alone: {NOISE ** 2:.4f})")

    bar = progress(range(epochs), desc="training")
    for _ in bar:
        shift = rng.integers(chunk)  # chunk boundaries in new places each pass
        losses, _ = fusedrnn.truncated_bptt(net, optimizer, x[shift:], target[shift:], chunk,
                                            max_norm=1.0)
        bar.set_postfix_str(f"mse {np.mean(losses):.4f}")
    after = one_step_error(net, series[split:])
    print(f"held-out one-step MSE after training:  {after:.4f} ({epochs} passes, {clock():.1f} s)")

    t_future = np.arange(OBSERVED, OBSERVED + args.horizon)
    predicted = forecast(net, series, args.horizon)
    rmse = float(np.sqrt(np.mean((predicted - truth(t_future)) ** 2)))
    print(f"{args.horizon}-step forecast RMSE against the truth: {rmse:.3f} "
          f"(the signal's RMS: {np.sqrt(np.mean(truth(t) ** 2)):.3f})")
    if not args.no_plot:
        shown = slice(OBSERVED - 150, OBSERVED)
        plot(args.plot, t[shown], series[shown], t_future, truth(t_future), predicted,
             args.cell)
        print(f"wrote {args.plot}")
    return dict(loss_before=before, loss_after=after, forecast_rmse=rmse, seconds=clock())


if __name__ == "__main__":
    main()
