/*
 * test_encoder.c - the BERT embedding model (engine_encoder_*) against the
 * goldens of ../shared/models/embed (llama.cpp's outputs for a random-weight
 * BERT): token ids exact, pooled embeddings within 1e-4 per component and
 * cosine >= 0.99999, hidden states within 2e-3 (the tolerances its README
 * gives), and the ways a bad file or bad input is refused.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "engine.h"
#include "gguf.h"
#include "testutil.h"
#include "tokenizer.h"

static const char *golden_ids[] = { "hello_world", "single_word", "mixed_case", "punctuation",
                                    "digits", "accents", "cjk", "subwords", "unknown_emoji",
                                    "whitespace", "hangul", "special_in_text", "long" };
#define N_GOLDEN (sizeof(golden_ids) / sizeof(golden_ids[0]))

static struct engine_encoder *enc;

static const char *
model_path(void)
{
    static char path[1024];
    snprintf(path, sizeof(path), "%s/models/embed/bert-tiny-random-f16.gguf", test_shared_dir());
    return path;
}

static struct engine_encoder *
encoder(void)
{
    char err[512] = "";
    if (enc == NULL && engine_encoder_open(model_path(), 2, &enc, err, sizeof(err)) < 0)
        fprintf(stderr, "cannot open the encoder: %s\n", err);
    return enc;
}

static cJSON *
golden(const char *id)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/models/embed/golden/%s.json", test_shared_dir(), id);
    char *text = test_read_file(path, NULL);
    cJSON *j = text ? cJSON_Parse(text) : NULL;
    free(text);
    if (j == NULL)
        fprintf(stderr, "cannot read %s\n", path);
    return j;
}

/* The golden's token ids; *n their count. */
static int32_t *
golden_tokens(const cJSON *j, int *n)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "tokens");
    *n = cJSON_GetArraySize(t);
    int32_t *ids = malloc((size_t)*n * sizeof(*ids) + 1);
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, t)
        ids[i++] = (int32_t)x->valueint;
    return ids;
}

/* Largest |a - want| over want's entries (a has as many); *cos their cosine. */
static double
max_diff(const float *a, const cJSON *want, double *cos)
{
    double m = 0, dot = 0, na = 0, nw = 0;
    int i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, want) {
        double d = fabs(a[i] - x->valuedouble);
        m = d > m ? d : m;
        dot += a[i] * x->valuedouble, na += (double)a[i] * a[i];
        nw += x->valuedouble * x->valuedouble;
        i++;
    }
    if (cos != NULL)
        *cos = dot / sqrt(na * nw);
    return m;
}

static void
test_open(void)
{
    struct engine_encoder *e = encoder();
    CHECK(e != NULL);
    if (e == NULL)
        return;
    CHECK_EQ(engine_encoder_dim(e), 256);
    CHECK_EQ(engine_encoder_n_ctx(e), 512);
    CHECK_EQ(engine_encoder_pooling(e), ENGINE_POOL_MEAN);
    CHECK(engine_encoder_n_params(e) > 11000000 && engine_encoder_n_params(e) < 11200000);
}

/* Every golden's text gives its token ids, and those ids its embeddings. */
static void
check_golden(struct engine_encoder *e, const char *id, double *worst)
{
    cJSON *j = golden(id);
    CHECK(j != NULL);
    if (j == NULL)
        return;
    int n = 0;
    int32_t *want = golden_tokens(j, &n), *ids = NULL;
    const char *text = cJSON_GetObjectItemCaseSensitive(j, "text")->valuestring;
    size_t n_ids = 0;
    CHECK_EQ(tokenizer_encode(engine_encoder_tokenizer(e), text, strlen(text), true, true,
                              &ids, &n_ids), 0);
    CHECK_EQ(n_ids, n);
    CHECK(ids != NULL && n_ids == (size_t)n && memcmp(ids, want, (size_t)n * 4) == 0);
    float v[256];
    const char *field[2] = { "embedding_mean", "embedding_cls" };
    enum engine_pooling how[2] = { ENGINE_POOL_MEAN, ENGINE_POOL_CLS };
    for (int f = 0; f < 2; f++) {
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(j, field[f]);
        if (g == NULL)
            continue;
        CHECK_EQ(engine_encoder_embed(e, want, n, how[f], v), 0);
        double cos = 0, d = max_diff(v, g, &cos);
        if (d > 1e-4 || cos < 0.99999)
            fprintf(stderr, "%s %s: max |diff| %.3g, cosine %.9f\n", id, field[f], d, cos);
        CHECK(d <= 1e-4);
        CHECK(cos >= 0.99999);
        *worst = d > *worst ? d : *worst;
    }
    free(want);
    free(ids);
    cJSON_Delete(j);
}

static void
test_goldens(void)
{
    struct engine_encoder *e = encoder();
    CHECK(e != NULL);
    double worst = 0;
    for (size_t i = 0; e != NULL && i < N_GOLDEN; i++)
        check_golden(e, golden_ids[i], &worst);
    printf("     embeddings: largest difference from llama.cpp %.2g\n", worst);
}

static void
test_hidden_states(void)
{
    struct engine_encoder *e = encoder();
    cJSON *j = golden("hello_world");
    CHECK(e != NULL && j != NULL);
    if (e == NULL || j == NULL) {
        cJSON_Delete(j);
        return;
    }
    int n = 0;
    int32_t *ids = golden_tokens(j, &n);
    float *h = malloc((size_t)n * 256 * sizeof(float));
    CHECK_EQ(engine_encoder_hidden(e, ids, n, h), 0);
    double worst = 0;
    int r = 0;
    const cJSON *row;
    cJSON_ArrayForEach(row, cJSON_GetObjectItemCaseSensitive(j, "hidden_states")) {
        double d = max_diff(h + (size_t)r++ * 256, row, NULL);
        worst = d > worst ? d : worst;
    }
    CHECK_EQ(r, n);
    CHECK(worst <= 2e-3);
    free(ids);
    free(h);
    cJSON_Delete(j);
}

/* Empty, out-of-range and too-long inputs are refused; the same ids give the same bits. */
static void
test_bad_input(void)
{
    struct engine_encoder *e = encoder();
    CHECK(e != NULL);
    if (e == NULL)
        return;
    float v[256];
    int32_t ids[3] = { 101, 7592, 102 };
    CHECK_EQ(engine_encoder_embed(e, ids, 0, ENGINE_POOL_MEAN, v), -EINVAL);
    int32_t bad[3] = { 101, 30522, 102 };
    CHECK_EQ(engine_encoder_embed(e, bad, 3, ENGINE_POOL_MEAN, v), -EINVAL);
    bad[1] = -1;
    CHECK_EQ(engine_encoder_embed(e, bad, 3, ENGINE_POOL_MEAN, v), -EINVAL);
    int32_t *many = malloc(513 * sizeof(*many));
    for (int i = 0; i < 513; i++)
        many[i] = 1000;
    CHECK_EQ(engine_encoder_embed(e, many, 513, ENGINE_POOL_MEAN, v), -E2BIG);
    CHECK_EQ(engine_encoder_embed(e, many, 512, ENGINE_POOL_MEAN, v), 0);
    free(many);
    float a[256], b[256];
    CHECK_EQ(engine_encoder_embed(e, ids, 3, ENGINE_POOL_LAST, a), 0);
    CHECK_EQ(engine_encoder_embed(e, ids, 3, ENGINE_POOL_LAST, b), 0);
    CHECK(memcmp(a, b, sizeof(a)) == 0);
    CHECK(fabs(test_dot(a, a, 256) - 1.0) < 1e-5);
}

/* Writes a copy of the model with one key's or tensor's bytes changed. */
static char *
patched_copy(const char *find, size_t find_len, const char *repl)
{
    size_t len = 0;
    char *buf = test_read_file(model_path(), &len);
    char *hit = buf ? memmem(buf, len, find, find_len) : NULL;
    if (hit == NULL) {
        free(buf);
        return NULL;
    }
    memcpy(hit, repl, find_len);
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/test_encoder_%d.gguf", (int)getpid());
    FILE *f = fopen(path, "wb");
    size_t w = f ? fwrite(buf, 1, len, f) : 0;
    if (f)
        fclose(f);
    free(buf);
    return w == len ? path : NULL;
}

static void
expect_refused(const char *find, const char *repl, const char *msg)
{
    char *path = patched_copy(find, strlen(find), repl);
    CHECK(path != NULL);
    if (path == NULL)
        return;
    struct engine_encoder *e = NULL;
    char err[512] = "";
    CHECK(engine_encoder_open(path, 1, &e, err, sizeof(err)) < 0);
    CHECK(e == NULL);
    if (strstr(err, msg) == NULL)
        fprintf(stderr, "message '%s' lacks '%s'\n", err, msg);
    CHECK(strstr(err, msg) != NULL);
    CHECK(strstr(err, path) != NULL);
    unlink(path);
}

static void
test_bad_files(void)
{
    struct engine_encoder *e = NULL;
    char err[512] = "";
    CHECK(engine_encoder_open("/nonexistent/e.gguf", 1, &e, err, sizeof(err)) < 0);
    CHECK(e == NULL && err[0] != '\0');
    /* a LLaMA model is not an embedding model */
    char llama[1024];
    snprintf(llama, sizeof(llama), "%s/models/kjv-tiny-q8_0.gguf", test_shared_dir());
    CHECK(engine_encoder_open(llama, 1, &e, err, sizeof(err)) < 0);
    CHECK(strstr(err, "not a BERT embedding model") != NULL);
    /* a tensor renamed away, a layer count beyond the tensors, a pooling with no vector */
    expect_refused("blk.3.ffn_down.bias", "blk.3.ffn_dowX.bias", "missing tensor blk.3.ffn_down.bias");
    expect_refused("token_embd_norm.weight", "token_embd_norX.weight",
                   "missing tensor token_embd_norm.weight");
    /* bert.pooling_type (u32 1, mean) made 0: per-token vectors, nothing to serve */
    const char pool1[] = "bert.pooling_type\x04\0\0\0\x01\0\0\0";
    const char pool0[] = "bert.pooling_type\x04\0\0\0\x00\0\0\0";
    char *path = patched_copy(pool1, sizeof(pool1) - 1, pool0);
    CHECK(path != NULL);
    if (path != NULL) {
        CHECK_EQ(engine_encoder_open(path, 1, &e, err, sizeof(err)), -EINVAL);
        CHECK(strstr(err, "pooling_type 0 (none)") != NULL);
        unlink(path);
    }
}

int
main(int argc, char **argv)
{
    static const struct check_test tests[] = {
        { "open", test_open },
        { "goldens", test_goldens },
        { "hidden_states", test_hidden_states },
        { "bad_input", test_bad_input },
        { "bad_files", test_bad_files },
        { NULL, NULL },
    };
    int rc = check_main(tests, argc, argv);
    engine_encoder_free(enc);
    return rc;
}
