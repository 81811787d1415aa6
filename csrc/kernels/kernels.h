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

/* The most k of a product on the tables' few_k (batch 1 to 4 at T = 1). */
#define FUSEDRNN_FEW_K 4

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

/* bfloat16 as stored: the high half of a float32's bits. */
typedef uint16_t bf16;

/* Rounds a float32 to bf16 as AVX512_BF16's conversions do (vcvtneps2bf16):
 * to nearest even, a denormal to a zero of its sign, a NaN to a quiet NaN.
 * The scalar form every conversion of a product's operand follows, so that
 * what the vector and scalar code write is the same. */
static inline bf16 bf16_of(float f)
{
    union { float f; uint32_t u; } v = {f};
    if ((v.u & 0x7f800000u) == 0)              /* zero or denormal */
        return (bf16)((v.u >> 16) & 0x8000u);
    if ((v.u & 0x7fffffffu) > 0x7f800000u)     /* NaN: stays one, quiet */
        return (bf16)((v.u >> 16) | 0x40u);
    return (bf16)((v.u + 0x7fffu + ((v.u >> 16) & 1u)) >> 16);
}

/* float32 maths whose products read bf16 operands: AVX512_BF16's dot
 * product (vdpbf16ps) adds the products of a pair of k into each float32
 * lane, so packed B holds pairs of k rows interleaved: element (p, j) of a
 * panel at ((p/2)*nr + j)*2 + p%2, an odd k padded with a zero row. A rows
 * are bf16 rows of k elements (an odd k: one zero after them), read a pair
 * at a time. C, aux and every cell kernel are float32, the f32 table's. */
typedef struct {
    int (*supported)(void);          /* the CPU has the instructions of these entries
                                        (NULL: baseline ones) */
    int64_t mr, nr, mc, kc, nc;
    void (*step)(int64_t k, const bf16 *const *a_rows, const bf16 *Bp,
                 float *const *c_rows, const float *const *aux_rows,
                 int64_t col, int64_t m, int64_t n, epilogue epi);
    /* dst[j*ldd + i] = bf16_of(src[i*lds + j]) for i < rows, j < cols, and
     * a zero at i = rows when rows is odd (whole pairs): transposed A blocks */
    void (*transpose)(int64_t rows, int64_t cols, const float *src, int64_t lds,
                      bf16 *dst, int64_t ldd);
    /* dst[i] = bf16_of(src[i]), i < n: A rows */
    void (*narrow)(int64_t n, const float *src, bf16 *dst);
    /* B of k rows and `cols` columns into a panel of nr columns in pairs of
     * k: dst[((p/2)*nr + j)*2 + p%2] = bf16_of(B[p][j]), a zero after an odd
     * k; the rest of the panel left as it was. pack_pairs: B[p][j] =
     * src[p*lds + j], or 0 where keep (if given) has keep[p] == 0;
     * pack_pairs_t: B[p][j] = src[j*lds + p] (a transposed source). */
    void (*pack_pairs)(int64_t cols, int64_t k, const float *src, int64_t lds,
                       const unsigned char *keep, bf16 *dst, int64_t nr);
    void (*pack_pairs_t)(int64_t cols, int64_t k, const float *src, int64_t lds,
                         bf16 *dst, int64_t nr);
    cell_kernel_f32 cell[CELL_KERNELS];   /* the f32 table's (dispatch.c) */
    /* the dot product's peak probe, as fma_probe */
    double (*fma_probe)(int64_t iters, float *sink);
} ukr_bf16;
typedef cell_rows_f32 cell_rows_bf16;

typedef struct isa_kernels {
    const char *name;
    int (*supported)(void);          /* CPU and OS can run it */
    const struct isa_kernels *base;  /* whose entries fill the slots this one leaves
                                        NULL; NULL for the reference, which has all */
    ukr_f32 f32;
    ukr_f64 f64;
    /* bf16 products, on a CPU with a bf16 dot product only: where the table
     * has no step, bf16 calls compute with the f32 table on widened values
     * (rnn_bf16.c). The reference has only the conversions. */
    ukr_bf16 bf16;
} isa_kernels;

/* As each file defines them; dispatch.c completes them. */
extern const isa_kernels isa_scalar, isa_avx2, isa_avx512;

/* CPU and OS support (cpuid + xgetbv), in baseline code: safe to call anywhere. */
int cpu_has_avx2(void);
int cpu_has_avx512(void);
int cpu_has_avx512_bf16(void);

/* The bf16 conversions of the avx512 table (ukr_avx512_bf16.c, AVX512_BF16)
 * and of the reference; then the avx512 table's product kernel and peak
 * probe (the reference has no bf16 product: a CPU without the dot product
 * computes bf16 calls in float32). */
#define BF16_CONVERSIONS(isa)                                                       \
    void transpose_bf16_##isa(int64_t rows, int64_t cols, const float *src,        \
                              int64_t lds, bf16 *dst, int64_t ldd);                \
    void narrow_bf16_##isa(int64_t n, const float *src, bf16 *dst);                \
    void pack_pairs_bf16_##isa(int64_t cols, int64_t k, const float *src,          \
                               int64_t lds, const unsigned char *keep, bf16 *dst,  \
                               int64_t nr);                                        \
    void pack_pairs_t_bf16_##isa(int64_t cols, int64_t k, const float *src,        \
                                 int64_t lds, bf16 *dst, int64_t nr);
BF16_CONVERSIONS(avx512)
BF16_CONVERSIONS(ref)
#undef BF16_CONVERSIONS
void step_bf16_avx512(int64_t k, const bf16 *const *a_rows, const bf16 *Bp,
                      float *const *c_rows, const float *const *aux_rows,
                      int64_t col, int64_t m, int64_t n, epilogue epi);
double fma_probe_bf16_avx512(int64_t iters, float *sink);

#endif
