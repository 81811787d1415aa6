"""The cells, as the kernel describes them (fusedrnn_cell_describe,
csrc/include/fusedrnn.h): one table, read once at import.

Every other module asks a cell what it has (cell.gates, cell.has_c,
cell.reserve_rows, ...) and what it is called (cell.name, cell.key,
cell.a_name), never which cell it is: a cell the kernel gains is a row
more here, not a branch more in each module. Plain Python objects, read by
attribute, which torch.compile traces through (a call into the Cython
module would break its graph).
"""

import re
from dataclasses import dataclass

from . import _kernel


# eq=False: each cell is one object, compared and hashed by identity, which
# is what the drop-ins' per-call lookups of a cell cost least with (a frozen
# dataclass's own hash reads every field, on every lookup).
@dataclass(frozen=True, eq=False)
class Cell:
    id: int                   # its fusedrnn_cell value
    name: str                 # "RNN", "LSTM", "GRU": what messages call it
    key: str                  # "rnn", "lstm", "gru", "gru_linear_before_reset_false":
                              # fusedrnn.torch's operators are named by it
    a_name: str               # "an RNN", "an LSTM", "a GRU"
    gates: int                # G: the weights are (G*H, D) and (G*H, H)
    has_c: bool               # a cell state c beside h: c0, c_n, dc_n, dc0
    has_act: bool             # takes a nonlinearity (the problem's act)
    reserve_rows: int         # a training forward's reserve per (t, b), in rows of H (0: none)
    bias_grads_differ: bool   # db_ih and db_hh differ (else they are equal)


def _with_article(name):
    """An initialism with its article: "an" before a letter whose name is
    spoken with a vowel first (an RNN, an LSTM), else "a" (a GRU)."""
    return ("an " if name[0] in "AEFHILMNORSX" else "a ") + name


def _key(name):
    """A name as an identifier: "GRU (linear_before_reset=False)" ->
    "gru_linear_before_reset_false"."""
    return re.sub(r"\W+", "_", name.lower()).strip("_")


CELLS = {cell.key: cell for cell in (
    Cell(key=_key(info["name"]), a_name=_with_article(info["name"]), **info)
    for info in _kernel.cell_table())}

# The cells the public functions and classes run; the GRU with the reset
# gate first is gru_forward's linear_before_reset=False.
RNN, LSTM, GRU = CELLS["rnn"], CELLS["lstm"], CELLS["gru"]
GRU_RESET_FIRST = CELLS["gru_linear_before_reset_false"]

# torch's cells as ONNX's operators (the RNN, LSTM and GRU nodes; the GRU with
# linear_before_reset=1, torch's maths), each with torch's gate blocks in
# ONNX's order: LSTM i, o, f, c where torch has i, f, g, o; GRU z, r, h where
# torch has r, z, n. fusedrnn.torch's ONNX export and the bench's ONNX Runtime
# peer write their nodes with it.
ONNX_OPERATORS = {"rnn": ("RNN", (0,)), "lstm": ("LSTM", (0, 3, 1, 2)), "gru": ("GRU", (1, 0, 2))}
