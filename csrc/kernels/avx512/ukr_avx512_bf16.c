/* AVX512_BF16 micro-kernels: the product kernel on vdpbf16ps (16 float32
 * lanes, each adding the products of a pair of bf16), the conversions of
 * its operands to bf16 (A rows, A transposed, B panels in pairs of k), and
 * the dot product's peak probe. Built with -mavx512f -mavx512bf16 (AVX512F
 * and AVX512_BF16 instructions only); reached only through the avx512
 * table's bf16 entries, which dispatch keeps only after
 * cpu_has_avx512_bf16().
 *
 * The product is simd_tmpl.h's, over pairs of k: the same tiles, blocking
 * and epilogues as the float32 kernel, with half the k steps. The file's
 * code stays in static functions, which .ci/check_wheel_isa.py attributes
 * to it; the entry points kernels.h names only call them. */
#include <immintrin.h>
#include <stddef.h>
#include <stdint.h>
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

/* 16 float32 of row a and of row b rounded, as 16 pairs (a[i], b[i]): a
 * pair of k, the unit the product reads. AVX512F widening, no AVX512BW. */
static inline __m512i pairs(__m512 a, __m512 b)
{
    __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(a));
    __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(b));
    return _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
}

/* r[i] of 16 rows of 16 int32 becomes column i, in four rounds of shuffles
 * (32-bit, 64-bit, 128-bit, 256-bit granules). */
static inline void transpose16(__m512i r[16])
{
    __m512i t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int i = 0; i < 4; i++) {   /* 128-bit lanes: rows i, i+4 then i+8, i+12 */
        t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    }
}

/* the first n of 16 lanes (none for n <= 0) */
static inline __mmask16 first(int64_t n)
{
    return (__mmask16)(n >= 16 ? 0xffff : n <= 0 ? 0 : (1u << n) - 1);
}

/* The lanes of m of 16 floats at p, zeros elsewhere; no load at all when m
 * is empty. A load under an empty mask does not fault, but its address may
 * lie past the buffer (the second row of a last odd pair, a block's rows past
 * the last), and on Zen 4 each such load took a microcode assist of hundreds
 * of cycles: 70% of the bf16 backward at T = B = 1, in transpose. */
static inline __m512 load_lanes(__mmask16 m, const float *p)
{
    return m ? _mm512_maskz_loadu_ps(m, p) : _mm512_setzero_ps();
}

/* B packed from rows (element (p, j) at src[p*lds + j], a row left out as
 * zeros where keep[p] == 0): each pair of rows, 16 columns at a time, is
 * a run of the panel's pairs. */
static __attribute__((noinline)) void pack_pairs(int64_t cols, int64_t k, const float *src,
                                                 int64_t lds, const unsigned char *keep,
                                                 bf16 *dst, int64_t nr)
{
    for (int64_t p = 0; p < k; p += 2)
        for (int64_t j = 0; j < cols; j += 16) {
            __mmask16 m = first(cols - j);
            __mmask16 m0 = !keep || keep[p] ? m : 0;
            __mmask16 m1 = p + 1 < k && (!keep || keep[p + 1]) ? m : 0;
            __m512 a = load_lanes(m0, src + p * lds + j);
            __m512 b = load_lanes(m1, src + (p + 1) * lds + j);
            _mm512_mask_storeu_epi32(dst + ((p / 2) * nr + j) * 2, m, pairs(a, b));
        }
}

/* B packed from a transposed source (column j at src + j*lds): blocks of
 * 32 k by 16 columns, the pairs of each two rows transposed into the
 * panel's rows of pairs. */
static __attribute__((noinline)) void pack_pairs_t(int64_t cols, int64_t k, const float *src,
                                                   int64_t lds, bf16 *dst, int64_t nr)
{
    __m512i r[16];
    for (int64_t j = 0; j < cols; j += 16)
        for (int64_t p = 0; p < k; p += 32) {
            __mmask16 lo = first(k - p), hi = first(k - p - 16);
            for (int i = 0; i < 16; i++) {   /* column j + i's 32 k, as 16 pairs */
                if (j + i < cols) {
                    const float *c = src + (j + i) * lds + p;
                    __m512 a = load_lanes(lo, c), b = load_lanes(hi, c + 16);
                    /* even and odd k apart, then paired: 0,2,..,30 and 1,3,..,31 */
                    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18,
                                                           20, 22, 24, 26, 28, 30);
                    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
                    r[i] = pairs(_mm512_permutex2var_ps(a, even, b),
                                 _mm512_permutex2var_ps(a, odd, b));
                } else
                    r[i] = _mm512_setzero_si512();
            }
            transpose16(r);   /* r[q]: pair q of the block, for the 16 columns */
            __mmask16 m = first(cols - j);
            for (int64_t q = 0; q < 16 && p + 2 * q < k; q++)
                _mm512_mask_storeu_epi32(dst + (((p / 2) + q) * nr + j) * 2, m, r[q]);
        }
}

/* A transposed into bf16 rows (kernels.h, ukr_bf16.transpose): blocks of
 * 16 rows of the result by 32 k, each two source rows' pairs transposed. */
static __attribute__((noinline)) void transpose(int64_t rows, int64_t cols, const float *src,
                                                int64_t lds, bf16 *dst, int64_t ldd)
{
    __m512i r[16];
    for (int64_t j = 0; j < cols; j += 16) {
        __mmask16 m = first(cols - j);
        for (int64_t i = 0; i < rows; i += 32) {
            for (int q = 0; q < 16; q++) {   /* source rows i + 2q, i + 2q + 1 */
                int64_t p = i + 2 * q;
                __m512 a = load_lanes(p < rows ? m : 0, src + p * lds + j);
                __m512 b = load_lanes(p + 1 < rows ? m : 0, src + (p + 1) * lds + j);
                r[q] = pairs(a, b);
            }
            transpose16(r);   /* r[c]: column j + c's 16 pairs from row i */
            __mmask16 units = first((rows - i + 1) / 2);
            for (int64_t c = 0; c < 16 && j + c < cols; c++)
                _mm512_mask_storeu_epi32(dst + (j + c) * ldd + i, units, r[c]);
        }
    }
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

void pack_pairs_bf16_avx512(int64_t cols, int64_t k, const float *src, int64_t lds,
                            const unsigned char *keep, bf16 *dst, int64_t nr)
{
    pack_pairs(cols, k, src, lds, keep, dst, nr);
}

void pack_pairs_t_bf16_avx512(int64_t cols, int64_t k, const float *src, int64_t lds,
                              bf16 *dst, int64_t nr)
{
    pack_pairs_t(cols, k, src, lds, dst, nr);
}

void transpose_bf16_avx512(int64_t rows, int64_t cols, const float *src, int64_t lds,
                           bf16 *dst, int64_t ldd)
{
    transpose(rows, cols, src, lds, dst, ldd);
}

double fma_probe_bf16_avx512(int64_t iters, float *sink) { return probe(iters, sink); }
