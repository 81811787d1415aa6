/* AVX2 + FMA micro-kernels: 16 ymm registers hold a 6 x 2-vector tile of
 * accumulators, two B vectors and the broadcast A value. Built with
 * -mavx2 -mfma; reached only through dispatch after cpu_has_avx2(). */
#include <immintrin.h>
#include <stddef.h>

#include "../kernels.h"

#define MR 6
#define PROBE_CHAINS 12

#include "vec_f32.h"
#include "../simd_tmpl.h"
#include "../vec_undef.h"

#include "vec_f64.h"
#include "../simd_tmpl.h"

const isa_kernels isa_avx2 = {
    "avx2", cpu_has_avx2,
    {MR, 16, 120, 320, 2048, step_f32_avx2, apply_f32_avx2, fma_probe_f32_avx2},
    {MR, 8, 72, 256, 512, step_f64_avx2, apply_f64_avx2, fma_probe_f64_avx2},
};
