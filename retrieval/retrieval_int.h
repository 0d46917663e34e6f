/*
 * retrieval_int.h - what the files of retrieval/ share: the stores object,
 * each store's in-memory vectors, chunking and filters.
 */
#ifndef LORASERVE_RETRIEVAL_INT_H
#define LORASERVE_RETRIEVAL_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include "retrieval.h"

/* One store's vectors in memory: row r is chunk ids[r] of document docs[r]. */
struct vs_index {
    char id[RETRIEVAL_ID_MAX];
    int dim, chunk_tokens, chunk_overlap;
    const struct retrieval_embedder *e;     /* NULL: its embedder is not here (this run) */
    char embedder[64];                      /* the embedder's kind, as recorded */
    char *template;                         /* the context template, or NULL */
    char owner[RETRIEVAL_ID_MAX];           /* whose it is: "" shared */
    long long n, cap;
    float *vecs;                            /* (cap, dim) */
    int8_t *q8;                             /* (cap, dim) the rows as int8 (scan.c) */
    float *s8;                              /* (cap) their scales */
    long long *ids;                         /* (cap) chunk ids */
    char (*docs)[RETRIEVAL_ID_MAX];         /* (cap) document ids */
};

struct retrieval_stores {
    pthread_mutex_t lock;                   /* the connection and the indexes */
    sqlite3 *db;
    const struct tokenizer *tok;
    const struct retrieval_embedder *e[8];  /* (n_e) by kind; e[0] the default */
    int n_e;
    struct vs_index *idx;                   /* (n_idx) one per store */
    int n_idx;
    char why[256];                          /* the last failed change's SQLite message */
};

/*
 * Store id's dimension and chunking (from memory) and its embedder; -ENOENT,
 * or -EINVAL when its embedder is not in this run (err says why).
 */
int retrieval__store_shape(struct retrieval_stores *st, const char *id,
                           struct retrieval_store_info *info,
                           const struct retrieval_embedder **e, char *err, size_t errlen);
/* The embedder of kind, or NULL. */
const struct retrieval_embedder *retrieval__embedder(const struct retrieval_stores *st,
                                                     const char *kind);
/* The index of store id, or NULL (lock held). */
struct vs_index *retrieval__index(struct retrieval_stores *st, const char *id);
/* Appends a row (lock held): 0 or -ENOMEM. */
int retrieval__index_add(struct vs_index *x, long long chunk, const char *doc, const float *v);
/* Drops the rows of document doc (lock held). */
void retrieval__index_drop_doc(struct vs_index *x, const char *doc);

/* v as int8 q[0..dim) with *scale: v ~ *scale * q. */
void retrieval__q8_row(const float *v, int dim, int8_t *q, float *scale);
/* out[r] = sum_d rows[r * dim + d] * q[d] for r < n (AVX2 when the CPU has it). */
void retrieval__q8_scan(const int8_t *rows, long long n, int dim, const int16_t *q,
                        int32_t *out);

/* One chunk of a document: its text (malloc'd) and its embedding. */
struct vs_chunk {
    char *text;
    size_t len;
    float *vec;
};
/*
 * Cuts text[0..len) into windows of size tokens overlapping by overlap, as
 * tok tokenizes it, and embeds each with e: 0 with *out (n, free with
 * retrieval__chunks_free), -EINVAL (no tokens: an empty document), -EILSEQ,
 * -ENOMEM.
 */
int retrieval__chunk(const struct tokenizer *tok, const struct retrieval_embedder *e,
                     const char *text, size_t len, int size, int overlap, struct vs_chunk **out,
                     int *n);
void retrieval__chunks_free(struct vs_chunk *c, int n);

/*
 * OpenAI's filter object (comparison: type eq ne gt gte lt lte in nin, key,
 * value; compound: type and or, filters), parsed from JSON text.
 */
struct vs_filter;
/* 0 with *out (NULL for no filter), or -EINVAL with err saying why. */
int retrieval__filter_parse(const char *json, struct vs_filter **out, char *err, size_t errlen);
/* Whether a document's metadata (a JSON object's text) passes f (NULL passes all). */
bool retrieval__filter_match(const struct vs_filter *f, const char *metadata);
void retrieval__filter_free(struct vs_filter *f);

/* out = prefix and 24 random hex digits (out holds RETRIEVAL_ID_MAX). */
void retrieval__make_id(const char *prefix, char *out);
/* A SQL statement run to its end with text binds: 0 or -EIO (lock held). */
int retrieval__exec(sqlite3 *db, const char *sql, int n, const char *const *binds);

#endif
