"""ONNX Runtime's CPU RNN, LSTM and GRU operators (linear_before_reset=1 for
the GRU, torch's maths): the forward only, since ONNX Runtime's inference
sessions have no backward.

The graph is the one operator, made with the onnx package's helpers: x,
h0 (and c0) as inputs, the weights and bias as initializers (constants, as a
deployed model has them, which lets ONNX Runtime pre-pack them when the
session is made). One session per thread count (intra_op_num_threads is a
session option), made on the first run at that count: the bench's untimed
warm-up call.

ONNX layouts (the operators' spec): W [directions, G*H, D], R [directions,
G*H, H], B [directions, 2*G*H] (the input side's biases, then the recurrent
side's); Y [T, directions, B, H], Y_h and Y_c [directions, B, H]. Gate order:
LSTM i, o, f, c where torch has i, f, g, o; GRU z, r, h where torch has r, z,
n.
"""

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper

from .._cells import ONNX_OPERATORS
from . import Results, Unsupported

# torch's gate blocks in ONNX's order.
GATE_ORDER = {cell: order for cell, (_, order) in ONNX_OPERATORS.items()}


def describe():
    return (f"onnxruntime {onnxruntime.__version__} (onnx {onnx.__version__}): a one-operator "
            "graph (RNN/LSTM/GRU, linear_before_reset=1), weights as initializers, CPU "
            "execution provider, intra_op_num_threads = the thread count; forward only")


_threads = 1


def set_num_threads(n):
    global _threads
    _threads = n


def get_num_threads():
    return _threads


def honours_threads(n):
    return True


def _gates(w, order):
    blocks = np.split(np.asarray(w), len(order))
    return np.concatenate([blocks[g] for g in order])


def _model(cell, p):
    """The serialized ONNX model of `cell` on p's weights."""
    order = GATE_ORDER[cell]
    G = len(order)
    T, B, D = p.x.shape
    H = p.w_hh.shape[1]
    element = TensorProto.FLOAT
    # The rnn's one bias is fusedrnn's b_ih + b_hh: the recurrent half is 0.
    b_hh = np.zeros_like(p.b_ih) if p.b_hh is None else p.b_hh
    initializers = [
        helper.make_tensor("W", element, [1, G * H, D], _gates(p.w_ih, order).ravel()),
        helper.make_tensor("R", element, [1, G * H, H], _gates(p.w_hh, order).ravel()),
        helper.make_tensor("B", element, [1, 2 * G * H],
                           np.concatenate([_gates(p.b_ih, order), _gates(b_hh, order)])),
    ]
    lstm = cell == "lstm"
    inputs = [helper.make_tensor_value_info("X", element, [T, B, D]),
              helper.make_tensor_value_info("initial_h", element, [1, B, H])]
    if lstm:
        inputs.append(helper.make_tensor_value_info("initial_c", element, [1, B, H]))
    outputs = [helper.make_tensor_value_info(name, element, dims) for name, dims in
               [("Y", [T, 1, B, H]), ("Y_h", [1, B, H]), ("Y_c", [1, B, H])][:3 if lstm else 2]]
    # Operator inputs by position: X, W, R, B, sequence_lens ("" = none),
    # initial_h, then the LSTM's initial_c.
    node_inputs = ["X", "W", "R", "B", "", "initial_h"] + (["initial_c"] if lstm else [])
    attributes = {"hidden_size": H}
    if cell == "gru":
        attributes["linear_before_reset"] = 1
    node = helper.make_node(ONNX_OPERATORS[cell][0], node_inputs, [o.name for o in outputs],
                            **attributes)
    graph = helper.make_graph([node], f"fusedrnn_{cell}", inputs, outputs, initializers)
    # Opset 14: the first with the RNN operators' `layout` attribute, whose
    # default (0) is the [T, B, ...] layout used here.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build(cell, p):
    if p.x.dtype != np.float32:
        # Its CPU RNN has no double kernel and its LSTM fails at run time on
        # one ("does not support double yet").
        raise Unsupported("ONNX Runtime's CPU RNN operators are float32 only")
    model = _model(cell, p)
    lstm = cell == "lstm"
    feed = {"X": p.x, "initial_h": p.h0[None]}
    if lstm:
        feed["initial_c"] = p.c0[None]
    sessions = {}

    def session():
        n = _threads
        if n not in sessions:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = n
            options.inter_op_num_threads = 1
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
            sessions[n] = onnxruntime.InferenceSession(
                model, options, providers=["CPUExecutionProvider"])
        return sessions[n]

    def forward():
        outputs = session().run(None, feed)
        names = ["y", "h_n", "c_n"] if lstm else ["y", "h_n"]
        # Y [T, 1, B, H] -> [T, B, H]; Y_h, Y_c [1, B, H] -> [B, H].
        return Results({name: (lambda a=a: a.reshape(a.shape[0], *a.shape[2:])
                               if a.ndim == 4 else a[0])
                        for name, a in zip(names, outputs)})

    return {"fwd": forward}
