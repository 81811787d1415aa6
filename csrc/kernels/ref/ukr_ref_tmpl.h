/* Included once per dtype by ukr_ref.c, with REAL and SFX(name) defined. */

static inline REAL SFX(sigmoid)(REAL z)
{
    /* Split on the sign so that exp never overflows. */
    REAL e = exp(-fabs(z));
    return z >= 0 ? 1 / (1 + e) : e / (1 + e);
}

static inline REAL SFX(apply_epilogue)(REAL z, REAL y, epilogue epi)
{
    switch (epi) {
    case EPI_TANH:     return tanh(z);
    case EPI_RELU:     return z < 0 ? 0 : z;          /* NaN passes through */
    case EPI_SIGMOID:  return SFX(sigmoid)(z);
    case EPI_DTANH:    return z * (1 - y * y);
    case EPI_DRELU:    return z * (REAL)(y > 0);
    case EPI_DSIGMOID: return z * (y * (1 - y));
    case EPI_BIAS:     return z + y;
    case EPI_SET:
    case EPI_ACC:      return z;
    }
    return z;
}

/* One tile of m <= REF_MR rows by n <= REF_NR columns. */
static void SFX(step_tile)(int64_t k, const REAL *const *a_rows, const REAL *Bp,
                           REAL *const *c_rows, const REAL *const *aux_rows,
                           int64_t col, int64_t m, int64_t n, epilogue epi)
{
    REAL acc[REF_MR][REF_NR] = {{0}};
    for (int64_t p = 0; p < k; p++)
        for (int64_t i = 0; i < m; i++) {
            REAL a = a_rows[i][p];
            for (int j = 0; j < REF_NR; j++)
                acc[i][j] += a * Bp[p * REF_NR + j];
        }
    for (int64_t i = 0; i < m; i++) {
        REAL *c = c_rows[i] + col;
        const REAL *aux = aux_rows ? aux_rows[i] + col : NULL;
        for (int64_t j = 0; j < n; j++)
            c[j] = SFX(apply_epilogue)(epi == EPI_SET || epi == EPI_BIAS ? acc[i][j]
                                                                      : c[j] + acc[i][j],
                                       aux ? aux[j] : 0, epi);
    }
}

void SFX(step_ref)(int64_t k, const REAL *const *a_rows, const REAL *Bp,
                   REAL *const *c_rows, const REAL *const *aux_rows,
                   int64_t col, int64_t m, int64_t n, epilogue epi)
{
    for (int64_t j = 0; j < n; j += REF_NR)
        SFX(step_tile)(k, a_rows, Bp + j * k, c_rows, aux_rows, col + j, m,
                       n - j < REF_NR ? n - j : REF_NR, epi);
}

void SFX(transpose_ref)(int64_t rows, int64_t cols, const REAL *src, int64_t lds,
                        REAL *dst, int64_t ldd)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            dst[j * ldd + i] = src[i * lds + j];
}

void SFX(apply_ref)(int64_t n, const REAL *z, const REAL *aux, REAL *out, epilogue epi)
{
    for (int64_t j = 0; j < n; j++)
        out[j] = SFX(apply_epilogue)(z[j], aux ? aux[j] : 0, epi);
}

double SFX(fma_probe_ref)(int64_t iters, REAL *sink)
{
    REAL acc[REF_NR];
    for (int i = 0; i < REF_NR; i++)
        acc[i] = (REAL)i;
    for (int64_t it = 0; it < iters; it++)
        for (int i = 0; i < REF_NR; i++)
            acc[i] = acc[i] * (REAL)0.999999 + (REAL)1e-6;
    REAL s = 0;
    for (int i = 0; i < REF_NR; i++)
        s += acc[i];
    *sink = s;
    return 2.0 * REF_NR * (double)iters;
}
