/* C-level test driver: the public header alone, no Python. Built by a plain
 * CMake configure (see .ci/sanitize) and run under valgrind memcheck and
 * under AddressSanitizer + UndefinedBehaviorSanitizer.
 *
 * Every buffer is malloc'ed at exactly its size, the workspaces and the
 * reserve at exactly the queried sizes, and outputs and the reserve are left
 * uninitialised: a read or write past any buffer, or an output element the
 * kernel forgot to write (the comparison below then branches on it), is
 * reported by the tools. For each cell (RNN, LSTM, GRU) the inference and
 * the training forward, and the backward from the training forward's
 * reserve, are compared with a naive double-precision forward and backward
 * written here. Exit status 0 when everything passed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusedrnn.h"
#include "internal.h"

static int failures;

#define CHECK(cond, ...)                                        \
    do {                                                        \
        if (!(cond)) {                                          \
            failures++;                                         \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                       \
            fputc('\n', stderr);                                \
        }                                                       \
    } while (0)

/* Deterministic values in [-1, 1). */
static double next_value(unsigned long long *state)
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*state >> 11) / (double)(1ULL << 52) - 1.0;
}

/* float32 buffers: FUSEDRNN_F32, and FUSEDRNN_F32_BF16 (bf16 products) */
static int f32_storage(const fusedrnn_problem *p)
{
    return p->dtype == FUSEDRNN_F32 || p->dtype == FUSEDRNN_F32_BF16;
}

static size_t elem_size(const fusedrnn_problem *p)
{
    return f32_storage(p) ? sizeof(float)
         : p->dtype == FUSEDRNN_F64 ? sizeof(double) : sizeof(uint16_t);
}

/* Where a byte copy of a pack is put past a malloc'ed address: the least
 * alignment a pack needs, its dtype's (4 for bf16, whose pack holds float32). */
static size_t pack_shift(const fusedrnn_problem *p)
{
    return p->dtype == FUSEDRNN_BF16 ? sizeof(float) : elem_size(p);
}

/* A buffer of n elements of the problem's dtype; malloc(0) may return NULL,
 * which the kernel must accept for an empty buffer. */
static void *alloc(const fusedrnn_problem *p, int64_t n)
{
    return malloc((size_t)n * elem_size(p));
}

/* bfloat16 is the top half of a float32's bits. Inputs are truncated to it
 * (any bf16 value is a valid input); the kernel's rounding is what is tested. */
static double get(const fusedrnn_problem *p, const void *a, int64_t i)
{
    if (p->dtype == FUSEDRNN_BF16) {
        uint32_t u = (uint32_t)((const uint16_t *)a)[i] << 16;
        float f;
        memcpy(&f, &u, sizeof f);
        return f;
    }
    return f32_storage(p) ? ((const float *)a)[i] : ((const double *)a)[i];
}

static void *random_buffer(const fusedrnn_problem *p, int64_t n, double scale,
                           unsigned long long *state)
{
    void *a = alloc(p, n);
    for (int64_t i = 0; i < n; i++) {
        double v = scale * next_value(state);
        float f = (float)v;
        uint32_t u;
        memcpy(&u, &f, sizeof u);
        if (p->dtype == FUSEDRNN_F32_BF16) {
            /* bf16 values, as bf16's: the products' rounding of x and the
             * weights is then exact, and bf16's tolerance holds */
            u &= 0xffff0000u;
            memcpy(&((float *)a)[i], &u, sizeof u);
        } else if (p->dtype == FUSEDRNN_F32)
            ((float *)a)[i] = f;
        else if (p->dtype == FUSEDRNN_F64)
            ((double *)a)[i] = v;
        else
            ((uint16_t *)a)[i] = (uint16_t)(u >> 16);
    }
    return a;
}

/* Row (t,b) of a sequence array in either layout. */
static int64_t row(const fusedrnn_problem *p, int64_t t, int64_t b)
{
    return p->batch_first ? b * p->T + t : t * p->B + b;
}

static double sigmoid(double z)
{
    return 1 / (1 + exp(-z));
}

static double act(fusedrnn_act a, double z)
{
    return a == FUSEDRNN_TANH ? tanh(z) : a == FUSEDRNN_RELU ? (z > 0 ? z : 0) : sigmoid(z);
}

static double act_grad(fusedrnn_act a, double y)
{
    return a == FUSEDRNN_TANH ? 1 - y * y : a == FUSEDRNN_RELU ? (y > 0) : y * (1 - y);
}

/* Sequence b's time at its s-th step. */
static int64_t time_at(const fusedrnn_problem *p, int64_t len, int64_t s)
{
    return p->reverse ? len - 1 - s : s;
}

/* Whether sequence b (of length len) restarts from h0 (c0) before its step
 * at time t, by the header's words: forwards the flag at t, in reverse the
 * flag at t + 1 (the piece ending at t starts afresh); never at a
 * sequence's first step. */
static int restarts_at(const fusedrnn_problem *p, const fusedrnn_inputs *in, int64_t len,
                       int64_t t, int64_t b)
{
    if (!in->resets)
        return 0;
    if (p->reverse)
        return t + 1 < len && in->resets[row(p, t + 1, b)];
    return t > 0 && in->resets[row(p, t, b)];
}

/* n zeroed doubles, never NULL (the naive side's buffers may be empty). */
static double *zeros(int64_t n)
{
    return calloc((size_t)n + 1, sizeof(double));
}

/* What the naive forward keeps of each valid step for its backward, by row
 * (t,b) of y's layout: the state the step started from, the activated gates
 * [G*H] and, as in the kernel's reserve, c_t (LSTM), W_hn h_{t-1} + b_hn
 * (GRU) or r h_{t-1} (GRU, reset first). */
typedef struct {
    double *h_prev, *c_prev, *gates, *extra;
} naive_record;

/* The naive forward in double, from the header's maths: y [rows,H], h_n and
 * c_n [B,H] (c_n zeros but for the LSTM), and the record. */
static void naive_forward(const fusedrnn_problem *p, const fusedrnn_inputs *in, double *y,
                          double *h_n, double *c_n, const naive_record *rec)
{
    const int64_t T = p->T, B = p->B, D = p->D, H = p->H, GH = fusedrnn_gates(p->cell) * H;
    double *h = zeros(H), *c = zeros(H), *gi = zeros(GH), *gh = zeros(GH);
    for (int64_t i = 0; i < T * B * H; i++)
        y[i] = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t len = in->lengths ? in->lengths[b] : T;
        for (int64_t j = 0; j < H; j++) {
            h[j] = in->h0 ? get(p, in->h0, b * H + j) : 0;
            c[j] = in->c0 ? get(p, in->c0, b * H + j) : 0;
        }
        for (int64_t s = 0; s < len; s++) {
            int64_t r = row(p, time_at(p, len, s), b);
            if (restarts_at(p, in, len, time_at(p, len, s), b))
                for (int64_t j = 0; j < H; j++) {
                    h[j] = in->h0 ? get(p, in->h0, b * H + j) : 0;
                    c[j] = in->c0 ? get(p, in->c0, b * H + j) : 0;
                }
            /* The input and recurrent sides apart: GRU's n gate scales the latter. */
            for (int64_t q = 0; q < GH; q++) {
                gi[q] = in->b_ih ? get(p, in->b_ih, q) : 0;
                for (int64_t d = 0; d < D; d++)
                    gi[q] += get(p, in->w_ih, q * D + d) * get(p, in->x, r * D + d);
                gh[q] = in->b_hh ? get(p, in->b_hh, q) : 0;
                for (int64_t k = 0; k < H; k++)
                    gh[q] += get(p, in->w_hh, q * H + k) * h[k];
            }
            memcpy(rec->h_prev + r * H, h, sizeof(double) * (size_t)H);
            memcpy(rec->c_prev + r * H, c, sizeof(double) * (size_t)H);
            double *a = rec->gates + r * GH, *e = rec->extra + r * H;
            if (p->cell == FUSEDRNN_GRU_RESET_FIRST) {   /* n's recurrent side reads r h */
                for (int64_t k = 0; k < H; k++)
                    e[k] = sigmoid(gi[k] + gh[k]) * h[k];
                for (int64_t q = 2 * H; q < GH; q++) {
                    gh[q] = in->b_hh ? get(p, in->b_hh, q) : 0;
                    for (int64_t k = 0; k < H; k++)
                        gh[q] += get(p, in->w_hh, q * H + k) * e[k];
                }
            }
            for (int64_t j = 0; j < H; j++) {
                switch (p->cell) {
                case FUSEDRNN_RNN:
                    h[j] = act(p->act, gi[j] + gh[j]);
                    break;
                case FUSEDRNN_LSTM:   /* i, f, g, o */
                    a[j] = sigmoid(gi[j] + gh[j]);
                    a[H + j] = sigmoid(gi[H + j] + gh[H + j]);
                    a[2 * H + j] = tanh(gi[2 * H + j] + gh[2 * H + j]);
                    a[3 * H + j] = sigmoid(gi[3 * H + j] + gh[3 * H + j]);
                    e[j] = c[j] = a[H + j] * c[j] + a[j] * a[2 * H + j];
                    h[j] = a[3 * H + j] * tanh(c[j]);
                    break;
                case FUSEDRNN_GRU:    /* r, z, n */
                    a[j] = sigmoid(gi[j] + gh[j]);
                    a[H + j] = sigmoid(gi[H + j] + gh[H + j]);
                    e[j] = gh[2 * H + j];
                    a[2 * H + j] = tanh(gi[2 * H + j] + a[j] * gh[2 * H + j]);
                    h[j] = (1 - a[H + j]) * a[2 * H + j] + a[H + j] * h[j];
                    break;
                case FUSEDRNN_GRU_RESET_FIRST:
                    a[j] = sigmoid(gi[j] + gh[j]);
                    a[H + j] = sigmoid(gi[H + j] + gh[H + j]);
                    a[2 * H + j] = tanh(gi[2 * H + j] + gh[2 * H + j]);
                    h[j] = (1 - a[H + j]) * a[2 * H + j] + a[H + j] * h[j];
                    break;
                }
                y[r * H + j] = h[j];
            }
        }
        memcpy(h_n + b * H, h, sizeof(double) * (size_t)H);
        memcpy(c_n + b * H, c, sizeof(double) * (size_t)H);
    }
    free(h);
    free(c);
    free(gi);
    free(gh);
}

/* The gradients, in the order the comparisons name them. */
enum { DX, DH0, DC0, DW_IH, DW_HH, DB_IH, DB_HH, GRADS };
static const char *const grad_names[GRADS] = {"dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih",
                                              "db_hh"};

/* The naive backward in double from the naive forward's record, except that
 * the RNN's derivative is taken at the kernel's own y (as the Python tests
 * do: relu's derivative at 0 depends on rounding). Gradients accumulate into
 * the zeroed buffers e[DX] ... e[DB_HH]. */
static void naive_backward(const fusedrnn_problem *p, const fusedrnn_inputs *in, const void *y,
                           const naive_record *rec, const void *dy, const void *dh_n,
                           const void *dc_n, double *const e[GRADS])
{
    const int64_t T = p->T, B = p->B, D = p->D, H = p->H, GH = fusedrnn_gates(p->cell) * H;
    double *dh = zeros(H), *dc = zeros(H), *dgi = zeros(GH), *dgh = zeros(GH);
    for (int64_t b = 0; b < B; b++) {
        /* what reached h0 and c0 at the restarts: they add to dh0 and dc0 */
        double *dh0 = e[DH0] + b * H, *dc0 = e[DC0] + b * H;
        int64_t len = in->lengths ? in->lengths[b] : T;
        for (int64_t j = 0; j < H; j++) {
            dh[j] = dh_n ? get(p, dh_n, b * H + j) : 0;
            dc[j] = dc_n ? get(p, dc_n, b * H + j) : 0;
        }
        for (int64_t s = len - 1; s >= 0; s--) {
            int64_t r = row(p, time_at(p, len, s), b);
            const double *a = rec->gates + r * GH, *ex = rec->extra + r * H;
            const double *hp = rec->h_prev + r * H, *cp = rec->c_prev + r * H;
            /* The pre-activation gradients of both sides, and in dh the part
             * of the previous h's gradient that bypasses W_hh. */
            for (int64_t j = 0; j < H; j++) {
                double g = (dy ? get(p, dy, r * H + j) : 0) + dh[j];
                switch (p->cell) {
                case FUSEDRNN_RNN:
                    dgi[j] = dgh[j] = g * act_grad(p->act, get(p, y, r * H + j));
                    dh[j] = 0;
                    break;
                case FUSEDRNN_LSTM: {
                    double i = a[j], f = a[H + j], gg = a[2 * H + j], o = a[3 * H + j];
                    double tc = tanh(ex[j]), dct = dc[j] + g * o * (1 - tc * tc);
                    dgi[j] = dct * gg * i * (1 - i);
                    dgi[H + j] = dct * cp[j] * f * (1 - f);
                    dgi[2 * H + j] = dct * i * (1 - gg * gg);
                    dgi[3 * H + j] = g * tc * o * (1 - o);
                    for (int q = 0; q < 4; q++)
                        dgh[q * H + j] = dgi[q * H + j];
                    dc[j] = dct * f;
                    dh[j] = 0;
                    break;
                }
                case FUSEDRNN_GRU: {
                    double rr = a[j], z = a[H + j], n = a[2 * H + j], dn = g * (1 - z) * (1 - n * n);
                    dgi[j] = dgh[j] = dn * ex[j] * rr * (1 - rr);
                    dgi[H + j] = dgh[H + j] = g * (hp[j] - n) * z * (1 - z);
                    dgi[2 * H + j] = dn;
                    dgh[2 * H + j] = dn * rr;
                    dh[j] = g * z;
                    break;
                }
                case FUSEDRNN_GRU_RESET_FIRST: {   /* r's gradient needs every dn: below */
                    double z = a[H + j], n = a[2 * H + j];
                    dgi[H + j] = dgh[H + j] = g * (hp[j] - n) * z * (1 - z);
                    dgi[2 * H + j] = dgh[2 * H + j] = g * (1 - z) * (1 - n * n);
                    dh[j] = g * z;
                    break;
                }
                }
            }
            /* The reset first: d(r h) = dn W_hn gives r's gradient and a path to h. */
            const int reset_first = p->cell == FUSEDRNN_GRU_RESET_FIRST;
            for (int64_t j = 0; reset_first && j < H; j++) {
                double drh = 0, rr = a[j];
                for (int64_t q = 0; q < H; q++)
                    drh += dgh[2 * H + q] * get(p, in->w_hh, (2 * H + q) * H + j);
                dgi[j] = dgh[j] = drh * hp[j] * rr * (1 - rr);
                dh[j] += drh * rr;
            }
            for (int64_t q = 0; q < GH; q++) {
                for (int64_t d = 0; d < D; d++) {
                    e[DX][r * D + d] += dgi[q] * get(p, in->w_ih, q * D + d);
                    e[DW_IH][q * D + d] += dgi[q] * get(p, in->x, r * D + d);
                }
                /* n's rows of W_hh multiplied r h, and reach h through r above */
                const int after_reset = reset_first && q >= 2 * H;
                for (int64_t k = 0; k < H; k++) {
                    e[DW_HH][q * H + k] += dgh[q] * (after_reset ? ex[k] : hp[k]);
                    if (!after_reset)
                        dh[k] += dgh[q] * get(p, in->w_hh, q * H + k);
                }
                e[DB_IH][q] += dgi[q];
                e[DB_HH][q] += dgh[q];
            }
            /* a restart: no gradient crosses to the previous piece's last step */
            if (restarts_at(p, in, len, time_at(p, len, s), b))
                for (int64_t j = 0; j < H; j++) {
                    dh0[j] += dh[j], dc0[j] += dc[j];
                    dh[j] = dc[j] = 0;
                }
        }
        for (int64_t j = 0; j < H; j++)
            dh0[j] += dh[j], dc0[j] += dc[j];
    }
    free(dh);
    free(dc);
    free(dgi);
    free(dgh);
}

/* Kernel output against the naive one: |a - e| <= tol (|e| + rms(e)), the
 * bound of tests/conftest.py. */
static void compare(const fusedrnn_problem *p, const char *what, const char *name,
                    const void *actual, const double *expected, int64_t n)
{
    /* bf16: one rounding of the float32 result (2^-8 relative), and of y, which
     * the RNN's backward takes its derivative from; bf16 products (F32_BF16):
     * their operands' roundings */
    double tol = p->dtype == FUSEDRNN_F32 ? 2e-4 : p->dtype == FUSEDRNN_F64 ? 1e-10 : 1e-2;
    double sq = 0;
    for (int64_t i = 0; i < n; i++)
        sq += expected[i] * expected[i];
    double rms = n ? sqrt(sq / (double)n) : 0;
    for (int64_t i = 0; i < n; i++) {
        double a = get(p, actual, i), err = fabs(a - expected[i]);
        if (!(err <= tol * (fabs(expected[i]) + rms))) {
            CHECK(0, "%s: %s[%lld] = %.17g, expected %.17g", what, name, (long long)i, a,
                  expected[i]);
            return;
        }
    }
}

/* One forward on fresh, uninitialised outputs, against the naive results
 * ey, eh, ec. Returns y, which the caller frees. */
static void *forward_case(const fusedrnn_problem *p, const char *case_name,
                          const fusedrnn_inputs *in, void *reserve, const double *ey,
                          const double *eh, const double *ec)
{
    const int64_t BH = p->B * p->H;
    const int lstm = p->cell == FUSEDRNN_LSTM;
    char what[240];
    snprintf(what, sizeof what, "%s %s forward", case_name, p->training ? "training" : "inference");
    /* c_n is unused but by the LSTM: NULL shows it untouched. */
    void *y = alloc(p, p->T * BH), *h_n = alloc(p, BH), *c_n = lstm ? alloc(p, BH) : NULL;
    size_t n = fusedrnn_forward_workspace(p);
    void *ws = malloc(n);   /* exactly the queried size: an overrun is the tools' to see */
    CHECK(n > 0, "%s: workspace query returned 0", what);
    fusedrnn_status st = fusedrnn_forward(
        p, in, &(fusedrnn_outputs){.y = y, .h_n = h_n, .c_n = c_n, .reserve = reserve}, ws, n);
    CHECK(st == FUSEDRNN_OK, "%s: status %d", what, (int)st);
    if (!p->training) {   /* without h_n, the same y; nothing else is written */
        void *y2 = alloc(p, p->T * BH);
        st = fusedrnn_forward(p, in, &(fusedrnn_outputs){.y = y2, .c_n = c_n}, ws, n);
        CHECK(st == FUSEDRNN_OK && memcmp(y, y2, elem_size(p) * (size_t)(p->T * BH)) == 0,
              "%s: y differs without h_n (status %d)", what, (int)st);
        free(y2);
    }
    free(ws);
    compare(p, what, "y", y, ey, p->T * BH);
    compare(p, what, "h_n", h_n, eh, BH);
    if (lstm)
        compare(p, what, "c_n", c_n, ec, BH);
    free(h_n);
    free(c_n);
    return y;
}

/* A backward into got[DX] ... got[DB_HH] (NULL: not written), with a
 * workspace of the size its query gives, which must succeed. */
static void run_backward(const fusedrnn_problem *p, const char *what, const fusedrnn_inputs *in,
                         const fusedrnn_grad_inputs *gin, void *const got[GRADS])
{
    size_t n = fusedrnn_backward_workspace(p);
    void *ws = malloc(n);
    CHECK(n > 0, "%s: workspace query returned 0", what);
    fusedrnn_status st = fusedrnn_backward(
        p, in, gin,
        &(fusedrnn_grads){.dx = got[DX], .dh0 = got[DH0], .dc0 = got[DC0], .dw_ih = got[DW_IH],
                          .dw_hh = got[DW_HH], .db_ih = got[DB_IH], .db_hh = got[DB_HH]},
        ws, n);
    CHECK(st == FUSEDRNN_OK, "%s: status %d", what, (int)st);
    free(ws);
}

/* What a backward_case leaves out (NULL), of those fusedrnn.h lets the
 * caller leave out: the states' gradients and the weights' apart, so that
 * each is computed without the other (dW_hh reads what dh0 sums). */
enum { LEAVE_NONE, LEAVE_STATES, LEAVE_WEIGHTS };

/* One backward on fresh, uninitialised gradients, against the naive ones
 * e[DX] ... e[DB_HH] of sizes[]; those `leave` names are NULL, and the
 * others must not change. */
static void backward_case(const fusedrnn_problem *p, const char *case_name,
                          const fusedrnn_inputs *in, const fusedrnn_grad_inputs *gin,
                          int leave, double *const e[GRADS], const int64_t sizes[GRADS])
{
    static const char *const leaving[] = {"all", "without dx, dh0, dc0",
                                          "without dx and the weights'"};
    char what[240];
    snprintf(what, sizeof what, "%s backward %s", case_name, leaving[leave]);
    void *got[GRADS];
    int wanted[GRADS];
    for (int i = 0; i < GRADS; i++) {
        int left = i == DX || (leave == LEAVE_STATES ? i == DH0 || i == DC0
                                                     : i == DB_HH || i == DW_IH || i == DW_HH);
        wanted[i] = (i != DC0 || p->cell == FUSEDRNN_LSTM) && (leave == LEAVE_NONE || !left);
        got[i] = wanted[i] ? alloc(p, sizes[i]) : NULL;
    }
    run_backward(p, what, in, gin, got);
    for (int i = 0; i < GRADS; i++) {
        if (wanted[i])
            compare(p, what, grad_names[i], got[i], e[i], sizes[i]);
        free(got[i]);
    }
}

/* One forward's results, every output zeroed first: rows of the reserve
 * past a sequence's length are not written, and are compared too. */
typedef struct {
    void *y, *h_n, *c_n, *reserve;
    size_t reserve_bytes;
} forward_results;

static forward_results forward_zeroed(const fusedrnn_problem *p, const char *what,
                                      const fusedrnn_inputs *in)
{
    const size_t e = elem_size(p);
    const size_t BH = (size_t)(p->B * p->H);
    forward_results r = {calloc((size_t)p->T * BH + 1, e), calloc(BH + 1, e), calloc(BH + 1, e),
                         NULL, p->training ? fusedrnn_reserve_size(p) : 0};
    r.reserve = calloc(r.reserve_bytes + 1, 1);
    size_t n = fusedrnn_forward_workspace(p);
    void *ws = malloc(n);
    fusedrnn_status st = fusedrnn_forward(
        p, in,
        &(fusedrnn_outputs){r.y, r.h_n, r.c_n, p->training ? r.reserve : NULL}, ws, n);
    CHECK(st == FUSEDRNN_OK, "%s: status %d", what, (int)st);
    free(ws);
    return r;
}

/* The forward given a pack of the weights, and no weights, for inference
 * and training: bitwise the results of the same call without the pack.
 * Training runs without b_hh (the pack then keeps b_ih as the input side's
 * bias, not a sum), and reads a byte copy of the pack at another address,
 * which must serve as well. */
static void pack_case(fusedrnn_problem p, const char *case_name, const fusedrnn_inputs *in)
{
    const size_t e = elem_size(&p);
    const size_t BH = (size_t)(p.B * p.H);
    char what[240];
    size_t bytes = fusedrnn_packed_size(&p);
    CHECK(bytes > 0, "%s: packed size 0", case_name);
    for (p.training = 0; p.training < 2; p.training++) {
        snprintf(what, sizeof what, "%s packed %s forward", case_name,
                 p.training ? "training" : "inference");
        fusedrnn_inputs raw = *in;
        if (p.training)
            raw.b_hh = NULL;
        void *packed = malloc(bytes);   /* exactly its size, uninitialised */
        CHECK(fusedrnn_pack(&p, raw.w_ih, raw.w_hh, raw.b_ih, raw.b_hh, packed, bytes) ==
                  FUSEDRNN_OK, "%s: pack failed", what);
        char *moved = malloc(bytes + pack_shift(&p));
        memcpy(moved + pack_shift(&p), packed, bytes);
        fusedrnn_inputs with_pack = raw;
        with_pack.w_ih = with_pack.w_hh = with_pack.b_ih = with_pack.b_hh = NULL;
        with_pack.packed = p.training ? moved + pack_shift(&p) : packed;
        forward_results a = forward_zeroed(&p, what, &raw),
                        b = forward_zeroed(&p, what, &with_pack);
        CHECK(memcmp(a.y, b.y, (size_t)p.T * BH * e) == 0, "%s: y differs", what);
        CHECK(memcmp(a.h_n, b.h_n, BH * e) == 0, "%s: h_n differs", what);
        CHECK(memcmp(a.c_n, b.c_n, BH * e) == 0, "%s: c_n differs", what);
        CHECK(memcmp(a.reserve, b.reserve, a.reserve_bytes) == 0, "%s: reserve differs", what);
        forward_results both[] = {a, b};
        for (int i = 0; i < 2; i++) {
            free(both[i].y);
            free(both[i].h_n);
            free(both[i].c_n);
            free(both[i].reserve);
        }
        free(packed);
        free(moved);
    }
}

/* One backward's gradients, every one zeroed first (db_hh too). */
static void **backward_zeroed(const fusedrnn_problem *p, const char *what,
                              const fusedrnn_inputs *in, const fusedrnn_grad_inputs *gin,
                              const int64_t sizes[GRADS])
{
    const size_t e = elem_size(p);
    void **got = malloc(GRADS * sizeof *got);
    for (int i = 0; i < GRADS; i++)
        got[i] = calloc((size_t)sizes[i] + 1, e);
    run_backward(p, what, in, gin, got);
    return got;
}

/* The backward given a pack of the weights, and no weights, bitwise the
 * same as without it, reading a byte copy of the pack at another address
 * (which must serve as well). */
static void pack_backward_case(const fusedrnn_problem *p, const char *case_name,
                               const fusedrnn_inputs *in, const fusedrnn_grad_inputs *gin,
                               const int64_t sizes[GRADS])
{
    const size_t e = elem_size(p);
    char what[240];
    snprintf(what, sizeof what, "%s packed backward", case_name);
    size_t bytes = fusedrnn_packed_size(p);
    void *packed = malloc(bytes);   /* exactly its size, uninitialised */
    CHECK(fusedrnn_pack(p, in->w_ih, in->w_hh, in->b_ih, in->b_hh, packed, bytes) ==
              FUSEDRNN_OK, "%s: pack failed", what);
    char *moved = malloc(bytes + pack_shift(p));
    memcpy(moved + pack_shift(p), packed, bytes);
    fusedrnn_inputs with_pack = *in;
    with_pack.w_ih = with_pack.w_hh = with_pack.b_ih = with_pack.b_hh = NULL;
    void **a = backward_zeroed(p, what, in, gin, sizes);
    for (int copy = 0; copy < 2; copy++) {
        with_pack.packed = copy ? moved + pack_shift(p) : packed;
        void **b = backward_zeroed(p, what, &with_pack, gin, sizes);
        for (int i = 0; i < GRADS; i++) {
            CHECK(memcmp(a[i], b[i], (size_t)sizes[i] * e) == 0, "%s (copy %d): %s differs",
                  what, copy, grad_names[i]);
            free(b[i]);
        }
        free(b);
    }
    for (int i = 0; i < GRADS; i++)
        free(a[i]);
    free(a);
    free(packed);
    free(moved);
}

/* One problem: the inference and the training forward, and the backward
 * from the training one, against the naive versions; the forward and the
 * backward given a pack of the weights against the ones without. */
static void run_case(fusedrnn_problem p, int with_lengths, int with_optional, int with_resets,
                     unsigned long long seed)
{
    static const char *const cells[] = {"rnn", "lstm", "gru", "gru-reset-first"};
    static const char *const dtypes[] = {"f32", "f64", "bf16", "f32_bf16"};
    const int64_t T = p.T, B = p.B, D = p.D, H = p.H, rows = T * B;
    const int64_t GH = fusedrnn_gates(p.cell) * H;
    const int lstm = p.cell == FUSEDRNN_LSTM;
    char what[200];
    snprintf(what, sizeof what,
             "%s %s %s T%lld B%lld D%lld H%lld act%d rev%d bf%d thr%d len%d opt%d res%d",
             fusedrnn_get_isa(), cells[p.cell], dtypes[p.dtype],
             (long long)T, (long long)B, (long long)D, (long long)H, (int)p.act, p.reverse,
             p.batch_first, p.threads, with_lengths, with_optional, with_resets);
    unsigned long long state = seed;
    void *x = random_buffer(&p, rows * D, 1, &state);
    void *w_ih = random_buffer(&p, GH * D, 1 / sqrt((double)(D ? D : 1)), &state);
    void *w_hh = random_buffer(&p, GH * H, 1 / sqrt((double)(H ? H : 1)), &state);
    void *h0 = with_optional ? random_buffer(&p, B * H, 1, &state) : NULL;
    void *c0 = with_optional && lstm ? random_buffer(&p, B * H, 1, &state) : NULL;
    void *b_ih = with_optional ? random_buffer(&p, GH, 1, &state) : NULL;
    void *b_hh = with_optional ? random_buffer(&p, GH, 1, &state) : NULL;
    int64_t *lengths = NULL;
    if (with_lengths) {
        lengths = malloc(sizeof(int64_t) * (size_t)B);
        for (int64_t b = 0; b < B; b++)   /* empty, full and partial sequences */
            lengths[b] = (b % 3 == 0) ? 0 : (b % 3 == 1) ? T : T / 2;
    }
    uint8_t *resets = NULL;
    if (with_resets) {
        /* about a third of the flags set, to any nonzero value, at t = 0 and
         * past a sequence's length too (which change nothing) */
        resets = malloc((size_t)rows);   /* NULL for no rows: no flags either */
        for (int64_t i = 0; i < rows; i++)
            resets[i] = next_value(&state) > 0.35 ? (uint8_t)(1 + i % 3 * 100) : 0;
    }
    fusedrnn_inputs in = {.x = x, .h0 = h0, .c0 = c0, .w_ih = w_ih, .w_hh = w_hh,
                          .b_ih = b_ih, .b_hh = b_hh, .lengths = lengths, .resets = resets};

    double *ey = zeros(rows * H), *eh = zeros(B * H), *ec = zeros(B * H);
    naive_record rec = {zeros(rows * H), zeros(rows * H), zeros(rows * GH), zeros(rows * H)};
    naive_forward(&p, &in, ey, eh, ec, &rec);

    p.training = 0;
    free(forward_case(&p, what, &in, NULL, ey, eh, ec));
    pack_case(p, what, &in);
    p.training = 1;
    size_t reserve_bytes = fusedrnn_reserve_size(&p);
    /* the gates and one state per step; nothing at all for an empty problem */
    size_t least = (size_t)(rows * H * (fusedrnn_gates(p.cell) + 1)) *
                   (p.dtype == FUSEDRNN_F64 ? sizeof(double) : sizeof(float));   /* bf16: float32 */
    CHECK(p.cell == FUSEDRNN_RNN ? reserve_bytes == 0 : reserve_bytes >= least,
          "%s: reserve size %zu", what, reserve_bytes);
    void *reserve = malloc(reserve_bytes);   /* exactly its size, left uninitialised */
    void *y = forward_case(&p, what, &in, reserve, ey, eh, ec);

    void *dy = with_optional ? random_buffer(&p, rows * H, 1, &state) : NULL;
    void *dh_n = with_optional ? random_buffer(&p, B * H, 1, &state) : NULL;
    void *dc_n = with_optional && lstm ? random_buffer(&p, B * H, 1, &state) : NULL;
    const int64_t sizes[GRADS] = {rows * D, B * H, B * H, GH * D, GH * H, GH, GH};
    double *e[GRADS];
    for (int i = 0; i < GRADS; i++)
        e[i] = zeros(sizes[i]);
    naive_backward(&p, &in, y, &rec, dy, dh_n, dc_n, e);
    fusedrnn_grad_inputs gin = {.y = y, .reserve = reserve, .dy = dy, .dh_n = dh_n,
                                .dc_n = dc_n};
    backward_case(&p, what, &in, &gin, LEAVE_NONE, e, sizes);
    backward_case(&p, what, &in, &gin, LEAVE_STATES, e, sizes);
    backward_case(&p, what, &in, &gin, LEAVE_WEIGHTS, e, sizes);
    pack_backward_case(&p, what, &in, &gin, sizes);

    for (int i = 0; i < GRADS; i++)
        free(e[i]);
    void *owned[] = {x, w_ih, w_hh, h0, c0, b_ih, b_hh, lengths, resets, ey, eh, ec, rec.h_prev,
                     rec.c_prev, rec.gates, rec.extra, reserve, y, dy, dh_n, dc_n};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++)
        free(owned[i]);
}

/* A pack is refused by a forward or backward of another cell, dtype, D or
 * H (an empty one too), or after the ISA has changed, with FUSEDRNN_EPACKED
 * and nothing written; its size does not depend on T, B or the options;
 * bad arguments to fusedrnn_pack. */
static void pack_errors(void)
{
    const fusedrnn_problem lstm = {.cell = FUSEDRNN_LSTM, .dtype = FUSEDRNN_F32, .T = 3, .B = 2,
                                   .D = 4, .H = 5, .threads = 1};
    /* room for either dtype: a call that went on regardless stays in bounds */
    double x[24] = {0}, w_ih[80] = {0}, w_hh[100] = {0}, y[30], h_n[10], c_n[10];
    size_t bytes = fusedrnn_packed_size(&lstm);
    void *packed = malloc(bytes);
    CHECK(fusedrnn_pack(&lstm, w_ih, w_hh, NULL, NULL, packed, bytes) == FUSEDRNN_OK,
          "pack failed");
    fusedrnn_problem p = lstm;
    p.T = 7, p.B = 1, p.reverse = 1, p.batch_first = 1, p.threads = 3, p.training = 1;
    CHECK(fusedrnn_packed_size(&p) == bytes, "the packed size depends on T, B or options");

    fusedrnn_problem other[7];
    for (int i = 0; i < 7; i++)
        other[i] = lstm;
    other[0].cell = FUSEDRNN_GRU, other[1].dtype = FUSEDRNN_F64, other[2].D = 3, other[3].H = 4;
    other[4].cell = FUSEDRNN_GRU_RESET_FIRST;
    other[5].dtype = FUSEDRNN_BF16;   /* the float32 kernels, but not a float32 pack */
    other[6].dtype = FUSEDRNN_F32_BF16;   /* float32 buffers, other panels */
    fusedrnn_inputs in = {.x = x, .w_ih = w_ih, .w_hh = w_hh, .packed = packed};
    for (int i = 0; i < 7; i++) {
        memset(y, 0xff, sizeof y);   /* NaN bits: a write shows */
        size_t n = fusedrnn_forward_workspace(&other[i]);
        void *work = malloc(n);
        fusedrnn_status st = fusedrnn_forward(
            &other[i], &in, &(fusedrnn_outputs){.y = y, .h_n = h_n, .c_n = c_n}, work, n);
        CHECK(st == FUSEDRNN_EPACKED, "pack of another problem (%d): status %d", i, (int)st);
        unsigned char ones[sizeof y];
        memset(ones, 0xff, sizeof ones);
        CHECK(memcmp(y, ones, sizeof y) == 0, "a refused pack's forward wrote y (%d)", i);
        free(work);
        /* the backward, of this problem and of one with no batch rows, which
         * would otherwise zero its gradients without reading anything */
        for (int empty = 0; empty < 2; empty++) {
            fusedrnn_problem q = other[i];
            q.training = 1, q.B = empty ? 0 : q.B;
            double dx[24], dh0[10], dw_ih[80], dw_hh[100], db[20];
            memset(dx, 0xff, sizeof dx), memset(dh0, 0xff, sizeof dh0);
            memset(dw_ih, 0xff, sizeof dw_ih), memset(dw_hh, 0xff, sizeof dw_hh);
            memset(db, 0xff, sizeof db);
            size_t rn = fusedrnn_reserve_size(&q), bn = fusedrnn_backward_workspace(&q);
            void *reserve = calloc(rn + 1, 1), *bwork = malloc(bn);
            st = fusedrnn_backward(
                &q, &in, &(fusedrnn_grad_inputs){.y = y, .reserve = reserve},
                &(fusedrnn_grads){.dx = dx, .dh0 = dh0, .dc0 = dh0, .dw_ih = dw_ih,
                                  .dw_hh = dw_hh, .db_ih = db, .db_hh = db},
                bwork, bn);
            CHECK(st == FUSEDRNN_EPACKED, "pack of another problem (%d, B %lld): backward "
                  "status %d", i, (long long)q.B, (int)st);
            unsigned char all[sizeof dw_hh];
            memset(all, 0xff, sizeof all);
            CHECK(memcmp(dx, all, sizeof dx) == 0 && memcmp(dh0, all, sizeof dh0) == 0 &&
                      memcmp(dw_ih, all, sizeof dw_ih) == 0 &&
                      memcmp(dw_hh, all, sizeof dw_hh) == 0 && memcmp(db, all, sizeof db) == 0,
                  "a refused pack's backward wrote a gradient (%d, B %lld)", i, (long long)q.B);
            free(reserve);
            free(bwork);
        }
    }

    /* made on one ISA, refused on another */
    static const char *isas[] = {"scalar", "avx2", "avx512"};
    const char *was = fusedrnn_get_isa();
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (!fusedrnn_isa_supported(isas[i]) || strcmp(isas[i], was) == 0)
            continue;
        CHECK(fusedrnn_set_isa(isas[i]) == FUSEDRNN_OK, "set_isa(%s)", isas[i]);
        size_t n = fusedrnn_forward_workspace(&lstm);
        void *work = malloc(n);
        CHECK(fusedrnn_forward(&lstm, &in, &(fusedrnn_outputs){.y = y, .h_n = h_n, .c_n = c_n},
                               work, n) == FUSEDRNN_EPACKED,
              "a pack made on %s accepted on %s", was, isas[i]);
        free(work);
        fusedrnn_problem q = lstm;
        q.training = 1;
        n = fusedrnn_backward_workspace(&q);
        work = malloc(n);
        void *reserve = calloc(fusedrnn_reserve_size(&q), 1);
        double dx[24], dh0[10], dw_ih[80], dw_hh[100], db[20];
        CHECK(fusedrnn_backward(&q, &in, &(fusedrnn_grad_inputs){.y = y, .reserve = reserve},
                                &(fusedrnn_grads){.dx = dx, .dh0 = dh0, .dc0 = dh0,
                                                  .dw_ih = dw_ih, .dw_hh = dw_hh, .db_ih = db},
                                work, n) == FUSEDRNN_EPACKED,
              "a pack made on %s accepted by a backward on %s", was, isas[i]);
        free(reserve);
        free(work);
    }
    CHECK(fusedrnn_set_isa(was) == FUSEDRNN_OK, "set_isa(%s)", was);

    CHECK(fusedrnn_pack(&lstm, w_ih, w_hh, NULL, NULL, packed, bytes - 1) == FUSEDRNN_EWORKSPACE,
          "a short pack buffer accepted");
    CHECK(fusedrnn_pack(&lstm, w_ih, w_hh, NULL, NULL, NULL, bytes) == FUSEDRNN_EWORKSPACE,
          "a NULL pack buffer accepted");
    CHECK(fusedrnn_pack(&lstm, NULL, w_hh, NULL, NULL, packed, bytes) == FUSEDRNN_EINVAL,
          "a NULL w_ih accepted");
    p = lstm, p.H = -1;
    CHECK(fusedrnn_packed_size(&p) == 0 && fusedrnn_packed_size(NULL) == 0,
          "an invalid problem's packed size not 0");
    CHECK(fusedrnn_pack(&p, w_ih, w_hh, NULL, NULL, packed, bytes) == FUSEDRNN_EINVAL,
          "an invalid problem packed");
    p = lstm, p.H = (int64_t)1 << 40;
    CHECK(fusedrnn_packed_size(&p) == 0, "an overflowing packed size not 0");
    free(packed);
}

/* Statuses for bad problems and workspaces, and queries that must fail. */
static void error_cases(void)
{
    fusedrnn_problem ok = {.cell = FUSEDRNN_RNN, .dtype = FUSEDRNN_F32, .T = 3, .B = 2, .D = 4,
                           .H = 5, .act = FUSEDRNN_TANH, .threads = 1};
    const fusedrnn_inputs none = {0};
    const fusedrnn_outputs nothing = {0};
    char ws[64];
    fusedrnn_problem p;

    p = ok, p.T = -1;
    CHECK(fusedrnn_forward_workspace(&p) == 0, "negative T: workspace query not 0");
    CHECK(fusedrnn_forward(&p, &none, &nothing, ws, sizeof ws) ==
              FUSEDRNN_EINVAL, "negative T accepted");
    p = ok, p.act = (fusedrnn_act)7;
    CHECK(fusedrnn_forward(&p, &none, &nothing, ws, sizeof ws) ==
              FUSEDRNN_EINVAL, "unknown activation accepted");
    p = ok, p.dtype = (fusedrnn_dtype)9;
    CHECK(fusedrnn_backward_workspace(&p) == 0, "unknown dtype: workspace query not 0");
    CHECK(fusedrnn_forward_workspace(NULL) == 0, "NULL problem: workspace query not 0");

    /* T*B*H past int64: refused before anything is touched (all pointers NULL). */
    p = ok, p.T = (int64_t)1 << 40, p.B = (int64_t)1 << 20, p.H = (int64_t)1 << 10;
    CHECK(fusedrnn_forward_workspace(&p) == 0, "overflowing sizes: workspace query not 0");
    CHECK(fusedrnn_forward(&p, &none, &nothing, ws, sizeof ws) ==
              FUSEDRNN_EOVERFLOW, "overflowing sizes accepted");

    /* A workspace one byte short, or missing. */
    size_t n = fusedrnn_forward_workspace(&ok);
    float x[24] = {0}, w_ih[20] = {0}, w_hh[25] = {0}, y[30], h_n[10];
    fusedrnn_inputs in = {.x = x, .w_ih = w_ih, .w_hh = w_hh};
    fusedrnn_outputs out = {.y = y, .h_n = h_n};
    void *small = malloc(n - 1);
    CHECK(fusedrnn_forward(&ok, &in, &out, small, n - 1) ==
              FUSEDRNN_EWORKSPACE, "short workspace accepted");
    CHECK(fusedrnn_forward(&ok, &in, &out, NULL, n) ==
              FUSEDRNN_EWORKSPACE, "NULL workspace accepted");
    free(small);

    /* Lengths out of range. */
    int64_t bad[2][2] = {{-1, 1}, {1, 4}};
    void *work = malloc(n);
    for (int i = 0; i < 2; i++)
        CHECK(fusedrnn_forward(&ok, &(fusedrnn_inputs){.x = x, .w_ih = w_ih, .w_hh = w_hh,
                                                       .lengths = bad[i]},
                               &out, work, n) ==
                  FUSEDRNN_EINVAL, "lengths {%lld, %lld} accepted", (long long)bad[i][0],
              (long long)bad[i][1]);
    free(work);

    /* Nothing recurs (B = 0) with a huge T: returns at once, touching nothing. */
    p = ok, p.T = (int64_t)1 << 60, p.B = 0;
    n = fusedrnn_forward_workspace(&p);
    work = malloc(n);
    CHECK(n > 0 && fusedrnn_forward(&p, &(fusedrnn_inputs){.w_ih = w_ih, .w_hh = w_hh},
                                       &nothing, work, n) ==
                       FUSEDRNN_OK, "B = 0 with a huge T not accepted");
    free(work);

    /* The cells: their gates, an unknown one refused by every entry point,
     * and the reserve only the gated cells have and need. */
    CHECK(fusedrnn_gates(FUSEDRNN_RNN) == 1 && fusedrnn_gates(FUSEDRNN_LSTM) == 4 &&
              fusedrnn_gates(FUSEDRNN_GRU) == 3, "gate counts not 1, 4, 3");
    for (int cell = 0; cell < FUSEDRNN_CELL_COUNT; cell++) {
        const fusedrnn_cell_info *info = fusedrnn_cell_describe((fusedrnn_cell)cell);
        CHECK(info && info->name && info->gates == fusedrnn_gates((fusedrnn_cell)cell) &&
                  (info->reserve_rows == 0 || info->reserve_rows == info->gates + 1),
              "cell %d: its description disagrees with its gates", cell);
    }
    CHECK(fusedrnn_cell_describe(FUSEDRNN_LSTM)->has_c &&
              !fusedrnn_cell_describe(FUSEDRNN_GRU)->has_c &&
              fusedrnn_cell_describe(FUSEDRNN_RNN)->reserve_rows == 0,
          "the cells' descriptions do not say which has c and which a reserve");
    p = ok, p.cell = (fusedrnn_cell)FUSEDRNN_CELL_COUNT;
    CHECK(fusedrnn_gates(p.cell) == 0 && fusedrnn_cell_describe(p.cell) == NULL,
          "unknown cell: gates not 0 or described");
    CHECK(fusedrnn_forward_workspace(&p) == 0 && fusedrnn_backward_workspace(&p) == 0 &&
              fusedrnn_reserve_size(&p) == 0, "unknown cell: a size query not 0");
    CHECK(fusedrnn_forward(&p, &none, &nothing, ws, sizeof ws) ==
              FUSEDRNN_EINVAL, "unknown cell accepted by the forward");
    CHECK(fusedrnn_backward(&p, &none, &(fusedrnn_grad_inputs){0}, &(fusedrnn_grads){0}, ws,
                            sizeof ws) == FUSEDRNN_EINVAL, "unknown cell accepted by the backward");
    p = ok, p.training = 1;
    CHECK(fusedrnn_reserve_size(&ok) == 0 && fusedrnn_reserve_size(&p) == 0,
          "the RNN's reserve size not 0");
    /* Buffers of the LSTM's sizes (the larger G), so that a call that went on
     * regardless would still stay in bounds. */
    float w_ih4[80] = {0}, w_hh4[100] = {0}, c_n[10], dx[24], dh0[10], dc0[10], dw_ih[80],
          dw_hh[100], db_ih[20], db_hh[20];
    in = (fusedrnn_inputs){.x = x, .w_ih = w_ih4, .w_hh = w_hh4};
    out = (fusedrnn_outputs){.y = y, .h_n = h_n, .c_n = c_n};
    fusedrnn_grads grads = {.dx = dx, .dh0 = dh0, .dc0 = dc0, .dw_ih = dw_ih, .dw_hh = dw_hh,
                            .db_ih = db_ih, .db_hh = db_hh};
    static const fusedrnn_cell gated[] = {FUSEDRNN_LSTM, FUSEDRNN_GRU};
    for (size_t i = 0; i < sizeof gated / sizeof gated[0]; i++) {
        fusedrnn_cell cell = gated[i];
        p = ok, p.cell = cell, p.training = 1;
        n = fusedrnn_forward_workspace(&p);
        work = malloc(n);
        CHECK(fusedrnn_forward(&p, &in, &out, work, n) == FUSEDRNN_ERESERVE,
              "cell %d: training forward without a reserve not FUSEDRNN_ERESERVE", (int)cell);
        free(work);
        n = fusedrnn_backward_workspace(&p);
        work = malloc(n);
        CHECK(fusedrnn_backward(&p, &in, &(fusedrnn_grad_inputs){.y = y}, &grads, work, n) ==
                  FUSEDRNN_ERESERVE, "cell %d: backward without a reserve not FUSEDRNN_ERESERVE",
              (int)cell);
        free(work);
    }

    pack_errors();

    CHECK(fusedrnn_set_isa("no such isa") == FUSEDRNN_EISA, "unknown ISA accepted");
    CHECK(fusedrnn_set_isa(NULL) == FUSEDRNN_EISA, "NULL ISA accepted");
}

/* A slot an ISA's table leaves empty runs its base's kernel, in the end the
 * reference's: AVX2's table without its cell kernels completes with the
 * reference ones and keeps its own product kernel and blocking, and the
 * gated cells' cases pass on it; AVX-512's, which has no transpose of its
 * own, runs AVX2's. */
static void fallback_cases(void)
{
    if (!fusedrnn_isa_supported("avx2")) {
        printf("SKIPPED kernel fallback: no AVX2 here\n");
        return;
    }
    static isa_kernels partial, complete;
    partial = isa_avx2;
    partial.name = "avx2 without cell kernels";
    for (int id = 0; id < CELL_KERNELS; id++)
        partial.f32.cell[id] = NULL, partial.f64.cell[id] = NULL;
    fusedrnn_complete_kernels(&complete, &partial);
    isa_kernels scalar;
    fusedrnn_complete_kernels(&scalar, &isa_scalar);
    for (int id = 0; id < CELL_KERNELS; id++)
        CHECK(complete.f32.cell[id] == scalar.f32.cell[id] &&
                  complete.f64.cell[id] == scalar.f64.cell[id],
              "cell kernel %d: an empty slot not filled with the reference's", id);
    CHECK(complete.f32.step == isa_avx2.f32.step && complete.f32.nr == isa_avx2.f32.nr &&
              complete.f64.step == isa_avx2.f64.step && complete.f64.mr == isa_avx2.f64.mr,
          "the product kernel or its blocking not the ISA's own");
    isa_kernels wide;
    fusedrnn_complete_kernels(&wide, &isa_avx512);
    CHECK(isa_avx512.f32.transpose == NULL && wide.f32.transpose == isa_avx2.f32.transpose &&
              wide.f64.transpose == isa_avx2.f64.transpose,
          "AVX-512's table does not run AVX2's transposes");
    fusedrnn_use_kernels(&complete);
    for (int cell = FUSEDRNN_LSTM; cell < FUSEDRNN_CELL_COUNT; cell++)
        for (int dtype = 0; dtype < 3; dtype++)
            run_case((fusedrnn_problem){.cell = (fusedrnn_cell)cell, .dtype = (fusedrnn_dtype)dtype,
                                       .T = 5, .B = 7, .D = 9, .H = 19, .threads = 2},
                     1, 1, 1, 7);
    CHECK(strcmp(fusedrnn_get_isa(), partial.name) == 0, "the partial table not in force");
}

static int never(void) { return 0; }

/* An AVX-512 CPU without AVX512_BF16: the avx512 table completes without
 * bf16 products (bf16 calls then run the float32 kernels) but with the
 * reference's conversions, and its bf16 cases pass. */
static void bf16_without_dot_cases(void)
{
    static isa_kernels partial, complete;
    partial = isa_avx512;
    partial.name = "avx512 without bf16 products";
    partial.bf16.supported = never;
    fusedrnn_complete_kernels(&complete, &partial);
    CHECK(complete.bf16.step == NULL && complete.bf16.fma_probe == NULL &&
              complete.bf16.narrow == narrow_bf16_ref,
          "a table kept bf16 products its CPU lacks");
    if (!fusedrnn_isa_supported("avx512")) {
        printf("SKIPPED bf16 without the dot product: no AVX-512 here\n");
        return;
    }
    fusedrnn_use_kernels(&complete);
    CHECK(!fusedrnn_bf16_dot_supported(), "the dot product said supported");
    for (int cell = 0; cell < FUSEDRNN_CELL_COUNT; cell++)
        for (int dtype = FUSEDRNN_BF16; dtype <= FUSEDRNN_F32_BF16; dtype++)
            run_case((fusedrnn_problem){.cell = (fusedrnn_cell)cell, .dtype = dtype,
                                       .T = 5, .B = 7, .D = 9, .H = 19, .threads = 2},
                     1, 1, 1, 7);
}

/* The bf16 conversions of a table with bf16 products against the
 * reference's, bit for bit: rounding to nearest even, ties, denormals to a
 * zero of their sign, NaN kept quiet, infinities; every length and column
 * count past a vector, odd k. */
static void bf16_conversion_cases(void)
{
    isa_kernels t;
    fusedrnn_complete_kernels(&t, &isa_avx512);
    if (!t.bf16.step) {
        printf("SKIPPED bf16 conversions: no bf16 dot product here\n");
        return;
    }
    static const uint32_t special[] = {0x00000001, 0x80000001, 0x007fffff, 0x00800000,
                                       0x3f808000, 0x3f818000, 0x3f808001, 0x7f800000,
                                       0xff800000, 0x7fc00001, 0x7f800001, 0xff800001,
                                       0x7f7fffff, 0x80000000, 0x00000000, 0x0080ffff};
    enum { N = 41 * 45 };
    static float src[N];
    static bf16 got[N], want[N];
    for (int i = 0; i < N; i++) {
        uint32_t u = i % 3 ? special[i % 16] : 0x3f000000u + (uint32_t)i * 2654435761u % 0x1000000u;
        memcpy(&src[i], &u, sizeof u);
    }
    for (int64_t n = 0; n <= 40; n++) {
        t.bf16.narrow(n, src + n, got);
        narrow_bf16_ref(n, src + n, want);
        CHECK(memcmp(got, want, (size_t)n * sizeof(bf16)) == 0, "narrow differs at n = %lld",
              (long long)n);
    }
    static const unsigned char keep[45] = {1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1};
    for (int64_t cols = 1; cols <= 40; cols += 3)
        for (int64_t k = 1; k <= 40; k += (k < 10 ? 1 : 7)) {
            const int64_t nr = 40, lds = 45;
            memset(got, 0, sizeof got), memset(want, 0, sizeof want);
            t.bf16.pack_pairs(cols, k, src, lds, k < 11 ? keep : NULL, got, nr);
            pack_pairs_bf16_ref(cols, k, src, lds, k < 11 ? keep : NULL, want, nr);
            CHECK(memcmp(got, want, sizeof got) == 0, "pack_pairs differs at %lld x %lld",
                  (long long)cols, (long long)k);
            t.bf16.pack_pairs_t(cols, k, src, lds, got, nr);
            pack_pairs_t_bf16_ref(cols, k, src, lds, want, nr);
            CHECK(memcmp(got, want, sizeof got) == 0, "pack_pairs_t differs at %lld x %lld",
                  (long long)cols, (long long)k);
            t.bf16.transpose(k, cols, src, lds, got, nr);
            transpose_bf16_ref(k, cols, src, lds, want, nr);
            CHECK(memcmp(got, want, sizeof got) == 0, "transpose differs at %lld x %lld",
                  (long long)k, (long long)cols);
        }
}

/* fusedrnn_c_tests [K/N]: with an argument, the K-th of N shares of the
 * cases (those whose number leaves K modulo N; the groups besides the main
 * loop in share 0), else all of them. valgrind keeps a program to one core:
 * .ci/sanitize runs a share per core side by side. */
int main(int argc, char **argv)
{
    int share = 0, shares = 1;
    char end;
    if (argc > 2 || (argc == 2 && (sscanf(argv[1], "%d/%d%c", &share, &shares, &end) != 2 ||
                                   shares < 1 || share < 0 || share >= shares))) {
        fprintf(stderr, "usage: %s [K/N], 0 <= K < N: the K-th of N shares of the cases\n",
                argv[0]);
        return 2;
    }
    /* Sizes of 0 and 1, odd sizes, and rows that no register tile divides
     * (T*B = 32 with AVX2's 6-row tiles: the A-panel overrun). */
    static const int64_t shapes[][4] = {
        {3, 2, 4, 5}, {1, 1, 1, 1}, {0, 2, 3, 4}, {3, 0, 2, 2}, {4, 2, 0, 3}, {3, 2, 3, 0},
        {2, 16, 3, 5}, {5, 7, 9, 19}, {2, 33, 5, 17},
        {12, 16, 40, 70},   /* split across 2 threads: the pool and its barriers */
        /* More batch rows than hidden units with no or one step: the h0
         * products' K = B exceeded panels sized for max(T*B, H). */
        {0, 5, 0, 1}, {0, 6, 2, 3}, {1, 5, 1, 1}, {0, 70, 3, 2},
        /* Gate rows of 2 KB or more, which the backward lays out at a padded
         * stride (spread_ld): LSTM, and GRU float64, at H = 128; all but the
         * RNN float32 at 256. */
        {3, 5, 4, 128}, {2, 2, 1, 256},
    };
    static const char *isas[] = {"scalar", "avx2", "avx512"};
    unsigned long long seed = 1;
    int cases = 0;

    if (share == 0)
        error_cases();
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (!fusedrnn_isa_supported(isas[i])) {
            /* valgrind hides AVX-512 from the program: say so, never skip quietly */
            printf("SKIPPED ISA %s: not supported by this CPU and OS, or hidden by a tool\n",
                   isas[i]);
            continue;
        }
        CHECK(fusedrnn_set_isa(isas[i]) == FUSEDRNN_OK, "set_isa(%s)", isas[i]);
        for (int cell = 0; cell < FUSEDRNN_CELL_COUNT; cell++)
            for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
                for (int dtype = 0; dtype <= FUSEDRNN_F32_BF16; dtype++)
                    for (int opt = 0; opt < 16; opt++) {
                        /* bf16 storage and bf16 products run the float32
                         * drivers (rnn_bf16.c): half their option sets, by
                         * turns, cover their own code */
                        if (dtype >= FUSEDRNN_BF16 && (s + opt + dtype) % 2)
                            continue;
                        const unsigned long long case_seed = seed++;
                        if (case_seed % (unsigned)shares != (unsigned)share)
                            continue;
                        /* opt's bits: reverse, batch_first, lengths, resets; the
                         * rest by turns (act, which the gated cells ignore, too) */
                        fusedrnn_problem p = {.cell = (fusedrnn_cell)cell,
                                              .dtype = (fusedrnn_dtype)dtype,
                                              .T = shapes[s][0], .B = shapes[s][1],
                                              .D = shapes[s][2], .H = shapes[s][3],
                                              .act = (fusedrnn_act)((s + opt) % 3),
                                              .reverse = opt & 1, .batch_first = (opt >> 1) & 1,
                                              .threads = 1 + (int)((s + opt) % 2)};
                        run_case(p, (opt >> 2) & 1, (int)((s + opt + dtype) % 2), opt >> 3,
                                 case_seed);
                        cases++;
                    }
    }
    if (share == 0) {
        fallback_cases();
        bf16_conversion_cases();
        bf16_without_dot_cases();
    }
    printf("%d cases, %d failures\n", cases, failures);
    return failures != 0;
}
