/* A small fork-join pool for the drivers. Workers are created on first use
 * and kept; between jobs they spin briefly (back-to-back calls, per-call
 * latency) and then sleep on a condition variable, so an idle fusedrnn costs
 * no CPU inside a PyTorch or NumPy process. One job runs at a time: a caller
 * that finds the pool busy runs its job on its own thread, which gives the
 * same bits, since work is split by output tiles, never by reductions. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <time.h>

#include "internal.h"

/* How long an idle worker stays awake for the next job: long enough to
 * cover the Python between back-to-back calls, short enough that a worker
 * never takes a core from the caller's own work (NumPy's BLAS threads, torch)
 * for more than a blink. */
#define SPIN_NS 50000

struct team {
    int n;
    atomic_int arrived;
    atomic_int phase;
};

static struct {
    pthread_mutex_t lock;       /* guards job fields, workers, sleeping */
    pthread_cond_t wake;
    atomic_flag busy;
    int workers;                /* started so far */
    atomic_uint generation;     /* bumped per job */
    atomic_int pending;         /* workers still inside the current job */
    team_fn fn;
    void *ctx;
    struct team team;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .wake = PTHREAD_COND_INITIALIZER,
            .busy = ATOMIC_FLAG_INIT};

/* Spin politely; past a few thousand rounds the thread we wait for is
 * probably not running (a loaded machine), so give it our core. */
static inline void cpu_relax(unsigned *round)
{
    if (++*round < 4096)
        __builtin_ia32_pause();
    else
        sched_yield();
}

void team_barrier(team *t)
{
    if (!t || t->n == 1)
        return;
    unsigned round = 0;
    int phase = atomic_load_explicit(&t->phase, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&t->arrived, 1, memory_order_acq_rel) == t->n - 1) {
        atomic_store_explicit(&t->arrived, 0, memory_order_relaxed);
        atomic_store_explicit(&t->phase, phase + 1, memory_order_release);
    } else {
        while (atomic_load_explicit(&t->phase, memory_order_acquire) == phase)
            cpu_relax(&round);
    }
}

/* The job generation each worker was created at: it waits for the next one. */
static unsigned start_generation[FUSEDRNN_MAX_THREADS];

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *worker(void *arg)
{
    int tid = (int)(intptr_t)arg;
    unsigned seen = start_generation[tid];
    fp_enter();   /* jobs run in the kernel's mode, as on the calling thread */
    for (;;) {
        unsigned g, round = 0;
        int64_t until = now_ns() + SPIN_NS;
        while ((g = atomic_load_explicit(&pool.generation, memory_order_acquire)) == seen &&
               ((++round & 63) || now_ns() < until))
            __builtin_ia32_pause();
        if (g == seen) {
            pthread_mutex_lock(&pool.lock);
            while ((g = atomic_load(&pool.generation)) == seen)
                pthread_cond_wait(&pool.wake, &pool.lock);
            pthread_mutex_unlock(&pool.lock);
        }
        seen = g;
        if (tid < pool.team.n)
            pool.fn(pool.ctx, tid, pool.team.n, &pool.team);
        atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_acq_rel);
    }
    return NULL;
}

/* Start workers up to n-1; returns how many threads a job can have. */
static int ensure_workers(int n)
{
    pthread_mutex_lock(&pool.lock);
    if (n > FUSEDRNN_MAX_THREADS)
        n = FUSEDRNN_MAX_THREADS;
    while (pool.workers < n - 1) {
        pthread_t th;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        start_generation[pool.workers + 1] = atomic_load(&pool.generation);
        int failed = pthread_create(&th, &attr, worker, (void *)(intptr_t)(pool.workers + 1));
        pthread_attr_destroy(&attr);
        if (failed)
            break;
        pool.workers++;
    }
    int have = pool.workers + 1;
    pthread_mutex_unlock(&pool.lock);
    return have < n ? have : n;
}

void team_run(int nthreads, team_fn fn, void *ctx)
{
    if (nthreads > 1 && !atomic_flag_test_and_set_explicit(&pool.busy, memory_order_acquire)) {
        int n = ensure_workers(nthreads);
        if (n > 1) {
            pthread_mutex_lock(&pool.lock);
            pool.fn = fn;
            pool.ctx = ctx;
            pool.team.n = n;
            atomic_store(&pool.team.arrived, 0);
            atomic_store(&pool.pending, pool.workers);
            atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
            pthread_cond_broadcast(&pool.wake);
            pthread_mutex_unlock(&pool.lock);
            fn(ctx, 0, n, &pool.team);
            unsigned round = 0;
            while (atomic_load_explicit(&pool.pending, memory_order_acquire) > 0)
                cpu_relax(&round);
            atomic_flag_clear_explicit(&pool.busy, memory_order_release);
            return;
        }
        atomic_flag_clear_explicit(&pool.busy, memory_order_release);
    }
    fn(ctx, 0, 1, NULL);
}
