/* The forward and backward drivers: the time loop, what is fused, what is
 * deferred, what runs on which thread. Included once per dtype by rnn.c,
 * with REAL and SFX(name) defined. Sequence arrays are addressed by rows:
 * row (t,b) of x, y, dy, dx and dz. */

typedef struct {
    REAL *packed;             /* W_hh packed for the step kernel [H, H rounded up to nr] */
    size_t packed_cap;
    SFX(slabs) *slabs;        /* [threads] GEMM panels, one set per thread */
    REAL *zeros;              /* [H] the state before the first step when h0 is NULL */
    /* The rows of a step, double-buffered: thread 0 fills the next step's
     * while the team still reads the current one. */
    const REAL **a_rows[2];   /* [B] the rows multiplied by W_hh */
    REAL **c_rows[2];         /* [B] the rows updated in place */
    const REAL **aux_rows[2]; /* [B] backward: y at the same rows */
    int64_t m[2];             /* rows in use */
    REAL *dz;                 /* backward: [T,B,H] in y's layout */
    REAL *g;                  /* backward: [B,H] dz at each sequence's first step */
    /* Backward: which K rows of a weight-gradient GEMM may reach the product
     * (1) and which are padding or pair across sequences (0, packed as zeros). */
    unsigned char *keep_x;    /* [T*B] row (t,b) of x: t < lengths[b] */
    unsigned char *keep_pair; /* [K of GEMM_DW_HH] a dz row that has a previous step */
    unsigned char *keep_h0;   /* [B] sequence b has a first step, which saw h0 */
} SFX(work);

static size_t SFX(round_up)(arena *a, size_t n, size_t q)
{
    return arena_checked_mul(a, (n + q - 1) / q, q);
}

static size_t SFX(min_size)(int64_t a, size_t b) { return (size_t)a < b ? (size_t)a : b; }

/* Each thread's slabs hold one block of the largest product of the pass:
 * the bounds on every ISA's blocking keep the size valid whichever ISA runs. */
static void SFX(take_slabs)(arena *a, SFX(work) *w, const fusedrnn_problem *p, int backward)
{
    const size_t align = 64 / sizeof(REAL);
    size_t a_cap = 0, b_cap = 0;
    for (int id = 0; id < GEMM_COUNT; id++) {
        if (!gemm_in_pass((gemm_id)id, backward))
            continue;
        gemm_dims d = dims_of(p, (gemm_id)id);
        size_t kc = SFX(min_size)(d.K, FUSEDRNN_KC_MAX);
        size_t mc = SFX(min_size)(d.M, FUSEDRNN_MC_MAX);
        size_t nc = SFX(round_up)(a, SFX(min_size)(d.N, FUSEDRNN_NC_MAX), FUSEDRNN_NR_MAX);
        size_t need_a = d.a_transposed ? arena_checked_mul(a, mc, kc) : 0;
        size_t need_b = arena_checked_mul(a, nc, kc);
        a_cap = need_a > a_cap ? need_a : a_cap;
        b_cap = need_b > b_cap ? need_b : b_cap;
    }
    a_cap = SFX(round_up)(a, a_cap, align);
    b_cap = SFX(round_up)(a, b_cap, align);
    int threads = team_size(p);
    w->slabs = arena_take(a, (size_t)threads, sizeof(SFX(slabs)));
    REAL *pa = arena_take(a, arena_checked_mul(a, a_cap, (size_t)threads), sizeof(REAL));
    REAL *pb = arena_take(a, arena_checked_mul(a, b_cap, (size_t)threads), sizeof(REAL));
    for (int i = 0; w->slabs && i < threads; i++)
        w->slabs[i] = (SFX(slabs)){pa + i * a_cap, pb + i * b_cap, a_cap, b_cap};
}

static SFX(work) SFX(carve)(arena *a, const fusedrnn_problem *p, int backward)
{
    size_t T = (size_t)p->T, B = (size_t)p->B, H = (size_t)p->H;
    size_t TB = arena_checked_mul(a, T, B);
    SFX(work) w = {0};
    w.packed_cap = arena_checked_mul(a, H, SFX(round_up)(a, H, FUSEDRNN_NR_MAX));
    w.packed = arena_take(a, w.packed_cap, sizeof(REAL));
    w.zeros = arena_take(a, H, sizeof(REAL));
    for (int i = 0; i < 2; i++) {
        w.a_rows[i] = arena_take(a, B, sizeof(REAL *));
        w.c_rows[i] = arena_take(a, B, sizeof(REAL *));
        w.aux_rows[i] = backward ? arena_take(a, B, sizeof(REAL *)) : NULL;
    }
    if (backward) {
        w.dz = arena_take(a, arena_checked_mul(a, TB, H), sizeof(REAL));
        w.g = arena_take(a, arena_checked_mul(a, B, H), sizeof(REAL));
        w.keep_x = arena_take(a, TB, 1);
        w.keep_pair = arena_take(a, (size_t)dims_of(p, GEMM_DW_HH).K, 1);
        w.keep_h0 = arena_take(a, B, 1);
    }
    SFX(take_slabs)(a, &w, p, backward);
    return w;
}

/* Everything one call works on. */
typedef struct {
    const fusedrnn_problem *p;
    const SFX(ukr) *u;
    SFX(work) *w;
    int backward;
    const REAL *x, *h0, *w_ih, *w_hh, *bias, *dy, *dh_n;
    const int64_t *lengths;
    REAL *y, *h_n, *dx, *dh0, *dw_ih, *dw_hh, *dbias;
} SFX(run);

/* libc's copies are vectorised for whatever CPU runs them; all-zero bits are 0.0. */
static void SFX(zero)(REAL *v, int64_t n)
{
    memset(v, 0, (size_t)n * sizeof(REAL));
}

static void SFX(copy)(REAL *dst, const REAL *src, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(REAL));
}

/* Product `id` of the call, C = A B (+ bias) or C += A B, over the team when
 * it is worth splitting; its sizes come from the table the slabs were sized by. */
static void SFX(gemm_team)(const SFX(run) *r, gemm_id id, SFX(view) A, SFX(view) B,
                           const unsigned char *keep, REAL *C, int64_t ldc, int accumulate,
                           const REAL *bias)
{
    gemm_dims d = dims_of(r->p, id);
    SFX(gemm_job) g = {r->u, d.M, d.N, d.K, A, B, keep, C, ldc, accumulate, bias, r->w->slabs};
    team_run(threads_for(r->p, (double)d.M * d.N * d.K, 1 << 18), SFX(gemm_slice), &g);
}

/* The rows of step s into buffer `buf`: the sequences still running, each at
 * its own time (reverse with lengths). Forward: y_t = act(y_t + h_{t-1} W^T),
 * h_{t-1} being the previous step's row of y, or h0. Backward: dz_t =
 * (dz_t + dz_{t'} W) act'(y_t), t' the step after t, or nothing at a
 * sequence's last step (the zero row). */
static void SFX(fill_rows)(const SFX(run) *r, int64_t s, int buf)
{
    const fusedrnn_problem *p = r->p;
    const seq_layout L = layout_of(p);
    const int64_t T = p->T, B = p->B, H = p->H;
    SFX(work) *w = r->w;
    int64_t m = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t len = seq_len(r->lengths, b, T);
        if (s >= len)
            continue;
        int64_t row = row_of(L, time_at(p, len, s), b) * H;
        if (!r->backward) {
            w->c_rows[buf][m] = r->y + row;
            w->a_rows[buf][m] = s > 0 ? r->y + row_of(L, time_at(p, len, s - 1), b) * H
                              : r->h0 ? r->h0 + b * H
                                      : w->zeros;
        } else {
            w->c_rows[buf][m] = w->dz + row;
            w->aux_rows[buf][m] = r->y + row;
            w->a_rows[buf][m] = s + 1 < len ? w->dz + row_of(L, time_at(p, len, s + 1), b) * H
                                            : w->zeros;
        }
        m++;
    }
    w->m[buf] = m;
}

/* The recurrence: every thread owns a slice of the hidden columns for all
 * steps; one barrier per step publishes h_t (or dz_t) to the others. */
static void SFX(time_loop)(void *arg, int tid, int n, team *t)
{
    const SFX(run) *r = arg;
    const int64_t T = r->p->T, H = r->p->H;
    SFX(work) *w = r->w;
    epilogue epi = epilogue_of(r->p->act, r->backward);
    int64_t j0, j1;
    team_share(H, r->u->nr, tid, n, &j0, &j1);
    if (tid == 0)
        SFX(fill_rows)(r, r->backward ? T - 1 : 0, 0);
    team_barrier(t);
    for (int64_t i = 0; i < T; i++) {
        int buf = (int)(i & 1);
        SFX(step)(r->u, w->m[buf], j0, j1, H, w->a_rows[buf], w->packed, w->c_rows[buf],
                  r->backward ? w->aux_rows[buf] : NULL, epi);
        if (tid == 0 && i + 1 < T)
            SFX(fill_rows)(r, r->backward ? T - 2 - i : i + 1, buf ^ 1);
        team_barrier(t);
    }
}

static void SFX(recurrence)(const SFX(run) *r)
{
    const fusedrnn_problem *p = r->p;
    int64_t panels = (p->H + r->u->nr - 1) / r->u->nr;
    int n = threads_for(p, (double)p->B * p->H * p->H, 1 << 15);
    SFX(zero)(r->w->zeros, p->H);
    if (p->T > 0)
        team_run(n < panels ? n : (int)panels, SFX(time_loop), (void *)r);
}

static void SFX(forward)(const SFX(run) *r)
{
    const fusedrnn_problem *p = r->p;
    const int64_t T = p->T, B = p->B, D = p->D, H = p->H;
    const seq_layout L = layout_of(p);
    REAL *y = r->y;

    /* y = x W_ih^T + b for all steps in one GEMM, straight into y  [T*B,H] */
    SFX(gemm_team)(r, GEMM_INPUT, (SFX(view)){r->x, D, 1}, (SFX(view)){r->w_ih, 1, D}, NULL,
                   y, H, 0, r->bias);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = seq_len(r->lengths, b, T); t < T; t++)
            SFX(zero)(y + row_of(L, t, b) * H, H);

    SFX(pack_b)(r->u, H, H, r->w_hh, 1, H, NULL, r->w->packed, r->w->packed_cap);   /* W_hh^T */
    SFX(recurrence)(r);

    for (int64_t b = 0; b < B; b++) {
        int64_t len = seq_len(r->lengths, b, T);
        const REAL *last = len > 0 ? y + row_of(L, time_at(p, len, len - 1), b) * H
                         : r->h0   ? r->h0 + b * H
                                   : r->w->zeros;
        SFX(copy)(r->h_n + b * H, last, H);
    }
}

/* Which rows of the deferred weight-gradient GEMMs carry a term of the sum.
 * dz is zero on every other row, but x's padding, h0 of an empty sequence or
 * an infinite state can be paired with such a row, and 0 * inf is NaN: those
 * are packed as zeros instead (pack_b's keep). A pair of the shifted dW_hh
 * GEMM counts when its dz row is a step of a sequence after its first: then
 * its y row is that sequence's previous step. */
static void SFX(mark_rows)(const SFX(run) *r)
{
    const fusedrnn_problem *p = r->p;
    const seq_layout L = layout_of(p);
    const int64_t T = p->T, B = p->B, shift = L.t_rows;
    const int64_t K = dims_of(p, GEMM_DW_HH).K;
    SFX(work) *w = r->w;
    for (int64_t b = 0; b < B; b++) {
        int64_t len = seq_len(r->lengths, b, T);
        w->keep_h0[b] = len > 0;
        for (int64_t t = 0; t < T; t++)
            w->keep_x[row_of(L, t, b)] = t < len;
    }
    /* forward: pair k is dz row k + shift with y row k; reverse: dz row k with y row k + shift */
    for (int64_t k = 0; k < K; k++)
        w->keep_pair[k] = w->keep_x[k] && w->keep_x[k + shift];
    if (!p->batch_first)
        return;
    /* Batch-first rows k and k + 1 can be the last step of one sequence and
     * the first of the next. */
    for (int64_t b = 0; b + 1 < B; b++)
        w->keep_pair[row_of(L, T - 1, b)] = 0;
}

static void SFX(backward)(const SFX(run) *r)
{
    const fusedrnn_problem *p = r->p;
    const int64_t T = p->T, B = p->B, D = p->D, H = p->H, TB = T * B;
    const seq_layout L = layout_of(p);
    REAL *dz = r->w->dz, *g = r->w->g;

    /* dz starts as dy; dh_n joins each sequence at the step it ended on;
     * padded steps stay zero whatever dy holds there. */
    if (r->dy)
        SFX(copy)(dz, r->dy, TB * H);
    else
        SFX(zero)(dz, TB * H);
    for (int64_t b = 0; b < B; b++) {
        int64_t len = seq_len(r->lengths, b, T);
        for (int64_t t = len; t < T; t++)
            SFX(zero)(dz + row_of(L, t, b) * H, H);
        if (len > 0 && r->dh_n) {
            REAL *end = dz + row_of(L, time_at(p, len, len - 1), b) * H;
            for (int64_t j = 0; j < H; j++)
                end[j] += r->dh_n[b * H + j];
        }
    }

    SFX(pack_b)(r->u, H, H, r->w_hh, H, 1, NULL, r->w->packed, r->w->packed_cap);   /* W_hh */
    SFX(recurrence)(r);
    SFX(mark_rows)(r);

    /* The weight and input gradients, deferred to one GEMM each over K = T*B. */
    SFX(zero)(r->dbias, H);
    for (int64_t i = 0; i < TB; i++)
        for (int64_t j = 0; j < H; j++)
            r->dbias[j] += dz[i * H + j];
    SFX(gemm_team)(r, GEMM_DW_IH, (SFX(view)){dz, 1, H}, (SFX(view)){r->x, D, 1},
                   r->w->keep_x, r->dw_ih, D, 0, NULL);                   /* dz^T x   [H,D] */
    SFX(gemm_team)(r, GEMM_DX, (SFX(view)){dz, H, 1}, (SFX(view)){r->w_ih, D, 1}, NULL,
                   r->dx, D, 0, NULL);                                     /* dz W_ih  [T*B,D] */

    /* The first step of each sequence saw h0: g = its dz row, dh0 = g W_hh,
     * and dh_n passes straight through an empty sequence. */
    for (int64_t b = 0; b < B; b++) {
        int64_t len = seq_len(r->lengths, b, T);
        if (len > 0)
            SFX(copy)(g + b * H, dz + row_of(L, time_at(p, len, 0), b) * H, H);
        else
            SFX(zero)(g + b * H, H);
    }
    SFX(gemm_team)(r, GEMM_DH0, (SFX(view)){g, H, 1}, (SFX(view)){r->w_hh, H, 1}, NULL,
                   r->dh0, H, 0, NULL);
    for (int64_t b = 0; b < B; b++)
        if (seq_len(r->lengths, b, T) == 0) {
            if (r->dh_n)
                SFX(copy)(r->dh0 + b * H, r->dh_n + b * H, H);
            else
                SFX(zero)(r->dh0 + b * H, H);
        }

    /* dW_hh = sum over steps of dz_t^T h_{t-1}. The first steps pair with h0;
     * every other step pairs with y one time step back (forward) or ahead
     * (reverse), which in either layout is y shifted by one time step's rows;
     * keep_pair leaves out the pairs that are not a step and its predecessor. */
    if (r->h0)
        SFX(gemm_team)(r, GEMM_DW_HH0, (SFX(view)){g, 1, H}, (SFX(view)){r->h0, H, 1},
                       r->w->keep_h0, r->dw_hh, H, 0, NULL);
    int64_t shift = L.t_rows;
    const REAL *dz_k = p->reverse ? dz : dz + shift * H;
    const REAL *y_k = p->reverse ? r->y + shift * H : r->y;
    SFX(gemm_team)(r, GEMM_DW_HH, (SFX(view)){dz_k, 1, H}, (SFX(view)){y_k, H, 1},
                   r->w->keep_pair, r->dw_hh, H, r->h0 != NULL, NULL);
}
