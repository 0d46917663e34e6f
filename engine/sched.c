/*
 * sched.c - continuous batching: one scheduler thread, many sequences.
 *
 * Each iteration: (1) drop cancelled requests from the queues, admit queued
 * requests into free slots, fairly across tenants, and preempt where one
 * tenant holds too many slots (below), (2) drop the cancelled running ones,
 * (3) build one batch: a decode row for every sequence that is generating,
 * then chunks of prompts still being prefilled within a row budget (smaller
 * while others are generating, so their streams keep flowing), (4) run the
 * forward pass once, (5) sample each sequence whose logits came out, append
 * the token to its request and ring its doorbell.
 *
 * Fairness: each tenant has a FIFO queue. A free slot goes to the waiting
 * tenant W with the fewest running sequences, ties to the one served least
 * recently (round-robin); one tenant is plain FIFO. While requests wait and
 * no slot is free, the tenant V with the most running sequences loses its
 * most recently admitted one if running(V) > running(W) + 1 (recompute
 * preemption, as vLLM's): its full blocks go to the prefix cache, its KV is
 * freed, and the request, output and sampler kept, goes back to the front of
 * V's queue. Admitted again, it prefills its prompt and output (mostly from
 * the cache) and samples on: its stream just continues. Each preemption
 * lowers the sum of squared running counts, so the loop ends and no slot
 * goes back and forth.
 *
 * A slot index is the sequence id in the engine_ctx. A request is shared by
 * the submitter and this thread and is freed when both have let go (refs).
 * Its output list is guarded by its own mutex; the queues and the tenant
 * table by the scheduler's; everything else about a running request belongs
 * to the scheduler thread.
 */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "engine_int.h"

#define STREAMING_PREFILL_ROWS 128

struct engine_req {
    atomic_int refs;
    atomic_bool cancel;
    atomic_bool in_slot;              /* running (not waiting, not preempted, not over) */
    uint64_t iter_submit;             /* the scheduler's iterations when it was queued */
    atomic_int ttft_iters;            /* iterations from then to its first token, or -1 */
    struct engine_req *next;          /* queue link, under sched->mu */

    /* Immutable after submit. */
    int n_prompt;
    int max_tokens;
    bool ignore_eos;
    bool logprobs;
    int n_top;
    void (*notify)(void *arg);
    void *arg;
    double t_submit;
    struct engine_lora_set lora;      /* holds a reference on each adapter */
    uint32_t tenant;

    /* Scheduler thread only. */
    struct engine_sampler *smp;
    int32_t *tokens;                  /* (n_prompt + max_tokens): prompt, then each output */

    /* Output, under mu. */
    pthread_mutex_t mu;
    struct engine_tok *toks;
    int n_toks, cap, taken;
    enum engine_finish finish;
    double t_first;
};

struct slot {
    struct engine_req *r;             /* NULL if free */
    int n_past;                       /* positions in the cache */
    int n_prefill;                    /* positions to prefill: prompt + earlier output */
    int32_t last;                     /* token to evaluate next, once decoding */
    bool decoding;                    /* prefill done */
    uint64_t key;                     /* tenant and adapters, for the prefix cache */
    uint64_t admitted;                /* when, in admissions (the newest is preempted) */
};

/*
 * A tenant with requests waiting or running, under sched->mu. The table is
 * searched linearly: tenants with work at one time are few.
 */
struct tenant {
    uint32_t id;
    int waiting;
    int running;                      /* counted afresh by each admit() */
    uint64_t served;                  /* admission stamp of its latest start; 0: none yet */
    struct engine_req *head, *tail;   /* its queue */
};

struct engine_sched {
    struct engine_model *m;
    struct engine_ctx *ctx;
    struct engine_sched_params p;
    int n_vocab;

    pthread_t thread;
    pthread_mutex_t mu;               /* guards the tenants and queues, n_waiting, stop */
    pthread_cond_t cv;
    struct tenant *tenants;           /* (cap_tenants), in order of arrival */
    int n_tenants, cap_tenants;
    uint64_t n_admitted;              /* admissions so far: the stamps */
    int n_waiting;
    bool stop;
    atomic_int n_running;
    _Atomic uint64_t prefix_hits;     /* prompt positions the prefix cache served */
    _Atomic uint64_t iterations, preemptions, prompt_tokens, generated_tokens;
    atomic_int kv_used, kv_cached;    /* after the latest iteration */

    struct slot *slots;               /* (n_slots) */
    int32_t *tokens, *pos, *seq;      /* (batch_rows + n_slots) */
    bool *want;
    const struct engine_lora_set **lora;
    int *row_slot;                    /* slot of each row that wants logits */
    int32_t *eog;                     /* end-of-generation ids, banned by ignore_eos */
    int n_eog;
    float *logits;                    /* (n_slots, n_vocab) */
    struct embed_job *embeds;         /* waiting embeddings (guarded by mu) */
    bool joined;                      /* engine_sched_stop has run */
};

/* An embedding asked for by engine_sched_embed, run by the scheduler thread. */
struct embed_job {
    const int32_t *tokens;
    int n;
    enum engine_pooling pool;
    float *out;
    int rc;
    bool done;
    pthread_cond_t cv;
    struct embed_job *next;
};

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- Requests --------------------------------------------------------- */

static void
req_unref(struct engine_req *r)
{
    if (atomic_fetch_sub_explicit(&r->refs, 1, memory_order_acq_rel) != 1)
        return;
    engine_sampler_free(r->smp);
    for (int i = 0; i < r->lora.n; i++)
        engine_lora_unref(r->lora.lora[i]);
    pthread_mutex_destroy(&r->mu);
    free(r->tokens);
    free(r->toks);
    free(r);
}

/* Appends a token; returns -ENOMEM if the list cannot grow. */
static int
req_push(struct engine_req *r, const struct engine_tok *t)
{
    pthread_mutex_lock(&r->mu);
    int rc = 0;
    if (r->n_toks == r->cap) {
        int cap = r->cap ? r->cap * 2 : 64;
        struct engine_tok *n = realloc(r->toks, (size_t)cap * sizeof(*n));
        if (n == NULL)
            rc = -ENOMEM;
        else
            r->toks = n, r->cap = cap;
    }
    if (rc == 0) {
        r->toks[r->n_toks++] = *t;
        if (r->t_first == 0.0)
            r->t_first = now_s() - r->t_submit;
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

static void
req_finish(struct engine_req *r, enum engine_finish f)
{
    pthread_mutex_lock(&r->mu);
    if (r->finish == ENGINE_FINISH_NONE)
        r->finish = f;
    pthread_mutex_unlock(&r->mu);
    atomic_store(&r->in_slot, false);
    if (r->notify != NULL)
        r->notify(r->arg);
    req_unref(r);
}

static int
req_new(const struct engine_req_params *p, int n_vocab, struct engine_req **out)
{
    struct engine_req *r = engine__xcalloc(1, sizeof(*r));
    atomic_init(&r->refs, 2);       /* the submitter and the scheduler */
    atomic_init(&r->cancel, false);
    atomic_init(&r->in_slot, false);
    atomic_init(&r->ttft_iters, -1);
    pthread_mutex_init(&r->mu, NULL);
    r->n_prompt = p->n_prompt;
    r->max_tokens = p->max_tokens;
    r->ignore_eos = p->ignore_eos;
    r->logprobs = p->logprobs || p->n_top_logprobs > 0;
    r->n_top = p->n_top_logprobs;
    r->notify = p->notify;
    r->arg = p->arg;
    r->t_submit = now_s();
    r->tenant = p->tenant;
    if (p->lora != NULL)
        r->lora = *p->lora;
    for (int i = 0; i < r->lora.n; i++)
        engine_lora_ref(r->lora.lora[i]);
    /* check_params bounds n_prompt + max_tokens by n_ctx */
    r->tokens = engine__try_alloc((size_t)p->n_prompt + (size_t)p->max_tokens, sizeof(int32_t));
    int rc = r->tokens ? engine_sampler_new(&p->sampling, n_vocab, &r->smp) : -ENOMEM;
    if (rc < 0) {
        atomic_store(&r->refs, 1);
        req_unref(r);
        return rc;
    }
    memcpy(r->tokens, p->prompt, (size_t)p->n_prompt * sizeof(int32_t));
    for (int i = 0; i < p->n_prompt; i++)
        engine_sampler_accept(r->smp, p->prompt[i]);
    *out = r;
    return 0;
}

int
engine_req_take(struct engine_req *r, struct engine_tok *out, int max,
                enum engine_finish *finish)
{
    pthread_mutex_lock(&r->mu);
    int n = r->n_toks - r->taken;
    n = n < max ? n : max;
    if (n > 0) {
        memcpy(out, r->toks + r->taken, (size_t)n * sizeof(*out));
        r->taken += n;
    }
    *finish = r->taken == r->n_toks ? r->finish : ENGINE_FINISH_NONE;
    pthread_mutex_unlock(&r->mu);
    return n;
}

void
engine_req_stats(struct engine_req *r, int *n_prompt, int *n_generated, double *ttft)
{
    pthread_mutex_lock(&r->mu);
    *n_prompt = r->n_prompt;
    *n_generated = r->n_toks;
    *ttft = r->t_first;
    pthread_mutex_unlock(&r->mu);
}

void
engine_req_cancel(struct engine_req *r)
{
    atomic_store(&r->cancel, true);
}

void
engine_req_release(struct engine_req *r)
{
    if (r == NULL)
        return;
    engine_req_cancel(r);
    req_unref(r);
}

/* ---- Sampling one sequence -------------------------------------------- */

/* The chosen token's log-probability and the top alternatives, from raw logits. */
static void
logprobs(const struct engine_req *r, const float *logits, int n_vocab, struct engine_tok *t)
{
    float max = logits[0];
    for (int i = 1; i < n_vocab; i++)
        max = logits[i] > max ? logits[i] : max;
    double sum = 0.0;
    for (int i = 0; i < n_vocab; i++)
        sum += exp((double)logits[i] - max);
    float lse = max + (float)log(sum);
    t->logprob = logits[t->id] - lse;
    t->n_top = 0;
    for (int i = 0; i < n_vocab; i++) {
        /* Insertion into a short sorted list: n_top is at most 20. */
        int k = t->n_top;
        if (k == r->n_top && (k == 0 || logits[i] <= t->top_logprob[k - 1]))
            continue;
        if (k < r->n_top)
            t->n_top++;
        else
            k--;
        while (k > 0 && t->top_logprob[k - 1] < logits[i]) {
            t->top_id[k] = t->top_id[k - 1];
            t->top_logprob[k] = t->top_logprob[k - 1];
            k--;
        }
        t->top_id[k] = i;
        t->top_logprob[k] = logits[i];
    }
    for (int k = 0; k < t->n_top; k++)
        t->top_logprob[k] -= lse;
}

/* Ends slot i's request with f and gives its blocks back to the pool. */
static void
free_slot(struct engine_sched *S, int i, enum engine_finish f)
{
    req_finish(S->slots[i].r, f);
    S->slots[i].r = NULL;
    engine_seq_truncate(S->ctx, i, 0);
    atomic_fetch_sub(&S->n_running, 1);
}

/* Samples the next token of slot s from its logits; finishes the request if done. */
static void
sample_slot(struct engine_sched *S, struct slot *s, float *logits)
{
    struct engine_req *r = s->r;
    const struct tokenizer *tok = engine_model_tokenizer(S->m);
    if (r->ignore_eos)
        for (int i = 0; i < S->n_eog; i++)
            logits[S->eog[i]] = -INFINITY;
    struct engine_tok t = { 0 };
    float *raw = r->logprobs ? S->logits + (size_t)S->p.n_slots * S->n_vocab : NULL;
    if (raw != NULL)
        memcpy(raw, logits, (size_t)S->n_vocab * sizeof(float));
    t.id = engine_sampler_sample(r->smp, logits);
    if (raw != NULL)
        logprobs(r, raw, S->n_vocab, &t);
    enum engine_finish f = ENGINE_FINISH_NONE;
    if (!r->ignore_eos && tokenizer_is_eog(tok, t.id)) {
        f = ENGINE_FINISH_STOP;
    } else {
        engine_sampler_accept(r->smp, t.id);
        /* Kept for a re-prefill after preemption; n_toks < max_tokens while running. */
        r->tokens[r->n_prompt + r->n_toks] = t.id;
        if (req_push(r, &t) < 0) {
            f = ENGINE_FINISH_ERROR;
        } else {
            atomic_fetch_add_explicit(&S->generated_tokens, 1, memory_order_relaxed);
            if (r->n_toks == 1)
                atomic_store(&r->ttft_iters,
                             (int)(atomic_load(&S->iterations) - r->iter_submit));
            if (r->n_toks >= r->max_tokens || s->n_past >= S->p.n_ctx)
                f = ENGINE_FINISH_LENGTH;
        }
    }
    s->last = t.id;
    s->decoding = true;
    if (f == ENGINE_FINISH_NONE) {
        if (r->notify != NULL)
            r->notify(r->arg);
        return;
    }
    free_slot(S, (int)(s - S->slots), f);
}

/* ---- Slots and the prefix cache --------------------------------------- */

/*
 * What the prefix cache keys a request's K and V by besides its tokens: each
 * adapter's process-unique id (a replaced adapter is a new object) and scale.
 */
static uint64_t
lora_hash(const struct engine_lora_set *set)
{
    if (set->n == 0)
        return 0;
    uint64_t v[2 * ENGINE_LORA_MAX_SET];
    for (int i = 0; i < set->n; i++) {
        uint32_t bits;
        memcpy(&bits, &set->scale[i], sizeof(bits));
        v[2 * i] = engine_lora_id(set->lora[i]);
        v[2 * i + 1] = bits;
    }
    return XXH3_64bits(v, (size_t)set->n * 2 * sizeof(uint64_t)) | 1; /* never 0: the base's */
}

/*
 * The key the prefix cache gets besides the tokens: the adapters' hash, with
 * the tenant mixed in, so tenants never share blocks (a fast first token
 * would tell one tenant what another asked). Tenant 0 keeps the bare hash
 * (0 for the base, as before tenants); any other key is never 0.
 */
static uint64_t
cache_key(const struct engine_req *r)
{
    uint64_t v[2] = { lora_hash(&r->lora), r->tenant };
    return r->tenant == 0 ? v[0] : XXH3_64bits(v, sizeof(v)) | 1;
}

/*
 * Starts request r in free slot i, on whatever prefix of its prompt and
 * earlier output (if it was preempted) the cache holds.
 */
static void
start_slot(struct engine_sched *S, int i, struct engine_req *r)
{
    struct slot *s = &S->slots[i];
    engine_seq_truncate(S->ctx, i, 0);
    /* n_toks: only this thread writes it, so it reads it without r->mu */
    *s = (struct slot){ .r = r, .n_prefill = r->n_prompt + r->n_toks, .key = cache_key(r),
                        .admitted = ++S->n_admitted };
    s->n_past = engine__kv_attach(engine__ctx_kv(S->ctx), i, s->key, r->tokens, s->n_prefill);
    atomic_fetch_add_explicit(&S->prefix_hits, (uint64_t)s->n_past, memory_order_relaxed);
    atomic_store(&r->in_slot, true);
}

bool
engine_req_running(struct engine_req *r)
{
    return atomic_load(&r->in_slot);
}

int
engine_req_ttft_iterations(struct engine_req *r)
{
    return atomic_load(&r->ttft_iters);
}

uint64_t
engine_sched_prefix_hits(struct engine_sched *S)
{
    return atomic_load_explicit(&S->prefix_hits, memory_order_relaxed);
}

/* ---- Tenants and their queues (under S->mu) --------------------------- */

static struct tenant *
tenant_find(struct engine_sched *S, uint32_t id)
{
    for (int k = 0; k < S->n_tenants; k++)
        if (S->tenants[k].id == id)
            return &S->tenants[k];
    return NULL;
}

/* The tenant's entry, added if new. Moves the table: earlier pointers into it are stale. */
static struct tenant *
tenant_get(struct engine_sched *S, uint32_t id)
{
    struct tenant *t = tenant_find(S, id);
    if (t != NULL)
        return t;
    if (S->n_tenants == S->cap_tenants) {
        int cap = S->cap_tenants ? 2 * S->cap_tenants : 8;
        struct tenant *n = engine__xcalloc((size_t)cap, sizeof(*n));
        if (S->n_tenants > 0)
            memcpy(n, S->tenants, (size_t)S->n_tenants * sizeof(*n));
        free(S->tenants);
        S->tenants = n, S->cap_tenants = cap;
    }
    t = &S->tenants[S->n_tenants++];
    *t = (struct tenant){ .id = id };
    return t;
}

/* Queues r at the back of its tenant's queue, or at the front (a preempted request). */
static void
queue_push(struct engine_sched *S, struct tenant *t, struct engine_req *r, bool front)
{
    if (front) {
        r->next = t->head;
        t->head = r;
        t->tail = t->tail != NULL ? t->tail : r;
    } else {
        r->next = NULL;
        *(t->tail != NULL ? &t->tail->next : &t->head) = r;
        t->tail = r;
    }
    t->waiting++;
    S->n_waiting++;
}

static struct engine_req *
queue_pop(struct engine_sched *S, struct tenant *t)
{
    struct engine_req *r = t->head;
    t->head = r->next;
    t->tail = t->head ? t->tail : NULL;
    r->next = NULL;
    t->waiting--;
    S->n_waiting--;
    return r;
}

/* Takes cancelled requests out of the queues onto *done, to be finished without the lock. */
static void
sweep_cancelled(struct engine_sched *S, struct engine_req **done)
{
    for (int k = 0; k < S->n_tenants; k++) {
        struct tenant *t = &S->tenants[k];
        struct engine_req *prev = NULL;
        for (struct engine_req **p = &t->head; *p != NULL;) {
            struct engine_req *r = *p;
            if (!atomic_load(&r->cancel)) {
                prev = r, p = &r->next;
                continue;
            }
            *p = r->next;
            t->tail = t->tail == r ? prev : t->tail;
            t->waiting--;
            S->n_waiting--;
            r->next = *done;
            *done = r;
        }
    }
}

/* Counts each tenant's running sequences afresh; forgets tenants with none waiting either. */
static void
count_running(struct engine_sched *S)
{
    for (int k = 0; k < S->n_tenants; k++)
        S->tenants[k].running = 0;
    for (int i = 0; i < S->p.n_slots; i++) {
        if (S->slots[i].r == NULL)
            continue;
        struct tenant *t = tenant_find(S, S->slots[i].r->tenant);
        assert(t != NULL); /* an entry lives while its tenant runs */
        t->running++;
    }
    int n = 0;
    for (int k = 0; k < S->n_tenants; k++)
        if (S->tenants[k].waiting > 0 || S->tenants[k].running > 0)
            S->tenants[n++] = S->tenants[k];
    S->n_tenants = n;
}

/* The waiting tenant with the fewest running sequences, ties to the least recently served. */
static struct tenant *
pick_waiting(struct engine_sched *S)
{
    struct tenant *best = NULL;
    for (int k = 0; k < S->n_tenants; k++) {
        struct tenant *t = &S->tenants[k];
        if (t->waiting > 0 && (best == NULL || t->running < best->running ||
                               (t->running == best->running && t->served < best->served)))
            best = t;
    }
    return best;
}

/* Fills the free slots from the queues, fairest tenant first. */
static void
fill_slots(struct engine_sched *S)
{
    for (int i = 0; i < S->p.n_slots && S->n_waiting > 0; i++) {
        if (S->slots[i].r != NULL)
            continue;
        struct tenant *t = pick_waiting(S);
        start_slot(S, i, queue_pop(S, t));
        t->running++;
        t->served = S->slots[i].admitted;
        atomic_fetch_add(&S->n_running, 1);
    }
}

/*
 * The slot to preempt for the tenant W next in line, all slots being busy:
 * the most recently admitted sequence of the tenant V with the most running
 * (ties: the one served last), if running(V) > running(W) + 1; else -1.
 */
static int
pick_victim(struct engine_sched *S)
{
    const struct tenant *w = pick_waiting(S), *v = NULL;
    for (int k = 0; k < S->n_tenants; k++) {
        const struct tenant *t = &S->tenants[k];
        if (v == NULL || t->running > v->running ||
            (t->running == v->running && t->served > v->served))
            v = t;
    }
    if (v->running <= w->running + 1)
        return -1;
    int victim = -1;
    for (int i = 0; i < S->p.n_slots; i++) {
        const struct slot *s = &S->slots[i];
        assert(s->r != NULL);
        if (s->r->tenant == v->id && (victim < 0 || s->admitted > S->slots[victim].admitted))
            victim = i;
    }
    return victim;
}

/*
 * Preempts slot i: publishes its full blocks (output included) so it may find
 * them again, frees its KV, and queues its request at the front of its
 * tenant's queue with its output and sampler as they are.
 */
static void
preempt(struct engine_sched *S, int i)
{
    struct slot *s = &S->slots[i];
    struct engine_kv *kv = engine__ctx_kv(S->ctx);
    engine__kv_publish(kv, i, s->key, s->r->tokens, s->n_past);
    engine_seq_truncate(S->ctx, i, 0);
    struct tenant *t = tenant_find(S, s->r->tenant);
    atomic_store(&s->r->in_slot, false);
    queue_push(S, t, s->r, true);
    t->running--;
    s->r = NULL;
    atomic_fetch_sub(&S->n_running, 1);
    atomic_fetch_add_explicit(&S->preemptions, 1, memory_order_relaxed);
}

/*
 * Drops cancelled waiting requests (onto *done), admits into free slots, and
 * preempts until the tenants' shares are as even as the rule above wants.
 */
static void
schedule(struct engine_sched *S, struct engine_req **done)
{
    sweep_cancelled(S, done);
    count_running(S);
    fill_slots(S);
    for (int v; S->n_waiting > 0 && (v = pick_victim(S)) >= 0;) {
        preempt(S, v);
        fill_slots(S);
    }
}

/* Moves queued requests into slots; waits while there is nothing to do. */
static bool
admit(struct engine_sched *S)
{
    struct engine_req *done = NULL;
    pthread_mutex_lock(&S->mu);
    for (;;) {
        schedule(S, &done);
        if (S->stop || atomic_load(&S->n_running) > 0 || S->embeds != NULL || done != NULL)
            break;
        pthread_cond_wait(&S->cv, &S->mu);
    }
    bool stop = S->stop;
    pthread_mutex_unlock(&S->mu);
    while (done != NULL) { /* notify runs without the lock */
        struct engine_req *r = done;
        done = r->next;
        req_finish(r, ENGINE_FINISH_CANCELLED);
    }
    return !stop;
}

static void
add_row(struct engine_sched *S, int *n, int32_t tok, int pos, int seq, bool want)
{
    const struct engine_req *r = S->slots[seq].r;
    S->lora[*n] = r->lora.n > 0 ? &r->lora : NULL;
    S->tokens[*n] = tok;
    S->pos[*n] = pos;
    S->seq[*n] = seq;
    S->want[*n] = want;
    (*n)++;
}

/* Builds the batch; returns its row count. row_slot lists the slots whose logits come out. */
static int
build_batch(struct engine_sched *S, int *n_logits)
{
    int n = 0, n_decoding = 0;
    *n_logits = 0;
    for (int i = 0; i < S->p.n_slots; i++) {
        struct slot *s = &S->slots[i];
        if (s->r == NULL || !s->decoding)
            continue;
        add_row(S, &n, s->last, s->n_past++, i, true);
        S->row_slot[(*n_logits)++] = i;
        n_decoding++;
    }
    int budget = S->p.batch_rows;
    if (n_decoding > 0 && budget > STREAMING_PREFILL_ROWS)
        budget = STREAMING_PREFILL_ROWS;
    for (int i = 0; i < S->p.n_slots && budget > 0; i++) {
        struct slot *s = &S->slots[i];
        if (s->r == NULL || s->decoding)
            continue;
        int left = s->n_prefill - s->n_past, take = left < budget ? left : budget;
        for (int k = 0; k < take; k++, s->n_past++) {
            bool last = s->n_past == s->n_prefill - 1;
            add_row(S, &n, s->r->tokens[s->n_past], s->n_past, i, last);
            if (last)
                S->row_slot[(*n_logits)++] = i;
        }
        budget -= take;
        atomic_fetch_add_explicit(&S->prompt_tokens, (uint64_t)take, memory_order_relaxed);
    }
    return n;
}

static void
iterate(struct engine_sched *S)
{
    for (int i = 0; i < S->p.n_slots; i++)
        if (S->slots[i].r != NULL && atomic_load(&S->slots[i].r->cancel))
            free_slot(S, i, ENGINE_FINISH_CANCELLED);
    int n_logits = 0, n = build_batch(S, &n_logits);
    if (n == 0)
        return;
    struct engine_batch b = { n, S->tokens, S->pos, S->seq, S->want, S->lora };
    int rc = engine_decode(S->ctx, &b, S->logits);
    /* Counted before any token of this pass shows, so a client never sees it early. */
    atomic_fetch_add_explicit(&S->iterations, 1, memory_order_relaxed);
    if (rc < 0) {
        for (int k = 0; k < n_logits; k++)
            if (S->slots[S->row_slot[k]].r != NULL)
                free_slot(S, S->row_slot[k], ENGINE_FINISH_ERROR);
        return;
    }
    struct engine_kv *kv = engine__ctx_kv(S->ctx);
    for (int i = 0; i < S->p.n_slots; i++) { /* prompt blocks now complete, for later requests */
        const struct slot *s = &S->slots[i];
        if (s->r != NULL && !s->decoding)
            engine__kv_publish(kv, i, s->key, s->r->tokens, s->n_past);
    }
    for (int k = 0; k < n_logits; k++)
        sample_slot(S, &S->slots[S->row_slot[k]], S->logits + (size_t)k * S->n_vocab);
}

/* ---- Embeddings ------------------------------------------------------- */

/*
 * One embedding: the tokens go through the model in chunks of batch_rows on
 * the sequence after the slots (kept for this), whose cache is dropped after;
 * the output-normed hidden states are averaged (or the last one kept) and
 * the result scaled to length 1.
 */
static int
embed_one(struct engine_sched *S, struct embed_job *j)
{
    int e = engine_model_hparams(S->m)->n_embd, seq = S->p.n_slots, rc = 0;
    int chunk = S->p.batch_rows;
    float *h = engine__try_alloc((size_t)chunk * (size_t)e, sizeof(float));
    double *acc = calloc((size_t)e, sizeof(double));
    if (h == NULL || acc == NULL)
        rc = -ENOMEM;
    for (int off = 0; rc == 0 && off < j->n; off += chunk) {
        int m = j->n - off < chunk ? j->n - off : chunk;
        for (int r = 0; r < m; r++)
            S->pos[r] = off + r, S->seq[r] = seq;
        struct engine_batch b = { m, j->tokens + off, S->pos, S->seq, NULL, NULL };
        rc = engine_decode_hidden(S->ctx, &b, h);
        int r1 = j->pool != ENGINE_POOL_CLS ? m : off == 0 ? 1 : 0;
        for (int r = j->pool == ENGINE_POOL_LAST ? m - 1 : 0; rc == 0 && r < r1; r++)
            for (int i = 0; i < e; i++)
                acc[i] = (j->pool == ENGINE_POOL_LAST ? 0 : acc[i]) + h[(size_t)r * e + i];
    }
    engine_seq_truncate(S->ctx, seq, 0);
    if (rc == 0)
        engine__l2_normalize(acc, e, j->out);
    free(h);
    free(acc);
    return rc;
}

static void
run_embeds(struct engine_sched *S)
{
    pthread_mutex_lock(&S->mu);
    struct embed_job *list = S->embeds;
    S->embeds = NULL;
    pthread_mutex_unlock(&S->mu);
    while (list != NULL) {
        struct embed_job *j = list;
        list = j->next;
        int rc = embed_one(S, j);
        pthread_mutex_lock(&S->mu);
        j->rc = rc;
        j->done = true;
        pthread_cond_signal(&j->cv);
        pthread_mutex_unlock(&S->mu);
    }
}

int
engine_sched_embed(struct engine_sched *S, const int32_t *tokens, int n,
                   enum engine_pooling pool, float *out)
{
    if (n < 1 || n > S->p.n_ctx)
        return n < 1 ? -EINVAL : -E2BIG;
    for (int i = 0; i < n; i++)
        if (tokens[i] < 0 || tokens[i] >= S->n_vocab)
            return -EINVAL;
    struct embed_job j = { tokens, n, pool, out, 0, false, PTHREAD_COND_INITIALIZER, NULL };
    pthread_mutex_lock(&S->mu);
    if (S->stop) {
        pthread_mutex_unlock(&S->mu);
        return -ECANCELED;
    }
    struct embed_job **at = &S->embeds;
    while (*at != NULL)
        at = &(*at)->next;
    *at = &j;
    pthread_cond_signal(&S->cv);
    while (!j.done)
        pthread_cond_wait(&j.cv, &S->mu);
    pthread_mutex_unlock(&S->mu);
    pthread_cond_destroy(&j.cv);
    return j.rc;
}

/* The pool's figures for engine_sched_stats, read by other threads. */
static void
note_kv(struct engine_sched *S)
{
    int used = 0, cached = 0;
    engine__kv_usage(engine__ctx_kv(S->ctx), &used, &cached);
    atomic_store_explicit(&S->kv_used, used, memory_order_relaxed);
    atomic_store_explicit(&S->kv_cached, cached, memory_order_relaxed);
}

static void *
sched_main(void *arg)
{
    struct engine_sched *S = arg;
    while (admit(S)) {
        run_embeds(S);
        iterate(S);
        note_kv(S);
    }
    run_embeds(S); /* nobody is left waiting */
    return NULL;
}

/* ---- Public ----------------------------------------------------------- */

static bool
params_valid(const struct engine_sched_params *p)
{
    return p->n_ctx >= 1 && p->n_slots >= 1 && p->n_slots <= 1024 && p->n_threads >= 1 &&
           p->max_queue >= 0 && p->batch_rows >= 1 && p->batch_rows <= 65536;
}

int
engine_sched_new(struct engine_model *m, const struct engine_sched_params *p,
                 struct engine_sched **out)
{
    *out = NULL;
    if (!params_valid(p))
        return -EINVAL;
    struct engine_sched *S = engine__xcalloc(1, sizeof(*S));
    S->m = m;
    S->p = *p;
    S->n_vocab = engine_model_hparams(m)->n_vocab;
    pthread_mutex_init(&S->mu, NULL);
    pthread_cond_init(&S->cv, NULL);
    atomic_init(&S->n_running, 0);
    size_t rows = (size_t)p->batch_rows + (size_t)p->n_slots;
    S->slots = engine__xcalloc((size_t)p->n_slots, sizeof(*S->slots));
    S->tokens = engine__xcalloc(rows, sizeof(int32_t));
    S->pos = engine__xcalloc(rows, sizeof(int32_t));
    S->seq = engine__xcalloc(rows, sizeof(int32_t));
    S->want = engine__xcalloc(rows, sizeof(bool));
    S->lora = engine__xcalloc(rows, sizeof(*S->lora));
    S->row_slot = engine__xcalloc((size_t)p->n_slots, sizeof(int));
    S->eog = engine__xcalloc((size_t)S->n_vocab, sizeof(int32_t));
    for (int i = 0; i < S->n_vocab; i++)
        if (tokenizer_is_eog(engine_model_tokenizer(m), i))
            S->eog[S->n_eog++] = i;
    S->logits = engine__try_alloc(((size_t)p->n_slots + 1) * (size_t)S->n_vocab, sizeof(float));
    /* one sequence more than the slots, for embeddings, sharing the slots' pool */
    int rc = S->logits ? engine_ctx_new_pool(m, p->n_ctx, p->n_slots + 1, p->n_slots,
                                             p->n_threads, p->kv, &S->ctx)
                       : -ENOMEM;
    if (rc == 0 && pthread_create(&S->thread, NULL, sched_main, S) != 0)
        rc = -EAGAIN;
    if (rc < 0) {
        engine_ctx_free(S->ctx);
        S->ctx = NULL;
        S->stop = true;
        engine_sched_free(S);
        return rc;
    }
    *out = S;
    return 0;
}

void
engine_sched_stop(struct engine_sched *S)
{
    if (S == NULL || S->joined)
        return;
    pthread_mutex_lock(&S->mu);
    bool running = S->ctx != NULL;
    S->stop = true;
    pthread_cond_signal(&S->cv);
    pthread_mutex_unlock(&S->mu);
    if (running)
        pthread_join(S->thread, NULL);
    S->joined = true;
    for (int i = 0; i < S->p.n_slots; i++)
        if (S->slots[i].r != NULL)
            free_slot(S, i, ENGINE_FINISH_CANCELLED);
    pthread_mutex_lock(&S->mu); /* submits may still come; they see stop */
    struct engine_req *done = NULL;
    for (int k = 0; k < S->n_tenants; k++)
        while (S->tenants[k].head != NULL) {
            struct engine_req *r = queue_pop(S, &S->tenants[k]);
            r->next = done;
            done = r;
        }
    S->n_tenants = 0;
    pthread_mutex_unlock(&S->mu);
    for (struct engine_req *r = done, *next; r != NULL; r = next) {
        next = r->next;
        req_finish(r, ENGINE_FINISH_CANCELLED);
    }
    if (S->ctx != NULL)
        note_kv(S);
}

void
engine_sched_free(struct engine_sched *S)
{
    if (S == NULL)
        return;
    engine_sched_stop(S);
    engine_ctx_free(S->ctx);
    pthread_mutex_destroy(&S->mu);
    pthread_cond_destroy(&S->cv);
    free(S->slots);
    free(S->tokens);
    free(S->pos);
    free(S->seq);
    free(S->want);
    free(S->lora);
    free(S->row_slot);
    free(S->eog);
    free(S->logits);
    free(S->tenants);
    free(S);
}

void
engine_sched_load(struct engine_sched *S, int *waiting, int *running)
{
    pthread_mutex_lock(&S->mu);
    *waiting = S->n_waiting;
    pthread_mutex_unlock(&S->mu);
    *running = atomic_load(&S->n_running);
}

void
engine_sched_stats(struct engine_sched *S, struct engine_sched_stats *out)
{
    pthread_mutex_lock(&S->mu);
    out->waiting = S->n_waiting;
    pthread_mutex_unlock(&S->mu);
    out->iterations = atomic_load_explicit(&S->iterations, memory_order_relaxed);
    out->preemptions = atomic_load_explicit(&S->preemptions, memory_order_relaxed);
    out->prompt_tokens = atomic_load_explicit(&S->prompt_tokens, memory_order_relaxed);
    out->generated_tokens = atomic_load_explicit(&S->generated_tokens, memory_order_relaxed);
    out->running = atomic_load(&S->n_running);
    out->n_slots = S->p.n_slots;
    out->kv_blocks_total = S->ctx != NULL ? engine__ctx_kv(S->ctx)->n_blocks : 0;
    out->kv_blocks_used = atomic_load_explicit(&S->kv_used, memory_order_relaxed);
    out->kv_blocks_cached = atomic_load_explicit(&S->kv_cached, memory_order_relaxed);
    out->kv_block_size = ENGINE_KV_BLOCK;
}

static int
check_params(const struct engine_sched *S, const struct engine_req_params *p)
{
    if (p->lora != NULL && (p->lora->n < 0 || p->lora->n > ENGINE_LORA_MAX_SET))
        return -EINVAL;
    if (p->n_prompt < 1 || p->max_tokens < 1 || p->n_top_logprobs < 0 ||
        p->n_top_logprobs > ENGINE_MAX_TOP_LOGPROBS)
        return -EINVAL;
    if ((int64_t)p->n_prompt + p->max_tokens > S->p.n_ctx)
        return -EINVAL;
    for (int i = 0; i < p->n_prompt; i++)
        if (p->prompt[i] < 0 || p->prompt[i] >= S->n_vocab)
            return -EINVAL;
    return 0;
}

int
engine_sched_submit(struct engine_sched *S, const struct engine_req_params *p,
                    struct engine_req **out)
{
    *out = NULL;
    int rc = check_params(S, p);
    struct engine_req *r = NULL;
    if (rc < 0 || (rc = req_new(p, S->n_vocab, &r)) < 0)
        return rc;
    r->iter_submit = atomic_load(&S->iterations);
    pthread_mutex_lock(&S->mu);
    int free_slots = S->p.n_slots - atomic_load(&S->n_running);
    if (S->stop)
        rc = -ECANCELED;
    else if (S->n_waiting >= S->p.max_queue + (free_slots > 0 ? free_slots : 0))
        rc = -EAGAIN;
    if (rc == 0) {
        queue_push(S, tenant_get(S, p->tenant), r, false);
        pthread_cond_signal(&S->cv);
    }
    pthread_mutex_unlock(&S->mu);
    if (rc < 0) {
        atomic_store(&r->refs, 1);
        req_unref(r);
        return rc;
    }
    *out = r;
    return 0;
}
