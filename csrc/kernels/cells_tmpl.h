/* The gated cells' per-step elementwise maths, written once over the vector
 * layer: gates activated in registers, the state updated, h_t written into
 * y; and the derivatives. Included once per (ISA, dtype) after vmath_tmpl.h.
 * The scalar twins in kernels/ref/ukr_ref_tmpl.h are the same maths in the
 * same order; kernels.h documents the rows (cell_rows). */

/* One vector of columns [j, j + w) of gate q. */
#define GATE(row, q, j, w) SFX(load_n)((row) + (q) * H + (j), w)

static void SFX(lstm_forward)(int64_t m, int64_t col, int64_t n, const DT(cell_rows) *r)
{
    const int64_t H = r->H;
    for (int64_t i = 0; i < m; i++) {
        REAL *g = r->gates[i] + col, *c = r->state[i] + col, *h = r->h[i] + col;
        const REAL *c_prev = r->prev[i] + col;
        for (int64_t j = 0; j < n; j += VL) {
            const int64_t w = n - j;
            V in = SFX(vsigmoid)(GATE(g, 0, j, w)), forget = SFX(vsigmoid)(GATE(g, 1, j, w));
            V cand = SFX(vtanh)(GATE(g, 2, j, w)), out = SFX(vsigmoid)(GATE(g, 3, j, w));
            V c_new = V_FMA(forget, SFX(load_n)(c_prev + j, w), V_MUL(in, cand));
            SFX(store_n)(c + j, w, c_new);
            SFX(store_n)(h + j, w, V_MUL(out, SFX(vtanh)(c_new)));
            SFX(store_n)(g + j, w, in);
            SFX(store_n)(g + H + j, w, forget);
            SFX(store_n)(g + 2 * H + j, w, cand);
            SFX(store_n)(g + 3 * H + j, w, out);
        }
    }
}

/* s (1 - s): the derivative of sigmoid from its output */
#define DSIG(s) V_MUL(s, V_SUB(V_SET1(1), s))

static void SFX(lstm_backward)(int64_t m, int64_t col, int64_t n, const DT(cell_rows) *r)
{
    const int64_t H = r->H;
    for (int64_t i = 0; i < m; i++) {
        const REAL *g = r->gates[i] + col, *c = r->state[i] + col, *c_prev = r->prev[i] + col;
        const REAL *dh_in = r->h[i] + col;
        REAL *dc_next = r->carry[i] + col, *dg = r->dgates[i] + col;
        for (int64_t j = 0; j < n; j += VL) {
            const int64_t w = n - j;
            V in = GATE(g, 0, j, w), forget = GATE(g, 1, j, w);
            V cand = GATE(g, 2, j, w), out = GATE(g, 3, j, w);
            V dh = SFX(load_n)(dh_in + j, w);
            V tc = SFX(vtanh)(SFX(load_n)(c + j, w));
            V dc = V_FMA(V_MUL(dh, out), V_FNMA(tc, tc, V_SET1(1)), SFX(load_n)(dc_next + j, w));
            SFX(store_n)(dg + j, w, V_MUL(V_MUL(dc, cand), DSIG(in)));
            SFX(store_n)(dg + H + j, w, V_MUL(V_MUL(dc, SFX(load_n)(c_prev + j, w)), DSIG(forget)));
            SFX(store_n)(dg + 2 * H + j, w, V_MUL(V_MUL(dc, in), V_FNMA(cand, cand, V_SET1(1))));
            SFX(store_n)(dg + 3 * H + j, w, V_MUL(V_MUL(dh, tc), DSIG(out)));
            SFX(store_n)(dc_next + j, w, V_MUL(dc, forget));
        }
    }
}

static void SFX(gru_forward)(int64_t m, int64_t col, int64_t n, const DT(cell_rows) *r)
{
    const int64_t H = r->H;
    for (int64_t i = 0; i < m; i++) {
        REAL *g = r->gates[i] + col, *h = r->h[i] + col;
        const REAL *hn = r->state[i] + col, *h_prev = r->prev[i] + col;
        for (int64_t j = 0; j < n; j += VL) {
            const int64_t w = n - j;
            V reset = SFX(vsigmoid)(GATE(g, 0, j, w)), update = SFX(vsigmoid)(GATE(g, 1, j, w));
            V cand = SFX(vtanh)(V_FMA(reset, SFX(load_n)(hn + j, w), GATE(g, 2, j, w)));
            /* (1 - z) n + z h */
            SFX(store_n)(h + j, w, V_FMA(update, V_SUB(SFX(load_n)(h_prev + j, w), cand), cand));
            SFX(store_n)(g + j, w, reset);
            SFX(store_n)(g + H + j, w, update);
            SFX(store_n)(g + 2 * H + j, w, cand);
        }
    }
}

static void SFX(gru_backward)(int64_t m, int64_t col, int64_t n, const DT(cell_rows) *r)
{
    const int64_t H = r->H;
    for (int64_t i = 0; i < m; i++) {
        const REAL *g = r->gates[i] + col, *hn = r->state[i] + col, *h_prev = r->prev[i] + col;
        const REAL *dh_in = r->h[i] + col;
        REAL *carry = r->carry[i] + col, *dg = r->dgates[i] + col, *dxn = r->dxn[i] + col;
        for (int64_t j = 0; j < n; j += VL) {
            const int64_t w = n - j;
            V reset = GATE(g, 0, j, w), update = GATE(g, 1, j, w), cand = GATE(g, 2, j, w);
            V dh = V_ADD(SFX(load_n)(dh_in + j, w), SFX(load_n)(carry + j, w));
            V dn = V_MUL(V_MUL(dh, V_SUB(V_SET1(1), update)), V_FNMA(cand, cand, V_SET1(1)));
            SFX(store_n)(dg + j, w, V_MUL(V_MUL(dn, SFX(load_n)(hn + j, w)), DSIG(reset)));
            SFX(store_n)(dg + H + j, w,
                         V_MUL(V_MUL(dh, V_SUB(SFX(load_n)(h_prev + j, w), cand)), DSIG(update)));
            SFX(store_n)(dg + 2 * H + j, w, V_MUL(dn, reset));
            SFX(store_n)(dxn + j, w, dn);
            SFX(store_n)(carry + j, w, V_MUL(dh, update));
        }
    }
}

/* The GRU with the reset gate first, its two phases each way. */
static void SFX(gru_rf_forward_rz)(int64_t m, int64_t col, int64_t n, const DT(cell_rows) *r)
{
    const int64_t H = r->H;
    for (int64_t i = 0; i < m; i++) {
        REAL *g = r->gates[i] + col, *rh = r->state[i] + col;
        const REAL *h_prev = r->prev[i] + col;
        for (int64_t j = 0; j < n; j += VL) {
            const int64_t w = n - j;
            V reset = SFX(vsigmoid)(GATE(g, 0, j, w)), update = SFX(vsigmoid)(GATE(g, 1, j, w));
            SFX(store_n)(rh + j, w, V_MUL(reset, SFX(load_n)(h_prev + j, w)));
            SFX(store_n)(g + j, w, reset);
            SFX(store_n)(g + H + j, w, update);
        }
    }
}

static void SFX(gru_rf_forward_n)(int64_t m, int64_t col, int64_t n, const DT(cell_rows) *r)
{
    const int64_t H = r->H;
    for (int64_t i = 0; i < m; i++) {
        REAL *g = r->gates[i] + col, *h = r->h[i] + col;
        const REAL *h_prev = r->prev[i] + col;
        for (int64_t j = 0; j < n; j += VL) {
            const int64_t w = n - j;
            V update = GATE(g, 1, j, w), cand = SFX(vtanh)(GATE(g, 2, j, w));
            /* (1 - z) n + z h */
            SFX(store_n)(h + j, w, V_FMA(update, V_SUB(SFX(load_n)(h_prev + j, w), cand), cand));
            SFX(store_n)(g + 2 * H + j, w, cand);
        }
    }
}

static void SFX(gru_rf_backward_zn)(int64_t m, int64_t col, int64_t n, const DT(cell_rows) *r)
{
    const int64_t H = r->H;
    for (int64_t i = 0; i < m; i++) {
        const REAL *g = r->gates[i] + col, *h_prev = r->prev[i] + col;
        const REAL *dh_in = r->h[i] + col;
        REAL *carry = r->carry[i] + col, *dg = r->dgates[i] + col;
        for (int64_t j = 0; j < n; j += VL) {
            const int64_t w = n - j;
            V update = GATE(g, 1, j, w), cand = GATE(g, 2, j, w);
            V dh = V_ADD(SFX(load_n)(dh_in + j, w), SFX(load_n)(carry + j, w));
            SFX(store_n)(dg + H + j, w,
                         V_MUL(V_MUL(dh, V_SUB(SFX(load_n)(h_prev + j, w), cand)), DSIG(update)));
            SFX(store_n)(dg + 2 * H + j, w,
                         V_MUL(V_MUL(dh, V_SUB(V_SET1(1), update)), V_FNMA(cand, cand, V_SET1(1))));
            SFX(store_n)(carry + j, w, V_MUL(dh, update));
        }
    }
}

static void SFX(gru_rf_backward_r)(int64_t m, int64_t col, int64_t n, const DT(cell_rows) *r)
{
    for (int64_t i = 0; i < m; i++) {
        const REAL *g = r->gates[i] + col, *h_prev = r->prev[i] + col;
        const REAL *drh_in = r->h[i] + col;
        REAL *carry = r->carry[i] + col, *dg = r->dgates[i] + col;
        for (int64_t j = 0; j < n; j += VL) {
            const int64_t w = n - j;
            V reset = SFX(load_n)(g + j, w), drh = SFX(load_n)(drh_in + j, w);
            SFX(store_n)(dg + j, w, V_MUL(V_MUL(drh, SFX(load_n)(h_prev + j, w)), DSIG(reset)));
            SFX(store_n)(carry + j, w, V_FMA(drh, reset, SFX(load_n)(carry + j, w)));
        }
    }
}

#undef GATE
#undef DSIG
