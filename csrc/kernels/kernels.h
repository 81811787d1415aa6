/* The micro-kernel table: what a driver may ask of an ISA.
 *
 * Micro-kernels see only pointers, sizes and leading dimensions; they handle
 * their own edge tiles (m < mr, n < nr). The scalar ones (kernels/ref) fill
 * every entry for both dtypes: they are the oracle and the fallback. An ISA
 * provides what it does better, entry by entry, over the table of the ISA it
 * builds on (`base`). */
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

/* The cell kernels, by what they compute: each cell's descriptor names the
 * ones its passes run. */
typedef enum {
    LSTM_FORWARD, LSTM_BACKWARD,
    GRU_FORWARD, GRU_BACKWARD,
    /* The GRU with the reset gate first: a step's two phases each way. */
    GRU_RF_FORWARD_RZ,    /* r, z = sig(.), and r h_{t-1} into the state row */
    GRU_RF_FORWARD_N,     /* n = tanh(.) once W_hn (r h_{t-1}) is in, then h_t */
    GRU_RF_BACKWARD_ZN,   /* the z and n gradients from dh; carry z dh */
    GRU_RF_BACKWARD_R,    /* the r gradient from d(r h) = dn W_hn; carry += r d(r h) */
    CELL_KERNELS
} cell_kernel_id;

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

typedef struct isa_kernels {
    const char *name;
    int (*supported)(void);          /* CPU and OS can run it */
    const struct isa_kernels *base;  /* whose entries fill the slots this one leaves
                                        NULL; NULL for the reference, which has all */
    ukr_f32 f32;
    ukr_f64 f64;
    /* The bf16 dot product's peak probe, as fma_probe (flops done; a result
     * to *sink), on a CPU with AVX512_BF16 only; NULL on an ISA without one.
     * bf16 calls compute in float32 on every ISA today (rnn_bf16.c): this
     * measures the peak a bf16 product kernel would run against. */
    double (*bf16_dot_probe)(int64_t iters, float *sink);
} isa_kernels;

/* As each file defines them; dispatch.c completes them. */
extern const isa_kernels isa_scalar, isa_avx2, isa_avx512;

/* CPU and OS support (cpuid + xgetbv), in baseline code: safe to call anywhere. */
int cpu_has_avx2(void);
int cpu_has_avx512(void);
int cpu_has_avx512_bf16(void);

double bf16_dot_probe_avx512(int64_t iters, float *sink);

#endif
