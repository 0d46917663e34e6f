/*
 * test_adapters.c - LoRA adapters: loading both formats, the golden outputs
 * of every adapter configuration, batches that mix adapters, and a table of
 * crafted bad adapters that must each be refused with their own error.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
    g->n_prompt = test_json_ids(j, "prompt_ids", g->prompt, 256);
    g->n_gen = test_json_ids(j, "generated_ids", g->gen, 64);
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


/* ---- Crafted bad adapters --------------------------------------------- */

static char tmpdir[64];

static void
tmp_open(void)
{
    CHECK_EQ(test_tmpdir_make(tmpdir, "test"), 0);
}

static void
tmp_close(void)
{
    test_tmpdir_remove(tmpdir);
}

static void
write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    if (f != NULL) {
        CHECK_EQ(fwrite(buf, 1, len, f), len);
        fclose(f);
    }
}

#define QA "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
#define QB "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"
#define T(name, dtype, shape, offsets) \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":" offsets "}"
/* The good adapter: rank 1 on layer 0's q_proj, A (1, 256) and B (256, 1). */
#define GOOD_HEADER "{" T(QA, "F32", "[1,256]", "[0,1024]") "," \
                        T(QB, "F32", "[256,1]", "[1024,2048]") "}"
#define GOOD_CONFIG "{\"peft_type\":\"LORA\",\"r\":1,\"lora_alpha\":2,\"bias\":\"none\"," \
                    "\"target_modules\":[\"q_proj\"],\"task_type\":\"CAUSAL_LM\"}"

/* A safetensors file: u64 header length (hlen, or the header's), header, data. */
static void
write_st(const char *path, const char *header, uint64_t hlen, size_t data_len, int nan_at,
         size_t *len)
{
    size_t hl = strlen(header), n = 8 + hl + data_len;
    unsigned char *buf = malloc(n + 1);
    uint64_t h = hlen ? hlen : hl;
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)(h >> (8 * i));
    memcpy(buf + 8, header, hl);
    for (size_t i = 0; i + 4 <= data_len; i += 4) {
        float v = nan_at >= 0 && i / 4 == (size_t)nan_at ? NAN : 0.01f * (float)(i % 7);
        memcpy(buf + 8 + hl + i, &v, 4);
    }
    write_file(path, buf, n);
    free(buf);
    if (len != NULL)
        *len = n;
}

/* A PEFT directory DIR/name with the given config and safetensors. */
static void
write_peft(const char *dir, const char *config, const char *header, uint64_t hlen,
           size_t data_len, int nan_at)
{
    char path[512];
    mkdir(dir, 0700);
    snprintf(path, sizeof(path), "%s/adapter_config.json", dir);
    if (config != NULL)
        write_file(path, config, strlen(config));
    snprintf(path, sizeof(path), "%s/adapter_model.safetensors", dir);
    if (header != NULL)
        write_st(path, header, hlen, data_len, nan_at, NULL);
}

/* Loads path expecting rc and an error containing msg; no adapter comes back. */
static void
expect_refused(const char *what, const char *path, int max_rank, int rc, const char *msg)
{
    char err[512] = "";
    struct engine_lora *l = (struct engine_lora *)1;
    struct adapters_info info;
    int got = adapters_load_path(model, path, max_rank, &l, &info, err, sizeof(err));
    bool ok = got == rc && l == NULL && strstr(err, msg) != NULL && strchr(err, '\n') == NULL;
    if (!ok || getenv("SHOW_ERRORS"))
        fprintf(stderr, "  %s: got %d \"%s\", want %d \"%s\"\n", what, got, err, rc, msg);
    CHECK(ok);
    if (got == 0)
        engine_lora_unref(l);
}

#define NO_DATA ((size_t)-1)

struct bad_peft {
    const char *what;
    const char *config;     /* NULL: GOOD_CONFIG */
    const char *header;     /* NULL: GOOD_HEADER */
    size_t data_len;        /* 0: 2048, NO_DATA: none */
    uint64_t hlen;          /* header length written; 0: the header's */
    int nan_at;             /* float of the data set to NaN; 0: none (it is index 0 of A) */
    int rc;
    const char *msg;
};

static const struct bad_peft bad_peft[] = {
    /* safetensors */
    { "header length 2^63", .hlen = 1ull << 63, .rc = -EBADMSG, .msg = "above the limit" },
    { "header past EOF", .hlen = 4000, .rc = -EBADMSG, .msg = "past the end of the file" },
    { "bad JSON header", .header = "{\"a\": [1, 2", .rc = -EBADMSG, .msg = "not valid JSON" },
    { "header not an object", .header = "[1, 2, 3]", .rc = -EBADMSG, .msg = "not a JSON obj" },
    { "bytes after the JSON", .header = "{} x", .rc = -EBADMSG, .msg = "after its JSON" },
    { "offsets past EOF", .header = "{" T(QA, "F32", "[1,256]", "[0,1024]") ","
      T(QB, "F32", "[256,1]", "[1024,4096]") "}", .rc = -EBADMSG, .msg = "not within the data" },
    { "begin after end", .header = "{" T(QA, "F32", "[1,256]", "[0,1024]") ","
      T(QB, "F32", "[256,1]", "[2048,1024]") "}", .rc = -EBADMSG, .msg = "not within the data" },
    { "overlapping tensors", .header = "{" T(QA, "F32", "[1,256]", "[0,1024]") ","
      T(QB, "F32", "[256,1]", "[512,1536]") "}", .data_len = 1536, .rc = -EBADMSG,
      .msg = "overlaps" },
    { "size not the shape's", .header = "{" T(QA, "F32", "[1,256]", "[0,1000]") ","
      T(QB, "F32", "[256,1]", "[1000,2048]") "}", .rc = -EBADMSG,
      .msg = "span 1000 bytes but the shape and dtype need 1024" },
    { "shape overflow", .header = "{" T(QA, "F32", "[4294967296,4294967296,4294967296]",
      "[0,2048]") "}", .rc = -EBADMSG, .msg = "shape is too large" },
    { "unknown dtype", .header = "{" T(QA, "Q9", "[1,256]", "[0,1024]") ","
      T(QB, "F32", "[256,1]", "[1024,2048]") "}", .rc = -EBADMSG,
      .msg = "dtype Q9 is not supported (F32, F16, BF16)" },
    { "newline in a dtype", .header = "{" T(QA, "\\nF32", "[1,256]", "[0,1024]") ","
      T(QB, "F32", "[256,1]", "[1024,2048]") "}", .rc = -EBADMSG,
      .msg = "dtype ?F32 is not supported" },      /* one line (fuzz_safetensors) */
    { "integer dtype", .header = "{" T(QA, "I64", "[1,128]", "[0,1024]") ","
      T(QB, "F32", "[256,1]", "[1024,2048]") "}", .rc = -EBADMSG, .msg = "dtype I64" },
    { "duplicate name", .header = "{" T(QA, "F32", "[1,256]", "[0,1024]") ","
      T(QA, "F32", "[256,1]", "[1024,2048]") "}", .rc = -EBADMSG, .msg = "appears twice" },
    { "gap in the data", .header = "{" T(QA, "F32", "[1,256]", "[0,1024]") ","
      T(QB, "F32", "[256,1]", "[1028,2052]") "}", .data_len = 2052, .rc = -EBADMSG,
      .msg = "belong to no tensor" },
    { "bytes after the data", .data_len = 2052, .rc = -EBADMSG, .msg = "after the last" },
    { "fractional offset", .header = "{" T(QA, "F32", "[1,256]", "[0.5,1024]") "}",
      .rc = -EBADMSG, .msg = "data_offsets is not [begin, end]" },
    { "negative shape", .header = "{" T(QA, "F32", "[-1,256]", "[0,1024]") "}",
      .rc = -EBADMSG, .msg = "shape holds something other than a size" },
    { "metadata not strings", .header = "{\"__metadata__\":{\"format\":1}}", .data_len = 1,
      .rc = -EBADMSG, .msg = "__metadata__: format is not a string" },
    /* adapter_config.json */
    { "config bad JSON", .config = "{\"r\": 8,", .rc = -EINVAL,
      .msg = "adapter_config.json: not a JSON object" },
    { "config missing r", .config = "{\"target_modules\":[\"q_proj\"]}", .rc = -EINVAL,
      .msg = "adapter_config.json: r is missing" },
    { "config r = 0", .config = "{\"r\":0,\"target_modules\":[\"q_proj\"]}", .rc = -EINVAL,
      .msg = "r must be a positive integer (got 0)" },
    { "config r above max", .config = "{\"r\":128,\"target_modules\":[\"q_proj\"]}",
      .rc = -EINVAL, .msg = "r 128 is above the maximum rank 64" },
    { "config embed_tokens", .config = "{\"r\":1,\"target_modules\":[\"q_proj\","
      "\"embed_tokens\"]}", .rc = -EINVAL, .msg = "target module \"embed_tokens\" is not one" },
    { "config newline in a module", .config = "{\"r\":1,\"target_modules\":[\"q_proj\\n\"]}",
      .rc = -EINVAL, .msg = "target module \"q_proj?\" is not one" },     /* fuzz_peft */
    { "config lm_head regex", .config = "{\"r\":1,\"target_modules\":\".*(q_proj|lm_head)\"}",
      .rc = -EINVAL, .msg = "target_modules matches lm_head" },
    { "config bad regex", .config = "{\"r\":1,\"target_modules\":\"(q_proj\"}", .rc = -EINVAL,
      .msg = "is not a regular expression" },
    { "config bias all", .config = "{\"r\":1,\"bias\":\"all\",\"target_modules\":[\"q_proj\"]}",
      .rc = -EINVAL, .msg = "bias is \"all\"; loraserve supports only \"none\"" },
    { "config fan_in_fan_out", .config = "{\"r\":1,\"fan_in_fan_out\":true,"
      "\"target_modules\":[\"q_proj\"]}", .rc = -EINVAL, .msg = "fan_in_fan_out is true" },
    { "config peft_type", .config = "{\"r\":1,\"peft_type\":\"PREFIX_TUNING\","
      "\"target_modules\":[\"q_proj\"]}", .rc = -EINVAL, .msg = "peft_type is \"PREFIX_TUNING\"" },
    { "config DoRA", .config = "{\"r\":1,\"use_dora\":true,\"target_modules\":[\"q_proj\"]}",
      .rc = -EINVAL, .msg = "use_dora is true" },
    { "config modules_to_save", .config = "{\"r\":1,\"modules_to_save\":[\"lm_head\"],"
      "\"target_modules\":[\"q_proj\"]}", .rc = -EINVAL, .msg = "modules_to_save is set" },
    { "config rank_pattern 0", .config = "{\"r\":1,\"rank_pattern\":{\"q_proj\":0},"
      "\"target_modules\":[\"q_proj\"]}", .rc = -EINVAL, .msg = "rank_pattern[\"q_proj\"]" },
    /* weights against the config and the base */
    { "n_embd 128 adapter", .header = "{" T(QA, "F32", "[1,128]", "[0,512]") ","
      T(QB, "F32", "[128,1]", "[512,1024]") "}", .data_len = 1024, .rc = -EINVAL,
      .msg = "lora_A is (1, 128) and lora_B (128, 1), but the base weight is (256, 256)" },
    { "NaN weight", .nan_at = 300, .rc = -EINVAL, .msg = "NaN or infinity" },
    { "lora_A without lora_B", .header = "{" T(QA, "F32", "[1,256]", "[0,1024]") "}",
      .data_len = 1024, .rc = -EINVAL, .msg = "lora_A has no matching lora_B" },
    { "lora_B without lora_A", .header = "{" T(QB, "F32", "[256,1]", "[0,1024]") "}",
      .data_len = 1024, .rc = -EINVAL, .msg = "lora_B has no matching lora_A" },
    { "ranks differ", .header = "{" T(QA, "F32", "[2,256]", "[0,2048]") ","
      T(QB, "F32", "[256,1]", "[2048,3072]") "}", .data_len = 3072, .rc = -EINVAL,
      .msg = "their ranks differ" },
    { "rank not the config's", .config = "{\"r\":2,\"target_modules\":[\"q_proj\"]}",
      .rc = -EINVAL, .msg = "rank 1 differs from the config's 2" },
    { "layer beyond the model", .header = "{"
      T("base_model.model.model.layers.6.self_attn.q_proj.lora_A.weight", "F32", "[1,256]",
        "[0,1024]") ","
      T("base_model.model.model.layers.6.self_attn.q_proj.lora_B.weight", "F32", "[256,1]",
        "[1024,2048]") "}", .rc = -EINVAL, .msg = "layer 6 is beyond the model's 6 layers" },
    { "module not targeted", .config = "{\"r\":1,\"target_modules\":[\"v_proj\"]}",
      .rc = -EINVAL, .msg = "has weights but is not in target_modules" },
    { "lm_head weights", .header = "{"
      T("base_model.model.lm_head.lora_A.weight", "F32", "[1,256]", "[0,1024]") "}",
      .data_len = 1024, .rc = -EINVAL, .msg = "module lm_head is not one loraserve can adapt" },
    { "embedding weights", .header = "{"
      T("base_model.model.model.embed_tokens.lora_embedding_A", "F32", "[1,256]", "[0,1024]")
      "}", .data_len = 1024, .rc = -EINVAL, .msg = "is not a LoRA weight" },
    { "no weights", .header = "{}", .data_len = NO_DATA, .rc = -EINVAL, .msg = "holds no LoRA" },
};

static void
test_bad_peft(void)
{
    tmp_open();
    char dir[128];
    snprintf(dir, sizeof(dir), "%s/good", tmpdir);
    write_peft(dir, GOOD_CONFIG, GOOD_HEADER, 0, 2048, -1);
    struct engine_lora *l = NULL;
    struct adapters_info info;
    char err[512] = "";
    CHECK_EQ(adapters_load_path(model, dir, 64, &l, &info, err, sizeof(err)), 0);
    CHECK(l != NULL && info.rank == 1 && info.targets == 1u << ENGINE_LORA_Q);
    engine_lora_unref(l);
    size_t n = sizeof(bad_peft) / sizeof(bad_peft[0]);
    CHECK(n >= 30);
    for (size_t i = 0; i < n; i++) {
        const struct bad_peft *b = &bad_peft[i];
        snprintf(dir, sizeof(dir), "%s/bad%zu", tmpdir, i);
        size_t data_len = b->data_len == NO_DATA ? 0 : b->data_len ? b->data_len : 2048;
        write_peft(dir, b->config ? b->config : GOOD_CONFIG, b->header ? b->header : GOOD_HEADER,
                   b->hlen, data_len, b->nan_at ? b->nan_at : -1);
        expect_refused(b->what, dir, 64, b->rc, b->msg);
    }
    tmp_close();
}

/* ---- PEFT options that change the scale or the matching --------------- */

/* The first logits of g's prompt with l (or none) at scale 1 (n_vocab floats, caller frees). */
static float *
first_logits(struct engine_lora *l, struct golden *g)
{
    struct engine_lora_set set = { l != NULL, { l }, { 1.0f } };
    const struct engine_lora_set *sets[1] = { &set };
    int32_t out[1][64];
    int n_out[1] = { 0 };
    float *first = malloc(2048 * sizeof(float));
    run_batch(sets, g, 1, out, n_out, first);
    return first;
}

/* A copy of peft-fortunes with another adapter_config.json. */
static void
write_fortunes(const char *dir, const char *config)
{
    char path[640];
    snprintf(path, sizeof(path), "%s/models/lora/peft-fortunes/adapter_model.safetensors",
             test_shared_dir());
    size_t len = 0;
    char *st = test_read_file(path, &len);
    mkdir(dir, 0700);
    snprintf(path, sizeof(path), "%s/adapter_model.safetensors", dir);
    write_file(path, st, len);
    snprintf(path, sizeof(path), "%s/adapter_config.json", dir);
    write_file(path, config, strlen(config));
    free(st);
}

#define ALL_TARGETS "[\"q_proj\",\"k_proj\",\"v_proj\",\"o_proj\",\"gate_proj\",\"up_proj\"," \
                    "\"down_proj\"]"

/*
 * Configs that must all give scale 2 on every module (the golden
 * lora-fortunes), or 1 (lora-fortunes-scale0.5), through different options.
 */
static const struct {
    const char *config, *golden;
} options[] = {
    { "{\"r\":8,\"lora_alpha\":16,\"target_modules\":\"all-linear\"}", "lora-fortunes" },
    { "{\"r\":8,\"lora_alpha\":16,\"target_modules\":\".*\\\\.(q|k|v|o|gate|up|down)_proj\"}",
      "lora-fortunes" },
    { "{\"r\":8,\"lora_alpha\":16,\"target_modules\":[\"self_attn.q_proj\",\"k_proj\","
      "\"v_proj\",\"o_proj\",\"mlp.gate_proj\",\"up_proj\",\"down_proj\"]}", "lora-fortunes" },
    { "{\"r\":8,\"lora_alpha\":5.656854249492381,\"use_rslora\":true,\"target_modules\":"
      ALL_TARGETS "}", "lora-fortunes" },
    { "{\"r\":4,\"lora_alpha\":3,\"rank_pattern\":{\".*\":8},\"alpha_pattern\":"
      "{\"proj\":5,\".*\":16},\"target_modules\":" ALL_TARGETS "}", "lora-fortunes" },
    { "{\"r\":8,\"lora_alpha\":8,\"target_modules\":" ALL_TARGETS "}",
      "lora-fortunes-scale0.5" },
};

static void
test_peft_options(void)
{
    tmp_open();
    for (size_t i = 0; i < sizeof(options) / sizeof(options[0]); i++) {
        char dir[128], err[512] = "";
        snprintf(dir, sizeof(dir), "%s/opt%zu", tmpdir, i);
        write_fortunes(dir, options[i].config);
        struct engine_lora *l = NULL;
        struct adapters_info info;
        int rc = adapters_load_path(model, dir, 64, &l, &info, err, sizeof(err));
        if (rc < 0)
            fprintf(stderr, "  option %zu: %s\n", i, err);
        CHECK_EQ(rc, 0);
        struct golden g;
        CHECK(load_golden(options[i].golden, "short-genesis", &g));
        float *first = rc == 0 ? first_logits(l, &g) : NULL;
        for (int k = 0; first != NULL && k < 5; k++) {
            bool ok = fabs(first[g.top_id[k]] - g.top_logit[k]) <= 1e-3;
            if (!ok)
                fprintf(stderr, "  option %zu: logit %d is %g, want %g\n", i, g.top_id[k],
                        first[g.top_id[k]], g.top_logit[k]);
            CHECK(ok);
        }
        free(first);
        engine_lora_unref(l);
    }
    tmp_close();
}

/* The same weights (all 0.5, exact in every type) as F32, F16 and BF16 give the same logits. */
static void
test_peft_dtypes(void)
{
    tmp_open();
    static const struct {
        const char *dtype;
        size_t size;
        uint32_t half;      /* 0.5 in that type (F32: the whole word) */
        uint32_t inf;       /* +infinity in that type */
    } types[] = { { "F32", 4, 0x3f000000u, 0x7f800000u }, { "F16", 2, 0x3800u, 0x7c00u },
                  { "BF16", 2, 0x3f00u, 0x7f80u } };
    float *ref = NULL;
    struct golden g;
    CHECK(load_golden("base", "short-genesis", &g));
    for (int i = 0; i < 3; i++) {
        char dir[128], path[192], header[512];
        size_t na = 256 * types[i].size;
        snprintf(header, sizeof(header), "{\"" QA "\":{\"dtype\":\"%s\",\"shape\":[1,256],"
                 "\"data_offsets\":[0,%zu]},\"" QB "\":{\"dtype\":\"%s\",\"shape\":[256,1],"
                 "\"data_offsets\":[%zu,%zu]}}", types[i].dtype, na, types[i].dtype, na,
                 2 * na);
        snprintf(dir, sizeof(dir), "%s/%s", tmpdir, types[i].dtype);
        write_peft(dir, GOOD_CONFIG, NULL, 0, 0, -1);
        size_t hl = strlen(header), n = 8 + hl + 2 * na;
        unsigned char *buf = calloc(1, n);
        for (int b = 0; b < 8; b++)
            buf[b] = (unsigned char)((uint64_t)hl >> (8 * b));
        memcpy(buf + 8, header, hl);
        for (size_t e = 0; e < 512; e++)
            memcpy(buf + 8 + hl + e * types[i].size, &types[i].half, types[i].size);
        snprintf(path, sizeof(path), "%s/adapter_model.safetensors", dir);
        /* An infinity in B (whatever it is kept as) is refused with one line. */
        memcpy(buf + 8 + hl + 300 * types[i].size, &types[i].inf, types[i].size);
        write_file(path, buf, n);
        expect_refused(types[i].dtype, dir, 64, -EINVAL, "NaN or infinity");
        memcpy(buf + 8 + hl + 300 * types[i].size, &types[i].half, types[i].size);
        write_file(path, buf, n);
        free(buf);
        struct engine_lora *l = NULL;
        struct adapters_info info;
        char err[512] = "";
        CHECK_EQ(adapters_load_path(model, dir, 64, &l, &info, err, sizeof(err)), 0);
        float *first = l ? first_logits(l, &g) : NULL;
        if (ref == NULL)
            ref = first;
        else if (first != NULL)
            CHECK(memcmp(ref, first, 2048 * sizeof(float)) == 0);
        if (first != ref)
            free(first);
        engine_lora_unref(l);
    }
    free(ref);
    tmp_close();
}

/* The good PEFT safetensors cut at every header length and many data lengths: never loads. */
static void
test_truncated(void)
{
    tmp_open();
    char dir[128], path[160];
    snprintf(dir, sizeof(dir), "%s/t", tmpdir);
    write_peft(dir, GOOD_CONFIG, GOOD_HEADER, 0, 2048, -1);
    snprintf(path, sizeof(path), "%s/adapter_model.safetensors", dir);
    size_t len = 0;
    char *full = test_read_file(path, &len);
    size_t header_end = 8 + strlen(GOOD_HEADER);
    int n = 0;
    for (size_t cut = 0; full != NULL && cut < len; cut += cut < header_end + 8 ? 1 : 61) {
        write_file(path, full, cut);
        expect_refused("truncated", dir, 64, -EBADMSG, "adapter_model.safetensors: ");
        n++;
    }
    CHECK(n > 250);
    free(full);
    tmp_close();
}

/* A GGUF-LoRA file with one pair on blk.0.attn_q of the given shapes. */
static void
write_gguf_lora(const char *path, const char *arch, int64_t k, int64_t r, int64_t n_out,
                bool with_b, float nan_or_value)
{
    struct gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "general.type", "adapter");
    gguf_writer_set_str(w, "adapter.type", "lora");
    gguf_writer_set_str(w, "general.architecture", arch);
    gguf_writer_set_f32(w, "adapter.lora.alpha", 2.0f);
    float *a = calloc((size_t)(k * r), 4), *b = calloc((size_t)(r * n_out), 4);
    a[0] = nan_or_value;
    int64_t ne_a[2] = { k, r }, ne_b[2] = { r, n_out };
    gguf_writer_add_tensor(w, "blk.0.attn_q.weight.lora_a", GGUF_T_F32, 2, ne_a, a,
                           (size_t)(k * r) * 4);
    if (with_b)
        gguf_writer_add_tensor(w, "blk.0.attn_q.weight.lora_b", GGUF_T_F32, 2, ne_b, b,
                               (size_t)(r * n_out) * 4);
    char err[256] = "";
    CHECK_EQ(gguf_writer_write(w, path, err, sizeof(err)), 0);
    gguf_writer_free(w);
    free(a), free(b);
}

static void
test_bad_gguf(void)
{
    tmp_open();
    char path[160], real[512];
    snprintf(path, sizeof(path), "%s/good.gguf", tmpdir);
    write_gguf_lora(path, "llama", 256, 2, 256, true, 0.5f);
    struct engine_lora *l = NULL;
    struct adapters_info info;
    char err[512] = "";
    CHECK_EQ(adapters_load_path(model, path, 64, &l, &info, err, sizeof(err)), 0);
    engine_lora_unref(l);
    snprintf(path, sizeof(path), "%s/qwen2.gguf", tmpdir);
    write_gguf_lora(path, "qwen2", 256, 2, 256, true, 0.5f);
    expect_refused("wrong architecture", path, 64, -EINVAL, "another architecture");
    snprintf(path, sizeof(path), "%s/n128.gguf", tmpdir);
    write_gguf_lora(path, "llama", 128, 2, 128, true, 0.5f);
    expect_refused("n_embd 128", path, 64, -EINVAL, "does not fit the base weight");
    snprintf(path, sizeof(path), "%s/nan.gguf", tmpdir);
    write_gguf_lora(path, "llama", 256, 2, 256, true, NAN);
    expect_refused("NaN", path, 64, -EINVAL, "NaN or infinity");
    snprintf(path, sizeof(path), "%s/nob.gguf", tmpdir);
    write_gguf_lora(path, "llama", 256, 2, 256, false, 0.5f);
    expect_refused("lora_a without lora_b", path, 64, -EINVAL, "has no matching lora_b");
    snprintf(real, sizeof(real), "%s/models/kjv-tiny-f32.gguf", test_shared_dir());
    expect_refused("model as adapter", real, 64, -EINVAL, "not a LoRA adapter");
    snprintf(real, sizeof(real), "%s/models/lora/kjv-tiny-lora-fortunes.gguf",
             test_shared_dir());
    expect_refused("rank above max", real, 4, -EINVAL, "rank 8 is out of range [1, 4]");
    size_t len = 0;
    char *full = test_read_file(real, &len);
    snprintf(path, sizeof(path), "%s/cut.gguf", tmpdir);
    for (size_t cut = 0; full != NULL && cut < len; cut += cut < 4096 ? 97 : 65521) {
        write_file(path, full, cut);
        expect_refused("truncated gguf", path, 64, -EBADMSG, "cut.gguf: ");
    }
    free(full);
    tmp_close();
}

/* Paths that are not adapters at all. */
static void
test_bad_paths(void)
{
    tmp_open();
    char dir[128], path[192];
    expect_refused("missing", "/nonexistent/adapter", 64, -ENOENT, "no such file");
    snprintf(dir, sizeof(dir), "%s/empty", tmpdir);
    mkdir(dir, 0700);
    expect_refused("empty dir", dir, 64, -EINVAL, "not a PEFT adapter directory");
    snprintf(dir, sizeof(dir), "%s/bin", tmpdir);
    write_peft(dir, GOOD_CONFIG, NULL, 0, 0, -1);
    snprintf(path, sizeof(path), "%s/adapter_model.bin", dir);
    write_file(path, "pickle", 6);
    expect_refused("pickle only", dir, 64, -EINVAL, "pickled weights are not supported");
    snprintf(dir, sizeof(dir), "%s/noweights", tmpdir);
    write_peft(dir, GOOD_CONFIG, NULL, 0, 0, -1);
    expect_refused("no safetensors", dir, 64, -EINVAL, "adapter_model.safetensors: ");
    snprintf(path, sizeof(path), "%s/models/lora/peft-jargon", test_shared_dir());
    expect_refused("PEFT rank above max", path, 4, -EINVAL, "r 8 is above the maximum rank 4");
    snprintf(path, sizeof(path), "%s/text.gguf", tmpdir);
    write_file(path, "hello", 5);
    expect_refused("text file", path, 64, -EBADMSG, "text.gguf: ");
    tmp_close();
}

/* ---- F16 adapters are kept as F16 --------------------------------------- */

/* path (an F16 GGUF-LoRA) written again with F32 tensors of the same values. */
static void
write_as_f32(const char *path, const char *out)
{
    struct gguf *g = NULL;
    char err[256] = "";
    CHECK_EQ(gguf_open(path, &g, err, sizeof(err)), 0);
    struct gguf_writer *w = gguf_writer_new();
    gguf_writer_set_str(w, "general.type", "adapter");
    gguf_writer_set_str(w, "adapter.type", "lora");
    gguf_writer_set_str(w, "general.architecture", "llama");
    float alpha = 0;
    CHECK_EQ(gguf_get_f32(g, "adapter.lora.alpha", &alpha), 0);
    gguf_writer_set_f32(w, "adapter.lora.alpha", alpha);
    int64_t n_t = gguf_n_tensors(g);
    float **bufs = calloc((size_t)n_t, sizeof(*bufs));
    for (int64_t i = 0; i < n_t; i++) {
        const struct gguf_tensor *te = gguf_tensor(g, i);
        CHECK_EQ(te->type, GGUF_T_F16);
        int64_t n = te->ne[0] * te->ne[1];
        bufs[i] = malloc((size_t)n * sizeof(float));
        CHECK_EQ(engine_tensor_to_f32(te->type, te->data, bufs[i], n), 0);
        gguf_writer_add_tensor(w, te->name, GGUF_T_F32, 2, te->ne, bufs[i],
                               (size_t)n * sizeof(float));
    }
    CHECK_EQ(gguf_writer_write(w, out, err, sizeof(err)), 0);
    gguf_writer_free(w);
    for (int64_t i = 0; i < n_t; i++)
        free(bufs[i]);
    free(bufs);
    gguf_free(g);
}

/*
 * fortunes converted to F16 (loraserve quantize) takes half the memory of the
 * same values in F32, and gives the same logits and tokens to the bit, the
 * two in one batch.
 */
static void
test_f16_kept(void)
{
    tmp_open();
    char src[512], f16[128], f32[128], err[512] = "";
    snprintf(src, sizeof(src), "%s/models/lora/kjv-tiny-lora-fortunes.gguf", test_shared_dir());
    snprintf(f16, sizeof(f16), "%s/f16.gguf", tmpdir);
    snprintf(f32, sizeof(f32), "%s/f32.gguf", tmpdir);
    CHECK_EQ(engine_quantize_file(src, f16, "f16", 1, err, sizeof(err)), 0);
    write_as_f32(f16, f32);
    struct engine_lora *l[2] = { NULL, NULL };
    struct adapters_info info;
    CHECK_EQ(adapters_load_path(model, f32, 64, &l[0], &info, err, sizeof(err)), 0);
    CHECK_EQ(adapters_load_path(model, f16, 64, &l[1], &info, err, sizeof(err)), 0);
    if (l[0] != NULL && l[1] != NULL) {
        CHECK(engine_lora_bytes(l[0]) > 0);
        CHECK_EQ(engine_lora_bytes(l[1]) * 2, engine_lora_bytes(l[0]));
        struct golden g[2];
        CHECK(load_golden("base", "short-genesis", &g[0]));
        g[1] = g[0];
        struct engine_lora_set s0 = { 1, { l[0] }, { 1.0f } }, s1 = { 1, { l[1] }, { 1.0f } };
        float *first[2] = { first_logits(l[0], &g[0]), first_logits(l[1], &g[0]) };
        CHECK(memcmp(first[0], first[1], 2048 * sizeof(float)) == 0);
        /* One batch holding both: the same tokens. */
        const struct engine_lora_set *sets[2] = { &s0, &s1 };
        int32_t out[2][64];
        int n_out[2] = { 0, 0 };
        run_batch(sets, g, 2, out, n_out, NULL);
        CHECK(n_out[0] > 0);
        CHECK_EQ(n_out[0], n_out[1]);
        CHECK(memcmp(out[0], out[1], (size_t)n_out[0] * sizeof(int32_t)) == 0);
        float *base = first_logits(NULL, &g[0]);
        CHECK(memcmp(first[1], base, 2048 * sizeof(float)) != 0);     /* it does adapt */
        free(first[0]);
        free(first[1]);
        free(base);
    }
    engine_lora_unref(l[0]);
    engine_lora_unref(l[1]);
    tmp_close();
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
        { "bad_peft", test_bad_peft },
        { "peft_options", test_peft_options },
        { "peft_dtypes", test_peft_dtypes },
        { "truncated", test_truncated },
        { "bad_gguf", test_bad_gguf },
        { "bad_paths", test_bad_paths },
        { "f16_kept", test_f16_kept },
        { NULL, NULL },
    };
    int rc = check_main(tests, argc, argv);
    engine_model_free(model);
    return rc;
}
