/* The micro-kernel table: what a driver may ask of an ISA.
 *
 * Micro-kernels see only pointers, sizes and leading dimensions; they handle
 * their own edge tiles (m < mr, n < nr). Every ISA provides the same entries
 * for both dtypes, and the scalar ones (kernels/ref) are the oracle and the
 * fallback. */
#ifndef FUSEDRNN_KERNELS_H
#define FUSEDRNN_KERNELS_H

#include <stdint.h>

/* What the step kernel does with its tile once the product is in registers:
 * forward    c = act(c + acc)
 * backward   c = (c + acc) * act'(aux), the derivative taken from the stored
 *            output aux = act(z): 1 - y^2, y > 0, y (1 - y)
 * plain GEMM c = acc (EPI_SET), c = acc + aux (EPI_BIAS: aux a bias row;
 *            c is not read in either) or c = c + acc (EPI_ACC). */
typedef enum {
    EPI_TANH, EPI_RELU, EPI_SIGMOID,
    EPI_DTANH, EPI_DRELU, EPI_DSIGMOID,
    EPI_SET, EPI_BIAS, EPI_ACC
} epilogue;

/* Bounds on every ISA's blocking (mr, nr, mc, kc, nc of its tables below):
 * workspace sizes use them, so that a query stays valid whichever ISA is
 * active when the call runs. */
#define FUSEDRNN_MR_MAX 32
#define FUSEDRNN_NR_MAX 64
#define FUSEDRNN_MC_MAX 512
#define FUSEDRNN_KC_MAX 512
#define FUSEDRNN_NC_MAX 4096

#define REAL float
#define SFX(name) name##_f32
#include "kernels_tmpl.h"
#undef REAL
#undef SFX
#define REAL double
#define SFX(name) name##_f64
#include "kernels_tmpl.h"
#undef REAL
#undef SFX

typedef struct {
    const char *name;
    int (*supported)(void);   /* CPU and OS can run it */
    ukr_f32 f32;
    ukr_f64 f64;
} isa_kernels;

extern const isa_kernels isa_scalar, isa_avx2, isa_avx512;

/* The AVX2 transposes serve the AVX-512 table too: a plain copy gains little
 * from wider vectors, and every AVX-512 CPU has AVX2. */
void transpose_f32_avx2(int64_t rows, int64_t cols, const float *src, int64_t lds,
                        float *dst, int64_t ldd);
void transpose_f64_avx2(int64_t rows, int64_t cols, const double *src, int64_t lds,
                        double *dst, int64_t ldd);

/* CPU and OS support (cpuid + xgetbv), in baseline code: safe to call anywhere. */
int cpu_has_avx2(void);
int cpu_has_avx512(void);

#endif
