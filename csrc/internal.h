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

/* The kernel's floating-point mode (flush denormals, round to nearest, no
 * traps) for the duration of a call; fp_leave restores the caller's. */
typedef struct { unsigned int saved; } fp_mode;
fp_mode fp_enter(void);
void fp_leave(fp_mode mode);

/* Fork-join threads. team_run calls fn(ctx, tid, n, team) on n <= nthreads
 * threads (the caller is tid 0) and returns when all are done; n may be 1
 * (team NULL) when the pool is in use by another call. team_barrier waits
 * for the whole team. Split work by output tiles only: results must not
 * depend on n. */
#define FUSEDRNN_MAX_THREADS 64
typedef struct team team;
typedef void (*team_fn)(void *ctx, int tid, int n, team *t);
void team_run(int nthreads, team_fn fn, void *ctx);
void team_barrier(team *t);

/* [begin, end) of `count` items for thread tid of n, in whole multiples of `unit`. */
static inline void team_share(int64_t count, int64_t unit, int tid, int n,
                              int64_t *begin, int64_t *end)
{
    int64_t units = (count + unit - 1) / unit;
    *begin = units * tid / n * unit;
    *end = units * (tid + 1) / n * unit;
    *end = *end < count ? *end : count;
}

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

/* A bound that the layout code guarantees, checked where the buffer is
 * written (every pack against its slab). A failure is a bug in fusedrnn:
 * the process stops, naming the check, rather than writing past a buffer.
 * Always on: one comparison per packed block. */
#define FUSEDRNN_ASSERT(cond) ((cond) ? (void)0 : fusedrnn_fail(__FILE__, __LINE__, #cond))
_Noreturn void fusedrnn_fail(const char *file, int line, const char *what);

#endif
