"""fusedrnn: a fused RNN forward and backward pass (BPTT) for the CPU.

    y, h_n = fusedrnn.rnn_forward(x, h0, w_ih, w_hh, bias)
    grads = fusedrnn.rnn_backward(x, h0, w_ih, w_hh, y, dy, dh_n)
    y, h_n, c_n, reserve = fusedrnn.lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, training=True)
    grads = fusedrnn.lstm_backward(x, h0, c0, w_ih, w_hh, b_ih, b_hh, y, reserve, dy)
    (gru_forward and gru_backward likewise, without c)
    h, c, reserve = fusedrnn.lstm_cell(x_t, h, c, w_ih, w_hh, b_ih, b_hh)   # one step
    (rnn_cell, gru_cell and the *_cell_backward functions likewise)

`fusedrnn.reference` holds the NumPy specification of the same two functions,
and of an LSTM and a GRU (results LSTMOutput/LSTMGrads, GRUOutput/GRUGrads).
On top of them: the layers `RNN`, `LSTM` and `GRU` (stacked, bidirectional,
torch's parameter names), the network `ElmanRNN` (one of those layers, an
output layer and its loss) and the training helpers `Adam`, `SGD`,
`clip_grad_norm`, `truncated_bptt` and `sample`.
"""

import os as _os

from ._api import (
    PackedWeights,
    available_isas,
    get_isa,
    gru_backward,
    gru_forward,
    lstm_backward,
    lstm_forward,
    pack_weights,
    peak_gflops,
    rnn_backward,
    rnn_forward,
    set_isa,
)
from ._engine import get_num_threads, set_num_threads
from ._steps import (GRUStep, LSTMStep, gru_cell, gru_cell_backward, lstm_cell,
                     lstm_cell_backward, rnn_cell, rnn_cell_backward)
from ._types import GRUGrads, GRUOutput, LSTMGrads, LSTMOutput, RNNGrads
from .layers import GRU, LSTM, RNN
from .network import ElmanRNN
from .train import SGD, Adam, clip_grad_norm, sample, truncated_bptt

__version__ = "0.1.0"

__all__ = [
    "Adam",
    "ElmanRNN",
    "GRU",
    "GRUGrads",
    "GRUOutput",
    "GRUStep",
    "LSTM",
    "LSTMGrads",
    "LSTMOutput",
    "LSTMStep",
    "PackedWeights",
    "RNN",
    "RNNGrads",
    "SGD",
    "available_isas",
    "clip_grad_norm",
    "get_isa",
    "get_num_threads",
    "gru_backward",
    "gru_cell",
    "gru_cell_backward",
    "gru_forward",
    "lstm_backward",
    "lstm_cell",
    "lstm_cell_backward",
    "lstm_forward",
    "pack_weights",
    "peak_gflops",
    "rnn_backward",
    "rnn_cell",
    "rnn_cell_backward",
    "rnn_forward",
    "sample",
    "set_isa",
    "set_num_threads",
    "truncated_bptt",
    "__version__",
]

if "FUSEDRNN_ISA" in _os.environ:
    set_isa(_os.environ["FUSEDRNN_ISA"])
