"""Every bad argument to every cell's forward and backward raises a
TypeError or ValueError that names the argument and shows what was given,
never a crash (docs/api.md, "Rules for every call"): TypeError for dtypes
and types, ValueError for shapes, sizes, lengths and options.

First over a table of the arguments each cell's functions take (wrong
numbers of dimensions, sizes that disagree between arrays, dtypes, lengths,
flags). Then cases with the exact message expected, for what the gated
cells add (weights of another cell's G*H, the reserve of another call or
of the wrong size, dtype or type), each a function in CASES with the
exception and a pattern its message must match. Those cases first run in
a child process (the `crashed` fixture): one that ends the process (a bad
buffer reaching the kernel) is found there and fails on its own, and only
the others then run here, where the messages are checked.

All of this is argument checking in front of the kernel, so these tests are
not repeated per ISA.
"""

import re
import subprocess
import sys

import numpy as np
import pytest

import fusedrnn
from helpers import CELLS, GATED, backward, forward, random_problem

T, B, D, H = 3, 2, 4, 5  # all different, so that no wrong size passes for another


def shape_of(cell):
    """{argument: its shape} of every array `cell`'s forward or backward takes
    (but the reserve)."""
    spec = CELLS[cell]
    G = spec.gates
    return {"x": (T, B, D), **dict.fromkeys(spec.states, (B, H)), "w_ih": (G * H, D),
            "w_hh": (G * H, H), **dict.fromkeys(spec.biases, (G * H,)), "y": (T, B, H),
            "dy": (T, B, H), **dict.fromkeys(spec.d_states, (B, H))}


def taken_by(cell, name):
    """The entry points ("forward", "backward") that take argument `name`:
    the rnn's backward takes no bias (y holds its effect)."""
    spec = CELLS[cell]
    if name in ("y", "dy", *spec.d_states):
        return ("backward",)
    if name in spec.biases and not spec.gated:
        return ("forward",)
    return ("forward", "backward")


def valid_arguments(cell, dtype=np.float64):
    """A valid argument set for both entry points, every optional one given."""
    rng = np.random.default_rng(0)
    arguments = {name: rng.normal(size=shape).astype(dtype)
                 for name, shape in shape_of(cell).items()}
    return dict(arguments, lengths=np.array([T, 1]), batch_first=False)


def call(cell, op, **changes):
    """The forward or backward (a gated cell's recomputing its reserve) of
    `cell` on the valid arguments with `changes`."""
    a = dict(valid_arguments(cell), **changes)
    options = {k: a[k] for k in ("lengths", "batch_first", "nonlinearity") if k in a}
    if op == "forward":
        return forward(fusedrnn, cell, a, **options)
    return backward(fusedrnn, cell, a, a["y"], None, a, **options)


def raises(error, name, actual):
    """pytest.raises(error) for a message that starts with the offending
    argument's name and shows its actual value. Anchoring the name at the
    start keeps "x" from matching a message about another argument that
    merely mentions x."""
    return raises_blaming(error, {name: actual})


def raises_blaming(error, blamed):
    """raises() where two arguments disagree and either may be named:
    `blamed` maps each candidate name to the actual value its message shows."""
    alternatives = "|".join(rf"{re.escape(name)}\b.*{re.escape(str(actual))}"
                            for name, actual in blamed.items())
    return pytest.raises(error, match=rf"(?s)^({alternatives})")


def cases(table, label=str):
    """pytest params (cell, op, name, value) for every cell and entry point
    taking `name`, from table(cell) = {name: [values]}; ids read
    cell-op-name-label(value)."""
    return [pytest.param(cell, op, name, value, id=f"{cell}-{op}-{name}-{label(value)}")
            for cell in CELLS for name, values in table(cell).items() for value in values
            for op in taken_by(cell, name)]


def shape_id(shape):
    return "x".join(map(str, shape)) if shape else "0d"


def wrong_ndim(cell):
    """name -> shapes of one dimension fewer or more than the argument's (and
    0-d for x and the biases)."""
    table = {}
    for name, shape in shape_of(cell).items():
        wrong = [shape[1:], (1, *shape)]
        if len(shape) > 1:
            wrong += [shape[:-1], (shape[0] * shape[1], *shape[2:]), (*shape, 1)]
        if name == "x" or len(shape) == 1:
            wrong.append(())
        table[name] = list(dict.fromkeys(wrong))
    return table


@pytest.mark.parametrize("cell, op, name, shape", cases(wrong_ndim, shape_id))
def test_wrong_number_of_dimensions(cell, op, name, shape):
    with raises(ValueError, name, shape):
        call(cell, op, **{name: np.zeros(shape)})


def mismatched(cell):
    """name -> [(wrong shape, the other argument it then disagrees with)];
    the message may blame either, showing that argument's shape."""
    spec = CELLS[cell]
    G = spec.gates
    return {
        "w_ih": [((G * H, D + 1), "x"), ((G * H + 1, D), "w_hh")],
        "w_hh": [((G * (H + 1), H + 1), "w_ih")],
        **dict.fromkeys(spec.states, [((B + 1, H), "x"), ((B, H + 1), "w_hh")]),
        **dict.fromkeys(spec.biases, [((G * H + 1,), "w_hh")]),
        **dict.fromkeys(("y", "dy"), [((T + 1, B, H), "x"), ((T, B + 1, H), "x"),
                                      ((T, B, H + 1), "w_hh")]),
        **dict.fromkeys(spec.d_states, [((B + 1, H), "x"), ((B, H + 1), "w_hh")]),
    }


@pytest.mark.parametrize("cell, op, name, case",
                         cases(mismatched, lambda case: f"{shape_id(case[0])}_vs_{case[1]}"))
def test_sizes_that_disagree_between_arrays(cell, op, name, case):
    shape, other = case
    with raises_blaming(ValueError, {name: shape, other: shape_of(cell)[other]}):
        call(cell, op, **{name: np.zeros(shape)})


@pytest.mark.parametrize("op", ["forward", "backward"])
@pytest.mark.parametrize("cell", CELLS)
def test_w_hh_not_square(cell, op):
    G = CELLS[cell].gates
    with raises(ValueError, "w_hh", (G * H, H + 1)):
        call(cell, op, w_hh=np.zeros((G * H, H + 1)))


@pytest.mark.parametrize("name", ["y", "dy"])
@pytest.mark.parametrize("cell", CELLS)
def test_time_major_y_with_batch_first(cell, name):
    """y and dy follow x's layout: a (T,B,H) array where (B,T,H) is due."""
    batch_major = dict(x=np.zeros((B, T, D)), y=np.zeros((B, T, H)), dy=np.zeros((B, T, H)))
    with raises(ValueError, name, (T, B, H)):
        call(cell, "backward", batch_first=True,
             **dict(batch_major, **{name: np.zeros((T, B, H))}))


@pytest.mark.parametrize("cell, op, name, dtypes", cases(
    lambda cell: {name: [("float32", "float64"), ("float64", "float32")]
                  for name in shape_of(cell) if name != "x"},
    lambda dtypes: "x_{}_{}".format(*dtypes)))
def test_float_dtype_differing_from_x(cell, op, name, dtypes):
    x_dtype, other_dtype = dtypes
    arguments = valid_arguments(cell, x_dtype)
    arguments[name] = arguments[name].astype(other_dtype)
    with raises(TypeError, name, other_dtype):
        call(cell, op, **arguments)


NOT_FLOAT32_OR_64 = ["int64", "int32", "uint8", "complex128", "complex64", "float16",
                     "longdouble", "bool", "object"]


@pytest.mark.parametrize("cell, op, name, dtype",
                         cases(lambda cell: dict.fromkeys(shape_of(cell), NOT_FLOAT32_OR_64)))
def test_unsupported_dtype(cell, op, name, dtype):
    value = valid_arguments(cell)[name].astype(dtype)
    with raises(TypeError, name, np.dtype(dtype)):
        call(cell, op, **{name: value})


@pytest.mark.parametrize("op", ["forward", "backward"])
@pytest.mark.parametrize("lengths", [[T, 1, 1], [T], [[T], [1]], T, []],
                         ids=["B_plus_1", "B_minus_1", "Bx1", "scalar", "empty"])
@pytest.mark.parametrize("cell", CELLS)
def test_lengths_of_the_wrong_shape(cell, lengths, op):
    with raises(ValueError, "lengths", np.shape(lengths)):
        call(cell, op, lengths=np.array(lengths, dtype=np.int64))


@pytest.mark.parametrize("op", ["forward", "backward"])
@pytest.mark.parametrize("lengths", [np.array([3.0, 1.0]), [3.0, 1.0], np.array([True, True])],
                         ids=["float_array", "float_list", "bool_array"])
@pytest.mark.parametrize("cell", CELLS)
def test_lengths_that_are_not_integers(cell, lengths, op):
    with raises(TypeError, "lengths", np.asarray(lengths).dtype):
        call(cell, op, lengths=lengths)


@pytest.mark.parametrize("op", ["forward", "backward"])
@pytest.mark.parametrize("lengths", [[-1, 1], [T + 1, 1], [1, np.iinfo(np.int64).min]],
                         ids=["negative", "above_T", "int64_min"])
@pytest.mark.parametrize("cell", CELLS)
def test_lengths_out_of_range(cell, lengths, op):
    with raises(ValueError, "lengths", min(lengths) if min(lengths) < 0 else max(lengths)):
        call(cell, op, lengths=np.array(lengths, dtype=np.int64))


@pytest.mark.parametrize("op", ["forward", "backward"])
@pytest.mark.parametrize("nonlinearity", ["gelu", "Tanh", "", None, 0])
def test_unknown_nonlinearity_of_the_rnn(op, nonlinearity):
    with raises(ValueError, "nonlinearity", repr(nonlinearity)):
        call("rnn", op, nonlinearity=nonlinearity)


# Each cell's boolean options: reverse, batch_first, and a gated cell's training.
FLAGS = [pytest.param(cell, option, id=f"{cell}-{option}") for cell in CELLS
         for option in ("reverse", "batch_first", *(["training"] if CELLS[cell].gated else []))]


@pytest.mark.parametrize("value", ["no", 2, None, 0.5, np.array([True])])
@pytest.mark.parametrize("cell, option", FLAGS)
def test_flags_must_be_booleans(cell, option, value):
    """A truthy string must not silently switch a direction, a layout or
    what the forward keeps."""
    a, _ = random_problem(cell, (2, 1, 3, 4))
    with pytest.raises(TypeError, match=f"^{option}: expected True or False, got "
                                        + re.escape(repr(value))):
        forward(fusedrnn, cell, a, **{option: value})


@pytest.mark.parametrize("value", ["2", True, 2.0])
def test_set_num_threads_takes_integers_only(value):
    with pytest.raises(TypeError, match="^n: "):
        fusedrnn.set_num_threads(value)


# --- the gated cells' cases, with their messages ----------------------------

def arrays(cell="lstm", T=T, B=B, D=D, H=H, dtype=np.float64):
    """Valid arguments of a forward, keyed like its parameters."""
    return random_problem(cell, (T, B, D, H), dtype)[0]


def fwd(cell, a, **options):
    return forward(fusedrnn, cell, a, **options)


def bwd(cell, a, y, reserve, dy=None, dh_n=None, dc_n=None, **options):
    return backward(fusedrnn, cell, a, y, reserve, dict(dy=dy, dh_n=dh_n, dc_n=dc_n), **options)


def with_(a, **changes):
    return dict(a, **changes)


CASES = {}


def case(exc, match):
    """Register the function as a case: calling it must raise `exc` with a
    message matching `match` (a regular expression, searched)."""
    def register(f):
        CASES[f.__name__] = (f, exc, match)
        return f
    return register


def esc(text):
    """`text` as a regular expression that matches it literally."""
    return re.escape(text)


# Weights of the wrong G*H.
@case(ValueError, esc("w_hh: expected shape (4*H, H) for an LSTM, (20, 5) for H = 5, "
                      "got shape (5, 5)"))
def lstm_given_rnn_weights():
    rnn = arrays("rnn")
    fwd("lstm", with_(arrays("lstm"), w_ih=rnn["w_ih"], w_hh=rnn["w_hh"]))


@case(ValueError, esc("w_ih: expected shape (20, 4), got (5, 4)"))
def lstm_given_rnn_w_ih():
    a = arrays("lstm")
    fwd("lstm", with_(a, w_ih=a["w_ih"][:H]))


@case(ValueError, esc("w_hh: expected shape (3*H, H) for a GRU, (15, 5) for H = 5, "
                      "got shape (20, 5)"))
def gru_given_lstm_weights():
    fwd("gru", arrays("lstm"))


@case(ValueError, esc("w_ih: expected shape (15, 4), got (20, 4)"))
def gru_given_lstm_w_ih():
    fwd("gru", with_(arrays("gru"), w_ih=arrays("lstm")["w_ih"]))


@case(ValueError, esc("w_hh: expected shape (4*H, H) for an LSTM, (20, 5) for H = 5, "
                      "got shape (15, 5)"))
def lstm_given_gru_weights_in_backward():
    a = arrays("lstm")
    y = fwd("lstm", a).y
    bwd("lstm", with_(a, **{k: v for k, v in arrays("gru").items() if k.startswith("w")}), y,
        None)


@case(ValueError, esc("w_hh: expected shape (4*H, H) for an LSTM, (80, 20) for H = 20, "
                      "got shape (5, 20)"))
def lstm_w_hh_transposed():
    a = arrays("lstm")
    fwd("lstm", with_(a, w_hh=a["w_hh"].T))


# Biases of the wrong length.
@case(ValueError, esc("b_ih: expected shape (20,), got (19,)"))
def lstm_b_ih_short():
    a = arrays("lstm")
    fwd("lstm", with_(a, b_ih=a["b_ih"][:-1]))


@case(ValueError, esc("b_hh: expected shape (20,), got (15,)"))
def lstm_given_gru_b_hh():
    fwd("lstm", with_(arrays("lstm"), b_hh=arrays("gru")["b_hh"]))


@case(ValueError, esc("b_ih: expected shape (15,), got (20,)"))
def gru_given_lstm_b_ih():
    fwd("gru", with_(arrays("gru"), b_ih=arrays("lstm")["b_ih"]))


@case(ValueError, esc("b_hh: expected shape (15,), got (1, 15)"))
def gru_b_hh_2d():
    a = arrays("gru")
    fwd("gru", with_(a, b_hh=a["b_hh"][None]))


@case(ValueError, esc("b_hh: expected shape (20,), got (21,)"))
def lstm_b_hh_long_in_backward():
    a = arrays("lstm")
    out = fwd("lstm", a, training=True)
    bwd("lstm", with_(a, b_hh=np.zeros(21)), out.y, out.reserve)


# States of the wrong shape.
@case(ValueError, esc("c0: expected shape (2, 5), got (2, 6)"))
def c0_too_wide():
    fwd("lstm", with_(arrays("lstm"), c0=np.zeros((B, H + 1))))


@case(ValueError, esc("c0: expected shape (2, 5), got (5, 2)"))
def c0_transposed():
    a = arrays("lstm")
    fwd("lstm", with_(a, c0=a["c0"].T))


@case(ValueError, esc("c0: expected shape (2, 5), got (5,)"))
def c0_one_dimensional():
    fwd("lstm", with_(arrays("lstm"), c0=np.zeros(H)))


@case(ValueError, esc("c0: expected shape (2, 5), got (3, 5)"))
def c0_wrong_in_backward():
    a = arrays("lstm")
    out = fwd("lstm", a, training=True)
    bwd("lstm", with_(a, c0=np.zeros((B + 1, H))), out.y, out.reserve)


@case(ValueError, esc("h0: expected shape (2, 5), got (3, 5)"))
def lstm_h0_wrong_batch():
    fwd("lstm", with_(arrays("lstm"), h0=np.zeros((B + 1, H))))


@case(ValueError, esc("h0: expected shape (2, 5), got (2, 4)"))
def gru_h0_wrong_hidden():
    fwd("gru", with_(arrays("gru"), h0=np.zeros((B, H - 1))))


@case(ValueError, esc("h0: expected shape (2, 5), got (1, 2, 5)"))
def gru_h0_with_a_layer_axis():
    a = arrays("gru")
    fwd("gru", with_(a, h0=a["h0"][None]))


@case(ValueError, esc("h0: expected shape (3, 5), got (2, 5)"))
def h0_for_time_major_given_batch_first():
    fwd("lstm", with_(arrays("lstm"), c0=None), batch_first=True)


# The other arrays of a backward.
@case(ValueError, esc("y: expected shape (3, 2, 5), got (3, 1, 5)"))
def y_wrong_shape():
    a = arrays("lstm")
    out = fwd("lstm", a, training=True)
    bwd("lstm", a, out.y[:, :1], out.reserve)


@case(ValueError, esc("dy: expected shape (3, 2, 5), got (2, 2, 5)"))
def dy_wrong_shape():
    a = arrays("gru")
    out = fwd("gru", a, training=True)
    bwd("gru", a, out.y, out.reserve, dy=out.y[:2])


@case(ValueError, esc("dh_n: expected shape (2, 5), got (2, 6)"))
def dh_n_wrong_shape():
    a = arrays("gru")
    out = fwd("gru", a, training=True)
    bwd("gru", a, out.y, out.reserve, dh_n=np.zeros((B, H + 1)))


@case(ValueError, esc("dc_n: expected shape (2, 5), got (5, 2)"))
def dc_n_wrong_shape():
    a = arrays("lstm")
    out = fwd("lstm", a, training=True)
    bwd("lstm", a, out.y, out.reserve, dc_n=np.zeros((H, B)))


# The reserve: wrong size, dtype or type.
def lstm_reserve(**options):
    a = arrays("lstm")
    out = fwd("lstm", a, training=True, **options)
    return a, out


def reserve_size(cell, dtype=np.float64, **sizes):
    return fwd(cell, arrays(cell, dtype=dtype, **sizes), training=True).reserve.size


SIZE = reserve_size("lstm")


@case(ValueError, esc(f"reserve: expected shape ({SIZE},), from the training forward of this "
                      f"float64 LSTM (T=3, B=2, D=4, H=5), got ({SIZE - 1},)"))
def reserve_one_short():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, out.reserve[:-1])


@case(ValueError, esc(f"reserve: expected shape ({SIZE},), from the training forward of this "
                      f"float64 LSTM (T=3, B=2, D=4, H=5), got ({SIZE + 1},)"))
def reserve_one_long():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, np.append(out.reserve, 0.0))


@case(ValueError, esc(f"reserve: expected shape ({SIZE},), from the training forward of this "
                      f"float64 LSTM (T=3, B=2, D=4, H=5), got (0,)"))
def reserve_empty():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, np.empty(0))


@case(ValueError, esc(f"reserve: expected shape ({SIZE},), from the training forward of this "
                      f"float64 LSTM (T=3, B=2, D=4, H=5), got (1, {SIZE})"))
def reserve_two_dimensional():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, out.reserve[None])


@case(ValueError, esc("reserve: expected shape (") + r"\d+" +
      esc(",), from the training forward of this float64 LSTM (T=3, B=2, D=4, H=5), got (") + r"\d+,\)")
def reserve_of_a_smaller_problem():
    a, out = lstm_reserve()
    small = fwd("lstm", arrays("lstm", T=2), training=True)
    bwd("lstm", a, out.y, small.reserve)


@case(ValueError, esc(f"reserve: expected shape ({reserve_size('gru')},), from the training "
                      f"forward of this float64 GRU (T=3, B=2, D=4, H=5), got ({SIZE},)"))
def lstm_reserve_to_gru_backward():
    _, out = lstm_reserve()
    a = arrays("gru")
    bwd("gru", a, fwd("gru", a).y, out.reserve)


@case(TypeError, esc("reserve: expected dtype float64 (the dtype of x), got float32"))
def reserve_wrong_dtype():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, out.reserve.astype(np.float32))


@case(TypeError, esc("reserve: expected dtype float32 (the dtype of x), got float64"))
def reserve_of_a_float64_call_to_float32():
    a = arrays("gru", dtype=np.float32)
    out = fwd("gru", a, training=True)
    bwd("gru", a, out.y, out.reserve.astype(np.float64))


@case(TypeError, esc("reserve: expected dtype float64 (the dtype of x), got int64"))
def reserve_integer():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, out.reserve.astype(np.int64))


@case(TypeError, esc("reserve: expected the reserve array a training forward returned "
                     "(or None), got list"))
def reserve_a_list():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, list(out.reserve))


@case(TypeError, esc("reserve: expected the reserve array a training forward returned "
                     "(or None), got str"))
def reserve_a_string():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, "reserve")


@case(TypeError, esc("reserve: expected the reserve array a training forward returned "
                     "(or None), got LSTMOutput"))
def reserve_the_whole_output():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, out)


@case(TypeError, esc("reserve: expected the reserve array a training forward returned "
                     "(or None), got float"))
def reserve_a_scalar():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, 0.0)


# A reserve of the right size and dtype from another call: its header names
# that call, and the message shows both.
THIS = "this one is LSTM T=3, B=2, D=4, H=5, reverse=False, batch_first=False, lengths=None, resets=None"


@case(ValueError, esc("reserve: it comes from a different call (LSTM T=2, B=3, D=4, H=5, "
                      "reverse=False, batch_first=False, lengths=None, resets=None); " + THIS))
def reserve_with_t_and_b_swapped():
    a, out = lstm_reserve()
    swapped = fwd("lstm", arrays("lstm", T=B, B=T), training=True)
    assert swapped.reserve.shape == out.reserve.shape
    bwd("lstm", a, out.y, swapped.reserve)


@case(ValueError, esc("reserve: it comes from a different call (LSTM T=3, B=2, D=4, H=5, "
                      "reverse=True, batch_first=False, lengths=None, resets=None); " + THIS))
def reserve_with_reverse_flipped():
    a, out = lstm_reserve(reverse=True)
    bwd("lstm", a, out.y, out.reserve)


@case(ValueError, esc("reserve: it comes from a different call (GRU T=3, B=3, D=4, H=5, "
                      "reverse=False, batch_first=True, lengths=None, resets=None); this one is GRU T=3, B=3, D=4, "
                      "H=5, reverse=False, batch_first=False, lengths=None, resets=None"))
def reserve_with_batch_first_flipped():
    a = arrays("gru", T=3, B=3)
    out = fwd("gru", a, training=True, batch_first=True)
    bwd("gru", a, out.y, out.reserve)


@case(ValueError, esc("reserve: it comes from a different call (LSTM T=3, B=2, D=3, H=5, "
                      "reverse=False, batch_first=False, lengths=None, resets=None); " + THIS))
def reserve_of_another_input_size():
    a, out = lstm_reserve()
    other = fwd("lstm", arrays("lstm", D=3), training=True)
    assert other.reserve.shape == out.reserve.shape  # D does not enter the size
    bwd("lstm", a, out.y, other.reserve)


@case(ValueError, esc("reserve: it comes from a different call (GRU T=5, B=8, D=4, H=5, "
                      "reverse=False, batch_first=False, lengths=None, resets=None); this one is LSTM T=4, B=8, "
                      "D=4, H=5, reverse=False, batch_first=False, lengths=None, resets=None"))
def reserve_of_the_other_cell_of_the_same_size():
    a = arrays("lstm", T=4, B=8)
    gru = fwd("gru", arrays("gru", T=5, B=8), training=True)
    out = fwd("lstm", a, training=True)
    assert gru.reserve.shape == out.reserve.shape  # (3 + 1) * 5 * 8 * H == (4 + 1) * 4 * 8 * H
    bwd("lstm", a, out.y, gru.reserve)


@case(ValueError, esc("reserve: it comes from a different call (RNN T=0, B=0, D=0, H=0, "
                      "reverse=False, batch_first=False, lengths with checksum 0, resets with checksum 0); " + THIS))
def reserve_of_zeros():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, np.zeros_like(out.reserve))


@case(ValueError, r"reserve: it comes from a different call \(cell=\d+ T=-?\d+, .*\); " + esc(THIS))
def reserve_of_nan():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, np.full_like(out.reserve, np.nan))


@case(ValueError, r"reserve: it comes from a different call \(LSTM T=3, B=2, D=4, H=5, "
                  r"reverse=False, batch_first=False, lengths with checksum \d+, resets=None\); " + esc(THIS))
def reserve_with_its_lengths_field_overwritten():
    a, out = lstm_reserve()
    reserve = out.reserve.copy()
    reserve[7] = 1  # float64: the eighth int64 of the header, the lengths field
    bwd("lstm", a, out.y, reserve)


@case(ValueError, r"reserve: it comes from a different call \(LSTM T=3, B=2, D=4, H=5, "
                  r"reverse=False, batch_first=False, lengths with checksum \d+, resets=None\); this one is "
                  r"LSTM T=3, B=2, D=4, H=5, reverse=False, batch_first=False, lengths with "
                  r"checksum \d+")
def reserve_of_other_lengths():
    """The forward never wrote the padded rows of its reserve: a reserve from
    a call with other lengths would have the backward read them."""
    a = arrays("lstm")
    out = fwd("lstm", a, training=True, lengths=[3, 1])
    bwd("lstm", a, out.y, out.reserve, lengths=[1, 3])


@case(ValueError, r"reserve: it comes from a different call \(GRU T=3, B=2, D=4, H=5, "
                  r"reverse=False, batch_first=False, lengths=None, resets with checksum \d+\); "
                  r"this one is GRU T=3, B=2, D=4, H=5, reverse=False, batch_first=False, "
                  r"lengths=None, resets with checksum \d+")
def reserve_of_other_resets():
    """The forward ran other pieces: its gates are not those of this call."""
    a = arrays("gru")
    out = fwd("gru", a, training=True, resets=[[0, 0], [1, 0], [0, 0]])
    bwd("gru", a, out.y, out.reserve, resets=[[0, 0], [0, 1], [0, 0]])


# dtypes.
@case(TypeError, esc("w_hh: expected dtype float32 (the dtype of x), got float64"))
def x_float32_weights_float64():
    a = arrays("lstm")
    fwd("lstm", with_(a, x=a["x"].astype(np.float32)))


@case(TypeError, esc("h0: expected dtype float64 (the dtype of x), got float32"))
def h0_float32():
    a = arrays("gru")
    fwd("gru", with_(a, h0=a["h0"].astype(np.float32)))


@case(TypeError, esc("c0: expected dtype float32 (the dtype of x), got float64"))
def c0_float64_in_a_float32_call():
    a = arrays("lstm", dtype=np.float32)
    fwd("lstm", with_(a, c0=a["c0"].astype(np.float64)))


@case(TypeError, esc("b_ih: expected dtype float64 (the dtype of x), got float32"))
def b_ih_float32():
    a = arrays("gru")
    fwd("gru", with_(a, b_ih=a["b_ih"].astype(np.float32)))


@case(TypeError, esc("b_hh: expected dtype float32 (the dtype of x), got float64"))
def b_hh_float64_in_a_float32_call():
    a = arrays("lstm", dtype=np.float32)
    fwd("lstm", with_(a, b_hh=a["b_hh"].astype(np.float64)))


@case(TypeError, esc("w_ih: expected dtype float64 (the dtype of x), got float32"))
def w_ih_float32():
    a = arrays("lstm")
    fwd("lstm", with_(a, w_ih=a["w_ih"].astype(np.float32)))


@case(TypeError, esc("dc_n: expected dtype float64 (the dtype of x), got float32"))
def dc_n_float32():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, out.reserve, dc_n=np.zeros((B, H), np.float32))


@case(TypeError, esc("dy: expected dtype float32 (the dtype of x), got float64"))
def dy_float64_in_a_float32_call():
    a = arrays("gru", dtype=np.float32)
    out = fwd("gru", a, training=True)
    bwd("gru", a, out.y, out.reserve, dy=out.y.astype(np.float64))


@case(TypeError, esc("x: expected a float32, float64 or bfloat16 array, got dtype int64"))
def x_integer():
    a = arrays("lstm")
    fwd("lstm", with_(a, x=a["x"].astype(np.int64)))


@case(TypeError, esc("x: expected a float32, float64 or bfloat16 array, got dtype float16"))
def x_float16():
    a = arrays("gru")
    fwd("gru", with_(a, x=a["x"].astype(np.float16)))


@case(TypeError, esc("w_hh: expected a float32, float64 or bfloat16 array, got dtype complex128"))
def w_hh_complex():
    a = arrays("gru")
    fwd("gru", with_(a, w_hh=a["w_hh"].astype(np.complex128)))


# lengths.
@case(ValueError, esc("lengths: expected 0 <= lengths[b] <= T = 3, got values from 1 to 4"))
def lengths_past_t():
    fwd("lstm", arrays("lstm"), lengths=[1, 4])


@case(ValueError, esc("lengths: expected 0 <= lengths[b] <= T = 3, got values from -1 to 2"))
def lengths_negative():
    fwd("gru", arrays("gru"), lengths=np.array([-1, 2]))


@case(ValueError, esc("lengths: expected 0 <= lengths[b] <= T = 3, got values from 0 to 4"))
def lengths_past_t_in_backward():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, out.reserve, lengths=[0, 4])


@case(ValueError, esc("lengths: expected 0 <= lengths[b] <= T = 0, got values from 1 to 1"))
def lengths_of_an_empty_problem():
    fwd("gru", arrays("gru", T=0), lengths=[1, 1])


@case(ValueError, esc("lengths: expected shape (2,), got (3,)"))
def lengths_too_many():
    fwd("lstm", arrays("lstm"), lengths=[1, 2, 3])


@case(TypeError, esc("lengths: expected an integer array, got dtype float64"))
def lengths_float():
    fwd("gru", arrays("gru"), lengths=[1.0, 2.0])


# Options (those of the forward: test_flags_must_be_booleans).
@case(TypeError, esc("batch_first: expected True or False, got 1.0"))
def lstm_backward_batch_first_a_float():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, out.reserve, batch_first=1.0)


CHILD = """
import importlib.util, os, sys
sys.path.insert(0, os.path.dirname(sys.argv[1]))  # helpers
spec = importlib.util.spec_from_file_location("errors", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
skip = set(sys.argv[2:])
for name, (f, exc, match) in module.CASES.items():
    if name not in skip:
        print(name, flush=True)
        try:
            f()
        except Exception:
            pass
print("DONE", flush=True)
"""


@pytest.fixture(scope="module")
def crashed():
    """Every case run in a child process; {name: what happened} of the ones
    that ended it or hung (each rerun skips the ones found so far)."""
    found = {}
    for _ in range(len(CASES) + 1):
        try:
            run = subprocess.run([sys.executable, "-c", CHILD, __file__, *found],
                                 capture_output=True, text=True, timeout=120)
            out, status, err = run.stdout, run.returncode, run.stderr
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            status, err = "timeout after 120 s", ""
        lines = out.split()
        if status == 0 and lines[-1:] == ["DONE"]:
            break
        if not lines or lines[-1] in found:  # it failed before any case: report, stop
            found["<child>"] = f"exit {status}: {err[-3000:]}"
            break
        found[lines[-1]] = f"exit {status}: {err[-3000:]}"
    return found


def test_no_case_ends_the_process(crashed):
    assert not crashed, "\n\n".join(f"{k}: {v}" for k, v in crashed.items())


@pytest.mark.parametrize("name", CASES)
def test_bad_argument_raises_a_clear_error(name, crashed):
    if name in crashed:
        pytest.fail(f"{name} ended the child process: {crashed[name]}")
    f, exc, match = CASES[name]
    with pytest.raises(exc, match=match) as info:
        f()
    assert info.type is exc  # not a subclass standing in for it


@pytest.mark.parametrize("cell", GATED)
def test_float32_reserve_of_a_long_problem_is_accepted(cell):
    """T = 2**24 + 1 with B = 0: every array but the reserve's header is empty."""
    a = arrays(cell, T=2**24 + 1, B=0, D=1, H=1, dtype=np.float32)
    out = fwd(cell, a, training=True)
    grads = bwd(cell, a, out.y, out.reserve)
    assert grads.dx.shape == a["x"].shape


def test_a_reserve_for_its_own_call_is_accepted():
    """The checks refuse nothing valid: each cell, dtype and option."""
    for cell in GATED:
        for dtype in (np.float32, np.float64):
            for reverse in (False, True):
                for batch_first in (False, True):
                    a = arrays(cell, dtype=dtype)
                    if batch_first:
                        a["x"] = np.ascontiguousarray(a["x"].transpose(1, 0, 2))
                    options = dict(reverse=reverse, batch_first=batch_first)
                    out = fwd(cell, a, training=True, **options)
                    bwd(cell, a, out.y, out.reserve, **options)
