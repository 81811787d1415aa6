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

const isa_kernels isa_avx512 = {
    "avx512", cpu_has_avx512,
    {MR, 32, 96, 256, 1024, step_f32_avx512, transpose_f32_avx2,
     {NULL, lstm_forward_f32_avx512, gru_forward_f32_avx512},
     {NULL, lstm_backward_f32_avx512, gru_backward_f32_avx512}, apply_f32_avx512, fma_probe_f32_avx512},
    {MR, 16, 96, 256, 512, step_f64_avx512, transpose_f64_avx2,
     {NULL, lstm_forward_f64_avx512, gru_forward_f64_avx512},
     {NULL, lstm_backward_f64_avx512, gru_backward_f64_avx512}, apply_f64_avx512, fma_probe_f64_avx512},
};
