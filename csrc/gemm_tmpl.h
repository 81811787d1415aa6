/* The GEMM engine and the step loop, portable C over the micro-kernel table.
 * Part of the drivers' body (rnn_tmpl.h), once per storage type.
 *
 * Operands are strided views: element (i,k) of A is A[i*rsa + k*csa], so a
 * transposed operand is just swapped strides and is never copied except into
 * the packed panels. */

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* libc's copies are vectorised for whatever CPU runs them; all-zero bits are 0.0. */
static void zero(REAL *v, int64_t n)
{
    if (n > 0)
        memset(v, 0, (size_t)n * sizeof(REAL));
}

static void copy(REAL *dst, const REAL *src, int64_t n)
{
    if (n > 0)
        memcpy(dst, src, (size_t)n * sizeof(REAL));
}

/* What the products read: PREAL operands, k in units of KP (rnn_tmpl.h).
 * Element (p, j) of a packed panel of nr columns, and k rounded up to whole
 * units: a panel holds KPAD(k) rows, an A row KPAD(k) elements. */
#define P_AT(p, j, nr) ((((p) / KP) * (nr) + (j)) * KP + (p) % KP)
#define KPAD(k) (((k) + KP - 1) / KP * KP)

/* The one place the operands' type shows: n values of src as a product's
 * operand (copied, or rounded to bf16 by the kernels' conversion, then a
 * zero up to a whole unit), and B's panels in their layout. */
#if KP == 1
static void to_operand(const ukr *u, PREAL *dst, const REAL *src, int64_t n)
{
    (void)u;
    copy(dst, src, n);
}

/* B's columns [0, w) of k rows into a panel, from rows (B[p][j] at
 * src[p*lds + j], zeros where keep[p] == 0) or transposed (at src[j*lds + p]) */
static void rows_panel(const ukr *u, int64_t w, int64_t k, const REAL *src, int64_t lds,
                       const unsigned char *keep, PREAL *Bp, int64_t nr)
{
    (void)u;
    for (int64_t p = 0; p < k; p++) {
        PREAL *dst = Bp + p * nr;
        if (!keep || keep[p])   /* plain copies, which the compiler vectorises */
            for (int64_t j = 0; j < w; j++)
                dst[j] = src[p * lds + j];
        else
            for (int64_t j = 0; j < w; j++)
                dst[j] = 0;
    }
}

static void transposed_panel(const ukr *u, int64_t w, int64_t k, const REAL *src, int64_t lds,
                             PREAL *Bp, int64_t nr)
{
    u->transpose(w, k, src, lds, Bp, nr);
}

/* Whether A's rows, `rs` elements apart, are read where they are rather
 * than copied into the slab: unless they are a multiple of 2 KB apart, at
 * most a quarter of a tile's rows share an L1 set, as in the slab's copy
 * (the copy cost about 5% of the LSTM backward's dx GEMM at M, reading dg
 * from L3 once more). */
static int rows_in_place(int64_t rs)
{
    return rs * (int64_t)sizeof(REAL) % 2048 != 0;
}
#else
static void to_operand(const ukr *u, PREAL *dst, const REAL *src, int64_t n)
{
    u->narrow(n, src, dst);
    for (int64_t i = n; i < KPAD(n); i++)
        dst[i] = 0;
}

static void rows_panel(const ukr *u, int64_t w, int64_t k, const REAL *src, int64_t lds,
                       const unsigned char *keep, PREAL *Bp, int64_t nr)
{
    u->pack_pairs(w, k, src, lds, keep, Bp, nr);
}

static void transposed_panel(const ukr *u, int64_t w, int64_t k, const REAL *src, int64_t lds,
                             PREAL *Bp, int64_t nr)
{
    u->pack_pairs_t(w, k, src, lds, Bp, nr);
}

/* bf16 operands are converted: always copied */
static int rows_in_place(int64_t rs)
{
    (void)rs;
    return 0;
}
#endif

/* Bp: ceil(n/nr) panels, each k rows of nr columns (k-major, in units of
 * KP rows: P_AT), zero-padded, into a slab of `cap` elements. Every B of
 * the drivers has unit stride along one axis: rows are copied, a
 * transposed B (columns contiguous) goes through the transpose kernel
 * (bf16: converted, by the kernels). Rows p with keep[p] == 0 are packed as
 * zeros (keep NULL: every row): padding that must never reach a product,
 * since 0 * NaN is NaN. */
static void pack_b(const ukr *u, int64_t k, int64_t n,
                        const REAL *B, int64_t rsb, int64_t csb, const unsigned char *keep,
                        PREAL *Bp, size_t cap)
{
    const int64_t nr = u->nr, kp = KPAD(k);
    FUSEDRNN_ASSERT((size_t)(kp * ((n + nr - 1) / nr * nr)) <= cap);
    FUSEDRNN_ASSERT(!keep || csb == 1);
    for (int64_t j0 = 0; j0 < n; j0 += nr, Bp += kp * nr) {
        int64_t w = min64(nr, n - j0);
        if (csb == 1)
            rows_panel(u, w, k, B + j0, rsb, keep, Bp, nr);
        else
            transposed_panel(u, w, k, B + j0 * csb, csb, Bp, nr);
        for (int64_t p = 0; p < kp; p++)
            for (int64_t j = p < k ? w : 0; j < nr; j++)
                Bp[P_AT(p, j, nr)] = 0;
    }
}

typedef struct {
    const REAL *p;
    int64_t rs, cs;   /* element (i,k) at p[i*rs + k*cs] */
} view;

/* One thread's GEMM panels: a (a transposed A block, mc x kc) and b (a
 * packed kc x nc slab of B), with their sizes in elements, which every pack
 * is checked against. */
typedef struct {
    PREAL *a, *b;
    size_t a_cap, b_cap;
} slabs;

/* One recurrent step or GEMM block over m rows and the columns [j0, j1):
 * c_rows[i][c_off + j] = epi(c_rows[i][c_off + j] + (a_rows Bp)[i][j]),
 * Bp packed by pack_b over k rows (c_off: which gate of a gates row).
 * Column panels outside, row tiles inside: each panel of Bp stays in L1
 * while every row tile passes over it. Rows that fit one tile go to the
 * kernel with all their columns at once, which it covers several panels at
 * a time (batch 1 and 2). So do the row tiles in turn when all of Bp fits
 * in STEP_ROWS_FIRST_BYTES, half of L1: a few k, where the product is its
 * stores (the bf16 operands' weight gradients at batch 1 to 4, which the
 * float ones' few_k does not take; an input of D <= 4). Row by row they run
 * along C's rows, which the prefetchers follow; panel by panel they hopped
 * between rows a whole row of C apart (an LSTM's float32 dW_hh at H = 1024,
 * batch 1, before few_k: about 2 ms, against 1.2 ms row by row). Each tile
 * sums in the same order either way (the kernel's KS depends on its rows
 * alone). */
#define STEP_ROWS_FIRST_BYTES 16384
static void step(const ukr *u, int64_t m, int64_t j0, int64_t j1, int64_t k,
                      const PREAL *const *a_rows, const PREAL *Bp,
                      REAL *const *c_rows, int64_t c_off, const REAL *const *aux_rows,
                      epilogue epi)
{
    if (m <= u->mr) {
        if (m > 0)   /* none when every sequence has ended */
            u->step(k, a_rows, Bp + j0 * KPAD(k), c_rows, aux_rows, c_off + j0, m, j1 - j0,
                    epi);
        return;
    }
    if (KPAD(k) * (j1 - j0) * (int64_t)sizeof(PREAL) <= STEP_ROWS_FIRST_BYTES) {
        for (int64_t i = 0; i < m; i += u->mr)
            u->step(k, a_rows + i, Bp + j0 * KPAD(k), c_rows + i, aux_rows ? aux_rows + i : NULL,
                    c_off + j0, min64(u->mr, m - i), j1 - j0, epi);
        return;
    }
    for (int64_t j = j0; j < j1; j += u->nr)
        for (int64_t i = 0; i < m; i += u->mr)
            u->step(k, a_rows + i, Bp + j * KPAD(k), c_rows + i,
                    aux_rows ? aux_rows + i : NULL, c_off + j,
                    min64(u->mr, m - i), min64(u->nr, j1 - j), epi);
}

/* C[M,N] = A[M,K] B[K,N] (+ bias[N] in every row, if given), or C += A B;
 * C row-major with leading dimension ldc. keep: as for pack_b, over the K
 * index (NULL: every k).
 * Blocked for the caches: a kc x nc slab of B is packed (L3, one nr panel of
 * it in L1) and an mc x kc block of A passes over it (L2). The step kernel
 * reads A by rows, one element of up to mr rows per k step: rows with unit
 * stride along K are read where they are, unless they are a multiple of
 * 2 KB apart (x batch-first: T*D elements), many in one L1 set, evicting
 * one another (rows_in_place); then, and for bf16 operands, the block is
 * copied into rows kc apart (a transposed A, unit stride down its columns,
 * through the transpose kernel).
 * The bias joins in the first k block's epilogue: C is written once, by the
 * team, not filled beforehand by one thread. */
/* Rows given one by one rather than by a view: row i of A at a[i] (unit
 * stride along K), row i of C at c[i] + c_col. How the gated cells' input
 * side reaches the rows of the steps it feeds, wherever they are. */
typedef struct {
    const REAL *const *a;
    REAL *const *c;
    int64_t c_col;
} row_lists;

/* B packed beforehand (a pack's W_ih^T, or W_ih or W_hh for a backward's
 * product, fusedrnn_pack): for the k block
 * from pc, the panels of all its columns at p + pc*ld, the one of column j
 * (a multiple of nr) at + j*kc, kc that block's rows; col0 is the first
 * column of the product there. Only the k blocking matters, which is the
 * same for every product of that K, so any column range of it is a run of
 * its panels. */
typedef struct {
    const PREAL *p;
    int64_t ld, col0;
} prepacked;

static void gemm(const ukr *u, int64_t M, int64_t N, int64_t K,
                      view A, view B, const unsigned char *keep,
                      REAL *C, int64_t ldc, int accumulate, const REAL *bias,
                      const slabs *s, const row_lists *lists, const prepacked *pre)
{
    const PREAL *a_rows[FUSEDRNN_MC_MAX];
    const REAL *bias_rows[FUSEDRNN_MC_MAX];
    REAL *c_rows[FUSEDRNN_MC_MAX];
    const int in_place = !lists && A.cs == 1 && rows_in_place(A.rs);
#define C_ROW(i) (lists ? lists->c[i] + lists->c_col : C + (i) * ldc)
    if (K == 0 && !accumulate)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                C_ROW(i)[j] = bias ? bias[j] : 0;
    for (int64_t jc = 0; jc < N; jc += u->nc) {
        int64_t nc = min64(u->nc, N - jc);
        for (int64_t pc = 0; pc < K; pc += u->kc) {
            int64_t kc = min64(u->kc, K - pc), kp = KPAD(kc);
            epilogue epi = accumulate || pc > 0 ? EPI_ACC : bias ? EPI_BIAS : EPI_SET;
            const PREAL *Bp = s->b;
            if (pre) {
                FUSEDRNN_ASSERT((pre->col0 + jc) % u->nr == 0);
                Bp = pre->p + pc * pre->ld + (pre->col0 + jc) * kp;
            } else
                pack_b(u, kc, nc, B.p + pc * B.rs + jc * B.cs, B.rs, B.cs,
                            keep ? keep + pc : NULL, s->b, s->b_cap);
            for (int64_t ic = 0; ic < M; ic += u->mc) {
                int64_t mc = min64(u->mc, M - ic);
                const REAL *a = lists ? NULL : A.p + ic * A.rs + pc * A.cs;
                FUSEDRNN_ASSERT((size_t)(mc * kp) <= s->a_cap);
                for (int64_t i = 0; i < mc; i++) {
                    /* PREAL is REAL wherever rows are read in place */
                    a_rows[i] = in_place ? (const PREAL *)(a + i * A.rs) : s->a + i * kp;
                    c_rows[i] = C_ROW(ic + i) + jc;
                    bias_rows[i] = epi == EPI_BIAS ? bias + jc : NULL;
                }
                if (lists || (A.cs == 1 && !in_place))
                    for (int64_t i = 0; i < mc; i++)
                        to_operand(u, s->a + i * kp,
                                   lists ? lists->a[ic + i] + pc : a + i * A.rs, kc);
                else if (A.cs != 1)   /* A transposed: its columns become rows (whole units) */
                    u->transpose(kc, mc, a, A.cs, s->a, kp);
                step(u, mc, 0, nc, kc, a_rows, Bp, c_rows, 0,
                          epi == EPI_BIAS ? bias_rows : NULL, epi);
            }
        }
    }
#undef C_ROW
}

/* C = A B (+ bias) or C += A B on a team: pieces of whole register tiles
 * along the longer of M and N, each member computing the pieces it claims
 * with its own slabs. */
typedef struct {
    const ukr *u;
    int64_t M, N, K;
    view A, B;
    const unsigned char *keep;
    REAL *C;
    int64_t ldc;
    int accumulate;
    const REAL *bias;
    const slabs *slabs;           /* [threads] */
    int64_t pieces;
    atomic_llong next;            /* the next piece to claim */
    const prepacked *pre;         /* B packed beforehand, or NULL */
    int few;                      /* by the table's few_k (gemm_few_k) */
} gemm_job;

static void gemm_slice(void *arg, int tid, int n)
{
    gemm_job *g = arg;
    const int by_columns = g->N >= g->M;
    const int64_t count = by_columns ? g->N : g->M, unit = by_columns ? g->u->nr : g->u->mr;
    int64_t lo, hi;
    (void)n;
    while (team_take(&g->next, g->pieces, count, unit, &lo, &hi)) {
        /* The piece: columns [lo, hi) of every row, or rows [lo, hi) of
         * every column. A prepacked B is not read where it is (its pointer
         * may be NULL): the piece's columns are its panels from col0 + lo. */
        const int64_t m = by_columns ? g->M : hi - lo, cols = by_columns ? hi - lo : g->N;
        const view A = by_columns ? g->A : (view){g->A.p + lo * g->A.rs, g->A.rs, g->A.cs};
        const view B = by_columns && !g->pre ? (view){g->B.p + lo * g->B.cs, g->B.rs, g->B.cs}
                                             : g->B;
        REAL *C = g->C + (by_columns ? lo : lo * g->ldc);
#if KP == 1
        if (g->few) {   /* B's rows where they are (unit column stride) */
            FUSEDRNN_ASSERT(g->K <= FUSEDRNN_FEW_K && g->B.cs == 1 && !g->bias && !g->pre);
            g->u->few_k(m, cols, g->K, A.p, A.rs, A.cs, B.p, B.rs, g->keep, C, g->ldc,
                        g->accumulate);
            continue;
        }
#endif
        prepacked pre = !g->pre ? (prepacked){0}
                        : by_columns ? (prepacked){g->pre->p, g->pre->ld, g->pre->col0 + lo}
                                     : *g->pre;
        gemm(g->u, m, cols, g->K, A, B, g->keep, C, g->ldc, g->accumulate,
             g->bias && by_columns ? g->bias + lo : g->bias, &g->slabs[tid], NULL,
             g->pre ? &pre : NULL);
    }
}
