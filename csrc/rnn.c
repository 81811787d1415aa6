/* Public entry points: validate once, pick the storage type's driver, run it
 * with denormals flushed. */
#include <stdint.h>
#include <string.h>

#include "problem.h"

const cell_desc cell_table[FUSEDRNN_CELL_COUNT] = {
    [FUSEDRNN_RNN] = {.info = {"RNN", .gates = 1, .has_act = 1}, .fused = 1, .phases = 1,
                      .forward = {{0, 1}}, .backward = {{0, 1}}},
    [FUSEDRNN_LSTM] = {.info = {"LSTM", .gates = 4, .has_c = 1, .reserve_rows = 5},
                       .phases = 1,
                       .forward = {{0, 4, LSTM_FORWARD}}, .backward = {{0, 4, LSTM_BACKWARD}}},
    [FUSEDRNN_GRU] = {.info = {"GRU", .gates = 3, .reserve_rows = 4, .bias_grads_differ = 1},
                      .split = 1, .phases = 1,
                      .forward = {{0, 3, GRU_FORWARD}}, .backward = {{0, 3, GRU_BACKWARD}}},
    /* r h_{t-1} before the product with W_hn: each step's products in two
     * phases, r and z's, then n's on the state rows (r h); backward, dh from
     * r and z's gradients, then d(r h) from n's */
    [FUSEDRNN_GRU_RESET_FIRST] = {.info = {"GRU (linear_before_reset=False)", .gates = 3,
                                           .reserve_rows = 4},
                                  .phases = 2,
                                  .forward = {{0, 2, GRU_RF_FORWARD_RZ},
                                              {2, 1, GRU_RF_FORWARD_N}},
                                  .backward = {{0, 2, GRU_RF_BACKWARD_ZN},
                                               {2, 1, GRU_RF_BACKWARD_R}}},
};

static int known_cell(fusedrnn_cell cell)
{
    return (unsigned)cell < FUSEDRNN_CELL_COUNT;
}

int fusedrnn_gates(fusedrnn_cell cell) { return known_cell(cell) ? cell_table[cell].info.gates : 0; }

const fusedrnn_cell_info *fusedrnn_cell_describe(fusedrnn_cell cell)
{
    return known_cell(cell) ? &cell_table[cell].info : NULL;
}

static fusedrnn_status check_problem(const fusedrnn_problem *p)
{
    int64_t tb, n, gh;
    if (!p || (p->dtype != FUSEDRNN_F32 && p->dtype != FUSEDRNN_F64 && p->dtype != FUSEDRNN_BF16 &&
               p->dtype != FUSEDRNN_F32_BF16) || !known_cell(p->cell))
        return FUSEDRNN_EINVAL;
    if (p->T < 0 || p->B < 0 || p->D < 0 || p->H < 0)
        return FUSEDRNN_EINVAL;
    if (cell_table[p->cell].info.has_act && p->act != FUSEDRNN_TANH &&
        p->act != FUSEDRNN_RELU && p->act != FUSEDRNN_SIGMOID)
        return FUSEDRNN_EINVAL;
    /* Every element index the drivers form must fit in int64_t. */
    if (__builtin_mul_overflow(p->H, (int64_t)cell_table[p->cell].info.gates, &gh) ||
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

static const storage_driver *driver_of(const fusedrnn_problem *p)
{
    return p->dtype == FUSEDRNN_F32 ? &driver_f32
         : p->dtype == FUSEDRNN_F64 ? &driver_f64
         : p->dtype == FUSEDRNN_BF16 ? &driver_bf16 : &driver_f32_bf16;
}

size_t fusedrnn_forward_workspace(const fusedrnn_problem *p)
{
    return check_problem(p) == FUSEDRNN_OK ? driver_of(p)->workspace(p, 0) : 0;
}

size_t fusedrnn_backward_workspace(const fusedrnn_problem *p)
{
    return check_problem(p) == FUSEDRNN_OK ? driver_of(p)->workspace(p, 1) : 0;
}

size_t fusedrnn_reserve_size(const fusedrnn_problem *p)
{
    if (check_problem(p) != FUSEDRNN_OK || cell_table[p->cell].fused)
        return 0;
    int64_t bytes = driver_of(p)->reserve_bytes(p);
    return bytes < 0 ? 0 : (size_t)bytes;
}

/* What every call checks first: the problem, the lengths, and, when
 * nothing recurs (the drivers do not run), the workspace the query asks
 * for then. */
static fusedrnn_status check_call(const fusedrnn_problem *p, const int64_t *lengths,
                                  int backward, const void *workspace, size_t workspace_bytes)
{
    fusedrnn_status st = check_problem(p);
    if (st == FUSEDRNN_OK)
        st = check_lengths(p, lengths);
    if (st == FUSEDRNN_OK && nothing_recurs(p) &&
        (!workspace || workspace_bytes < driver_of(p)->workspace(p, backward)))
        st = FUSEDRNN_EWORKSPACE;
    return st;
}

static void zero_fill(void *buf, int64_t count, size_t elem_size)
{
    if (buf && count > 0)  /* memset(NULL, 0, 0) is undefined */
        memset(buf, 0, (size_t)count * elem_size);
}

size_t fusedrnn_packed_size(const fusedrnn_problem *p)
{
    if (check_problem(p) != FUSEDRNN_OK)
        return 0;
    return driver_of(p)->packed_bytes(p, fusedrnn_active_kernels());
}

fusedrnn_status fusedrnn_pack(const fusedrnn_problem *p, const void *w_ih, const void *w_hh,
                              const void *b_ih, const void *b_hh, void *packed, size_t bytes)
{
    fusedrnn_status st = check_problem(p);
    if (st != FUSEDRNN_OK)
        return st;
    const isa_kernels *k = fusedrnn_active_kernels();   /* once: the table it is packed for */
    const int64_t GH = cell_table[p->cell].info.gates * p->H;
    size_t size = driver_of(p)->packed_bytes(p, k);
    if (size == 0)
        return FUSEDRNN_EOVERFLOW;
    if (!packed || bytes < size)
        return FUSEDRNN_EWORKSPACE;
    if ((!w_ih && GH * p->D > 0) || (!w_hh && GH * p->H > 0))
        return FUSEDRNN_EINVAL;
    /* the forward's mode: b_ih + b_hh is summed as a forward would */
    fp_mode mode = fp_enter();
    driver_of(p)->pack(p, k, &(fusedrnn_inputs){.w_ih = w_ih, .w_hh = w_hh, .b_ih = b_ih,
                                                .b_hh = b_hh}, packed);
    fp_leave(mode);
    return FUSEDRNN_OK;
}

/* A pack given to a forward or backward must have been made for its ISA
 * (the table `k` the call runs) and the problem's cell, dtype, D and H. */
static fusedrnn_status check_pack(const fusedrnn_problem *p, const isa_kernels *k,
                                  const void *packed)
{
    pack_key key = pack_key_of(p, k);
    return !packed || memcmp(packed, &key, sizeof key) == 0 ? FUSEDRNN_OK : FUSEDRNN_EPACKED;
}

fusedrnn_status fusedrnn_forward(const fusedrnn_problem *p, const fusedrnn_inputs *in,
                                 const fusedrnn_outputs *out,
                                 void *workspace, size_t workspace_bytes)
{
    if (!in || !out)
        return FUSEDRNN_EINVAL;
    fusedrnn_status st = check_call(p, in->lengths, 0, workspace, workspace_bytes);
    const isa_kernels *k = fusedrnn_active_kernels();   /* once: the pack is checked against it */
    if (st == FUSEDRNN_OK)
        st = check_pack(p, k, in->packed);
    if (st != FUSEDRNN_OK || nothing_recurs(p))   /* y, h_n, c_n are empty */
        return st;
    fp_mode mode = fp_enter();
    st = driver_of(p)->forward(p, k, in, out, workspace, workspace_bytes);
    fp_leave(mode);
    return st;
}

fusedrnn_status fusedrnn_backward(const fusedrnn_problem *p, const fusedrnn_inputs *in,
                                  const fusedrnn_grad_inputs *gin, const fusedrnn_grads *grads,
                                  void *workspace, size_t workspace_bytes)
{
    if (!in || !gin || !grads)
        return FUSEDRNN_EINVAL;
    fusedrnn_status st = check_call(p, in->lengths, 1, workspace, workspace_bytes);
    const isa_kernels *k = fusedrnn_active_kernels();   /* once: the pack is checked against it */
    if (st == FUSEDRNN_OK)
        st = check_pack(p, k, in->packed);
    if (st != FUSEDRNN_OK)
        return st;
    if (nothing_recurs(p)) {   /* every gradient is a sum over no terms */
        const size_t e = driver_of(p)->elem_size;
        const int64_t GH = cell_table[p->cell].info.gates * p->H;
        zero_fill(grads->dx, p->T * p->B * p->D, e);
        zero_fill(grads->dh0, p->B * p->H, e);
        if (cell_table[p->cell].info.has_c)
            zero_fill(grads->dc0, p->B * p->H, e);
        zero_fill(grads->dw_ih, GH * p->D, e);
        zero_fill(grads->dw_hh, GH * p->H, e);
        zero_fill(grads->db_ih, GH, e);
        zero_fill(grads->db_hh, GH, e);
        return FUSEDRNN_OK;
    }
    fp_mode mode = fp_enter();
    st = driver_of(p)->backward(p, k, in, gin, grads, workspace, workspace_bytes);
    fp_leave(mode);
    return st;
}
