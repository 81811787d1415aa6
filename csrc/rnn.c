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
 * thread's share must outweigh the cost of waking it and of the barriers),
 * at most the call's allowance. */
static int threads_for(const fusedrnn_problem *p, double work, double grain)
{
    double shares = work / grain;
    int n = team_size(p);
    return shares >= n ? n : shares < 2 ? 1 : (int)shares;
}

/* Every GEMM a call issues, by name. The workspace is sized from this table
 * and the drivers take each product's M, N, K from it, so that a slab can
 * never be smaller than a product that packs into it. */
typedef enum {
    GEMM_INPUT,    /* forward:  y = x W_ih^T + b      [T*B,H] x [H,D]^T */
    GEMM_DW_IH,    /* backward: dW_ih = dz^T x        [H,T*B] x [T*B,D] */
    GEMM_DX,       /*           dx = dz W_ih          [T*B,H] x [H,D] */
    GEMM_DH0,      /*           dh0 = g W_hh          [B,H] x [H,H] */
    GEMM_DW_HH0,   /*           dW_hh = g^T h0        [H,B] x [B,H] */
    GEMM_DW_HH,    /*           dW_hh += dz^T y, y shifted by one step's rows */
    GEMM_COUNT
} gemm_id;

typedef struct {
    int64_t M, N, K;
    int a_transposed;   /* A is read down its columns: copied into rows, one block at a time */
} gemm_dims;

static gemm_dims dims_of(const fusedrnn_problem *p, gemm_id id)
{
    const int64_t TB = p->T * p->B, shift = layout_of(p).t_rows;
    switch (id) {
    case GEMM_INPUT:  return (gemm_dims){TB, p->H, p->D, 0};
    case GEMM_DW_IH:  return (gemm_dims){p->H, p->D, TB, 1};
    case GEMM_DX:     return (gemm_dims){TB, p->D, p->H, 0};
    case GEMM_DH0:    return (gemm_dims){p->B, p->H, p->H, 0};
    case GEMM_DW_HH0: return (gemm_dims){p->H, p->H, p->B, 1};
    case GEMM_DW_HH:  return (gemm_dims){p->H, p->H, TB > shift ? TB - shift : 0, 1};
    case GEMM_COUNT:  break;
    }
    return (gemm_dims){0, 0, 0, 0};
}

static int gemm_in_pass(gemm_id id, int backward)
{
    return backward ? id != GEMM_INPUT : id == GEMM_INPUT;
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
    int64_t tb, n;
    if (!p || (p->dtype != FUSEDRNN_F32 && p->dtype != FUSEDRNN_F64))
        return FUSEDRNN_EINVAL;
    if (p->T < 0 || p->B < 0 || p->D < 0 || p->H < 0)
        return FUSEDRNN_EINVAL;
    if (p->act != FUSEDRNN_TANH && p->act != FUSEDRNN_RELU && p->act != FUSEDRNN_SIGMOID)
        return FUSEDRNN_EINVAL;
    /* Every element index the drivers form must fit in int64_t. */
    if (__builtin_mul_overflow(p->T, p->B, &tb) || __builtin_mul_overflow(tb, p->D, &n) ||
        __builtin_mul_overflow(tb, p->H, &n) || __builtin_mul_overflow(p->H, p->D, &n) ||
        __builtin_mul_overflow(p->H, p->H, &n))
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

static void zero_fill(void *buf, int64_t count, fusedrnn_dtype dtype)
{
    if (count > 0)  /* memset(NULL, 0, 0) is undefined */
        memset(buf, 0, (size_t)count * (dtype == FUSEDRNN_F32 ? sizeof(float) : sizeof(double)));
}

/* The workspace layout, measured (base == NULL) or laid over a buffer. */
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
    /* + 64: room to align an arbitrary caller pointer */
    return a.overflow || a.used > SIZE_MAX - 64 ? 0 : a.used + 64;
}

size_t fusedrnn_forward_workspace(const fusedrnn_problem *p) { return workspace_size(p, 0); }
size_t fusedrnn_backward_workspace(const fusedrnn_problem *p) { return workspace_size(p, 1); }

static fusedrnn_status prepare(const fusedrnn_problem *p, const int64_t *lengths, int backward,
                               void *workspace, size_t workspace_bytes, arena *a)
{
    fusedrnn_status st = check_problem(p);
    if (st == FUSEDRNN_OK)
        st = check_lengths(p, lengths);
    if (st != FUSEDRNN_OK)
        return st;
    size_t need = workspace_size(p, backward);
    if (need == 0)
        return FUSEDRNN_EOVERFLOW;
    if (!workspace || workspace_bytes < need)
        return FUSEDRNN_EWORKSPACE;
    a->base = (char *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63);
    return FUSEDRNN_OK;
}

fusedrnn_status fusedrnn_forward(const fusedrnn_problem *p,
                                 const void *x, const void *h0,
                                 const void *w_ih, const void *w_hh, const void *bias,
                                 const int64_t *lengths,
                                 void *FUSEDRNN_RESTRICT y, void *FUSEDRNN_RESTRICT h_n,
                                 void *workspace, size_t workspace_bytes)
{
    arena a = {0};
    fusedrnn_status st = prepare(p, lengths, 0, workspace, workspace_bytes, &a);
    if (st != FUSEDRNN_OK || nothing_recurs(p))   /* y and h_n are empty */
        return st;
    const isa_kernels *k = fusedrnn_active_kernels();
    fp_mode mode = fp_enter();
    if (p->dtype == FUSEDRNN_F32) {
        work_f32 w = carve_f32(&a, p, 0);
        forward_f32(&(run_f32){.p = p, .u = &k->f32, .w = &w, .x = x, .h0 = h0, .w_ih = w_ih,
                                .w_hh = w_hh, .bias = bias, .lengths = lengths, .y = y, .h_n = h_n});
    } else {
        work_f64 w = carve_f64(&a, p, 0);
        forward_f64(&(run_f64){.p = p, .u = &k->f64, .w = &w, .x = x, .h0 = h0, .w_ih = w_ih,
                                .w_hh = w_hh, .bias = bias, .lengths = lengths, .y = y, .h_n = h_n});
    }
    fp_leave(mode);
    return FUSEDRNN_OK;
}

fusedrnn_status fusedrnn_backward(const fusedrnn_problem *p,
                                  const void *x, const void *h0,
                                  const void *w_ih, const void *w_hh,
                                  const int64_t *lengths,
                                  const void *y, const void *dy, const void *dh_n,
                                  void *FUSEDRNN_RESTRICT dx, void *FUSEDRNN_RESTRICT dh0,
                                  void *FUSEDRNN_RESTRICT dw_ih, void *FUSEDRNN_RESTRICT dw_hh,
                                  void *FUSEDRNN_RESTRICT dbias,
                                  void *workspace, size_t workspace_bytes)
{
    arena a = {0};
    fusedrnn_status st = prepare(p, lengths, 1, workspace, workspace_bytes, &a);
    if (st != FUSEDRNN_OK)
        return st;
    if (nothing_recurs(p)) {   /* every gradient is a sum over no terms */
        zero_fill(dx, p->T * p->B * p->D, p->dtype);
        zero_fill(dh0, p->B * p->H, p->dtype);
        zero_fill(dw_ih, p->H * p->D, p->dtype);
        zero_fill(dw_hh, p->H * p->H, p->dtype);
        zero_fill(dbias, p->H, p->dtype);
        return FUSEDRNN_OK;
    }
    const isa_kernels *k = fusedrnn_active_kernels();
    fp_mode mode = fp_enter();
    /* y is an input here: the run's y is read only. */
    if (p->dtype == FUSEDRNN_F32) {
        work_f32 w = carve_f32(&a, p, 1);
        backward_f32(&(run_f32){.p = p, .u = &k->f32, .w = &w, .backward = 1, .x = x, .h0 = h0,
                                 .w_ih = w_ih, .w_hh = w_hh, .dy = dy, .dh_n = dh_n,
                                 .lengths = lengths, .y = (float *)y, .dx = dx, .dh0 = dh0,
                                 .dw_ih = dw_ih, .dw_hh = dw_hh, .dbias = dbias});
    } else {
        work_f64 w = carve_f64(&a, p, 1);
        backward_f64(&(run_f64){.p = p, .u = &k->f64, .w = &w, .backward = 1, .x = x, .h0 = h0,
                                 .w_ih = w_ih, .w_hh = w_hh, .dy = dy, .dh_n = dh_n,
                                 .lengths = lengths, .y = (double *)y, .dx = dx, .dh0 = dh0,
                                 .dw_ih = dw_ih, .dw_hh = dw_hh, .dbias = dbias});
    }
    fp_leave(mode);
    return FUSEDRNN_OK;
}
