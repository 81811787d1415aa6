"""The public result types, shared by the NumPy reference and the fast API.

Shapes use the vocabulary T (time), B (batch), D (input size), H (hidden
size); "x-shaped" means [T,B,D], or [B,T,D] with batch_first, and "y-shaped"
the same with H for D.
"""

from typing import NamedTuple, Optional

import numpy as np


class RNNGrads(NamedTuple):
    """Gradients of a loss with respect to every input of :func:`rnn_forward`."""

    dx: np.ndarray  # x-shaped
    dh0: np.ndarray  # [B,H]
    dw_ih: np.ndarray  # [H,D]
    dw_hh: np.ndarray  # [H,H]
    dbias: np.ndarray  # [H]


class LSTMOutput(NamedTuple):
    """The result of :func:`lstm_forward`."""

    y: np.ndarray  # y-shaped: h at every step, zero past a sequence's length
    h_n: np.ndarray  # [B,H]: h after each sequence's last valid step
    c_n: np.ndarray  # [B,H]: c after each sequence's last valid step
    reserve: Optional[np.ndarray]  # what the backward needs; None unless training


class LSTMGrads(NamedTuple):
    """Gradients of a loss with respect to every input of :func:`lstm_forward`."""

    dx: np.ndarray  # x-shaped
    dh0: np.ndarray  # [B,H]
    dc0: np.ndarray  # [B,H]
    dw_ih: np.ndarray  # [4H,D]
    dw_hh: np.ndarray  # [4H,H]
    db_ih: np.ndarray  # [4H]
    db_hh: np.ndarray  # [4H]


class GRUOutput(NamedTuple):
    """The result of :func:`gru_forward`."""

    y: np.ndarray  # y-shaped: h at every step, zero past a sequence's length
    h_n: np.ndarray  # [B,H]: h after each sequence's last valid step
    reserve: Optional[np.ndarray]  # what the backward needs; None unless training


class GRUGrads(NamedTuple):
    """Gradients of a loss with respect to every input of :func:`gru_forward`."""

    dx: np.ndarray  # x-shaped
    dh0: np.ndarray  # [B,H]
    dw_ih: np.ndarray  # [3H,D]
    dw_hh: np.ndarray  # [3H,H]
    db_ih: np.ndarray  # [3H]
    db_hh: np.ndarray  # [3H]: unlike db_ih in the n rows (equal for linear_before_reset=False)
