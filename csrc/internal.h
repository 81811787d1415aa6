/* Shared by the drivers: the active micro-kernel table, the floating-point
 * mode guard and workspace carving. No intrinsics here or in any driver. */
#ifndef FUSEDRNN_INTERNAL_H
#define FUSEDRNN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "fusedrnn.h"
#include "kernels/kernels.h"

/* The table in force; a call reads it once and uses that table throughout. */
const isa_kernels *fusedrnn_active_kernels(void);

/* The step epilogue for an activation: forward, or times its derivative. */
static inline epilogue epilogue_of(fusedrnn_act act, int derivative)
{
    return (epilogue)(act + (derivative ? EPI_DTANH : EPI_TANH));
}

/* Flush denormals to zero for the duration of a call; restore the caller's mode. */
typedef struct { unsigned int saved; } fp_mode;
fp_mode fp_enter(void);
void fp_leave(fp_mode mode);

/* Workspace carving. The same layout code runs twice: with base == NULL to
 * measure (the query), then over the caller's buffer. Every piece is 64-byte
 * aligned; sizes are checked for overflow. */
typedef struct {
    char *base;
    size_t used;
    int overflow;
} arena;

void *arena_take(arena *a, size_t count, size_t elem_size);
size_t arena_checked_mul(arena *a, size_t x, size_t y);

#endif
