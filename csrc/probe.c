/* Measurement and test aids: the activations alone and the FMA peak. */
#include <math.h>
#include <time.h>

#include "internal.h"
#include "kernels/kernels.h"

fusedrnn_status fusedrnn_activation(fusedrnn_dtype dtype, fusedrnn_act act, int derivative,
                                    int64_t n, const void *z, const void *y, void *out)
{
    if ((dtype != FUSEDRNN_F32 && dtype != FUSEDRNN_F64) || n < 0 || (derivative && !y) ||
        (act != FUSEDRNN_TANH && act != FUSEDRNN_RELU && act != FUSEDRNN_SIGMOID))
        return FUSEDRNN_EINVAL;
    const isa_kernels *k = fusedrnn_active_kernels();
    epilogue epi = epilogue_of(act, derivative);
    if (dtype == FUSEDRNN_F32)
        k->f32.apply(n, z, derivative ? y : NULL, out, epi);
    else
        k->f64.apply(n, z, derivative ? y : NULL, out, epi);
    return FUSEDRNN_OK;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int fusedrnn_bf16_dot_supported(void)
{
    return fusedrnn_active_kernels()->bf16.step != NULL;
}

double fusedrnn_peak_gflops(fusedrnn_dtype dtype, double seconds)
{
    const isa_kernels *k = fusedrnn_active_kernels();
    const int64_t iters = 20000;   /* ~0.1 ms a run: short enough to dodge interrupts */
    /* This loop runs without the GIL and nothing can interrupt it, so it must
     * end whatever it is given: +inf would never be reached. Not a finite
     * positive duration (NaN, +-inf, <= 0): one run; a long one: capped. */
    if (!isfinite(seconds) || seconds <= 0)
        seconds = 0;
    else if (seconds > FUSEDRNN_PEAK_MAX_SECONDS)
        seconds = FUSEDRNN_PEAK_MAX_SECONDS;
    double best = 0, sink[8], end = now() + seconds;
    const int bf16_dot = fusedrnn_bf16_dot_supported();
    do {
        double t0 = now();
        double flops = dtype == FUSEDRNN_F64 ? k->f64.fma_probe(iters, sink)
                       : dtype == FUSEDRNN_BF16 && bf16_dot ? k->bf16.fma_probe(iters, (float *)sink)
                                                            : k->f32.fma_probe(iters, (float *)sink);
        double rate = flops / (now() - t0) * 1e-9;
        best = rate > best ? rate : best;
    } while (now() < end);
    return best;
}
