/* AVX512_BF16 micro-kernels: the product kernel on vdpbf16ps (16 float32
 * lanes, each adding the products of a pair of bf16), the conversion of A
 * rows to bf16, and the dot product's peak probe. Built with -mavx512f
 * -mavx512bf16; reached only through the avx512 table's bf16 entries, which
 * dispatch keeps only after cpu_has_avx512_bf16().
 *
 * The product is simd_tmpl.h's, over pairs of k: the same tiles, blocking
 * and epilogues as the float32 kernel, with half the k steps. The file's
 * code stays in static functions, which .ci/check_wheel_isa.py attributes
 * to it; the entry points kernels.h names only call them. */
#include <immintrin.h>
#include <stddef.h>
#include <string.h>

#include "../kernels.h"

#define MR 12
#define PROBE_CHAINS 24

#include "vec_f32.h"
#undef SFX
#define SFX(name) name##_dot_avx512
#define KP 2
#define PREAL bf16
#define VB __m512bh
#define V_LOAD_B(p) ((__m512bh)_mm512_loadu_si512(p))
/* a pair of k of one A row, in every lane (A rows need no alignment) */
static inline __m512bh bcast_pair(const bf16 *p)
{
    int32_t pair;
    memcpy(&pair, p, sizeof pair);
    return (__m512bh)_mm512_set1_epi32(pair);
}
#define V_BCAST_A(p) bcast_pair(p)
#define V_DOT(acc, a, b) _mm512_dpbf16_ps(acc, a, b)
#include "../vmath_tmpl.h"
#include "../simd_tmpl.h"

static __attribute__((noinline)) void narrow(int64_t n, const float *src, bf16 *dst)
{
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
    for (; i < n; i++)   /* bf16_of rounds as the instruction does */
        dst[i] = bf16_of(src[i]);
}

/* acc += a0*b0 + a1*b1 per lane with a = 1 and b = 2^-20: over a probe's
 * iterations acc grows by a few hundredths, normal and finite. */
static __attribute__((noinline)) double probe(int64_t iters, float *sink)
{
    __m512 acc[PROBE_CHAINS];
    const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80);   /* 1.0 */
    const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3580);   /* 2^-20 */
#pragma GCC unroll 32
    for (int i = 0; i < PROBE_CHAINS; i++)
        acc[i] = _mm512_set1_ps((float)i);
    for (int64_t it = 0; it < iters; it++)
#pragma GCC unroll 32
        for (int i = 0; i < PROBE_CHAINS; i++)
            acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
    __m512 s = acc[0];
#pragma GCC unroll 32
    for (int i = 1; i < PROBE_CHAINS; i++)
        s = _mm512_add_ps(s, acc[i]);
    _mm512_mask_storeu_ps(sink, 1, s);
    return 4.0 * 16 * PROBE_CHAINS * (double)iters;   /* 2 products and 2 adds per lane */
}

void step_bf16_avx512(int64_t k, const bf16 *const *a_rows, const bf16 *Bp,
                      float *const *c_rows, const float *const *aux_rows,
                      int64_t col, int64_t m, int64_t n, epilogue epi)
{
    step_dot_avx512(k, a_rows, Bp, c_rows, aux_rows, col, m, n, epi);
}

void narrow_bf16_avx512(int64_t n, const float *src, bf16 *dst) { narrow(n, src, dst); }

double fma_probe_bf16_avx512(int64_t iters, float *sink) { return probe(iters, sink); }
