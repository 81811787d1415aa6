/* The bf16 dot product's peak probe (AVX512_BF16's vdpbf16ps: 16 lanes, each
 * adding the products of two bf16 pairs into a float32). Its own file: built
 * with -mavx512bf16, reached only after cpu_has_avx512_bf16(). */
#include <immintrin.h>

#include "../kernels.h"

#define CHAINS 24   /* more than latency x throughput, as the FMA probe's */

/* acc += a0*b0 + a1*b1 per lane with a = 1 and b = 2^-20: over a probe's
 * iterations acc grows by a few hundredths, normal and finite. Static and
 * kept out of line, as every kernel file's code is a local symbol:
 * .ci/check_wheel_isa.py finds a kernel's instructions by the file its
 * local symbols follow. The entry point below only calls it. */
static __attribute__((noinline)) double probe(int64_t iters, float *sink)
{
    __m512 acc[CHAINS];
    const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80);   /* 1.0 */
    const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3580);   /* 2^-20 */
#pragma GCC unroll 32
    for (int i = 0; i < CHAINS; i++)
        acc[i] = _mm512_set1_ps((float)i);
    for (int64_t it = 0; it < iters; it++)
#pragma GCC unroll 32
        for (int i = 0; i < CHAINS; i++)
            acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    __m512 s = acc[0];
#pragma GCC unroll 32
    for (int i = 1; i < CHAINS; i++)
        s = _mm512_add_ps(s, acc[i]);
    _mm512_mask_storeu_ps(sink, 1, s);
    return 4.0 * 16 * CHAINS * (double)iters;   /* 2 products and 2 adds per lane */
}

double bf16_dot_probe_avx512(int64_t iters, float *sink)
{
    return probe(iters, sink);
}
