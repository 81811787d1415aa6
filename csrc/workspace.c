#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

#define ALIGN 64

size_t arena_checked_mul(arena *a, size_t x, size_t y)
{
    size_t r;
    if (__builtin_mul_overflow(x, y, &r)) {
        a->overflow = 1;
        return 0;
    }
    return r;
}

void *arena_take(arena *a, size_t count, size_t elem_size)
{
    size_t bytes = arena_checked_mul(a, count, elem_size);
    size_t start = (a->used + ALIGN - 1) & ~(size_t)(ALIGN - 1);
    if (start < a->used || __builtin_add_overflow(start, bytes, &a->used))
        a->overflow = 1;
    return a->base ? a->base + start : NULL;
}

void fusedrnn_fail(const char *file, int line, const char *what)
{
    fprintf(stderr, "fusedrnn: internal check failed at %s:%d: %s\n", file, line, what);
    abort();
}
