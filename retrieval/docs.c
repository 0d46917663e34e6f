/*
 * docs.c - the documents of a vector store: adding a batch in one
 * transaction, listing, deleting.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "retrieval_int.h"

/* A document id: 1 to 63 of A-Z a-z 0-9 . _ : - */
static bool
doc_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n >= RETRIEVAL_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-", id[i]))
            return false;
    return true;
}

static bool
blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strchr(" \t\r\n\f\v", s[i]) || s[i] == '\0')
            return false;
    return true;
}

/* Chunks and embeds every document (no lock): 0, or the first failure with err. */
static int
prepare(struct retrieval_stores *st, const struct retrieval_embedder *e,
        const struct retrieval_store_info *info, const struct retrieval_doc *docs, int n,
        struct vs_chunk **chunks, int *counts, char *err, size_t errlen)
{
    for (int i = 0; i < n; i++) {
        if (docs[i].id != NULL && !doc_id_valid(docs[i].id)) {
            snprintf(err, errlen, "documents[%d].id: 1 to %d of A-Z a-z 0-9 . _ : -", i,
                     RETRIEVAL_ID_MAX - 1);
            return -EINVAL;
        }
        int rc = blank(docs[i].text, docs[i].len) ? -EINVAL
                 : retrieval__chunk(st->tok, e, docs[i].text, docs[i].len,
                                    info->chunk_tokens, info->chunk_overlap, &chunks[i],
                                    &counts[i]);
        if (rc < 0) {
            snprintf(err, errlen, "documents[%d].text: %s", i, rc == -EINVAL ? "empty"
                     : rc == -EILSEQ ? "not valid UTF-8" : "out of memory");
            return rc;
        }
    }
    return 0;
}

/* Writes document i and its chunks (transaction open); chunk ids into ids. */
static int
write_doc(struct retrieval_stores *st, const char *store, const struct retrieval_doc *d,
          const char *id, const struct vs_chunk *c, int n, int dim, long long *ids)
{
    const char *b[] = { store, id };
    int rc = retrieval__exec(st->db, "DELETE FROM vs_chunks WHERE store = ? AND document = ?",
                             2, b);
    if (rc == 0)
        rc = retrieval__exec(st->db, "DELETE FROM vs_documents WHERE store = ? AND id = ?", 2, b);
    sqlite3_stmt *s = NULL;
    if (rc == 0 && sqlite3_prepare_v2(st->db, "INSERT INTO vs_documents VALUES (?, ?, ?, ?, ?, ?)",
                                      -1, &s, NULL) == SQLITE_OK) {
        sqlite3_bind_text(s, 1, store, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 3, d->text, (int)d->len, SQLITE_STATIC);
        sqlite3_bind_text(s, 4, d->metadata ? d->metadata : "{}", -1, SQLITE_STATIC);
        sqlite3_bind_int64(s, 5, (long long)time(NULL));
        sqlite3_bind_int(s, 6, n);
        rc = sqlite3_step(s) == SQLITE_DONE ? 0 : -EIO;
    }
    sqlite3_finalize(s);
    s = NULL;
    if (rc == 0 && sqlite3_prepare_v2(st->db, "INSERT INTO vs_chunks (store, document, seq, text,"
                                      " embedding) VALUES (?, ?, ?, ?, ?)", -1, &s, NULL) != SQLITE_OK)
        rc = -EIO;
    for (int k = 0; k < n && rc == 0; k++) {
        sqlite3_bind_text(s, 1, store, -1, SQLITE_STATIC);
        sqlite3_bind_text(s, 2, id, -1, SQLITE_STATIC);
        sqlite3_bind_int(s, 3, k);
        sqlite3_bind_text(s, 4, c[k].text, (int)c[k].len, SQLITE_STATIC);
        sqlite3_bind_blob(s, 5, c[k].vec, dim * (int)sizeof(float), SQLITE_STATIC);
        rc = sqlite3_step(s) == SQLITE_DONE ? 0 : -EIO;
        ids[k] = sqlite3_last_insert_rowid(st->db);
        sqlite3_reset(s);
    }
    sqlite3_finalize(s);
    return rc;
}

/*
 * The batch in one transaction, then the rows in memory (lock held).
 * BEGIN IMMEDIATE, as everywhere a change starts: a plain BEGIN takes its write
 * lock only at the first write, and if another connection (the registry, the
 * tenants) writes then, SQLite answers SQLITE_BUSY at once, whatever the busy
 * timeout; IMMEDIATE waits for the lock up front.
 */
static int
commit_batch(struct retrieval_stores *st, const char *store, const struct retrieval_doc *docs,
             int n, struct vs_chunk **chunks, const int *counts, struct retrieval_doc_added *out)
{
    struct vs_index *x = retrieval__index(st, store);
    if (x == NULL)
        return -ENOENT;
    long long total = 0;
    for (int i = 0; i < n; i++)
        total += counts[i];
    long long *ids = malloc((size_t)(total ? total : 1) * sizeof(*ids));
    int rc = ids == NULL ? -ENOMEM : retrieval__exec(st->db, "BEGIN IMMEDIATE", 0, NULL);
    for (int i = 0, at = 0; i < n && rc == 0; at += counts[i++]) {
        if (docs[i].id == NULL)
            retrieval__make_id("doc_", out[i].id);
        else
            snprintf(out[i].id, RETRIEVAL_ID_MAX, "%s", docs[i].id);
        out[i].n_chunks = counts[i];
        rc = write_doc(st, store, &docs[i], out[i].id, chunks[i], counts[i], x->dim, ids + at);
    }
    if (rc == 0)
        rc = retrieval__exec(st->db, "COMMIT", 0, NULL);
    if (rc < 0 && ids != NULL) { /* the reason first: ROLLBACK would overwrite it */
        snprintf(st->why, sizeof(st->why), "%s", sqlite3_errmsg(st->db));
        retrieval__exec(st->db, "ROLLBACK", 0, NULL);
    }
    for (int i = 0, at = 0; i < n && rc == 0; at += counts[i++]) {
        retrieval__index_drop_doc(x, out[i].id);
        for (int k = 0; k < counts[i] && rc == 0; k++)
            rc = retrieval__index_add(x, ids[at + k], out[i].id, chunks[i][k].vec);
    }
    free(ids);
    return rc;
}

int
retrieval_store_add(struct retrieval_stores *st, const char *id,
                    const struct retrieval_doc *docs, int n, struct retrieval_doc_added *out,
                    char *err, size_t errlen)
{
    struct retrieval_store_info info;
    const struct retrieval_embedder *e = NULL;
    int rc = retrieval__store_shape(st, id, &info, &e, err, errlen);
    if (rc < 0)
        return rc;
    struct vs_chunk **chunks = calloc((size_t)n, sizeof(*chunks));
    int *counts = calloc((size_t)n, sizeof(*counts));
    rc = chunks == NULL || counts == NULL ? -ENOMEM
         : prepare(st, e, &info, docs, n, chunks, counts, err, errlen);
    if (rc == 0) {
        pthread_mutex_lock(&st->lock);
        rc = commit_batch(st, id, docs, n, chunks, counts, out);
        if (rc < 0)
            snprintf(err, errlen, "vector store '%s': %s", id, rc == -ENOENT ? "deleted"
                     : rc == -ENOMEM ? "out of memory" : st->why);
        pthread_mutex_unlock(&st->lock);
    }
    for (int i = 0; chunks != NULL && i < n; i++)
        retrieval__chunks_free(chunks[i], counts[i]);
    free(chunks);
    free(counts);
    return rc;
}

int
retrieval_docs_list(struct retrieval_stores *st, const char *id, struct retrieval_doc_info **out,
                    int *n)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *s = NULL;
    pthread_mutex_lock(&st->lock);
    int rc = retrieval__index(st, id) == NULL ? -ENOENT
             : sqlite3_prepare_v2(st->db, "SELECT id, metadata, created_at,"
                                  " length(CAST(text AS BLOB)), n_chunks FROM vs_documents"
                                  " WHERE store = ? ORDER BY created_at, rowid", -1, &s, NULL)
                 == SQLITE_OK ? 0 : -EIO;
    if (rc == 0)
        sqlite3_bind_text(s, 1, id, -1, SQLITE_STATIC);
    for (int cap = 0; rc == 0 && sqlite3_step(s) == SQLITE_ROW;) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            struct retrieval_doc_info *p = realloc(*out, (size_t)cap * sizeof(*p));
            if (p == NULL) {
                rc = -ENOMEM;
                break;
            }
            *out = p;
        }
        struct retrieval_doc_info *d = &(*out)[(*n)++];
        snprintf(d->id, sizeof(d->id), "%s", (const char *)sqlite3_column_text(s, 0));
        d->metadata = strdup((const char *)sqlite3_column_text(s, 1));
        d->created_at = sqlite3_column_int64(s, 2);
        d->bytes = sqlite3_column_int64(s, 3);
        d->n_chunks = sqlite3_column_int(s, 4);
    }
    sqlite3_finalize(s);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int
retrieval_doc_delete(struct retrieval_stores *st, const char *id, const char *doc_id)
{
    const char *b[] = { id, doc_id };
    pthread_mutex_lock(&st->lock);
    struct vs_index *x = retrieval__index(st, id);
    int rc = x == NULL ? -ENOENT : retrieval__exec(st->db, "BEGIN IMMEDIATE", 0, NULL);
    if (rc == 0 && (rc = retrieval__exec(st->db, "DELETE FROM vs_chunks WHERE store = ? AND"
                                         " document = ?", 2, b)) == 0 &&
        (rc = retrieval__exec(st->db, "DELETE FROM vs_documents WHERE store = ? AND id = ?",
                              2, b)) == 0)
        rc = sqlite3_changes(st->db) == 0 ? -ENOENT : retrieval__exec(st->db, "COMMIT", 0, NULL);
    if (rc < 0 && x != NULL)
        retrieval__exec(st->db, "ROLLBACK", 0, NULL);
    if (rc == 0)
        retrieval__index_drop_doc(x, doc_id);
    pthread_mutex_unlock(&st->lock);
    return rc;
}
