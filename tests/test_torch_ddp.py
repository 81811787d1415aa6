"""fusedrnn.torch.RNN, LSTM and GRU under DistributedDataParallel with the gloo backend.

The test starts this file under torchrun as 2 processes on localhost; each
trains on its half of a batch and saves its parameters. They must be the
same on both ranks, and the same as one process training on the whole
batch: DDP averages the gradients of the two halves, which is the gradient
of the full batch's mean loss.
"""

import faulthandler
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

import fusedrnn  # noqa: E402
import fusedrnn.torch as ftorch  # noqa: E402

WORLD_SIZE = 2
T, B, D, H = 6, 8, 5, 7  # B: the full batch, split evenly between the ranks
STEPS = 4


CELLS = ["RNN", "LSTM", "GRU"]


def make_model(cell, seed):
    torch.manual_seed(seed)
    return getattr(ftorch, cell)(D, H, num_layers=2, bidirectional=True, dtype=torch.float64)


def batch():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(T, B, D, dtype=torch.float64, generator=g),
            torch.randn(T, B, 2 * H, dtype=torch.float64, generator=g))


def train(model, x, target):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(STEPS):
        optimizer.zero_grad()
        output, _ = model(x)
        torch.nn.functional.mse_loss(output, target).backward()
        optimizer.step()


def worker(cell, out_dir):
    """One rank, as torchrun starts it: the rendezvous comes from torchrun's
    environment variables."""
    # A rank that dies of a signal (CI once saw one abort in C++, "terminate
    # called without an active exception", and print nothing else) then
    # prints every thread's Python stack: where it died.
    faulthandler.enable()
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    # One kernel thread per process: the two processes share the cores.
    fusedrnn.set_num_threads(1)
    # Different initial weights on each rank: DDP must broadcast rank 0's.
    model = DistributedDataParallel(make_model(cell, seed=rank))
    x, target = batch()
    half = slice(rank * B // WORLD_SIZE, (rank + 1) * B // WORLD_SIZE)
    train(model, x[:, half], target[:, half])
    torch.save(model.module.state_dict(), Path(out_dir) / f"rank{rank}.pt")
    # Neither rank closes its connections while the other may still use them.
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.parametrize("cell", CELLS)
def test_ddp_matches_full_batch_training(tmp_path, cell):
    # --standalone: a rendezvous on localhost at a free port.
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={WORLD_SIZE}", __file__, cell, str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    states = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]

    model = make_model(cell, seed=0)
    initial = {name: p.clone() for name, p in model.state_dict().items()}
    train(model, *batch())
    for name, want in model.state_dict().items():
        assert not torch.equal(want, initial[name]), f"{name} did not train"
        for rank, state in enumerate(states[1:], 1):
            assert torch.equal(state[name], states[0][name]), f"{name}: rank {rank} != rank 0"
        # The all-reduce sums in another order than one process does.
        torch.testing.assert_close(states[0][name], want, rtol=1e-12, atol=1e-14,
                                   msg=lambda m: f"{name}: DDP != full batch: {m}")


if __name__ == "__main__":
    worker(*sys.argv[1:])
