"""An ordinary PyTorch training loop with torch.nn.LSTM swapped for fusedrnn.torch.LSTM.

A character-level language model written the way a PyTorch user writes one:
nn.Embedding, an LSTM, nn.Linear, cross-entropy, torch.optim.Adam, batches
of random windows of the text (examples/data/tragedies.txt.gz, Shakespeare)
from a DataLoader. fusedrnn.torch.LSTM is a subclass of torch.nn.LSTM with
the same constructor, parameters and forward, so the swap is one line:

    LSTM = fusedrnn.torch.LSTM      # was: LSTM = torch.nn.LSTM

The same model is trained four times, from the same initial weights on the
same batches: torch.nn.LSTM and fusedrnn.torch.LSTM, each eager and under
torch.compile. The script prints each run's steps per second, the speed-ups
over torch.nn.LSTM, and how far the runs' losses are from the first one's
(float32 sums in another order: they agree to rounding, not to the bit).

torch.compile leaves torch.nn.RNN/LSTM/GRU modules (and so their subclasses,
the drop-ins) out of its graphs unless torch's own switch is set. Compiling
a model with the drop-in into one graph takes that one line:

    torch._dynamo.config.allow_rnn = True

which this script sets only for the compiled fusedrnn run. The compiled
torch.nn run keeps torch's default, as a PyTorch user's model would (with
it, torch 2.13 compiles nothing of this model: the run is an eager one).

    python examples/torch_dropin.py                 # the four runs, about a minute
    python examples/torch_dropin.py --no-compile    # eager only
    python examples/torch_dropin.py --cell gru      # or rnn: GRU and RNN likewise
    python examples/torch_dropin.py --threads 1     # one thread each (steadier when shared)
    python examples/torch_dropin.py --quick         # a few seconds (the CI smoke run)

--quick trains a small model for a few steps and compiles with the
"aot_eager" backend: it traces the model and its backward as the default
backend does (the part the drop-in has to support) but generates no C++,
whose compilation alone takes longer than the run.
"""

import _common  # noqa: F401  (first: it limits NumPy's BLAS threads)

import argparse
import gzip
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import fusedrnn
import fusedrnn.torch
from _common import progress

TEXT = Path(__file__).with_name("data") / "tragedies.txt.gz"


class Windows(Dataset):
    """Item i: the `length` characters from position i (the input) and the
    `length` after each of them (the target)."""

    def __init__(self, codes, length):
        self.codes, self.length = codes, length

    def __len__(self):
        return len(self.codes) - self.length - 1

    def __getitem__(self, i):
        chunk = self.codes[i:i + self.length + 1]
        return chunk[:-1], chunk[1:]


class CharModel(nn.Module):
    def __init__(self, rnn_class, vocab, embedding, hidden, layers):
        super().__init__()
        self.embed = nn.Embedding(vocab, embedding)
        self.rnn = rnn_class(embedding, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x):
        output, _ = self.rnn(self.embed(x))
        return self.head(output)


def train_step(model, optimizer, x, y):
    """One step of the usual loop; returns the batch's loss."""
    logits = model(x)
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    optimizer.zero_grad()
    loss.backward()
    nn.utils.clip_grad_norm_(model.parameters(), 5.0)
    optimizer.step()
    return loss.item()


class Run:
    """One of the four trainings: a model, its optimiser, its batches, and
    what it measured (every step's loss, the timed steps' seconds)."""

    def __init__(self, impl, rnn_class, compiled, initial, loader_of, sizes, lr):
        self.name = f"{impl} {'compiled' if compiled else 'eager'}"
        self.impl, self.compiled = impl, compiled
        self.model = CharModel(rnn_class, *sizes)
        self.model.load_state_dict(initial)   # same names and shapes in both implementations
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.batches = iter(loader_of())
        self.losses, self.seconds = [], []

    def step(self, timed):
        x, y = next(self.batches)
        start = time.perf_counter()
        self.losses.append(train_step(self.model, self.optimizer, x, y))
        if timed:
            self.seconds.append(time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", choices=("lstm", "gru", "rnn"), default="lstm",
                        help="the recurrent module: LSTM (default), GRU or RNN")
    parser.add_argument("--quick", action="store_true", help="a short run (CI)")
    parser.add_argument("--steps", type=int,
                        help="timed steps of each run (default 100, quick 10)")
    parser.add_argument("--warmup", type=int, help="untimed steps before them (default 5, "
                        "quick 2)")
    parser.add_argument("--hidden", type=int, help="hidden units (default 256, quick 64)")
    parser.add_argument("--layers", type=int, default=1, help="stacked layers (default 1)")
    parser.add_argument("--seq-length", type=int, help="characters per sequence (default 64, "
                        "quick 32)")
    parser.add_argument("--batch", type=int, help="sequences per batch (default 16, quick 8)")
    parser.add_argument("--no-compile", action="store_true", help="the eager runs only")
    parser.add_argument("--backend", help="torch.compile's backend (default inductor, quick "
                        "aot_eager)")
    parser.add_argument("--threads", type=int, help="threads for torch and for fusedrnn alike "
                        "(default: each library's own default; quick 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    # --quick runs on one thread: torch's threads wait for each other at
    # every one of the many small operations of a step, and on a machine
    # whose other core is busy (CI's, a shared one) a step can then take a
    # hundred times as long.
    threads = args.threads or (1 if args.quick else None)
    if threads:
        torch.set_num_threads(threads)
        fusedrnn.set_num_threads(threads)
    quick = args.quick
    steps = args.steps or (10 if quick else 100)
    warmup = args.warmup or (2 if quick else 5)
    hidden = args.hidden or (64 if quick else 256)
    length = args.seq_length or (32 if quick else 64)
    batch = args.batch or (8 if quick else 16)
    backend = args.backend or ("aot_eager" if quick else "inductor")

    with gzip.open(TEXT, "rt", encoding="ascii") as f:
        text = f.read()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    dataset = Windows(torch.tensor([index[c] for c in text], dtype=torch.long), length)

    def loader():
        # The same batches for every run: shuffled by a generator of its own, seeded alike.
        return DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                          generator=torch.Generator().manual_seed(args.seed))

    # The one line that differs between the implementations:
    #     LSTM = torch.nn.LSTM        or        LSTM = fusedrnn.torch.LSTM
    torch_class = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[args.cell]
    fused_class = {"lstm": fusedrnn.torch.LSTM, "gru": fusedrnn.torch.GRU,
                   "rnn": fusedrnn.torch.RNN}[args.cell]
    sizes = (len(chars), 64, hidden, args.layers)   # vocabulary, embedding, hidden, layers
    torch.manual_seed(args.seed)
    initial = CharModel(torch_class, *sizes).state_dict()
    runs = [Run(impl, cls, compiled, initial, loader, sizes, 3e-3)
            for compiled in ((False,) if args.no_compile else (False, True))
            for impl, cls in (("torch.nn", torch_class), ("fusedrnn", fused_class))]

    print(f"{len(text)} characters, {len(chars)} distinct; {args.cell} of {hidden} units x "
          f"{args.layers}, batches of {batch} x {length} characters")
    # Unless --threads set it, the drop-in takes torch's thread count.
    fused_threads = fusedrnn.get_num_threads() if threads else torch.get_num_threads()
    where = "torch's OpenMP threads" if fusedrnn.torch.OPENMP else "its own threads"
    print(f"threads: torch {torch.get_num_threads()}, fusedrnn {fused_threads} (on {where}); "
          f"torch {torch.__version__}" + ("" if args.no_compile else f", backend {backend}"))

    # Warm-up, one run after another: each compiled run compiles here, at
    # its first step, and the first calls allocate what the later reuse.
    for run in runs:
        if run.compiled:
            if run.impl == "fusedrnn":
                # The one line a compiled model with the drop-in needs:
                # torch's switch that lets torch.compile trace into
                # nn.RNN/LSTM/GRU modules and their subclasses, which the
                # drop-ins are. torch.nn's compiled run (compiled before
                # this one) keeps torch's default, as a PyTorch user's
                # model would; under it torch compiles nothing of this
                # model, which then runs as in eager mode.
                torch._dynamo.config.allow_rnn = True
            run.model = torch.compile(run.model, backend=backend)
        start = time.perf_counter()
        for _ in range(warmup):
            run.step(timed=False)
        print(f"  warm-up {run.name:18} {warmup} steps, {time.perf_counter() - start:5.1f} s")

    # Timed: the runs take turns, a step each, so that whatever else the
    # machine runs meanwhile slows them alike, and each one's speed is its
    # median step (a burst of other work moves a mean, not a median). No
    # run may compile again in here: that would be timed as training.
    with torch._dynamo.config.patch(error_on_recompile=True):
        bar = progress(range(steps), desc="timed steps, in turns")
        for _ in bar:
            for run in runs:
                run.step(timed=True)
            bar.set_postfix_str(f"loss {runs[0].losses[-1]:.3f}")

    speed = {run.name: 1 / statistics.median(run.seconds) for run in runs}
    for run in runs:
        print(f"{run.name:18} loss {run.losses[0]:.4f} -> {run.losses[-1]:.4f}, "
              f"{speed[run.name]:7.2f} steps/s")
    base = runs[0]
    print(f"\nspeed-up over {base.name} (median steps per second, after warm-up):")
    for run in runs[1:]:
        print(f"  {run.name:18} {speed[run.name] / speed[base.name]:5.2f}x")
    if not args.no_compile:
        print(f"  fusedrnn compiled over torch.nn compiled: "
              f"{speed['fusedrnn compiled'] / speed['torch.nn compiled']:.2f}x")
    print(f"\nlosses against {base.name}'s, step by step ({warmup + steps} steps):")
    for run in runs[1:]:
        gap = max(abs(a - b) for a, b in zip(run.losses, base.losses))
        print(f"  {run.name:18} max difference {gap:.2e}")
    return {run.name: dict(losses=run.losses, steps_per_second=speed[run.name]) for run in runs}


if __name__ == "__main__":
    main()
