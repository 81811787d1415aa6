/* The drivers over bfloat16 storage, computing in float32.
 *
 * Every bf16 value is exactly a float32 one, so a call widens what it reads
 * into float32 copies in its workspace, runs a float32 driver on them, and
 * rounds what that writes back to bf16, once, to nearest even: the
 * recurrence, the state carried between steps, the reserve and the weight
 * gradients' sums stay float32 throughout (docs/design.md, "bfloat16").
 * The driver is the bf16-products one (rnn_bf16_dot.c) on a table that has
 * them (AVX512_BF16's dot product): its products round their A operands
 * (h_{t-1}, the gate gradients) to bf16 as they read them; else it is the
 * float32 driver, whose results are those of the float32 kernels on the
 * same (bf16) values, rounded.
 *
 * The reserve is the float32 driver's own (float32 elements), followed by y
 * as float32 (T*B*H values in y's layout): a gated cell's backward reads
 * h_{t-1} from y, and the rounded bf16 y would make the weight gradient
 * dW_hh = sum_t dgates_t h_{t-1}^T carry a rounding per step, an error that
 * grows with T (the GRU's reached 2e-2 of its scale at T = 50, against 3e-3
 * from y read unrounded). A pack is the float32 driver's pack of the widened
 * weights, its key naming bf16. */
#include <string.h>

#include "problem.h"

typedef uint16_t bf16;

static float widen1(bf16 v)
{
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round to nearest even; a NaN stays a (quiet) NaN rather than rounding
 * into an infinity, as the carry into the exponent would make it. */
static bf16 narrow1(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (bf16)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (bf16)(u >> 16);
}

/* Widen n values of src into dst; NULL (zeros, or an absent argument) stays NULL. */
static const float *widen(float *dst, const void *src, int64_t n)
{
    if (!src)
        return NULL;
    const bf16 *s = src;
    for (int64_t i = 0; i < n; i++)
        dst[i] = widen1(s[i]);
    return dst;
}

static void narrow(void *dst, const float *src, int64_t n)
{
    bf16 *d = dst;
    if (d)
        for (int64_t i = 0; i < n; i++)
            d[i] = narrow1(src[i]);
}

static fusedrnn_problem as_f32(const fusedrnn_problem *p)
{
    fusedrnn_problem q = *p;
    q.dtype = FUSEDRNN_F32;
    return q;
}

/* The driver a call on table k runs (both lay out the same reserve). */
static const storage_driver *inner(const isa_kernels *k)
{
    return k->bf16.step ? &driver_bf16_dot : &driver_f32;
}

/* The float32 copies a pass works on, by the buffer of the call each stands
 * for: the inputs (weights only when no pack holds them), then the forward's
 * outputs, or the backward's gradient inputs and gradients. */
typedef struct {
    float *x, *h0, *c0, *w_ih, *w_hh, *b_ih, *b_hh;
    float *y, *h_n, *c_n;                          /* forward; backward: y */
    float *dy, *dh_n, *dc_n;                       /* backward */
    float *dx, *dh0, *dc0, *dw_ih, *dw_hh, *db_ih, *db_hh;
} staged;

typedef struct {
    int64_t seq_x, seq_y, state, w_ih, w_hh, bias;   /* element counts */
} sizes;

static sizes sizes_of(const fusedrnn_problem *p)
{
    const cell_desc *c = &cell_table[p->cell];
    const int64_t GH = c->info.gates * p->H, TB = p->T * p->B;
    return (sizes){TB * p->D, TB * p->H, p->B * p->H, GH * p->D, GH * p->H, GH};
}

/* The copies first, then the float32 driver's workspace: measured (base
 * NULL) or laid over a buffer, as the drivers' own carving is. */
static staged carve(arena *a, const fusedrnn_problem *p, int backward)
{
    const sizes n = sizes_of(p);
    const int has_c = cell_table[p->cell].info.has_c;
    staged s = {0};
    s.x = arena_take(a, (size_t)n.seq_x, sizeof(float));
    s.h0 = arena_take(a, (size_t)n.state, sizeof(float));
    s.c0 = has_c ? arena_take(a, (size_t)n.state, sizeof(float)) : NULL;
    s.w_ih = arena_take(a, (size_t)n.w_ih, sizeof(float));
    s.w_hh = arena_take(a, (size_t)n.w_hh, sizeof(float));
    s.b_ih = arena_take(a, (size_t)n.bias, sizeof(float));
    s.b_hh = arena_take(a, (size_t)n.bias, sizeof(float));
    s.y = arena_take(a, (size_t)n.seq_y, sizeof(float));
    if (!backward) {
        s.h_n = arena_take(a, (size_t)n.state, sizeof(float));
        s.c_n = has_c ? arena_take(a, (size_t)n.state, sizeof(float)) : NULL;
        return s;
    }
    s.dy = arena_take(a, (size_t)n.seq_y, sizeof(float));
    s.dh_n = arena_take(a, (size_t)n.state, sizeof(float));
    s.dc_n = has_c ? arena_take(a, (size_t)n.state, sizeof(float)) : NULL;
    s.dx = arena_take(a, (size_t)n.seq_x, sizeof(float));
    s.dh0 = arena_take(a, (size_t)n.state, sizeof(float));
    s.dc0 = has_c ? arena_take(a, (size_t)n.state, sizeof(float)) : NULL;
    s.dw_ih = arena_take(a, (size_t)n.w_ih, sizeof(float));
    s.dw_hh = arena_take(a, (size_t)n.w_hh, sizeof(float));
    s.db_ih = arena_take(a, (size_t)n.bias, sizeof(float));
    s.db_hh = arena_take(a, (size_t)n.bias, sizeof(float));
    return s;
}

/* The inner driver's workspace: either driver's, the size holding whichever
 * table runs the call; 0 on an overflow. */
static size_t inner_workspace(const fusedrnn_problem *p, int backward)
{
    fusedrnn_problem q = as_f32(p);
    size_t f32 = driver_f32.workspace(&q, backward);
    size_t dot = driver_bf16_dot.workspace(&q, backward);
    return f32 == 0 || dot == 0 ? 0 : f32 > dot ? f32 : dot;
}

static size_t workspace_bytes(const fusedrnn_problem *p, int backward)
{
    size_t inner = inner_workspace(p, backward);
    arena a = {0};
    carve(&a, p, backward);
    if (inner == 0 || a.overflow || __builtin_add_overflow(a.used, inner, &a.used) ||
        a.used > SIZE_MAX - 64)
        return 0;
    return a.used + 64;   /* room to align an arbitrary caller pointer */
}

/* The inner driver's reserve (both lay out the same); -1 on an overflow. */
static int64_t inner_reserve_bytes(const fusedrnn_problem *p)
{
    fusedrnn_problem q = as_f32(p);
    return driver_f32.reserve_bytes(&q);
}

static int64_t reserve_bytes(const fusedrnn_problem *p)
{
    int64_t inner = inner_reserve_bytes(p), bytes;
    if (inner <= 0)   /* none (the RNN, an empty problem), or an overflow */
        return inner;
    if (__builtin_mul_overflow(sizes_of(p).seq_y, (int64_t)sizeof(float), &bytes) ||
        __builtin_add_overflow(inner, bytes, &bytes))
        return -1;
    return bytes;
}

/* y's float32 rows in a reserve (past the float32 driver's part), where a
 * pass keeps or reads one and the caller gave it; else NULL. */
static float *reserve_y(const fusedrnn_problem *p, int backward, const void *reserve)
{
    if (!reserve || !uses_reserve(p, backward))
        return NULL;
    return (float *)((char *)reserve + inner_reserve_bytes(p));
}

/* The copies laid over the caller's workspace, and what is left of it for
 * the float32 driver (which aligns its own start). */
static fusedrnn_status lay_out(const fusedrnn_problem *p, int backward, void *workspace,
                               size_t bytes, staged *s, void **rest, size_t *rest_bytes)
{
    if (!workspace || bytes < workspace_bytes(p, backward))
        return FUSEDRNN_EWORKSPACE;
    char *base = (char *)(((uintptr_t)workspace + 63) & ~(uintptr_t)63);
    arena a = {base, 0, 0};
    *s = carve(&a, p, backward);
    *rest = base + a.used;
    *rest_bytes = bytes - (size_t)(base - (char *)workspace) - a.used;
    return FUSEDRNN_OK;
}

/* The inputs as float32: a pack holds the weights and biases, and the
 * float32 driver then reads them from it alone. */
static fusedrnn_inputs widen_inputs(const fusedrnn_problem *p, const fusedrnn_inputs *in,
                                    const staged *s)
{
    const sizes n = sizes_of(p);
    const int packed = in->packed != NULL;
    return (fusedrnn_inputs){
        .x = widen(s->x, in->x, n.seq_x), .h0 = widen(s->h0, in->h0, n.state),
        .c0 = s->c0 ? widen(s->c0, in->c0, n.state) : NULL,
        .w_ih = packed ? NULL : widen(s->w_ih, in->w_ih, n.w_ih),
        .w_hh = packed ? NULL : widen(s->w_hh, in->w_hh, n.w_hh),
        .b_ih = packed ? NULL : widen(s->b_ih, in->b_ih, n.bias),
        .b_hh = packed ? NULL : widen(s->b_hh, in->b_hh, n.bias),
        .lengths = in->lengths, .resets = in->resets, .packed = in->packed};
}

static fusedrnn_status forward_call(const fusedrnn_problem *p, const isa_kernels *k,
                                    const fusedrnn_inputs *in, const fusedrnn_outputs *out,
                                    void *workspace, size_t bytes)
{
    staged s;
    void *rest;
    size_t rest_bytes;
    fusedrnn_status st = lay_out(p, 0, workspace, bytes, &s, &rest, &rest_bytes);
    if (st != FUSEDRNN_OK)
        return st;
    const fusedrnn_problem q = as_f32(p);
    const sizes n = sizes_of(p);
    fusedrnn_inputs in32 = widen_inputs(p, in, &s);
    /* a training forward writes y's float32 rows into the reserve, for the backward */
    float *y32 = reserve_y(p, 0, out->reserve);
    if (!y32)
        y32 = s.y;
    fusedrnn_outputs out32 = {y32, s.h_n, s.c_n, out->reserve};
    st = inner(k)->forward(&q, k, &in32, &out32, rest, rest_bytes);
    if (st != FUSEDRNN_OK)
        return st;
    narrow(out->y, y32, n.seq_y);
    if (out->h_n)
        narrow(out->h_n, s.h_n, n.state);
    if (s.c_n)
        narrow(out->c_n, s.c_n, n.state);
    return FUSEDRNN_OK;
}

static fusedrnn_status backward_call(const fusedrnn_problem *p, const isa_kernels *k,
                                     const fusedrnn_inputs *in, const fusedrnn_grad_inputs *gin,
                                     const fusedrnn_grads *g, void *workspace, size_t bytes)
{
    staged s;
    void *rest;
    size_t rest_bytes;
    fusedrnn_status st = lay_out(p, 1, workspace, bytes, &s, &rest, &rest_bytes);
    if (st != FUSEDRNN_OK)
        return st;
    const fusedrnn_problem q = as_f32(p);
    const sizes n = sizes_of(p);
    fusedrnn_inputs in32 = widen_inputs(p, in, &s);
    /* a gated cell's y as its forward computed it, from the reserve; the
     * RNN's is the bf16 y (it has no reserve), as its act' is taken from */
    const float *y32 = reserve_y(p, 1, gin->reserve);
    fusedrnn_grad_inputs gin32 = {
        .y = y32 ? y32 : widen(s.y, gin->y, n.seq_y), .reserve = gin->reserve,
        .dy = widen(s.dy, gin->dy, n.seq_y), .dh_n = widen(s.dh_n, gin->dh_n, n.state),
        .dc_n = s.dc_n ? widen(s.dc_n, gin->dc_n, n.state) : NULL};
    /* what the caller may leave out (dx, dw_ih, dw_hh, db_hh) only when it
     * asks for it, as the float32 driver computes it */
    fusedrnn_grads g32 = {g->dx ? s.dx : NULL, s.dh0, s.dc0, g->dw_ih ? s.dw_ih : NULL,
                          g->dw_hh ? s.dw_hh : NULL, s.db_ih, g->db_hh ? s.db_hh : NULL};
    st = inner(k)->backward(&q, k, &in32, &gin32, &g32, rest, rest_bytes);
    if (st != FUSEDRNN_OK)
        return st;
    narrow(g->dx, s.dx, n.seq_x);
    narrow(g->dh0, s.dh0, n.state);
    if (s.dc0)
        narrow(g->dc0, s.dc0, n.state);
    narrow(g->dw_ih, s.dw_ih, n.w_ih);
    narrow(g->dw_hh, s.dw_hh, n.w_hh);
    narrow(g->db_ih, s.db_ih, n.bias);
    narrow(g->db_hh, s.db_hh, n.bias);
    return FUSEDRNN_OK;
}

/* A pack: the inner driver's pack, then the widened weights it was made
 * from (the pack needs room for them, and the kernel allocates nothing). */
typedef struct {
    size_t inner;                   /* the inner driver's pack's bytes */
    float *w_ih, *w_hh, *b_ih, *b_hh;
} pack_tail;

static pack_tail carve_pack(arena *a, const fusedrnn_problem *p, const isa_kernels *k)
{
    const fusedrnn_problem q = as_f32(p);
    const sizes n = sizes_of(p);
    pack_tail t = {inner(k)->packed_bytes(&q, k), 0, 0, 0, 0};
    if (t.inner == 0)
        a->overflow = 1;
    arena_take(a, t.inner, 1);
    t.w_ih = arena_take(a, (size_t)n.w_ih, sizeof(float));
    t.w_hh = arena_take(a, (size_t)n.w_hh, sizeof(float));
    t.b_ih = arena_take(a, (size_t)n.bias, sizeof(float));
    t.b_hh = arena_take(a, (size_t)n.bias, sizeof(float));
    return t;
}

static size_t packed_bytes(const fusedrnn_problem *p, const isa_kernels *k)
{
    arena a = {0};
    carve_pack(&a, p, k);
    return a.overflow ? 0 : a.used;
}

static void pack_call(const fusedrnn_problem *p, const isa_kernels *k,
                      const fusedrnn_inputs *weights, void *packed)
{
    const fusedrnn_problem q = as_f32(p);
    const sizes n = sizes_of(p);
    arena a = {packed, 0, 0};
    pack_tail t = carve_pack(&a, p, k);
    fusedrnn_inputs w32 = {.w_ih = widen(t.w_ih, weights->w_ih, n.w_ih),
                           .w_hh = widen(t.w_hh, weights->w_hh, n.w_hh),
                           .b_ih = widen(t.b_ih, weights->b_ih, n.bias),
                           .b_hh = widen(t.b_hh, weights->b_hh, n.bias)};
    /* writes from the start: the inner pack's bytes, its key first */
    inner(k)->pack(&q, k, &w32, packed);
    pack_key key = pack_key_of(p, k);
    memcpy(packed, &key, sizeof key);
}

const storage_driver driver_bf16 = {sizeof(bf16), workspace_bytes, reserve_bytes,
                                    forward_call, backward_call,
                                    packed_bytes, pack_call};


/* float32 storage with bf16 products (FUSEDRNN_F32_BF16): the same inner
 * driver on the caller's own buffers, nothing staged. Its pack is the inner
 * driver's under a key naming FUSEDRNN_F32_BF16, so that a float32 call,
 * whose panels differ, refuses it. */
static fusedrnn_status mixed_forward(const fusedrnn_problem *p, const isa_kernels *k,
                                     const fusedrnn_inputs *in, const fusedrnn_outputs *out,
                                     void *workspace, size_t bytes)
{
    fusedrnn_problem q = as_f32(p);
    if (!workspace || bytes < inner_workspace(p, 0))
        return FUSEDRNN_EWORKSPACE;
    return inner(k)->forward(&q, k, in, out, workspace, bytes);
}

static fusedrnn_status mixed_backward(const fusedrnn_problem *p, const isa_kernels *k,
                                      const fusedrnn_inputs *in, const fusedrnn_grad_inputs *gin,
                                      const fusedrnn_grads *g, void *workspace, size_t bytes)
{
    fusedrnn_problem q = as_f32(p);
    if (!workspace || bytes < inner_workspace(p, 1))
        return FUSEDRNN_EWORKSPACE;
    return inner(k)->backward(&q, k, in, gin, g, workspace, bytes);
}

static size_t mixed_packed_bytes(const fusedrnn_problem *p, const isa_kernels *k)
{
    fusedrnn_problem q = as_f32(p);
    return inner(k)->packed_bytes(&q, k);
}

static void mixed_pack(const fusedrnn_problem *p, const isa_kernels *k,
                       const fusedrnn_inputs *weights, void *packed)
{
    fusedrnn_problem q = as_f32(p);
    inner(k)->pack(&q, k, weights, packed);
    pack_key key = pack_key_of(p, k);
    memcpy(packed, &key, sizeof key);
}

const storage_driver driver_f32_bf16 = {sizeof(float), inner_workspace, inner_reserve_bytes,
                                        mixed_forward, mixed_backward,
                                        mixed_packed_bytes, mixed_pack};
