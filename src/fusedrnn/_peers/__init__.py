"""Outside implementations that `python -m fusedrnn bench --compare` times
next to fusedrnn: oneDNN, ONNX Runtime and JAX, one module each.

None of them is a dependency of fusedrnn (`pip install "fusedrnn[bench-peers]"`
brings them), so nothing here is imported until a peer is asked for, and a
peer that cannot run here (not installed, its library not found, no such
case) says why through the exceptions below instead of stopping the run.

A peer module has:
- `describe()`: one line for the notes under the table (version, what is
  timed, how its thread count is set);
- `build(cell, p)`: what it needs for one cell's Problem, built once, as
  {mode: a callable doing one run} with only the modes it has; each run
  returns {name: array} like fusedrnn._bench's cells (y, the final states,
  the gradients under fusedrnn's names, in torch's gate order);
- `set_num_threads(n)` / `get_num_threads()`: the thread count its runs use
  from then on;
- `honours_threads(n)`: whether a run really is limited to n threads (JAX
  fixes its pool when it starts).
"""

import importlib
import sys
from collections.abc import Mapping


class PeerUnavailable(Exception):
    """The peer cannot run here at all: a missing package or library."""


class Unsupported(Exception):
    """The peer has no implementation of this case (a dtype, say)."""


# name -> (module, the pip packages that bring it)
MODULES = {
    "onednn": ("fusedrnn._peers.onednn", "onednn-cpu-gomp==2023.2.0"),
    "onnxruntime": ("fusedrnn._peers.onnxruntime", "onnxruntime onnx"),
    "jax": ("fusedrnn._peers.jax", "jax jaxlib"),
}


def load(name):
    """The peer module `name`, imported on first use; PeerUnavailable (with
    the reason and what to install) when it cannot be."""
    module, packages = MODULES[name]
    try:
        return importlib.import_module(module)
    except PeerUnavailable as e:
        raise PeerUnavailable(f"{e} (pip install {packages})") from None
    except ImportError as e:
        raise PeerUnavailable(f"{e} (pip install {packages})") from None


def loaded():
    """The peer modules imported so far: the ones whose thread count the
    bench's num_threads sets."""
    modules = (sys.modules.get(module) for module, _ in MODULES.values())
    return [m for m in modules if m is not None]  # None: an import blocked


class Results(Mapping):
    """{name: array} whose arrays are put into fusedrnn's layout when read,
    not inside the timed run: `make` maps each name to a function of no
    arguments giving the array. What a peer's run must do is done in the
    run; turning its own layout (oneDNN's gate order, ONNX's direction axis,
    a JAX array) into NumPy arrays to compare is not part of its time."""

    def __init__(self, make):
        self._make = make
        self._done = {}

    def __getitem__(self, name):
        if name not in self._done:
            self._done[name] = self._make[name]()
        return self._done[name]

    def __iter__(self):
        return iter(self._make)

    def __len__(self):
        return len(self._make)
