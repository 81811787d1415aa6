/* AVX2 + FMA micro-kernels: 16 ymm registers hold a 6 x 2-vector tile of
 * accumulators, two B vectors and the broadcast A value. Built with
 * -mavx2 -mfma; reached only through dispatch after cpu_has_avx2(). */
#include <immintrin.h>
#include <stddef.h>

#include "../kernels.h"

#define MR 6
#define PROBE_CHAINS 12

#include "vec_f32.h"
#include "../simd_kernels.h"
#include "../vec_undef.h"

#include "vec_f64.h"
#include "../simd_kernels.h"
#include "../vec_undef.h"

/* In-register transposes: 8 x 8 floats in three rounds of shuffles (pairs of
 * elements, pairs of pairs, 128-bit halves), 4 x 4 doubles in two. */
static inline void block_f32(const float *s, int64_t lds, float *d, int64_t ldd)
{
    __m256 r[8], t[8];
    for (int i = 0; i < 8; i++)
        r[i] = _mm256_loadu_ps(s + i * lds);
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int i = 0; i < 4; i++) {
        _mm256_storeu_ps(d + i * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
        _mm256_storeu_ps(d + (i + 4) * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
    }
}

static inline void block_f64(const double *s, int64_t lds, double *d, int64_t ldd)
{
    __m256d r[4], t[4];
    for (int i = 0; i < 4; i++)
        r[i] = _mm256_loadu_pd(s + i * lds);
    for (int i = 0; i < 4; i += 2) {
        t[i] = _mm256_unpacklo_pd(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_pd(r[i], r[i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        _mm256_storeu_pd(d + i * ldd, _mm256_permute2f128_pd(t[i], t[i + 2], 0x20));
        _mm256_storeu_pd(d + (i + 2) * ldd, _mm256_permute2f128_pd(t[i], t[i + 2], 0x31));
    }
}

#define REAL float
#define SFX(name) name##_f32_avx2
#define BS 8
#define BLOCK block_f32
#include "../transpose_tmpl.h"
#undef REAL
#undef SFX
#undef BS
#undef BLOCK
#define REAL double
#define SFX(name) name##_f64_avx2
#define BS 4
#define BLOCK block_f64
#include "../transpose_tmpl.h"

/* Blocking (measured on Zen 3, 32 KB L1d, 512 KB L2): a kc x nr panel of B
 * (16 KB) stays in L1 while an mc x kc block of A (L2) passes over it; the
 * kc x nc slab of B is 1 MB in either dtype, wide enough that A is read
 * once or twice for N up to 1760 (float32 XL: 72% -> 82% of peak over nc 512). */
const isa_kernels isa_avx2 = {
    .name = "avx2", .supported = cpu_has_avx2, .base = &isa_scalar,
    .f32 = {.mr = MR, .nr = 16, .mc = 72, .kc = 256, .nc = 1024,
            .step = step_f32_avx2, .transpose = transpose_f32_avx2,
            .cell = {[LSTM_FORWARD] = lstm_forward_f32_avx2,
                     [LSTM_BACKWARD] = lstm_backward_f32_avx2,
                     [GRU_FORWARD] = gru_forward_f32_avx2,
                     [GRU_BACKWARD] = gru_backward_f32_avx2,
                     [GRU_RF_FORWARD_RZ] = gru_rf_forward_rz_f32_avx2,
                     [GRU_RF_FORWARD_N] = gru_rf_forward_n_f32_avx2,
                     [GRU_RF_BACKWARD_ZN] = gru_rf_backward_zn_f32_avx2,
                     [GRU_RF_BACKWARD_R] = gru_rf_backward_r_f32_avx2},
            .apply = apply_f32_avx2, .fma_probe = fma_probe_f32_avx2,
            .few_k = few_k_f32_avx2},
    .f64 = {.mr = MR, .nr = 8, .mc = 72, .kc = 256, .nc = 512,
            .step = step_f64_avx2, .transpose = transpose_f64_avx2,
            .cell = {[LSTM_FORWARD] = lstm_forward_f64_avx2,
                     [LSTM_BACKWARD] = lstm_backward_f64_avx2,
                     [GRU_FORWARD] = gru_forward_f64_avx2,
                     [GRU_BACKWARD] = gru_backward_f64_avx2,
                     [GRU_RF_FORWARD_RZ] = gru_rf_forward_rz_f64_avx2,
                     [GRU_RF_FORWARD_N] = gru_rf_forward_n_f64_avx2,
                     [GRU_RF_BACKWARD_ZN] = gru_rf_backward_zn_f64_avx2,
                     [GRU_RF_BACKWARD_R] = gru_rf_backward_r_f64_avx2},
            .apply = apply_f64_avx2, .fma_probe = fma_probe_f64_avx2,
            .few_k = few_k_f64_avx2},
};
