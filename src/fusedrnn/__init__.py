"""fusedrnn: a fused RNN forward and backward pass (BPTT) for the CPU.

    y, h_n = fusedrnn.rnn_forward(x, h0, w_ih, w_hh, bias)
    grads = fusedrnn.rnn_backward(x, h0, w_ih, w_hh, y, dy, dh_n)

`fusedrnn.reference` holds the NumPy specification of the same two functions.
"""

import os as _os

from ._api import (
    RNNGrads,
    available_isas,
    get_isa,
    get_num_threads,
    peak_gflops,
    rnn_backward,
    rnn_forward,
    set_isa,
    set_num_threads,
)

__version__ = "0.1.0"

__all__ = [
    "RNNGrads",
    "available_isas",
    "get_isa",
    "get_num_threads",
    "peak_gflops",
    "rnn_backward",
    "rnn_forward",
    "set_isa",
    "set_num_threads",
    "__version__",
]

if "FUSEDRNN_ISA" in _os.environ:
    set_isa(_os.environ["FUSEDRNN_ISA"])
