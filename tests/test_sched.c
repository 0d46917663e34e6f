/*
 * test_sched.c - the continuous-batching scheduler: batching is invisible in
 * results, cancellation frees slots, limits are enforced, logprobs are right,
 * tenants are served fairly and a preempted request's output is unchanged.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "testutil.h"
#include "adapters.h"
#include "engine.h"

static const char *cases[] = { "short-genesis", "short-moses", "short-modern", "long-kjv",
                               "long-mixed" };

struct golden {
    int32_t prompt[256];
    int n_prompt;
    int32_t gen[64];
    int n_gen;                 /* without the final EOS */
    double top_logprob;        /* of the first generated token */
};

static struct golden goldens[5];

static void
load_golden(const char *config, const char *prompt, struct golden *g)
{
    {
        char path[512];
        snprintf(path, sizeof(path), "%s/fixtures/golden/%s__%s.json", test_shared_dir(),
                 config, prompt);
        char *text = test_read_file(path, NULL);
        cJSON *j = cJSON_Parse(text ? text : "");
        free(text);
        g->n_prompt = test_json_ids(j, "prompt_ids", g->prompt, 256);
        g->n_gen = test_json_ids(j, "generated_ids", g->gen, 64);
        if (g->n_gen > 0 && g->gen[g->n_gen - 1] == 2)
            g->n_gen--;
        const cJSON *top = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "top5_first"), 0);
        g->top_logprob = cJSON_GetObjectItemCaseSensitive(top, "logit")->valuedouble -
                         cJSON_GetObjectItemCaseSensitive(j, "logsumexp_first")->valuedouble;
        cJSON_Delete(j);
    }
}

static void
load_goldens(void)
{
    for (int c = 0; c < 5; c++)
        load_golden("base", cases[c], &goldens[c]);
}

static struct engine_model *
open_model(void)
{
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/models/kjv-tiny-f32.gguf", test_shared_dir());
    struct engine_model *m = NULL;
    if (engine_model_open(path, &m, err, sizeof(err)) < 0)
        fprintf(stderr, "%s\n", err);
    return m;
}

static struct engine_sched *
open_sched(struct engine_model *m, int slots, int queue)
{
    struct engine_sched_params p = { 256, slots, 2, queue, 64, ENGINE_KV_CACHE_AUTO };
    struct engine_sched *s = NULL;
    CHECK_EQ(engine_sched_new(m, &p, &s), 0);
    return s;
}

static atomic_int notified;

static void
on_notify(void *arg)
{
    (void)arg;
    atomic_fetch_add(&notified, 1);
}

static struct engine_req_params
greedy_params(const struct golden *g, int max_tokens)
{
    struct engine_req_params p = { g->prompt, g->n_prompt, max_tokens, ENGINE_SAMPLING_INIT,
                                   false, 0, false, on_notify, NULL, NULL, 0 };
    p.sampling.temperature = 0.0f;
    return p;
}

/* Takes everything a request produces until it finishes (10 s at most). */
static enum engine_finish
drain(struct engine_req *r, int32_t *ids, int *n, struct engine_tok *first)
{
    enum engine_finish f = ENGINE_FINISH_NONE;
    struct engine_tok t[16];
    *n = 0;
    for (int spins = 0; spins < 100000 && f == ENGINE_FINISH_NONE; spins++) {
        int k = engine_req_take(r, t, 16, &f);
        for (int i = 0; i < k; i++) {
            if (*n == 0 && first != NULL)
                *first = t[i];
            ids[(*n)++] = t[i].id;
        }
        if (k == 0 && f == ENGINE_FINISH_NONE)
            usleep(100);
    }
    return f;
}

/* ---- Tests ------------------------------------------------------------ */

static void
test_concurrent_equals_golden(void)
{
    struct engine_model *m = open_model();
    struct engine_sched *s = m ? open_sched(m, 4, 32) : NULL;
    struct engine_req *reqs[16] = { 0 };
    for (int i = 0; s && i < 16; i++) {
        struct engine_req_params p = greedy_params(&goldens[i % 5], 32);
        CHECK_EQ(engine_sched_submit(s, &p, &reqs[i]), 0);
    }
    for (int i = 0; s && i < 16; i++) {
        int32_t ids[64];
        int n = 0;
        enum engine_finish f = drain(reqs[i], ids, &n, NULL);
        const struct golden *g = &goldens[i % 5];
        CHECK_EQ(f, g->n_gen < 32 ? ENGINE_FINISH_STOP : ENGINE_FINISH_LENGTH);
        CHECK_EQ(n, g->n_gen);
        CHECK(n == g->n_gen && memcmp(ids, g->gen, (size_t)n * sizeof(int32_t)) == 0);
        int np = 0, ng = 0;
        double ttft = 0;
        engine_req_stats(reqs[i], &np, &ng, &ttft);
        CHECK_EQ(np, g->n_prompt);
        CHECK_EQ(ng, n);
        CHECK(ttft > 0.0);
        engine_req_release(reqs[i]);
    }
    CHECK(atomic_load(&notified) > 0);
    engine_sched_free(s);
    engine_model_free(m);
}

static void
test_cancel_frees_slot(void)
{
    struct engine_model *m = open_model();
    struct engine_sched *s = m ? open_sched(m, 1, 4) : NULL;
    if (s == NULL)
        return;
    struct engine_req_params p = greedy_params(&goldens[0], 200);
    p.ignore_eos = true;
    struct engine_req *a = NULL, *b = NULL;
    CHECK_EQ(engine_sched_submit(s, &p, &a), 0);
    struct engine_tok t;
    enum engine_finish f = ENGINE_FINISH_NONE;
    while (engine_req_take(a, &t, 1, &f) == 0 && f == ENGINE_FINISH_NONE)
        usleep(100);
    engine_req_release(a);      /* the client went away */
    /* The one slot must serve the next request to completion. */
    p = greedy_params(&goldens[1], 32);
    CHECK_EQ(engine_sched_submit(s, &p, &b), 0);
    int32_t ids[64];
    int n = 0;
    CHECK_EQ(drain(b, ids, &n, NULL), ENGINE_FINISH_LENGTH);
    CHECK_EQ(n, 32);
    engine_req_release(b);
    int waiting = -1, running = -1;
    for (int i = 0; i < 1000 && running != 0; i++, usleep(1000))
        engine_sched_load(s, &waiting, &running);
    CHECK_EQ(running, 0);
    CHECK_EQ(waiting, 0);
    engine_sched_free(s);
    engine_model_free(m);
}

static void
test_limits(void)
{
    struct engine_model *m = open_model();
    struct engine_sched *s = m ? open_sched(m, 1, 1) : NULL;
    if (s == NULL)
        return;
    struct engine_req_params p = greedy_params(&goldens[3], 256 - goldens[3].n_prompt + 1);
    struct engine_req *r = NULL;
    CHECK_EQ(engine_sched_submit(s, &p, &r), -EINVAL);        /* beyond the context */
    CHECK(r == NULL);
    p = greedy_params(&goldens[0], 0);
    CHECK_EQ(engine_sched_submit(s, &p, &r), -EINVAL);
    int32_t bad = 5000;
    p = greedy_params(&goldens[0], 4);
    p.prompt = &bad, p.n_prompt = 1;
    CHECK_EQ(engine_sched_submit(s, &p, &r), -EINVAL);

    /* One slot and a queue of one: a third long request must be refused. */
    struct engine_req *q[3] = { 0 };
    p = greedy_params(&goldens[0], 200);
    p.ignore_eos = true;
    int refused = 0;
    for (int i = 0; i < 3; i++)
        refused += engine_sched_submit(s, &p, &q[i]) == -EAGAIN;
    CHECK(refused >= 1);
    for (int i = 0; i < 3; i++)
        engine_req_release(q[i]);
    engine_sched_free(s);
    engine_model_free(m);
}

static void
test_logprobs(void)
{
    struct engine_model *m = open_model();
    struct engine_sched *s = m ? open_sched(m, 2, 4) : NULL;
    if (s == NULL)
        return;
    struct engine_req_params p = greedy_params(&goldens[0], 4);
    p.logprobs = true;
    p.n_top_logprobs = 5;
    struct engine_req *r = NULL;
    CHECK_EQ(engine_sched_submit(s, &p, &r), 0);
    int32_t ids[8];
    int n = 0;
    struct engine_tok first = { 0 };
    drain(r, ids, &n, &first);
    CHECK_EQ(first.id, goldens[0].gen[0]);
    CHECK_EQ(first.n_top, 5);
    CHECK_EQ(first.top_id[0], first.id);
    CHECK(fabs(first.logprob - goldens[0].top_logprob) < 1e-3);
    for (int k = 1; k < first.n_top; k++)
        CHECK(first.top_logprob[k] <= first.top_logprob[k - 1]);
    engine_req_release(r);
    engine_sched_free(s);
    engine_model_free(m);
}

static void
test_free_with_running(void)
{
    struct engine_model *m = open_model();
    struct engine_sched *s = m ? open_sched(m, 2, 8) : NULL;
    if (s == NULL)
        return;
    struct engine_req *r[4] = { 0 };
    struct engine_req_params p = greedy_params(&goldens[4], 100);
    p.ignore_eos = true;
    for (int i = 0; i < 4; i++)
        CHECK_EQ(engine_sched_submit(s, &p, &r[i]), 0);
    usleep(20000);
    engine_sched_free(s);          /* running and queued requests end cancelled */
    for (int i = 0; i < 4; i++) {
        struct engine_tok t[128];
        enum engine_finish f = ENGINE_FINISH_NONE;
        while (engine_req_take(r[i], t, 128, &f) > 0)
            ;
        CHECK(f == ENGINE_FINISH_CANCELLED || f == ENGINE_FINISH_LENGTH);
        engine_req_release(r[i]);
    }
    engine_model_free(m);
}

/* Requests with different adapters (and none) running together each get their golden tokens. */
static void
test_adapter_requests(void)
{
    struct engine_model *m = open_model();
    struct engine_sched *s = m ? open_sched(m, 3, 16) : NULL;
    if (s == NULL)
        return;
    const char *names[2] = { "fortunes", "jargon" };
    struct engine_lora *l[2] = { NULL, NULL };
    for (int i = 0; i < 2; i++) {
        char path[512], err[512] = "";
        struct adapters_info info;
        snprintf(path, sizeof(path), "%s/models/lora/kjv-tiny-lora-%s.gguf", test_shared_dir(),
                 names[i]);
        CHECK_EQ(adapters_load_path(m, path, 64, &l[i], &info, err, sizeof(err)), 0);
    }
    struct engine_lora_set sets[3] = { { 1, { l[0] }, { 1.0f } }, { 1, { l[1] }, { 1.0f } },
                                       { 2, { l[0], l[1] }, { 1.0f, 0.5f } } };
    const char *configs[4] = { "base", "lora-fortunes", "lora-jargon",
                               "lora-fortunes1.0+jargon0.5" };
    struct golden g[8];
    struct engine_req *r[8] = { 0 };
    for (int i = 0; i < 8; i++) {
        load_golden(configs[i % 4], cases[i % 5], &g[i]);
        struct engine_req_params p = greedy_params(&g[i], 32);
        p.lora = i % 4 == 0 ? NULL : &sets[i % 4 - 1];
        CHECK_EQ(engine_sched_submit(s, &p, &r[i]), 0);
    }
    /* The requests hold their own references: ours can go now. */
    engine_lora_unref(l[0]);
    engine_lora_unref(l[1]);
    for (int i = 0; i < 8; i++) {
        int32_t ids[64];
        int n = 0;
        drain(r[i], ids, &n, NULL);
        CHECK(n == g[i].n_gen && memcmp(ids, g[i].gen, (size_t)n * sizeof(int32_t)) == 0);
        engine_req_release(r[i]);
    }
    engine_sched_free(s);
    engine_model_free(m);
}

/* Runs one greedy request of tenant alone; its ids must equal the golden's. */
static void
run_golden(struct engine_sched *s, const struct golden *g, const struct engine_lora_set *set,
           uint32_t tenant)
{
    struct engine_req_params p = greedy_params(g, 32);
    p.lora = set;
    p.tenant = tenant;
    struct engine_req *r = NULL;
    CHECK_EQ(engine_sched_submit(s, &p, &r), 0);
    int32_t ids[64];
    int n = 0;
    drain(r, ids, &n, NULL);
    CHECK(n == g->n_gen && memcmp(ids, g->gen, (size_t)n * sizeof(int32_t)) == 0);
    engine_req_release(r);
}

/*
 * The prefix cache: the same 145-token prompt, one request after another,
 * under the base, adapter A, A at scale 0.5, A loaded again (a new version
 * with the same weights), and another adapter. Every answer equals its
 * golden; the cache serves 144 positions exactly when tokens, adapters,
 * versions and scales all match an earlier request, and never otherwise.
 */
static void
test_prefix_cache_isolation(void)
{
    struct engine_model *m = open_model();
    struct engine_sched *s = m ? open_sched(m, 8, 16) : NULL; /* 128 blocks: nothing evicted */
    if (s == NULL)
        return;
    struct engine_lora *l[3] = { NULL, NULL, NULL };
    const char *files[3] = { "fortunes", "fortunes", "jargon" };
    for (int i = 0; i < 3; i++) {
        char path[512], err[512] = "";
        struct adapters_info info;
        snprintf(path, sizeof(path), "%s/models/lora/kjv-tiny-lora-%s.gguf", test_shared_dir(),
                 files[i]);
        CHECK_EQ(adapters_load_path(m, path, 64, &l[i], &info, err, sizeof(err)), 0);
    }
    struct engine_lora_set a1 = { 1, { l[0] }, { 1.0f } }, a_half = { 1, { l[0] }, { 0.5f } };
    struct engine_lora_set a2 = { 1, { l[1] }, { 1.0f } }, j1 = { 1, { l[2] }, { 1.0f } };
    struct {
        const char *config;
        const struct engine_lora_set *set;
        int hits;                  /* positions the cache must serve */
    } steps[] = {
        { "base", NULL, 0 }, { "base", NULL, 144 },
        { "lora-fortunes", &a1, 0 }, { "lora-fortunes", &a1, 144 },
        { "lora-fortunes-scale0.5", &a_half, 0 },
        { "lora-fortunes", &a2, 0 },              /* A replaced: a new object */
        { "lora-jargon", &j1, 0 }, { "base", NULL, 144 }, { "lora-fortunes", &a2, 144 },
    };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        struct golden g;
        load_golden(steps[i].config, "long-kjv", &g);
        uint64_t before = engine_sched_prefix_hits(s);
        run_golden(s, &g, steps[i].set, 0);
        uint64_t hits = engine_sched_prefix_hits(s) - before;
        if (hits != (uint64_t)steps[i].hits)
            fprintf(stderr, "step %zu (%s): %llu positions from the cache, want %d\n", i,
                    steps[i].config, (unsigned long long)hits, steps[i].hits);
        CHECK_EQ(hits, (uint64_t)steps[i].hits);
    }
    for (int i = 0; i < 3; i++)
        engine_lora_unref(l[i]);
    engine_sched_free(s);
    engine_model_free(m);
}

/*
 * Requests sharing prompts and adapters run at once, three slots for twelve:
 * later ones attach blocks that running ones published (shared while both
 * run); every answer is still its golden.
 */
static void
test_prefix_cache_concurrent(void)
{
    struct engine_model *m = open_model();
    struct engine_sched *s = m ? open_sched(m, 3, 32) : NULL;
    if (s == NULL)
        return;
    struct engine_lora *l = NULL;
    char path[512], err[512] = "";
    struct adapters_info info;
    snprintf(path, sizeof(path), "%s/models/lora/kjv-tiny-lora-fortunes.gguf",
             test_shared_dir());
    CHECK_EQ(adapters_load_path(m, path, 64, &l, &info, err, sizeof(err)), 0);
    struct engine_lora_set set = { 1, { l }, { 1.0f } };
    struct golden g[2];
    load_golden("base", "long-kjv", &g[0]);
    load_golden("lora-fortunes", "long-kjv", &g[1]);
    uint64_t before = engine_sched_prefix_hits(s);
    struct engine_req *r[12];
    for (int i = 0; i < 12; i++) {
        struct engine_req_params p = greedy_params(&g[i % 2], 32);
        p.lora = i % 2 ? &set : NULL;
        CHECK_EQ(engine_sched_submit(s, &p, &r[i]), 0);
    }
    engine_lora_unref(l);
    for (int i = 0; i < 12; i++) {
        int32_t ids[64];
        int n = 0;
        drain(r[i], ids, &n, NULL);
        CHECK(n == g[i % 2].n_gen && memcmp(ids, g[i % 2].gen, (size_t)n * sizeof(int32_t)) == 0);
        engine_req_release(r[i]);
    }
    CHECK(engine_sched_prefix_hits(s) - before >= 144); /* the queued ones found the cache */
    engine_sched_free(s);
    engine_model_free(m);
}

/*
 * A pool of 16 blocks (one slot): another prompt takes the blocks the first
 * one's prefix left published, the deepest first, so the first prompt comes
 * back to its first 4 blocks (64 positions) and computes the rest; both
 * answers stay golden.
 */
static void
test_prefix_cache_eviction(void)
{
    struct engine_model *m = open_model();
    struct engine_sched *s = m ? open_sched(m, 1, 16) : NULL;
    if (s == NULL)
        return;
    const struct golden *a = &goldens[3], *b = &goldens[4]; /* long-kjv, long-mixed */
    run_golden(s, a, NULL, 0);
    run_golden(s, b, NULL, 0);
    uint64_t before = engine_sched_prefix_hits(s);
    run_golden(s, a, NULL, 0);
    CHECK_EQ(engine_sched_prefix_hits(s) - before, (uint64_t)64);
    engine_sched_free(s);
    engine_model_free(m);
}

/*
 * Embeddings from the scheduler: unit length, the same floats again, the same
 * whatever the prefill chunk (64 or 512 rows), last-token pooling differs, and
 * requests generating meanwhile still give their golden tokens.
 */
static void
test_embeddings(void)
{
    struct engine_model *m = open_model();
    struct engine_sched *s = m ? open_sched(m, 2, 8) : NULL, *big = NULL;
    struct engine_sched_params p = { 256, 2, 2, 8, 512, ENGINE_KV_CACHE_AUTO };
    if (s == NULL || engine_sched_new(m, &p, &big) < 0) {
        CHECK(false);
        engine_sched_free(s);
        engine_model_free(m);
        return;
    }
    int e = engine_model_hparams(m)->n_embd;
    const struct golden *g = &goldens[3];        /* long-kjv: more than 64 prompt tokens */
    CHECK(g->n_prompt > 64);
    float *a = calloc((size_t)e, sizeof(float)), *b = calloc((size_t)e, sizeof(float));
    float *c = calloc((size_t)e, sizeof(float)), *l = calloc((size_t)e, sizeof(float));
    CHECK_EQ(engine_sched_embed(s, g->prompt, g->n_prompt, ENGINE_POOL_MEAN, a), 0);
    double norm = 0;
    for (int i = 0; i < e; i++)
        norm += (double)a[i] * a[i];
    CHECK(fabs(norm - 1.0) < 1e-5);
    CHECK_EQ(engine_sched_embed(big, g->prompt, g->n_prompt, ENGINE_POOL_MEAN, b), 0);
    CHECK(memcmp(a, b, (size_t)e * sizeof(float)) == 0);
    CHECK_EQ(engine_sched_embed(s, g->prompt, g->n_prompt, ENGINE_POOL_LAST, l), 0);
    CHECK(memcmp(a, l, (size_t)e * sizeof(float)) != 0);
    struct engine_req *reqs[4] = { 0 };
    for (int i = 0; i < 4; i++) {
        struct engine_req_params rp = greedy_params(&goldens[i], 32);
        CHECK_EQ(engine_sched_submit(s, &rp, &reqs[i]), 0);
    }
    for (int k = 0; k < 3; k++) {
        CHECK_EQ(engine_sched_embed(s, g->prompt, g->n_prompt, ENGINE_POOL_MEAN, c), 0);
        CHECK(memcmp(a, c, (size_t)e * sizeof(float)) == 0);
    }
    for (int i = 0; i < 4; i++) {
        int32_t ids[64];
        int n = 0;
        drain(reqs[i], ids, &n, NULL);
        CHECK(n == goldens[i].n_gen && memcmp(ids, goldens[i].gen, (size_t)n * 4) == 0);
        engine_req_release(reqs[i]);
    }
    int32_t bad = -1, many[300] = { 0 };
    CHECK_EQ(engine_sched_embed(s, g->prompt, 0, ENGINE_POOL_MEAN, c), -EINVAL);
    CHECK_EQ(engine_sched_embed(s, &bad, 1, ENGINE_POOL_MEAN, c), -EINVAL);
    CHECK_EQ(engine_sched_embed(s, many, 300, ENGINE_POOL_MEAN, c), -E2BIG);
    free(a), free(b), free(c), free(l);
    engine_sched_free(big);
    engine_sched_free(s);
    engine_model_free(m);
}

/* ---- Tenants ---------------------------------------------------------- */

static struct engine_sched_stats
stats(struct engine_sched *s)
{
    struct engine_sched_stats st;
    engine_sched_stats(s, &st);
    return st;
}

/* A greedy request of tenant that ignores end-of-generation tokens. */
static struct engine_req_params
long_params(const struct golden *g, int max_tokens, uint32_t tenant)
{
    struct engine_req_params p = greedy_params(g, max_tokens);
    p.ignore_eos = true;
    p.tenant = tenant;
    return p;
}

/* Waits (5 s at most) until r has produced n tokens; returns whether it has. */
static bool
wait_tokens(struct engine_req *r, int n)
{
    int np = 0, ng = 0;
    double ttft = 0;
    for (int spins = 0; spins < 50000; spins++, usleep(100)) {
        engine_req_stats(r, &np, &ng, &ttft);
        if (ng >= n)
            return true;
    }
    return false;
}

/* Waits (5 s at most) until s has generated n tokens in all. */
static bool
wait_generated(struct engine_sched *s, uint64_t n)
{
    for (int spins = 0; spins < 50000; spins++, usleep(100))
        if (stats(s).generated_tokens >= n)
            return true;
    return false;
}

/* The scheduler's iteration count when a request's first notify came (its first token). */
struct first_seen {
    struct engine_sched *s;
    _Atomic uint64_t iterations;        /* 0 until then */
};

static void
on_first(void *arg)
{
    struct first_seen *f = arg;
    if (atomic_load(&f->iterations) == 0)
        atomic_store(&f->iterations, stats(f->s).iterations);
}

/*
 * A request submitted from another's notify at its fourth token: on the
 * scheduler thread, between two iterations, so the count at submit is exact
 * (a test thread may lose its core for a few iterations anywhere).
 */
struct trigger {
    struct engine_sched *s;
    struct engine_req_params p;
    struct engine_req *q;
    uint64_t at;                        /* iterations when q was queued */
    int rc;
    atomic_int calls;
    atomic_bool done;                   /* q, at and rc are set */
};

static void
on_trigger(void *arg)
{
    struct trigger *t = arg;
    if (atomic_fetch_add(&t->calls, 1) != 3)
        return;
    t->at = stats(t->s).iterations;
    t->rc = engine_sched_submit(t->s, &t->p, &t->q);
    atomic_store(&t->done, true);
}

/*
 * Tenant 1 fills both slots and queues six more; tenant 2's one request
 * preempts one of tenant 1's sequences (the only preemption), has its first
 * token in the very next iteration after its submit, and is its golden.
 */
static void
test_tenant_ttft(void)
{
    struct engine_model *m = open_model();
    struct engine_sched *s = m ? open_sched(m, 2, 16) : NULL;
    if (s == NULL)
        return;
    struct first_seen first = { s, 0 };
    struct trigger trig = { .s = s, .p = greedy_params(&goldens[1], 4) };
    trig.p.tenant = 2;
    trig.p.notify = on_first;
    trig.p.arg = &first;
    struct engine_req *r[8] = { 0 };
    for (int i = 0; i < 8; i++) {
        struct engine_req_params p = long_params(&goldens[i % 3], 200, 1);
        if (i == 0)
            p.notify = on_trigger, p.arg = &trig;
        CHECK_EQ(engine_sched_submit(s, &p, &r[i]), 0);
    }
    for (int spins = 0; spins < 50000 && !atomic_load(&trig.done); spins++)
        usleep(100);
    bool done = atomic_load(&trig.done);
    CHECK(done && trig.rc == 0);
    if (done && trig.q != NULL) {
        for (int spins = 0; spins < 50000 && atomic_load(&first.iterations) == 0; spins++)
            usleep(100);   /* the token shows before its notify has run */
        uint64_t took = atomic_load(&first.iterations) - trig.at;
        if (took != 1)
            fprintf(stderr, "first token after %llu iterations\n", (unsigned long long)took);
        CHECK_EQ(took, 1);
        CHECK_EQ(stats(s).preemptions, 1);
        int32_t ids[8];
        int n = 0;
        CHECK_EQ(drain(trig.q, ids, &n, NULL), ENGINE_FINISH_LENGTH);
        CHECK(n == 4 && memcmp(ids, goldens[1].gen, 4 * sizeof(int32_t)) == 0);
        engine_req_release(trig.q);
    }
    for (int i = 0; i < 8; i++)
        engine_req_release(r[i]);
    engine_sched_free(s);
    engine_model_free(m);
}

/*
 * Tenant 1 runs five requests in two slots while tenants 2 and 3 come and go
 * until four of them have preempted one of tenant 1's sequences, each at
 * another point of its output (a newcomer that finds a slot just freed by a
 * finished sequence preempts none): every tenant-1 answer is still token for
 * token its golden,
 * which is what it gives alone on an idle scheduler (run_golden; greedy, and
 * the cache is f32 for this f32 model, as in the goldens). The re-prefilled
 * output is partly found in the prefix cache (its full blocks, published
 * when it was preempted) and partly computed again as prompt rows.
 */
static void
test_preempted_equals_alone(void)
{
    struct engine_model *m = open_model();
    struct engine_sched *s = m ? open_sched(m, 2, 32) : NULL;
    if (s == NULL)
        return;
    struct engine_req *r[5] = { 0 };
    for (int i = 0; i < 5; i++) {
        struct engine_req_params p = greedy_params(&goldens[i], 32);
        p.tenant = 1;
        CHECK_EQ(engine_sched_submit(s, &p, &r[i]), 0);
    }
    int32_t ids[64];
    int n = 0;
    for (int k = 0; k < 8 && stats(s).preemptions < 4; k++) {
        CHECK(wait_generated(s, stats(s).generated_tokens + 2 + 5 * (uint64_t)k));
        struct engine_req_params p = greedy_params(&goldens[k % 3], 4);
        p.tenant = 2 + (uint32_t)(k % 2);
        struct engine_req *q = NULL;
        CHECK_EQ(engine_sched_submit(s, &p, &q), 0);
        CHECK_EQ(drain(q, ids, &n, NULL), ENGINE_FINISH_LENGTH);
        engine_req_release(q);
    }
    CHECK(stats(s).preemptions >= 4);
    for (int i = 0; i < 5; i++) {
        const struct golden *g = &goldens[i];
        CHECK_EQ(drain(r[i], ids, &n, NULL), g->n_gen < 32 ? ENGINE_FINISH_STOP
                                                            : ENGINE_FINISH_LENGTH);
        CHECK(n == g->n_gen && memcmp(ids, g->gen, (size_t)n * sizeof(int32_t)) == 0);
        engine_req_release(r[i]);
    }
    engine_sched_free(s);
    engine_model_free(m);
}

static atomic_int n_started;

/* A request's first notify (its first token here): notes its place in the order. */
static void
on_start(void *arg)
{
    atomic_int *order = arg;
    if (atomic_load(order) < 0)
        atomic_store(order, atomic_fetch_add(&n_started, 1));
}

/*
 * One slot, held by a third tenant while tenant 1 queues three requests and
 * then tenant 2 three: once it is free they start alternately, 1 2 1 2 1 2,
 * each tenant's in the order queued.
 */
static void
test_tenant_admission_order(void)
{
    struct engine_model *m = open_model();
    struct engine_sched *s = m ? open_sched(m, 1, 8) : NULL;
    if (s == NULL)
        return;
    struct engine_req_params p = long_params(&goldens[0], 200, 3);
    struct engine_req *blocker = NULL, *r[6] = { 0 };
    CHECK_EQ(engine_sched_submit(s, &p, &blocker), 0);
    CHECK(wait_tokens(blocker, 1));
    static atomic_int order[6];
    atomic_store(&n_started, 0);
    for (int i = 0; i < 6; i++) {
        atomic_store(&order[i], -1);
        p = greedy_params(&goldens[i % 3], 4);
        p.tenant = i < 3 ? 1 : 2;
        p.notify = on_start;
        p.arg = &order[i];
        CHECK_EQ(engine_sched_submit(s, &p, &r[i]), 0);
    }
    engine_req_release(blocker);    /* cancels it: the slot frees */
    for (int i = 0; i < 6; i++) {
        int32_t ids[8];
        int n = 0;
        CHECK_EQ(drain(r[i], ids, &n, NULL), ENGINE_FINISH_LENGTH);
        CHECK_EQ(atomic_load(&order[i]), i < 3 ? 2 * i : 2 * (i - 3) + 1);
        engine_req_release(r[i]);
    }
    engine_sched_free(s);
    engine_model_free(m);
}

/*
 * The same 145-token prompt, one request after another: the cache serves 144
 * positions to a tenant that ran it before, and none to another tenant.
 */
static void
test_tenant_prefix_cache(void)
{
    struct engine_model *m = open_model();
    struct engine_sched *s = m ? open_sched(m, 8, 16) : NULL; /* 128 blocks: nothing evicted */
    if (s == NULL)
        return;
    static const struct {
        uint32_t tenant;
        int hits;
    } steps[] = { { 1, 0 }, { 1, 144 }, { 2, 0 }, { 2, 144 }, { 0, 0 }, { 1, 144 } };
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        uint64_t before = engine_sched_prefix_hits(s);
        run_golden(s, &goldens[3], NULL, steps[i].tenant);
        uint64_t hits = engine_sched_prefix_hits(s) - before;
        if (hits != (uint64_t)steps[i].hits)
            fprintf(stderr, "step %zu (tenant %u): %llu positions from the cache, want %d\n", i,
                    steps[i].tenant, (unsigned long long)hits, steps[i].hits);
        CHECK_EQ(hits, (uint64_t)steps[i].hits);
    }
    engine_sched_free(s);
    engine_model_free(m);
}

/*
 * A request preempted for another tenant waits in the queue; cancelled
 * there, it finishes as cancelled at once, with the tokens it had, while
 * the others run on (ASan: everything is freed).
 */
static void
test_cancel_preempted(void)
{
    struct engine_model *m = open_model();
    struct engine_sched *s = m ? open_sched(m, 2, 8) : NULL;
    if (s == NULL)
        return;
    struct engine_req *r[3] = { 0 };
    for (int i = 0; i < 3; i++) {       /* tenant 1, 1, then 2: r[1] is the newest of 1 */
        struct engine_req_params p = long_params(&goldens[i], 200, i < 2 ? 1 : 2);
        CHECK_EQ(engine_sched_submit(s, &p, &r[i]), 0);
        CHECK(i == 2 || wait_tokens(r[i], 3));
    }
    for (int spins = 0; spins < 50000 && stats(s).preemptions == 0; spins++)
        usleep(100);
    CHECK_EQ(stats(s).preemptions, 1);
    int np = 0, had = 0;
    double ttft = 0;
    engine_req_stats(r[1], &np, &had, &ttft);
    CHECK(had >= 3);
    engine_req_cancel(r[1]);
    int32_t ids[256];
    int n = 0;
    CHECK_EQ(drain(r[1], ids, &n, NULL), ENGINE_FINISH_CANCELLED);
    CHECK_EQ(n, had);
    struct engine_sched_stats st = stats(s);
    CHECK_EQ(st.waiting, 0);
    CHECK_EQ(st.running, 2);            /* r[0] and r[2] were not disturbed */
    for (int i = 0; i < 3; i++)
        engine_req_release(r[i]);
    for (int spins = 0; spins < 50000 && (st.running > 0 || st.kv_blocks_used > 0); spins++) {
        usleep(100);
        st = stats(s);
    }
    CHECK_EQ(st.running, 0);
    CHECK_EQ(st.kv_blocks_used, 0);
    engine_sched_free(s);
    engine_model_free(m);
}

/* The counters and the pool's figures for metrics, exact for one request on its own. */
static void
test_stats(void)
{
    struct engine_model *m = open_model();
    struct engine_sched *s = m ? open_sched(m, 2, 8) : NULL;
    if (s == NULL)
        return;
    struct engine_sched_stats st = stats(s);
    CHECK(st.iterations == 0 && st.preemptions == 0 && st.prompt_tokens == 0);
    CHECK(st.generated_tokens == 0 && st.waiting == 0 && st.running == 0);
    CHECK_EQ(st.n_slots, 2);
    CHECK_EQ(st.kv_blocks_total, 2 * 256 / 16);
    CHECK_EQ(st.kv_block_size, 16);
    CHECK(st.kv_blocks_used == 0 && st.kv_blocks_cached == 0);
    const struct golden *g = &goldens[3];               /* 145 prompt tokens: 3 chunks */
    run_golden(s, g, NULL, 0);
    for (int spins = 0; spins < 50000 && stats(s).kv_blocks_used > 0; spins++)
        usleep(100);
    st = stats(s);
    CHECK_EQ(st.iterations, 3 + (g->n_gen - 1) + (g->n_gen < 32)); /* + the EOS step */
    CHECK_EQ(st.prompt_tokens, g->n_prompt);
    CHECK_EQ(st.generated_tokens, g->n_gen);
    CHECK_EQ(st.kv_blocks_used, 0);
    CHECK_EQ(st.kv_blocks_cached, g->n_prompt / 16);    /* its full prompt blocks */
    run_golden(s, g, NULL, 0);
    CHECK_EQ(stats(s).prompt_tokens, 2 * g->n_prompt - 144);  /* 144 from the cache */

    struct engine_req_params p = long_params(&goldens[4], 100, 0);
    struct engine_req *r = NULL;
    CHECK_EQ(engine_sched_submit(s, &p, &r), 0);
    CHECK(wait_tokens(r, 2));
    st = stats(s);
    CHECK_EQ(st.running, 1);
    CHECK(st.kv_blocks_used >= (goldens[4].n_prompt + 1) / 16);
    engine_req_release(r);
    engine_sched_free(s);
    engine_model_free(m);
}

int
main(int argc, char **argv)
{
    load_goldens();
    static const struct check_test tests[] = {
        { "concurrent_equals_golden", test_concurrent_equals_golden },
        { "embeddings", test_embeddings },
        { "cancel_frees_slot", test_cancel_frees_slot },
        { "limits", test_limits },
        { "logprobs", test_logprobs },
        { "free_with_running", test_free_with_running },
        { "adapter_requests", test_adapter_requests },
        { "prefix_cache_isolation", test_prefix_cache_isolation },
        { "prefix_cache_eviction", test_prefix_cache_eviction },
        { "prefix_cache_concurrent", test_prefix_cache_concurrent },
        { "tenant_ttft", test_tenant_ttft },
        { "preempted_equals_alone", test_preempted_equals_alone },
        { "tenant_admission_order", test_tenant_admission_order },
        { "tenant_prefix_cache", test_tenant_prefix_cache },
        { "cancel_preempted", test_cancel_preempted },
        { "stats", test_stats },
        { NULL, NULL },
    };
    return check_main(tests, argc, argv);
}
