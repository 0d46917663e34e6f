/*
 * store.c - vector stores in SQLite: the schema, stores and documents, and
 * each store's vectors kept in memory (see retrieval.h).
 *
 * Adding documents chunks and embeds them first, without the lock; then one
 * transaction writes the documents and chunks (FTS5 follows by trigger), and
 * only once it has committed do the in-memory rows change, so a failed or
 * interrupted batch leaves both as they were.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/rand.h>

#include "retrieval_int.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS vector_stores (id TEXT PRIMARY KEY, name TEXT,"
    " metadata TEXT NOT NULL, created_at INTEGER NOT NULL, chunk_tokens INTEGER NOT NULL,"
    " chunk_overlap INTEGER NOT NULL, dim INTEGER NOT NULL, template TEXT,"
    " embedder TEXT NOT NULL DEFAULT 'hash', owner TEXT NOT NULL DEFAULT '');"
    "CREATE TABLE IF NOT EXISTS vs_documents (store TEXT NOT NULL, id TEXT NOT NULL,"
    " text TEXT NOT NULL, metadata TEXT NOT NULL, created_at INTEGER NOT NULL,"
    " n_chunks INTEGER NOT NULL, PRIMARY KEY (store, id));"
    "CREATE TABLE IF NOT EXISTS vs_chunks (id INTEGER PRIMARY KEY, store TEXT NOT NULL,"
    " document TEXT NOT NULL, seq INTEGER NOT NULL, text TEXT NOT NULL, embedding BLOB NOT NULL);"
    "CREATE INDEX IF NOT EXISTS vs_chunks_doc ON vs_chunks (store, document);"
    "CREATE VIRTUAL TABLE IF NOT EXISTS vs_chunks_fts USING fts5(text, content='vs_chunks',"
    " content_rowid='id', tokenize='unicode61 remove_diacritics 2');"
    "CREATE TRIGGER IF NOT EXISTS vs_chunks_ai AFTER INSERT ON vs_chunks BEGIN"
    " INSERT INTO vs_chunks_fts (rowid, text) VALUES (new.id, new.text); END;"
    "CREATE TRIGGER IF NOT EXISTS vs_chunks_ad AFTER DELETE ON vs_chunks BEGIN"
    " INSERT INTO vs_chunks_fts (vs_chunks_fts, rowid, text) VALUES ('delete', old.id, old.text);"
    " END;";

int
retrieval__exec(sqlite3 *db, const char *sql, int n, const char *const *binds)
{
    sqlite3_stmt *s = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &s, NULL);
    for (int i = 0; i < n && rc == SQLITE_OK; i++)
        rc = sqlite3_bind_text(s, i + 1, binds[i], -1, SQLITE_STATIC);
    while (rc == SQLITE_OK || rc == SQLITE_ROW)
        rc = sqlite3_step(s);
    sqlite3_finalize(s);
    return rc == SQLITE_DONE ? 0 : -EIO;
}

void
retrieval__make_id(const char *prefix, char *out)
{
    unsigned char r[12];
    if (RAND_bytes(r, sizeof(r)) != 1)
        for (size_t i = 0; i < sizeof(r); i++)
            r[i] = (unsigned char)rand();
    int n = snprintf(out, RETRIEVAL_ID_MAX, "%s", prefix);
    for (size_t i = 0; i < sizeof(r); i++)
        n += snprintf(out + n, RETRIEVAL_ID_MAX - (size_t)n, "%02x", r[i]);
}

/* ---- In-memory rows --------------------------------------------------- */

struct vs_index *
retrieval__index(struct retrieval_stores *st, const char *id)
{
    for (int i = 0; i < st->n_idx; i++)
        if (strcmp(st->idx[i].id, id) == 0)
            return &st->idx[i];
    return NULL;
}

int
retrieval__index_add(struct vs_index *x, long long chunk, const char *doc, const float *v)
{
    if (x->n == x->cap) {
        long long cap = x->cap ? 2 * x->cap : 256;
        float *vecs = realloc(x->vecs, (size_t)cap * (size_t)x->dim * sizeof(float));
        if (vecs != NULL)
            x->vecs = vecs;
        long long *ids = realloc(x->ids, (size_t)cap * sizeof(*ids));
        if (ids != NULL)
            x->ids = ids;
        char (*docs)[RETRIEVAL_ID_MAX] = realloc(x->docs, (size_t)cap * sizeof(*docs));
        if (docs != NULL)
            x->docs = docs;
        int8_t *q8 = realloc(x->q8, (size_t)cap * (size_t)x->dim);
        if (q8 != NULL)
            x->q8 = q8;
        float *s8 = realloc(x->s8, (size_t)cap * sizeof(float));
        if (s8 != NULL)
            x->s8 = s8;
        if (vecs == NULL || ids == NULL || docs == NULL || q8 == NULL || s8 == NULL)
            return -ENOMEM;
        x->cap = cap;
    }
    memcpy(x->vecs + x->n * x->dim, v, (size_t)x->dim * sizeof(float));
    retrieval__q8_row(v, x->dim, x->q8 + x->n * x->dim, &x->s8[x->n]);
    x->ids[x->n] = chunk;
    snprintf(x->docs[x->n], RETRIEVAL_ID_MAX, "%s", doc);
    x->n++;
    return 0;
}

void
retrieval__index_drop_doc(struct vs_index *x, const char *doc)
{
    long long w = 0;
    for (long long r = 0; r < x->n; r++) {
        if (strcmp(x->docs[r], doc) == 0)
            continue;
        if (w != r) {
            memcpy(x->vecs + w * x->dim, x->vecs + r * x->dim, (size_t)x->dim * sizeof(float));
            memcpy(x->q8 + w * x->dim, x->q8 + r * x->dim, (size_t)x->dim);
            x->s8[w] = x->s8[r];
            x->ids[w] = x->ids[r];
            memcpy(x->docs[w], x->docs[r], RETRIEVAL_ID_MAX);
        }
        w++;
    }
    x->n = w;
}

static void
index_release(struct vs_index *x)
{
    free(x->template);
    free(x->vecs);
    free(x->q8);
    free(x->s8);
    free(x->ids);
    free(x->docs);
}

const struct retrieval_embedder *
retrieval__embedder(const struct retrieval_stores *st, const char *kind)
{
    for (int i = 0; i < st->n_e; i++)
        if (strcmp(retrieval_embedder_kind(st->e[i]), kind) == 0)
            return st->e[i];
    return NULL;
}

int
retrieval_stores_add_embedder(struct retrieval_stores *st, const struct retrieval_embedder *e)
{
    if (retrieval__embedder(st, retrieval_embedder_kind(e)) != NULL)
        return -EINVAL;
    if (st->n_e == (int)(sizeof(st->e) / sizeof(st->e[0])))
        return -ENOSPC;
    st->e[st->n_e++] = e;
    for (int i = 0; i < st->n_idx; i++) /* stores opened before it was here */
        if (st->idx[i].e == NULL && st->idx[i].embedder[0] &&
            strcmp(st->idx[i].embedder, retrieval_embedder_kind(e)) == 0 &&
            retrieval_embedder_dim(e) == st->idx[i].dim)
            st->idx[i].e = e;
    return 0;
}

static int
index_new(struct retrieval_stores *st, const char *id, int dim, int chunk_tokens,
          int chunk_overlap, const char *embedder, const char *template, const char *owner)
{
    char *tmpl = template ? strdup(template) : NULL;
    if (template != NULL && tmpl == NULL)
        return -ENOMEM;
    struct vs_index *p = realloc(st->idx, (size_t)(st->n_idx + 1) * sizeof(*p));
    if (p == NULL) {
        free(tmpl);
        return -ENOMEM;
    }
    st->idx = p;
    const struct retrieval_embedder *e = retrieval__embedder(st, embedder);
    p[st->n_idx] = (struct vs_index){ .dim = dim, .chunk_tokens = chunk_tokens,
                                      .chunk_overlap = chunk_overlap,
                                      .e = e && retrieval_embedder_dim(e) == dim ? e : NULL,
                                      .template = tmpl };
    snprintf(p[st->n_idx].embedder, sizeof(p[st->n_idx].embedder), "%s", embedder);
    snprintf(p[st->n_idx].id, RETRIEVAL_ID_MAX, "%s", id);
    snprintf(p[st->n_idx].owner, RETRIEVAL_ID_MAX, "%s", owner ? owner : "");
    st->n_idx++;
    return 0;
}

/* Every store's rows from the database (at open). */
static int
load_indexes(struct retrieval_stores *st)
{
    sqlite3_stmt *s = NULL, *c = NULL;
    int rc = sqlite3_prepare_v2(st->db, "SELECT id, dim, chunk_tokens, chunk_overlap, embedder,"
                                " template, owner FROM vector_stores ORDER BY created_at", -1, &s, NULL)
                     == SQLITE_OK &&
             sqlite3_prepare_v2(st->db, "SELECT id, document, embedding FROM vs_chunks"
                                " WHERE store = ? ORDER BY id", -1, &c, NULL) == SQLITE_OK
                 ? 0 : -EIO;
    while (rc == 0 && sqlite3_step(s) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(s, 0);
        if ((rc = index_new(st, id, sqlite3_column_int(s, 1), sqlite3_column_int(s, 2),
                            sqlite3_column_int(s, 3), (const char *)sqlite3_column_text(s, 4),
                            (const char *)sqlite3_column_text(s, 5),
                            (const char *)sqlite3_column_text(s, 6))) < 0)
            break;
        struct vs_index *x = &st->idx[st->n_idx - 1];
        sqlite3_bind_text(c, 1, id, -1, SQLITE_TRANSIENT);
        while (rc == 0 && sqlite3_step(c) == SQLITE_ROW) {
            if (sqlite3_column_bytes(c, 2) != x->dim * (int)sizeof(float))
                rc = -EIO;  /* a row written by another build: refuse to guess */
            else
                rc = retrieval__index_add(x, sqlite3_column_int64(c, 0),
                                          (const char *)sqlite3_column_text(c, 1),
                                          sqlite3_column_blob(c, 2));
        }
        sqlite3_reset(c);
    }
    sqlite3_finalize(s);
    sqlite3_finalize(c);
    return rc;
}

/* ---- Open and close --------------------------------------------------- */

int
retrieval_stores_open(const char *path, const struct tokenizer *tok,
                      const struct retrieval_embedder *e, struct retrieval_stores **out,
                      char *err, size_t errlen)
{
    *out = NULL;
    struct retrieval_stores *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return -ENOMEM;
    pthread_mutex_init(&st->lock, NULL);
    st->tok = tok;
    st->e[0] = e;
    st->n_e = 1;
    const char *name = path ? path : ":memory:";
    int rc = sqlite3_open_v2(name, &st->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                             SQLITE_OPEN_NOMUTEX, NULL) == SQLITE_OK ? 0 : -EIO;
    if (rc == 0) {
        sqlite3_busy_timeout(st->db, 5000);     /* the adapter registry shares the file */
        rc = sqlite3_exec(st->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL,
                          NULL, NULL) == SQLITE_OK &&
             sqlite3_exec(st->db, schema, NULL, NULL, NULL) == SQLITE_OK ? 0 : -EIO;
    }
    if (rc == 0) { /* stores made before these columns: added once (or already there) */
        sqlite3_exec(st->db, "ALTER TABLE vector_stores ADD COLUMN template TEXT", NULL, NULL,
                     NULL);
        sqlite3_exec(st->db, "ALTER TABLE vector_stores ADD COLUMN embedder TEXT NOT NULL"
                     " DEFAULT 'hash'", NULL, NULL, NULL);
        sqlite3_exec(st->db, "ALTER TABLE vector_stores ADD COLUMN owner TEXT NOT NULL"
                     " DEFAULT ''", NULL, NULL, NULL);
    }
    if (rc == 0)
        rc = load_indexes(st);
    if (rc < 0) {
        snprintf(err, errlen, "%s: vector stores: %s", name,
                 rc == -ENOMEM ? "out of memory" : sqlite3_errmsg(st->db));
        retrieval_stores_close(st);
        return rc;
    }
    *out = st;
    return 0;
}

void
retrieval_stores_close(struct retrieval_stores *st)
{
    if (st == NULL)
        return;
    for (int i = 0; i < st->n_idx; i++)
        index_release(&st->idx[i]);
    free(st->idx);
    sqlite3_close(st->db);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

/* ---- Stores ------------------------------------------------------------ */

void
retrieval_store_info_release(struct retrieval_store_info *info)
{
    free(info->name);
    free(info->metadata);
    free(info->template);
    info->name = info->metadata = info->template = NULL;
}

static char *
dup_col(sqlite3_stmt *s, int col)
{
    const char *t = (const char *)sqlite3_column_text(s, col);
    return t ? strdup(t) : NULL;
}

#define INFO_SQL                                                                              \
    "SELECT v.id, v.name, v.metadata, v.created_at, v.chunk_tokens, v.chunk_overlap, v.dim,"  \
    " (SELECT count(*) FROM vs_documents d WHERE d.store = v.id),"                            \
    " (SELECT count(*) FROM vs_chunks c WHERE c.store = v.id),"                               \
    " (SELECT coalesce(sum(length(CAST(d.text AS BLOB))), 0) FROM vs_documents d"             \
    " WHERE d.store = v.id), v.template, v.embedder, v.owner FROM vector_stores v"

static void
read_info(sqlite3_stmt *s, struct retrieval_store_info *o)
{
    snprintf(o->id, sizeof(o->id), "%s", (const char *)sqlite3_column_text(s, 0));
    o->name = dup_col(s, 1);
    o->metadata = dup_col(s, 2);
    o->created_at = sqlite3_column_int64(s, 3);
    o->chunk_tokens = sqlite3_column_int(s, 4);
    o->chunk_overlap = sqlite3_column_int(s, 5);
    o->dim = sqlite3_column_int(s, 6);
    o->n_documents = sqlite3_column_int64(s, 7);
    o->n_chunks = sqlite3_column_int64(s, 8);
    o->usage_bytes = sqlite3_column_int64(s, 9) + o->n_chunks * o->dim * (long long)sizeof(float);
    o->template = dup_col(s, 10);
    snprintf(o->embedder, sizeof(o->embedder), "%s", (const char *)sqlite3_column_text(s, 11));
    snprintf(o->owner, sizeof(o->owner), "%s", (const char *)sqlite3_column_text(s, 12));
}

/* Stores matching where (one text bind, or none): 0 with *out and *n. */
static int
select_infos(struct retrieval_stores *st, const char *where, const char *bind,
             struct retrieval_store_info **out, int *n)
{
    char sql[1024];
    snprintf(sql, sizeof(sql), "%s %s ORDER BY v.created_at, v.rowid", INFO_SQL, where);
    sqlite3_stmt *s = NULL;
    *out = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(st->db, sql, -1, &s, NULL) != SQLITE_OK)
        return -EIO;
    if (bind != NULL)
        sqlite3_bind_text(s, 1, bind, -1, SQLITE_STATIC);
    int rc = 0, cap = 0;
    while (rc == 0 && sqlite3_step(s) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            struct retrieval_store_info *p = realloc(*out, (size_t)cap * sizeof(*p));
            if (p == NULL) {
                rc = -ENOMEM;
                break;
            }
            *out = p;
        }
        read_info(s, &(*out)[(*n)++]);
    }
    sqlite3_finalize(s);
    return rc;
}

int
retrieval_store_list(struct retrieval_stores *st, struct retrieval_store_info **out, int *n)
{
    pthread_mutex_lock(&st->lock);
    int rc = select_infos(st, "", NULL, out, n);
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int
retrieval_store_get(struct retrieval_stores *st, const char *id,
                    struct retrieval_store_info *out)
{
    struct retrieval_store_info *all = NULL;
    int n = 0;
    pthread_mutex_lock(&st->lock);
    int rc = select_infos(st, "WHERE v.id = ?", id, &all, &n);
    pthread_mutex_unlock(&st->lock);
    if (rc == 0 && n == 0)
        rc = -ENOENT;
    if (rc == 0)
        *out = all[0];
    free(all);
    return rc;
}

int
retrieval__store_shape(struct retrieval_stores *st, const char *id,
                       struct retrieval_store_info *info,
                       const struct retrieval_embedder **e, char *err, size_t errlen)
{
    memset(info, 0, sizeof(*info));
    *e = NULL;
    pthread_mutex_lock(&st->lock);
    const struct vs_index *x = retrieval__index(st, id);
    if (x != NULL) {
        snprintf(info->id, sizeof(info->id), "%s", id);
        info->dim = x->dim;
        info->chunk_tokens = x->chunk_tokens;
        info->chunk_overlap = x->chunk_overlap;
        snprintf(info->embedder, sizeof(info->embedder), "%s", x->embedder);
        *e = x->e;
    }
    pthread_mutex_unlock(&st->lock);
    if (x == NULL)
        snprintf(err, errlen, "no vector store '%s'", id);
    else if (*e == NULL)
        snprintf(err, errlen, "vector store '%s' embeds with '%s', which this server does not "
                 "have", id, info->embedder);
    return x == NULL ? -ENOENT : *e == NULL ? -EINVAL : 0;
}

int
retrieval_store_create(struct retrieval_stores *st, const char *owner, const char *name,
                       const char *metadata,
                       const char *template, const char *embedder, int chunk_tokens,
                       int chunk_overlap, struct retrieval_store_info *out, char *err,
                       size_t errlen)
{
    const struct retrieval_embedder *e = embedder ? retrieval__embedder(st, embedder) : st->e[0];
    if (e == NULL) {
        snprintf(err, errlen, "embedder: no embedder '%.64s' here", embedder);
        return -ENOENT;
    }
    if (template != NULL && (strlen(template) > RETRIEVAL_TEMPLATE_MAX ||
                             strstr(template, "{chunks}") == NULL)) {
        snprintf(err, errlen, "context_template: up to %d bytes, with {chunks} in it",
                 RETRIEVAL_TEMPLATE_MAX);
        return -EINVAL;
    }
    if (chunk_tokens == 0 && chunk_overlap == 0)
        chunk_tokens = 800, chunk_overlap = 400;
    if (chunk_tokens < 1 || chunk_overlap < 0 || chunk_overlap >= chunk_tokens) {
        snprintf(err, errlen, "chunking: chunk_tokens >= 1 and 0 <= overlap < chunk_tokens");
        return -EINVAL;
    }
    char id[RETRIEVAL_ID_MAX], sql[512];
    retrieval__make_id("vs_", id);
    snprintf(sql, sizeof(sql), "INSERT INTO vector_stores (id, name, metadata, created_at,"
             " chunk_tokens, chunk_overlap, dim, template, embedder, owner) VALUES (?, ?, ?,"
             " %lld, %d, %d, %d, ?, ?, ?)", (long long)time(NULL), chunk_tokens, chunk_overlap,
             retrieval_embedder_dim(e));
    const char *binds[] = { id, name, metadata ? metadata : "{}", template,
                            retrieval_embedder_kind(e), owner ? owner : "" };
    pthread_mutex_lock(&st->lock);
    int rc = retrieval__exec(st->db, sql, 6, binds);
    if (rc == 0 && (rc = index_new(st, id, retrieval_embedder_dim(e), chunk_tokens,
                                   chunk_overlap, retrieval_embedder_kind(e), template,
                                   owner)) < 0)
        retrieval__exec(st->db, "DELETE FROM vector_stores WHERE id = ?", 1, binds);
    if (rc < 0)
        snprintf(err, errlen, "vector stores: %s", sqlite3_errmsg(st->db));
    pthread_mutex_unlock(&st->lock);
    return rc < 0 ? rc : retrieval_store_get(st, id, out);
}

int
retrieval_store_owner(struct retrieval_stores *st, const char *id, char *owner)
{
    pthread_mutex_lock(&st->lock);
    const struct vs_index *x = retrieval__index(st, id);
    if (x != NULL)
        snprintf(owner, RETRIEVAL_ID_MAX, "%s", x->owner);
    pthread_mutex_unlock(&st->lock);
    return x == NULL ? -ENOENT : 0;
}

int
retrieval_store_template(struct retrieval_stores *st, const char *id, char **out)
{
    *out = NULL;
    pthread_mutex_lock(&st->lock);
    const struct vs_index *x = retrieval__index(st, id);
    int rc = x == NULL ? -ENOENT : 0;
    if (x != NULL && x->template != NULL && (*out = strdup(x->template)) == NULL)
        rc = -ENOMEM;
    pthread_mutex_unlock(&st->lock);
    return rc;
}

int
retrieval_store_delete(struct retrieval_stores *st, const char *id)
{
    const char *b[] = { id };
    pthread_mutex_lock(&st->lock);
    struct vs_index *x = retrieval__index(st, id);
    int rc = x == NULL ? -ENOENT : retrieval__exec(st->db, "BEGIN IMMEDIATE", 0, NULL);
    if (rc == 0 &&
        (rc = retrieval__exec(st->db, "DELETE FROM vs_chunks WHERE store = ?", 1, b)) == 0 &&
        (rc = retrieval__exec(st->db, "DELETE FROM vs_documents WHERE store = ?", 1, b)) == 0 &&
        (rc = retrieval__exec(st->db, "DELETE FROM vector_stores WHERE id = ?", 1, b)) == 0)
        rc = retrieval__exec(st->db, "COMMIT", 0, NULL);
    if (rc == -EIO)
        retrieval__exec(st->db, "ROLLBACK", 0, NULL);
    if (rc == 0) {
        index_release(x);
        *x = st->idx[--st->n_idx];
    }
    pthread_mutex_unlock(&st->lock);
    return rc;
}
