/* fusedrnn: the fused recurrence of an RNN cell and its backward pass (BPTT)
 * over plain buffers, for three cells with PyTorch's maths and layouts, and
 * a variant of the GRU:
 *
 *   RNN   h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)                 G = 1
 *   LSTM  i, f, g, o = sig, sig, tanh, sig(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
 *         c_t = f c_{t-1} + i g,   h_t = o tanh(c_t)                          G = 4
 *   GRU   r, z = sig(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)   (their rows)
 *         n = tanh(W_in x_t + b_in + r (W_hn h_{t-1} + b_hn))
 *         h_t = (1 - z) n + z h_{t-1}                                      G = 3
 *   GRU_RESET_FIRST: the GRU with the reset gate applied to h_{t-1} before
 *         the product (ONNX's linear_before_reset = 0, Keras' reset_after =
 *         False), otherwise the same:
 *         n = tanh(W_in x_t + b_in + W_hn (r h_{t-1}) + b_hn)              G = 3
 *
 * Gates are stacked in this order along the rows of W_ih [G*H,D], W_hh
 * [G*H,H], b_ih and b_hh [G*H]: gate q is rows [q*H, (q+1)*H).
 *
 * Shape vocabulary: T time steps, B batch, D input size, H hidden size, G
 * gates. Sequence data (x, y, dy, dx) is a contiguous array, either
 * time-major [T,B,*] or, with batch_first, batch-major [B,T,*]: the layout
 * only changes the strides the kernel walks, so batch_first costs no copy.
 *
 * Buffers are caller-owned. Inputs are never written. Outputs are overwritten,
 * never accumulated into. No output may alias any other buffer. Every call
 * needs a workspace of at least the size its query returns (any alignment),
 * and the float buffers aligned to their dtype. Calls are thread-safe; the
 * kernel allocates nothing and keeps no state besides the micro-kernel table
 * chosen once and its worker threads, created on first use and asleep
 * between calls.
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
    FUSEDRNN_EOVERFLOW = 4,     /* a buffer size does not fit in 64 bits */
    FUSEDRNN_ERESERVE = 5,      /* a gated cell's training forward or backward without a reserve */
    FUSEDRNN_EPACKED = 6        /* a pack made for another ISA, cell, dtype, D or H */
} fusedrnn_status;

/* bfloat16 (FUSEDRNN_BF16): buffers of uint16_t bit patterns, the top half
 * of a float32's; the maths and every sum are float32, the products on bf16
 * operands where the active ISA has a bf16 dot product
 * (fusedrnn_bf16_dot_supported; docs/design.md, "bfloat16"), and a bf16
 * call's reserve holds float32 elements. */
/* FUSEDRNN_F32_BF16: float32 buffers, as FUSEDRNN_F32, whose products read
 * their operands rounded to bf16 where the active ISA has a bf16 dot
 * product (else exact, as FUSEDRNN_F32's): the maths, the state carried
 * between steps, the reserve and every sum and result stay float32. What
 * torch.autocast's bf16 products under a float32 cell state compute, without
 * rounding the gates or the state (fusedrnn.torch's cells under autocast).
 * Its packs are its own. */
typedef enum {
    FUSEDRNN_F32 = 0, FUSEDRNN_F64 = 1, FUSEDRNN_BF16 = 2, FUSEDRNN_F32_BF16 = 3
} fusedrnn_dtype;

typedef enum {
    FUSEDRNN_RNN = 0, FUSEDRNN_LSTM = 1, FUSEDRNN_GRU = 2, FUSEDRNN_GRU_RESET_FIRST = 3
} fusedrnn_cell;

typedef enum { FUSEDRNN_TANH = 0, FUSEDRNN_RELU = 1, FUSEDRNN_SIGMOID = 2 } fusedrnn_act;

/* One layer, one direction. */
typedef struct {
    fusedrnn_cell cell;
    fusedrnn_dtype dtype;   /* every float buffer of the call has this type (a
                               bf16 call's reserve excepted: float32) */
    int64_t T, B, D, H;     /* each >= 0 */
    fusedrnn_act act;       /* RNN only; ignored by the gated cells */
    int reverse;            /* nonzero: each sequence runs from its last valid step to 0 */
    int batch_first;        /* nonzero: sequence data is [B,T,*], else [T,B,*] */
    int threads;            /* at most this many threads (<= 1: the caller's only);
                               results are bitwise the same for any count */
    int training;           /* forward of a gated cell: nonzero writes the reserve
                               (then required), zero runs inference (reserve unused) */
} fusedrnn_problem;

/* What a forward call reads; the backward reads the same, for the same call.
 *   x        [T,B,D] (or [B,T,D])
 *   h0       [B,H], NULL means zeros
 *   c0       [B,H], LSTM only, NULL means zeros
 *   w_ih     [G*H,D]
 *   w_hh     [G*H,H]
 *   b_ih     [G*H], NULL means zeros
 *   b_hh     [G*H], NULL means zeros
 *   lengths  [B], 0 <= lengths[b] <= T; NULL means all T. Steps at or past
 *            lengths[b] give zeros in y and leave the state unchanged; x there,
 *            and h0, c0 of a sequence of length 0, are never read into a
 *            result (NaN there stays out).
 *   resets   [T,B] (or [B,T] with batch_first), nonzero where an episode
 *            starts; NULL means none. resets[t,b] cuts sequence b between
 *            steps t-1 and t into pieces that each run from h0 (c0), as
 *            separate sequences would: forwards the step at t starts from
 *            h0; in reverse the step at t-1 does (the piece ending at t-1
 *            runs on its own, backwards, from h0). A flag at t = 0 or at
 *            t >= lengths[b] changes nothing. The backward sums the
 *            gradients reaching h0 (c0) at every piece's start into dh0
 *            (dc0), and dw_hh pairs h0 with each piece's first step; no
 *            gradient crosses a cut.
 *   packed   a pack of w_ih, w_hh, b_ih, b_hh (fusedrnn_pack), or NULL. A
 *            forward given one, training or not, and a backward given one
 *            read the weights and biases from it alone: w_ih, w_hh, b_ih
 *            and b_hh may then be NULL, forward and backward (the backward
 *            reads no bias in any case). They pack nothing, with results
 *            bitwise those of the same call without it, for any thread
 *            count; one made for another ISA, cell, dtype, D or H is
 *            refused (FUSEDRNN_EPACKED) before anything is written. A call
 *            without a pack packs per call as before. */
typedef struct {
    const void *x, *h0, *c0, *w_ih, *w_hh, *b_ih, *b_hh;
    const int64_t *lengths;
    const uint8_t *resets;
    const void *packed;
} fusedrnn_inputs;

/* What a forward call writes.
 *   y        [T,B,H] (or [B,T,H]): h_t of every step
 *   h_n      [B,H], the state after each sequence's last valid step, or
 *            NULL: not written (a step's caller, T = 1, has it in y)
 *   c_n      [B,H], LSTM only (else unused): the cell state there
 *   reserve  what the backward needs, fusedrnn_reserve_size bytes, or NULL
 *            (inference). Gated cells: the activated gates of every step
 *            [T,B,G*H], then [T,B,H] of c_t (LSTM), W_hn h_{t-1} + b_hn
 *            (GRU) or r h_{t-1} (GRU_RESET_FIRST), in y's layout; rows past
 *            a sequence's length are not written. The RNN needs none (its y is enough). It must live
 *            until the backward of the same problem and inputs has run. */
typedef struct {
    void *FUSEDRNN_RESTRICT y, *FUSEDRNN_RESTRICT h_n, *FUSEDRNN_RESTRICT c_n;
    void *FUSEDRNN_RESTRICT reserve;
} fusedrnn_outputs;

/* What a backward call reads besides the inputs: the forward's results and
 * the loss gradients.
 *   y        forward's y (RNN: its derivative comes from it); rows at or past
 *            a sequence's length are never read
 *   reserve  gated cells: the forward's reserve (training), unchanged since
 *   dy       y-shaped, NULL means zeros; rows past a sequence's length are
 *            never read
 *   dh_n     [B,H], NULL means zeros
 *   dc_n     [B,H], LSTM only, NULL means zeros */
typedef struct {
    const void *y, *reserve, *dy, *dh_n, *dc_n;
} fusedrnn_grad_inputs;

/* What a backward call writes: the gradient of every input. dx, dh0, dc0,
 * dw_ih and dw_hh may be NULL: not computed (their products are left out,
 * as for a layer whose input, initial state or weights need no gradient),
 * the others' results unchanged, bitwise.
 *   dx       x-shaped
 *   dh0      [B,H]
 *   dc0      [B,H], LSTM only (else unused)
 *   dw_ih    [G*H,D]
 *   dw_hh    [G*H,H]
 *   db_ih    [G*H], the sum over time and batch of the input side's gate
 *            gradients
 *   db_hh    [G*H], the same for the recurrent side; equal to db_ih except
 *            in FUSEDRNN_GRU's n gate, where r scales b_hn. May be NULL (not
 *            written). */
typedef struct {
    void *FUSEDRNN_RESTRICT dx, *FUSEDRNN_RESTRICT dh0, *FUSEDRNN_RESTRICT dc0;
    void *FUSEDRNN_RESTRICT dw_ih, *FUSEDRNN_RESTRICT dw_hh;
    void *FUSEDRNN_RESTRICT db_ih, *FUSEDRNN_RESTRICT db_hh;
} fusedrnn_grads;

/* The number of gates of a cell (1, 4, 3), or 0 for an unknown one. */
int fusedrnn_gates(fusedrnn_cell cell);

/* What a cell is, for a binding to build its tables from rather than know
 * each cell by its number. */
typedef struct {
    const char *name;       /* "RNN", "LSTM", "GRU" */
    int gates;              /* G: the gate blocks of the weights' rows */
    int has_c;              /* a cell state c beside h: c0, c_n, dc_n, dc0 are used */
    int has_act;            /* reads fusedrnn_problem.act (the RNN's nonlinearity) */
    int reserve_rows;       /* the reserve per (t, b) row, in rows of H elements:
                               0 (the cell needs none) or G + 1 (bf16: one more,
                               y's float32 row) */
    int bias_grads_differ;  /* db_ih and db_hh differ (else they are equal) */
} fusedrnn_cell_info;

/* Cells are numbered from 0 to FUSEDRNN_CELL_COUNT - 1. */
#define FUSEDRNN_CELL_COUNT 4

/* The description of `cell`, or NULL for a value that names no cell. */
const fusedrnn_cell_info *fusedrnn_cell_describe(fusedrnn_cell cell);

/* Sizes in bytes, 0 on an invalid problem or when the size overflows; the
 * RNN's reserve is 0 (it has none), and so is an empty problem's (T, B or H
 * 0). A gated cell's reserve is exactly T*B*(G+1)*H elements of its dtype
 * (the gates, then c or W_hn h + b_hn); a bf16 call's is T*B*(G+2)*H float32
 * elements, y's float32 rows last, which its backward reads in place of the
 * rounded y. It needs no alignment beyond the element's. A gated cell's inference forward keeps one chunk of steps'
 * gates in its workspace, (1024 + B) x G*H elements at most, where training
 * writes all of them to the reserve. */
size_t fusedrnn_forward_workspace(const fusedrnn_problem *p);
size_t fusedrnn_backward_workspace(const fusedrnn_problem *p);
size_t fusedrnn_reserve_size(const fusedrnn_problem *p);

fusedrnn_status fusedrnn_forward(const fusedrnn_problem *p, const fusedrnn_inputs *in,
                                 const fusedrnn_outputs *out,
                                 void *workspace, size_t workspace_bytes);

/* Backward (BPTT) for the forward call with the same problem and inputs. */
fusedrnn_status fusedrnn_backward(const fusedrnn_problem *p, const fusedrnn_inputs *in,
                                  const fusedrnn_grad_inputs *gin, const fusedrnn_grads *grads,
                                  void *workspace, size_t workspace_bytes);

/* Weights packed once. Each forward call otherwise copies W_hh and W_ih^T
 * into the panels its product kernel reads (G*H*(H+D) elements) and adds
 * b_ih + b_hh, and each backward copies W_hh and W_ih into other panels
 * (as many again): at batch 1 that costs more than the products. A pack
 * holds them as the forward and the backward read them, for the active
 * ISA's blocking: a header naming what it was made for (ISA and blocking,
 * cell, dtype, D, H), the forward's W_hh and W_ih^T panels, the combined
 * bias and b_hh, then the backward's W_hh panels (its recurrent step), W_ih
 * panels (dx) and W_hh's first Gh*H rows' panels (dh0; Gh = G, but 2 for
 * FUSEDRNN_GRU_RESET_FIRST), about 2*G*H*(H+D) + Gh*H*H + 2*G*H elements in
 * all, each part padded to whole register panels (docs/design.md). It
 * depends on the problem's cell, dtype, D and H only: T, B, act, threads,
 * reverse, batch_first and training do not matter. It is position-independent (a byte copy elsewhere is as good),
 * and must be aligned to its dtype (a bf16 pack: to 4 bytes, it holds float32
 * panels); 64 bytes is fastest.
 *
 * fusedrnn_packed_size: its bytes on the active ISA, 0 for an invalid
 * problem or when the size overflows.
 * fusedrnn_pack: writes it for the active ISA into `packed` (`bytes` long)
 * from w_ih [G*H,D], w_hh [G*H,H] and the optional b_ih, b_hh [G*H] (NULL:
 * zeros); FUSEDRNN_EWORKSPACE when packed is NULL or bytes is less than the
 * size, FUSEDRNN_EINVAL for an invalid problem or a NULL weight (of a
 * nonzero size), FUSEDRNN_EOVERFLOW when the size overflows, writing
 * nothing then. A pack's bytes are a function of the weights. A later
 * fusedrnn_set_isa to another ISA makes the pack unusable: forwards and
 * backwards refuse it, and it must be made again. In training one pack
 * serves the forwards and backwards between two updates of the weights. */
size_t fusedrnn_packed_size(const fusedrnn_problem *p);
fusedrnn_status fusedrnn_pack(const fusedrnn_problem *p, const void *w_ih, const void *w_hh,
                              const void *b_ih, const void *b_hh, void *packed, size_t bytes);

/* Micro-kernel selection. The best ISA this CPU and OS support is chosen on
 * first use; fusedrnn_set_isa forces one ("scalar", "avx2", "avx512") and fails
 * with FUSEDRNN_EISA for an unknown or unsupported name. The library reads
 * no environment variable: FUSEDRNN_ISA and FUSEDRNN_NUM_THREADS are the
 * Python package's, which calls this and sets fusedrnn_problem.threads. */
fusedrnn_status fusedrnn_set_isa(const char *name);
const char *fusedrnn_get_isa(void);
/* Nonzero when `name` is compiled in and supported by this CPU and OS. */
int fusedrnn_isa_supported(const char *name);
/* Nonzero when the active ISA has a bf16 dot product this CPU runs
 * (AVX512_BF16 under "avx512"): what fusedrnn_peak_gflops(FUSEDRNN_BF16)
 * measures, and what bf16 calls' products then run on (elsewhere they are
 * float32 on the widened values). */
int fusedrnn_bf16_dot_supported(void);

/* Threads. A call uses up to fusedrnn_problem.threads of them: the caller's
 * and workers of fusedrnn's own pool, or, after fusedrnn_share_openmp, the
 * threads of an OpenMP runtime the process has loaded. Inside an OpenMP
 * program (PyTorch on the CPU is one) that runtime's threads spin for a
 * while after each parallel region, and a pool of fusedrnn's own would
 * fight them for the cores; its threads take fusedrnn's work at once.
 * `library` is the path or soname of a GNU libgomp (or a runtime with its
 * GOMP_parallel ABI, such as LLVM's libomp) that is already loaded; returns
 * nonzero on success, 0 if no such library is loaded or it lacks the entry
 * points (nothing changes then). No OpenMP setting is changed, and a forked
 * child goes back to fusedrnn's own pool. */
int fusedrnn_share_openmp(const char *library);

/* Measurement and test aids, on the active ISA. */

/* Tests: the pool's worker number `worker` (1 and up), when woken for a
 * call, waits `microseconds` before it starts, as a thread the OS has not
 * scheduled would; 0 microseconds undoes it. The call completes without it. */
void fusedrnn_hold_worker(int worker, int microseconds);

/* out[j] = act(z[j]), or with `derivative` out[j] = z[j] * act'(y[j]) where y
 * holds act's outputs: the step kernel's epilogue on a plain vector, so the
 * vector activations can be checked over the whole float range. Runs with
 * the caller's floating-point mode (no denormal flushing). y may be NULL
 * unless `derivative`. */
fusedrnn_status fusedrnn_activation(fusedrnn_dtype dtype, fusedrnn_act act, int derivative,
                                    int64_t n, const void *z, const void *y, void *out);

/* The longest fusedrnn_peak_gflops measures for, in seconds. */
#define FUSEDRNN_PEAK_MAX_SECONDS 60.0

/* GFLOP/s of a tight FMA loop on one thread (for FUSEDRNN_BF16, of the
 * bf16 dot product, vdpbf16ps, on a CPU with AVX512_BF16 running the
 * avx512 kernels; elsewhere the float32 FMA's, which bf16 calls then run
 * on): the best of timed runs of about
 * 0.1 ms each, repeated for about `seconds` in all. Efficiency figures divide
 * by this. It always returns: `seconds` above FUSEDRNN_PEAK_MAX_SECONDS is
 * taken as FUSEDRNN_PEAK_MAX_SECONDS, and a `seconds` that is not a finite
 * number greater than 0 (NaN, +-inf, 0, negative) gives a single run. */
double fusedrnn_peak_gflops(fusedrnn_dtype dtype, double seconds);

#ifdef __cplusplus
}
#endif
#endif
