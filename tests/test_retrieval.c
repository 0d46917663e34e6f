/*
 * test_retrieval.c - the hash embedder: unit vectors, determinism, Unicode
 * normalisation, bad input, dimensions, and that a question ranks the verse
 * holding its key words first.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "retrieval.h"

static struct retrieval_embedder *hash;

static float *
embed(const char *text, int *n_tokens)
{
    float *v = malloc(RETRIEVAL_HASH_DIM * sizeof(float));
    CHECK_EQ(retrieval_embed(hash, text, strlen(text), v, n_tokens), 0);
    return v;
}

static double
dot(const float *a, const float *b, int n)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

static void
test_unit_vector(void)
{
    int n = -1;
    float *v = embed("In the beginning God created the heaven and the earth.", &n);
    CHECK_EQ(n, 10);
    CHECK(fabs(dot(v, v, RETRIEVAL_HASH_DIM) - 1.0) < 1e-5);
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
    CHECK(dot(v, v, RETRIEVAL_HASH_DIM) == 0);
    CHECK_EQ(retrieval_embed(hash, "!!! ... ???", 11, v, &n), 0);
    CHECK_EQ(n, 0);
    CHECK(dot(v, v, RETRIEVAL_HASH_DIM) == 0);
    /* only function words: they are all there is, so they count */
    CHECK_EQ(retrieval_embed(hash, "and the of", 10, v, &n), 0);
    CHECK_EQ(n, 3);
    CHECK(fabs(dot(v, v, RETRIEVAL_HASH_DIM) - 1.0) < 1e-5);
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
    CHECK(dot(a, b, RETRIEVAL_HASH_DIM) > 0.3);
    CHECK(fabs(dot(a, c, RETRIEVAL_HASH_DIM)) < 0.2);
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
            if (dot(q, v[i], RETRIEVAL_HASH_DIM) > dot(q, v[best], RETRIEVAL_HASH_DIM))
                best = i;
        if (best != qs[k].want)
            fprintf(stderr, "\"%s\": top hit %d, want %d\n", qs[k].q, best, qs[k].want);
        CHECK_EQ(best, qs[k].want);
        free(q);
    }
    for (int i = 0; i < NV; i++)
        free(v[i]);
}

int
main(int argc, char **argv)
{
    if (retrieval_hash_new(RETRIEVAL_HASH_DIM, &hash) < 0) {
        fprintf(stderr, "cannot make the hash embedder\n0 passed, 1 failed\n");
        return 1;
    }
    static const struct check_test tests[] = {
        { "unit_vector", test_unit_vector },
        { "normalisation", test_normalisation },
        { "edges", test_edges },
        { "dimensions", test_dimensions },
        { "word_forms", test_word_forms },
        { "ranking", test_ranking },
        { NULL, NULL },
    };
    int rc = check_main(tests, argc, argv);
    retrieval_embedder_free(hash);
    return rc;
}
