/* What the CPU and the OS support. Baseline code: it must run, and answer
 * "no", on a CPU without AVX. */
#include <cpuid.h>

#include "kernels/kernels.h"

#define XCR0_SSE_AVX 0x06u      /* XMM and YMM state saved by the OS */
#define XCR0_AVX512 0xe0u       /* opmask, ZMM0-15 upper halves, ZMM16-31 */

static unsigned long long xcr0(void)
{
    unsigned int eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static int os_saves(unsigned long long mask)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
        return 0;
    return (xcr0() & mask) == mask;
}

static unsigned int leaf7_ebx(void)
{
    unsigned int a, b, c, d;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) ? b : 0;
}

int cpu_has_avx2(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_FMA) || !(c & bit_AVX))
        return 0;
    return (leaf7_ebx() & bit_AVX2) && os_saves(XCR0_SSE_AVX);
}

int cpu_has_avx512(void)
{
    return cpu_has_avx2() && (leaf7_ebx() & bit_AVX512F) && os_saves(XCR0_SSE_AVX | XCR0_AVX512);
}

/* CPUID leaf 7, subleaf 1, EAX bit 5: vdpbf16ps and the bf16 conversions. */
int cpu_has_avx512_bf16(void)
{
    unsigned int a, b, c, d;
    return cpu_has_avx512() && __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 5));
}
