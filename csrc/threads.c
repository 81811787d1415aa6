/* The drivers' threads: a team that never waits for a member that is not
 * running.
 *
 * A job is work in fixed pieces (tiles of columns, chunks of rows) that the
 * members claim one at a time: whichever member runs takes what the others
 * have not started, so a member that the OS has descheduled (another
 * library's spinning thread holds its core) delays no piece it has not
 * claimed. Membership is claimed too: a worker joins a job when it starts
 * running, and once the caller has claimed the last piece it closes the job
 * and waits only for the members that joined. A member that has to wait for
 * another's piece spins briefly, then sleeps on a futex, so that its core is
 * free for the member it waits for. Results do not depend on who computes
 * which piece: pieces are output tiles, never parts of a reduction.
 *
 * Two ways to run a job. The pool: workers created on first use and kept;
 * between jobs they spin briefly (back-to-back calls) and then sleep, each
 * on its own futex, so an idle fusedrnn costs no CPU and a job wakes only
 * the workers it uses. A forked child starts with a fresh pool of no
 * workers (fork_child). Or, once fusedrnn.torch has named the OpenMP runtime
 * torch runs on (fusedrnn_share_openmp), that runtime's own threads: inside a
 * PyTorch program they are spinning after torch's last operator, and a job
 * of fusedrnn's own workers would fight them for the cores. */
#include <dlfcn.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* How long a thread spins before it sleeps, an idle worker for the next job
 * or a member for another's piece: long enough to cover the Python between
 * back-to-back calls and the skew of a step's pieces, short enough that a
 * spinning fusedrnn thread never keeps a core from the thread it waits for,
 * or from the caller's own work (NumPy's BLAS threads, torch), for more than
 * a blink. */
#define SPIN_NS 50000

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void futex_wait(atomic_uint *word, unsigned value)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
}

static void futex_wake(atomic_uint *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* The counter has reached target: compared as a difference, so that it may
 * wrap (a long sequence's steps times its tiles). */
static int reached(const team_counter *c, unsigned target)
{
    return (int)(atomic_load(&c->value) - target) >= 0;
}

void counter_add(team_counter *c, unsigned k)
{
    /* Both sequentially consistent, as is the waiter's count then look: a
     * waiter either sees the new value or is seen and woken. */
    atomic_fetch_add(&c->value, k);
    if (atomic_load(&c->sleepers))
        futex_wake(&c->value);
}

void counter_await(team_counter *c, unsigned target)
{
    unsigned round = 0;
    int64_t until = 0;
    while (!reached(c, target)) {
        __builtin_ia32_pause();
        if (++round & 63)
            continue;
        int64_t t = now_ns();
        if (!until)
            until = t + SPIN_NS;
        else if (t >= until)
            break;
    }
    if (reached(c, target))
        return;
    atomic_fetch_add(&c->sleepers, 1);
    for (unsigned v; (int)((v = atomic_load(&c->value)) - target) < 0;)
        futex_wait(&c->value, v);
    atomic_fetch_sub(&c->sleepers, 1);
}

/* The job's entry word: its generation, whether it is closed, its size and
 * how many workers have joined, in one atomic so that a worker joins only
 * the job it read, and only while it is open and has room. */
#define JOINED_BITS 8
#define SIZE_SHIFT JOINED_BITS
#define CLOSED (1ull << 16)
#define GEN_SHIFT 17
#define JOINED(e) ((int)((e) & 0xff))
#define SIZE(e) ((int)(((e) >> SIZE_SHIFT) & 0xff))
#define GEN(e) ((e) >> GEN_SHIFT)

/* One per worker, so that waking one wakes no other; bumped once for each
 * job the worker is asked to. A cache line each. */
struct slot {
    _Alignas(64) team_counter go;
};

static struct {
    pthread_mutex_t lock;       /* guards workers and starting them */
    atomic_flag busy;           /* one pool job at a time */
    int workers;                /* started so far: slots 1..workers */
    team_fn fn;                 /* the job: written before its entry opens it */
    void *ctx;
    /* uint64_t, the type join() compare-exchanges it through: atomic_ullong is
     * another type on LP64, which gcc lets pass and clang refuses */
    _Alignas(64) _Atomic uint64_t entry;
    team_counter left;          /* members that have finished the job */
    struct slot slot[FUSEDRNN_MAX_THREADS];   /* 0 is the caller's, unused */
    atomic_int hold_tid;        /* tests: a worker held back (fusedrnn_hold_worker) */
    atomic_int hold_us;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .busy = ATOMIC_FLAG_INIT};

void fusedrnn_hold_worker(int tid, int microseconds)
{
    atomic_store(&pool.hold_us, microseconds);
    atomic_store(&pool.hold_tid, tid);
}

/* A member's number in the job it joins (1.. size-1), or 0: it is closed,
 * full, or the one this worker already ran. */
static int join(uint64_t *last_gen)
{
    uint64_t e = atomic_load(&pool.entry);
    do {
        if ((e & CLOSED) || GEN(e) == *last_gen || JOINED(e) + 1 >= SIZE(e))
            return 0;
    } while (!atomic_compare_exchange_weak(&pool.entry, &e, e + 1));
    *last_gen = GEN(e);
    return JOINED(e) + 1;
}

static void *worker(void *arg)
{
    struct slot *s = arg;
    const int slot = (int)(s - pool.slot);
    unsigned seen = 0;        /* start_worker set go to 0; each job bumps it */
    uint64_t last_gen = 0;    /* generations start at 1 */
    fp_enter();   /* jobs run in the kernel's mode, as on the calling thread */
    for (;;) {
        counter_await(&s->go, seen + 1);
        seen = atomic_load(&s->go.value);
        if (atomic_load(&pool.hold_tid) == slot)   /* as if descheduled before it ran */
            usleep((useconds_t)atomic_load(&pool.hold_us));
        int tid = join(&last_gen);
        if (!tid)
            continue;
        pool.fn(pool.ctx, tid, SIZE(atomic_load(&pool.entry)));
        counter_add(&pool.left, 1);
    }
    return NULL;
}

/* A worker for slot tid, its slot made anew: in a forked child the slot
 * still holds what the parent's worker left in it. Under pool.lock. */
static int start_worker(int tid)
{
    struct slot *s = &pool.slot[tid];
    atomic_init(&s->go.value, 0);
    atomic_init(&s->go.sleepers, 0);
    pthread_t th;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int failed = pthread_create(&th, &attr, worker, s);
    pthread_attr_destroy(&attr);
    return !failed;
}

/* Start workers up to n-1; returns how many threads a job can have. */
static int ensure_workers(int n)
{
    pthread_mutex_lock(&pool.lock);
    while (pool.workers < n - 1 && start_worker(pool.workers + 1))
        pool.workers++;
    int have = pool.workers + 1;
    pthread_mutex_unlock(&pool.lock);
    return have < n ? have : n;
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void register_atfork(void);

/* The OpenMP runtime's entry points (libgomp's ABI), looked up in the copy
 * the process has loaded; NULL until fusedrnn_share_openmp. */
typedef void (*omp_parallel_fn)(void (*body)(void *), void *data, unsigned threads,
                                unsigned flags);
static struct {
    _Atomic(omp_parallel_fn) parallel;
    int (*thread_num)(void);
    int (*num_threads)(void);
} omp;

int fusedrnn_share_openmp(const char *library)
{
    pthread_once(&atfork_once, register_atfork);   /* a forked child must not use it */
    void *h = dlopen(library, RTLD_NOW | RTLD_NOLOAD);   /* only a copy already loaded */
    if (!h)
        return 0;
    omp_parallel_fn parallel = (omp_parallel_fn)dlsym(h, "GOMP_parallel");
    omp.thread_num = (int (*)(void))dlsym(h, "omp_get_thread_num");
    omp.num_threads = (int (*)(void))dlsym(h, "omp_get_num_threads");
    if (!parallel || !omp.thread_num || !omp.num_threads)
        return 0;
    atomic_store(&omp.parallel, parallel);
    return 1;
}

struct omp_job {
    team_fn fn;
    void *ctx;
    int n;
};

/* One OpenMP thread's part: the kernel's FP mode for the job only, the
 * thread's own restored after (it is torch's). The runtime may give fewer
 * threads than asked for; a job never needs them all. */
static void omp_body(void *arg)
{
    const struct omp_job *j = arg;
    fp_mode mode = fp_enter();
    int tid = omp.thread_num(), n = omp.num_threads();
    if (tid < j->n)
        j->fn(j->ctx, tid, n < j->n ? n : j->n);
    fp_leave(mode);
}

/* fork() copies only the calling thread: the child has none of the
 * workers, and may have been copied mid-job by a thread it does not have
 * either. Nothing of that is carried over: the child gets the pool a fresh
 * process has, no workers, its lock made anew rather than unlocked (its
 * holder is gone), and its first multi-thread call starts workers of its
 * own. It does not use the OpenMP runtime either, which does not start
 * again in a forked child (GNU libgomp's pool stays the parent's). */
static void fork_child(void)
{
    pthread_mutex_init(&pool.lock, NULL);
    atomic_flag_clear(&pool.busy);
    pool.workers = 0;
    atomic_init(&pool.entry, 0);
    atomic_init(&pool.left.sleepers, 0);
    atomic_store(&omp.parallel, NULL);
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, fork_child);
}

/* A job on the pool, if it is free: 0 if not. */
static int pool_run(int nthreads, team_fn fn, void *ctx)
{
    if (atomic_flag_test_and_set_explicit(&pool.busy, memory_order_acquire))
        return 0;
    int n = ensure_workers(nthreads);
    if (n > 1) {
        pool.fn = fn;
        pool.ctx = ctx;
        atomic_store(&pool.left.value, 0);
        uint64_t gen = GEN(atomic_load(&pool.entry)) + 1;
        atomic_store(&pool.entry, gen << GEN_SHIFT | (uint64_t)n << SIZE_SHIFT);
        for (int tid = 1; tid < n; tid++)
            counter_add(&pool.slot[tid].go, 1);
        fn(ctx, 0, n);
        /* Every piece is taken: the workers still to come find the job
         * closed, and only those that joined are waited for. */
        int joined = JOINED(atomic_fetch_or(&pool.entry, CLOSED));
        counter_await(&pool.left, (unsigned)joined);
    } else {
        fn(ctx, 0, 1);
    }
    atomic_flag_clear_explicit(&pool.busy, memory_order_release);
    return 1;
}

void team_run(int nthreads, team_fn fn, void *ctx)
{
    if (nthreads > FUSEDRNN_MAX_THREADS)
        nthreads = FUSEDRNN_MAX_THREADS;
    if (nthreads > 1) {
        /* Before taking the pool, so that a fork from any other thread while
         * this one holds it already resets the child's copy. */
        pthread_once(&atfork_once, register_atfork);
        omp_parallel_fn parallel = atomic_load(&omp.parallel);
        if (parallel) {
            struct omp_job j = {fn, ctx, nthreads};
            parallel(omp_body, &j, (unsigned)nthreads, 0);
            return;
        }
        /* A caller that finds the pool busy runs its job on its own thread. */
        if (pool_run(nthreads, fn, ctx))
            return;
    }
    fn(ctx, 0, 1);
}
