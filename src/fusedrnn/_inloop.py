"""The bench's in-loop cases (`python -m fusedrnn bench --cases loop`):
fusedrnn where users run it, beside another library's threads, rather than
alone in its process (docs/design.md §8).

- A PyTorch training step, the loop of examples/torch_dropin.py: embedding,
  the recurrent layer, linear, cross-entropy, backward, gradient clipping,
  Adam. torch.nn's module and fusedrnn.torch's drop-in from the same
  weights, on the same batches, taking turns a step each (whatever else the
  machine runs slows both alike); the speed is the median step. torch's
  operators leave its OpenMP threads spinning for milliseconds after each
  one: that is what the drop-in's threads meet.
- The NumPy API right after a NumPy matmul (OpenBLAS's threads then spin
  for about 0.1 s), against the same call with none before it.

Settings are the defaults a user has, but for the thread count: torch's and
fusedrnn's are both set to the row's; NumPy's BLAS keeps its own.
"""

import statistics
import time

import numpy as np

import fusedrnn

from . import _bench

CELL_CLASSES = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
# The example's model and batches: 64 symbols, embedding 64, 256 units,
# batches of 16 sequences of 64 steps.
LOOP_SIZES = dict(vocab=64, embedding=64, hidden=256, batch=16, length=64)
LOOP_QUICK = dict(vocab=16, embedding=8, hidden=32, batch=4, length=8)
NUMPY_SHAPE = (100, 32, 128, 128)   # M: T, B, D, H
NUMPY_QUICK = (8, 4, 16, 16)


def _models(torch, cell, sizes, compiled):
    """{implementation: one training step}, both from the same initial weights."""
    nn = torch.nn
    import fusedrnn.torch as drop_ins   # imported with torch, not before

    class Model(nn.Module):
        def __init__(self, rnn_class):
            super().__init__()
            self.embed = nn.Embedding(sizes["vocab"], sizes["embedding"])
            self.rnn = rnn_class(sizes["embedding"], sizes["hidden"], batch_first=True)
            self.head = nn.Linear(sizes["hidden"], sizes["vocab"])

        def forward(self, x):
            return self.head(self.rnn(self.embed(x))[0])

    name = CELL_CLASSES[cell]
    torch.manual_seed(0)
    initial = Model(getattr(nn, name)).state_dict()
    steps = {}
    for impl, rnn_class in (("torch.nn", getattr(nn, name)),
                            ("fusedrnn.torch", getattr(drop_ins, name))):
        model = Model(rnn_class)
        model.load_state_dict(initial)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        if compiled:
            # torch's switch that lets torch.compile trace into RNN modules,
            # for the drop-in only: torch.nn's keeps the default, as a user's.
            model = torch.compile(model, backend=compiled)

        def step(x, y, model=model, optimizer=optimizer, impl=impl):
            patch = torch._dynamo.config.patch(allow_rnn=bool(compiled) and impl != "torch.nn")
            with patch:
                logits = model(x)
                loss = nn.functional.cross_entropy(logits.reshape(-1, sizes["vocab"]),
                                                   y.reshape(-1))
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
            return loss.item()
        steps[impl] = step
    return steps


def training_speeds(cell, steps, warmup, sizes, compiled=None):
    """{implementation: median steps per second} of the training loop, and
    the largest difference of the two implementations' losses."""
    import torch
    runs = _models(torch, cell, sizes, compiled)
    gen = torch.Generator().manual_seed(0)
    shape = (sizes["batch"], sizes["length"])
    batches = [(torch.randint(sizes["vocab"], shape, generator=gen),
                torch.randint(sizes["vocab"], shape, generator=gen))
               for _ in range(warmup + steps)]
    seconds = {impl: [] for impl in runs}
    losses = {impl: [] for impl in runs}
    for i, (x, y) in enumerate(batches):
        for impl, step in runs.items():
            start = time.perf_counter()
            losses[impl].append(step(x, y))
            if i >= warmup:
                seconds[impl].append(time.perf_counter() - start)
    gap = max(abs(a - b) for a, b in zip(*losses.values()))
    return {impl: 1 / statistics.median(s) for impl, s in seconds.items()}, gap


def numpy_after_blas(repeats, shape):
    """Median seconds of an LSTM forward+backward through the NumPy API (the
    bench's run of it: a training forward, then the backward with its
    reserve): alone (0.2 s after any BLAS call, past OpenBLAS's spinning),
    and right after a float64 matmul of 256 x 256, taken in turns."""
    rng = np.random.default_rng(0)
    p = _bench.problem(shape, np.float32, rng, "lstm")
    a = rng.standard_normal((256, 256))

    def call():
        start = time.perf_counter()
        _bench.CELLS["lstm"].run(fusedrnn, p, True)
        return time.perf_counter() - start

    call()   # the workspaces and workers exist
    alone, after = [], []
    for _ in range(repeats):
        time.sleep(0.2)
        alone.append(call())
        a @ a
        after.append(call())
    return statistics.median(alone), statistics.median(after)
