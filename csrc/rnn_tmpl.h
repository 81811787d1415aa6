/* The forward and backward drivers, one of each for every cell: the time
 * loop, what is fused, what is deferred, what runs on which thread. The
 * body of one translation unit per storage type (rnn_f32.c, rnn_f64.c, and
 * rnn_bf16_dot.c for rnn_bf16.c), which includes problem.h, then defines
 * REAL, KERNELS (its field of isa_kernels) and DT(name) (the name kernels.h
 * gives that type's kernel types) before including it: every function here
 * is static and keeps its plain name. The products' operands are REAL too
 * unless it defines PREAL, their type, and KP, how many k a kernel's unit
 * holds (rnn_bf16_dot.c: bf16 pairs); the maths, the state and every array
 * but the products' panels, A slabs and staged rows stay REAL. Sequence
 * arrays are addressed by rows: row (t,b) of x, y, dy, dx, the gates and
 * their gradients. */
typedef DT(ukr) ukr;
typedef DT(cell_rows) cell_rows;
#ifndef KP
#define KP 1
#define PREAL REAL
#endif

#include "gemm_tmpl.h"

/* The rows of one step for every thread of the team. */
typedef struct {
    int64_t m;                /* sequences still running */
    const REAL **a[PHASES_MAX];  /* [m] each phase's rows multiplied by W_hh (or W_hh^T):
                                    forward h_{t-1}, then the state rows; backward the
                                    next step's gate gradients, then this step's */
    REAL **c;                 /* [m] the rows the product updates */
    const REAL **aux;         /* [m] the product's epilogue operand (y, a bias, dy) */
    REAL **gates, **state, **h, **carry, **dgates, **dxn;   /* the cell kernel's */
    const REAL **prev;
    cell_rows cell;           /* the same, as the cell kernel takes them */
    REAL **restart;           /* [m] gated backward: where the carry of a step that a
                                 reset cut from the one before goes (its row of
                                 w->restarts), else NULL */
    int after;                /* backward: some row's first phase reads the gradients
                                 of a step after; else all read the zero row, and
                                 that phase has no product (k = 0) */
} step_rows;

typedef struct {
    PREAL *packed;            /* W_hh packed for the step kernel: forward G blocks of
                                 W_hh^T [H, H rounded up to nr], backward a block of
                                 each phase's rows of W_hh [Gp*H, H] */
    size_t packed_cap;
    slabs *slabs;             /* [threads] GEMM panels, one set per thread */
    REAL *zeros;              /* [G*H] the state before the first step when h0 (c0) is
                                 NULL, and what follows a sequence's last step */
    REAL *bias;               /* [G*H] b_ih + b_hh, less b_hn (split), when both are given */
    /* Double-buffered: thread 0 fills the next step's rows while the team
     * still works on the current one. */
    step_rows rows[2];
    /* Forward, rows of 2 KB or more: each thread's copy of the step's h_{t-1}
     * rows, ld_stage apart (spread_ld), and pointers to them; NULL when the
     * rows are read where they are. y's rows can be any multiple of 4 KB
     * apart (batch_first: T*H elements), and h0's are the caller's.
     * Operands of another type (KP > 1) are always staged, both ways: the
     * copy converts them. */
    PREAL *stage;             /* [threads][B, ld_stage] */
    const PREAL **stage_rows; /* [threads][B] */
    int64_t ld_stage;
    /* Gated cells: in the reserve (training forward, backward) */
    REAL *gates;              /* [T,B,G*H] pre-activations, then activated gates */
    REAL *state;              /* [T,B,H] c_t (LSTM), W_hn h_{t-1} + b_hn (GRU) or
                                 r h_{t-1} (GRU, reset first); for inference [B,H]
                                 here: each sequence's c (LSTM) or the step's row */
    /* Gated forward: the rows of every step in step order, step s's at
     * [step_start[s], step_start[s + 1]): their x rows and where their gates
     * go (the reserve, or for inference the chunk's rows in `ring`). */
    const REAL **x_rows;      /* [T*B] */
    REAL **g_rows;            /* [T*B] */
    int64_t *step_start;      /* [T+1] */
    REAL *ring;               /* inference: [chunk rows, G*H] one chunk's gates */
    const REAL *in_bias;      /* [G*H] what the input side adds: b_ih, or `bias`, or NULL */
    /* Backward: */
    REAL *dg;                 /* [T,B,G*H] in y's layout, rows ldg apart: the gates'
                                 gradients (RNN: dz) */
    int64_t ldg;
    REAL *dxn;                /* [T,B,H] split cells: the last gate's input side */
    REAL *g;                  /* [B,G*H] dg at each sequence's first step, plus at
                                 every step a reset starts from h0 (c0) */
    REAL *dh;                 /* [B,H] gated: a step's dh, dg_{t+1} W_hh + dy_t (a
                                 second phase's product, d(r h), replaces it) */
    REAL *carry;              /* [B,H] gated: LSTM dc, GRU z * dh (+ r d(r h)), from
                                 step to step */
    REAL *last;               /* [B,H] gated: dy + dh_n at each sequence's last step */
    REAL *restarts;           /* [B,H] gated, with resets: the carries that reached h0
                                 (c0) at the steps a reset cut, summed */
    /* Which K rows of a weight-gradient GEMM may reach the product (1) and
     * which are padding or pair across sequences (0, packed as zeros). */
    unsigned char *keep_x;    /* [T*B] row (t,b) of x: t < lengths[b] */
    unsigned char *keep_pair; /* [K of GEMM_DW_HH] a dg row that has a previous step */
    unsigned char *keep_h0;   /* [B] sequence b has a first step, which saw h0 */
} work;

static size_t round_up(arena *a, size_t n, size_t q)
{
    return arena_checked_mul(a, (n + q - 1) / q, q);
}

static size_t min_size(int64_t a, size_t b) { return (size_t)a < b ? (size_t)a : b; }

/* The row stride of a workspace array of n-element rows that the step
 * kernel reads up to mr rows of at once, one element of each per k step:
 * n rounded up to whole 64-byte lines, an odd number of them once rows are
 * 2 KB or more. At a stride of a multiple of 4 KB (an LSTM's dg rows, 4H =
 * 2048 floats) every row falls in the same L1 set, more rows than the cache
 * has ways, and they evict one another: the LSTM L backward ran at 65% of
 * the peak at H = 512 against 74% at H = 496. An odd number of lines puts
 * consecutive rows in distinct sets; short rows are left as they are (a
 * stride under 2 KB spreads them over enough sets, and padding would cost
 * them more memory). */
static int64_t spread_ld(int64_t n, size_t size)
{
    const int64_t line = 64 / (int64_t)size;
    int64_t lines = (n + line - 1) / line;
    return lines >= 32 ? (lines | 1) * line : n;
}

/* The k of a phase's recurrent product: forward H, backward the phase's
 * gates' rows of W_hh; and the largest of the pass's phases. */
static int64_t phase_k(const cell_desc *c, int64_t H, int backward, int phase)
{
    return backward ? c->backward[phase].gates * H : H;
}

static int64_t largest_k(const cell_desc *c, int64_t H, int backward)
{
    int64_t k = 0;
    for (int ph = 0; ph < c->phases; ph++)
        k = phase_k(c, H, backward, ph) > k ? phase_k(c, H, backward, ph) : k;
    return k;
}

/* Whether a call streams W_hh's panels: a call of one step reads each of
 * them once, and packing all of W_hh ahead (pack_w_hh) writes it to memory
 * and reads it back, twice its reads; streaming packs the panels of a few
 * columns at a time into the thread's slab, in L2, just before the product
 * reads them (tile_product). (A call given a pack reads the pack's.) */
static int streams(const fusedrnn_problem *p)
{
    return p->T == 1;
}

/* Each thread's slabs hold one block of the largest product of the pass,
 * and when the pass streams W_hh's panels, two of them over its largest
 * k: the bounds on every ISA's blocking keep the size valid whichever ISA
 * runs. */
static void take_slabs(arena *a, work *w, const fusedrnn_problem *p, int backward)
{
    const size_t align = 64 / sizeof(PREAL);
    size_t a_cap = 0, b_cap = 0;
    for (int id = 0; id < GEMM_COUNT; id++) {
        if (!gemm_in_pass((gemm_id)id, backward))
            continue;
        gemm_dims d = dims_of(p, (gemm_id)id);
        size_t kc = (size_t)KPAD(min_size(d.K, FUSEDRNN_KC_MAX));
        size_t mc = min_size(d.M, FUSEDRNN_MC_MAX);
        size_t nc = round_up(a, min_size(d.N, FUSEDRNN_NC_MAX), FUSEDRNN_NR_MAX);
        size_t need_a = arena_checked_mul(a, mc, kc);
        size_t need_b = arena_checked_mul(a, nc, kc);
        a_cap = need_a > a_cap ? need_a : a_cap;
        b_cap = need_b > b_cap ? need_b : b_cap;
    }
    if (streams(p)) {
        const cell_desc *c = &cell_table[p->cell];
        size_t need_b = arena_checked_mul(a, (size_t)KPAD(largest_k(c, p->H, backward)),
                                          2 * FUSEDRNN_NR_MAX);
        b_cap = need_b > b_cap ? need_b : b_cap;
    }
    a_cap = round_up(a, a_cap, align);
    b_cap = round_up(a, b_cap, align);
    int threads = team_size(p);
    w->slabs = arena_take(a, (size_t)threads, sizeof(slabs));
    PREAL *pa = arena_take(a, arena_checked_mul(a, a_cap, (size_t)threads), sizeof(PREAL));
    PREAL *pb = arena_take(a, arena_checked_mul(a, b_cap, (size_t)threads), sizeof(PREAL));
    for (int i = 0; w->slabs && i < threads; i++)
        w->slabs[i] = (slabs){pa + i * a_cap, pb + i * b_cap, a_cap, b_cap};
}

/* The reserve's layout: what a gated cell's training forward keeps for its
 * backward, laid over the caller's reserve. */
static void take_reserve(arena *a, work *w, const fusedrnn_problem *p)
{
    const cell_desc *c = &cell_table[p->cell];
    /* One block, gates then state, without padding between them: its size is
     * exactly T*B*reserve_rows*H elements, which a caller can compute from
     * the shapes and the cell's description alone (the torch ops' fake
     * tensors do, for symbolic sizes). */
    size_t TB = arena_checked_mul(a, (size_t)p->T, (size_t)p->B);
    size_t per_row = (size_t)c->info.reserve_rows * (size_t)p->H;
    w->gates = arena_take(a, arena_checked_mul(a, TB, per_row), sizeof(REAL));
    w->state = has_state(c) && w->gates ? w->gates + TB * (size_t)(c->info.gates * p->H)
                                        : NULL;
}

/* The workspace of a pass, measured (base NULL) or laid over a buffer. */
static work carve(arena *a, const fusedrnn_problem *p, int backward)
{
    const cell_desc *c = &cell_table[p->cell];
    size_t T = (size_t)p->T, B = (size_t)p->B, H = (size_t)p->H, GH = (size_t)c->info.gates * H;
    size_t TB = arena_checked_mul(a, T, B);
    work w = {0};
    /* G blocks of gate_block; a backward phase's K = gates*H rounds up to no
     * more. None when the call streams them (NULL panels). */
    if (!streams(p)) {
        w.packed_cap = arena_checked_mul(a, arena_checked_mul(a, (size_t)c->info.gates,
                                                              (size_t)KPAD(p->H)),
                                         round_up(a, H, FUSEDRNN_NR_MAX));
        w.packed = arena_take(a, w.packed_cap, sizeof(PREAL));
    }
    w.zeros = arena_take(a, GH, sizeof(REAL));
    w.bias = backward ? NULL : arena_take(a, GH, sizeof(REAL));
    for (int i = 0; i < 2; i++) {
        step_rows *r = &w.rows[i];
        for (int ph = 0; ph < c->phases; ph++)
            r->a[ph] = arena_take(a, B, sizeof(REAL *));
        r->c = arena_take(a, B, sizeof(REAL *));
        r->aux = arena_take(a, B, sizeof(REAL *));
        if (c->fused)
            continue;
        r->gates = arena_take(a, B, sizeof(REAL *));
        r->state = arena_take(a, B, sizeof(REAL *));
        r->prev = arena_take(a, B, sizeof(REAL *));
        r->h = arena_take(a, B, sizeof(REAL *));
        if (backward) {
            r->carry = arena_take(a, B, sizeof(REAL *));
            r->dgates = arena_take(a, B, sizeof(REAL *));
            r->dxn = arena_take(a, B, sizeof(REAL *));
            r->restart = arena_take(a, B, sizeof(REAL *));
        }
        r->cell = (cell_rows){(int64_t)H, r->gates, r->state, r->prev, r->h,
                                   r->carry, r->dgates, r->dxn};
    }
    w.ld_stage = spread_ld(KPAD(largest_k(c, (int64_t)H, backward)), sizeof(PREAL));
    if (KP > 1 || (!backward && (size_t)w.ld_stage != H)) {
        size_t team = (size_t)team_size(p);
        w.stage = arena_take(a, arena_checked_mul(a, arena_checked_mul(a, team, B),
                                                  (size_t)w.ld_stage), sizeof(PREAL));
        w.stage_rows = arena_take(a, arena_checked_mul(a, team, B), sizeof(PREAL *));
    }
    if (!backward && !c->fused) {
        w.x_rows = arena_take(a, TB, sizeof(REAL *));
        w.g_rows = arena_take(a, TB, sizeof(REAL *));
        w.step_start = arena_take(a, T + 1, sizeof(int64_t));
        if (!p->training) {
            size_t chunk = arena_checked_mul(a, (size_t)chunk_steps(p), B);
            w.ring = arena_take(a, arena_checked_mul(a, chunk, GH), sizeof(REAL));
            w.state = has_state(c) ? arena_take(a, arena_checked_mul(a, B, H), sizeof(REAL))
                                   : NULL;
        }
    }
    if (backward) {
        w.ldg = spread_ld((int64_t)GH, sizeof(REAL));
        w.dg = arena_take(a, arena_checked_mul(a, TB, (size_t)w.ldg), sizeof(REAL));
        w.dxn = c->split ? arena_take(a, arena_checked_mul(a, TB, H), sizeof(REAL)) : NULL;
        w.g = arena_take(a, arena_checked_mul(a, B, GH), sizeof(REAL));
        if (!c->fused) {
            w.dh = arena_take(a, arena_checked_mul(a, B, H), sizeof(REAL));
            w.carry = arena_take(a, arena_checked_mul(a, B, H), sizeof(REAL));
            w.last = arena_take(a, arena_checked_mul(a, B, H), sizeof(REAL));
            w.restarts = arena_take(a, arena_checked_mul(a, B, H), sizeof(REAL));
        }
        w.keep_x = arena_take(a, TB, 1);
        w.keep_pair = arena_take(a, (size_t)dims_of(p, GEMM_DW_HH).K, 1);
        w.keep_h0 = arena_take(a, B, 1);
    }
    take_slabs(a, &w, p, backward);
    return w;
}

/* Where a running sequence is at step s: its row, the rows of its steps
 * before and after in its piece (-1: none; a reset cuts a sequence into
 * pieces), whether a reset cut it from the step before (restart) and
 * whether it is the sequence's last step (end), and its state before the
 * step. */
typedef struct {
    int64_t s, b, row, before, after;
    int restart, end;
    const REAL *h_prev;
} seq_at;

/* Everything one call works on, and what its pass does, chosen once (bind):
 * how a step's row of each sequence is laid out, and what a tile of a phase
 * of a step computes. */
typedef struct run run;
struct run {
    const fusedrnn_problem *p;
    const cell_desc *cell;
    const ukr *u;
    work *w;
    int backward;
    void (*fill_row)(const run *r, step_rows *rows, int64_t m, const seq_at *at);
    void (*tile)(const run *r, int tid, const step_rows *rows, const PREAL *const *a, int64_t j0,
                 int64_t j1, int phase);
    epilogue epi;   /* the RNN's step epilogue */
    int chunks;     /* a gated forward: the input side is computed a chunk of
                       steps at a time, inside the time loop */
    const REAL *x, *h0, *c0, *w_ih, *w_hh, *b_ih, *b_hh, *dy, *dh_n, *dc_n;
    const int64_t *lengths;
    const uint8_t *resets;
    REAL *y, *h_n, *c_n, *dx, *dh0, *dc0, *dw_ih, *dw_hh, *db_ih, *db_hh;
    const PREAL *panels;         /* W_hh packed for the step kernel: the workspace's, or a pack's;
                                    NULL when the call streams them (streams) */
    const struct pack_parts *pack;   /* the call's pack, NULL when it packs per call */
};

/* A pack (fusedrnn_pack), laid out from its own start, as the reserve is:
 * the header; W_hh's panels as pack_w_hh lays out every column of a
 * forward's; W_ih^T's, a block of D x Hp per gate (Hp: H rounded up to
 * whole panels of nr), in it for each k block of the input product from
 * pc (kc rows) the panels of the gate's H columns at pc*Hp (prepacked);
 * the bias the input products add (input_bias's, when has_bias); b_hh as
 * given, zeros for none (the split gate's kept-apart product adds b_hn).
 * Then the backward's: W_hh's panels as pack_w_hh lays out every column of
 * a backward's (each phase's rows, the same size as the forward's); W_ih's
 * rows for dx (prepacked, Dp: D rounded up to whole panels): the Gx*H rows
 * of GEMM_DX, [Gx*H, Dp], then a split cell's last H rows of GEMM_DX_N,
 * each k-blocked from its own first row; W_hh's first Gh*H rows for
 * GEMM_DH0, [Gh*H, Hp]. */
typedef struct pack_parts {
    void *header;              /* a pack_header, copied in and out with memcpy: a pack
                                  need only be aligned to its dtype */
    PREAL *w_hh, *w_ih;
    REAL *bias, *b_hh;
    PREAL *back_w_hh, *dx, *dh0;
    size_t w_hh_cap, w_ih_cap, dx_cap, dh0_cap;
    int64_t ld_ih, ld_dx;
    int has_bias;              /* read from the header */
} pack_parts;

/* One column_sums call, as its threads share it. */
typedef struct {
    REAL *dst;
    const REAL *src;
    int64_t rows, ld, n;
    int64_t pieces;
    atomic_llong next;
} sums_job;

/* The pieces of a sums_job this member claims, whole cache lines of columns
 * each: every column is summed in row order by one thread, whatever the
 * thread count. */
static void sums_slice(void *arg, int tid, int n)
{
    sums_job *s = arg;
    int64_t lo, hi;
    (void)tid, (void)n;
    while (team_take(&s->next, s->pieces, s->n, 64 / (int64_t)sizeof(REAL), &lo, &hi)) {
        zero(s->dst + lo, hi - lo);
        for (int64_t i = 0; i < s->rows; i++)
            for (int64_t j = lo; j < hi; j++)
                s->dst[j] += s->src[i * s->ld + j];
    }
}

/* The elements of one gate's block of the packed W_hh^T: H rows (whole
 * units) of H columns rounded up to whole panels. */
static int64_t gate_block(const ukr *u, int64_t H)
{
    return KPAD(H) * ((H + u->nr - 1) / u->nr * u->nr);
}

/* A pack's layout for the table `u`, measured (base NULL) or laid over one. */
static pack_parts carve_pack(arena *a, const fusedrnn_problem *p, const ukr *u)
{
    const cell_desc *c = &cell_table[p->cell];
    const size_t G = (size_t)c->info.gates, D = (size_t)p->D, H = (size_t)p->H;
    const size_t GH = arena_checked_mul(a, G, H), GxH = GH - (size_t)c->split * H;
    pack_parts pk = {0};
    pk.ld_ih = (int64_t)round_up(a, H, (size_t)u->nr);
    /* G blocks of gate_block; W_ih^T a block of KPAD(D) rows per gate */
    pk.w_hh_cap = arena_checked_mul(a, arena_checked_mul(a, G, (size_t)KPAD(p->H)),
                                    (size_t)pk.ld_ih);
    pk.w_ih_cap = arena_checked_mul(a, arena_checked_mul(a, G, (size_t)KPAD(p->D)),
                                    (size_t)pk.ld_ih);
    pk.header = arena_take(a, 1, sizeof(pack_header));
    pk.w_hh = arena_take(a, pk.w_hh_cap, sizeof(PREAL));
    pk.w_ih = arena_take(a, pk.w_ih_cap, sizeof(PREAL));
    pk.bias = arena_take(a, GH, sizeof(REAL));
    pk.b_hh = arena_take(a, GH, sizeof(REAL));
    pk.ld_dx = (int64_t)round_up(a, D, (size_t)u->nr);
    /* GEMM_DX's K = Gx*H rows, then GEMM_DX_N's H, each in whole units */
    pk.dx_cap = arena_checked_mul(a, (size_t)(KPAD((int64_t)GxH) + KPAD((int64_t)(GH - GxH))),
                                  (size_t)pk.ld_dx);
    pk.dh0_cap = arena_checked_mul(a, (size_t)KPAD(dims_of(p, GEMM_DH0).K), (size_t)pk.ld_ih);
    pk.back_w_hh = arena_take(a, pk.w_hh_cap, sizeof(PREAL));
    pk.dx = arena_take(a, pk.dx_cap, sizeof(PREAL));
    pk.dh0 = arena_take(a, pk.dh0_cap, sizeof(PREAL));
    return pk;
}

/* dst[j] = sum over the `rows` rows of src (leading dimension ld) of src[i][j],
 * j < n: the bias gradients, on the team (on one thread, an LSTM L's took
 * 2-3% of a 2-thread backward). */
static void column_sums(const run *r, REAL *dst, const REAL *src, int64_t rows,
                             int64_t ld, int64_t n)
{
    int threads = threads_for(r->p, (double)rows * n, 1 << 20);
    int64_t line = 64 / (int64_t)sizeof(REAL);
    sums_job s = {dst, src, rows, ld, n, pieces_for((n + line - 1) / line, threads), 0};
    team_run(threads, sums_slice, &s);
}

/* The panels of product `id`'s B in the call's pack, or {NULL} when it packs
 * them itself: the RNN's input product reads W_ih^T, the backward's dx and
 * dh0 products W_ih and W_hh. */
static prepacked prepacked_of(const run *r, gemm_id id)
{
    const pack_parts *pk = r->pack;
    const int64_t GxH = (r->cell->info.gates - r->cell->split) * r->p->H;
    if (!pk)
        return (prepacked){0};
    switch (id) {
    case GEMM_INPUT: return (prepacked){pk->w_ih, pk->ld_ih, 0};
    case GEMM_DX:    return (prepacked){pk->dx, pk->ld_dx, 0};
    case GEMM_DX_N:  return (prepacked){pk->dx + KPAD(GxH) * pk->ld_dx, pk->ld_dx, 0};
    case GEMM_DH0:   return (prepacked){pk->dh0, pk->ld_ih, 0};
    default:         return (prepacked){0};
    }
}

/* Whether product `id` of K rows runs on the table's few_k: the weight
 * gradients (dg^T x, dg^T h) at batch 1 to 4, whose B no call packs
 * beforehand (so that a call with a pack and one without compute alike).
 * The bf16 operands' products keep their pairs of k. */
static int gemm_few_k(gemm_id id, int64_t K)
{
    const int weight_gradient = id == GEMM_DW_IH || id == GEMM_DW_IH_N || id == GEMM_DW_HH0 ||
                                id == GEMM_DW_HH || id == GEMM_DW_HH_S;
    return KP == 1 && weight_gradient && K >= 1 && K <= FUSEDRNN_FEW_K;
}

/* Product `id` of the call, C = A B (+ bias) or C += A B, over the team when
 * it is worth splitting; its sizes come from the table the slabs were sized by. */
static void gemm_team(const run *r, gemm_id id, view A, view B,
                           const unsigned char *keep, REAL *C, int64_t ldc, int accumulate,
                           const REAL *bias)
{
    gemm_dims d = dims_of(r->p, id);
    /* a share of 2^20 multiply-adds (about 20 us) outweighs waking a worker that sleeps */
    int threads = threads_for(r->p, (double)d.M * d.N * d.K, 1 << 20);
    int64_t units = d.N >= d.M ? (d.N + r->u->nr - 1) / r->u->nr : (d.M + r->u->mr - 1) / r->u->mr;
    prepacked pre = prepacked_of(r, id);
    gemm_job g = {r->u, d.M, d.N, d.K, A, B, keep, C, ldc, accumulate, bias, r->w->slabs,
                       pieces_for(units, threads), 0, pre.p ? &pre : NULL,
                       gemm_few_k(id, d.K)};
    team_run(threads, gemm_slice, &g);
}

/* The row of a state given per sequence ([B,H], NULL meaning zeros). */
static const REAL *initial_row(const run *r, const REAL *v, int64_t b)
{
    return v ? v + b * r->p->H : r->w->zeros;
}

/* Whether a reset cuts sequence b, of length len, between its steps s - 1
 * and s: the flag at the later of their times, time s forwards, len - s in
 * reverse (step s is time len-1-s, and the step before it len-s). */
static int cut_before(const run *r, int64_t b, int64_t len, int64_t s)
{
    const fusedrnn_problem *p = r->p;
    return r->resets && s > 0 && s < len &&
           r->resets[row_of(layout_of(p), p->reverse ? len - s : s, b)];
}

/* The rows of step s into buffer `buf`: the sequences still running, each at
 * its own time (reverse with lengths), laid out by the pass's fill_row.
 * Forward: the product reads h_{t-1} (the previous step's row of y, or h0
 * at a piece's first step) and updates the step's y row (RNN) or gates
 * row; the cell kernel finds the state of the step before in the same
 * buffers. Backward: the product reads the gradients of the step that
 * follows in the piece (nothing after a piece's last step: the zero row). */
static void fill_rows(const run *r, int64_t s, int buf)
{
    const fusedrnn_problem *p = r->p;
    const seq_layout L = layout_of(p);
    const int64_t T = p->T, B = p->B, H = p->H;
    step_rows *rows = &r->w->rows[buf];
    int64_t m = 0;
    rows->after = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t len = seq_len(r->lengths, b, T);
        if (s >= len)
            continue;
        seq_at at = {s, b, row_of(L, time_at(p, len, s), b), -1, -1,
                     cut_before(r, b, len, s), s + 1 == len, NULL};
        if (s > 0 && !at.restart)
            at.before = row_of(L, time_at(p, len, s - 1), b);
        if (r->backward && s + 1 < len && !cut_before(r, b, len, s + 1)) {
            at.after = row_of(L, time_at(p, len, s + 1), b);
            rows->after = 1;
        }
        at.h_prev = at.before >= 0 ? r->y + at.before * H : initial_row(r, r->h0, b);
        r->fill_row(r, rows, m++, &at);
    }
    rows->m = m;
}

/* The RNN: the product is the whole step, in place on y, or backward on dz. */
static void rnn_forward_row(const run *r, step_rows *rows, int64_t m, const seq_at *at)
{
    rows->a[0][m] = at->h_prev;
    rows->c[m] = r->y + at->row * r->p->H;
}

static void rnn_backward_row(const run *r, step_rows *rows, int64_t m, const seq_at *at)
{
    const work *w = r->w;
    rows->a[0][m] = at->after >= 0 ? w->dg + at->after * w->ldg : w->zeros;
    rows->c[m] = w->dg + at->row * w->ldg;
    rows->aux[m] = r->y + at->row * r->p->H;
}

/* A gated cell's state rows, and what its kernels find as the state before
 * the step: LSTM c_{t-1}, else h_{t-1}. Per step in the reserve; for
 * inference each sequence's own c, updated in place, or the step's own row
 * (GRU's hn, r ⊙ h). */
static void gated_state_rows(const run *r, step_rows *rows, int64_t m, const seq_at *at,
                             int in_reserve)
{
    const cell_desc *c = r->cell;
    const int64_t H = r->p->H;
    const work *w = r->w;
    if (!has_state(c))
        return;
    rows->state[m] = w->state + (in_reserve ? at->row : c->info.has_c ? at->b : m) * H;
    if (c->info.has_c)
        rows->prev[m] = at->before < 0 ? initial_row(r, r->c0, at->b)
                                       : w->state + (in_reserve ? at->before : at->b) * H;
    else
        rows->prev[m] = at->h_prev;
}

/* Gated forward: the products accumulate into the step's gates row (the
 * input side is there already); the kernels write y's row. */
static void gated_forward_row(const run *r, step_rows *rows, int64_t m, const seq_at *at)
{
    const cell_desc *c = r->cell;
    const int64_t H = r->p->H;
    const work *w = r->w;
    gated_state_rows(r, rows, m, at, r->p->training);
    rows->a[0][m] = at->h_prev;
    if (c->phases > 1)
        rows->a[1][m] = rows->state[m];
    rows->c[m] = rows->gates[m] = w->g_rows[w->step_start[at->s] + m];
    rows->h[m] = r->y + at->row * H;
    if (c->split)   /* the kept-apart product's bias, b_hn */
        rows->aux[m] = r->b_hh ? r->b_hh + (c->info.gates - 1) * H : w->zeros;
}

/* Gated backward: dh = (the next step's gate gradients) W_hh + dy, then the
 * kernels' derivatives into the step's dg row; a second phase's product
 * reads this step's gradients of its gates. */
static void gated_backward_row(const run *r, step_rows *rows, int64_t m, const seq_at *at)
{
    const cell_desc *c = r->cell;
    const int64_t H = r->p->H;
    const work *w = r->w;
    gated_state_rows(r, rows, m, at, 1);
    rows->a[0][m] = at->after >= 0 ? w->dg + at->after * w->ldg : w->zeros;
    if (c->phases > 1)
        rows->a[1][m] = w->dg + at->row * w->ldg + c->backward[1].gate0 * H;
    rows->c[m] = rows->h[m] = w->dh + m * H;
    rows->aux[m] = at->end && r->dh_n ? w->last + at->b * H
                 : r->dy              ? r->dy + at->row * H
                                      : w->zeros;
    rows->gates[m] = w->gates + at->row * c->info.gates * H;
    rows->carry[m] = w->carry + at->b * H;
    rows->dgates[m] = w->dg + at->row * w->ldg;
    if (c->split)
        rows->dxn[m] = w->dxn + at->row * H;
    rows->restart[m] = at->restart ? w->restarts + at->b * H : NULL;
}

/* The rows of every step of a gated forward, in the order fill_rows takes
 * them, and where each one's gates go. */
static void list_rows(const run *r)
{
    const fusedrnn_problem *p = r->p;
    const seq_layout L = layout_of(p);
    const int64_t T = p->T, B = p->B, D = p->D, GH = r->cell->info.gates * p->H;
    const int64_t chunk = chunk_steps(p);
    work *w = r->w;
    int64_t k = 0;
    for (int64_t s = 0; s < T; s++) {
        w->step_start[s] = k;
        const int64_t first = w->step_start[s - s % chunk];   /* the chunk's first row */
        for (int64_t b = 0; b < B; b++) {
            int64_t len = seq_len(r->lengths, b, T);
            if (s >= len)
                continue;
            int64_t row = row_of(L, time_at(p, len, s), b);
            w->x_rows[k] = r->x + row * D;
            w->g_rows[k] = p->training ? w->gates + row * GH : w->ring + (k - first) * GH;
            k++;
        }
    }
    w->step_start[T] = k;
}

/* The input side, gates = x W_ih^T + b, of the chunk of steps from step s,
 * on one tile's columns of every gate: only that tile reads them, so no
 * other member waits for them, and they are still in cache when its steps
 * come. */
static void input_chunk(const run *r, int tid, int64_t j0, int64_t j1, int64_t s)
{
    const fusedrnn_problem *p = r->p;
    const int64_t H = p->H, D = p->D, end = min64(s + chunk_steps(p), p->T);
    const work *w = r->w;
    const int64_t first = w->step_start[s], M = w->step_start[end] - first;
    FUSEDRNN_ASSERT(M <= dims_of(p, GEMM_STEPS).M);
    for (int64_t q = 0; q < r->cell->info.gates; q++) {
        row_lists rows = {w->x_rows + first, w->g_rows + first, q * H + j0};
        /* given a pack, its W_ih^T: gate q's block, from column j0 */
        prepacked ih = {r->pack ? r->pack->w_ih + q * KPAD(D) * r->pack->ld_ih : NULL,
                        r->pack ? r->pack->ld_ih : 0, j0};
        gemm(r->u, M, j1 - j0, D, (view){NULL, 0, 0},
                  r->pack ? (view){NULL, 0, 0} : (view){r->w_ih + (q * H + j0) * D, 1, D},
                  NULL, NULL, 0, 0, w->in_bias ? w->in_bias + q * H + j0 : NULL,
                  &w->slabs[tid], &rows, r->pack ? &ih : NULL);
    }
}

/* What a tile of each pass computes: one phase of a step on the columns
 * [j0, j1), every gate of them. */

/* The B of the products with W_hh's block of rows from gate gate0 on:
 * forward W_hh^T (its columns are W_hh's rows), backward W_hh's rows. */
static view w_hh_b(const run *r, int64_t gate0)
{
    const int64_t H = r->p->H;
    const REAL *p = r->w_hh + gate0 * H * H;
    return r->backward ? (view){p, H, 1} : (view){p, 1, H};
}

/* A tile's product with a block of W_hh's panels, at `at` in the call's
 * panels; or, when the call streams them, packed from `src` (the block's B:
 * element (k, j) at src.p[k*src.rs + j*src.cs]) a few columns at a time
 * into the thread's slab just before the product reads them. The step
 * kernel sums each element in the same order either way. */
static void tile_product(const run *r, int tid, int64_t m, int64_t j0, int64_t j1, int64_t k,
                         const PREAL *const *a, int64_t at, view src, REAL *const *c,
                         int64_t c_off, const REAL *const *aux, epilogue epi)
{
    const ukr *u = r->u;
    const slabs *s = &r->w->slabs[tid];
    if (r->panels) {
        step(u, m, j0, j1, k, a, r->panels + at, c, c_off, aux, epi);
        return;
    }
    if (k == 0 || m == 0) {   /* no panel is read */
        step(u, m, j0, j1, k, a, s->b, c, c_off, aux, epi);
        return;
    }
    /* take_slabs makes room for two panels of the largest k */
    const int64_t cols = (int64_t)(s->b_cap / (size_t)KPAD(k)) / u->nr * u->nr;
    FUSEDRNN_ASSERT(cols >= u->nr);
    for (int64_t j = j0; j < j1; j += cols) {
        int64_t n = min64(cols, j1 - j);
        pack_b(u, k, n, src.p + j * src.cs, src.rs, src.cs, NULL, s->b, s->b_cap);
        step(u, m, 0, n, k, a, s->b, c, c_off + j, aux, epi);
    }
}

/* The RNN: the product's epilogue is the cell. */
static void rnn_tile(const run *r, int tid, const step_rows *rows, const PREAL *const *a,
                     int64_t j0, int64_t j1, int phase)
{
    const int64_t H = r->p->H;
    (void)phase;
    tile_product(r, tid, rows->m, j0, j1, r->backward && !rows->after ? 0 : H, a, 0,
                 w_hh_b(r, 0), rows->c, 0, r->backward ? rows->aux : NULL, r->epi);
}

/* Gated forward: each gate's product accumulates into the gates row (the
 * split gate's goes to its own row, with b_hn), then the phase's kernel. */
static void gated_forward_tile(const run *r, int tid, const step_rows *rows,
                               const PREAL *const *a, int64_t j0, int64_t j1, int phase)
{
    const cell_desc *c = r->cell;
    const phase_desc *ph = &c->forward[phase];
    const ukr *u = r->u;
    const int64_t H = r->p->H, block = gate_block(u, H), end = ph->gate0 + ph->gates;
    const int64_t joined = c->split && end == c->info.gates ? end - 1 : end;
    int64_t q = ph->gate0;
    /* One thread owning every column, with whole panels per gate: the
     * gates' blocks are one run of panels and the gates one run of
     * columns, so a single call covers them (batch 1: fewer, longer
     * calls; the sums are the same). */
    if (joined > q && j0 == 0 && j1 == H && H % u->nr == 0) {
        tile_product(r, tid, rows->m, 0, (joined - q) * H, H, a, q * block, w_hh_b(r, q),
                     rows->c, q * H, NULL, EPI_ACC);
        q = joined;
    }
    for (; q < end; q++) {
        if (q >= joined)
            tile_product(r, tid, rows->m, j0, j1, H, a, q * block, w_hh_b(r, q), rows->state,
                         0, rows->aux, EPI_BIAS);
        else
            tile_product(r, tid, rows->m, j0, j1, H, a, q * block, w_hh_b(r, q), rows->c,
                         q * H, NULL, EPI_ACC);
    }
    if (rows->m > 0)
        u->cell[ph->kernel](rows->m, j0, j1 - j0, &rows->cell);
}

/* Gated backward: the phase's product with its gates' rows of W_hh, dh =
 * dg_{t+1} W_hh + dy (a second phase: this step's gradients, alone), then
 * the kernel's derivatives. After the step's last phase, the carry of a
 * step that a reset cut from the one before is what reaches h0 (c0): it
 * joins the restarts' sum, and the step before, the last of the previous
 * piece, starts from no carry. */
static void gated_backward_tile(const run *r, int tid, const step_rows *rows,
                                const PREAL *const *a, int64_t j0, int64_t j1, int phase)
{
    const phase_desc *ph = &r->cell->backward[phase];
    const ukr *u = r->u;
    const int64_t H = r->p->H;
    tile_product(r, tid, rows->m, j0, j1, phase == 0 && !rows->after ? 0 : ph->gates * H, a,
                 ph->gate0 * gate_block(u, H), w_hh_b(r, ph->gate0),
                 rows->c, 0, phase == 0 ? rows->aux : NULL, phase == 0 ? EPI_BIAS : EPI_SET);
    if (rows->m > 0)
        u->cell[ph->kernel](rows->m, j0, j1 - j0, &rows->cell);
    if (phase < r->cell->phases - 1)
        return;
    for (int64_t i = 0; i < rows->m; i++) {
        if (!rows->restart[i])
            continue;
        REAL *carry = rows->carry[i], *sum = rows->restart[i];
        for (int64_t j = j0; j < j1; j++)
            sum[j] += carry[j];
        zero(carry + j0, j1 - j0);
    }
}

/* The rows the step's product reads: the step's own, or when the pass
 * stages them, this thread's copy of them: m*K elements copied against the
 * thread's m*K*G*H/n multiply-adds, n/(G*H) of its work. */
static const PREAL *const *a_rows(const run *r, int tid, const step_rows *rows, int phase)
{
    const work *w = r->w;
    if (!w->stage)   /* the float backward's, and short rows: PREAL is REAL there */
        return (const PREAL *const *)rows->a[phase];
    const int64_t B = r->p->B, ld = w->ld_stage;
    const int64_t K = phase_k(r->cell, r->p->H, r->backward, phase);
    PREAL *stage = w->stage + tid * B * ld;
    const PREAL **a = w->stage_rows + tid * B;
    for (int64_t i = 0; i < rows->m; i++) {
        to_operand(r->u, stage + i * ld, rows->a[phase][i], K);
        a[i] = stage + i * ld;
    }
    return a;
}

/* This thread's panels of the packed W_hh, those of the columns [j0, j1) it
 * computes: each thread packs what it reads, all at once, into its own
 * cache. Forward: W_hh^T in one block per gate, so that a thread's columns
 * of every gate are a panel range of each block; backward: each phase's
 * rows of W_hh [Gp*H, H] in a block of their own, where its gates' blocks
 * would be forward. */
static void pack_w_hh(const run *r, int64_t j0, int64_t j1)
{
    const cell_desc *c = r->cell;
    const int64_t H = r->p->H, n = j1 - j0, block = gate_block(r->u, H);
    const work *w = r->w;
    if (r->backward) {
        for (int phase = 0; phase < c->phases; phase++) {
            const phase_desc *ph = &c->backward[phase];
            int64_t K = ph->gates * H, at = ph->gate0 * block + j0 * KPAD(K);
            view B = w_hh_b(r, ph->gate0);
            pack_b(r->u, K, n, B.p + j0 * B.cs, B.rs, B.cs, NULL, w->packed + at,
                   w->packed_cap - (size_t)at);
        }
        return;
    }
    for (int64_t q = 0; q < c->info.gates; q++) {
        int64_t at = q * block + j0 * KPAD(H);
        view B = w_hh_b(r, q);
        pack_b(r->u, H, n, B.p + j0 * B.cs, B.rs, B.cs, NULL, w->packed + at,
               w->packed_cap - (size_t)at);
    }
}

/* The recurrence's pieces: tiles of whole panels of the hidden columns,
 * every gate of them, each claimed for one phase of one step at a time. */
typedef struct {
    const run *r;
    int64_t tiles;
    /* the stage (step times phases, plus phase) each tile runs next, a cache
     * line each: a member claims its own tiles without taking the line from
     * the others */
    struct { _Alignas(64) atomic_uint next; } step[TILES_MAX];
    team_counter done;             /* tiles finished, over all stages */
} steps_job;

/* One tile of a phase of step i: at the first step it packs the tile's
 * panels of W_hh, unless the call has a pack (mostly on the member that
 * keeps it: each starts with its own tiles), at a chunk's first step the
 * input side of the chunk for its columns; then the phase. Tile 0 of the
 * step's last phase also lays out the next step's rows: no other tile of
 * the next step starts before this one is done. */
static void run_tile(const run *r, int tid, int64_t i, int phase, int64_t k, int64_t tiles,
                     const PREAL *const *a)
{
    const int64_t T = r->p->T;
    int64_t j0, j1;
    team_share(r->p->H, r->u->nr, (int)k, (int)tiles, &j0, &j1);
    if (i == 0 && phase == 0 && !r->pack && !streams(r->p))
        pack_w_hh(r, j0, j1);
    if (r->chunks && phase == 0 && i % chunk_steps(r->p) == 0)
        input_chunk(r, tid, j0, j1, i);
    r->tile(r, tid, &r->w->rows[i & 1], a, j0, j1, phase);
    if (k == 0 && phase == r->cell->phases - 1 && i + 1 < T)
        fill_rows(r, r->backward ? T - 2 - i : i + 1, (int)((i + 1) & 1));
}

/* The time loop of one member, over the stages: each phase of each step. A
 * stage starts once every tile of the one before is done (h_t, or dg_t, or
 * what a first phase made, is complete); the member then claims its tiles,
 * its own first, then the others' from the far end of each range, so that
 * a member that is not running holds back no tile it has not started, and
 * a running one mostly keeps the same columns, whose panels of W_hh stay in
 * its cache. */
static void time_loop(void *arg, int tid, int n)
{
    steps_job *job = arg;
    const run *r = job->r;
    const int64_t phases = r->cell->phases, stages = r->p->T * phases, tiles = job->tiles;
    int64_t home0, home1;
    team_share(tiles, 1, tid, n, &home0, &home1);
    const int64_t own = home1 - home0;
    for (int64_t u = 0; u < stages; u++) {
        counter_await(&job->done, (unsigned)(u * tiles));
        /* a member that joins late starts at the first stage not yet done */
        u += (unsigned)(atomic_load(&job->done.value) - (unsigned)(u * tiles)) / (unsigned)tiles;
        if (u >= stages)
            break;
        const int64_t i = u / phases;
        const int phase = (int)(u % phases);
        const PREAL *const *a = NULL;
        unsigned ran = 0;
        for (int64_t q = 0; q < tiles; q++) {
            int64_t k = q < own ? home0 + q : tiles - 1 - (q - own);
            if (q >= own && k < home1)
                k -= own;   /* past this member's own range */
            unsigned at = (unsigned)u;
            if (!atomic_compare_exchange_strong(&job->step[k].next, &at, at + 1))
                continue;
            if (!a)   /* this member's rows of the stage, once */
                a = a_rows(r, tid, &r->w->rows[i & 1], phase);
            run_tile(r, tid, i, phase, k, tiles, a);
            ran++;
        }
        if (ran)   /* once a stage: the count is the one line all members share */
            counter_add(&job->done, ran);
    }
}

static void recurrence(const run *r)
{
    const fusedrnn_problem *p = r->p;
    if (p->T == 0)
        return;
    int64_t panels = (p->H + r->u->nr - 1) / r->u->nr;
    /* a gated forward's steps hold its input side too */
    int64_t k = r->backward || r->cell->fused ? p->H : p->H + p->D;
    int n = threads_for(p, (double)p->B * r->cell->info.gates * p->H * k, 1 << 15);
    n = n < panels ? n : (int)panels;
    /* Fields set one by one: an initializer would clear all TILES_MAX lines
     * of `step` (16 KB) on every call, for the few tiles a call has. */
    steps_job job;
    job.r = r;
    job.tiles = pieces_for(panels, n);
    for (int64_t q = 0; q < job.tiles; q++)
        atomic_init(&job.step[q].next, 0);
    atomic_init(&job.done.value, 0);
    atomic_init(&job.done.sleepers, 0);
    fill_rows(r, r->backward ? p->T - 1 : 0, 0);
    team_run(n, time_loop, &job);
}

/* The bias the input GEMM adds: b_ih + b_hh, except b_hn of a split cell,
 * which joins its own product. NULL when there is none. */
static const REAL *input_bias(const run *r)
{
    if (r->pack)   /* computed when it was packed, as here */
        return r->pack->has_bias ? r->pack->bias : NULL;
    const int64_t H = r->p->H, GH = r->cell->info.gates * H;
    const int64_t summed = r->cell->split ? GH - H : GH;
    if (!r->b_hh || summed == 0)
        return r->b_ih;
    REAL *bias = r->w->bias;
    for (int64_t j = 0; j < GH; j++)
        bias[j] = (r->b_ih ? r->b_ih[j] : 0) + (j < summed ? r->b_hh[j] : 0);
    return bias;
}

/* The sequences' final states: the row of `seq` at each one's last valid
 * step, or its initial state when it has none. */
static void final_rows(const run *r, REAL *out, const REAL *seq, const REAL *initial)
{
    const fusedrnn_problem *p = r->p;
    const seq_layout L = layout_of(p);
    for (int64_t b = 0; b < p->B; b++) {
        int64_t len = seq_len(r->lengths, b, p->T);
        const REAL *last = len > 0 ? seq + row_of(L, time_at(p, len, len - 1), b) * p->H
                                   : initial_row(r, initial, b);
        copy(out + b * p->H, last, p->H);
    }
}

static void forward_pass(const run *r)
{
    const fusedrnn_problem *p = r->p;
    const cell_desc *c = r->cell;
    const int64_t T = p->T, B = p->B, D = p->D, H = p->H, GH = c->info.gates * H;
    const seq_layout L = layout_of(p);
    work *w = r->w;
    zero(w->zeros, GH);

    /* RNN: the input side of every step in one GEMM, straight into y
     * [T*B,H]; gated: a chunk of steps at a time, inside the time loop. */
    w->in_bias = input_bias(r);
    if (c->fused)
        gemm_team(r, GEMM_INPUT, (view){r->x, D, 1}, (view){r->w_ih, 1, D},
                       NULL, r->y, H, 0, w->in_bias);
    else
        list_rows(r);
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = seq_len(r->lengths, b, T); t < T; t++)
            zero(r->y + row_of(L, t, b) * H, H);
    recurrence(r);

    if (r->h_n)
        final_rows(r, r->h_n, r->y, r->h0);
    if (c->info.has_c && p->training)
        final_rows(r, r->c_n, w->state, r->c0);
    else if (c->info.has_c)   /* inference: each sequence's c, where its steps left it */
        for (int64_t b = 0; b < B; b++)
            copy(r->c_n + b * H, seq_len(r->lengths, b, T) > 0 ? w->state + b * H
                                                                   : initial_row(r, r->c0, b), H);
}

/* Which rows of the deferred weight-gradient GEMMs carry a term of the sum.
 * dg is zero on every other row, but x's padding, h0 of an empty sequence or
 * an infinite state can be paired with such a row, and 0 * inf is NaN: those
 * are packed as zeros instead (pack_b's keep). A pair of the shifted dW_hh
 * GEMM counts when its dg row is a step of a sequence after its piece's
 * first: then its y row is that sequence's previous step. */
static void mark_rows(const run *r)
{
    const fusedrnn_problem *p = r->p;
    const seq_layout L = layout_of(p);
    const int64_t T = p->T, B = p->B, shift = L.t_rows;
    const int64_t K = dims_of(p, GEMM_DW_HH).K;
    work *w = r->w;
    for (int64_t b = 0; b < B; b++) {
        int64_t len = seq_len(r->lengths, b, T);
        w->keep_h0[b] = len > 0;
        for (int64_t t = 0; t < T; t++)
            w->keep_x[row_of(L, t, b)] = t < len;
    }
    /* forward: pair k is dg row k + shift with y row k; reverse: dg row k with
     * y row k + shift. Either way a reset at row k + shift, the later time,
     * cuts the two apart: that step paired with h0 (through g). */
    for (int64_t k = 0; k < K; k++)
        w->keep_pair[k] = w->keep_x[k] && w->keep_x[k + shift] &&
                          !(r->resets && r->resets[k + shift]);
    if (!p->batch_first)
        return;
    /* Batch-first rows k and k + 1 can be the last step of one sequence and
     * the first of the next. */
    for (int64_t b = 0; b + 1 < B; b++)
        w->keep_pair[row_of(L, T - 1, b)] = 0;
}

/* The RNN's dz = dy, the pieces of rows this member claims (dz rows are
 * ldg apart). */
typedef struct {
    const run *r;
    int64_t pieces;
    atomic_llong next;
} seed_job;

static void seed_slice(void *arg, int tid, int n)
{
    seed_job *s = arg;
    const run *r = s->r;
    const int64_t H = r->p->H, ld = r->w->ldg;
    int64_t lo, hi;
    (void)tid, (void)n;
    while (team_take(&s->next, s->pieces, r->p->T * r->p->B, 1, &lo, &hi)) {
        for (int64_t i = lo; i < hi; i++)
            if (r->dy)
                copy(r->w->dg + i * ld, r->dy + i * H, H);
            else
                zero(r->w->dg + i * ld, H);
    }
}

/* Where the loss gradients enter the recurrence. RNN: dz starts as dy, plus
 * dh_n at the step each sequence ended on; the step then works in place.
 * Gated: dy enters each step's product as its epilogue operand, dh_n with
 * dy at the last step (the rows `last`); dc_n starts the LSTM's carry.
 * Rows past a sequence's length are zero whatever dy holds there. */
static void seed_gradients(const run *r)
{
    const fusedrnn_problem *p = r->p;
    const cell_desc *c = r->cell;
    const int64_t T = p->T, B = p->B, H = p->H, GH = c->info.gates * H, TB = T * B;
    const seq_layout L = layout_of(p);
    work *w = r->w;
    zero(w->zeros, GH);
    /* the RNN's dz = dy: a share of 2^18 elements copied (about 1 MB in
     * float32) outweighs waking a worker */
    if (c->fused) {
        int threads = threads_for(p, (double)TB * H, 1 << 18);
        seed_job s = {r, pieces_for(TB, threads), 0};
        team_run(threads, seed_slice, &s);
    }
    for (int64_t b = 0; b < B; b++) {
        int64_t len = seq_len(r->lengths, b, T);
        const REAL *dh_n = r->dh_n ? r->dh_n + b * H : NULL;
        /* Steps the recurrence does not reach: zeros, so that the deferred
         * products over every row see no garbage. */
        for (int64_t t = len; t < T; t++) {
            zero(w->dg + row_of(L, t, b) * w->ldg, GH);
            if (c->split)
                zero(w->dxn + row_of(L, t, b) * H, H);
        }
        if (!c->fused) {
            copy(w->carry + b * H, initial_row(r, c->info.has_c ? r->dc_n : NULL, b), H);
            if (r->resets)
                zero(w->restarts + b * H, H);
            if (len > 0 && dh_n) {
                const REAL *dy = r->dy ? r->dy + row_of(L, time_at(p, len, len - 1), b) * H
                                       : w->zeros;
                for (int64_t j = 0; j < H; j++)
                    w->last[b * H + j] = dy[j] + dh_n[j];
            }
            continue;
        }
        if (len > 0 && dh_n) {
            REAL *end = w->dg + row_of(L, time_at(p, len, len - 1), b) * w->ldg;
            for (int64_t j = 0; j < H; j++)
                end[j] += dh_n[j];
        }
    }
}

static void backward_pass(const run *r)
{
    const fusedrnn_problem *p = r->p;
    const cell_desc *c = r->cell;
    const int64_t T = p->T, B = p->B, D = p->D, H = p->H, TB = T * B;
    const int64_t G = c->info.gates, GH = G * H, GxH = (G - c->split) * H, GhH = h_gates(c) * H;
    const seq_layout L = layout_of(p);
    work *w = r->w;
    REAL *dg = w->dg, *g = w->g;
    const int64_t ldg = w->ldg;

    seed_gradients(r);
    recurrence(r);
    mark_rows(r);

    /* The weight and input gradients, deferred to one GEMM each over K = T*B
     * (two for a split cell: its last gate's input side is dxn); each left
     * out when its result is NULL (no one wants it: fusedrnn.h). */
    /* db_ih equals db_hh but in a split gate: one sum serves both */
    column_sums(r, r->db_ih, dg, TB, ldg, GxH);
    if (r->db_hh) {
        copy(r->db_hh, r->db_ih, GxH);
        column_sums(r, r->db_hh + GxH, dg + GxH, TB, ldg, GH - GxH);
    }
    if (r->dw_ih)
        gemm_team(r, GEMM_DW_IH, (view){dg, 1, ldg}, (view){r->x, D, 1},
                  w->keep_x, r->dw_ih, D, 0, NULL);                           /* dg^T x   [Gx*H,D] */
    if (r->dx)
        gemm_team(r, GEMM_DX, (view){dg, ldg, 1}, (view){r->w_ih, D, 1}, NULL,
                  r->dx, D, 0, NULL);                                         /* dg W_ih  [T*B,D] */
    if (c->split) {
        column_sums(r, r->db_ih + GxH, w->dxn, TB, H, H);
        if (r->dw_ih)
            gemm_team(r, GEMM_DW_IH_N, (view){w->dxn, 1, H}, (view){r->x, D, 1},
                      w->keep_x, r->dw_ih + GxH * D, D, 0, NULL);
        /* given a pack, B is its panels: w_ih may be NULL */
        if (r->dx)
            gemm_team(r, GEMM_DX_N, (view){w->dxn, H, 1},
                      r->pack ? (view){0} : (view){r->w_ih + GxH * D, D, 1}, NULL, r->dx, D,
                      1, NULL);
    }

    /* The first step of each sequence saw h0, and so did every step a reset
     * cut from the one before: g = the sum of their dg rows, dh0 = g W_hh
     * (+ the GRU's z * dh of those steps: of the first, left in the carry,
     * of the others, summed in `restarts`); dh_n and dc_n pass straight
     * through an empty sequence. The LSTM's carry and restarts end as dc0. */
    for (int64_t b = 0; b < B; b++) {
        int64_t len = seq_len(r->lengths, b, T);
        if (len > 0)
            copy(g + b * GH, dg + row_of(L, time_at(p, len, 0), b) * ldg, GH);
        else
            zero(g + b * GH, GH);
        for (int64_t s = 1; r->resets && s < len; s++)
            if (cut_before(r, b, len, s)) {
                const REAL *row = dg + row_of(L, time_at(p, len, s), b) * ldg;
                for (int64_t j = 0; j < GH; j++)
                    g[b * GH + j] += row[j];
            }
    }
    if (r->dh0)   /* at T = 1 this is the recurrence's one product */
        gemm_team(r, GEMM_DH0, (view){g, GH, 1}, (view){r->w_hh, H, 1}, NULL,
                  r->dh0, H, 0, NULL);
    for (int64_t b = 0; b < B; b++) {
        REAL *carry = w->carry + b * H;
        int64_t len = seq_len(r->lengths, b, T);
        if (len == 0) {
            if (r->dh0)
                copy(r->dh0 + b * H, initial_row(r, r->dh_n, b), H);
            continue;
        }
        if (c->fused)
            continue;
        /* a sequence without a cut adds nothing: its sums stay as they were */
        int cut = 0;
        for (int64_t s = 1; r->resets && s < len && !cut; s++)
            cut = cut_before(r, b, len, s);
        for (int64_t j = 0; cut && j < H; j++)
            carry[j] += w->restarts[b * H + j];
        if (!c->info.has_c && r->dh0)   /* the carry is part of dh: GRU's z * dh */
            for (int64_t j = 0; j < H; j++)
                r->dh0[b * H + j] += carry[j];
    }
    if (c->info.has_c && r->dc0)
        copy(r->dc0, w->carry, B * H);

    /* dW_hh = sum over steps of dg_t^T h_{t-1}. The first steps, and those a
     * reset cut, pair with h0 (g holds their sum);
     * every other step pairs with y one time step back (forward) or ahead
     * (reverse), which in either layout is y shifted by one time step's rows;
     * keep_pair leaves out the pairs that are not a step and its predecessor. */
    if (!r->dw_hh)
        return;
    if (r->h0)
        gemm_team(r, GEMM_DW_HH0, (view){g, 1, GH}, (view){r->h0, H, 1},
                       w->keep_h0, r->dw_hh, H, 0, NULL);
    int64_t shift = L.t_rows;
    const REAL *dg_k = p->reverse ? dg : dg + shift * ldg;
    const REAL *y_k = p->reverse ? r->y + shift * H : r->y;
    gemm_team(r, GEMM_DW_HH, (view){dg_k, 1, ldg}, (view){y_k, H, 1},
                   w->keep_pair, r->dw_hh, H, r->h0 != NULL, NULL);
    /* the gates of a second phase: their products read the state rows */
    if (c->phases > 1)
        gemm_team(r, GEMM_DW_HH_S, (view){dg + GhH, 1, ldg}, (view){w->state, H, 1},
                  w->keep_x, r->dw_hh + GhH * H, H, 0, NULL);
}

/* The entry points' view of a call: the pointers typed, and the pass's
 * row layout and tile chosen once for the cell and direction. */
static run bind(const fusedrnn_problem *p, const ukr *u, work *w, const fusedrnn_inputs *in,
                int backward)
{
    const cell_desc *c = &cell_table[p->cell];
    run r = {.p = p, .cell = c, .u = u, .w = w, .backward = backward,
             .x = in->x, .h0 = in->h0, .c0 = in->c0, .w_ih = in->w_ih, .w_hh = in->w_hh,
             .b_ih = in->b_ih, .b_hh = in->b_hh, .lengths = in->lengths,
             .resets = in->resets, .panels = w->packed};
    if (c->fused) {
        r.fill_row = backward ? rnn_backward_row : rnn_forward_row;
        r.tile = rnn_tile;
        r.epi = epilogue_of(p->act, backward);
    } else {
        r.fill_row = backward ? gated_backward_row : gated_forward_row;
        r.tile = backward ? gated_backward_tile : gated_forward_tile;
        r.chunks = !backward;
    }
    return r;
}

/* The workspace of a pass, measured: its bytes, 0 when the size overflows.
 * + 64: room to align an arbitrary caller pointer. */
static size_t workspace_bytes(const fusedrnn_problem *p, int backward)
{
    arena a = {0};
    if (nothing_recurs(p))
        return 64;
    carve(&a, p, backward);
    return a.overflow || a.used > SIZE_MAX - 64 ? 0 : a.used + 64;
}

/* The reserve's layout, measured: its bytes, or -1 when the size overflows. */
static int64_t reserve_bytes(const fusedrnn_problem *p)
{
    arena a = {0};
    work w;
    take_reserve(&a, &w, p);
    return a.overflow || a.used > INT64_MAX ? -1 : (int64_t)a.used;
}

/* A pass's workspace and reserve laid out once over the caller's buffers,
 * and checked: the sizes must not overflow, the workspace must hold the
 * layout from its first 64-byte boundary (what the query counts), and a
 * pass that keeps or reads a reserve must have one. The reserve is laid
 * out from its own start, never from an aligned address past it: it is the
 * caller's array, and an equal copy of it at another address (np.copy,
 * pickle) must read the same. */
static fusedrnn_status lay_out(const fusedrnn_problem *p, int backward, void *workspace,
                               size_t bytes, const void *reserve, work *w)
{
    char *base = (char *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63);
    arena a = {base, 0, 0}, ra = {(char *)reserve, 0, 0};
    *w = carve(&a, p, backward);
    if (uses_reserve(p, backward))
        take_reserve(&ra, w, p);
    if (a.overflow || a.used > SIZE_MAX - 64 || ra.overflow || ra.used > INT64_MAX)
        return FUSEDRNN_EOVERFLOW;
    if (!workspace || bytes < a.used + 64)
        return FUSEDRNN_EWORKSPACE;
    if (uses_reserve(p, backward) && !reserve)
        return FUSEDRNN_ERESERVE;
    return FUSEDRNN_OK;
}

static fusedrnn_status forward_call(const fusedrnn_problem *p, const isa_kernels *k,
                                    const fusedrnn_inputs *in, const fusedrnn_outputs *out,
                                    void *workspace, size_t bytes)
{
    work w;
    fusedrnn_status st = lay_out(p, 0, workspace, bytes, out->reserve, &w);
    if (st != FUSEDRNN_OK)
        return st;
    run r = bind(p, &k->KERNELS, &w, in, 0);
    r.y = out->y, r.h_n = out->h_n, r.c_n = out->c_n;
    pack_parts pk;
    if (in->packed) {   /* the entry point has checked its key: read only */
        arena a = {(char *)in->packed, 0, 0};
        pk = carve_pack(&a, p, r.u);
        pack_header header;
        memcpy(&header, pk.header, sizeof header);
        pk.has_bias = header.has_bias != 0;
        r.pack = &pk, r.panels = pk.w_hh, r.b_hh = pk.b_hh;
    }
    forward_pass(&r);
    return FUSEDRNN_OK;
}

static fusedrnn_status backward_call(const fusedrnn_problem *p, const isa_kernels *k,
                                     const fusedrnn_inputs *in, const fusedrnn_grad_inputs *gin,
                                     const fusedrnn_grads *g, void *workspace, size_t bytes)
{
    work w;
    fusedrnn_status st = lay_out(p, 1, workspace, bytes, gin->reserve, &w);
    if (st != FUSEDRNN_OK)
        return st;
    run r = bind(p, &k->KERNELS, &w, in, 1);
    pack_parts pk;
    if (in->packed) {   /* the entry point has checked its key: its panels, no bias */
        arena a = {(char *)in->packed, 0, 0};
        pk = carve_pack(&a, p, r.u);
        r.pack = &pk, r.panels = pk.back_w_hh;
    }
    r.y = (REAL *)gin->y;   /* an input here: the run's y is read only */
    r.dy = gin->dy, r.dh_n = gin->dh_n, r.dc_n = gin->dc_n;
    r.dx = g->dx, r.dh0 = g->dh0, r.dc0 = g->dc0, r.dw_ih = g->dw_ih, r.dw_hh = g->dw_hh;
    r.db_ih = g->db_ih, r.db_hh = g->db_hh;
    backward_pass(&r);
    return FUSEDRNN_OK;
}

/* B [K,N] (a strided view) as a product with a prepacked B reads it: for
 * each k block from pc, pack_b's panels of every column at dst + pc*ld. */
static void prepack(const ukr *u, int64_t K, int64_t N, view B, PREAL *dst, size_t cap,
                    int64_t ld)
{
    for (int64_t pc = 0; pc < K; pc += u->kc) {
        size_t at = (size_t)(pc * ld);
        pack_b(u, min64(u->kc, K - pc), N, B.p + pc * B.rs, B.rs, B.cs, NULL, dst + at,
               cap - at);
    }
}

/* A pack's bytes on the table `k`, measured: 0 when the size overflows. */
static size_t packed_bytes(const fusedrnn_problem *p, const isa_kernels *k)
{
    arena a = {0};
    carve_pack(&a, p, &k->KERNELS);
    return a.overflow ? 0 : a.used;
}

/* Writes a pack, for a valid problem into a buffer of packed_bytes: what a
 * forward would make of the weights on every thread's columns and k
 * blocks, by the same code (pack_w_hh, pack_b, input_bias) under the same
 * floating-point mode (the entry point's), so that a forward reading it
 * computes bitwise what one packing them itself does. */
static void pack_call(const fusedrnn_problem *p, const isa_kernels *k,
                      const fusedrnn_inputs *weights, void *packed)
{
    const ukr *u = &k->KERNELS;
    const cell_desc *c = &cell_table[p->cell];
    const int64_t G = c->info.gates, D = p->D, H = p->H, GH = G * H;
    const int64_t GxH = (G - c->split) * H;
    /* every byte defined, the gaps between the parts too: packs of the same
     * weights are equal byte for byte */
    memset(packed, 0, packed_bytes(p, k));
    arena a = {packed, 0, 0};
    pack_parts pk = carve_pack(&a, p, u);
    work w = {.packed = pk.w_hh, .packed_cap = pk.w_hh_cap, .bias = pk.bias};
    work back = {.packed = pk.back_w_hh, .packed_cap = pk.w_hh_cap};
    run r = bind(p, u, &w, weights, 0), rb = bind(p, u, &back, weights, 1);
    if (GH > 0) {   /* the weights may be NULL when empty */
        pack_w_hh(&r, 0, H);
        pack_w_hh(&rb, 0, H);
        /* B of GEMM_DH0 as gemm_team gives it */
        prepack(u, dims_of(p, GEMM_DH0).K, H, (view){r.w_hh, H, 1}, pk.dh0, pk.dh0_cap,
                pk.ld_ih);
    }
    if (GH * D > 0) {   /* W_ih^T of each gate, then B of GEMM_DX and GEMM_DX_N */
        for (int64_t q = 0; q < G; q++)
            prepack(u, D, H, (view){r.w_ih + q * H * D, 1, D},
                    pk.w_ih + q * KPAD(D) * pk.ld_ih,
                    pk.w_ih_cap - (size_t)(q * KPAD(D) * pk.ld_ih), pk.ld_ih);
        prepack(u, GxH, D, (view){r.w_ih, D, 1}, pk.dx, pk.dx_cap, pk.ld_dx);
        prepack(u, GH - GxH, D, (view){r.w_ih + GxH * D, D, 1},
                pk.dx + KPAD(GxH) * pk.ld_dx, pk.dx_cap - (size_t)(KPAD(GxH) * pk.ld_dx),
                pk.ld_dx);
    }
    const REAL *bias = input_bias(&r);
    if (bias && bias != pk.bias)   /* b_ih as given: the pack keeps its own */
        copy(pk.bias, bias, GH);
    if (r.b_hh)
        copy(pk.b_hh, r.b_hh, GH);
    pack_header header = {pack_key_of(p, k), bias != NULL};
    memcpy(pk.header, &header, sizeof header);
}
