/* Public entry points: validate, carve the workspace, pick the dtype once,
 * run the driver with denormals flushed. */
#include <stdint.h>
#include <string.h>

#include "internal.h"

/* Row (t,b) of a sequence array is row t*t_rows + b*b_rows. */
typedef struct {
    int64_t t_rows, b_rows;
} seq_layout;

static seq_layout layout_of(const fusedrnn_problem *p)
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
static int team_size(const fusedrnn_problem *p)
{
    return p->threads < 1 ? 1 : p->threads > FUSEDRNN_MAX_THREADS ? FUSEDRNN_MAX_THREADS : p->threads;
}

/* Threads for a phase of `work` multiply-adds: one per `grain` of them (a
 * thread's share must outweigh the cost of waking it and of the waits),
 * at most the call's allowance. */
static int threads_for(const fusedrnn_problem *p, double work, double grain)
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

static int64_t pieces_for(int64_t units, int threads)
{
    int64_t most = threads > 1 ? PIECES_PER_THREAD * (int64_t)threads : 1;
    return units < most ? units : most;
}

/* A cell is data: the driver's one forward and one backward serve all three. */
typedef struct {
    fusedrnn_cell_info info;   /* what bindings see */
    int gates;    /* G: the gate blocks of the weights' rows */
    int has_c;    /* carries a cell state c next to h (LSTM) */
    int split;    /* the last gate's recurrent product is kept apart, since
                     a gate multiplies it (GRU's r (W_hn h + b_hn)): its
                     input- and recurrent-side gradients differ */
    int fused;    /* its maths runs in the product kernel's epilogue (RNN):
                     no gates buffer, no reserve, no cell kernel */
} cell_desc;

static const cell_desc CELLS[FUSEDRNN_CELL_COUNT] = {
    [FUSEDRNN_RNN] = {{"RNN", 1, 0, 1, 0, 0}, 1, 0, 0, 1},
    [FUSEDRNN_LSTM] = {{"LSTM", 4, 1, 0, 5, 0}, 4, 1, 0, 0},
    [FUSEDRNN_GRU] = {{"GRU", 3, 0, 0, 4, 1}, 3, 0, 1, 0},
};

static int known_cell(fusedrnn_cell cell)
{
    return (unsigned)cell < FUSEDRNN_CELL_COUNT;
}

int fusedrnn_gates(fusedrnn_cell cell) { return known_cell(cell) ? CELLS[cell].gates : 0; }

const fusedrnn_cell_info *fusedrnn_cell_describe(fusedrnn_cell cell)
{
    return known_cell(cell) ? &CELLS[cell].info : NULL;
}

/* Gated cells keep a state beside the gates, c_t (LSTM) or W_hn h_{t-1} +
 * b_hn (GRU): per step in the reserve, per sequence or row in inference. */
static int has_state(const cell_desc *c) { return c->has_c || c->split; }

/* A gated cell's forward computes the input side of its steps a chunk at a
 * time, on the team inside the time loop, each thread for its own columns:
 * about 1024 rows a chunk, enough that each packed slab of W_ih^T serves
 * many rows (256 rows measured 8% slower at L, 1024 as fast as one GEMM over
 * all T*B rows, faster at M), and a bound on what inference keeps of the
 * gates: 1024 + B rows of G*H, not T*B. */
static int64_t chunk_steps(const fusedrnn_problem *p)
{
    int64_t steps = p->B > 0 ? (1024 + p->B - 1) / p->B : 1;
    return steps < p->T ? steps : p->T;
}

/* Every GEMM a call issues, by name. The workspace is sized from this table
 * and the drivers take each product's M, N, K from it, so that a slab can
 * never be smaller than a product that packs into it. dg is the backward's
 * [T,B,G*H] gate gradients on the recurrent side; for a split cell its last
 * gate's input side is dxn [T,B,H], and Gx = G - 1 gates of dg serve the
 * input side. */
typedef enum {
    GEMM_INPUT,    /* forward, RNN: y = x W_ih^T + b    [T*B,D] x [D,H] */
    GEMM_STEPS,    /* forward, gated: one chunk of steps, one gate and thread's columns:
                      gates = x W_ih^T + b              [chunk rows,D] x [D,<=H] */
    GEMM_DW_IH,    /* backward: dW_ih = dg^T x          [Gx*H,T*B] x [T*B,D] */
    GEMM_DW_IH_N,  /*           dW_in = dxn^T x         [H,T*B] x [T*B,D] (split) */
    GEMM_DX,       /*           dx = dg W_ih            [T*B,Gx*H] x [Gx*H,D] */
    GEMM_DX_N,     /*           dx += dxn W_in          [T*B,H] x [H,D] (split) */
    GEMM_DH0,      /*           dh0 = g W_hh            [B,G*H] x [G*H,H] */
    GEMM_DW_HH0,   /*           dW_hh = g^T h0          [G*H,B] x [B,H] */
    GEMM_DW_HH,    /*           dW_hh += dg^T y, y shifted by one step's rows */
    GEMM_COUNT
} gemm_id;

typedef struct {
    int64_t M, N, K;
} gemm_dims;

static gemm_dims dims_of(const fusedrnn_problem *p, gemm_id id)
{
    const cell_desc *c = &CELLS[p->cell];
    const int64_t TB = p->T * p->B, shift = layout_of(p).t_rows, H = p->H;
    const int64_t GH = c->gates * H, GxH = (c->gates - c->split) * H, HN = c->split ? H : 0;
    switch (id) {
    case GEMM_INPUT:   return (gemm_dims){c->fused ? TB : 0, H, p->D};
    case GEMM_STEPS:   return (gemm_dims){c->fused ? 0 : chunk_steps(p) * p->B, H, p->D};
    case GEMM_DW_IH:   return (gemm_dims){GxH, p->D, TB};
    case GEMM_DW_IH_N: return (gemm_dims){HN, p->D, TB};
    case GEMM_DX:      return (gemm_dims){TB, p->D, GxH};
    case GEMM_DX_N:    return (gemm_dims){TB, p->D, HN};
    case GEMM_DH0:     return (gemm_dims){p->B, H, GH};
    case GEMM_DW_HH0:  return (gemm_dims){GH, H, p->B};
    case GEMM_DW_HH:   return (gemm_dims){GH, H, TB > shift ? TB - shift : 0};
    case GEMM_COUNT:   break;
    }
    return (gemm_dims){0, 0, 0};
}

static int gemm_in_pass(gemm_id id, int backward)
{
    return backward == (id != GEMM_INPUT && id != GEMM_STEPS);
}

/* A gated cell's training forward and its backward work on the reserve. */
static int uses_reserve(const fusedrnn_problem *p, int backward)
{
    return !CELLS[p->cell].fused && (backward || p->training);
}

/* The GEMM engine and the drivers, once per dtype. */
#define REAL float
#define SFX(name) name##_f32
#include "gemm_tmpl.h"
#include "rnn_tmpl.h"
#undef REAL
#undef SFX
#define REAL double
#define SFX(name) name##_f64
#include "gemm_tmpl.h"
#include "rnn_tmpl.h"
#undef REAL
#undef SFX

static fusedrnn_status check_problem(const fusedrnn_problem *p)
{
    int64_t tb, n, gh;
    if (!p || (p->dtype != FUSEDRNN_F32 && p->dtype != FUSEDRNN_F64) || !known_cell(p->cell))
        return FUSEDRNN_EINVAL;
    if (p->T < 0 || p->B < 0 || p->D < 0 || p->H < 0)
        return FUSEDRNN_EINVAL;
    if (p->cell == FUSEDRNN_RNN && p->act != FUSEDRNN_TANH && p->act != FUSEDRNN_RELU &&
        p->act != FUSEDRNN_SIGMOID)
        return FUSEDRNN_EINVAL;
    /* Every element index the drivers form must fit in int64_t. */
    if (__builtin_mul_overflow(p->H, (int64_t)CELLS[p->cell].gates, &gh) ||
        __builtin_mul_overflow(p->T, p->B, &tb) || __builtin_mul_overflow(tb, p->D, &n) ||
        __builtin_mul_overflow(tb, gh, &n) || __builtin_mul_overflow(gh, p->D, &n) ||
        __builtin_mul_overflow(gh, p->H, &n))
        return FUSEDRNN_EOVERFLOW;
    return FUSEDRNN_OK;
}

static fusedrnn_status check_lengths(const fusedrnn_problem *p, const int64_t *lengths)
{
    if (lengths)
        for (int64_t b = 0; b < p->B; b++)
            if (lengths[b] < 0 || lengths[b] > p->T)
                return FUSEDRNN_EINVAL;
    return FUSEDRNN_OK;
}

/* No batch rows or no hidden units: nothing recurs, and every output is
 * empty or zero. The drivers must not start: their loops run over T steps
 * and T*B rows, which no buffer bounds when B or H is 0, so a huge T (or
 * T*B with H = 0) would spin for ever over nothing. */
static int nothing_recurs(const fusedrnn_problem *p)
{
    return p->B == 0 || p->H == 0;
}

static size_t elem_size(fusedrnn_dtype dtype)
{
    return dtype == FUSEDRNN_F32 ? sizeof(float) : sizeof(double);
}

static void zero_fill(void *buf, int64_t count, fusedrnn_dtype dtype)
{
    if (buf && count > 0)  /* memset(NULL, 0, 0) is undefined */
        memset(buf, 0, (size_t)count * elem_size(dtype));
}

/* The layouts, measured (base == NULL) or laid over a buffer. + 64: room to
 * align an arbitrary caller pointer. */
static size_t measured(const arena *a)
{
    return a->overflow || a->used > SIZE_MAX - 64 ? 0 : a->used + 64;
}

static size_t workspace_size(const fusedrnn_problem *p, int backward)
{
    arena a = {0};
    if (check_problem(p) != FUSEDRNN_OK)
        return 0;
    if (nothing_recurs(p))
        return 64;
    if (p->dtype == FUSEDRNN_F32)
        carve_f32(&a, p, backward);
    else
        carve_f64(&a, p, backward);
    return measured(&a);
}

size_t fusedrnn_forward_workspace(const fusedrnn_problem *p) { return workspace_size(p, 0); }
size_t fusedrnn_backward_workspace(const fusedrnn_problem *p) { return workspace_size(p, 1); }

/* The reserve's layout, measured: its bytes, or -1 when the size overflows. */
static int64_t reserve_bytes(const fusedrnn_problem *p)
{
    arena a = {0};
    if (p->dtype == FUSEDRNN_F32) {
        work_f32 w;
        take_reserve_f32(&a, &w, p);
    } else {
        work_f64 w;
        take_reserve_f64(&a, &w, p);
    }
    return a.overflow || a.used > INT64_MAX ? -1 : (int64_t)a.used;
}

size_t fusedrnn_reserve_size(const fusedrnn_problem *p)
{
    if (check_problem(p) != FUSEDRNN_OK || CELLS[p->cell].fused)
        return 0;
    int64_t bytes = reserve_bytes(p);
    return bytes < 0 ? 0 : (size_t)bytes;
}

static char *aligned(void *buf)
{
    return (char *)(((uintptr_t)buf + 63) & ~(uintptr_t)63);
}

static fusedrnn_status prepare(const fusedrnn_problem *p, const int64_t *lengths, int backward,
                               const void *reserve, void *workspace, size_t workspace_bytes,
                               arena *a, arena *ra)
{
    fusedrnn_status st = check_problem(p);
    if (st == FUSEDRNN_OK)
        st = check_lengths(p, lengths);
    if (st != FUSEDRNN_OK)
        return st;
    size_t need = workspace_size(p, backward);
    if (need == 0 || (uses_reserve(p, backward) && reserve_bytes(p) < 0))
        return FUSEDRNN_EOVERFLOW;
    if (!workspace || workspace_bytes < need)
        return FUSEDRNN_EWORKSPACE;
    if (uses_reserve(p, backward) && !reserve && !nothing_recurs(p))
        return FUSEDRNN_ERESERVE;
    a->base = aligned(workspace);
    /* The reserve is laid out from its own start, never from an aligned
     * address past it: it is the caller's array, and an equal copy of it at
     * another address (np.copy, pickle) must read the same. */
    ra->base = (char *)reserve;
    return FUSEDRNN_OK;
}

fusedrnn_status fusedrnn_forward(const fusedrnn_problem *p, const fusedrnn_inputs *in,
                                 const fusedrnn_outputs *out,
                                 void *workspace, size_t workspace_bytes)
{
    arena a = {0}, ra = {0};
    if (!in || !out)
        return FUSEDRNN_EINVAL;
    fusedrnn_status st = prepare(p, in->lengths, 0, out->reserve, workspace, workspace_bytes,
                                 &a, &ra);
    if (st != FUSEDRNN_OK || nothing_recurs(p))   /* y, h_n, c_n are empty */
        return st;
    const isa_kernels *k = fusedrnn_active_kernels();
    fp_mode mode = fp_enter();
    if (p->dtype == FUSEDRNN_F32)
        run_forward_f32(p, &k->f32, &a, &ra, in, out);
    else
        run_forward_f64(p, &k->f64, &a, &ra, in, out);
    fp_leave(mode);
    return FUSEDRNN_OK;
}

fusedrnn_status fusedrnn_backward(const fusedrnn_problem *p, const fusedrnn_inputs *in,
                                  const fusedrnn_grad_inputs *gin, const fusedrnn_grads *grads,
                                  void *workspace, size_t workspace_bytes)
{
    arena a = {0}, ra = {0};
    if (!in || !gin || !grads)
        return FUSEDRNN_EINVAL;
    fusedrnn_status st = prepare(p, in->lengths, 1, gin->reserve, workspace, workspace_bytes,
                                 &a, &ra);
    if (st != FUSEDRNN_OK)
        return st;
    if (nothing_recurs(p)) {   /* every gradient is a sum over no terms */
        const int64_t GH = CELLS[p->cell].gates * p->H;
        zero_fill(grads->dx, p->T * p->B * p->D, p->dtype);
        zero_fill(grads->dh0, p->B * p->H, p->dtype);
        if (CELLS[p->cell].has_c)
            zero_fill(grads->dc0, p->B * p->H, p->dtype);
        zero_fill(grads->dw_ih, GH * p->D, p->dtype);
        zero_fill(grads->dw_hh, GH * p->H, p->dtype);
        zero_fill(grads->db_ih, GH, p->dtype);
        zero_fill(grads->db_hh, GH, p->dtype);
        return FUSEDRNN_OK;
    }
    const isa_kernels *k = fusedrnn_active_kernels();
    fp_mode mode = fp_enter();
    if (p->dtype == FUSEDRNN_F32)
        run_backward_f32(p, &k->f32, &a, &ra, in, gin, grads);
    else
        run_backward_f64(p, &k->f64, &a, &ra, in, gin, grads);
    fp_leave(mode);
    return FUSEDRNN_OK;
}
