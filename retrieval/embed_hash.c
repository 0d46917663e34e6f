/*
 * embed_hash.c - the hash embedder (see retrieval.h): signed feature hashing
 * of a text's words, word pairs and character trigrams.
 *
 * The text is normalised by utf8proc (NFKC, case fold, marks stripped:
 * "Café", "CAFE\u0301" and "cafe" are one word) and cut into words: runs of
 * Unicode letters and digits. Function words ("the", "unto", ...) are set
 * aside unless nothing else is left, so they neither pull unrelated texts
 * together nor break a pair. Feature weights: a word 1, a pair of
 * neighbouring words 0.7, each trigram of "^word$" 0.25 (so "create" and
 * "created" share most of theirs). Each feature's XXH3 hash (seeded by its
 * kind) picks a dimension (hash mod dim) and a sign (the top bit), so
 * collisions cancel on average instead of piling up. The sums are damped by
 * a square root (a word said ten times is not ten times the topic) and the
 * vector scaled to length 1.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
#include <xxhash.h>

#include "retrieval.h"

#define WORD_MAX 128        /* bytes of a word that count; longer words are cut */

enum { SEED_WORD = 1, SEED_PAIR = 2, SEED_TRIGRAM = 3 };

struct retrieval_embedder {
    int dim;
    char kind[64];
    retrieval_embed_fn fn;          /* NULL: the hash embedder */
    void *arg;
};

/* Sorted, for bsearch: English function words, with the older forms the KJV uses. */
static const char *const STOP[] = {
    "a", "about", "after", "all", "also", "am", "an", "and", "any", "are", "art", "as", "at",
    "be", "because", "been", "before", "being", "but", "by", "can", "could", "did", "do",
    "does", "doth", "for", "from", "had", "has", "hast", "hath", "have", "he", "her", "him",
    "his", "how", "i", "if", "in", "into", "is", "it", "its", "me", "more", "my", "no", "nor",
    "not", "now", "o", "of", "on", "one", "or", "our", "out", "over", "said", "saith", "shall",
    "shalt", "she", "should", "so", "some", "such", "than", "that", "the", "thee", "their",
    "them", "then", "there", "these", "they", "thine", "this", "those", "thou", "thus", "thy",
    "to", "unto", "up", "upon", "us", "was", "we", "were", "what", "when", "which", "who",
    "whom", "why", "will", "with", "would", "ye", "yet", "you", "your",
};

struct span {
    size_t at, len;
};

static int
cmp_stop(const void *key, const void *elem)
{
    return strcmp(key, *(const char *const *)elem);
}

static bool
is_stop(const char *w, size_t len)
{
    char buf[16];
    if (len >= sizeof(buf))
        return false;
    memcpy(buf, w, len);
    buf[len] = '\0';
    return bsearch(buf, STOP, sizeof(STOP) / sizeof(STOP[0]), sizeof(STOP[0]), cmp_stop) != NULL;
}

static bool
word_char(utf8proc_int32_t c)
{
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return true;
    default:
        return false;
    }
}

/* Appends the words of s[0..n) (normalised UTF-8) to *w; returns how many, or -ENOMEM. */
static long
split_words(const uint8_t *s, size_t n, struct span **w, size_t *cap)
{
    size_t count = 0, at = 0;
    bool in = false;
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t step = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &c);
        if (step <= 0) /* normalised text is valid; be safe anyway */
            step = 1, c = -1;
        bool wc = c >= 0 && word_char(c);
        if (wc && !in)
            at = i;
        if ((!wc && in) || (wc && i + (size_t)step == n)) {
            size_t end = wc ? n : i;
            if (count == *cap) {
                size_t ncap = *cap ? 2 * *cap : 64;
                struct span *p = realloc(*w, ncap * sizeof(*p));
                if (p == NULL)
                    return -ENOMEM;
                *w = p;
                *cap = ncap;
            }
            (*w)[count++] = (struct span){ at, end - at < WORD_MAX ? end - at : WORD_MAX };
        }
        in = wc;
        i += (size_t)step;
    }
    return (long)count;
}

static void
add_feature(float *v, int dim, const void *p, size_t len, uint64_t seed, float weight)
{
    uint64_t h = XXH3_64bits_withSeed(p, len, seed);
    v[h % (uint64_t)dim] += (h >> 63) ? -weight : weight;
}

/* The trigrams of "^word$", by code point. */
static void
add_trigrams(float *v, int dim, const uint8_t *word, size_t len)
{
    uint8_t buf[WORD_MAX + 2];
    size_t at[WORD_MAX + 3], n = 0, i = 0;
    buf[0] = '^';
    memcpy(buf + 1, word, len);
    buf[len + 1] = '$';
    len += 2;
    while (i < len) {
        at[n++] = i;
        utf8proc_int32_t c;
        utf8proc_ssize_t step = utf8proc_iterate(buf + i, (utf8proc_ssize_t)(len - i), &c);
        i += step > 0 ? (size_t)step : 1;
    }
    at[n] = len;
    for (size_t k = 0; k + 3 <= n; k++)
        add_feature(v, dim, buf + at[k], at[k + 3] - at[k], SEED_TRIGRAM, 0.25f);
}

/* The features of the words keep[0..n) of s. */
static void
add_words(float *v, int dim, const uint8_t *s, const struct span *keep, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const uint8_t *w = s + keep[i].at;
        add_feature(v, dim, w, keep[i].len, SEED_WORD, 1.0f);
        add_trigrams(v, dim, w, keep[i].len);
        if (i + 1 < n) {
            uint8_t pair[2 * WORD_MAX + 1];
            memcpy(pair, w, keep[i].len);
            pair[keep[i].len] = ' ';
            memcpy(pair + keep[i].len + 1, s + keep[i + 1].at, keep[i + 1].len);
            add_feature(v, dim, pair, keep[i].len + 1 + keep[i + 1].len, SEED_PAIR, 0.7f);
        }
    }
}

static void
damp_and_normalise(float *v, int dim)
{
    double norm = 0;
    for (int i = 0; i < dim; i++) {
        v[i] = copysignf(sqrtf(fabsf(v[i])), v[i]);
        norm += (double)v[i] * v[i];
    }
    if (norm > 0) {
        float inv = (float)(1.0 / sqrt(norm));
        for (int i = 0; i < dim; i++)
            v[i] *= inv;
    }
}

/* Drops the function words of w[0..n) (in place) unless they are all there is. */
static size_t
drop_stop_words(const uint8_t *s, struct span *w, size_t n)
{
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        kept += !is_stop((const char *)s + w[i].at, w[i].len);
    if (kept == 0)
        return n;
    kept = 0;
    for (size_t i = 0; i < n; i++)
        if (!is_stop((const char *)s + w[i].at, w[i].len))
            w[kept++] = w[i];
    return kept;
}

int
retrieval_embed(const struct retrieval_embedder *e, const char *text, size_t n, float *out,
                int *n_tokens)
{
    memset(out, 0, (size_t)e->dim * sizeof(float));
    if (n_tokens != NULL)
        *n_tokens = 0;
    if (e->fn != NULL)
        return e->fn(e->arg, text, n, out, n_tokens);
    if (n == 0)
        return 0;
    utf8proc_uint8_t *norm = NULL;
    utf8proc_ssize_t len = utf8proc_map((const utf8proc_uint8_t *)text, (utf8proc_ssize_t)n,
                                        &norm, UTF8PROC_STABLE | UTF8PROC_COMPAT |
                                        UTF8PROC_COMPOSE | UTF8PROC_CASEFOLD |
                                        UTF8PROC_STRIPMARK);
    if (len < 0)
        return len == UTF8PROC_ERROR_NOMEM ? -ENOMEM : -EILSEQ;
    struct span *w = NULL;
    size_t cap = 0;
    long count = split_words(norm, (size_t)len, &w, &cap);
    if (count >= 0) {
        if (n_tokens != NULL)
            *n_tokens = count > INT32_MAX ? INT32_MAX : (int)count;
        size_t kept = drop_stop_words(norm, w, (size_t)count);
        add_words(out, e->dim, norm, w, kept);
        damp_and_normalise(out, e->dim);
    }
    free(w);
    free(norm);
    return count < 0 ? (int)count : 0;
}

int
retrieval_hash_new(int dim, struct retrieval_embedder **out)
{
    *out = NULL;
    if (dim < 1 || dim > RETRIEVAL_DIM_MAX)
        return -EINVAL;
    struct retrieval_embedder *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -ENOMEM;
    e->dim = dim;
    snprintf(e->kind, sizeof(e->kind), "hash");
    *out = e;
    return 0;
}

int
retrieval_fn_new(const char *kind, int dim, retrieval_embed_fn fn, void *arg,
                 struct retrieval_embedder **out)
{
    *out = NULL;
    if (dim < 1 || dim > RETRIEVAL_DIM_MAX || fn == NULL || strlen(kind) >= 64 || !kind[0])
        return -EINVAL;
    struct retrieval_embedder *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -ENOMEM;
    *e = (struct retrieval_embedder){ dim, "", fn, arg };
    snprintf(e->kind, sizeof(e->kind), "%s", kind);
    *out = e;
    return 0;
}

void
retrieval_embedder_free(struct retrieval_embedder *e)
{
    free(e);
}

int
retrieval_embedder_dim(const struct retrieval_embedder *e)
{
    return e->dim;
}

const char *
retrieval_embedder_kind(const struct retrieval_embedder *e)
{
    return e->kind;
}
