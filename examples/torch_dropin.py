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
the drop-ins) out of the graph, a graph break, unless torch's own switch is
set. Compiling a model with the drop-in into one graph takes that one line:

    torch._dynamo.config.allow_rnn = True

which this script sets only for the compiled fusedrnn run. The compiled
torch.nn run keeps torch's default, as a PyTorch user's model would: its
LSTM stays out of the graph and runs as in eager mode, the rest compiled.

    python examples/torch_dropin.py                 # the four runs, a few minutes
    python examples/torch_dropin.py --no-compile    # eager only
    python examples/torch_dropin.py --cell gru      # or rnn: GRU and RNN likewise
    python examples/torch_dropin.py --quick         # a few seconds (the CI smoke run)

--quick trains a small model for a few steps and compiles with the
"aot_eager" backend: it traces the model and its backward as the default
backend does (the part the drop-in has to support) but generates no C++,
whose compilation alone takes longer than the run.
"""

import _common  # noqa: F401  (first: it limits NumPy's BLAS threads)

import argparse
import gzip
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


def train(model, loader, steps, lr, warmup, desc):
    """The usual loop. Returns (the loss of every step, seconds per step
    after the first `warmup` steps, the seconds those took). The warm-up
    steps hold torch.compile's compilation and the first calls' allocations,
    so they are timed apart."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses, batches = [], iter(loader)
    bar = progress(range(steps), desc=desc)
    begin = time.perf_counter()
    for step in bar:
        if step == warmup:
            start = time.perf_counter()
        x, y = next(batches)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        losses.append(loss.item())
        bar.set_postfix_str(f"loss {losses[-1]:.3f}")
    end = time.perf_counter()
    return losses, (end - start) / (steps - warmup), start - begin


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cell", choices=("lstm", "gru", "rnn"), default="lstm",
                        help="the recurrent module: LSTM (default), GRU or RNN")
    parser.add_argument("--quick", action="store_true", help="a short run (CI)")
    parser.add_argument("--steps", type=int, help="timed and warm-up steps (default 200, quick 12)")
    parser.add_argument("--warmup", type=int, help="steps left out of the timing (default 10, "
                        "quick 2)")
    parser.add_argument("--hidden", type=int, help="hidden units (default 512, quick 64)")
    parser.add_argument("--layers", type=int, default=1, help="stacked layers (default 1)")
    parser.add_argument("--seq-length", type=int, help="characters per sequence (default 128, "
                        "quick 32)")
    parser.add_argument("--batch", type=int, help="sequences per batch (default 32, quick 8)")
    parser.add_argument("--no-compile", action="store_true", help="the eager runs only")
    parser.add_argument("--backend", help="torch.compile's backend (default inductor, quick "
                        "aot_eager)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    quick = args.quick
    steps = args.steps or (12 if quick else 200)
    warmup = args.warmup if args.warmup is not None else 2 if quick else 10
    hidden = args.hidden or (64 if quick else 512)
    length = args.seq_length or (32 if quick else 128)
    batch = args.batch or (8 if quick else 32)
    backend = args.backend or ("aot_eager" if quick else "inductor")
    if not 0 < warmup < steps:
        parser.error(f"--warmup: expected 0 < warmup < steps = {steps}, got {warmup}")

    with gzip.open(TEXT, "rt", encoding="ascii") as f:
        text = f.read()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    codes = torch.tensor([index[c] for c in text], dtype=torch.long)
    dataset = Windows(codes, length)

    torch_class = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[args.cell]
    fused_class = {"lstm": fusedrnn.torch.LSTM, "gru": fusedrnn.torch.GRU,
                   "rnn": fusedrnn.torch.RNN}[args.cell]
    torch.manual_seed(args.seed)
    initial = CharModel(torch_class, len(chars), 64, hidden, args.layers).state_dict()

    print(f"{len(text)} characters, {len(chars)} distinct; {args.cell} of {hidden} units x "
          f"{args.layers}, batches of {batch} x {length} characters")
    print(f"threads: torch {torch.get_num_threads()}, fusedrnn {fusedrnn.get_num_threads()}; "
          f"torch {torch.__version__}")
    runs = [("torch.nn", torch_class, False), ("fusedrnn", fused_class, False)]
    if not args.no_compile:
        runs += [("torch.nn", torch_class, True), ("fusedrnn", fused_class, True)]

    results = {}
    for impl, rnn_class, compiled in runs:
        model = CharModel(rnn_class, len(chars), 64, hidden, args.layers)
        model.load_state_dict(initial)   # the same names and shapes in both implementations
        if compiled:
            if impl == "fusedrnn":
                # The one line a compiled model with the drop-in needs: torch's
                # switch that lets torch.compile trace into nn.RNN/LSTM/GRU
                # modules and their subclasses, which the drop-ins are.
                # torch.nn's compiled run (before this one) keeps torch's
                # default, as a PyTorch user's would: its LSTM stays out of
                # the graph and runs as in eager mode.
                torch._dynamo.config.allow_rnn = True
            torch._dynamo.reset()
            model = torch.compile(model, backend=backend)
        # The same batches for every run: a loader shuffled by its own seeded generator.
        loader = DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(args.seed))
        name = f"{impl} {'compiled' if compiled else 'eager'}"
        losses, per_step, warmup_seconds = train(model, loader, steps, 3e-3, warmup, name)
        results[name] = losses, per_step
        print(f"{name:18} loss {losses[0]:.4f} -> {losses[-1]:.4f}, "
              f"{1 / per_step:7.2f} steps/s (warm-up: {warmup} steps, {warmup_seconds:.1f} s)")

    names = list(results)
    reference, base = results[names[0]]
    print(f"\nspeed-up over {names[0]} (steps per second, after warm-up):")
    for name in names[1:]:
        print(f"  {name:18} {base / results[name][1]:5.2f}x")
    if not args.no_compile:
        torch_compiled = results["torch.nn compiled"][1]
        print(f"  fusedrnn compiled over torch.nn compiled: "
              f"{torch_compiled / results['fusedrnn compiled'][1]:.2f}x")
    print(f"\nlosses against {names[0]}'s, step by step ({steps} steps):")
    for name in names[1:]:
        gap = max(abs(a - b) for a, b in zip(results[name][0], reference))
        print(f"  {name:18} max difference {gap:.2e}")
    return {name: dict(losses=losses, steps_per_second=1 / per_step)
            for name, (losses, per_step) in results.items()}


if __name__ == "__main__":
    main()
