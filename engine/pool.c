/*
 * pool.c - the engine's thread pool for matmuls and other data-parallel work.
 *
 * The caller of engine__pool_run() is thread 0; n - 1 workers wait for a new
 * generation number (one per job). A worker that finished a job spins on that
 * number for POOL_SPIN_NS before it sleeps on it with a futex, so a decode
 * loop (hundreds of jobs a second, each tens of microseconds) never pays a
 * wake-up, while an idle server's workers sleep. The job (fn, arg) is written
 * before the generation is bumped and read after it is seen, and the caller
 * waits for every worker's n_done increment before it writes the next one.
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
    alignas(64) _Atomic uint32_t gen;     /* futex word, bumped per job */
    _Atomic int n_sleeping;
    _Atomic bool stop;
    alignas(64) _Atomic int n_done;       /* workers done with this job */
};

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

/* Returns the first generation after seen: spins a while, then sleeps. */
static uint32_t
wait_job(struct engine_pool *p, uint32_t seen)
{
    int64_t deadline = 0;
    for (uint32_t i = 1;; i++) {
        uint32_t g = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (g != seen)
            return g;
        cpu_relax();
        if (i % 256 != 0)
            continue;
        if (deadline == 0)
            deadline = now_ns() + POOL_SPIN_NS;
        if (now_ns() < deadline)
            continue;
        /* seq_cst pairs with engine__pool_run: either it sees us sleeping or we see its bump */
        atomic_fetch_add(&p->n_sleeping, 1);
        if (atomic_load(&p->gen) == seen)
            futex_wait(&p->gen, seen);
        atomic_fetch_sub(&p->n_sleeping, 1);
        deadline = 0;
    }
}

static void *
worker_main(void *arg)
{
    struct slot *s = arg;
    struct engine_pool *p = s->pool;
    uint32_t seen = 0;
    for (;;) {
        seen = wait_job(p, seen);
        if (atomic_load(&p->stop))
            return NULL;
        p->fn(s->ith, p->n, p->arg);
        atomic_fetch_add_explicit(&p->n_done, 1, memory_order_release);
    }
}

static void
bump_gen(struct engine_pool *p)
{
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->n_sleeping) > 0)
        futex_wake_all(&p->gen);
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
    bump_gen(p);
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
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->n_done, 0, memory_order_relaxed);
    bump_gen(p);
    fn(0, p->n, arg);
    for (uint32_t i = 1; atomic_load_explicit(&p->n_done, memory_order_acquire) < p->n - 1;
         i++) {
        cpu_relax();
        if (i % 4096 == 0) /* a worker may have lost its core: let it run */
            sched_yield();
    }
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
