/* Shared by the drivers: the active micro-kernel table, the floating-point
 * mode guard and workspace carving. No intrinsics here or in any driver. */
#ifndef FUSEDRNN_INTERNAL_H
#define FUSEDRNN_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "fusedrnn.h"
#include "kernels/kernels.h"

/* The table in force, complete; a call reads it once and uses that table
 * throughout. */
const isa_kernels *fusedrnn_active_kernels(void);

/* `isa`'s table as it runs: its base's, completed the same way, with the
 * entries `isa` has put over it. */
void fusedrnn_complete_kernels(isa_kernels *complete, const isa_kernels *isa);

/* Tests (tests/c/driver.c): put a complete table in force, as
 * fusedrnn_set_isa does a compiled ISA's. */
void fusedrnn_use_kernels(const isa_kernels *complete);

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

/* Threads (threads.c). team_run calls fn(ctx, tid, n) on up to nthreads
 * threads (the caller is tid 0; n is the team's size, at most nthreads) and
 * returns when every member that ran is done. A member may never run (the
 * pool in use by another call, a worker the OS has not scheduled, an OpenMP
 * runtime that gives fewer threads): fn splits its work into fixed pieces
 * that members claim (team_take, or a claim of its own), so that the
 * members that do run take every piece, tid and n only saying where a
 * member starts. Pieces are output tiles, never parts of a reduction:
 * results must not depend on who computes which. */
#define FUSEDRNN_MAX_THREADS 64
typedef void (*team_fn)(void *ctx, int tid, int n);
void team_run(int nthreads, team_fn fn, void *ctx);

/* A count that members wait on: counter_await returns once it has reached
 * `target` (compared as a difference, so it may wrap), spinning briefly and
 * then sleeping, so that the core is free for a member that was not
 * running. counter_add wakes the sleepers. */
typedef struct {
    _Alignas(64) atomic_uint value;
    atomic_uint sleepers;
} team_counter;
void counter_add(team_counter *c, unsigned k);
void counter_await(team_counter *c, unsigned target);

/* [begin, end) of `count` items for thread tid of n, in whole multiples of `unit`. */
static inline void team_share(int64_t count, int64_t unit, int tid, int n,
                              int64_t *begin, int64_t *end)
{
    int64_t units = (count + unit - 1) / unit;
    *begin = units * tid / n * unit;
    *end = units * (tid + 1) / n * unit;
    *end = *end < count ? *end : count;
}

/* A job of `pieces` pieces over `count` items, in whole multiples of
 * `unit`: the next piece not yet claimed, [begin, end), or 0 when every
 * piece is taken. */
static inline int team_take(atomic_llong *next, int64_t pieces, int64_t count, int64_t unit,
                            int64_t *begin, int64_t *end)
{
    int64_t piece = atomic_fetch_add_explicit(next, 1, memory_order_relaxed);
    if (piece >= pieces)
        return 0;
    team_share(count, unit, (int)piece, (int)pieces, begin, end);
    return 1;
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
