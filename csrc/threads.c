/* A small fork-join pool for the drivers. Workers are created on first use
 * and kept; between jobs they spin briefly (back-to-back calls, per-call
 * latency) and then sleep, each on its own condition variable, so an idle
 * fusedrnn costs no CPU inside a PyTorch or NumPy process. A job wakes only
 * the workers it uses, tids 1..n-1: after one wide call, the workers beyond
 * a narrower job's team sleep through it and it never waits for them. One
 * job runs at a time: a caller that finds the pool busy runs its job on its
 * own thread, which gives the same bits, since work is split by output
 * tiles, never by reductions. A forked child starts with a fresh pool of no
 * workers (fork_child). */
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

/* One per worker, so that waking one wakes no other. `go` is bumped once for
 * each job the worker is in; it spins on it, then sleeps on `wake`. A cache
 * line each: the team's spinning workers would otherwise share one. */
struct slot {
    _Alignas(64) atomic_uint go;
    pthread_mutex_t lock;       /* guards the wait on go */
    pthread_cond_t wake;
};

static struct {
    pthread_mutex_t lock;       /* guards workers and starting them */
    atomic_flag busy;
    int workers;                /* started so far: slots 1..workers */
    atomic_int pending;         /* team workers still inside the current job */
    team_fn fn;
    void *ctx;
    struct team team;
    struct slot slot[FUSEDRNN_MAX_THREADS];   /* by tid; 0 is the caller's, unused */
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .busy = ATOMIC_FLAG_INIT};

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

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void *worker(void *arg)
{
    struct slot *s = arg;
    int tid = (int)(s - pool.slot);
    unsigned seen = 0;   /* start_worker set go to 0; the first job bumps it */
    fp_enter();   /* jobs run in the kernel's mode, as on the calling thread */
    for (;;) {
        unsigned g, round = 0;
        int64_t until = now_ns() + SPIN_NS;
        while ((g = atomic_load_explicit(&s->go, memory_order_acquire)) == seen &&
               ((++round & 63) || now_ns() < until))
            __builtin_ia32_pause();
        if (g == seen) {
            pthread_mutex_lock(&s->lock);
            while ((g = atomic_load_explicit(&s->go, memory_order_acquire)) == seen)
                pthread_cond_wait(&s->wake, &s->lock);
            pthread_mutex_unlock(&s->lock);
        }
        seen = g;
        pool.fn(pool.ctx, tid, pool.team.n, &pool.team);
        atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_release);
    }
    return NULL;
}

/* A worker for slot tid, its slot made anew: in a forked child the slot
 * still holds what the parent's worker left in it. Under pool.lock. */
static int start_worker(int tid)
{
    struct slot *s = &pool.slot[tid];
    atomic_init(&s->go, 0);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->wake, NULL);
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int failed = pthread_create(&th, &attr, worker, s);
    pthread_attr_destroy(&attr);
    if (failed) {
        pthread_cond_destroy(&s->wake);
        pthread_mutex_destroy(&s->lock);
    }
    return !failed;
}

/* Start workers up to n-1; returns how many threads a job can have. */
static int ensure_workers(int n)
{
    pthread_mutex_lock(&pool.lock);
    if (n > FUSEDRNN_MAX_THREADS)
        n = FUSEDRNN_MAX_THREADS;
    while (pool.workers < n - 1 && start_worker(pool.workers + 1))
        pool.workers++;
    int have = pool.workers + 1;
    pthread_mutex_unlock(&pool.lock);
    return have < n ? have : n;
}

/* Start one team member on the job in pool.fn/ctx/team: the release on go
 * publishes the job to a worker that spins. go changes under the slot's
 * lock, which the worker holds from its last look at go until it waits, so
 * the signal cannot fall between the two and be lost. */
static void wake(struct slot *s)
{
    pthread_mutex_lock(&s->lock);
    atomic_fetch_add_explicit(&s->go, 1, memory_order_release);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
}

/* fork() copies only the calling thread: the child has none of the
 * workers, and may have been copied mid-job (the pool busy, pending > 0,
 * a lock held) by a thread it does not have either. Nothing of that is
 * carried over: the child gets the pool a fresh process has, no workers,
 * its locks made anew rather than unlocked (their holders are gone), and
 * its first multi-thread call starts workers of its own. Since nothing is
 * kept, the parent need not be held still over the fork (no prepare
 * handler). */
static void fork_child(void)
{
    pthread_mutex_init(&pool.lock, NULL);
    atomic_flag_clear(&pool.busy);
    pool.workers = 0;
    atomic_init(&pool.pending, 0);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, fork_child);
}

void team_run(int nthreads, team_fn fn, void *ctx)
{
    /* Before taking the pool, so that a fork from any other thread while
     * this one holds it already resets the child's copy. */
    if (nthreads > 1)
        pthread_once(&atfork_once, register_atfork);
    if (nthreads > 1 && !atomic_flag_test_and_set_explicit(&pool.busy, memory_order_acquire)) {
        int n = ensure_workers(nthreads);
        if (n > 1) {
            pool.fn = fn;
            pool.ctx = ctx;
            pool.team.n = n;
            atomic_store_explicit(&pool.team.arrived, 0, memory_order_relaxed);
            atomic_store_explicit(&pool.pending, n - 1, memory_order_relaxed);
            for (int tid = 1; tid < n; tid++)
                wake(&pool.slot[tid]);
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
