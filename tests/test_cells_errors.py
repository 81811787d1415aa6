"""Bad arguments to lstm_*/gru_* raise a TypeError or ValueError that names
the argument and shows what was expected and what was given; never a crash.

Each case is a function in CASES with the exception and a pattern its
message must match. The cases first run in a child process (the
`crashed` fixture): one that ends the process (a bad buffer reaching the
kernel) is found there and fails on its own, and only the others then run
here, where the messages are checked.
"""

import re
import subprocess
import sys

import numpy as np
import pytest

import fusedrnn

T, B, D, H = 3, 2, 4, 5
GATES = {"lstm": 4, "gru": 3}


def arrays(cell="lstm", T=T, B=B, D=D, H=H, dtype=np.float64, G=None):
    """Valid arguments of a forward, keyed like its parameters (G overrides
    the cell's gate count, to make wrongly shaped weights)."""
    G = GATES[cell] if G is None else G
    rng = np.random.default_rng(0)
    a = dict(x=rng.standard_normal((T, B, D)), h0=rng.standard_normal((B, H)))
    if cell == "lstm":
        a["c0"] = rng.standard_normal((B, H))
    a.update(w_ih=0.3 * rng.standard_normal((G * H, D)), w_hh=0.3 * rng.standard_normal((G * H, H)),
             b_ih=rng.standard_normal(G * H), b_hh=rng.standard_normal(G * H))
    return {k: v.astype(dtype) for k, v in a.items()}


def fwd(cell, a, **options):
    return (fusedrnn.lstm_forward if cell == "lstm" else fusedrnn.gru_forward)(**a, **options)


def bwd(cell, a, y, reserve, dy=None, dh_n=None, dc_n=None, **options):
    d = dict(dy=dy, dh_n=dh_n)
    if cell == "lstm":
        d["dc_n"] = dc_n
        return fusedrnn.lstm_backward(**a, y=y, reserve=reserve, **d, **options)
    return fusedrnn.gru_backward(**a, y=y, reserve=reserve, **d, **options)


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
    fwd("lstm", arrays("lstm", G=1))


@case(ValueError, esc("w_ih: expected shape (20, 4), got (5, 4)"))
def lstm_given_rnn_w_ih():
    a = arrays("lstm")
    fwd("lstm", with_(a, w_ih=a["w_ih"][:H]))


@case(ValueError, esc("w_hh: expected shape (3*H, H) for a GRU, (15, 5) for H = 5, "
                      "got shape (20, 5)"))
def gru_given_lstm_weights():
    a = arrays("lstm")
    del a["c0"]
    fwd("gru", a)


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
                      f"LSTM (T=3, B=2, D=4, H=5), got ({SIZE - 1},)"))
def reserve_one_short():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, out.reserve[:-1])


@case(ValueError, esc(f"reserve: expected shape ({SIZE},), from the training forward of this "
                      f"LSTM (T=3, B=2, D=4, H=5), got ({SIZE + 1},)"))
def reserve_one_long():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, np.append(out.reserve, 0.0))


@case(ValueError, esc(f"reserve: expected shape ({SIZE},), from the training forward of this "
                      f"LSTM (T=3, B=2, D=4, H=5), got (0,)"))
def reserve_empty():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, np.empty(0))


@case(ValueError, esc(f"reserve: expected shape ({SIZE},), from the training forward of this "
                      f"LSTM (T=3, B=2, D=4, H=5), got (1, {SIZE})"))
def reserve_two_dimensional():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, out.reserve[None])


@case(ValueError, esc("reserve: expected shape (") + r"\d+" +
      esc(",), from the training forward of this LSTM (T=3, B=2, D=4, H=5), got (") + r"\d+,\)")
def reserve_of_a_smaller_problem():
    a, out = lstm_reserve()
    small = fwd("lstm", arrays("lstm", T=2), training=True)
    bwd("lstm", a, out.y, small.reserve)


@case(ValueError, esc(f"reserve: expected shape ({reserve_size('gru')},), from the training "
                      f"forward of this GRU (T=3, B=2, D=4, H=5), got ({SIZE},)"))
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
THIS = "this one is LSTM T=3, B=2, D=4, H=5, reverse=False, batch_first=False, lengths=None"


@case(ValueError, esc("reserve: it comes from a different call (LSTM T=2, B=3, D=4, H=5, "
                      "reverse=False, batch_first=False, lengths=None); " + THIS))
def reserve_with_t_and_b_swapped():
    a, out = lstm_reserve()
    swapped = fwd("lstm", arrays("lstm", T=B, B=T), training=True)
    assert swapped.reserve.shape == out.reserve.shape
    bwd("lstm", a, out.y, swapped.reserve)


@case(ValueError, esc("reserve: it comes from a different call (LSTM T=3, B=2, D=4, H=5, "
                      "reverse=True, batch_first=False, lengths=None); " + THIS))
def reserve_with_reverse_flipped():
    a, out = lstm_reserve(reverse=True)
    bwd("lstm", a, out.y, out.reserve)


@case(ValueError, esc("reserve: it comes from a different call (GRU T=3, B=3, D=4, H=5, "
                      "reverse=False, batch_first=True, lengths=None); this one is GRU T=3, B=3, D=4, "
                      "H=5, reverse=False, batch_first=False, lengths=None"))
def reserve_with_batch_first_flipped():
    a = arrays("gru", T=3, B=3)
    out = fwd("gru", a, training=True, batch_first=True)
    bwd("gru", a, out.y, out.reserve)


@case(ValueError, esc("reserve: it comes from a different call (LSTM T=3, B=2, D=3, H=5, "
                      "reverse=False, batch_first=False, lengths=None); " + THIS))
def reserve_of_another_input_size():
    a, out = lstm_reserve()
    other = fwd("lstm", arrays("lstm", D=3), training=True)
    assert other.reserve.shape == out.reserve.shape  # D does not enter the size
    bwd("lstm", a, out.y, other.reserve)


@case(ValueError, esc("reserve: it comes from a different call (GRU T=5, B=8, D=4, H=5, "
                      "reverse=False, batch_first=False, lengths=None); this one is LSTM T=4, B=8, "
                      "D=4, H=5, reverse=False, batch_first=False, lengths=None"))
def reserve_of_the_other_cell_of_the_same_size():
    a = arrays("lstm", T=4, B=8)
    gru = fwd("gru", arrays("gru", T=5, B=8), training=True)
    out = fwd("lstm", a, training=True)
    assert gru.reserve.shape == out.reserve.shape  # (3 + 1) * 5 * 8 * H == (4 + 1) * 4 * 8 * H
    bwd("lstm", a, out.y, gru.reserve)


@case(ValueError, esc("reserve: it comes from a different call (RNN T=0, B=0, D=0, H=0, "
                      "reverse=False, batch_first=False, lengths with checksum 0); " + THIS))
def reserve_of_zeros():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, np.zeros_like(out.reserve))


@case(ValueError, r"reserve: it comes from a different call \(cell=\d+ T=-?\d+, .*\); " + esc(THIS))
def reserve_of_nan():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, np.full_like(out.reserve, np.nan))


@case(ValueError, r"reserve: it comes from a different call \(LSTM T=3, B=2, D=4, H=5, "
                  r"reverse=False, batch_first=False, lengths with checksum \d+\); " + esc(THIS))
def reserve_with_its_lengths_field_overwritten():
    a, out = lstm_reserve()
    reserve = out.reserve.copy()
    reserve[7] = 1  # float64: the eighth int64 of the header, the lengths field
    bwd("lstm", a, out.y, reserve)


@case(ValueError, r"reserve: it comes from a different call \(LSTM T=3, B=2, D=4, H=5, "
                  r"reverse=False, batch_first=False, lengths with checksum \d+\); this one is "
                  r"LSTM T=3, B=2, D=4, H=5, reverse=False, batch_first=False, lengths with "
                  r"checksum \d+")
def reserve_of_other_lengths():
    """The forward never wrote the padded rows of its reserve: a reserve from
    a call with other lengths would have the backward read them."""
    a = arrays("lstm")
    out = fwd("lstm", a, training=True, lengths=[3, 1])
    bwd("lstm", a, out.y, out.reserve, lengths=[1, 3])


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


@case(TypeError, esc("x: expected a float32 or float64 array, got dtype int64"))
def x_integer():
    a = arrays("lstm")
    fwd("lstm", with_(a, x=a["x"].astype(np.int64)))


@case(TypeError, esc("x: expected a float32 or float64 array, got dtype float16"))
def x_float16():
    a = arrays("gru")
    fwd("gru", with_(a, x=a["x"].astype(np.float16)))


@case(TypeError, esc("w_hh: expected a float32 or float64 array, got dtype complex128"))
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


# Options.
@case(TypeError, esc("training: expected True or False, got 'yes'"))
def lstm_training_a_string():
    fwd("lstm", arrays("lstm"), training="yes")


@case(TypeError, esc("training: expected True or False, got None"))
def gru_training_none():
    fwd("gru", arrays("gru"), training=None)


@case(TypeError, esc("training: expected True or False, got 2"))
def lstm_training_two():
    fwd("lstm", arrays("lstm"), training=2)


@case(TypeError, esc("training: expected True or False, got array([ True])"))
def gru_training_an_array():
    fwd("gru", arrays("gru"), training=np.array([True]))


@case(TypeError, esc("reverse: expected True or False, got 'no'"))
def gru_reverse_a_string():
    fwd("gru", arrays("gru"), reverse="no")


@case(TypeError, esc("batch_first: expected True or False, got 1.0"))
def lstm_backward_batch_first_a_float():
    a, out = lstm_reserve()
    bwd("lstm", a, out.y, out.reserve, batch_first=1.0)


CHILD = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("cells_errors", sys.argv[1])
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


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_float32_reserve_of_a_long_problem_is_accepted(cell):
    """T = 2**24 + 1 with B = 0: every array but the reserve's header is empty."""
    a = arrays(cell, T=2**24 + 1, B=0, D=1, H=1, dtype=np.float32)
    out = fwd(cell, a, training=True)
    grads = bwd(cell, a, out.y, out.reserve)
    assert grads.dx.shape == a["x"].shape


def test_a_reserve_for_its_own_call_is_accepted():
    """The checks refuse nothing valid: each cell, dtype and option."""
    for cell in ("lstm", "gru"):
        for dtype in (np.float32, np.float64):
            for reverse in (False, True):
                for batch_first in (False, True):
                    a = arrays(cell, dtype=dtype)
                    if batch_first:
                        a["x"] = np.ascontiguousarray(a["x"].transpose(1, 0, 2))
                    options = dict(reverse=reverse, batch_first=batch_first)
                    out = fwd(cell, a, training=True, **options)
                    bwd(cell, a, out.y, out.reserve, **options)
