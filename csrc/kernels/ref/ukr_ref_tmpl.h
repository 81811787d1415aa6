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

void SFX(few_k_ref)(int64_t m, int64_t n, int64_t k, const REAL *a, int64_t ars, int64_t acs,
                    const REAL *b, int64_t ldb, const unsigned char *keep, REAL *c, int64_t ldc,
                    int accumulate)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            REAL acc = 0;
            for (int64_t p = 0; p < k; p++)
                if (!keep || keep[p])
                    acc += a[i * ars + p * acs] * b[p * ldb + j];
            c[i * ldc + j] = accumulate ? c[i * ldc + j] + acc : acc;
        }
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

/* The gated cells, element by element: the oracle of the SIMD cell kernels
 * (kernels/cells_tmpl.h), the same maths in the same order. */
void SFX(lstm_forward_ref)(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r)
{
    const int64_t H = r->H;
    for (int64_t i = 0; i < m; i++) {
        REAL *g = r->gates[i] + col, *c = r->state[i] + col, *h = r->h[i] + col;
        const REAL *c_prev = r->prev[i] + col;
        for (int64_t j = 0; j < n; j++) {
            REAL in = SFX(sigmoid)(g[j]), forget = SFX(sigmoid)(g[H + j]);
            REAL cand = tanh(g[2 * H + j]), out = SFX(sigmoid)(g[3 * H + j]);
            c[j] = forget * c_prev[j] + in * cand;
            h[j] = out * tanh(c[j]);
            g[j] = in, g[H + j] = forget, g[2 * H + j] = cand, g[3 * H + j] = out;
        }
    }
}

void SFX(lstm_backward_ref)(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r)
{
    const int64_t H = r->H;
    for (int64_t i = 0; i < m; i++) {
        const REAL *g = r->gates[i] + col, *c = r->state[i] + col, *c_prev = r->prev[i] + col;
        const REAL *dh = r->h[i] + col;
        REAL *dc_next = r->carry[i] + col, *dg = r->dgates[i] + col;
        for (int64_t j = 0; j < n; j++) {
            REAL in = g[j], forget = g[H + j], cand = g[2 * H + j], out = g[3 * H + j];
            REAL tc = tanh(c[j]);
            REAL dc = dc_next[j] + dh[j] * out * (1 - tc * tc);
            dg[j] = dc * cand * (in * (1 - in));
            dg[H + j] = dc * c_prev[j] * (forget * (1 - forget));
            dg[2 * H + j] = dc * in * (1 - cand * cand);
            dg[3 * H + j] = dh[j] * tc * (out * (1 - out));
            dc_next[j] = dc * forget;
        }
    }
}

void SFX(gru_forward_ref)(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r)
{
    const int64_t H = r->H;
    for (int64_t i = 0; i < m; i++) {
        REAL *g = r->gates[i] + col, *h = r->h[i] + col;
        const REAL *hn = r->state[i] + col, *h_prev = r->prev[i] + col;
        for (int64_t j = 0; j < n; j++) {
            REAL reset = SFX(sigmoid)(g[j]), update = SFX(sigmoid)(g[H + j]);
            REAL cand = tanh(g[2 * H + j] + reset * hn[j]);
            h[j] = cand + update * (h_prev[j] - cand);   /* (1 - z) n + z h */
            g[j] = reset, g[H + j] = update, g[2 * H + j] = cand;
        }
    }
}

void SFX(gru_backward_ref)(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r)
{
    const int64_t H = r->H;
    for (int64_t i = 0; i < m; i++) {
        const REAL *g = r->gates[i] + col, *hn = r->state[i] + col, *h_prev = r->prev[i] + col;
        const REAL *dh_in = r->h[i] + col;
        REAL *carry = r->carry[i] + col, *dg = r->dgates[i] + col, *dxn = r->dxn[i] + col;
        for (int64_t j = 0; j < n; j++) {
            REAL reset = g[j], update = g[H + j], cand = g[2 * H + j];
            REAL dh = dh_in[j] + carry[j];
            REAL dn = dh * (1 - update) * (1 - cand * cand);
            dg[j] = dn * hn[j] * (reset * (1 - reset));
            dg[H + j] = dh * (h_prev[j] - cand) * (update * (1 - update));
            dg[2 * H + j] = dn * reset;
            dxn[j] = dn;
            carry[j] = dh * update;
        }
    }
}

/* The GRU with the reset gate first. Forward, first phase: the product has
 * added W_hr h and W_hz h; the second phase's product reads r h. */
void SFX(gru_rf_forward_rz_ref)(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r)
{
    const int64_t H = r->H;
    for (int64_t i = 0; i < m; i++) {
        REAL *g = r->gates[i] + col, *rh = r->state[i] + col;
        const REAL *h_prev = r->prev[i] + col;
        for (int64_t j = 0; j < n; j++) {
            REAL reset = SFX(sigmoid)(g[j]), update = SFX(sigmoid)(g[H + j]);
            rh[j] = reset * h_prev[j];
            g[j] = reset, g[H + j] = update;
        }
    }
}

/* Second phase: W_hn (r h) is in n's pre-activation. */
void SFX(gru_rf_forward_n_ref)(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r)
{
    const int64_t H = r->H;
    for (int64_t i = 0; i < m; i++) {
        REAL *g = r->gates[i] + col, *h = r->h[i] + col;
        const REAL *h_prev = r->prev[i] + col;
        for (int64_t j = 0; j < n; j++) {
            REAL update = g[H + j], cand = tanh(g[2 * H + j]);
            h[j] = cand + update * (h_prev[j] - cand);   /* (1 - z) n + z h */
            g[2 * H + j] = cand;
        }
    }
}

/* Backward, first phase: dh = [dr, dz]_{t+1} W_h{r,z} + dy, to which the
 * carry adds the paths through z and r h of step t+1. */
void SFX(gru_rf_backward_zn_ref)(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r)
{
    const int64_t H = r->H;
    for (int64_t i = 0; i < m; i++) {
        const REAL *g = r->gates[i] + col, *h_prev = r->prev[i] + col;
        const REAL *dh_in = r->h[i] + col;
        REAL *carry = r->carry[i] + col, *dg = r->dgates[i] + col;
        for (int64_t j = 0; j < n; j++) {
            REAL update = g[H + j], cand = g[2 * H + j];
            REAL dh = dh_in[j] + carry[j];
            dg[H + j] = dh * (h_prev[j] - cand) * (update * (1 - update));
            dg[2 * H + j] = dh * (1 - update) * (1 - cand * cand);
            carry[j] = dh * update;
        }
    }
}

/* Second phase: the product has made d(r h) = dn W_hn in the h rows. */
void SFX(gru_rf_backward_r_ref)(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r)
{
    for (int64_t i = 0; i < m; i++) {
        const REAL *g = r->gates[i] + col, *h_prev = r->prev[i] + col;
        const REAL *drh = r->h[i] + col;
        REAL *carry = r->carry[i] + col, *dg = r->dgates[i] + col;
        for (int64_t j = 0; j < n; j++) {
            REAL reset = g[j];
            dg[j] = drh[j] * h_prev[j] * (reset * (1 - reset));
            carry[j] += drh[j] * reset;
        }
    }
}
