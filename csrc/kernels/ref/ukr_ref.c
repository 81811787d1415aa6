/* Scalar micro-kernels: the oracle every SIMD kernel is tested against, and
 * the fallback on CPUs without AVX2. Built for baseline x86-64. */
#include <stddef.h>
#include <tgmath.h>

#include "../kernels.h"

/* A 4x8 tile keeps 32 accumulators: enough independent chains for the
 * compiler, small enough to stay in registers on baseline SSE2. */
#define REF_MR 4
#define REF_NR 8

#define REAL float
#define SFX(name) name##_f32
#include "ukr_ref_tmpl.h"
#undef REAL
#undef SFX
#define REAL double
#define SFX(name) name##_f64
#include "ukr_ref_tmpl.h"
#undef REAL
#undef SFX

/* The bf16 conversions (kernels.h, ukr_bf16): what the vector ones are
 * tested against, bit for bit, and the fallback of a table without them. */
void narrow_bf16_ref(int64_t n, const float *src, bf16 *dst)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = bf16_of(src[i]);
}

void transpose_bf16_ref(int64_t rows, int64_t cols, const float *src, int64_t lds,
                        bf16 *dst, int64_t ldd)
{
    for (int64_t j = 0; j < cols; j++) {
        for (int64_t i = 0; i < rows; i++)
            dst[j * ldd + i] = bf16_of(src[i * lds + j]);
        if (rows % 2)
            dst[j * ldd + rows] = 0;
    }
}

/* B[p][j] at src[p*rs + j*cs] */
static void pack_pairs_strided(int64_t cols, int64_t k, const float *src, int64_t rs,
                               int64_t cs, const unsigned char *keep, bf16 *dst, int64_t nr)
{
    for (int64_t p = 0; p < k + k % 2; p++)
        for (int64_t j = 0; j < cols; j++)
            dst[((p / 2) * nr + j) * 2 + p % 2] =
                p < k && (!keep || keep[p]) ? bf16_of(src[p * rs + j * cs]) : 0;
}

void pack_pairs_bf16_ref(int64_t cols, int64_t k, const float *src, int64_t lds,
                         const unsigned char *keep, bf16 *dst, int64_t nr)
{
    pack_pairs_strided(cols, k, src, lds, 1, keep, dst, nr);
}

void pack_pairs_t_bf16_ref(int64_t cols, int64_t k, const float *src, int64_t lds,
                           bf16 *dst, int64_t nr)
{
    pack_pairs_strided(cols, k, src, 1, lds, NULL, dst, nr);
}

static int always(void) { return 1; }

/* Every entry: the fallback of every other table. */
const isa_kernels isa_scalar = {
    .name = "scalar", .supported = always, .base = NULL,
    .f32 = {.mr = REF_MR, .nr = REF_NR, .mc = 64, .kc = 256, .nc = 1024,
            .step = step_ref_f32, .transpose = transpose_ref_f32,
            .cell = {[LSTM_FORWARD] = lstm_forward_ref_f32,
                     [LSTM_BACKWARD] = lstm_backward_ref_f32,
                     [GRU_FORWARD] = gru_forward_ref_f32,
                     [GRU_BACKWARD] = gru_backward_ref_f32,
                     [GRU_RF_FORWARD_RZ] = gru_rf_forward_rz_ref_f32,
                     [GRU_RF_FORWARD_N] = gru_rf_forward_n_ref_f32,
                     [GRU_RF_BACKWARD_ZN] = gru_rf_backward_zn_ref_f32,
                     [GRU_RF_BACKWARD_R] = gru_rf_backward_r_ref_f32},
            .apply = apply_ref_f32, .fma_probe = fma_probe_ref_f32, .few_k = few_k_ref_f32},
    .f64 = {.mr = REF_MR, .nr = REF_NR, .mc = 64, .kc = 256, .nc = 1024,
            .step = step_ref_f64, .transpose = transpose_ref_f64,
            .cell = {[LSTM_FORWARD] = lstm_forward_ref_f64,
                     [LSTM_BACKWARD] = lstm_backward_ref_f64,
                     [GRU_FORWARD] = gru_forward_ref_f64,
                     [GRU_BACKWARD] = gru_backward_ref_f64,
                     [GRU_RF_FORWARD_RZ] = gru_rf_forward_rz_ref_f64,
                     [GRU_RF_FORWARD_N] = gru_rf_forward_n_ref_f64,
                     [GRU_RF_BACKWARD_ZN] = gru_rf_backward_zn_ref_f64,
                     [GRU_RF_BACKWARD_R] = gru_rf_backward_r_ref_f64},
            .apply = apply_ref_f64, .fma_probe = fma_probe_ref_f64, .few_k = few_k_ref_f64},
    .bf16 = {.transpose = transpose_bf16_ref, .narrow = narrow_bf16_ref,
             .pack_pairs = pack_pairs_bf16_ref, .pack_pairs_t = pack_pairs_t_bf16_ref},
};
