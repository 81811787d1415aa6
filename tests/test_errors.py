"""Every bad argument raises, naming itself (the README's "Rules for every call"): TypeError
for dtypes, ValueError for shapes, sizes, lengths and options, from both
rnn_forward and rnn_backward.

All of this is argument checking in front of the kernel, so these tests are
not repeated per ISA.
"""

import re

import numpy as np
import pytest

import fusedrnn

T, B, D, H = 3, 2, 4, 5  # all different, so that no wrong size passes for another

# Which entry point takes which array argument.
BOTH = ("forward", "backward")
TAKEN_BY = {"x": BOTH, "h0": BOTH, "w_ih": BOTH, "w_hh": BOTH, "bias": ("forward",),
            "y": ("backward",), "dy": ("backward",), "dh_n": ("backward",)}
SHAPE_OF = {"x": (T, B, D), "h0": (B, H), "w_ih": (H, D), "w_hh": (H, H), "bias": (H,),
            "y": (T, B, H), "dy": (T, B, H), "dh_n": (B, H)}


def valid_arguments(dtype=np.float64):
    """A valid argument set for both entry points, every optional one given."""
    rng = np.random.default_rng(0)
    arguments = {name: rng.normal(size=shape).astype(dtype) for name, shape in SHAPE_OF.items()}
    return dict(arguments, lengths=np.array([T, 1]), nonlinearity="tanh", batch_first=False)


def call(op, **changes):
    """rnn_forward or rnn_backward on the valid arguments with `changes`."""
    a = dict(valid_arguments(), **changes)
    options = dict(nonlinearity=a["nonlinearity"], lengths=a["lengths"],
                   batch_first=a["batch_first"])
    if op == "forward":
        return fusedrnn.rnn_forward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["bias"], **options)
    return fusedrnn.rnn_backward(a["x"], a["h0"], a["w_ih"], a["w_hh"], a["y"], a["dy"],
                                 a["dh_n"], **options)


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
    """pytest params (op, name, value) for every entry point taking `name`,
    from {name: [values]}; ids read op-name-label(value)."""
    return [pytest.param(op, name, value, id=f"{op}-{name}-{label(value)}")
            for name, values in table.items() for value in values for op in TAKEN_BY[name]]


def shape_id(shape):
    return "x".join(map(str, shape)) if shape else "0d"


WRONG_NDIM = {
    "x": [(T, B), (T, B, D, 1), ()],
    "h0": [(H,), (1, B, H)],
    "w_ih": [(H * D,), (1, H, D)],
    "w_hh": [(H,), (1, H, H)],
    "bias": [(), (1, H)],
    "y": [(T * B, H), (T, B, H, 1)],
    "dy": [(T * B, H), (T, B, H, 1)],
    "dh_n": [(B * H,), (1, B, H)],
}


@pytest.mark.parametrize("op, name, shape", cases(WRONG_NDIM, shape_id))
def test_wrong_number_of_dimensions(op, name, shape):
    with raises(ValueError, name, shape):
        call(op, **{name: np.zeros(shape)})


# name -> [(wrong shape, the other argument it then disagrees with)]; the
# message may blame either, showing that argument's shape.
MISMATCHED = {
    "w_ih": [((H, D + 1), "x"), ((H + 1, D), "w_hh")],
    "w_hh": [((H + 1, H + 1), "w_ih")],
    "h0": [((B + 1, H), "x"), ((B, H + 1), "w_hh")],
    "bias": [((H + 1,), "w_hh")],
    "y": [((T + 1, B, H), "x"), ((T, B + 1, H), "x"), ((T, B, H + 1), "w_hh")],
    "dy": [((T + 1, B, H), "x"), ((T, B + 1, H), "x"), ((T, B, H + 1), "w_hh")],
    "dh_n": [((B + 1, H), "x"), ((B, H + 1), "w_hh")],
}


@pytest.mark.parametrize("op, name, case",
                         cases(MISMATCHED, lambda case: f"{shape_id(case[0])}_vs_{case[1]}"))
def test_sizes_that_disagree_between_arrays(op, name, case):
    shape, other = case
    with raises_blaming(ValueError, {name: shape, other: SHAPE_OF[other]}):
        call(op, **{name: np.zeros(shape)})


@pytest.mark.parametrize("op", BOTH)
def test_w_hh_not_square(op):
    with raises(ValueError, "w_hh", (H, H + 1)):
        call(op, w_hh=np.zeros((H, H + 1)))


@pytest.mark.parametrize("name", ["y", "dy"])
def test_time_major_y_with_batch_first(name):
    """y and dy follow x's layout: a (T,B,H) array where (B,T,H) is due."""
    batch_major = dict(x=np.zeros((B, T, D)), y=np.zeros((B, T, H)), dy=np.zeros((B, T, H)))
    with raises(ValueError, name, (T, B, H)):
        call("backward", batch_first=True, **dict(batch_major, **{name: np.zeros((T, B, H))}))


FLOAT_NAMES = [name for name in SHAPE_OF if name != "x"]


@pytest.mark.parametrize("op, name, dtypes", cases({
    name: [("float32", "float64"), ("float64", "float32")] for name in FLOAT_NAMES},
    lambda dtypes: "x_{}_{}".format(*dtypes)))
def test_float_dtype_differing_from_x(op, name, dtypes):
    x_dtype, other_dtype = dtypes
    arguments = valid_arguments(x_dtype)
    arguments[name] = arguments[name].astype(other_dtype)
    with raises(TypeError, name, other_dtype):
        call(op, **arguments)


NOT_FLOAT32_OR_64 = ["int64", "int32", "uint8", "complex128", "complex64", "float16",
                     "longdouble", "bool", "object"]


@pytest.mark.parametrize("op, name, dtype", cases({name: NOT_FLOAT32_OR_64 for name in SHAPE_OF}))
def test_unsupported_dtype(op, name, dtype):
    value = valid_arguments()[name].astype(dtype)
    with raises(TypeError, name, np.dtype(dtype)):
        call(op, **{name: value})


@pytest.mark.parametrize("op", BOTH)
@pytest.mark.parametrize("lengths", [[T, 1, 1], [T], [[T], [1]], T, []],
                         ids=["B_plus_1", "B_minus_1", "Bx1", "scalar", "empty"])
def test_lengths_of_the_wrong_shape(op, lengths):
    with raises(ValueError, "lengths", np.shape(lengths)):
        call(op, lengths=np.array(lengths, dtype=np.int64))


@pytest.mark.parametrize("op", BOTH)
@pytest.mark.parametrize("lengths", [np.array([3.0, 1.0]), [3.0, 1.0], np.array([True, True])],
                         ids=["float_array", "float_list", "bool_array"])
def test_lengths_that_are_not_integers(op, lengths):
    with raises(TypeError, "lengths", np.asarray(lengths).dtype):
        call(op, lengths=lengths)


@pytest.mark.parametrize("op", BOTH)
@pytest.mark.parametrize("lengths", [[-1, 1], [T + 1, 1], [1, np.iinfo(np.int64).min]],
                         ids=["negative", "above_T", "int64_min"])
def test_lengths_out_of_range(op, lengths):
    with raises(ValueError, "lengths", min(lengths) if min(lengths) < 0 else max(lengths)):
        call(op, lengths=np.array(lengths, dtype=np.int64))


@pytest.mark.parametrize("op", BOTH)
@pytest.mark.parametrize("nonlinearity", ["gelu", "Tanh", "", None, 0])
def test_unknown_nonlinearity(op, nonlinearity):
    with raises(ValueError, "nonlinearity", repr(nonlinearity)):
        call(op, nonlinearity=nonlinearity)


@pytest.mark.parametrize("option", ["reverse", "batch_first"])
@pytest.mark.parametrize("value", ["no", 2, None, 0.5])
def test_flags_must_be_booleans(option, value):
    """A truthy string must not silently switch a direction or a layout."""
    x = np.zeros((2, 1, 3))
    with pytest.raises(TypeError, match=f"^{option}: .*{value!r}"):
        fusedrnn.rnn_forward(x, None, np.zeros((4, 3)), np.zeros((4, 4)), **{option: value})


@pytest.mark.parametrize("value", ["2", True, 2.0])
def test_set_num_threads_takes_integers_only(value):
    with pytest.raises(TypeError, match="^n: "):
        fusedrnn.set_num_threads(value)
