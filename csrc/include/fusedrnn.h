/* fusedrnn: the fused RNN recurrence and its backward pass over plain buffers.
 *
 *   forward   h_t = act(W_ih x_t + W_hh h_{t-1} + b)        for each sequence
 *   backward  dz_t = (dy_t + dh) * act'(y_t),  dh = dz_t W_hh  (BPTT)
 *
 * Shape vocabulary: T time steps, B batch, D input size, H hidden size.
 * Sequence data (x, y, dy, dx) is a contiguous array, either time-major [T,B,*]
 * or, with batch_first, batch-major [B,T,*]: the layout only changes the
 * strides the kernel walks, so batch_first costs no copy.
 *
 * Buffers are caller-owned. Inputs are never written. Outputs are overwritten,
 * never accumulated into. No output may alias any other buffer. Every call
 * needs a workspace of at least the size its query returns (any alignment).
 * Calls are thread-safe; the kernel allocates nothing and keeps no state
 * besides the micro-kernel table chosen once and its worker threads, created
 * on first use and asleep between calls.
 */
#ifndef FUSEDRNN_H
#define FUSEDRNN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#define FUSEDRNN_RESTRICT
#else
#define FUSEDRNN_RESTRICT restrict
#endif

typedef enum {
    FUSEDRNN_OK = 0,
    FUSEDRNN_EINVAL = 1,        /* a size, option or length is out of range */
    FUSEDRNN_EWORKSPACE = 2,    /* workspace NULL or smaller than the query says */
    FUSEDRNN_EISA = 3,          /* ISA name unknown or not supported here */
    FUSEDRNN_EOVERFLOW = 4      /* a buffer size does not fit in 64 bits */
} fusedrnn_status;

typedef enum { FUSEDRNN_F32 = 0, FUSEDRNN_F64 = 1 } fusedrnn_dtype;

typedef enum { FUSEDRNN_TANH = 0, FUSEDRNN_RELU = 1, FUSEDRNN_SIGMOID = 2 } fusedrnn_act;

/* One layer, one direction. */
typedef struct {
    fusedrnn_dtype dtype;   /* every float buffer of the call has this type */
    int64_t T, B, D, H;     /* each >= 0 */
    fusedrnn_act act;
    int reverse;            /* nonzero: each sequence runs from its last valid step to 0 */
    int batch_first;        /* nonzero: sequence data is [B,T,*], else [T,B,*] */
    int threads;            /* at most this many threads (<= 1: the caller's only);
                               results are bitwise the same for any count */
} fusedrnn_problem;

/* Workspace sizes in bytes (0 on an invalid problem or when the size overflows). */
size_t fusedrnn_forward_workspace(const fusedrnn_problem *p);
size_t fusedrnn_backward_workspace(const fusedrnn_problem *p);

/* Forward.
 *   x        in   [T,B,D] (or [B,T,D])
 *   h0       in   [B,H], NULL means zeros
 *   w_ih     in   [H,D]
 *   w_hh     in   [H,H]
 *   bias     in   [H], NULL means zeros
 *   lengths  in   [B], 0 <= lengths[b] <= T; NULL means all T. Steps at or past
 *                 lengths[b] give zeros in y and leave the state unchanged.
 *   y        out  [T,B,H] (or [B,T,H]), the hidden state of every step
 *   h_n      out  [B,H], the state after each sequence's last valid step
 */
fusedrnn_status fusedrnn_forward(const fusedrnn_problem *p,
                                 const void *x, const void *h0,
                                 const void *w_ih, const void *w_hh, const void *bias,
                                 const int64_t *lengths,
                                 void *FUSEDRNN_RESTRICT y, void *FUSEDRNN_RESTRICT h_n,
                                 void *workspace, size_t workspace_bytes);

/* Backward (BPTT) for the forward call with the same problem and inputs.
 *   x, h0, w_ih, w_hh, lengths   in   as for forward
 *   y        in   forward's y, zero padding included (the derivative comes from it)
 *   dy       in   y-shaped, NULL means zeros
 *   dh_n     in   [B,H], NULL means zeros
 *   dx       out  x-shaped
 *   dh0      out  [B,H]
 *   dw_ih    out  [H,D]
 *   dw_hh    out  [H,H]
 *   dbias    out  [H], the sum of dz over time and batch
 */
fusedrnn_status fusedrnn_backward(const fusedrnn_problem *p,
                                  const void *x, const void *h0,
                                  const void *w_ih, const void *w_hh,
                                  const int64_t *lengths,
                                  const void *y, const void *dy, const void *dh_n,
                                  void *FUSEDRNN_RESTRICT dx, void *FUSEDRNN_RESTRICT dh0,
                                  void *FUSEDRNN_RESTRICT dw_ih, void *FUSEDRNN_RESTRICT dw_hh,
                                  void *FUSEDRNN_RESTRICT dbias,
                                  void *workspace, size_t workspace_bytes);

/* Micro-kernel selection. The best ISA this CPU and OS support is chosen on
 * first use; fusedrnn_set_isa forces one ("scalar", "avx2", "avx512") and fails
 * with FUSEDRNN_EISA for an unknown or unsupported name. */
fusedrnn_status fusedrnn_set_isa(const char *name);
const char *fusedrnn_get_isa(void);
/* Nonzero when `name` is compiled in and supported by this CPU and OS. */
int fusedrnn_isa_supported(const char *name);

/* Measurement and test aids, on the active ISA. */

/* out[j] = act(z[j]), or with `derivative` out[j] = z[j] * act'(y[j]) where y
 * holds act's outputs: the step kernel's epilogue on a plain vector, so the
 * vector activations can be checked over the whole float range. Runs with
 * the caller's floating-point mode (no denormal flushing). y may be NULL
 * unless `derivative`. */
fusedrnn_status fusedrnn_activation(fusedrnn_dtype dtype, fusedrnn_act act, int derivative,
                                    int64_t n, const void *z, const void *y, void *out);

/* The longest fusedrnn_peak_gflops measures for, in seconds. */
#define FUSEDRNN_PEAK_MAX_SECONDS 60.0

/* GFLOP/s of a tight FMA loop on one thread: the best of timed runs of about
 * 0.1 ms each, repeated for about `seconds` in all. Efficiency figures divide
 * by this. It always returns: `seconds` above FUSEDRNN_PEAK_MAX_SECONDS is
 * taken as FUSEDRNN_PEAK_MAX_SECONDS, and a `seconds` that is not a finite
 * number greater than 0 (NaN, +-inf, 0, negative) gives a single run. */
double fusedrnn_peak_gflops(fusedrnn_dtype dtype, double seconds);

#ifdef __cplusplus
}
#endif
#endif
