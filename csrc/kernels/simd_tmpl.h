/* SIMD micro-kernels written once over a thin vector layer. Included once per
 * (ISA, dtype) by kernels/<isa>/ukr_<isa>.c, which defines REAL, SFX(name),
 * the vector macros (V, VL, VMASK, V_*) and the constants of its dtype:
 *   SHIFTER     1.5 * 2^mantissa_bits: adding it rounds to an integer k and
 *               leaves k in the low mantissa bits (for 2^k without a convert)
 *   EXP_FLOOR   the most negative exponent argument kept: 2^k stays normal
 *   POLY_DEG    degree of the expm1 Taylor polynomial on |r| <= ln2/2
 *   LN2_HI/LO   ln 2 split so that k * LN2_HI is exact
 *
 * Tiles are up to MR rows by one or two panels of NR = 2 vectors. Edge
 * tiles: packed operands are zero-padded, so a kernel computes the full tile
 * and stores only m x n, through a mask in the last vector. */

#define NR (2 * VL)

/* The first n (>= 0) elements at p. Whole vectors take plain moves: AMD's
 * masked moves are microcoded and cost many times a plain one. */
static inline V SFX(load_n)(const REAL *p, int64_t n)
{
    return n >= VL ? V_LOAD(p) : V_LOAD_M(p, V_MASK(n));
}

static inline void SFX(store_n)(REAL *p, int64_t n, V v)
{
    if (n >= VL)
        V_STORE(p, v);
    else
        V_STORE_M(p, V_MASK(n), v);
}

/* exp and expm1 of y in [EXP_FLOOR, 0] share one reduction:
 * y = k ln2 + r, |r| <= ln2/2, p = expm1(r) by its Taylor series; then
 * exp(y) = 2^k (1 + p) and expm1(y) = 2^k p + (2^k - 1). For k = 0 the latter
 * is p itself, so expm1 keeps full relative accuracy near 0. */
static inline V SFX(expm1_reduced)(V y, V *scale)
{
    static const REAL inv_fact[] = {
        1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040,
        1.0 / 40320, 1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800,
        1.0 / 479001600, 1.0 / 6227020800.0};
    V t = V_FMA(y, V_SET1((REAL)1.4426950408889634), V_SET1(SHIFTER));
    V k = V_SUB(t, V_SET1(SHIFTER));
    V r = V_FNMA(k, V_SET1(LN2_HI), y);
    r = V_FNMA(k, V_SET1(LN2_LO), r);
    V q = V_SET1(inv_fact[POLY_DEG - 2]);
    for (int i = POLY_DEG - 3; i >= 0; i--)
        q = V_FMA(q, r, V_SET1(inv_fact[i]));
    *scale = V_POW2_SHIFTED(t);
    return V_FMA(V_MUL(r, r), q, r);
}

static inline V SFX(vtanh)(V x)
{
    /* tanh|x| = -u / (2 + u) with u = expm1(-2|x|) in (-1, 0]: no cancellation
     * for small |x|, and u -> -1 gives 1 for large |x|. V_MAX keeps NaN. */
    V y = V_MAX(V_SET1(EXP_FLOOR), V_MUL(V_SET1(-2), V_ABS(x)));
    V scale;
    V p = SFX(expm1_reduced)(y, &scale);
    V u = V_FMA(scale, p, V_SUB(scale, V_SET1(1)));
    return V_COPYSIGN(V_DIV(V_ABS(u), V_ADD(V_SET1(2), u)), x);
}

static inline V SFX(vsigmoid)(V x)
{
    /* e = exp(-|x|) never overflows; sigmoid = 1/(1+e) for x >= 0, e/(1+e) below. */
    V y = V_MAX(V_SET1(EXP_FLOOR), V_NEG(V_ABS(x)));
    V scale;
    V p = SFX(expm1_reduced)(y, &scale);
    V e = V_FMA(scale, p, scale);
    return V_DIV(V_SELECT_GE0(x, V_SET1(1), e), V_ADD(V_SET1(1), e));
}

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

static void SFX(apply)(int64_t n, const REAL *z, const REAL *aux, REAL *out, epilogue epi)
{
    for (int64_t j = 0; j < n; j += VL) {
        V y = aux ? SFX(load_n)(aux + j, n - j) : V_ZERO();
        SFX(store_n)(out + j, n - j, SFX(vepilogue)(SFX(load_n)(z + j, n - j), y, epi));
    }
}

/* The tile of M_ rows (a compile-time constant after inlining) by NP panels
 * of NR columns, stored for the first m <= M_ rows and n <= NP*NR columns;
 * rows past m repeat row m-1. Panel q of Bp is at Bp + q*k*NR. One or two
 * rows (batch 1 or 2, or a thread's last rows) give too few accumulator chains
 * to hide the FMA latency: several panels at once share each broadcast, and
 * what is still short is made up by splitting the k loop into KS interleaved
 * partial sums, added at the end. */
static inline __attribute__((always_inline)) void
SFX(step_tile)(const int M_, const int NP, const int KS, int64_t k, const REAL *const *a_rows,
               const REAL *Bp, REAL *const *c_rows, const REAL *const *aux_rows,
               int64_t col, int64_t m, int64_t n, epilogue epi)
{
    const int NV = 2 * NP;   /* vectors across the tile */
    const REAL *a[MR];
    V acc[MR][2][4];   /* [M_][KS][NV] used; fixed bounds keep it in registers */
    /* One k step pp into partial sum ss: acc[i][ss][v] += a[i][pp] Bp[pp, v]. */
#define TILE_K(pp, ss)                                                        \
    do {                                                                      \
        V b_[4];                                                              \
        _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)                  \
            b_[v] = V_LOAD(Bp + (v / 2) * k * NR + (pp) * NR + (v % 2) * VL); \
        _Pragma("GCC unroll 16") for (int i = 0; i < M_; i++) {               \
            V ai_ = V_SET1(a[i][pp]);                                         \
            _Pragma("GCC unroll 4") for (int v = 0; v < NV; v++)              \
                acc[i][ss][v] = V_FMA(ai_, b_[v], acc[i][ss][v]);             \
        }                                                                     \
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
    /* k in rounds of KS steps, step s of a round into partial sum s; the
     * k % KS steps left over go into partial sum 0. */
    int64_t p = 0;
    for (; p + KS <= k; p += KS)
#pragma GCC unroll 4
        for (int s = 0; s < KS; s++)
            TILE_K(p + s, s);
    for (; p < k; p++)
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

static void SFX(step)(int64_t k, const REAL *const *a_rows, const REAL *Bp,
               REAL *const *c_rows, const REAL *const *aux_rows,
               int64_t col, int64_t m, int64_t n, epilogue epi)
{
    /* Two panels at a time for one or two rows (8 accumulator vectors), one
     * for the last panel and for more rows. KS depends on m only: every
     * element is summed in the same order however the columns are split
     * between threads, so results are bitwise the same for any thread count. */
    for (int64_t j = 0; j < n; ) {
        int pair = m <= 2 && n - j > NR;
        const REAL *B = Bp + j * k;
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
        else
            SFX(step_tile)(MR, 1, 1, k, a_rows, B, c_rows, aux_rows, c, m, w, epi);
        j += pair ? 2 * NR : NR;
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
