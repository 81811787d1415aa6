/* FTZ/DAZ: denormal operands make the recurrence crawl when activations decay
 * towards zero; flushing them changes results only below FLT_MIN/DBL_MIN. */
#include <xmmintrin.h>

#include "internal.h"

#define MXCSR_DAZ 0x0040u
#define MXCSR_FTZ 0x8000u

fp_mode fp_enter(void)
{
    fp_mode mode = {_mm_getcsr()};
    _mm_setcsr(mode.saved | MXCSR_DAZ | MXCSR_FTZ);
    return mode;
}

void fp_leave(fp_mode mode) { _mm_setcsr(mode.saved); }
