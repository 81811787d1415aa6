"""The one tolerance table (docs/design.md §10): how close a result in a
dtype must come to the float64 NumPy reference, used by the test suite, by
`python -m fusedrnn`'s check of the kernels, and by the bench's check of
every implementation it times against fusedrnn's results.

Element i agrees within tol when

    |actual_i - expected_i| <= tol * (|expected_i| + rms(expected)),

relative for the large elements and absolute, at the array's typical
magnitude, for the small ones: an element that is a sum of terms much larger
than itself (a gradient entry after cancellation) carries the rounding error
of those terms, not of its own size. The float32 value leaves room for the
vectorised tanh/sigmoid approximations and for the recurrence amplifying
rounding over T steps; float64 leaves room for the same at double precision.
"""

import numpy as np

from ._checks import BFLOAT16

TOLERANCE = {
    np.dtype(np.float32): 2e-4,
    np.dtype(np.float64): 1e-10,
}
# bfloat16 results are the float32 kernels' on the same (bf16) inputs, rounded
# once to bf16 (8 significant bits: at most 2^-8 relative, 3.9e-3), and the
# RNN's backward takes act' from the rounded y it is given, whose error is
# largest where tanh saturates (its gradients reached 1.1e-2 on random
# problems, 1.6e-2 on the bench's M and 1.8e-2 on its L): against the float64
# reference, on the same bf16 inputs and differentiated at its own y, 3e-2
# leaves room for both (docs/design.md, "bfloat16"). The gated cells'
# backwards read y unrounded, from the reserve, and stay within one rounding
# (tests/test_bfloat16.py).
if BFLOAT16 is not None:
    TOLERANCE[BFLOAT16] = 3e-2


def scaled_errors(actual, expected):
    """|actual_i - expected_i| / (|expected_i| + rms(expected)) for every
    element, in float64: the arrays agree within tol where each is <= tol.
    An element that is exactly right is 0, even where the scale is 0; a NaN
    on either side is inf, so that it fails every tolerance."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    error = np.abs(actual - expected)
    rms = np.sqrt(np.mean(expected ** 2)) if expected.size else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(error == 0, 0.0, error / (np.abs(expected) + rms))
    return np.where(np.isnan(scaled), np.inf, scaled)
