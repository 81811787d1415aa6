/* Included once per dtype by kernels.h, with REAL and SFX(name) defined. */

typedef struct {
    /* Register tile and cache blocking of the GEMM engine for this ISA. */
    int64_t mr, nr, mc, kc, nc;

    /* C[m,n] (= or +=) Ap * Bp over k, m <= mr, n <= nr.
     * Ap: k columns of mr packed rows (k-major), Bp: k rows of nr packed
     * columns (k-major); both zero-padded to full tiles. C row-major, ldc. */
    void (*gemm)(int64_t k, const REAL *Ap, const REAL *Bp,
                 REAL *C, int64_t ldc, int64_t m, int64_t n, int accumulate);

    /* The recurrent step on one tile, m <= mr rows, n <= nr columns:
     * acc[i][j] = sum_p a_rows[i][p] * Bp[p*nr + j], then
     * c_rows[i][col + j] = epi(c_rows[i][col + j] + acc[i][j], aux_rows[i][col + j]).
     * a_rows are whole unpacked rows of k elements; aux_rows is NULL for the
     * forward epilogues. */
    void (*step)(int64_t k, const REAL *const *a_rows, const REAL *Bp,
                 REAL *const *c_rows, const REAL *const *aux_rows,
                 int64_t col, int64_t m, int64_t n, epilogue epi);

    /* out[j] = epi(z[j], aux[j]) for j < n, with the step kernel's vector
     * activations: how they are tested alone. aux may be NULL (forward). */
    void (*apply)(int64_t n, const REAL *z, const REAL *aux, REAL *out, epilogue epi);

    /* The peak probe: `iters` rounds of independent FMA chains, as fast as
     * this ISA can issue them; returns the flops done, writes a result to
     * *sink so that the work cannot be optimised away. */
    double (*fma_probe)(int64_t iters, REAL *sink);
} SFX(ukr);

void SFX(gemm_ref)(int64_t k, const REAL *Ap, const REAL *Bp,
                   REAL *C, int64_t ldc, int64_t m, int64_t n, int accumulate);
void SFX(step_ref)(int64_t k, const REAL *const *a_rows, const REAL *Bp,
                   REAL *const *c_rows, const REAL *const *aux_rows,
                   int64_t col, int64_t m, int64_t n, epilogue epi);
void SFX(apply_ref)(int64_t n, const REAL *z, const REAL *aux, REAL *out, epilogue epi);
double SFX(fma_probe_ref)(int64_t iters, REAL *sink);
