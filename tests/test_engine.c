/*
 * test_engine.c - the model, forward pass, sampler and CLI against the
 * golden outputs of ../shared/fixtures/golden (greedy ids and first-position
 * logits computed by an independent float32 reference and llama.cpp).
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "testutil.h"
#include "engine.h"
#include "../engine/engine_int.h" /* the prefix cache, below the scheduler */

static const char *base_cases[] = { "short-genesis", "short-moses", "short-modern", "long-kjv",
                                    "long-mixed" };

/* ---- Helpers ---------------------------------------------------------- */

static cJSON *
golden(const char *config, const char *prompt_id)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/fixtures/golden/%s__%s.json", test_shared_dir(), config,
             prompt_id);
    char *text = test_read_file(path, NULL);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (j == NULL)
        fprintf(stderr, "cannot read %s\n", path);
    return j;
}

static struct engine_model *
open_model(const char *file)
{
    char path[512], err[512] = "";
    snprintf(path, sizeof(path), "%s/models/%s", test_shared_dir(), file);
    struct engine_model *m = NULL;
    if (engine_model_open(path, &m, err, sizeof(err)) < 0)
        fprintf(stderr, "open %s: %s\n", path, err);
    return m;
}

/* Evaluates a prompt in sequence seq of ctx; logits of the last row to out. */
static int
eval_prompt(struct engine_ctx *ctx, int seq, const int32_t *ids, int n, float *out)
{
    int32_t pos[512], seqs[512];
    bool want[512];
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        seqs[i] = seq;
        want[i] = i == n - 1;
    }
    struct engine_batch b = { n, ids, pos, seqs, want, NULL };
    return engine_decode(ctx, &b, out);
}

static int32_t
argmax(const float *v, int n)
{
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

/*
 * Greedy decoding of up to n tokens after the prompt; stops after EOS (kept)
 * unless ignore_eos, which bans EOS instead. Returns the count.
 */
static enum engine_kv_cache greedy_kv; /* the cache greedy() uses */

static int
greedy(struct engine_model *m, const int32_t *prompt, int n_prompt, int n, bool ignore_eos,
       int32_t *out, float *first_logits)
{
    const struct engine_hparams *hp = engine_model_hparams(m);
    struct engine_ctx *ctx = NULL;
    float *logits = malloc((size_t)hp->n_vocab * sizeof(float));
    int got = 0;
    if (engine_ctx_new_kv(m, 256, 1, 2, greedy_kv, &ctx) < 0 ||
        eval_prompt(ctx, 0, prompt, n_prompt, logits))
        goto out;
    if (first_logits != NULL)
        memcpy(first_logits, logits, (size_t)hp->n_vocab * sizeof(float));
    int32_t pos = n_prompt, seq = 0;
    while (got < n) {
        if (ignore_eos)
            logits[2] = -INFINITY;
        int32_t id = argmax(logits, hp->n_vocab);
        out[got++] = id;
        if (id == 2 && !ignore_eos)
            break;
        struct engine_batch b = { 1, &id, &pos, &seq, NULL, NULL };
        if (got < n && engine_decode(ctx, &b, logits) < 0)
            break;
        pos++;
    }
out:
    engine_ctx_free(ctx);
    free(logits);
    return got;
}

static bool
same_ids(const int32_t *a, int na, const int32_t *b, int nb)
{
    return na == nb && memcmp(a, b, (size_t)na * sizeof(*a)) == 0;
}

/* ---- Golden outputs --------------------------------------------------- */

static void
test_golden_f32_greedy(void)
{
    struct engine_model *m = open_model("kjv-tiny-f32.gguf");
    CHECK(m != NULL);
    for (size_t c = 0; m != NULL && c < 5; c++) {
        cJSON *j = golden("base", base_cases[c]);
        int32_t prompt[256], want[64], got[64];
        int np = test_json_ids(j, "prompt_ids", prompt, 256), nw = test_json_ids(j, "generated_ids", want, 64);
        int ng = greedy(m, prompt, np, 32, false, got, NULL);
        if (!same_ids(want, nw, got, ng))
            fprintf(stderr, "  case base__%s: greedy ids differ\n", base_cases[c]);
        CHECK(same_ids(want, nw, got, ng));
        nw = test_json_ids(j, "ignore_eos_ids", want, 64);
        ng = greedy(m, prompt, np, 32, true, got, NULL);
        CHECK(same_ids(want, nw, got, ng));
        cJSON_Delete(j);
    }
    engine_model_free(m);
}

static void
test_golden_f32_logits(void)
{
    struct engine_model *m = open_model("kjv-tiny-f32.gguf");
    CHECK(m != NULL);
    float *logits = malloc(2048 * sizeof(float));
    for (size_t c = 0; m != NULL && c < 5; c++) {
        cJSON *j = golden("base", base_cases[c]);
        int32_t prompt[256], got[4];
        int np = test_json_ids(j, "prompt_ids", prompt, 256);
        greedy(m, prompt, np, 1, false, got, logits);
        const cJSON *e;
        double max_err = 0.0;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "top5_first")) {
            int id = cJSON_GetObjectItemCaseSensitive(e, "id")->valueint;
            double want = cJSON_GetObjectItemCaseSensitive(e, "logit")->valuedouble;
            double err = fabs(logits[id] - want);
            max_err = err > max_err ? err : max_err;
            CHECK(err <= 1e-3 || err <= 1e-3 * fabs(want));
        }
        double lse = 0.0, mx = logits[argmax(logits, 2048)];
        for (int i = 0; i < 2048; i++)
            lse += exp(logits[i] - mx);
        lse = mx + log(lse);
        double want_lse = cJSON_GetObjectItemCaseSensitive(j, "logsumexp_first")->valuedouble;
        CHECK(fabs(lse - want_lse) < 1e-3);
        printf("  base__%s: max |logit error| %.2e\n", base_cases[c], max_err);
        cJSON_Delete(j);
    }
    free(logits);
    engine_model_free(m);
}

/*
 * Of the 5 base prompts, how many give the golden greedy tokens, with the KV
 * cache in kv (f32: as the f32 reference that made the goldens; f16: AUTO's
 * choice for all but f32 models).
 */
static int
count_golden_matches(struct engine_model *m, enum engine_kv_cache kv)
{
    greedy_kv = kv;
    int matches = 0;
    for (size_t c = 0; m != NULL && c < 5; c++) {
        cJSON *j = golden("base", base_cases[c]);
        int32_t prompt[256], want[64], got[64];
        int np = test_json_ids(j, "prompt_ids", prompt, 256), nw = test_json_ids(j, "generated_ids", want, 64);
        int ng = greedy(m, prompt, np, 32, false, got, NULL);
        matches += same_ids(want, nw, got, ng);
        cJSON_Delete(j);
    }
    greedy_kv = ENGINE_KV_CACHE_AUTO;
    return matches;
}

static void
test_golden_q8_0(void)
{
    struct engine_model *m = open_model("kjv-tiny-q8_0.gguf");
    CHECK(m != NULL);
    int matches = count_golden_matches(m, ENGINE_KV_CACHE_F32);
    printf("  q8_0: %d of 5 base prompts give the golden greedy tokens\n", matches);
    CHECK(matches >= 4);
    engine_model_free(m);
}

/*
 * The f16 cache (the default for all but f32 models) rounds every K and V to
 * 11 bits: the first token's logits stay within 0.2 of the f32 cache's (0.1 seen), and
 * most golden sequences survive (the goldens' top-1 margins go down to 3e-4).
 */
static void
test_golden_q8_0_f16_cache(void)
{
    struct engine_model *m = open_model("kjv-tiny-q8_0.gguf");
    CHECK(m != NULL);
    if (m == NULL)
        return;
    cJSON *j = golden("base", "long-kjv");
    int32_t prompt[256], got[4];
    int np = test_json_ids(j, "prompt_ids", prompt, 256);
    float *l32 = malloc(2048 * 4), *l16 = malloc(2048 * 4);
    greedy_kv = ENGINE_KV_CACHE_F32;
    greedy(m, prompt, np, 1, false, got, l32);
    greedy_kv = ENGINE_KV_CACHE_AUTO; /* f16 for this Q8_0 model */
    greedy(m, prompt, np, 1, false, got, l16);
    double d = 0;
    for (int i = 0; i < 2048; i++)
        d = fmax(d, fabs(l32[i] - l16[i]));
    printf("  f16 cache: first-token logits within %.4f of the f32 cache's\n", d);
    CHECK(d > 0 && d < 0.2);
    int matches = count_golden_matches(m, ENGINE_KV_CACHE_F16);
    printf("  q8_0, f16 cache: %d of 5 base prompts give the golden greedy tokens\n", matches);
    CHECK(matches >= 3);
    free(l32), free(l16);
    cJSON_Delete(j);
    engine_model_free(m);
}

/* ---- Batching --------------------------------------------------------- */

/* Two prompts in one batch (and split prefill) give the same logits as alone. */
static void
test_batch_matches_single(void)
{
    struct engine_model *m = open_model("kjv-tiny-f32.gguf");
    CHECK(m != NULL);
    if (m == NULL)
        return;
    cJSON *ja = golden("base", "short-moses"), *jb = golden("base", "long-kjv");
    int32_t pa[256], pb[256];
    int na = test_json_ids(ja, "prompt_ids", pa, 256), nb = test_json_ids(jb, "prompt_ids", pb, 256);
    float *la = malloc(2048 * 4), *lb = malloc(2048 * 4), *both = malloc(2 * 2048 * 4);
    struct engine_ctx *ctx = NULL;
    CHECK(engine_ctx_new(m, 256, 2, 2, &ctx) == 0);
    CHECK(eval_prompt(ctx, 0, pa, na, la) == 0);
    engine_seq_truncate(ctx, 0, 0);
    CHECK(eval_prompt(ctx, 1, pb, nb, lb) == 0);
    engine_seq_truncate(ctx, 1, 0);

    /* One batch: all of a, then b's first 100 tokens; then the rest of b. */
    int32_t toks[512], pos[512], seq[512];
    bool want[512];
    int n = 0;
    for (int i = 0; i < na; i++, n++)
        toks[n] = pa[i], pos[n] = i, seq[n] = 0, want[n] = i == na - 1;
    for (int i = 0; i < 100; i++, n++)
        toks[n] = pb[i], pos[n] = i, seq[n] = 1, want[n] = false;
    struct engine_batch b1 = { n, toks, pos, seq, want, NULL };
    CHECK(engine_decode(ctx, &b1, both) == 0);
    n = 0;
    for (int i = 100; i < nb; i++, n++)
        toks[n] = pb[i], pos[n] = i, seq[n] = 1, want[n] = i == nb - 1;
    struct engine_batch b2 = { n, toks, pos, seq, want, NULL };
    CHECK(engine_decode(ctx, &b2, both + 2048) == 0);
    double da = 0, db = 0;
    for (int i = 0; i < 2048; i++) {
        da = fmax(da, fabs(both[i] - la[i]));
        db = fmax(db, fabs(both[2048 + i] - lb[i]));
    }
    CHECK(da < 1e-4);
    CHECK(db < 1e-4);
    /* A position that does not continue the cache is refused. */
    int32_t tok = 5, p = 7, s = 0;
    struct engine_batch bad = { 1, &tok, &p, &s, NULL, NULL };
    CHECK_EQ(engine_decode(ctx, &bad, la), -EINVAL);
    tok = 99999, p = na;
    CHECK_EQ(engine_decode(ctx, &bad, la), -EINVAL);
    engine_ctx_free(ctx);
    free(la), free(lb), free(both);
    cJSON_Delete(ja), cJSON_Delete(jb);
    engine_model_free(m);
}

/*
 * The KV cache in blocks: blocks given back by a truncated sequence are
 * reused by another, a truncation in the middle of a block keeps the rest,
 * and every answer equals the one computed in a fresh context, to the bit
 * (the Q8_0 model's integer kernels do not depend on the batch).
 */
static void
eval_range(struct engine_ctx *ctx, int seq, const int32_t *ids, int p0, int p1, float *out)
{
    int32_t pos[512], seqs[512];
    bool want[512];
    for (int i = p0; i < p1; i++) {
        pos[i - p0] = i;
        seqs[i - p0] = seq;
        want[i - p0] = i == p1 - 1;
    }
    struct engine_batch b = { p1 - p0, ids + p0, pos, seqs, want, NULL };
    CHECK_EQ(engine_decode(ctx, &b, out), 0);
}

static void
test_kv_blocks_reused(void)
{
    struct engine_model *m = open_model("kjv-tiny-q8_0.gguf");
    CHECK(m != NULL);
    if (m == NULL)
        return;
    cJSON *ja = golden("base", "long-kjv"), *jb = golden("base", "short-moses");
    int32_t pa[256], pb[256];
    int na = test_json_ids(ja, "prompt_ids", pa, 256), nb = test_json_ids(jb, "prompt_ids", pb, 256);
    float *want_a = malloc(2048 * 4), *want_b = malloc(2048 * 4), *got = malloc(2048 * 4);
    struct engine_ctx *fresh = NULL, *ctx = NULL;
    CHECK(engine_ctx_new(m, 256, 1, 2, &fresh) == 0);
    eval_range(fresh, 0, pa, 0, na, want_a);
    engine_seq_truncate(fresh, 0, 0);
    eval_range(fresh, 0, pb, 0, nb, want_b);

    CHECK(engine_ctx_new(m, 160, 3, 2, &ctx) == 0); /* 10 blocks per sequence */
    eval_range(ctx, 0, pa, 0, na, got);
    CHECK(memcmp(got, want_a, 2048 * 4) == 0);
    eval_range(ctx, 1, pb, 0, 4, got);
    engine_seq_truncate(ctx, 0, 3);                   /* gives back 9 blocks */
    eval_range(ctx, 2, pa, 0, na, got);               /* takes them, stale contents and all */
    CHECK(memcmp(got, want_a, 2048 * 4) == 0);
    eval_range(ctx, 1, pb, 4, nb, got);
    CHECK(memcmp(got, want_b, 2048 * 4) == 0);
    engine_seq_truncate(ctx, 2, 100);                 /* mid-block: positions 96..99 stay */
    eval_range(ctx, 2, pa, 100, na, got);
    CHECK(memcmp(got, want_a, 2048 * 4) == 0);
    engine_seq_truncate(ctx, 0, 0);
    eval_range(ctx, 0, pa, 0, na, got);
    CHECK(memcmp(got, want_a, 2048 * 4) == 0);
    /* Beyond the context: refused, nothing taken. */
    int32_t fill[160];
    for (int i = 0; i < 160; i++)
        fill[i] = pa[i % na];
    eval_range(ctx, 0, fill, na, 160, got);           /* all 10 blocks */
    int32_t tok = 5, p = 160, s = 0;
    struct engine_batch last = { 1, &tok, &p, &s, NULL, NULL };
    CHECK_EQ(engine_decode(ctx, &last, got), -EINVAL);
    engine_ctx_free(ctx);
    engine_ctx_free(fresh);
    free(want_a), free(want_b), free(got);
    cJSON_Delete(ja), cJSON_Delete(jb);
    engine_model_free(m);
}

/*
 * Prefix cache under the scheduler: a sequence attached to another's
 * published blocks gives that one's logits bit for bit; truncated into a
 * shared block, it writes to its own copy, and the other sequence's cache is
 * untouched.
 */
static void
test_kv_prefix_shared_blocks(void)
{
    struct engine_model *m = open_model("kjv-tiny-q8_0.gguf");
    CHECK(m != NULL);
    if (m == NULL)
        return;
    cJSON *ja = golden("base", "long-kjv");
    int32_t pa[256];
    int na = test_json_ids(ja, "prompt_ids", pa, 256);
    float *want = malloc(2048 * 4), *got = malloc(2048 * 4);
    struct engine_ctx *ctx = NULL;
    CHECK(engine_ctx_new(m, 160, 2, 2, &ctx) == 0);
    struct engine_kv *kv = engine__ctx_kv(ctx);
    eval_range(ctx, 0, pa, 0, na, want);
    engine__kv_publish(kv, 0, 7, pa, na);
    CHECK_EQ(engine__kv_attach(kv, 1, 8, pa, na), 0);     /* other adapters: nothing */
    CHECK_EQ(engine__kv_attach(kv, 1, 7, pa, na), 144);   /* 9 blocks shared */
    eval_range(ctx, 1, pa, 144, na, got);
    CHECK(memcmp(got, want, 2048 * 4) == 0);
    engine_seq_truncate(ctx, 1, 100);                     /* into shared block 6: a copy */
    eval_range(ctx, 1, pa, 100, na, got);
    CHECK(memcmp(got, want, 2048 * 4) == 0);
    engine_seq_truncate(ctx, 0, 144);
    eval_range(ctx, 0, pa, 144, na, got);                 /* sequence 0 untouched */
    CHECK(memcmp(got, want, 2048 * 4) == 0);
    engine_ctx_free(ctx);
    free(want), free(got);
    cJSON_Delete(ja);
    engine_model_free(m);
}

/* ---- Sampler ---------------------------------------------------------- */

static void
fill_logits(float *l, int n)
{
    for (int i = 0; i < n; i++)
        l[i] = (float)((i * 7919) % 101) / 10.0f;
}

static int32_t
sample_once(struct engine_sampling *sp, int n)
{
    struct engine_sampler *s = NULL;
    float l[1000];
    fill_logits(l, n);
    CHECK(engine_sampler_new(sp, n, &s) == 0);
    int32_t id = s ? engine_sampler_sample(s, l) : -1;
    engine_sampler_free(s);
    return id;
}

static void
test_sampler(void)
{
    float l[1000];
    fill_logits(l, 1000);
    int32_t best = argmax(l, 1000);
    struct engine_sampling sp = ENGINE_SAMPLING_INIT;
    sp.temperature = 0.0f;
    CHECK_EQ(sample_once(&sp, 1000), best);
    sp.temperature = 1.0f, sp.top_k = 1;
    CHECK_EQ(sample_once(&sp, 1000), best);

    /* Same seed, same sequence; another seed, another sequence. */
    sp.top_k = 0, sp.top_p = 1.0f, sp.min_p = 0.0f, sp.seed = 42;
    int32_t a[20], b[20], c[20];
    for (int round = 0; round < 3; round++) {
        struct engine_sampler *s = NULL;
        sp.seed = round == 2 ? 43 : 42;
        CHECK(engine_sampler_new(&sp, 1000, &s) == 0);
        for (int i = 0; i < 20; i++) {
            fill_logits(l, 1000);
            (round == 0 ? a : round == 1 ? b : c)[i] = engine_sampler_sample(s, l);
        }
        engine_sampler_free(s);
    }
    CHECK(memcmp(a, b, sizeof(a)) == 0);
    CHECK(memcmp(a, c, sizeof(a)) != 0);

    /* A bias of -inf bans the best token. */
    struct engine_logit_bias ban = { best, -INFINITY };
    sp.temperature = 0.0f, sp.bias = &ban, sp.n_bias = 1;
    CHECK(sample_once(&sp, 1000) != best);
    ban.token = 5000;
    struct engine_sampler *s = NULL;
    CHECK_EQ(engine_sampler_new(&sp, 1000, &s), -EINVAL);
    CHECK(s == NULL);
}

static void
test_sampler_penalties(void)
{
    struct engine_sampling sp = ENGINE_SAMPLING_INIT;
    sp.temperature = 0.0f, sp.presence_penalty = 100.0f;
    float l[1000];
    fill_logits(l, 1000);
    int32_t best = argmax(l, 1000);
    struct engine_sampler *s = NULL;
    CHECK(engine_sampler_new(&sp, 1000, &s) == 0);
    engine_sampler_accept(s, best);
    CHECK(engine_sampler_sample(s, l) != best);
    engine_sampler_free(s);

    /* top-p 0.5 over 4 tokens with p = .4 .3 .2 .1 never draws the last two. */
    float four[4] = { logf(0.4f), logf(0.3f), logf(0.2f), logf(0.1f) };
    sp = (struct engine_sampling)ENGINE_SAMPLING_INIT;
    sp.temperature = 1.0f, sp.top_k = 0, sp.min_p = 0.0f, sp.top_p = 0.5f;
    CHECK(engine_sampler_new(&sp, 4, &s) == 0);
    int seen[4] = { 0 };
    for (int i = 0; i < 2000; i++) {
        float x[4];
        memcpy(x, four, sizeof(x));
        seen[engine_sampler_sample(s, x)]++;
    }
    CHECK(seen[0] > 0 && seen[1] > 0 && seen[2] == 0 && seen[3] == 0);
    /* p(0) / p(1) renormalised = 4/3: with 2000 draws well within 20%. */
    CHECK(fabs((double)seen[0] / seen[1] - 4.0 / 3.0) < 0.27);
    engine_sampler_free(s);
}

/* ---- CLI -------------------------------------------------------------- */

/* Runs the binary with args; stdout to out (malloc'd). Returns the exit status. */
static int
run_bin(const char *const *args, char **out, char **errout)
{
    const char *bin = getenv("LORASERVE_BIN");
    if (bin == NULL)
        bin = "build/loraserve";
    char tmp_out[] = "/tmp/lstest-out-XXXXXX", tmp_err[] = "/tmp/lstest-err-XXXXXX";
    int fo = mkstemp(tmp_out), fe = mkstemp(tmp_err);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(fo, 1);
        dup2(fe, 2);
        const char *argv[32] = { bin };
        for (int i = 0; args[i] != NULL && i < 30; i++)
            argv[i + 1] = args[i];
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    close(fo), close(fe);
    *out = test_read_file(tmp_out, NULL);
    if (errout != NULL)
        *errout = test_read_file(tmp_err, NULL);
    unlink(tmp_out), unlink(tmp_err);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void
test_cli_generate_golden_text(void)
{
    char model[512];
    snprintf(model, sizeof(model), "%s/models/kjv-tiny-f32.gguf", test_shared_dir());
    for (size_t c = 0; c < 5; c++) {
        cJSON *j = golden("base", base_cases[c]);
        const char *prompt = cJSON_GetObjectItemCaseSensitive(j, "prompt")->valuestring;
        const char *want = cJSON_GetObjectItemCaseSensitive(j, "generated_text")->valuestring;
        const char *args[] = { "generate", "--model", model, "--prompt", prompt, "-n", "32",
                               "--temp", "0", "--threads", "2", NULL };
        char *out = NULL, *err = NULL;
        CHECK_EQ(run_bin(args, &out, &err), 0);
        CHECK_STR(out, want);
        CHECK(err != NULL && strstr(err, "tok/s, decode ") != NULL);
        free(out), free(err);
        cJSON_Delete(j);
    }
}

static void
test_cli_quantize_roundtrip(void)
{
    char model[512], dir[] = "/tmp/lstest-q-XXXXXX";
    snprintf(model, sizeof(model), "%s/models/kjv-tiny-f32.gguf", test_shared_dir());
    CHECK(mkdtemp(dir) != NULL);
    const char *types[] = { "q8_0", "f16", "q4_0", "q4_k_m" };
    const int min_match[] = { 4, 4, 0, 0 };
    for (int t = 0; t < 4; t++) {
        char outp[600];
        snprintf(outp, sizeof(outp), "%s/kjv-%s.gguf", dir, types[t]);
        const char *args[] = { "quantize", model, outp, types[t], NULL };
        char *out = NULL;
        CHECK_EQ(run_bin(args, &out, NULL), 0);
        free(out);
        char err[512] = "";
        struct engine_model *m = NULL;
        CHECK(engine_model_open(outp, &m, err, sizeof(err)) == 0);
        int matches = count_golden_matches(m, ENGINE_KV_CACHE_F32);
        printf("  %s: %d of 5 golden greedy sequences\n", types[t], matches);
        CHECK(matches >= min_match[t]);
        const char *iargs[] = { "info", outp, NULL };
        CHECK_EQ(run_bin(iargs, &out, NULL), 0);
        CHECK(out != NULL && strstr(out, types[t][0] == 'f' ? "f16" : "q") != NULL);
        free(out);
        engine_model_free(m);
        unlink(outp);
    }
    const char *bad[] = { "quantize", model, "/tmp/x.gguf", "q3_k", NULL };
    char *out = NULL, *err = NULL;
    CHECK_EQ(run_bin(bad, &out, &err), 1);
    CHECK(err != NULL && strstr(err, "unknown type 'q3_k'") != NULL);
    free(out), free(err);
    rmdir(dir);
}

static void
test_cli_mkmodel(void)
{
    char vocab[512], path[] = "/tmp/lstest-mk-XXXXXX";
    snprintf(vocab, sizeof(vocab), "%s/models/kjv-tiny-f32.gguf", test_shared_dir());
    int fd = mkstemp(path);
    close(fd);
    const char *args[] = { "mkmodel", path, "--vocab", vocab, "--n-embd", "64", "--n-layer",
                           "2", "--n-head", "4", "--n-head-kv", "2", "--n-ff", "128", NULL };
    char *out = NULL;
    CHECK_EQ(run_bin(args, &out, NULL), 0);
    free(out);
    char err[512] = "";
    struct engine_model *m = NULL;
    CHECK(engine_model_open(path, &m, err, sizeof(err)) == 0);
    if (m != NULL) {
        const struct engine_hparams *hp = engine_model_hparams(m);
        CHECK_EQ(hp->n_embd, 64);
        CHECK_EQ(hp->n_layer, 2);
        CHECK_EQ(hp->n_head_kv, 2);
        CHECK_EQ(hp->n_vocab, 2048);
        CHECK_EQ(engine_model_n_params(m), 2 * 64 * 2048 + 64 + 2 * (2 * 64 + 64 * 64 * 2 +
                 2 * 64 * 32 + 3 * 64 * 128));
    }
    engine_model_free(m);
    unlink(path);
}

static void
test_cli_tokenize(void)
{
    char vocab[512];
    snprintf(vocab, sizeof(vocab), "%s/fixtures/tokenizer/ggml-vocab-llama-spm.gguf",
             test_shared_dir());
    const char *args[] = { "info", vocab, NULL };
    char *out = NULL, *err = NULL;
    CHECK_EQ(run_bin(args, &out, &err), 0);
    CHECK(out != NULL && strstr(out, "32000 tokens") != NULL);
    free(out), free(err);
}

int
main(int argc, char **argv)
{
    static const struct check_test tests[] = {
        { "golden_f32_greedy", test_golden_f32_greedy },
        { "golden_f32_logits", test_golden_f32_logits },
        { "golden_q8_0", test_golden_q8_0 },
        { "golden_q8_0_f16_cache", test_golden_q8_0_f16_cache },
        { "batch_matches_single", test_batch_matches_single },
        { "kv_blocks_reused", test_kv_blocks_reused },
        { "kv_prefix_shared_blocks", test_kv_prefix_shared_blocks },
        { "sampler", test_sampler },
        { "sampler_penalties", test_sampler_penalties },
        { "cli_generate_golden_text", test_cli_generate_golden_text },
        { "cli_quantize_roundtrip", test_cli_quantize_roundtrip },
        { "cli_mkmodel", test_cli_mkmodel },
        { "cli_tokenize", test_cli_tokenize },
        { NULL, NULL },
    };
    return check_main(tests, argc, argv);
}
