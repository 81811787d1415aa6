/* Vector maths shared by the product kernel's epilogues (simd_tmpl.h) and the
 * cell kernels (cells_tmpl.h). Included once per (ISA, dtype) by
 * kernels/<isa>/ukr_<isa>.c, which defines REAL, SFX(name), the vector
 * macros (V, VL, VMASK, V_*) and the constants of its dtype:
 *   SHIFTER     1.5 * 2^mantissa_bits: adding it rounds to an integer k and
 *               leaves k in the low mantissa bits (for 2^k without a convert)
 *   EXP_FLOOR   the most negative exponent argument kept: 2^k stays normal
 *   POLY_DEG    degree of the expm1 Taylor polynomial on |r| <= ln2/2
 *   LN2_HI/LO   ln 2 split so that k * LN2_HI is exact */

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
