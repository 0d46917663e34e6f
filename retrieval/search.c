/*
 * search.c - the best chunks of a store for a query.
 *
 * vector: the cosine of the query with every row (one BLAS matrix-vector
 * product over the store's contiguous rows; the rows have length 1), best
 * first. keyword: FTS5's BM25 over the chunk text, the query's words ORed
 * (the score reported is -bm25, higher better). hybrid: both lists (4k
 * candidates each) fused by reciprocal rank, score = sum of 1 / (60 + rank).
 * A filter is checked against each candidate's document metadata once per
 * document; the threshold drops hits scoring below it.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cblas.h>

#include "retrieval_int.h"

#define RRF_K 60

struct cand {
    long long chunk;
    float score;
};

static int
by_score(const void *a, const void *b)
{
    const struct cand *x = a, *y = b;
    return x->score < y->score ? 1 : x->score > y->score ? -1
           : x->chunk < y->chunk ? -1 : x->chunk > y->chunk;
}

/* ---- Filters, once per document ---------------------------------------- */

struct seen {
    char doc[RETRIEVAL_ID_MAX];
    bool pass;
};

/* Whether doc passes f (lock held), remembered in memo (a few documents back). */
static bool
doc_passes(struct retrieval_stores *st, const char *store, const char *doc,
           const struct vs_filter *f, struct seen *memo)
{
    if (f == NULL)
        return true;
    unsigned h = 5381;
    for (const char *p = doc; *p; p++)
        h = h * 33 + (unsigned char)*p;
    struct seen *m = &memo[h % 256];
    if (strcmp(m->doc, doc) == 0)
        return m->pass;
    sqlite3_stmt *s = NULL;
    bool pass = false;
    if (sqlite3_prepare_v2(st->db, "SELECT metadata FROM vs_documents WHERE store = ? AND id = ?",
                           -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_text(s, 1, store, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, doc, -1, SQLITE_STATIC);
        if (sqlite3_step(s) == SQLITE_ROW)
            pass = retrieval__filter_match(f, (const char *)sqlite3_column_text(s, 0));
    }
    sqlite3_finalize(s);
    snprintf(m->doc, sizeof(m->doc), "%s", doc);
    m->pass = pass;
    return pass;
}

/* ---- Vector and keyword candidates ------------------------------------ */

/* Whether a ranks below b: a lower score, or the same and a later row. */
static bool
worse(const struct cand *a, const struct cand *b)
{
    return a->score < b->score || (a->score == b->score && a->chunk > b->chunk);
}

static void
sift_down(struct cand *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(&h[l], &h[m]))
            m = l;
        if (r < n && worse(&h[r], &h[m]))
            m = r;
        if (m == i)
            return;
        struct cand t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* The best m rows of score[0..n) into h (rows in .chunk), best first: how many. */
static int
best_rows(const float *score, long long n, int m, struct cand *h)
{
    int k = 0;
    for (long long r = 0; r < n; r++) {
        struct cand c = { r, score[r] };
        if (k < m) {
            h[k++] = c;
            if (k == m)
                for (int i = m / 2 - 1; i >= 0; i--)
                    sift_down(h, m, i);
        } else if (worse(&h[0], &c)) {
            h[0] = c;
            sift_down(h, m, 0);
        }
    }
    qsort(h, (size_t)k, sizeof(*h), by_score);
    return k;
}

/* score[r] ~ row r . q for every row, from the int8 rows (scan.c). */
static int
approx_scores(const struct vs_index *x, const float *q, float *score)
{
    int8_t *q8 = malloc((size_t)x->dim);
    int16_t *q16 = malloc((size_t)x->dim * sizeof(*q16));
    int32_t *dot = malloc((size_t)x->n * sizeof(*dot));
    int rc = q8 && q16 && dot ? 0 : -ENOMEM;
    if (rc == 0) {
        float qs;
        retrieval__q8_row(q, x->dim, q8, &qs);
        for (int d = 0; d < x->dim; d++)
            q16[d] = q8[d];
        retrieval__q8_scan(x->q8, x->n, x->dim, q16, dot);
        for (long long r = 0; r < x->n; r++)
            score[r] = (float)dot[r] * x->s8[r] * qs;
    }
    free(q8);
    free(q16);
    free(dot);
    return rc;
}

/* The m best rows by the int8 scores, scored again on the float rows, best first. */
static int
rescored(const struct vs_index *x, const float *q, const float *score, long long m,
         struct cand *c)
{
    int got = best_rows(score, x->n, (int)(m < x->n ? m : x->n), c);
    for (int i = 0; i < got; i++)
        c[i].score = cblas_sdot(x->dim, x->vecs + c[i].chunk * x->dim, 1, q, 1);
    qsort(c, (size_t)got, sizeof(*c), by_score);
    return got;
}

/*
 * The best max rows passing f for vector q: 0 with *out / *n (lock held). The
 * int8 scan ranks every row; its best 4 max + 64 are scored again exactly;
 * more of them while the filter leaves too few.
 */
static int
vector_cands(struct retrieval_stores *st, const struct vs_index *x, const float *q, int max,
             const struct vs_filter *f, struct seen *memo, struct cand **out, int *n)
{
    *out = NULL;
    *n = 0;
    if (x->n == 0)
        return 0;
    float *score = malloc((size_t)x->n * sizeof(float));
    struct cand *c = malloc((size_t)x->n * sizeof(*c));
    int rc = score && c ? approx_scores(x, q, score) : -ENOMEM;
    int k = 0;
    for (long long m = 4 * (long long)max + 64; rc == 0 && k < max; m *= 4) {
        int got = rescored(x, q, score, m, c);
        k = 0;
        for (int i = 0; i < got && k < max; i++)
            if (doc_passes(st, x->id, x->docs[c[i].chunk], f, memo))
                c[k++] = (struct cand){ x->ids[c[i].chunk], c[i].score };
        if (m >= x->n)
            break;
    }
    free(score);
    if (rc < 0) {
        free(c);
        return rc;
    }
    *out = c;
    *n = k;
    return 0;
}

/* text's words as an FTS5 query: each quoted, ORed; "" if it has none. */
static char *
fts_query(const char *text)
{
    size_t n = strlen(text), len = 0;
    char *q = malloc(4 * n + 8);      /* a word of one byte: "w" and " OR " */
    if (q == NULL)
        return NULL;
    for (size_t i = 0; i < n;) {
        while (i < n && !((unsigned char)text[i] >= 0x80 || isalnum((unsigned char)text[i])))
            i++;
        size_t a = i;
        while (i < n && ((unsigned char)text[i] >= 0x80 || isalnum((unsigned char)text[i])))
            i++;
        if (i == a)
            break;
        len += (size_t)sprintf(q + len, "%s\"%.*s\"", len ? " OR " : "", (int)(i - a), text + a);
    }
    q[len] = '\0';
    return q;
}

static int
keyword_cands(struct retrieval_stores *st, const char *store, const char *text, int max,
              const struct vs_filter *f, struct seen *memo, struct cand **out, int *n)
{
    *out = NULL;
    *n = 0;
    char *q = text ? fts_query(text) : NULL;
    struct cand *c = malloc((size_t)max * sizeof(*c));
    sqlite3_stmt *s = NULL;
    int rc = q == NULL && text != NULL ? -ENOMEM : c == NULL ? -ENOMEM : 0;
    if (rc == 0 && q != NULL && q[0] != '\0' &&
        sqlite3_prepare_v2(st->db, "SELECT c.id, c.document, bm25(vs_chunks_fts)"
                           " FROM vs_chunks_fts JOIN vs_chunks c ON c.id = vs_chunks_fts.rowid"
                           " WHERE vs_chunks_fts MATCH ? AND c.store = ?"
                           " ORDER BY bm25(vs_chunks_fts), c.id", -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_text(s, 1, q, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, store, -1, SQLITE_STATIC);
        while (*n < max && sqlite3_step(s) == SQLITE_ROW)
            if (doc_passes(st, store, (const char *)sqlite3_column_text(s, 1), f, memo))
                c[(*n)++] = (struct cand){ sqlite3_column_int64(s, 0),
                                           (float)-sqlite3_column_double(s, 2) };
    }
    sqlite3_finalize(s);
    free(q);
    if (rc < 0)
        free(c);
    else
        *out = c;
    return rc;
}

/* Reciprocal-rank fusion of a and b into *out (sorted). */
static int
fuse(const struct cand *a, int na, const struct cand *b, int nb, struct cand **out, int *n)
{
    struct cand *c = malloc((size_t)(na + nb + 1) * sizeof(*c));
    if (c == NULL)
        return -ENOMEM;
    int k = 0;
    for (int i = 0; i < na; i++)
        c[k++] = (struct cand){ a[i].chunk, 1.0f / (RRF_K + i + 1) };
    for (int i = 0; i < nb; i++) {
        int j = 0;
        while (j < na && c[j].chunk != b[i].chunk)
            j++;
        if (j < na)
            c[j].score += 1.0f / (RRF_K + i + 1);
        else
            c[k++] = (struct cand){ b[i].chunk, 1.0f / (RRF_K + i + 1) };
    }
    qsort(c, (size_t)k, sizeof(*c), by_score);
    *out = c;
    *n = k;
    return 0;
}

/* ---- The search -------------------------------------------------------- */

void
retrieval_hits_free(struct retrieval_hit *hits, int n)
{
    for (int i = 0; hits != NULL && i < n; i++) {
        free(hits[i].text);
        free(hits[i].metadata);
    }
    free(hits);
}

/* Fills h from chunk c's row (lock held): 0 or -EIO. */
static int
read_hit(struct retrieval_stores *st, const struct cand *c, struct retrieval_hit *h)
{
    sqlite3_stmt *s = NULL;
    int rc = -EIO;
    if (sqlite3_prepare_v2(st->db, "SELECT c.document, c.seq, c.text, d.metadata FROM vs_chunks c"
                           " JOIN vs_documents d ON d.store = c.store AND d.id = c.document"
                           " WHERE c.id = ?", -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(s, 1, c->chunk);
        if (sqlite3_step(s) == SQLITE_ROW) {
            h->chunk = c->chunk;
            h->score = c->score;
            snprintf(h->document, sizeof(h->document), "%s", sqlite3_column_text(s, 0));
            h->seq = sqlite3_column_int(s, 1);
            h->text = strdup((const char *)sqlite3_column_text(s, 2));
            h->metadata = strdup((const char *)sqlite3_column_text(s, 3));
            rc = h->text && h->metadata ? 0 : -ENOMEM;
        }
    }
    sqlite3_finalize(s);
    return rc;
}

/* The candidate lists of q, fused as its mode says (lock held). */
static int
rank(struct retrieval_stores *st, const struct vs_index *x, const struct retrieval_query *q,
     const float *qv, const struct vs_filter *f, struct cand **out, int *n)
{
    struct seen *memo = calloc(256, sizeof(*memo));
    struct cand *v = NULL, *w = NULL;
    int nv = 0, nw = 0, wide = q->mode == RETRIEVAL_HYBRID ? 4 * q->k : q->k;
    int rc = memo == NULL ? -ENOMEM : 0;
    if (rc == 0 && q->mode != RETRIEVAL_KEYWORD)
        rc = vector_cands(st, x, qv, wide, f, memo, &v, &nv);
    if (rc == 0 && q->mode != RETRIEVAL_VECTOR)
        rc = keyword_cands(st, x->id, q->text, wide, f, memo, &w, &nw);
    free(memo);
    if (rc == 0 && q->mode == RETRIEVAL_HYBRID)
        rc = fuse(v, nv, w, nw, out, n);
    else if (rc == 0)
        *out = q->mode == RETRIEVAL_VECTOR ? v : w, *n = q->mode == RETRIEVAL_VECTOR ? nv : nw;
    if (rc < 0 || q->mode == RETRIEVAL_HYBRID || q->mode == RETRIEVAL_KEYWORD)
        free(v);
    if (rc < 0 || q->mode != RETRIEVAL_KEYWORD)
        free(w);
    return rc;
}

static int
collect(struct retrieval_stores *st, const struct vs_index *x, const struct retrieval_query *q,
        const float *qv, const struct vs_filter *f, struct retrieval_hit **out, int *n)
{
    struct cand *c = NULL;
    int nc = 0, rc = rank(st, x, q, qv, f, &c, &nc);
    struct retrieval_hit *h = rc == 0 ? calloc((size_t)q->k, sizeof(*h)) : NULL;
    if (rc == 0 && h == NULL)
        rc = -ENOMEM;
    for (int i = 0; rc == 0 && i < nc && *n < q->k; i++)
        if (c[i].score >= q->threshold && (rc = read_hit(st, &c[i], &h[*n])) == 0)
            (*n)++;
    free(c);
    if (rc < 0) {
        retrieval_hits_free(h, *n);
        *n = 0;
        return rc;
    }
    *out = h;
    return 0;
}

/* The query's vector into qv (the embedder's dimension), or an error for err. */
static int
query_vector(const struct retrieval_embedder *e, const struct retrieval_query *q, int dim,
             float *qv, char *err, size_t errlen)
{
    if (q->mode == RETRIEVAL_KEYWORD)
        return 0;
    if (q->vector != NULL && q->dim != dim) {
        snprintf(err, errlen, "query: a vector of %d dimensions; the store's have %d", q->dim,
                 dim);
        return -EINVAL;
    }
    if (q->vector != NULL) {
        memcpy(qv, q->vector, (size_t)dim * sizeof(float));
        return 0;
    }
    if (retrieval_embedder_dim(e) != dim) {
        snprintf(err, errlen, "the store's vectors have %d dimensions, the embedder's %d", dim,
                 retrieval_embedder_dim(e));
        return -EINVAL;
    }
    return retrieval_embed(e, q->text, strlen(q->text), qv, NULL);
}

int
retrieval_search(struct retrieval_stores *st, const char *id, const struct retrieval_query *q,
                 struct retrieval_hit **out, int *n, char *err, size_t errlen)
{
    *out = NULL;
    *n = 0;
    struct retrieval_store_info info;
    const struct retrieval_embedder *e = NULL;
    int rc = retrieval__store_shape(st, id, &info, &e, err, errlen);
    if (rc < 0)
        return rc;
    if (q->k < 1 || q->k > 50 || (q->text == NULL && q->vector == NULL) ||
        (q->text == NULL && q->mode != RETRIEVAL_VECTOR)) {
        snprintf(err, errlen, q->k < 1 || q->k > 50 ? "max_num_results: 1 to 50"
                 : "query: text is needed for keyword and hybrid search");
        return -EINVAL;
    }
    struct vs_filter *f = NULL;
    float *qv = malloc((size_t)info.dim * sizeof(float));
    if (qv == NULL)
        return -ENOMEM;
    if ((rc = retrieval__filter_parse(q->filter, &f, err, errlen)) == 0 &&
        (rc = query_vector(e, q, info.dim, qv, err, errlen)) == 0) {
        pthread_mutex_lock(&st->lock);
        struct vs_index *x = retrieval__index(st, id);
        rc = x == NULL ? -ENOENT : collect(st, x, q, qv, f, out, n);
        pthread_mutex_unlock(&st->lock);
        if (rc < 0)
            snprintf(err, errlen, "vector store '%s': %s", id, rc == -ENOENT ? "deleted"
                     : rc == -ENOMEM ? "out of memory" : "cannot read it");
    }
    retrieval__filter_free(f);
    free(qv);
    return rc;
}
