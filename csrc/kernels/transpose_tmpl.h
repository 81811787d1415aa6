/* dst[j*ldd + i] = src[i*lds + j] for i < rows, j < cols: the copy behind
 * every transposed operand the drivers pack (W^T in the forward, dz^T for
 * the weight gradients). Whole BS x BS blocks go through BLOCK, in
 * registers; the edges go element by element. Included once per dtype and
 * ISA with REAL, SFX(name), BS and BLOCK defined. */
static void SFX(transpose)(int64_t rows, int64_t cols, const REAL *src, int64_t lds,
                           REAL *dst, int64_t ldd)
{
    int64_t i = 0;
    for (; i + BS <= rows; i += BS) {
        int64_t j = 0;
        for (; j + BS <= cols; j += BS)
            BLOCK(src + i * lds + j, lds, dst + j * ldd + i, ldd);
        for (; j < cols; j++)
            for (int64_t ii = i; ii < i + BS; ii++)
                dst[j * ldd + ii] = src[ii * lds + j];
    }
    for (; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            dst[j * ldd + i] = src[i * lds + j];
}
