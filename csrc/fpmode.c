/* The kernel's own SSE mode, whatever the caller's.
 *
 * FTZ and DAZ. DAZ (denormals are zero) makes every SSE/AVX instruction (the
 * scalar kernels' too: x86-64 does scalar float arithmetic in SSE) read a
 * denormal operand (nonzero, below FLT_MIN or DBL_MIN in magnitude) as 0,
 * wherever it comes from: x, h0, the weights, the bias, dy, dh_n or an
 * intermediate result. FTZ (flush to zero) writes every result that would be
 * denormal as 0, so a product of two normal numbers smaller than FLT_MIN (as
 * 1e-20f * 1e-20f) is 0. This does not only change results below FLT_MIN:
 * a denormal that a large weight would bring back into the normal range is
 * lost whole. x = 1e-39f (a float32 denormal) with w_ih = 1e38f gives
 * h = tanh(0) = 0, where exact arithmetic (and the float64 reference) gives
 * tanh(0.1) = 0.0997; a denormal dy gives dx = 0 in the same way. Results
 * thus differ from IEEE arithmetic whenever a denormal operand or
 * intermediate occurs; tests/test_fpenv.py pins this. It is done anyway for
 * speed: when activations decay towards zero (a contracting W_hh, small
 * inputs, long sequences), the states and the BPTT gradients would sink
 * into the denormal range and stay there for many steps, every step
 * computing on denormals, and on x86 an operation with a denormal operand
 * or result can take a microcode assist of the order of a hundred cycles
 * instead of a few. What is lost is always a denormal, an operand or a
 * result below FLT_MIN (1.2e-38) or DBL_MIN (2.2e-308) in magnitude; what
 * it would have become after later operations can be large.
 *
 * Round to nearest, because results must not depend on the caller's rounding
 * mode, nor on the thread count when the workers' mode differs from the
 * caller's. Every exception masked, so that NaN or inf in the inputs
 * propagates instead of trapping when the caller has unmasked one. */
#include <xmmintrin.h>

#include "internal.h"

#define MXCSR_MASK_ALL 0x1f80u   /* all six exceptions masked, round to nearest */
#define MXCSR_DAZ 0x0040u
#define MXCSR_FTZ 0x8000u

fp_mode fp_enter(void)
{
    fp_mode mode = {_mm_getcsr()};
    _mm_setcsr(MXCSR_MASK_ALL | MXCSR_DAZ | MXCSR_FTZ);
    return mode;
}

void fp_leave(fp_mode mode) { _mm_setcsr(mode.saved); }
