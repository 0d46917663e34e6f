/*
 * test_sched.c - the continuous-batching scheduler: batching is invisible in
 * results, cancellation frees slots, limits are enforced, logprobs are right.
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
                                   false, 0, false, on_notify, NULL, NULL };
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

/* Runs one greedy request alone; its ids must equal the golden's. */
static void
run_golden(struct engine_sched *s, const struct golden *g, const struct engine_lora_set *set)
{
    struct engine_req_params p = greedy_params(g, 32);
    p.lora = set;
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
        run_golden(s, &g, steps[i].set);
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
    run_golden(s, a, NULL);
    run_golden(s, b, NULL);
    uint64_t before = engine_sched_prefix_hits(s);
    run_golden(s, a, NULL);
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
        { NULL, NULL },
    };
    return check_main(tests, argc, argv);
}
