/* C-level test driver: the public header alone, no Python. Built by a plain
 * CMake configure (see .ci/sanitize) and run under valgrind memcheck and
 * under AddressSanitizer + UndefinedBehaviorSanitizer.
 *
 * Every buffer is malloc'ed at exactly its size, the workspace at exactly the
 * queried size, and outputs are left uninitialised: a read or write past any
 * buffer, or an output element the kernel forgot to write (the comparison
 * below then branches on it), is reported by the tools. The results are
 * compared with a naive double-precision forward and backward written here.
 * Exit status 0 when everything passed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fusedrnn.h"

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

/* A buffer of n elements of the problem's dtype; malloc(0) may return NULL,
 * which the kernel must accept for an empty buffer. */
static void *alloc(const fusedrnn_problem *p, int64_t n)
{
    return malloc((size_t)n * (p->dtype == FUSEDRNN_F32 ? sizeof(float) : sizeof(double)));
}

static double get(const fusedrnn_problem *p, const void *a, int64_t i)
{
    return p->dtype == FUSEDRNN_F32 ? ((const float *)a)[i] : ((const double *)a)[i];
}

static void *random_buffer(const fusedrnn_problem *p, int64_t n, double scale,
                           unsigned long long *state)
{
    void *a = alloc(p, n);
    for (int64_t i = 0; i < n; i++) {
        double v = scale * next_value(state);
        if (p->dtype == FUSEDRNN_F32)
            ((float *)a)[i] = (float)v;
        else
            ((double *)a)[i] = v;
    }
    return a;
}

/* Row (t,b) of a sequence array in either layout. */
static int64_t row(const fusedrnn_problem *p, int64_t t, int64_t b)
{
    return p->batch_first ? b * p->T + t : t * p->B + b;
}

static double act(fusedrnn_act a, double z)
{
    return a == FUSEDRNN_TANH ? tanh(z) : a == FUSEDRNN_RELU ? (z > 0 ? z : 0) : 1 / (1 + exp(-z));
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

/* The naive forward in double: y [rows,H] and h_n [B,H]. */
static void naive_forward(const fusedrnn_problem *p, const void *x, const void *h0,
                          const void *w_ih, const void *w_hh, const void *bias,
                          const int64_t *lengths, double *y, double *h_n)
{
    const int64_t T = p->T, B = p->B, D = p->D, H = p->H;
    double *h = malloc(sizeof(double) * (size_t)(H + 1)), *z = malloc(sizeof(double) * (size_t)(H + 1));
    for (int64_t i = 0; i < T * B * H; i++)
        y[i] = 0;
    for (int64_t b = 0; b < B; b++) {
        int64_t len = lengths ? lengths[b] : T;
        for (int64_t j = 0; j < H; j++)
            h[j] = h0 ? get(p, h0, b * H + j) : 0;
        for (int64_t s = 0; s < len; s++) {
            int64_t r = row(p, time_at(p, len, s), b);
            for (int64_t j = 0; j < H; j++) {
                z[j] = bias ? get(p, bias, j) : 0;
                for (int64_t d = 0; d < D; d++)
                    z[j] += get(p, w_ih, j * D + d) * get(p, x, r * D + d);
                for (int64_t k = 0; k < H; k++)
                    z[j] += get(p, w_hh, j * H + k) * h[k];
            }
            for (int64_t j = 0; j < H; j++)
                h[j] = y[r * H + j] = act(p->act, z[j]);
        }
        memcpy(h_n + b * H, h, sizeof(double) * (size_t)H);
    }
    free(h);
    free(z);
}

/* The naive backward in double, at the kernel's own y (as the Python tests
 * do: relu's derivative at 0 depends on rounding). Gradients accumulate into
 * zeroed dx [rows,D], dh0 [B,H], dw_ih [H,D], dw_hh [H,H], dbias [H]. */
static void naive_backward(const fusedrnn_problem *p, const void *x, const void *h0,
                           const void *w_ih, const void *w_hh, const int64_t *lengths,
                           const void *y, const void *dy, const void *dh_n, double *dx,
                           double *dh0, double *dw_ih, double *dw_hh, double *dbias)
{
    const int64_t T = p->T, B = p->B, D = p->D, H = p->H;
    double *dh = malloc(sizeof(double) * (size_t)(H + 1)), *dz = malloc(sizeof(double) * (size_t)(H + 1));
    for (int64_t b = 0; b < B; b++) {
        int64_t len = lengths ? lengths[b] : T;
        for (int64_t j = 0; j < H; j++)
            dh[j] = dh_n ? get(p, dh_n, b * H + j) : 0;
        for (int64_t s = len - 1; s >= 0; s--) {
            int64_t r = row(p, time_at(p, len, s), b);
            for (int64_t j = 0; j < H; j++) {
                double g = (dy ? get(p, dy, r * H + j) : 0) + dh[j];
                dz[j] = g * act_grad(p->act, get(p, y, r * H + j));
                dbias[j] += dz[j];
            }
            for (int64_t j = 0; j < H; j++) {
                for (int64_t d = 0; d < D; d++) {
                    dx[r * D + d] += dz[j] * get(p, w_ih, j * D + d);
                    dw_ih[j * D + d] += dz[j] * get(p, x, r * D + d);
                }
                for (int64_t k = 0; k < H; k++) {
                    double prev = s > 0 ? get(p, y, row(p, time_at(p, len, s - 1), b) * H + k)
                                : h0    ? get(p, h0, b * H + k)
                                        : 0;
                    dw_hh[j * H + k] += dz[j] * prev;
                }
            }
            for (int64_t k = 0; k < H; k++) {
                dh[k] = 0;
                for (int64_t j = 0; j < H; j++)
                    dh[k] += dz[j] * get(p, w_hh, j * H + k);
            }
        }
        for (int64_t j = 0; j < H; j++)
            dh0[b * H + j] = dh[j];
    }
    free(dh);
    free(dz);
}

/* Kernel output against the naive one: |a - e| <= tol (|e| + rms(e)), the
 * bound of tests/conftest.py. */
static void compare(const fusedrnn_problem *p, const char *what, const char *name,
                    const void *actual, const double *expected, int64_t n)
{
    double tol = p->dtype == FUSEDRNN_F32 ? 2e-4 : 1e-10, sq = 0;
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

/* One problem: forward and backward against the naive versions. */
static void run_case(fusedrnn_problem p, int with_lengths, int with_optional,
                     unsigned long long seed)
{
    const int64_t T = p.T, B = p.B, D = p.D, H = p.H, rows = T * B;
    char what[200];
    snprintf(what, sizeof what, "%s %s T%lld B%lld D%lld H%lld act%d rev%d bf%d thr%d len%d opt%d",
             fusedrnn_get_isa(), p.dtype == FUSEDRNN_F32 ? "f32" : "f64", (long long)T,
             (long long)B, (long long)D, (long long)H, (int)p.act, p.reverse, p.batch_first,
             p.threads, with_lengths, with_optional);
    unsigned long long state = seed;
    void *x = random_buffer(&p, rows * D, 1, &state);
    void *w_ih = random_buffer(&p, H * D, 1 / sqrt((double)(D ? D : 1)), &state);
    void *w_hh = random_buffer(&p, H * H, 1 / sqrt((double)(H ? H : 1)), &state);
    void *h0 = with_optional ? random_buffer(&p, B * H, 1, &state) : NULL;
    void *bias = with_optional ? random_buffer(&p, H, 1, &state) : NULL;
    int64_t *lengths = NULL;
    if (with_lengths) {
        lengths = malloc(sizeof(int64_t) * (size_t)B);
        for (int64_t b = 0; b < B; b++)   /* empty, full and partial sequences */
            lengths[b] = (b % 3 == 0) ? 0 : (b % 3 == 1) ? T : T / 2;
    }

    void *y = alloc(&p, rows * H), *h_n = alloc(&p, B * H);
    size_t n = fusedrnn_forward_workspace(&p);
    void *ws = malloc(n);   /* exactly the queried size: an overrun is the tools' to see */
    CHECK(n > 0, "%s: forward workspace query returned 0", what);
    fusedrnn_inputs in = {.x = x, .h0 = h0, .w_ih = w_ih, .w_hh = w_hh, .b_ih = bias,
                          .lengths = lengths};
    fusedrnn_status st = fusedrnn_forward(&p, &in, &(fusedrnn_outputs){.y = y, .h_n = h_n},
                                          ws, n);
    CHECK(st == FUSEDRNN_OK, "%s: forward status %d", what, (int)st);
    free(ws);

    double *ey = malloc(sizeof(double) * (size_t)(rows * H + 1));
    double *eh = malloc(sizeof(double) * (size_t)(B * H + 1));
    naive_forward(&p, x, h0, w_ih, w_hh, bias, lengths, ey, eh);
    compare(&p, what, "y", y, ey, rows * H);
    compare(&p, what, "h_n", h_n, eh, B * H);

    void *dy = with_optional ? random_buffer(&p, rows * H, 1, &state) : NULL;
    void *dh_n = with_optional ? random_buffer(&p, B * H, 1, &state) : NULL;
    void *dx = alloc(&p, rows * D), *dh0 = alloc(&p, B * H), *dw_ih = alloc(&p, H * D);
    void *dw_hh = alloc(&p, H * H), *dbias = alloc(&p, H);
    n = fusedrnn_backward_workspace(&p);
    ws = malloc(n);
    CHECK(n > 0, "%s: backward workspace query returned 0", what);
    st = fusedrnn_backward(&p, &in, &(fusedrnn_grad_inputs){.y = y, .dy = dy, .dh_n = dh_n},
                           &(fusedrnn_grads){.dx = dx, .dh0 = dh0, .dw_ih = dw_ih,
                                             .dw_hh = dw_hh, .db_ih = dbias},
                           ws, n);
    CHECK(st == FUSEDRNN_OK, "%s: backward status %d", what, (int)st);
    free(ws);

    double *e[5];
    int64_t sizes[5] = {rows * D, B * H, H * D, H * H, H};
    for (int i = 0; i < 5; i++)
        e[i] = calloc((size_t)sizes[i] + 1, sizeof(double));
    naive_backward(&p, x, h0, w_ih, w_hh, lengths, y, dy, dh_n, e[0], e[1], e[2], e[3], e[4]);
    const char *names[5] = {"dx", "dh0", "dw_ih", "dw_hh", "dbias"};
    void *got[5] = {dx, dh0, dw_ih, dw_hh, dbias};
    for (int i = 0; i < 5; i++) {
        compare(&p, what, names[i], got[i], e[i], sizes[i]);
        free(e[i]);
        free(got[i]);
    }
    void *owned[] = {x, w_ih, w_hh, h0, bias, lengths, y, h_n, ey, eh, dy, dh_n};
    for (size_t i = 0; i < sizeof owned / sizeof owned[0]; i++)
        free(owned[i]);
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

    CHECK(fusedrnn_set_isa("no such isa") == FUSEDRNN_EISA, "unknown ISA accepted");
    CHECK(fusedrnn_set_isa(NULL) == FUSEDRNN_EISA, "NULL ISA accepted");
}

int main(void)
{
    /* Sizes of 0 and 1, odd sizes, and rows that no register tile divides
     * (T*B = 32 with AVX2's 6-row tiles: the A-panel overrun). */
    static const int64_t shapes[][4] = {
        {3, 2, 4, 5}, {1, 1, 1, 1}, {0, 2, 3, 4}, {3, 0, 2, 2}, {4, 2, 0, 3}, {3, 2, 3, 0},
        {2, 16, 3, 5}, {5, 7, 9, 19}, {2, 33, 5, 17},
        {12, 16, 40, 70},   /* split across 2 threads: the pool and its barriers */
        /* More batch rows than hidden units with no or one step: the h0
         * products' K = B exceeded panels sized for max(T*B, H). */
        {0, 5, 0, 1}, {0, 6, 2, 3}, {1, 5, 1, 1}, {0, 70, 3, 2},
    };
    static const char *isas[] = {"scalar", "avx2", "avx512"};
    unsigned long long seed = 1;
    int cases = 0;

    error_cases();
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (!fusedrnn_isa_supported(isas[i])) {
            /* valgrind hides AVX-512 from the program: say so, never skip quietly */
            printf("SKIPPED ISA %s: not supported by this CPU and OS, or hidden by a tool\n",
                   isas[i]);
            continue;
        }
        CHECK(fusedrnn_set_isa(isas[i]) == FUSEDRNN_OK, "set_isa(%s)", isas[i]);
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int dtype = 0; dtype < 2; dtype++)
                for (int opt = 0; opt < 8; opt++) {
                    /* opt's bits: reverse, batch_first, lengths; the rest by turns */
                    fusedrnn_problem p = {.cell = FUSEDRNN_RNN, .dtype = (fusedrnn_dtype)dtype,
                                          .T = shapes[s][0], .B = shapes[s][1],
                                          .D = shapes[s][2], .H = shapes[s][3],
                                          .act = (fusedrnn_act)((s + opt) % 3),
                                          .reverse = opt & 1, .batch_first = (opt >> 1) & 1,
                                          .threads = 1 + (int)((s + opt) % 2)};
                    run_case(p, (opt >> 2) & 1, (int)((s + opt + dtype) % 2), seed++);
                    cases++;
                }
    }
    printf("%d cases, %d failures\n", cases, failures);
    return failures != 0;
}
