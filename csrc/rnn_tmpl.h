/* The forward and backward drivers: the time loop, what is fused, what is
 * deferred. Included once per dtype by rnn.c, with REAL and SFX(name) defined.
 * Sequence arrays are addressed by rows: row (t,b) of x, y, dy, dx and dz. */

typedef struct {
    REAL *packed;            /* W_hh packed for the step kernel [H, H rounded up to nr] */
    REAL *pack_a, *pack_b;   /* GEMM engine panels */
    REAL *zeros;             /* [H] the state before the first step when h0 is NULL */
    const REAL **a_rows;     /* [B] per step: the rows multiplied by W_hh */
    REAL **c_rows;           /* [B] per step: the rows updated in place */
    const REAL **aux_rows;   /* [B] per backward step: y at the same rows */
    REAL *dz;                /* backward: [T,B,H] in y's layout */
    REAL *g;                 /* backward: [B,H] dz at each sequence's first step */
} SFX(work);

static size_t SFX(round_up)(arena *a, size_t n, size_t q)
{
    return arena_checked_mul(a, (n + q - 1) / q, q);
}

/* The largest GEMM of the call is [M,K] x [K,N]; the panels hold one block of it. */
static void SFX(take_panels)(arena *a, SFX(work) *w, size_t M, size_t N, size_t K)
{
    size_t kc = K < FUSEDRNN_KC_MAX ? K : FUSEDRNN_KC_MAX;
    size_t mc = M < FUSEDRNN_MC_MAX ? M : FUSEDRNN_MC_MAX;
    size_t nc = N < FUSEDRNN_NC_MAX ? N : FUSEDRNN_NC_MAX;
    w->pack_a = arena_take(a, arena_checked_mul(a, SFX(round_up)(a, mc, FUSEDRNN_MR_MAX), kc), sizeof(REAL));
    w->pack_b = arena_take(a, arena_checked_mul(a, SFX(round_up)(a, nc, FUSEDRNN_NR_MAX), kc), sizeof(REAL));
}

static SFX(work) SFX(carve)(arena *a, const fusedrnn_problem *p, int backward)
{
    size_t T = (size_t)p->T, B = (size_t)p->B, D = (size_t)p->D, H = (size_t)p->H;
    size_t TB = arena_checked_mul(a, T, B);
    SFX(work) w = {0};
    w.packed = arena_take(a, arena_checked_mul(a, H, SFX(round_up)(a, H, FUSEDRNN_NR_MAX)), sizeof(REAL));
    w.zeros = arena_take(a, H, sizeof(REAL));
    w.a_rows = arena_take(a, B, sizeof(REAL *));
    w.c_rows = arena_take(a, B, sizeof(REAL *));
    if (backward) {
        size_t big = TB > H ? TB : H;
        w.aux_rows = arena_take(a, B, sizeof(REAL *));
        w.dz = arena_take(a, arena_checked_mul(a, TB, H), sizeof(REAL));
        w.g = arena_take(a, arena_checked_mul(a, B, H), sizeof(REAL));
        SFX(take_panels)(a, &w, big, D > H ? D : H, big);
    } else {
        SFX(take_panels)(a, &w, TB, H, D);
    }
    return w;
}

static void SFX(zero)(REAL *v, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        v[i] = 0;
}

static void SFX(copy)(REAL *dst, const REAL *src, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dst[i] = src[i];
}

static void SFX(forward)(const fusedrnn_problem *p, const SFX(ukr) *u, SFX(work) w,
                         const REAL *x, const REAL *h0, const REAL *w_ih, const REAL *w_hh,
                         const REAL *bias, const int64_t *lengths, REAL *y, REAL *h_n)
{
    const int64_t T = p->T, B = p->B, D = p->D, H = p->H;
    const seq_layout L = layout_of(p);

    /* y = x W_ih^T + b for all steps in one GEMM, straight into y  [T*B,H] */
    for (int64_t r = 0; r < T * B; r++)
        for (int64_t j = 0; j < H; j++)
            y[r * H + j] = bias ? bias[j] : 0;
    SFX(gemm)(u, T * B, H, D, (SFX(view)){x, D, 1}, (SFX(view)){w_ih, 1, D},
              y, H, 1, w.pack_a, w.pack_b);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = seq_len(lengths, b, T); t < T; t++)
            SFX(zero)(y + row_of(L, t, b) * H, H);

    /* y_t = act(y_t + h_{t-1} W_hh^T) in place, step by step. At step s the
     * running sequences may sit at different times (reverse with lengths), so
     * the kernel takes its rows by pointer. */
    SFX(zero)(w.zeros, H);
    SFX(pack_b)(H, H, u->nr, w_hh, 1, H, w.packed);
    for (int64_t s = 0; s < T; s++) {
        int64_t m = 0;
        for (int64_t b = 0; b < B; b++) {
            int64_t len = seq_len(lengths, b, T);
            if (s >= len)
                continue;
            int64_t t = time_at(p, len, s);
            w.c_rows[m] = y + row_of(L, t, b) * H;
            w.a_rows[m] = s > 0 ? y + row_of(L, time_at(p, len, s - 1), b) * H
                        : h0    ? h0 + b * H
                                : w.zeros;
            m++;
        }
        SFX(step)(u, m, H, w.a_rows, w.packed, w.c_rows, NULL, epilogue_of(p->act, 0));
    }

    for (int64_t b = 0; b < B; b++) {
        int64_t len = seq_len(lengths, b, T);
        const REAL *last = len > 0 ? y + row_of(L, time_at(p, len, len - 1), b) * H
                         : h0      ? h0 + b * H
                                   : w.zeros;
        SFX(copy)(h_n + b * H, last, H);
    }
}

static void SFX(backward)(const fusedrnn_problem *p, const SFX(ukr) *u, SFX(work) w,
                          const REAL *x, const REAL *h0, const REAL *w_ih, const REAL *w_hh,
                          const int64_t *lengths, const REAL *y, const REAL *dy,
                          const REAL *dh_n, REAL *dx, REAL *dh0, REAL *dw_ih, REAL *dw_hh,
                          REAL *dbias)
{
    const int64_t T = p->T, B = p->B, D = p->D, H = p->H, TB = T * B;
    const seq_layout L = layout_of(p);
    REAL *dz = w.dz;

    /* dz starts as dy; dh_n joins each sequence at the step it ended on;
     * padded steps stay zero whatever dy holds there. */
    for (int64_t r = 0; r < TB * H; r++)
        dz[r] = dy ? dy[r] : 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t len = seq_len(lengths, b, T);
        for (int64_t t = len; t < T; t++)
            SFX(zero)(dz + row_of(L, t, b) * H, H);
        if (len > 0 && dh_n) {
            REAL *end = dz + row_of(L, time_at(p, len, len - 1), b) * H;
            for (int64_t j = 0; j < H; j++)
                end[j] += dh_n[b * H + j];
        }
    }

    /* dz_s = (dz_s + dz_{s+1} W_hh) * act'(y_s), newest step first, in place. */
    SFX(zero)(w.zeros, H);
    SFX(pack_b)(H, H, u->nr, w_hh, H, 1, w.packed);
    for (int64_t s = T - 1; s >= 0; s--) {
        int64_t m = 0;
        for (int64_t b = 0; b < B; b++) {
            int64_t len = seq_len(lengths, b, T);
            if (s >= len)
                continue;
            int64_t r = row_of(L, time_at(p, len, s), b);
            w.c_rows[m] = dz + r * H;
            w.aux_rows[m] = y + r * H;
            w.a_rows[m] = s + 1 < len ? dz + row_of(L, time_at(p, len, s + 1), b) * H : w.zeros;
            m++;
        }
        SFX(step)(u, m, H, w.a_rows, w.packed, w.c_rows, w.aux_rows, epilogue_of(p->act, 1));
    }

    /* The weight and input gradients, deferred to one GEMM each over K = T*B. */
    SFX(zero)(dbias, H);
    for (int64_t r = 0; r < TB; r++)
        for (int64_t j = 0; j < H; j++)
            dbias[j] += dz[r * H + j];
    SFX(gemm)(u, H, D, TB, (SFX(view)){dz, 1, H}, (SFX(view)){x, D, 1},
              dw_ih, D, 0, w.pack_a, w.pack_b);                       /* dz^T x   [H,D] */
    SFX(gemm)(u, TB, D, H, (SFX(view)){dz, H, 1}, (SFX(view)){w_ih, D, 1},
              dx, D, 0, w.pack_a, w.pack_b);                          /* dz W_ih  [T*B,D] */

    /* The first step of each sequence saw h0: g = its dz row, dh0 = g W_hh,
     * and dh_n passes straight through an empty sequence. */
    for (int64_t b = 0; b < B; b++) {
        int64_t len = seq_len(lengths, b, T);
        if (len > 0)
            SFX(copy)(w.g + b * H, dz + row_of(L, time_at(p, len, 0), b) * H, H);
        else
            SFX(zero)(w.g + b * H, H);
    }
    SFX(gemm)(u, B, H, H, (SFX(view)){w.g, H, 1}, (SFX(view)){w_hh, H, 1},
              dh0, H, 0, w.pack_a, w.pack_b);
    for (int64_t b = 0; b < B; b++)
        if (seq_len(lengths, b, T) == 0) {
            if (dh_n)
                SFX(copy)(dh0 + b * H, dh_n + b * H, H);
            else
                SFX(zero)(dh0 + b * H, H);
        }

    /* dW_hh = sum over steps of dz_t^T h_{t-1}. The first steps pair with h0;
     * every other step pairs with y one time step back (forward) or ahead
     * (reverse), which in either layout is y shifted by `step_rows` rows.
     * With the first-step rows of dz zeroed, the rows that the shift pairs
     * across sequence boundaries or with padding all have dz = 0. */
    if (h0)
        SFX(gemm)(u, H, H, B, (SFX(view)){w.g, 1, H}, (SFX(view)){h0, H, 1},
                  dw_hh, H, 0, w.pack_a, w.pack_b);
    for (int64_t b = 0; b < B; b++) {
        int64_t len = seq_len(lengths, b, T);
        if (len > 0)
            SFX(zero)(dz + row_of(L, time_at(p, len, 0), b) * H, H);
    }
    int64_t shift = L.t_rows, K = TB > shift ? TB - shift : 0;
    const REAL *dz_k = p->reverse ? dz : dz + shift * H;
    const REAL *y_k = p->reverse ? y + shift * H : y;
    SFX(gemm)(u, H, H, K, (SFX(view)){dz_k, 1, H}, (SFX(view)){y_k, H, 1},
              dw_hh, H, h0 != NULL, w.pack_a, w.pack_b);
}
