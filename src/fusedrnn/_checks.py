"""Argument checks shared by every layer of the Python package: the NumPy
API, the layers and network, the training helpers, the torch front end.
Each raises TypeError or ValueError naming the argument that is wrong."""

import operator

import numpy as np

from . import _kernel

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
ACTIVATIONS = _kernel.ACTIVATIONS
CELLS = _kernel.CELLS

# The kernel takes a thread count as a C int (and uses at most 64).
MAX_THREADS = 2**31 - 1


def float_dtype(dtype):
    """`dtype` as a NumPy dtype, float32 or float64."""
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if dtype not in FLOATS:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


def as_array(name, a):
    """np.asarray, with the argument named when NumPy cannot convert it
    (ragged nested lists, for one)."""
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name}: cannot be read as an array: {e}") from None


def float_array(name, a, shape, dtype=None):
    """`a` as a float array of the given shape (an int: any shape of that many
    dimensions). Not copied yet: copies wait until every size is checked."""
    a = as_array(name, a)
    if a.dtype not in FLOATS:
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the dtype of x), got {a.dtype}")
    if isinstance(shape, int):
        if a.ndim != shape:
            raise ValueError(f"{name}: expected a {shape}-D array, got shape {a.shape}")
    elif a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
    return a


def optional(name, a, shape, dtype):
    return None if a is None else float_array(name, a, shape, dtype)


def activation(nonlinearity):
    """The kernel's value for an RNN nonlinearity's name."""
    try:
        return ACTIVATIONS[nonlinearity]
    except (KeyError, TypeError):
        raise ValueError(f"nonlinearity: expected one of {', '.join(map(repr, ACTIVATIONS))}, "
                         f"got {nonlinearity!r}") from None


def positive_int(name, value, most=None):
    """A size or count: an integer >= 1 (an int-like, never a bool or a float),
    and at most `most` when given."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a positive integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected a positive integer, got {value!r}") from None
    if value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value}")
    if most is not None and value > most:
        raise ValueError(f"{name}: expected at most {most}, got {value}")
    return value


def flag(name, value):
    """reverse, batch_first, training: a bool (or 0/1), never any truthy object."""
    if isinstance(value, (bool, np.bool_)) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{name}: expected True or False, got {value!r}")

