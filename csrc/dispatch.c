/* Which micro-kernels run: the best ISA this CPU and OS support, chosen
 * once; fusedrnn_set_isa overrides the choice. The table of an ISA in force
 * is complete: its base's, entry by entry overridden by its own (BLIS's
 * reference-then-override configuration), so that a slot an ISA leaves
 * empty runs the kernel of the ISA it builds on, in the end the reference. */
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "internal.h"

/* Best first. */
static const isa_kernels *const compiled[] = {&isa_avx512, &isa_avx2, &isa_scalar};
#define N_COMPILED (sizeof compiled / sizeof compiled[0])

/* The entries `over` has, put over the table `t`. The blocking comes with
 * the product kernel it was tuned for. */
#define OVERRIDE_FROM(over, field) if ((over)->field) t->field = (over)->field
#define OVERRIDE(field) OVERRIDE_FROM(over, field)
#define OVERRIDE_UKR(T)                                                      \
    static void override_##T(ukr_##T *t, const ukr_##T *over)                \
    {                                                                        \
        if (over->step) {                                                    \
            t->step = over->step;                                            \
            t->mr = over->mr, t->nr = over->nr, t->mc = over->mc;            \
            t->kc = over->kc, t->nc = over->nc;                              \
        }                                                                    \
        OVERRIDE(transpose);                                                 \
        for (int id = 0; id < CELL_KERNELS; id++)                            \
            OVERRIDE(cell[id]);                                              \
        OVERRIDE(apply);                                                     \
        OVERRIDE(fma_probe);                                                 \
        OVERRIDE(few_k);                                                     \
    }
OVERRIDE_UKR(f32)
OVERRIDE_UKR(f64)

/* An ISA's bf16 entries only where the CPU has their instructions (all of
 * them or none: its conversions use them too); their cell kernels are the
 * completed float32 table's. */
static void override_bf16(ukr_bf16 *t, const ukr_bf16 *over, const ukr_f32 *f32)
{
    if (!over->supported || over->supported()) {
        if (over->step) {
            t->supported = over->supported, t->step = over->step;
            t->mr = over->mr, t->nr = over->nr, t->mc = over->mc;
            t->kc = over->kc, t->nc = over->nc;
        }
        OVERRIDE(fma_probe);
        OVERRIDE(transpose);
        OVERRIDE(narrow);
        OVERRIDE(pack_pairs);
        OVERRIDE(pack_pairs_t);
    }
    memcpy(t->cell, f32->cell, sizeof t->cell);
}

void fusedrnn_complete_kernels(isa_kernels *t, const isa_kernels *isa)
{
    if (isa->base)
        fusedrnn_complete_kernels(t, isa->base);
    else
        memset(t, 0, sizeof *t);
    t->name = isa->name, t->supported = isa->supported, t->base = isa->base;
    override_f32(&t->f32, &isa->f32);
    override_f64(&t->f64, &isa->f64);
    override_bf16(&t->bf16, &isa->bf16, &t->f32);
}

static isa_kernels complete[N_COMPILED];
static pthread_once_t completed = PTHREAD_ONCE_INIT;

static void complete_all(void)
{
    for (size_t i = 0; i < N_COMPILED; i++)
        fusedrnn_complete_kernels(&complete[i], compiled[i]);
}

static _Atomic(const isa_kernels *) active;

static const isa_kernels *best_supported(void)
{
    for (size_t i = 0; i < N_COMPILED; i++)
        if (complete[i].supported())
            return &complete[i];
    return &complete[N_COMPILED - 1];
}

const isa_kernels *fusedrnn_active_kernels(void)
{
    const isa_kernels *k = atomic_load(&active);
    if (!k) {
        /* Racing first calls all compute the same answer; one store wins. */
        const isa_kernels *expected = NULL;
        pthread_once(&completed, complete_all);
        k = best_supported();
        if (!atomic_compare_exchange_strong(&active, &expected, k))
            k = expected;
    }
    return k;
}

void fusedrnn_use_kernels(const isa_kernels *complete_table)
{
    atomic_store(&active, complete_table);
}

static const isa_kernels *find(const char *name)
{
    pthread_once(&completed, complete_all);
    for (size_t i = 0; name && i < N_COMPILED; i++)
        if (strcmp(complete[i].name, name) == 0 && complete[i].supported())
            return &complete[i];
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
