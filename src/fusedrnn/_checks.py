"""Argument checks shared by every layer of the Python package: the NumPy
API, the layers and network, the training helpers, the torch front end.
Each raises TypeError or ValueError naming the argument that is wrong."""

import operator

import numpy as np

from . import _kernel

try:   # NumPy's bfloat16, as JAX and others use it: the optional extra fusedrnn[bfloat16]
    import ml_dtypes
    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
except ImportError:
    BFLOAT16 = None

FLOATS = (np.dtype(np.float32), np.dtype(np.float64)) + ((BFLOAT16,) if BFLOAT16 else ())
_FLOAT_NAMES = "float32, float64 or bfloat16"
NO_BFLOAT16 = "bfloat16 needs the ml_dtypes package (pip install ml_dtypes, or fusedrnn[bfloat16])"
ACTIVATIONS = _kernel.ACTIVATIONS

# The kernel takes a thread count as a C int (and uses at most 64).
MAX_THREADS = 2**31 - 1


def float_dtype(dtype):
    """`dtype` as a NumPy dtype, float32, float64 or bfloat16 (also by its name)."""
    if isinstance(dtype, str) and dtype == "bfloat16":
        if BFLOAT16 is None:
            raise TypeError(f"dtype: {NO_BFLOAT16}")
        return BFLOAT16
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected {_FLOAT_NAMES}, got {dtype!r}") from None
    if dtype not in FLOATS:
        raise TypeError(f"dtype: expected {_FLOAT_NAMES}, got {dtype}")
    return dtype


def is_bfloat16(dtype):
    """Whether `dtype` (a NumPy dtype) is bfloat16. Not `dtype == BFLOAT16`
    alone: without ml_dtypes that is `dtype == None`, which NumPy reads as
    float64."""
    return BFLOAT16 is not None and dtype == BFLOAT16


def is_real(dtype):
    """A real-valued dtype (a float, bfloat16 included, or an integer): what a
    value that is not an argument of the kernel (a target, a state dict's
    entry, probabilities) may be. bfloat16's kind is "V", not "f"."""
    return dtype.kind in "fiu" or is_bfloat16(dtype)


def compute_dtype(dtype):
    """The dtype NumPy arithmetic on arrays of a float `dtype` runs in outside
    the kernel (the network's output layer and loss): float32 for bfloat16,
    as the kernel computes it, since each of NumPy's bfloat16 operations
    rounds to 8 significant bits (a sum of many terms drops every one below
    about 2^-8 of the running total); otherwise the dtype itself."""
    return np.dtype(np.float32) if is_bfloat16(dtype) else dtype


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
        raise TypeError(f"{name}: expected a {_FLOAT_NAMES} array, got dtype {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype} (the dtype of x), got {a.dtype}")
    if isinstance(shape, int):
        if a.ndim != shape:
            raise ValueError(f"{name}: expected a {shape}-D array, got shape {a.shape}")
    elif a.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {a.shape}")
    return a


def dtype_reason(dtype, x_dtype):
    """Why an array must have `dtype` in a call on x of x_dtype: x's, or a
    bfloat16 call's float32 reserve."""
    return "the dtype of x" if dtype == x_dtype else f"the reserve of a {x_dtype} call"


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


def out_arrays(name, given, fields, shapes, dtype, reserve_dtype=None):
    """The arrays a caller gives a call to write its results into (out=,
    grads_out=): `given` a tuple with one entry per field of the result
    (`fields` and `shapes` in its order; a shape None: the call returns None
    there, and the entry must be None), each an array of exactly that shape
    and `dtype` (a field "reserve": `reserve_dtype` if given), C-contiguous,
    aligned and writeable. Nothing is converted
    or copied: the results must land in the caller's memory."""
    if not isinstance(given, tuple):
        raise TypeError(f"{name}: expected a tuple ({', '.join(fields)}) of arrays to write "
                        f"into, got {type(given).__name__}")
    if len(given) != len(fields):
        raise ValueError(f"{name}: expected a tuple of {len(fields)} ({', '.join(fields)}), "
                         f"got {len(given)} items")
    for field, shape, a in zip(fields, shapes, given):
        want = reserve_dtype if field == "reserve" and reserve_dtype else dtype
        if shape is None:
            if a is not None:
                raise ValueError(f"{name}.{field}: expected None (this call returns no "
                                 f"{field}), got {type(a).__name__}")
        # One test for the common case (flags.carray: C-contiguous, aligned
        # and writeable): at batch 1 every check is a visible part of a call.
        elif not (isinstance(a, np.ndarray) and a.dtype == want and a.shape == shape
                  and a.flags.carray):
            _refuse_out(f"{name}.{field}", a, shape, want, dtype)


def _refuse_out(label, a, shape, dtype, x_dtype):
    """Raise the error saying why `a` cannot take a result of `dtype` (in a
    call on x of x_dtype)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{label}: expected a NumPy array of shape {shape} to write into, "
                        f"got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{label}: expected dtype {dtype} ({dtype_reason(dtype, x_dtype)}), "
                        f"got {a.dtype}")
    if a.shape != shape:
        raise ValueError(f"{label}: expected shape {shape}, got {a.shape}")
    flags = a.flags
    missing = [what for what, ok in (("C-contiguous", flags.c_contiguous),
                                     ("aligned to its dtype", flags.aligned),
                                     ("writeable", flags.writeable)) if not ok]
    raise ValueError(f"{label}: expected a C-contiguous, aligned and writeable array (the "
                     f"results go into it, never into a copy), got one not "
                     f"{' or '.join(missing)}")


def disjoint(name, fields, written, read_names, read):
    """No array of `written` (the results given as `name`, one per field,
    None allowed) shares memory with another or with one of `read` (the
    inputs as the caller gave them, named by `read_names`, free to overlap
    one another). Memory bounds, as np.may_share_memory tests them: exact for
    contiguous arrays, as results are; a strided input's bounds include its
    gaps."""
    hit = _kernel.first_overlap((*written, *read), len(written))
    if hit is not None:
        labels = (*(f"{name}.{field}" for field in fields), *read_names)
        i, j = hit
        raise ValueError(f"{labels[i]} and {labels[j]} share memory: a result may overlap "
                         f"no input and no other result")
