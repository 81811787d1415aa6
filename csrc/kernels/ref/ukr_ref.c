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

static int always(void) { return 1; }

const isa_kernels isa_scalar = {
    "scalar", always,
    {REF_MR, REF_NR, 64, 256, 1024, step_ref_f32, transpose_ref_f32,
     {NULL, lstm_forward_ref_f32, gru_forward_ref_f32},
     {NULL, lstm_backward_ref_f32, gru_backward_ref_f32}, apply_ref_f32, fma_probe_ref_f32},
    {REF_MR, REF_NR, 64, 256, 1024, step_ref_f64, transpose_ref_f64,
     {NULL, lstm_forward_ref_f64, gru_forward_ref_f64},
     {NULL, lstm_backward_ref_f64, gru_backward_ref_f64}, apply_ref_f64, fma_probe_ref_f64},
};
