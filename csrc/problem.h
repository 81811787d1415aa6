/* What the entry points and the drivers of every storage type share: the
 * problem's geometry (rows, steps, threads), the cell descriptors, the
 * table of the GEMMs a call issues, and each storage type's driver. */
#ifndef FUSEDRNN_PROBLEM_H
#define FUSEDRNN_PROBLEM_H

#include <stdint.h>
#include <string.h>

#include "internal.h"

/* Row (t,b) of a sequence array is row t*t_rows + b*b_rows. */
typedef struct {
    int64_t t_rows, b_rows;
} seq_layout;

static inline seq_layout layout_of(const fusedrnn_problem *p)
{
    return p->batch_first ? (seq_layout){1, p->T} : (seq_layout){p->B, 1};
}

static inline int64_t row_of(seq_layout L, int64_t t, int64_t b)
{
    return t * L.t_rows + b * L.b_rows;
}

static inline int64_t seq_len(const int64_t *lengths, int64_t b, int64_t T)
{
    return lengths ? lengths[b] : T;
}

/* Sequence b of length len is at time s forwards, or, in reverse, at time
 * len-1-s: each sequence starts from its own last valid step. */
static inline int64_t time_at(const fusedrnn_problem *p, int64_t len, int64_t s)
{
    return p->reverse ? len - 1 - s : s;
}

/* The most threads the call may use. */
static inline int team_size(const fusedrnn_problem *p)
{
    return p->threads < 1 ? 1 : p->threads > FUSEDRNN_MAX_THREADS ? FUSEDRNN_MAX_THREADS : p->threads;
}

/* Threads for a phase of `work` multiply-adds: one per `grain` of them (a
 * thread's share must outweigh the cost of waking it and of the waits),
 * at most the call's allowance. */
static inline int threads_for(const fusedrnn_problem *p, double work, double grain)
{
    double shares = work / grain;
    int n = team_size(p);
    return shares >= n ? n : shares < 2 ? 1 : (int)shares;
}

/* How many pieces a team's job is cut into, of `units` whole tiles: a few
 * per thread, so that a member that runs late or never leaves pieces for
 * the others to take, not one slice that all wait for; one when a single
 * thread runs it. */
#define PIECES_PER_THREAD 4
#define TILES_MAX (PIECES_PER_THREAD * FUSEDRNN_MAX_THREADS)   /* the time loop's, at most */

static inline int64_t pieces_for(int64_t units, int threads)
{
    int64_t most = threads > 1 ? PIECES_PER_THREAD * (int64_t)threads : 1;
    return units < most ? units : most;
}

/* One phase of a step: a product with some gate blocks of W_hh, then a
 * cell kernel on the same columns. A step's phases run in order, each once
 * every tile of the one before is done, since a later phase's product reads
 * what the earlier one's kernel made on every column. */
typedef struct {
    int gate0, gates;          /* the gate blocks of W_hh the product takes */
    cell_kernel_id kernel;     /* a gated cell's kernel after it */
} phase_desc;

#define PHASES_MAX 2

/* A cell is data: the driver's one forward and one backward serve them all. */
typedef struct {
    fusedrnn_cell_info info;   /* what bindings see, and the drivers too: G is
                                  info.gates, the LSTM's c info.has_c */
    int fused;    /* its maths runs in the product kernel's epilogue (RNN):
                     no gates buffer, no reserve, no cell kernel */
    int split;    /* the last gate's recurrent product is kept apart, since
                     a gate multiplies it (GRU's r (W_hn h + b_hn)): its
                     input- and recurrent-side gradients differ */
    int phases;   /* of a step, forward and backward alike: 2 when a product
                     reads what a cell kernel made in the same step */
    phase_desc forward[PHASES_MAX], backward[PHASES_MAX];
} cell_desc;

/* The table, by fusedrnn_cell (rnn.c). */
extern const cell_desc cell_table[FUSEDRNN_CELL_COUNT];

/* A gated cell's reserve holds a state row per step beside its gates (its
 * reserve_rows are G + 1): c_t (LSTM), W_hn h_{t-1} + b_hn (GRU), r ⊙
 * h_{t-1} (GRU, reset first); inference keeps one per sequence or row. */
static inline int has_state(const cell_desc *c)
{
    return c->info.reserve_rows > c->info.gates;
}

/* The gates whose recurrent product reads h_{t-1}: the first phase's. Those
 * of a second phase read the state rows, and so do their weights' gradients. */
static inline int64_t h_gates(const cell_desc *c) { return c->backward[0].gates; }

/* A gated cell's forward computes the input side of its steps a chunk at a
 * time, on the team inside the time loop, each thread for its own columns:
 * about 1024 rows a chunk, enough that each packed slab of W_ih^T serves
 * many rows (256 rows measured 8% slower at L, 1024 as fast as one GEMM over
 * all T*B rows, faster at M), and a bound on what inference keeps of the
 * gates: 1024 + B rows of G*H, not T*B. */
static inline int64_t chunk_steps(const fusedrnn_problem *p)
{
    int64_t steps = p->B > 0 ? (1024 + p->B - 1) / p->B : 1;
    return steps < p->T ? steps : p->T;
}

/* Every GEMM a call issues, by name. The workspace is sized from this table
 * and the drivers take each product's M, N, K from it, so that a slab can
 * never be smaller than a product that packs into it. dg is the backward's
 * [T,B,G*H] gate gradients on the recurrent side; for a split cell its last
 * gate's input side is dxn [T,B,H], and Gx = G - 1 gates of dg serve the
 * input side. Gh = h_gates: the gates whose recurrent products read h_{t-1}. */
typedef enum {
    GEMM_INPUT,    /* forward, RNN: y = x W_ih^T + b    [T*B,D] x [D,H] */
    GEMM_STEPS,    /* forward, gated: one chunk of steps, one gate and thread's columns:
                      gates = x W_ih^T + b              [chunk rows,D] x [D,<=H] */
    GEMM_DW_IH,    /* backward: dW_ih = dg^T x          [Gx*H,T*B] x [T*B,D] */
    GEMM_DW_IH_N,  /*           dW_in = dxn^T x         [H,T*B] x [T*B,D] (split) */
    GEMM_DX,       /*           dx = dg W_ih            [T*B,Gx*H] x [Gx*H,D] */
    GEMM_DX_N,     /*           dx += dxn W_in          [T*B,H] x [H,D] (split) */
    GEMM_DH0,      /*           dh0 = g W_hh            [B,Gh*H] x [Gh*H,H] */
    GEMM_DW_HH0,   /*           dW_hh = g^T h0          [Gh*H,B] x [B,H] */
    GEMM_DW_HH,    /*           dW_hh += dg^T y, y shifted by one step's rows */
    GEMM_DW_HH_S,  /*           the second phase's gates: dW_hh = dg^T state
                                                        [(G-Gh)*H,T*B] x [T*B,H] */
    GEMM_COUNT
} gemm_id;

typedef struct {
    int64_t M, N, K;
} gemm_dims;

static inline gemm_dims dims_of(const fusedrnn_problem *p, gemm_id id)
{
    const cell_desc *c = &cell_table[p->cell];
    const int64_t TB = p->T * p->B, shift = layout_of(p).t_rows, H = p->H;
    const int64_t GH = c->info.gates * H, GxH = (c->info.gates - c->split) * H;
    const int64_t HN = c->split ? H : 0, GhH = h_gates(c) * H;
    switch (id) {
    case GEMM_INPUT:   return (gemm_dims){c->fused ? TB : 0, H, p->D};
    case GEMM_STEPS:   return (gemm_dims){c->fused ? 0 : chunk_steps(p) * p->B, H, p->D};
    case GEMM_DW_IH:   return (gemm_dims){GxH, p->D, TB};
    case GEMM_DW_IH_N: return (gemm_dims){HN, p->D, TB};
    case GEMM_DX:      return (gemm_dims){TB, p->D, GxH};
    case GEMM_DX_N:    return (gemm_dims){TB, p->D, HN};
    case GEMM_DH0:     return (gemm_dims){p->B, H, GhH};
    case GEMM_DW_HH0:  return (gemm_dims){GhH, H, p->B};
    case GEMM_DW_HH:   return (gemm_dims){GhH, H, TB > shift ? TB - shift : 0};
    case GEMM_DW_HH_S: return (gemm_dims){GH - GhH, H, TB};
    case GEMM_COUNT:   break;
    }
    return (gemm_dims){0, 0, 0};
}

static inline int gemm_in_pass(gemm_id id, int backward)
{
    return backward == (id != GEMM_INPUT && id != GEMM_STEPS);
}

/* A gated cell's training forward and its backward work on the reserve. */
static inline int uses_reserve(const fusedrnn_problem *p, int backward)
{
    return !cell_table[p->cell].fused && (backward || p->training);
}

/* A problem with no batch rows or no hidden units: nothing recurs, and
 * every output is empty or zero. The drivers must not start: their loops
 * run over T steps and T*B rows, which no buffer bounds when B or H is 0,
 * so a huge T (or T*B with H = 0) would spin for ever over nothing. */
static inline int nothing_recurs(const fusedrnn_problem *p)
{
    return p->B == 0 || p->H == 0;
}

/* What a pack (fusedrnn_pack) was laid out for: the start of its header,
 * which a forward given the pack compares with its own, byte for byte
 * (no padding: every field is 8 bytes or a char array of a multiple). */
typedef struct {
    char magic[8];             /* PACK_MAGIC */
    int64_t layout;            /* PACK_LAYOUT */
    char isa[16];              /* the table's name */
    int64_t cell, dtype, D, H;
    int64_t mr, nr, mc, kc, nc;   /* the blocking of the dtype's product kernel */
} pack_key;

#define PACK_MAGIC "fusedrnn"
/* The version of the pack's layout, counted up whenever it changes, so that
 * the bytes of a pack kept from another build are refused, not misread
 * (2: the backward's panels after the forward's; 3: bf16 packs of bf16 pairs). */
#define PACK_LAYOUT 3

static inline pack_key pack_key_of(const fusedrnn_problem *p, const isa_kernels *k)
{
    pack_key key;
    memset(&key, 0, sizeof key);
    memcpy(key.magic, PACK_MAGIC, sizeof key.magic);
    key.layout = PACK_LAYOUT;
    strncpy(key.isa, k->name, sizeof key.isa - 1);
    key.cell = p->cell, key.dtype = p->dtype, key.D = p->D, key.H = p->H;
    /* bf16 products where the table has them, else float32's */
    if ((p->dtype == FUSEDRNN_BF16 || p->dtype == FUSEDRNN_F32_BF16) && k->bf16.step)
        key.mr = k->bf16.mr, key.nr = k->bf16.nr, key.mc = k->bf16.mc, key.kc = k->bf16.kc,
        key.nc = k->bf16.nc;
    else if (p->dtype != FUSEDRNN_F64)
        key.mr = k->f32.mr, key.nr = k->f32.nr, key.mc = k->f32.mc, key.kc = k->f32.kc,
        key.nc = k->f32.nc;
    else
        key.mr = k->f64.mr, key.nr = k->f64.nr, key.mc = k->f64.mc, key.kc = k->f64.kc,
        key.nc = k->f64.nc;
    return key;
}

/* A pack's header: its key, then what the weights packed had. */
typedef struct {
    pack_key key;
    int64_t has_bias;          /* the input side adds a bias (input_bias not NULL) */
} pack_header;

/* One storage type's drivers (rnn_f32.c, rnn_f64.c, rnn_bf16.c), for a problem the
 * entry points have validated: its workspace and reserve measured, and its
 * passes, which lay the workspace and reserve out over the caller's
 * buffers once, check that they are large enough, and run. */
typedef struct {
    size_t elem_size;
    size_t (*workspace)(const fusedrnn_problem *p, int backward);   /* bytes, 0: overflow */
    int64_t (*reserve_bytes)(const fusedrnn_problem *p);             /* -1: overflow */
    fusedrnn_status (*forward)(const fusedrnn_problem *p, const isa_kernels *k,
                               const fusedrnn_inputs *in, const fusedrnn_outputs *out,
                               void *workspace, size_t workspace_bytes);
    fusedrnn_status (*backward)(const fusedrnn_problem *p, const isa_kernels *k,
                                const fusedrnn_inputs *in, const fusedrnn_grad_inputs *gin,
                                const fusedrnn_grads *grads, void *workspace,
                                size_t workspace_bytes);
    size_t (*packed_bytes)(const fusedrnn_problem *p, const isa_kernels *k);   /* 0: overflow */
    void (*pack)(const fusedrnn_problem *p, const isa_kernels *k, const fusedrnn_inputs *weights,
                 void *packed);
} storage_driver;

extern const storage_driver driver_f32, driver_f64, driver_bf16, driver_f32_bf16;
/* float32 with bf16 products (rnn_bf16_dot.c): rnn_bf16.c's, on a table that has them */
extern const storage_driver driver_bf16_dot;

#endif
