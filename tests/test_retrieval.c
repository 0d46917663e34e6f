/*
 * test_retrieval.c - the hash embedder: unit vectors, determinism, Unicode
 * normalisation, bad input, dimensions, and that a question ranks the verse
 * holding its key words first; vector stores: their lifecycle, chunking,
 * the three search modes, filters, thresholds, deleting, and everything
 * read back after a reopen.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../retrieval/retrieval_int.h"
#include "check.h"
#include "engine.h"
#include "retrieval.h"
#include "testutil.h"
#include "tokenizer.h"

static struct retrieval_embedder *hash;
static struct engine_model *model;          /* its tokenizer chunks */
static char tmpdir[64];

static float *
embed(const char *text, int *n_tokens)
{
    float *v = malloc(RETRIEVAL_HASH_DIM * sizeof(float));
    CHECK_EQ(retrieval_embed(hash, text, strlen(text), v, n_tokens), 0);
    return v;
}

static void
test_unit_vector(void)
{
    int n = -1;
    float *v = embed("In the beginning God created the heaven and the earth.", &n);
    CHECK_EQ(n, 10);
    CHECK(fabs(test_dot(v, v, RETRIEVAL_HASH_DIM) - 1.0) < 1e-5);
    float *w = embed("In the beginning God created the heaven and the earth.", NULL);
    CHECK(memcmp(v, w, RETRIEVAL_HASH_DIM * sizeof(float)) == 0);
    free(v), free(w);
}

/* NFKC, case folding and stripped accents make these one text. */
static void
test_normalisation(void)
{
    float *a = embed("Caf\xc3\xa9 au lait", NULL);          /* precomposed e-acute */
    float *b = embed("CAFE\xcc\x81 AU LAIT", NULL);           /* E + combining acute */
    float *c = embed("cafe au lait", NULL);
    float *d = embed("\xef\xbd\x83\xef\xbd\x81\xef\xbd\x86\xef\xbd\x85 au lait", NULL); /* fullwidth */
    CHECK(memcmp(a, b, RETRIEVAL_HASH_DIM * sizeof(float)) == 0);
    CHECK(memcmp(a, c, RETRIEVAL_HASH_DIM * sizeof(float)) == 0);
    CHECK(memcmp(a, d, RETRIEVAL_HASH_DIM * sizeof(float)) == 0);
    free(a), free(b), free(c), free(d);
}

static void
test_edges(void)
{
    float v[RETRIEVAL_HASH_DIM];
    int n = -1;
    CHECK_EQ(retrieval_embed(hash, "\xff\xfe", 2, v, &n), -EILSEQ);
    CHECK_EQ(retrieval_embed(hash, "ok \xc0\xaf", 5, v, &n), -EILSEQ); /* overlong '/' */
    CHECK_EQ(retrieval_embed(hash, "", 0, v, &n), 0);
    CHECK_EQ(n, 0);
    CHECK(test_dot(v, v, RETRIEVAL_HASH_DIM) == 0);
    CHECK_EQ(retrieval_embed(hash, "!!! ... ???", 11, v, &n), 0);
    CHECK_EQ(n, 0);
    CHECK(test_dot(v, v, RETRIEVAL_HASH_DIM) == 0);
    /* only function words: they are all there is, so they count */
    CHECK_EQ(retrieval_embed(hash, "and the of", 10, v, &n), 0);
    CHECK_EQ(n, 3);
    CHECK(fabs(test_dot(v, v, RETRIEVAL_HASH_DIM) - 1.0) < 1e-5);
    /* a word far past the length that counts, and a NUL inside the text */
    char *big = malloc(100001);
    memset(big, 'x', 100000);
    big[100000] = '\0';
    big[5000] = '\0';
    CHECK_EQ(retrieval_embed(hash, big, 100000, v, &n), 0);
    CHECK_EQ(n, 2);
    free(big);
}

static void
test_dimensions(void)
{
    struct retrieval_embedder *e = NULL;
    CHECK_EQ(retrieval_hash_new(0, &e), -EINVAL);
    CHECK(e == NULL);
    CHECK_EQ(retrieval_hash_new(RETRIEVAL_DIM_MAX + 1, &e), -EINVAL);
    CHECK_EQ(retrieval_hash_new(1, &e), 0);
    float one;
    CHECK_EQ(retrieval_embed(e, "shepherd", 8, &one, NULL), 0);
    CHECK(fabsf(fabsf(one) - 1.0f) < 1e-6f);
    retrieval_embedder_free(e);
    CHECK_EQ(retrieval_hash_new(1024, &e), 0);
    CHECK_EQ(retrieval_embedder_dim(e), 1024);
    CHECK_STR(retrieval_embedder_kind(e), "hash");
    retrieval_embedder_free(e);
}

/* Related words share trigrams; unrelated ones share next to nothing. */
static void
test_word_forms(void)
{
    float *a = embed("created", NULL), *b = embed("create", NULL), *c = embed("shepherd", NULL);
    CHECK(test_dot(a, b, RETRIEVAL_HASH_DIM) > 0.3);
    CHECK(fabs(test_dot(a, c, RETRIEVAL_HASH_DIM)) < 0.2);
    free(a), free(b), free(c);
}

static void
test_ranking(void)
{
    static const char *verses[] = {
        "In the beginning God created the heaven and the earth.",
        "The LORD is my shepherd; I shall not want.",
        "Jesus wept.",
        "And God said, Let there be light: and there was light.",
        "For God so loved the world, that he gave his only begotten Son.",
        "Blessed are the meek: for they shall inherit the earth.",
        "Thou shalt not steal.",
        "A soft answer turneth away wrath: but grievous words stir up anger.",
    };
    static const struct { const char *q; int want; } qs[] = {
        { "Who created heaven?", 0 },
        { "the shepherd who provides", 1 },
        { "why did Jesus weep", 2 },
        { "when was there light", 3 },
        { "the only begotten son", 4 },
        { "who will inherit the earth?", 5 },
        { "stealing", 6 },
        { "how to turn away wrath", 7 },
    };
    enum { NV = sizeof(verses) / sizeof(verses[0]) };
    float *v[NV];
    for (int i = 0; i < NV; i++)
        v[i] = embed(verses[i], NULL);
    for (size_t k = 0; k < sizeof(qs) / sizeof(qs[0]); k++) {
        float *q = embed(qs[k].q, NULL);
        int best = 0;
        for (int i = 1; i < NV; i++)
            if (test_dot(q, v[i], RETRIEVAL_HASH_DIM) > test_dot(q, v[best], RETRIEVAL_HASH_DIM))
                best = i;
        if (best != qs[k].want)
            fprintf(stderr, "\"%s\": top hit %d, want %d\n", qs[k].q, best, qs[k].want);
        CHECK_EQ(best, qs[k].want);
        free(q);
    }
    for (int i = 0; i < NV; i++)
        free(v[i]);
}


/* The int8 scan gives the exact integer dot products, SIMD or not, with tails. */
static void
test_q8_scan(void)
{
    static const int dims[] = { 1, 15, 16, 37, 384 };
    for (size_t k = 0; k < sizeof(dims) / sizeof(dims[0]); k++) {
        int dim = dims[k], n = 50;
        int8_t *rows = malloc((size_t)n * dim);
        int16_t *q = malloc((size_t)dim * sizeof(*q));
        int32_t *got = malloc((size_t)n * sizeof(*got));
        for (int i = 0; i < n * dim; i++)
            rows[i] = (int8_t)((i * 37 + 11) % 255 - 127);
        for (int d = 0; d < dim; d++)
            q[d] = (int16_t)((d * 53 + 7) % 255 - 127);
        retrieval__q8_scan(rows, n, dim, q, got);
        for (int r = 0; r < n; r++) {
            int32_t want = 0;
            for (int d = 0; d < dim; d++)
                want += rows[r * dim + d] * q[d];
            CHECK_EQ(got[r], want);
        }
        free(rows), free(q), free(got);
    }
    /* a row comes back within half a step of its scale */
    float v[5] = { 0.5f, -0.25f, 0.125f, 0, -0.5f }, scale;
    int8_t q8[5];
    retrieval__q8_row(v, 5, q8, &scale);
    for (int d = 0; d < 5; d++)
        CHECK(fabsf(q8[d] * scale - v[d]) <= scale / 2 + 1e-7f);
    CHECK_EQ(q8[0], 127);
    CHECK_EQ(q8[4], -127);
}

/* ---- Vector stores ------------------------------------------------------ */

static const char *const DOCS[][3] = {  /* id, text, metadata */
    { "gen1", "In the beginning God created the heaven and the earth. And the earth was "
              "without form, and void; and darkness was upon the face of the deep.",
      "{\"book\": \"Genesis\", \"chapter\": 1, \"law\": true}" },
    { "ps23", "The LORD is my shepherd; I shall not want. He maketh me to lie down in green "
              "pastures: he leadeth me beside the still waters.",
      "{\"book\": \"Psalms\", \"chapter\": 23}" },
    { "john11", "Jesus wept. Then said the Jews, Behold how he loved him!",
      "{\"book\": \"John\", \"chapter\": 11}" },
    { "ex20", "Thou shalt not kill. Thou shalt not commit adultery. Thou shalt not steal.",
      "{\"book\": \"Exodus\", \"chapter\": 20, \"law\": true}" },
    { "prov15", "A soft answer turneth away wrath: but grievous words stir up anger.",
      "{\"book\": \"Proverbs\", \"chapter\": 15}" },
};
enum { N_DOCS = sizeof(DOCS) / sizeof(DOCS[0]) };

static struct retrieval_stores *
open_stores(const char *file)
{
    char path[256], err[256];
    struct retrieval_stores *st = NULL;
    snprintf(path, sizeof(path), "%s/%s", tmpdir, file);
    int rc = retrieval_stores_open(path, engine_model_tokenizer(model), hash, &st, err,
                                   sizeof(err));
    if (rc < 0)
        fprintf(stderr, "%s\n", err);
    CHECK_EQ(rc, 0);
    return st;
}

/* A store holding DOCS; its id into id. */
static struct retrieval_stores *
filled(const char *file, char *id)
{
    struct retrieval_stores *st = open_stores(file);
    struct retrieval_store_info info;
    char err[256];
    CHECK_EQ(retrieval_store_create(st, NULL, "bible", "{\"lang\": \"en\"}", NULL, NULL, 0, 0, &info, err,
                                    sizeof(err)), 0);
    strcpy(id, info.id);
    CHECK_EQ(info.chunk_tokens, 800);
    CHECK_EQ(info.chunk_overlap, 400);
    retrieval_store_info_release(&info);
    struct retrieval_doc d[N_DOCS];
    struct retrieval_doc_added added[N_DOCS];
    for (int i = 0; i < N_DOCS; i++)
        d[i] = (struct retrieval_doc){ DOCS[i][0], DOCS[i][1], strlen(DOCS[i][1]), DOCS[i][2] };
    CHECK_EQ(retrieval_store_add(st, id, d, N_DOCS, added, err, sizeof(err)), 0);
    for (int i = 0; i < N_DOCS; i++) {
        CHECK_STR(added[i].id, DOCS[i][0]);
        CHECK_EQ(added[i].n_chunks, 1);
    }
    return st;
}

/* The top document for text in mode (with filter), or "" if none. */
static const char *
top(struct retrieval_stores *st, const char *id, const char *text, enum retrieval_mode mode,
    const char *filter, float threshold, int *n_hits)
{
    static char best[RETRIEVAL_ID_MAX];
    struct retrieval_query q = { text, NULL, 0, 3, mode, threshold, filter };
    struct retrieval_hit *h = NULL;
    int n = 0;
    char err[256];
    CHECK_EQ(retrieval_search(st, id, &q, &h, &n, err, sizeof(err)), 0);
    snprintf(best, sizeof(best), "%s", n > 0 ? h[0].document : "");
    for (int i = 1; i < n; i++)
        CHECK(h[i].score <= h[i - 1].score);
    if (n_hits != NULL)
        *n_hits = n;
    retrieval_hits_free(h, n);
    return best;
}

static void
test_store_search(void)
{
    char id[RETRIEVAL_ID_MAX];
    struct retrieval_stores *st = filled("search.db", id);
    static const enum retrieval_mode modes[] = { RETRIEVAL_VECTOR, RETRIEVAL_KEYWORD,
                                                 RETRIEVAL_HYBRID };
    for (int m = 0; m < 3; m++) {
        CHECK_STR(top(st, id, "who is my shepherd", modes[m], NULL, 0, NULL), "ps23");
        CHECK_STR(top(st, id, "darkness upon the deep", modes[m], NULL, 0, NULL), "gen1");
        CHECK_STR(top(st, id, "turn away wrath", modes[m], NULL, 0, NULL), "prov15");
    }
    /* filters on the documents' metadata */
    CHECK_STR(top(st, id, "shalt not", RETRIEVAL_HYBRID,
                  "{\"type\": \"eq\", \"key\": \"book\", \"value\": \"Genesis\"}", 0,
                  NULL), "gen1");
    int n = 0;
    top(st, id, "the earth", RETRIEVAL_VECTOR,
        "{\"type\": \"and\", \"filters\": [{\"type\": \"eq\", \"key\": \"law\","
        " \"value\": true}, {\"type\": \"gte\", \"key\": \"chapter\", \"value\": 20}]}",
        0, &n);
    CHECK_EQ(n, 1);                          /* Exodus 20 only */
    top(st, id, "the earth", RETRIEVAL_VECTOR,
        "{\"type\": \"in\", \"key\": \"book\", \"value\": [\"John\", \"Psalms\"]}", 0,
        &n);
    CHECK_EQ(n, 2);
    /* a threshold above every cosine leaves nothing */
    top(st, id, "who is my shepherd", RETRIEVAL_VECTOR, NULL, 0.99f, &n);
    CHECK_EQ(n, 0);
    /* deleting a document takes it out of every mode */
    CHECK_EQ(retrieval_doc_delete(st, id, "ps23"), 0);
    CHECK_EQ(retrieval_doc_delete(st, id, "ps23"), -ENOENT);
    for (int m = 0; m < 3; m++)
        CHECK(strcmp(top(st, id, "who is my shepherd", modes[m], NULL, 0, NULL), "ps23") != 0);
    retrieval_stores_close(st);
}

static void
test_store_reopen(void)
{
    char id[RETRIEVAL_ID_MAX];
    struct retrieval_stores *st = filled("reopen.db", id);
    CHECK_EQ(retrieval_doc_delete(st, id, "john11"), 0);
    retrieval_stores_close(st);
    st = open_stores("reopen.db");
    struct retrieval_store_info info;
    CHECK_EQ(retrieval_store_get(st, id, &info), 0);
    CHECK_STR(info.name, "bible");
    CHECK_STR(info.metadata, "{\"lang\": \"en\"}");
    CHECK_EQ(info.n_documents, N_DOCS - 1);
    CHECK_EQ(info.n_chunks, N_DOCS - 1);
    CHECK(info.usage_bytes > (N_DOCS - 1) * RETRIEVAL_HASH_DIM * 4);
    retrieval_store_info_release(&info);
    struct retrieval_doc_info *docs = NULL;
    int n = 0;
    CHECK_EQ(retrieval_docs_list(st, id, &docs, &n), 0);
    CHECK_EQ(n, N_DOCS - 1);
    for (int i = 0; i < n; i++)
        free(docs[i].metadata);
    free(docs);
    CHECK(strcmp(top(st, id, "Jesus wept", RETRIEVAL_HYBRID, NULL, 0, NULL), "john11") != 0);
    CHECK_STR(top(st, id, "thou shalt not steal", RETRIEVAL_HYBRID, NULL, 0, NULL), "ex20");
    CHECK_EQ(retrieval_store_delete(st, id), 0);
    CHECK_EQ(retrieval_store_get(st, id, &info), -ENOENT);
    CHECK_EQ(retrieval_store_delete(st, id), -ENOENT);
    retrieval_stores_close(st);
    st = open_stores("reopen.db");
    struct retrieval_store_info *all = NULL;
    CHECK_EQ(retrieval_store_list(st, &all, &n), 0);
    CHECK_EQ(n, 0);
    free(all);
    retrieval_stores_close(st);
}

/* A long document in windows of 40 tokens overlapping by 10. */
static void
test_chunking(void)
{
    struct retrieval_stores *st = open_stores("chunks.db");
    struct retrieval_store_info info;
    char err[256], text[4096] = "";
    CHECK_EQ(retrieval_store_create(st, NULL, NULL, NULL, NULL, NULL, 40, 10, &info, err, sizeof(err)), 0);
    for (int i = 0; i < 20; i++)
        strcat(text, "And the LORD spake unto Moses, saying, Speak unto the children. ");
    int32_t *ids = NULL;
    size_t n_ids = 0;
    CHECK_EQ(tokenizer_encode(engine_model_tokenizer(model), text, strlen(text), false, false,
                              &ids, &n_ids), 0);
    free(ids);
    struct retrieval_doc d = { NULL, text, strlen(text), NULL };
    struct retrieval_doc_added added;
    CHECK_EQ(retrieval_store_add(st, info.id, &d, 1, &added, err, sizeof(err)), 0);
    CHECK_EQ(added.n_chunks, (int)((n_ids - 40 + 29) / 30 + 1));
    CHECK(strncmp(added.id, "doc_", 4) == 0 && strlen(added.id) == 28);
    /* bad input */
    struct retrieval_doc empty = { NULL, "   ", 3, NULL }, badid = { "a b", "x", 1, NULL };
    CHECK_EQ(retrieval_store_add(st, info.id, &empty, 1, &added, err, sizeof(err)), -EINVAL);
    CHECK_EQ(retrieval_store_add(st, info.id, &badid, 1, &added, err, sizeof(err)), -EINVAL);
    CHECK_EQ(retrieval_store_add(st, "vs_nope", &d, 1, &added, err, sizeof(err)), -ENOENT);
    CHECK_EQ(retrieval_store_create(st, NULL, NULL, NULL, NULL, NULL, 10, 10, &info, err, sizeof(err)), -EINVAL);
    CHECK_EQ(retrieval_store_create(st, NULL, NULL, NULL, "no place for chunks", NULL, 0, 0, &info, err,
                                    sizeof(err)), -EINVAL);
    struct retrieval_store_info t;
    CHECK_EQ(retrieval_store_create(st, NULL, NULL, NULL, "Sources:\n{chunks}\nEnd.", NULL, 0, 0, &t, err,
                                    sizeof(err)), 0);
    CHECK_STR(t.template, "Sources:\n{chunks}\nEnd.");
    retrieval_store_info_release(&t);
    struct retrieval_query q = { "Moses", NULL, 0, 0, RETRIEVAL_HYBRID, 0, NULL };
    struct retrieval_hit *h = NULL;
    int n = 0;
    CHECK_EQ(retrieval_search(st, info.id, &q, &h, &n, err, sizeof(err)), -EINVAL);
    q.k = 5;
    q.filter = "{\"type\": \"like\"}";
    CHECK_EQ(retrieval_search(st, info.id, &q, &h, &n, err, sizeof(err)), -EINVAL);
    float v[3] = { 1, 0, 0 };
    struct retrieval_query qv = { NULL, v, 3, 5, RETRIEVAL_VECTOR, 0, NULL };
    CHECK_EQ(retrieval_search(st, info.id, &qv, &h, &n, err, sizeof(err)), -EINVAL);
    retrieval_store_info_release(&info);
    retrieval_stores_close(st);
}

int
main(int argc, char **argv)
{
    char path[512], err[512];
    snprintf(path, sizeof(path), "%s/models/kjv-tiny-f32.gguf", test_shared_dir());
    if (retrieval_hash_new(RETRIEVAL_HASH_DIM, &hash) < 0 ||
        engine_model_open(path, &model, err, sizeof(err)) < 0 ||
        test_tmpdir_make(tmpdir, "rtv") < 0) {
        fprintf(stderr, "%s\n0 passed, 1 failed\n", err);
        return 1;
    }
    static const struct check_test tests[] = {
        { "unit_vector", test_unit_vector },
        { "normalisation", test_normalisation },
        { "edges", test_edges },
        { "dimensions", test_dimensions },
        { "word_forms", test_word_forms },
        { "ranking", test_ranking },
        { "q8_scan", test_q8_scan },
        { "store_search", test_store_search },
        { "store_reopen", test_store_reopen },
        { "chunking", test_chunking },
        { NULL, NULL },
    };
    int rc = check_main(tests, argc, argv);
    test_tmpdir_remove(tmpdir);
    engine_model_free(model);
    retrieval_embedder_free(hash);
    return rc;
}
