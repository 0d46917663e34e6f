/*
 * pool.c - the engine's thread pool for matmuls and other data-parallel work.
 *
 * The caller of engine__pool_run() is thread 0; n - 1 workers wait for the
 * next job. A worker that finished a job spins for POOL_SPIN_NS before it
 * sleeps on a futex, so a decode loop (hundreds of jobs a second, each tens
 * of microseconds) never pays a wake-up, while an idle server's workers sleep.
 *
 * One atomic job word holds the job's id, a closed flag and the number of
 * workers inside it. Workers enter with a CAS, which fails once the caller
 * has closed the job; the caller closes it when it is done (run_some) or
 * when every worker has entered (run), then waits until none is inside. So a
 * job that claims its work dynamically never waits for a worker that was
 * asleep or lost its core: thread 0 does the work and the late worker skips
 * it. fn and arg are written before the job word is published and read after
 * a successful entry; the next job is written only after all have left.
 */
#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() sched_yield()
#endif

#define POOL_SPIN_NS 2000000 /* 2 ms: longer than any gap inside a forward pass */

/* The job word: job id << 32 | JOB_CLOSED | number of workers inside fn. */
#define JOB_CLOSED (1ull << 31)
#define JOB_INSIDE (JOB_CLOSED - 1)

struct slot {
    alignas(64) struct engine_pool *pool; /* own cache line per thread */
    int ith;
    bool started;
    pthread_t thread;
    void *scratch;                        /* 64-byte aligned, cap bytes */
    size_t cap;
};

struct engine_pool {
    int n;
    struct slot *slots;                   /* n; slot 0 is the caller's */
    engine_task_cb fn;
    void *arg;
    alignas(64) _Atomic uint64_t job;     /* see JOB_CLOSED */
    _Atomic int n_joined;                 /* workers that entered this job */
    alignas(64) _Atomic uint32_t bell;    /* futex word, bumped per job */
    _Atomic int n_sleeping;
    _Atomic bool stop;
};

static uint32_t
job_id(uint64_t j)
{
    return (uint32_t)(j >> 32);
}

static void
futex_wait(_Atomic uint32_t *addr, uint32_t val)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void
futex_wake_all(_Atomic uint32_t *addr)
{
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Sleeps until the bell rings, unless a job other than seen is already out. */
static void
sleep_on_bell(struct engine_pool *p, uint32_t seen)
{
    /* seq_cst pairs with publish(): either it sees us sleeping or we see its job */
    atomic_fetch_add(&p->n_sleeping, 1);
    uint32_t bell = atomic_load(&p->bell);
    if (job_id(atomic_load(&p->job)) == seen)
        futex_wait(&p->bell, bell);
    atomic_fetch_sub(&p->n_sleeping, 1);
}

/* Returns the job word once its id differs from seen: spins a while, then sleeps. */
static uint64_t
wait_job(struct engine_pool *p, uint32_t seen)
{
    int64_t deadline = 0;
    for (uint32_t i = 1;; i++) {
        uint64_t j = atomic_load_explicit(&p->job, memory_order_acquire);
        if (job_id(j) != seen)
            return j;
        cpu_relax();
        if (i % 256 != 0)
            continue;
        if (deadline == 0)
            deadline = now_ns() + POOL_SPIN_NS;
        if (now_ns() < deadline)
            continue;
        sleep_on_bell(p, seen);
        deadline = 0;
    }
}

/* Enters job j (counted as inside) unless it has closed or been replaced. */
static bool
enter(struct engine_pool *p, uint64_t j)
{
    uint32_t id = job_id(j);
    while (job_id(j) == id && !(j & JOB_CLOSED))
        if (atomic_compare_exchange_weak_explicit(&p->job, &j, j + 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    return false;
}

static void *
worker_main(void *arg)
{
    struct slot *s = arg;
    struct engine_pool *p = s->pool;
    uint32_t seen = 0;
    for (;;) {
        uint64_t j = wait_job(p, seen);
        if (atomic_load(&p->stop))
            return NULL;
        seen = job_id(j);
        if (!enter(p, j))
            continue; /* too late: thread 0 has finished without us */
        atomic_fetch_add(&p->n_joined, 1);
        p->fn(s->ith, p->n, p->arg);
        atomic_fetch_sub_explicit(&p->job, 1, memory_order_release);
    }
}

/* Opens a new job; workers may enter it from now on. */
static void
publish(struct engine_pool *p, engine_task_cb fn, void *arg)
{
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->n_joined, 0);
    uint32_t id = job_id(atomic_load_explicit(&p->job, memory_order_relaxed)) + 1;
    atomic_store(&p->job, (uint64_t)id << 32);
    atomic_fetch_add(&p->bell, 1);
    if (atomic_load(&p->n_sleeping) > 0)
        futex_wake_all(&p->bell);
}

/* Spins (yielding now and then) until *v reaches want. */
static void
wait_int(_Atomic int *v, int want)
{
    for (uint32_t i = 1; atomic_load_explicit(v, memory_order_acquire) != want; i++) {
        cpu_relax();
        if (i % 4096 == 0) /* a worker may have lost its core: let it run */
            sched_yield();
    }
}

/* Closes the job to late workers and waits for those inside. */
static void
finish(struct engine_pool *p)
{
    atomic_fetch_or(&p->job, JOB_CLOSED);
    for (uint32_t i = 1; atomic_load_explicit(&p->job, memory_order_acquire) & JOB_INSIDE; i++) {
        cpu_relax();
        if (i % 4096 == 0)
            sched_yield();
    }
}

int
engine__pool_new(int n_threads, struct engine_pool **out)
{
    assert(n_threads >= 1);
    *out = NULL;
    struct engine_pool *p = calloc(1, sizeof(*p));
    struct slot *slots = aligned_alloc(64, sizeof(*slots) * (size_t)n_threads);
    if (p == NULL || slots == NULL) {
        free(p);
        free(slots);
        return -ENOMEM;
    }
    p->n = n_threads;
    p->slots = slots;
    atomic_store(&p->job, JOB_CLOSED);
    for (int i = 0; i < n_threads; i++)
        slots[i] = (struct slot){ .pool = p, .ith = i };
    for (int i = 1; i < n_threads; i++) {
        int rc = pthread_create(&slots[i].thread, NULL, worker_main, &slots[i]);
        if (rc != 0) {
            engine__pool_free(p);
            return -rc;
        }
        slots[i].started = true;
    }
    *out = p;
    return 0;
}

void
engine__pool_free(struct engine_pool *p)
{
    if (p == NULL)
        return;
    atomic_store(&p->stop, true);
    uint32_t id = job_id(atomic_load(&p->job)) + 1;
    atomic_store(&p->job, (uint64_t)id << 32 | JOB_CLOSED); /* wakes workers, admits none */
    atomic_fetch_add(&p->bell, 1);
    futex_wake_all(&p->bell);
    for (int i = 0; i < p->n; i++) {
        if (p->slots[i].started)
            pthread_join(p->slots[i].thread, NULL);
        free(p->slots[i].scratch);
    }
    free(p->slots);
    free(p);
}

int
engine__pool_size(const struct engine_pool *p)
{
    return p->n;
}

void
engine__pool_run(struct engine_pool *p, engine_task_cb fn, void *arg)
{
    if (p->n == 1) {
        fn(0, 1, arg);
        return;
    }
    publish(p, fn, arg);
    fn(0, p->n, arg);
    wait_int(&p->n_joined, p->n - 1);
    finish(p);
}

void
engine__pool_run_some(struct engine_pool *p, engine_task_cb fn, void *arg)
{
    if (p->n == 1) {
        fn(0, 1, arg);
        return;
    }
    publish(p, fn, arg);
    fn(0, p->n, arg);
    finish(p);
}

/* ---- Scratch ---------------------------------------------------------- */

static int
grow(struct slot *s, size_t n)
{
    if (n <= s->cap)
        return 0;
    size_t cap = engine__align64(n);
    if (cap < n)
        return -ENOMEM;
    void *buf = aligned_alloc(64, cap);
    if (buf == NULL)
        return -ENOMEM;
    free(s->scratch);
    s->scratch = buf;
    s->cap = cap;
    return 0;
}

void *
engine__pool_scratch(struct engine_pool *p, int ith, size_t n)
{
    assert(ith >= 0 && ith < p->n);
    if (grow(&p->slots[ith], n) < 0) {
        fprintf(stderr, "loraserve: out of memory allocating %zu bytes of scratch\n", n);
        abort();
    }
    return p->slots[ith].scratch;
}

int
engine__pool_reserve(struct engine_pool *p, size_t n)
{
    for (int i = 0; i < p->n; i++)
        if (grow(&p->slots[i], n) < 0)
            return -ENOMEM;
    return 0;
}
