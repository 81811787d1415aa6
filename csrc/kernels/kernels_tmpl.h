/* Included once per dtype by kernels.h, with REAL and SFX(name) defined. */

/* The rows of one step that a cell kernel works on: each field an array of
 * m row pointers (one per sequence still running), of which the kernel
 * touches columns [col, col + n) of the hidden units; gate q of a gates row
 * is at q*H + j, in PyTorch's order (LSTM i f g o, GRU r z n). The driver
 * fills the fields its cell's kernels read.
 *               forward                          backward
 *   gates   [G*H] pre-activations in,          activated gates in (reserve)
 *                 activated gates out
 *   state   [H]   LSTM c_t out; GRU hn in      LSTM c_t in; GRU hn in (reserve)
 *                 (hn = W_hn h_{t-1} + b_hn);
 *                 GRU reset first: r h_{t-1} out
 *   prev    [H]   LSTM c_{t-1}; GRU h_{t-1}    the same
 *   h       [H]   h_t out (the row of y)       dh_t in: dgates_{t+1} W_hh + dy_t;
 *                                              GRU reset first's second phase:
 *                                              d(r h_{t-1}) = dn_t W_hn
 *   carry   [H]                                in from step t+1, out to step t-1:
 *                                              LSTM dc; GRU z * dh
 *   dgates  [G*H]                              out: d pre-activations, recurrent side
 *   dxn     [H]                                GRU out: d of n's input side */
typedef struct {
    int64_t H;
    REAL *const *gates;
    REAL *const *state;
    const REAL *const *prev;
    REAL *const *h;
    REAL *const *carry;
    REAL *const *dgates;
    REAL *const *dxn;
} SFX(cell_rows);

typedef void (*SFX(cell_kernel))(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r);

/* One ISA's micro-kernels for one dtype. An ISA's table names the entries
 * it has (designated initializers) and leaves the others NULL: the table in
 * force is its base's with these entries put over it (dispatch.c). The
 * blocking belongs to the product kernel: set with `step`, and only then. */
typedef struct {
    /* Register tile and cache blocking of the GEMM engine for this ISA. */
    int64_t mr, nr, mc, kc, nc;

    /* The one product kernel, for the recurrent step and every GEMM alike,
     * on m <= mr rows and n columns:
     * acc[i][j] = sum_p a_rows[i][p] * B[p][j], then
     * c_rows[i][col + j] = epi(c_rows[i][col + j] + acc[i][j], aux_rows[i][col + j])
     * (EPI_SET and EPI_BIAS leave out c's old value). a_rows are unpacked
     * rows of k elements; B is packed in ceil(n/nr) panels, panel q at
     * Bp + q*k*nr holding k rows of nr columns (k-major), zero-padded;
     * aux_rows (y, or the bias) is read by the backward epilogues and
     * EPI_BIAS only, and may be NULL otherwise. */
    void (*step)(int64_t k, const REAL *const *a_rows, const REAL *Bp,
                 REAL *const *c_rows, const REAL *const *aux_rows,
                 int64_t col, int64_t m, int64_t n, epilogue epi);

    /* dst[j*ldd + i] = src[i*lds + j] for i < rows, j < cols: how the
     * drivers pack a transposed operand. */
    void (*transpose)(int64_t rows, int64_t cols, const REAL *src, int64_t lds,
                      REAL *dst, int64_t ldd);

    /* The per-step elementwise maths of the gated cells, by cell_kernel_id
     * (the Elman RNN's runs in the step kernel's epilogue). LSTM forward
     * writes c_t into state; GRU reads hn from it. */
    SFX(cell_kernel) cell[CELL_KERNELS];

    /* out[j] = epi(z[j], aux[j]) for j < n, with the step kernel's vector
     * activations: how they are tested alone. aux may be NULL (forward). */
    void (*apply)(int64_t n, const REAL *z, const REAL *aux, REAL *out, epilogue epi);

    /* The peak probe: `iters` rounds of independent FMA chains, as fast as
     * this ISA can issue them; returns the flops done, writes a result to
     * *sink so that the work cannot be optimised away. */
    double (*fma_probe)(int64_t iters, REAL *sink);

    /* A product of few k, k <= FUSEDRNN_FEW_K (a weight gradient at batch 1
     * to 4, K = T*B):
     * c[i*ldc + j] = (accumulate ? c[i*ldc + j] : 0) + acc[i][j] for i < m,
     * j < n, acc[i][j] the sum over p < k of a[i*ars + p*acs] b[p*ldb + j]
     * in order of p, leaving out every p with keep[p] == 0 (keep NULL: none).
     * C row by row, B's rows read where they are: the product is its
     * stores, which `step`'s tiles make a few columns of many rows at a
     * time, with a tile's setup for a few multiply-adds. */
    void (*few_k)(int64_t m, int64_t n, int64_t k, const REAL *a, int64_t ars, int64_t acs,
                  const REAL *b, int64_t ldb, const unsigned char *keep, REAL *c, int64_t ldc,
                  int accumulate);
} SFX(ukr);

void SFX(step_ref)(int64_t k, const REAL *const *a_rows, const REAL *Bp,
                   REAL *const *c_rows, const REAL *const *aux_rows,
                   int64_t col, int64_t m, int64_t n, epilogue epi);
void SFX(transpose_ref)(int64_t rows, int64_t cols, const REAL *src, int64_t lds,
                        REAL *dst, int64_t ldd);
void SFX(lstm_forward_ref)(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r);
void SFX(lstm_backward_ref)(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r);
void SFX(gru_forward_ref)(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r);
void SFX(gru_backward_ref)(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r);
void SFX(gru_rf_forward_rz_ref)(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r);
void SFX(gru_rf_forward_n_ref)(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r);
void SFX(gru_rf_backward_zn_ref)(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r);
void SFX(gru_rf_backward_r_ref)(int64_t m, int64_t col, int64_t n, const SFX(cell_rows) *r);
void SFX(apply_ref)(int64_t n, const REAL *z, const REAL *aux, REAL *out, epilogue epi);
double SFX(fma_probe_ref)(int64_t iters, REAL *sink);
void SFX(few_k_ref)(int64_t m, int64_t n, int64_t k, const REAL *a, int64_t ars, int64_t acs,
                    const REAL *b, int64_t ldb, const unsigned char *keep, REAL *c, int64_t ldc,
                    int accumulate);
