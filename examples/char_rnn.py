"""Character-level text generation with fusedrnn.ElmanRNN.

Trains a softmax RNN to predict the next character of a short story
(examples/data/keeper.txt, written for this project), by truncated BPTT over
parallel streams of the text with Adam and gradient clipping, then samples
new text from it with a temperature.

    python examples/char_rnn.py            # about 2 s on 2 quiet cores
    python examples/char_rnn.py --quick    # a few seconds (the CI smoke run)

Prints the cross-entropy per character on the last tenth of the text (held
out from training) before and after training, then generated text. The text
is small: after about 40 passes the network starts to learn it by heart (the
training loss keeps falling, the held-out loss rises), which is why the
default stops there.
"""

import _common  # noqa: F401  (first: it limits NumPy's BLAS threads)

import argparse
from pathlib import Path

import numpy as np

import fusedrnn
from _common import Clock, progress

TEXT = Path(__file__).with_name("data") / "keeper.txt"


def one_hot(indices, size, dtype=np.float32):
    return np.eye(size, dtype=dtype)[indices]


def streams(indices, batch):
    """[L, batch] time-major: the text cut into `batch` contiguous streams,
    read side by side, so that one truncated-BPTT pass covers all of it."""
    L = len(indices) // batch
    return indices[:L * batch].reshape(batch, L).T


def evaluate(net, indices, vocab):
    """Mean cross-entropy (nats per character) of predicting each next character."""
    net.forward(one_hot(indices[:-1, None], vocab))
    return net.loss(indices[1:, None])


def generate(net, prime, length, temperature, rng, chars, index):
    """Feed `prime`, then sample `length` characters one at a time, each
    drawn from the softmax output and fed back as the next input."""
    y, h = net.forward(one_hot([[index[c]] for c in prime], len(chars)))
    out = []
    for _ in range(length):
        c = int(fusedrnn.sample(y[-1, 0], temperature, rng))
        out.append(chars[c])
        y, h = net.forward(one_hot([[c]], len(chars)), h)
    return prime + "".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (CI)")
    parser.add_argument("--epochs", type=int, help="passes over the text (default 40, quick 8)")
    parser.add_argument("--hidden", type=int, default=256, help="hidden units (default 256)")
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--length", type=int, default=600, help="characters to generate")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    epochs = args.epochs if args.epochs is not None else 8 if args.quick else 40
    batch, chunk = 16, 32

    text = TEXT.read_text()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    indices = np.array([index[c] for c in text])
    split = len(indices) * 9 // 10
    train, held_out = streams(indices[:split], batch), indices[split:]
    x, target = one_hot(train[:-1], len(chars)), train[1:]  # predict the next character

    rng = np.random.default_rng(args.seed)
    net = fusedrnn.ElmanRNN(len(chars), args.hidden, len(chars), output_activation="softmax",
                            seed=args.seed)
    optimizer = fusedrnn.Adam(net.params, lr=2e-3)
    clock = Clock()
    before = evaluate(net, held_out, len(chars))
    print(f"{len(text)} characters, {len(chars)} distinct; {batch} streams of {len(train)}")
    print(f"held-out loss before training: {before:.3f} nats/char "
          f"(uniform guess: {np.log(len(chars)):.3f})")

    bar = progress(range(epochs), desc="training")
    for _ in bar:
        # Each pass starts from a zero state, the streams shifted by a random
        # offset so that chunk boundaries fall in new places.
        shift = rng.integers(chunk)
        losses, _ = fusedrnn.truncated_bptt(net, optimizer, x[shift:], target[shift:], chunk,
                                            max_norm=5.0)
        bar.set_postfix_str(f"loss {np.mean(losses):.3f}")
    after = evaluate(net, held_out, len(chars))
    print(f"held-out loss after training:  {after:.3f} nats/char "
          f"({epochs} passes, {clock():.1f} s)")
    sample = generate(net, "The ", args.length, args.temperature, rng, chars, index)
    print(f"\nsampled at temperature {args.temperature}:\n\n{sample}\n")
    return dict(loss_before=before, loss_after=after, sample=sample, seconds=clock())


if __name__ == "__main__":
    main()
