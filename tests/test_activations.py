"""The vector activations alone, on every ISA, over the whole float range.

They are the step kernel's epilogue applied to a plain vector (the kernel's
`fusedrnn_activation` aid), compared with float64 / long-double NumPy."""

import numpy as np
import pytest

from fusedrnn import _kernel

pytestmark = pytest.mark.usefixtures("isa")

ACTS = {"tanh": 0, "relu": 1, "sigmoid": 2}
# Error bounds from the performance issue: float32 within 2e-7 of the exact
# value (relative near 0, where tanh(x) ~ x is tiny), float64 within 1e-15.
BOUND = {np.float32: 2e-7, np.float64: 1e-15}


def run(act, x, y=None):
    out = np.empty_like(x)
    _kernel.activation(ACTS[act], y is not None, x, y, out)
    return out


def exact(act, x):
    z = x.astype(np.longdouble)
    if act == "tanh":
        return np.tanh(z)
    if act == "sigmoid":
        return 0.5 * (1 + np.tanh(z / 2))  # no overflow for large |z|
    return np.maximum(z, 0)


def sweep(dtype):
    """Magnitudes from the smallest normal to the largest finite, both signs,
    plus a dense grid where the functions bend."""
    fi = np.finfo(dtype)
    mags = np.concatenate([
        np.geomspace(fi.tiny, fi.max / 4, 100_003, dtype=np.float64).astype(dtype),
        np.array([fi.max], dtype),
        np.linspace(0, 40, 100_003).astype(dtype),
    ])
    return np.concatenate([mags, -mags])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("act", ["tanh", "sigmoid", "relu"])
def test_accuracy_over_the_float_range(act, dtype):
    x = sweep(dtype)
    got = run(act, x).astype(np.float64)
    ref = exact(act, x).astype(np.float64)
    err = np.abs(got - ref)
    bound = BOUND[dtype] * np.where(np.abs(x) < 1, np.maximum(np.abs(ref), np.finfo(dtype).tiny), 1)
    worst = np.argmax(err / bound)
    assert np.all(err <= bound), f"{act}({x[worst]!r}) = {got[worst]!r}, exact {ref[worst]!r}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_special_values(dtype):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan], dtype)
    t = run("tanh", x)
    np.testing.assert_array_equal(t[:4], [0, 0, 1, -1])
    assert np.signbit(t[1]) and not np.signbit(t[0]), "tanh keeps the sign of zero"
    assert np.isnan(t[4:]).all()
    s = run("sigmoid", x)
    np.testing.assert_array_equal(s[:2], [0.5, 0.5])
    assert s[2] == 1 and 0 <= s[3] < 1e-37
    assert np.isnan(s[4:]).all()
    r = run("relu", x)
    np.testing.assert_array_equal(r[:4], [0, 0, np.inf, 0])
    assert np.isnan(r[4:]).all(), "relu passes NaN through, like np.maximum"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_denormal_inputs_stay_tiny(dtype):
    tiny = np.finfo(dtype).tiny
    x = np.array([tiny / 4, -tiny / 4, tiny / 1024], dtype)
    for act in ("tanh", "relu"):
        assert np.all(np.abs(run(act, x)) <= tiny), act
    np.testing.assert_allclose(run("sigmoid", x), 0.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("n", [1, 3, 7, 8, 9, 15, 16, 17, 33, 64, 100])
def test_derivatives_and_tails(dtype, n):
    """z * act'(y) from the stored output y, for lengths around every vector width."""
    rng = np.random.default_rng(n)
    z = rng.standard_normal(n).astype(dtype)
    pre = (3 * rng.standard_normal(n)).astype(dtype)
    for act, deriv in [("tanh", lambda y: 1 - y * y),
                       ("sigmoid", lambda y: y * (1 - y)),
                       ("relu", lambda y: (y > 0).astype(np.float64))]:
        y = run(act, pre)
        np.testing.assert_allclose(y, exact(act, pre).astype(np.float64),
                                   rtol=4 * BOUND[dtype], atol=BOUND[dtype], err_msg=act)
        expected = z.astype(np.float64) * deriv(y.astype(np.float64))
        np.testing.assert_allclose(run(act, z, y), expected, rtol=4 * np.finfo(dtype).eps,
                                   atol=4 * np.finfo(dtype).eps, err_msg=f"d{act}")
