/* The kernel's own SSE mode, whatever the caller's: FTZ/DAZ, because denormal
 * operands make the recurrence crawl when activations decay towards zero
 * (flushing changes results only below FLT_MIN/DBL_MIN); round to nearest,
 * because results must not depend on the caller's rounding mode, nor on the
 * thread count when the workers' mode differs from the caller's; every
 * exception masked, so that NaN or inf in the inputs propagates instead of
 * trapping when the caller has unmasked one. */
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
