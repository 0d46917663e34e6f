/*
 * test_adapters.c - LoRA adapters: loading both formats, the golden outputs
 * of every adapter configuration, and batches that mix adapters.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters.h"
#include "check.h"
#include "testutil.h"

static const char *prompts[] = { "short-genesis", "short-moses", "short-modern", "long-kjv",
                                 "long-mixed" };

struct config {
    const char *name;
    const char *files[2];   /* adapter names under models/lora */
    float scales[2];
};

static const struct config configs[] = {
    { "base", { NULL, NULL }, { 0, 0 } },
    { "lora-fortunes", { "fortunes", NULL }, { 1.0f, 0 } },
    { "lora-jargon", { "jargon", NULL }, { 1.0f, 0 } },
    { "lora-devil", { "devil", NULL }, { 1.0f, 0 } },
    { "lora-fortunes-scale0.5", { "fortunes", NULL }, { 0.5f, 0 } },
    { "lora-fortunes1.0+jargon0.5", { "fortunes", "jargon" }, { 1.0f, 0.5f } },
};
#define N_CONFIGS 6

static struct engine_model *model;

struct golden {
    int32_t prompt[256];
    int n_prompt;
    int32_t gen[64];
    int n_gen;
    int32_t top_id[5];
    double top_logit[5];
};

static int
json_ids(const cJSON *j, const char *field, int32_t *ids, int max)
{
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, field)) {
        if (n < max)
            ids[n++] = (int32_t)e->valueint;
    }
    return n;
}

static bool
load_golden(const char *config, const char *prompt, struct golden *g)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/fixtures/golden/%s__%s.json", test_shared_dir(), config,
             prompt);
    char *text = test_read_file(path, NULL);
    cJSON *j = cJSON_Parse(text ? text : "");
    free(text);
    if (j == NULL)
        return false;
    g->n_prompt = json_ids(j, "prompt_ids", g->prompt, 256);
    g->n_gen = json_ids(j, "generated_ids", g->gen, 64);
    int k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, "top5_first")) {
        g->top_id[k] = cJSON_GetObjectItemCaseSensitive(e, "id")->valueint;
        g->top_logit[k++] = cJSON_GetObjectItemCaseSensitive(e, "logit")->valuedouble;
    }
    cJSON_Delete(j);
    return true;
}

static struct engine_lora *
load_adapter(const char *name, bool peft)
{
    char path[512], err[512] = "";
    if (peft)
        snprintf(path, sizeof(path), "%s/models/lora/peft-%s", test_shared_dir(), name);
    else
        snprintf(path, sizeof(path), "%s/models/lora/kjv-tiny-lora-%s.gguf", test_shared_dir(),
                 name);
    struct engine_lora *l = NULL;
    struct adapters_info info;
    if (adapters_load_path(model, path, 64, &l, &info, err, sizeof(err)) < 0)
        fprintf(stderr, "  %s\n", err);
    return l;
}

/* The adapter set of a configuration (refs owned by the set; free with set_release). */
static void
make_set(const struct config *c, bool peft, struct engine_lora_set *set)
{
    memset(set, 0, sizeof(*set));
    for (int i = 0; i < 2 && c->files[i] != NULL; i++) {
        set->lora[set->n] = load_adapter(c->files[i], peft);
        set->scale[set->n++] = c->scales[i];
    }
}

static void
set_release(struct engine_lora_set *set)
{
    for (int i = 0; i < set->n; i++)
        engine_lora_unref(set->lora[i]);
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
 * Greedy decoding of several sequences at once, one per (set, golden) pair,
 * all in the same batches: prompts together, then one decode row each.
 */
static void
run_batch(const struct engine_lora_set **sets, const struct golden *g, int n_seq,
          int32_t out[][64], int *n_out, float *first)
{
    struct engine_ctx *ctx = NULL;
    CHECK_EQ(engine_ctx_new(model, 256, n_seq, 2, &ctx), 0);
    int rows = 0;
    for (int s = 0; s < n_seq; s++)
        rows += g[s].n_prompt;
    int32_t *tok = calloc((size_t)rows, 4), *pos = calloc((size_t)rows, 4);
    int32_t *seq = calloc((size_t)rows, 4);
    bool *want = calloc((size_t)rows, 1);
    const struct engine_lora_set **rl = calloc((size_t)rows, sizeof(*rl));
    float *logits = malloc((size_t)n_seq * 2048 * sizeof(float));
    int n = 0;
    for (int s = 0; s < n_seq; s++)
        for (int i = 0; i < g[s].n_prompt; i++, n++)
            tok[n] = g[s].prompt[i], pos[n] = i, seq[n] = s, rl[n] = sets[s],
            want[n] = i == g[s].n_prompt - 1;
    struct engine_batch b = { n, tok, pos, seq, want, rl };
    CHECK_EQ(engine_decode(ctx, &b, logits), 0);
    if (first != NULL)
        memcpy(first, logits, (size_t)n_seq * 2048 * sizeof(float));
    bool done[64] = { false };
    for (int step = 0; step < 32; step++) {
        n = 0;
        for (int s = 0; s < n_seq; s++) {
            if (done[s])
                continue;
            int32_t id = argmax(logits + (size_t)s * 2048, 2048);
            out[s][n_out[s]++] = id;
            done[s] = id == 2 || n_out[s] == 32;
            if (!done[s])
                tok[n] = id, pos[n] = g[s].n_prompt + n_out[s] - 1, seq[n] = s,
                rl[n] = sets[s], want[n++] = true;
        }
        if (n == 0)
            break;
        struct engine_batch d = { n, tok, pos, seq, want, rl };
        float *tmp = malloc((size_t)n * 2048 * sizeof(float));
        CHECK_EQ(engine_decode(ctx, &d, tmp), 0);
        for (int s = 0, k = 0; s < n_seq; s++)
            if (!done[s])
                memcpy(logits + (size_t)s * 2048, tmp + (size_t)k++ * 2048, 2048 * 4);
        free(tmp);
    }
    free(tok), free(pos), free(seq), free(want), free(rl), free(logits);
    engine_ctx_free(ctx);
}

static void
check_config(bool peft, int c)
{
    struct engine_lora_set set;
    make_set(&configs[c], peft, &set);
    for (int i = 0; i < set.n; i++)
        CHECK(set.lora[i] != NULL);
    struct golden g[5];
    const struct engine_lora_set *sets[5];
    for (int p = 0; p < 5; p++) {
        CHECK(load_golden(configs[c].name, prompts[p], &g[p]));
        sets[p] = set.n > 0 ? &set : NULL;
    }
    int32_t out[5][64];
    int n_out[5] = { 0 };
    float *first = malloc(5 * 2048 * sizeof(float));
    run_batch(sets, g, 5, out, n_out, first);
    for (int p = 0; p < 5; p++) {
        bool same = n_out[p] == g[p].n_gen &&
                    memcmp(out[p], g[p].gen, (size_t)n_out[p] * sizeof(int32_t)) == 0;
        if (!same)
            fprintf(stderr, "  %s %s__%s: greedy ids differ\n", peft ? "peft" : "gguf",
                    configs[c].name, prompts[p]);
        CHECK(same);
        for (int k = 0; k < 5; k++) {
            double got = first[(size_t)p * 2048 + g[p].top_id[k]];
            CHECK(fabs(got - g[p].top_logit[k]) <= 1e-3);
        }
    }
    free(first);
    set_release(&set);
}

static void
test_golden_gguf(void)
{
    for (int c = 0; c < N_CONFIGS; c++)
        check_config(false, c);
}

static void
test_golden_peft(void)
{
    for (int c = 1; c < N_CONFIGS; c++)
        check_config(true, c);
}

/*
 * The PEFT and GGUF forms of each adapter, side by side in one batch on every
 * prompt: the same greedy tokens, and first logits that agree closely.
 */
static void
test_peft_equals_gguf(void)
{
    static const char *names[] = { "fortunes", "jargon", "devil" };
    struct engine_lora_set sets[6];
    const struct engine_lora_set *ps[30];
    struct golden g[30];
    for (int i = 0; i < 6; i++) {
        memset(&sets[i], 0, sizeof(sets[i]));
        sets[i].n = 1;
        sets[i].lora[0] = load_adapter(names[i / 2], i % 2 == 1);
        sets[i].scale[0] = 1.0f;
        CHECK(sets[i].lora[0] != NULL);
    }
    for (int i = 0; i < 30; i++) {
        ps[i] = &sets[i % 6];
        CHECK(load_golden("base", prompts[i / 6], &g[i]));
    }
    int32_t out[30][64];
    int n_out[30] = { 0 };
    float *first = malloc(30 * 2048 * sizeof(float));
    run_batch(ps, g, 30, out, n_out, first);
    for (int i = 0; i < 30; i += 2) {
        CHECK(n_out[i] == n_out[i + 1] &&
              memcmp(out[i], out[i + 1], (size_t)n_out[i] * sizeof(int32_t)) == 0);
        double worst = 0.0;
        const float *x = first + (size_t)i * 2048, *y = x + 2048;
        for (int v = 0; v < 2048; v++)
            worst = fmax(worst, fabs(x[v] - y[v]));
        CHECK(worst <= 1e-3);
    }
    free(first);
    for (int i = 0; i < 6; i++)
        set_release(&sets[i]);
}

/* All six configurations in one batch, GGUF and PEFT forms mixed: each gives its golden tokens. */
static void
test_mixed_batch(void)
{
    struct engine_lora_set sets[N_CONFIGS];
    const struct engine_lora_set *ps[N_CONFIGS * 2];
    struct golden g[N_CONFIGS * 2];
    for (int c = 0; c < N_CONFIGS; c++)
        make_set(&configs[c], c % 2 == 1, &sets[c]);
    for (int i = 0; i < N_CONFIGS * 2; i++) {
        int c = i % N_CONFIGS;
        ps[i] = sets[c].n > 0 ? &sets[c] : NULL;
        CHECK(load_golden(configs[c].name, prompts[(i + i / N_CONFIGS) % 5], &g[i]));
    }
    int32_t out[N_CONFIGS * 2][64];
    int n_out[N_CONFIGS * 2] = { 0 };
    run_batch(ps, g, N_CONFIGS * 2, out, n_out, NULL);
    for (int i = 0; i < N_CONFIGS * 2; i++)
        CHECK(n_out[i] == g[i].n_gen &&
              memcmp(out[i], g[i].gen, (size_t)n_out[i] * sizeof(int32_t)) == 0);
    for (int c = 0; c < N_CONFIGS; c++)
        set_release(&sets[c]);
}

int
main(int argc, char **argv)
{
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/models/kjv-tiny-f32.gguf", test_shared_dir());
    if (engine_model_open(path, &model, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n0 passed, 1 failed\n", err);
        return 1;
    }
    static const struct check_test tests[] = {
        { "golden_gguf", test_golden_gguf },
        { "golden_peft", test_golden_peft },
        { "peft_equals_gguf", test_peft_equals_gguf },
        { "mixed_batch", test_mixed_batch },
        { NULL, NULL },
    };
    int rc = check_main(tests, argc, argv);
    engine_model_free(model);
    return rc;
}
