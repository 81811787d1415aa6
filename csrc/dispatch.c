/* Which micro-kernels run: the scalar table first, then the best ISA this
 * CPU and OS support, chosen once; fusedrnn_set_isa overrides the choice. */
#include <stdatomic.h>
#include <string.h>

#include "internal.h"

/* Best first. */
static const isa_kernels *const compiled[] = {&isa_avx512, &isa_avx2, &isa_scalar};
#define N_COMPILED (sizeof compiled / sizeof compiled[0])

static _Atomic(const isa_kernels *) active;

static const isa_kernels *best_supported(void)
{
    for (size_t i = 0; i < N_COMPILED; i++)
        if (compiled[i]->supported())
            return compiled[i];
    return &isa_scalar;
}

const isa_kernels *fusedrnn_active_kernels(void)
{
    const isa_kernels *k = atomic_load(&active);
    if (!k) {
        /* Racing first calls all compute the same answer; one store wins. */
        const isa_kernels *expected = NULL;
        k = best_supported();
        if (!atomic_compare_exchange_strong(&active, &expected, k))
            k = expected;
    }
    return k;
}

static const isa_kernels *find(const char *name)
{
    for (size_t i = 0; name && i < N_COMPILED; i++)
        if (strcmp(compiled[i]->name, name) == 0 && compiled[i]->supported())
            return compiled[i];
    return NULL;
}

int fusedrnn_isa_supported(const char *name) { return find(name) != NULL; }

fusedrnn_status fusedrnn_set_isa(const char *name)
{
    const isa_kernels *k = find(name);
    if (!k)
        return FUSEDRNN_EISA;
    atomic_store(&active, k);
    return FUSEDRNN_OK;
}

const char *fusedrnn_get_isa(void) { return fusedrnn_active_kernels()->name; }
