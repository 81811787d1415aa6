/* The SIMD product micro-kernel, written once over a thin vector layer and
 * the vector maths of vmath_tmpl.h. Included once per (ISA, dtype) by
 * kernels/<isa>/ukr_<isa>.c, after vmath_tmpl.h.
 *
 * Tiles are up to MR rows by one or two panels of NR = 2 vectors. Edge
 * tiles: packed operands are zero-padded, so a kernel computes the full tile
 * and stores only m x n, through a mask in the last vector. */

#define NR (2 * VL)

/* What the product multiplies: REAL by a broadcast REAL, one k a step
 * (FMA), unless the file defines a dot product over pairs of k (KP = 2,
 * PREAL its operands' type; kernels.h, ukr_bf16). A k unit is KP
 * elements: a panel row holds NR columns of KP each. */
#ifndef KP
#define KP 1
#define PREAL REAL
#define VB V
#define V_LOAD_B(p) V_LOAD(p)
#define V_BCAST_A(p) V_SET1(*(p))
#define V_DOT(acc, a, b) V_FMA(a, b, acc)
#endif

static inline V SFX(vepilogue)(V z, V y, epilogue epi)
{
    switch (epi) {
    case EPI_TANH:     return SFX(vtanh)(z);
    case EPI_RELU:     return V_MAX(V_ZERO(), z);   /* NaN passes through */
    case EPI_SIGMOID:  return SFX(vsigmoid)(z);
    case EPI_DTANH:    return V_MUL(z, V_FNMA(y, y, V_SET1(1)));
    case EPI_DRELU:    return V_MUL(z, V_GT0_ONE(y));
    case EPI_DSIGMOID: return V_MUL(z, V_MUL(y, V_SUB(V_SET1(1), y)));
    case EPI_BIAS:     return V_ADD(z, y);
    case EPI_SET:
    case EPI_ACC:      return z;
    }
    return z;
}

#if KP == 1   /* a dot-product file has the product alone: its maths is the float table's */
static void SFX(apply)(int64_t n, const REAL *z, const REAL *aux, REAL *out, epilogue epi)
{
    for (int64_t j = 0; j < n; j += VL) {
        V y = aux ? SFX(load_n)(aux + j, n - j) : V_ZERO();
        SFX(store_n)(out + j, n - j, SFX(vepilogue)(SFX(load_n)(z + j, n - j), y, epi));
    }
}

#endif

/* The tile of M_ rows (a compile-time constant after inlining) by NP panels
 * of NR columns, stored for the first m <= M_ rows and n <= NP*NR columns;
 * rows past m repeat row m-1. Panel q of Bp is at Bp + q*KP*ku*NR (ku: k in
 * whole units of KP). One or two rows (batch 1 or 2, or a thread's last
 * rows) give too few accumulator chains to hide the FMA latency: several
 * panels at once share each broadcast, and what is still short is made up
 * by splitting the k loop into KS interleaved partial sums, added at the
 * end. */
static inline __attribute__((always_inline)) void
SFX(step_tile)(const int M_, const int NP, const int KS, int64_t k, const PREAL *const *a_rows,
               const PREAL *Bp, REAL *const *c_rows, const REAL *const *aux_rows,
               int64_t col, int64_t m, int64_t n, epilogue epi)
{
    const int NV = 2 * NP;   /* vectors across the tile */
    const int64_t ku = (k + KP - 1) / KP, ld = ku * KP * NR;   /* k units; a panel's size */
    const PREAL *a[MR];
    V acc[MR][2][4];   /* [M_][KS][NV] used; fixed bounds keep it in registers */
    /* One k unit pp into partial sum ss: acc[i][ss][v] += a[i][pp] Bp[pp, v]. */
#define TILE_K(pp, ss)                                                            \
    do {                                                                          \
        VB b_[4];                                                                 \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                      \
            b_[v] = V_LOAD_B(Bp + (v / 2) * ld + ((pp) * NR + (v % 2) * VL) * KP); \
        _Pragma("GCC unroll 16") for (int i = 0; i < M_; i++) {                   \
            VB ai_ = V_BCAST_A(a[i] + (pp) * KP);                                 \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                  \
                acc[i][ss][v] = V_DOT(acc[i][ss][v], ai_, b_[v]);                 \
        }                                                                         \
    } while (0)
#pragma GCC unroll 16
    for (int i = 0; i < M_; i++) {
        a[i] = a_rows[i < m ? i : m - 1];
#pragma GCC unroll 4
        for (int s = 0; s < KS; s++)
#pragma GCC unroll 4
            for (int v = 0; v < NV; v++)
                acc[i][s][v] = V_ZERO();
    }
    /* The tile's C rows (and the backward's y rows) are read only at the
     * end, and may be far out in memory (y_t of a long sequence): ask for
     * them now, so they arrive while the k loop runs. */
#pragma GCC unroll 16
    for (int i = 0; i < M_; i++) {
        if (i >= m)
            break;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            if (v * VL >= n)
                break;
            __builtin_prefetch(c_rows[i] + col + v * VL, 1);
            if (aux_rows)
                __builtin_prefetch(aux_rows[i] + col + v * VL, 0);
        }
    }
    /* k units in rounds of KS, unit s of a round into partial sum s; the
     * ku % KS units left over go into partial sum 0. */
    int64_t p = 0;
    for (; p + KS <= ku; p += KS)
#pragma GCC unroll 4
        for (int s = 0; s < KS; s++)
            TILE_K(p + s, s);
    for (; p < ku; p++)
        TILE_K(p, 0);
#undef TILE_K
#pragma GCC unroll 16
    for (int i = 0; i < M_; i++) {
        if (i >= m)
            break;
        REAL *c = c_rows[i] + col;
        const REAL *aux = aux_rows ? aux_rows[i] + col : NULL;
#pragma GCC unroll 4
        for (int v = 0; v < NV; v++) {
            int64_t nv = n - v * VL;
            if (nv <= 0)
                break;
            V sum = acc[i][0][v];
#pragma GCC unroll 4
            for (int s = 1; s < KS; s++)
                sum = V_ADD(sum, acc[i][s][v]);
            V z = epi == EPI_SET || epi == EPI_BIAS ? sum
                                                    : V_ADD(SFX(load_n)(c + v * VL, nv), sum);
            V y = aux ? SFX(load_n)(aux + v * VL, nv) : V_ZERO();
            SFX(store_n)(c + v * VL, nv, SFX(vepilogue)(z, y, epi));
        }
    }
}

static void SFX(step)(int64_t k, const PREAL *const *a_rows, const PREAL *Bp,
               REAL *const *c_rows, const REAL *const *aux_rows,
               int64_t col, int64_t m, int64_t n, epilogue epi)
{
    /* Two panels at a time for one or two rows (8 accumulator vectors), one
     * for the last panel and for more rows. KS depends on m only: every
     * element is summed in the same order however the columns are split
     * between threads, so results are bitwise the same for any thread count. */
    for (int64_t j = 0; j < n; ) {
        int pair = m <= 2 && n - j > NR;
        const PREAL *B = Bp + j * ((k + KP - 1) / KP * KP);
        int64_t c = col + j, w = n - j;
        if (m == 1 && pair)
            SFX(step_tile)(1, 2, 2, k, a_rows, B, c_rows, aux_rows, c, m, w, epi);
        else if (m == 1)
            SFX(step_tile)(1, 1, 2, k, a_rows, B, c_rows, aux_rows, c, m, w, epi);
        else if (m == 2 && pair)
            SFX(step_tile)(2, 2, 1, k, a_rows, B, c_rows, aux_rows, c, m, w, epi);
        else if (m == 2)   /* a short last tile: fewer rows beat idle ones */
            SFX(step_tile)(2, 1, 1, k, a_rows, B, c_rows, aux_rows, c, m, w, epi);
        else if (m <= 4)
            SFX(step_tile)(4, 1, 1, k, a_rows, B, c_rows, aux_rows, c, m, w, epi);
        else if (MR > 8 && m <= 8)   /* AVX-512: 32 rows are 12 + 12 + 8, not a third 12 */
            SFX(step_tile)(8, 1, 1, k, a_rows, B, c_rows, aux_rows, c, m, w, epi);
        else
            SFX(step_tile)(MR, 1, 1, k, a_rows, B, c_rows, aux_rows, c, m, w, epi);
        j += pair ? 2 * NR : NR;
    }
}

#if KP == 1
/* The product of few k (the table's few_k): a row of C at a time, one
 * vector of columns at a time, each summed over the kept k in one chain,
 * the row's elements of A broadcast once. */
static void SFX(few_k)(int64_t m, int64_t n, int64_t k, const REAL *a, int64_t ars, int64_t acs,
                       const REAL *b, int64_t ldb, const unsigned char *keep, REAL *c,
                       int64_t ldc, int accumulate)
{
    const REAL *rows[FUSEDRNN_FEW_K];
    int64_t kept[FUSEDRNN_FEW_K], nk = 0;
    for (int64_t p = 0; p < k && p < FUSEDRNN_FEW_K; p++)
        if (!keep || keep[p]) {
            rows[nk] = b + p * ldb;
            kept[nk++] = p;
        }
    for (int64_t i = 0; i < m; i++) {
        REAL *ci = c + i * ldc;
        V av[FUSEDRNN_FEW_K];
        for (int64_t q = 0; q < nk; q++)
            av[q] = V_SET1(a[i * ars + kept[q] * acs]);
        for (int64_t j = 0; j < n; j += VL) {
            V acc = V_ZERO();
            for (int64_t q = 0; q < nk; q++)
                acc = V_FMA(av[q], SFX(load_n)(rows[q] + j, n - j), acc);
            if (accumulate)
                acc = V_ADD(SFX(load_n)(ci + j, n - j), acc);
            SFX(store_n)(ci + j, n - j, acc);
        }
    }
}

/* The peak probe: PROBE_CHAINS independent FMA chains, more than latency x
 * throughput on any target, so the loop runs at the FMA pipes' rate.
 * acc*a + b with a just below 1 stays bounded and normal. Returns the flops. */
static double SFX(fma_probe)(int64_t iters, REAL *sink)
{
    V acc[PROBE_CHAINS];
    V a = V_SET1((REAL)0.999999), b = V_SET1((REAL)1e-6);
#pragma GCC unroll 32
    for (int i = 0; i < PROBE_CHAINS; i++)
        acc[i] = V_SET1((REAL)i);
    for (int64_t it = 0; it < iters; it++)
#pragma GCC unroll 32
        for (int i = 0; i < PROBE_CHAINS; i++)
            acc[i] = V_FMA(acc[i], a, b);
    V s = acc[0];
#pragma GCC unroll 32
    for (int i = 1; i < PROBE_CHAINS; i++)
        s = V_ADD(s, acc[i]);
    V_STORE_M(sink, V_MASK(1), s);
    return 2.0 * VL * PROBE_CHAINS * (double)iters;
}
#endif
