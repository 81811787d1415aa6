/* AVX-512F micro-kernels: 32 zmm registers hold a 12 x 2-vector tile of
 * accumulators, two B vectors and the broadcast A value. Built with
 * -mavx512f -mavx2 -mfma; reached only through dispatch after cpu_has_avx512(). */
#include <immintrin.h>
#include <stddef.h>

#include "../kernels.h"

#define MR 12
#define PROBE_CHAINS 24

#include "vec_f32.h"
#include "../simd_kernels.h"
#include "../vec_undef.h"

#include "vec_f64.h"
#include "../simd_kernels.h"

/* On AVX2's table: its transposes serve here too (a plain copy gains little
 * from wider vectors, and every AVX-512 CPU has AVX2).
 * float32's kc = 512, not 256: a 64 KB panel is more than L1 holds, but two
 * B loads per 24 FMAs come from L2 fast enough, and a GEMM makes half the
 * passes over C (a training step's gates in the reserve, the weight
 * gradients): the LSTM and GRU at L 1-2.5% faster on one thread (Zen 4);
 * S, M, XL and two threads no different above the noise. float64's stays
 * 256: 512 measured 1-2% slower. */
const isa_kernels isa_avx512 = {
    .name = "avx512", .supported = cpu_has_avx512, .base = &isa_avx2,
    .f32 = {.mr = MR, .nr = 32, .mc = 96, .kc = 512, .nc = 1024,
            .step = step_f32_avx512,
            .cell = {[LSTM_FORWARD] = lstm_forward_f32_avx512,
                     [LSTM_BACKWARD] = lstm_backward_f32_avx512,
                     [GRU_FORWARD] = gru_forward_f32_avx512,
                     [GRU_BACKWARD] = gru_backward_f32_avx512,
                     [GRU_RF_FORWARD_RZ] = gru_rf_forward_rz_f32_avx512,
                     [GRU_RF_FORWARD_N] = gru_rf_forward_n_f32_avx512,
                     [GRU_RF_BACKWARD_ZN] = gru_rf_backward_zn_f32_avx512,
                     [GRU_RF_BACKWARD_R] = gru_rf_backward_r_f32_avx512},
            .apply = apply_f32_avx512, .fma_probe = fma_probe_f32_avx512,
            .few_k = few_k_f32_avx512},
    .f64 = {.mr = MR, .nr = 16, .mc = 96, .kc = 256, .nc = 512,
            .step = step_f64_avx512,
            .cell = {[LSTM_FORWARD] = lstm_forward_f64_avx512,
                     [LSTM_BACKWARD] = lstm_backward_f64_avx512,
                     [GRU_FORWARD] = gru_forward_f64_avx512,
                     [GRU_BACKWARD] = gru_backward_f64_avx512,
                     [GRU_RF_FORWARD_RZ] = gru_rf_forward_rz_f64_avx512,
                     [GRU_RF_FORWARD_N] = gru_rf_forward_n_f64_avx512,
                     [GRU_RF_BACKWARD_ZN] = gru_rf_backward_zn_f64_avx512,
                     [GRU_RF_BACKWARD_R] = gru_rf_backward_r_f64_avx512},
            .apply = apply_f64_avx512, .fma_probe = fma_probe_f64_avx512,
            .few_k = few_k_f64_avx512},
    /* the float32 tile over pairs of k: kc = 512 is a 32 KB panel; float32's
     * 64 KB would need kc = 1024, past FUSEDRNN_KC_MAX (not tried) */
    .bf16 = {.supported = cpu_has_avx512_bf16,
             .mr = MR, .nr = 32, .mc = 96, .kc = 512, .nc = 1024,
             .step = step_bf16_avx512, .narrow = narrow_bf16_avx512,
             .transpose = transpose_bf16_avx512, .pack_pairs = pack_pairs_bf16_avx512,
             .pack_pairs_t = pack_pairs_t_bf16_avx512,
             .fma_probe = fma_probe_bf16_avx512},
};
