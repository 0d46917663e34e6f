/*
 * experiments.c - A/B experiments between models (the base model and
 * adapters): routing, the record of every request, feedback, statistics.
 *
 * An experiment belongs to a tenant (or to the admin, shared) and has up to
 * EXP_MAX_VARIANTS variants, each a model its owner can use and a weight. A
 * request whose "model" is the experiment's name is routed by weight: with a
 * "user", by a hash of the experiment and the user (so a user stays on one
 * variant for as long as the weights stay), else at random.
 *
 * Experiments are kept in memory (routing on the loop thread, under mu) and
 * in the experiments table of loraserve.db. Each routed request, when it
 * ends, leaves a record (latency, time to first token, tokens, error) in a
 * pending list (loop thread, under mu); the pool writes pending records to
 * exp_requests (flush) before it answers anything that reads them, so
 * feedback for a completion that has been answered always finds its record.
 * Feedback, statistics and changes run on the libuv pool; changes are one
 * transaction each.
 */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

#include "server_int.h"

struct record {
    struct exp_record r;
    struct record *next;
};

struct experiments {
    sqlite3 *db;
    pthread_mutex_t mu;             /* memory: the list and pending records */
    pthread_mutex_t wmu;            /* the database */
    struct exp_info *v;
    int n, cap;
    struct record *pending, **tail;
    uint64_t rng;
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS experiments ("
    " owner TEXT NOT NULL, name TEXT NOT NULL, variants TEXT NOT NULL,"
    " sticky TEXT NOT NULL, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,"
    " PRIMARY KEY (owner, name));"
    "CREATE TABLE IF NOT EXISTS exp_requests ("
    " id TEXT PRIMARY KEY, owner TEXT NOT NULL, experiment TEXT NOT NULL,"
    " variant TEXT NOT NULL, user TEXT, latency REAL NOT NULL, ttft REAL NOT NULL,"
    " tokens INTEGER NOT NULL, error INTEGER NOT NULL, feedback REAL,"
    " created_at INTEGER NOT NULL, tenant TEXT NOT NULL DEFAULT '');"
    "CREATE INDEX IF NOT EXISTS exp_requests_exp ON exp_requests (owner, experiment, variant);";

/* ---- Variants as JSON (the table's column) ------------------------------ */

char *
server__exp_variants_text(const struct exp_info *x)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < x->n; i++) {
        cJSON *v = cJSON_CreateObject();
        cJSON_AddStringToObject(v, "model", x->variants[i].model);
        cJSON_AddNumberToObject(v, "weight", x->variants[i].weight);
        cJSON_AddItemToArray(a, v);
    }
    char *s = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    return s;
}

/* Fills x's variants from the column's text; false if it is not what we wrote. */
static bool
variants_parse(const char *text, struct exp_info *x)
{
    cJSON *a = text ? cJSON_Parse(text) : NULL, *v;
    x->n = 0;
    cJSON_ArrayForEach(v, a) {
        cJSON *m = cJSON_GetObjectItem(v, "model"), *w = cJSON_GetObjectItem(v, "weight");
        if (x->n == EXP_MAX_VARIANTS || !cJSON_IsString(m) || !cJSON_IsNumber(w))
            break;
        snprintf(x->variants[x->n].model, sizeof(x->variants[0].model), "%s", m->valuestring);
        x->variants[x->n++].weight = w->valuedouble;
    }
    bool ok = cJSON_IsArray(a) && x->n == cJSON_GetArraySize(a) && x->n > 0;
    cJSON_Delete(a);
    return ok;
}

/* ---- SQLite ----------------------------------------------------------- */

static int
mem_add(struct experiments *X, const struct exp_info *x)
{
    if (X->n == X->cap) {
        int cap = X->cap ? 2 * X->cap : 8;
        struct exp_info *v = realloc(X->v, (size_t)cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        X->v = v, X->cap = cap;
    }
    X->v[X->n++] = *x;
    return 0;
}

static int
load(struct experiments *X)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(X->db, "SELECT owner, name, variants, sticky, created_at,"
                                " updated_at FROM experiments ORDER BY created_at", -1, &st,
                                NULL) == SQLITE_OK ? 0 : -EIO;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        struct exp_info x = { .created_at = sqlite3_column_int64(st, 4),
                              .updated_at = sqlite3_column_int64(st, 5) };
        snprintf(x.owner, sizeof(x.owner), "%s", (const char *)sqlite3_column_text(st, 0));
        snprintf(x.name, sizeof(x.name), "%s", (const char *)sqlite3_column_text(st, 1));
        x.sticky_user = strcmp((const char *)sqlite3_column_text(st, 3), "user") == 0;
        if (variants_parse((const char *)sqlite3_column_text(st, 2), &x))
            rc = mem_add(X, &x);
    }
    sqlite3_finalize(st);
    return rc;
}

int
server__experiments_open(const char *db, struct experiments **out, char *err, size_t errlen)
{
    *out = NULL;
    struct experiments *X = server__xcalloc(1, sizeof(*X));
    pthread_mutex_init(&X->mu, NULL);
    pthread_mutex_init(&X->wmu, NULL);
    X->tail = &X->pending;
    X->rng = (uint64_t)time(NULL) * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)X;
    int r = server__db_open(db, schema, &X->db);
    if (r == 0)
        r = load(X);
    if (r < 0) {
        snprintf(err, errlen, "%s: experiments: %s", db, sqlite3_errmsg(X->db));
        server__experiments_close(X);
        return r;
    }
    *out = X;
    return 0;
}

void
server__experiments_close(struct experiments *X)
{
    if (X == NULL)
        return;
    server__experiments_flush(X);
    sqlite3_close(X->db);
    free(X->v);
    pthread_mutex_destroy(&X->mu);
    pthread_mutex_destroy(&X->wmu);
    free(X);
}

/* ---- Routing (loop) ---------------------------------------------------- */

static struct exp_info *
find(struct experiments *X, const char *owner, const char *name)
{
    for (int i = 0; i < X->n; i++)
        if (strcmp(X->v[i].owner, owner) == 0 && strcmp(X->v[i].name, name) == 0)
            return &X->v[i];
    return NULL;
}

/* who's own experiment of that name, else the admin's (shared). */
static struct exp_info *
find_for(struct experiments *X, const struct who *who, const char *name)
{
    struct exp_info *x = who->tenant != 0 ? find(X, who->id, name) : NULL;
    return x ? x : find(X, "", name);
}

/* A number in [0, 1): from the experiment and the user, or at random. */
static double
draw(struct experiments *X, const struct exp_info *x, const char *user)
{
    uint64_t h;
    if (user != NULL && x->sticky_user) {
        XXH3_state_t *s = XXH3_createState();
        XXH3_64bits_reset(s);
        XXH3_64bits_update(s, x->owner, strlen(x->owner) + 1);
        XXH3_64bits_update(s, x->name, strlen(x->name) + 1);
        XXH3_64bits_update(s, user, strlen(user));
        h = XXH3_64bits_digest(s);
        XXH3_freeState(s);
    } else {
        X->rng ^= X->rng << 13, X->rng ^= X->rng >> 7, X->rng ^= X->rng << 17;
        h = X->rng * 0x2545F4914F6CDD1Dull;
    }
    return (double)(h >> 11) / 9007199254740992.0;
}

int
server__experiment_pick(struct experiments *X, const struct who *who, const char *name,
                        const char *user, struct exp_pick *out)
{
    if (name == NULL)
        return 0;
    pthread_mutex_lock(&X->mu);
    const struct exp_info *x = find_for(X, who, name);
    if (x != NULL) {
        double total = 0, u = 0, acc = 0;
        for (int i = 0; i < x->n; i++)
            total += x->variants[i].weight;
        u = draw(X, x, user) * total;
        int k = 0;
        while (k < x->n - 1 && (acc += x->variants[k].weight) <= u)
            k++;
        while (k > 0 && x->variants[k].weight == 0)
            k--; /* never a zero-weight variant at the top end of the rounding */
        snprintf(out->owner, sizeof(out->owner), "%s", x->owner);
        snprintf(out->name, sizeof(out->name), "%s", x->name);
        snprintf(out->variant, sizeof(out->variant), "%s", x->variants[k].model);
    }
    pthread_mutex_unlock(&X->mu);
    return x != NULL;
}

void
server__experiment_record(struct experiments *X, const struct exp_record *r)
{
    struct record *p = malloc(sizeof(*p));
    if (p == NULL)
        return; /* a statistic lost rather than a request failed */
    p->r = *r;
    p->next = NULL;
    pthread_mutex_lock(&X->mu);
    *X->tail = p;
    X->tail = &p->next;
    pthread_mutex_unlock(&X->mu);
}

/* ---- The pool's side ----------------------------------------------------- */

/* Writes every pending record (caller holds wmu). */
static void
flush_locked(struct experiments *X)
{
    pthread_mutex_lock(&X->mu);
    struct record *p = X->pending;
    X->pending = NULL;
    X->tail = &X->pending;
    pthread_mutex_unlock(&X->mu);
    if (p == NULL)
        return;
    server__db_exec(X->db, "BEGIN IMMEDIATE", "");
    while (p != NULL) {
        const struct exp_record *r = &p->r;
        server__db_exec(X->db, "INSERT OR REPLACE INTO exp_requests (id, owner, experiment,"
                        " variant, user, latency, ttft, tokens, error, created_at, tenant)"
                        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                        "tttttddiiit", r->id, r->owner, r->experiment, r->variant,
                        r->user[0] ? r->user : NULL, r->latency, r->ttft,
                        (long long)r->tokens, (long long)r->error, (long long)time(NULL),
                        r->tenant);
        struct record *next = p->next;
        free(p);
        p = next;
    }
    server__db_exec(X->db, "COMMIT", "");
}

void
server__experiments_flush(struct experiments *X)
{
    pthread_mutex_lock(&X->wmu);
    flush_locked(X);
    pthread_mutex_unlock(&X->wmu);
}

int
server__experiment_get(struct experiments *X, const struct who *who, const char *name,
                       struct exp_info *out)
{
    pthread_mutex_lock(&X->mu);
    const struct exp_info *x = find_for(X, who, name);
    if (x != NULL)
        *out = *x;
    pthread_mutex_unlock(&X->mu);
    return x ? 0 : -ENOENT;
}

int
server__experiment_list(struct experiments *X, const struct who *who, struct exp_info **out,
                        int *n)
{
    pthread_mutex_lock(&X->mu);
    *out = malloc((size_t)(X->n ? X->n : 1) * sizeof(**out));
    *n = 0;
    for (int i = 0; *out != NULL && i < X->n; i++)
        if (who->admin || X->v[i].owner[0] == '\0' || strcmp(X->v[i].owner, who->id) == 0)
            (*out)[(*n)++] = X->v[i];
    pthread_mutex_unlock(&X->mu);
    return *out ? 0 : -ENOMEM;
}

/* Creates (create) or changes the variants of x (owner, name, variants set). */
int
server__experiment_put(struct experiments *X, struct exp_info *x, bool create)
{
    char *variants = server__exp_variants_text(x);
    if (variants == NULL)
        return -ENOMEM;
    pthread_mutex_lock(&X->wmu);
    pthread_mutex_lock(&X->mu);
    struct exp_info *cur = find(X, x->owner, x->name);
    int rc = create && cur ? -EEXIST : !create && !cur ? -ENOENT : 0;
    x->updated_at = (long long)time(NULL);
    x->created_at = cur ? cur->created_at : x->updated_at;
    if (cur && !create)
        x->sticky_user = cur->sticky_user;
    pthread_mutex_unlock(&X->mu);
    if (rc == 0)
        rc = server__db_exec(X->db, "INSERT OR REPLACE INTO experiments (owner, name, variants,"
                             " sticky, created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                             "ttttii", x->owner, x->name, variants,
                             x->sticky_user ? "user" : "none", x->created_at, x->updated_at);
    pthread_mutex_lock(&X->mu);
    if (rc == 0 && (cur = find(X, x->owner, x->name)) != NULL)
        *cur = *x;
    else if (rc == 0)
        rc = mem_add(X, x);
    pthread_mutex_unlock(&X->mu);
    pthread_mutex_unlock(&X->wmu);
    free(variants);
    return rc;
}

int
server__experiment_delete(struct experiments *X, const char *owner, const char *name)
{
    pthread_mutex_lock(&X->wmu);
    flush_locked(X);
    pthread_mutex_lock(&X->mu);
    int rc = find(X, owner, name) ? 0 : -ENOENT;
    pthread_mutex_unlock(&X->mu);
    if (rc == 0)
        rc = server__db_exec(X->db, "BEGIN IMMEDIATE", "");
    if (rc == 0 && (rc = server__db_exec(X->db, "DELETE FROM exp_requests WHERE owner = ?1 AND"
                                         " experiment = ?2", "tt", owner, name)) == 0 &&
        (rc = server__db_exec(X->db, "DELETE FROM experiments WHERE owner = ?1 AND name = ?2",
                              "tt", owner, name)) == 0)
        rc = server__db_exec(X->db, "COMMIT", "");
    else if (rc != -ENOENT)
        server__db_exec(X->db, "ROLLBACK", "");
    pthread_mutex_lock(&X->mu);
    struct exp_info *x = rc == 0 ? find(X, owner, name) : NULL;
    if (x != NULL)
        *x = X->v[--X->n];
    pthread_mutex_unlock(&X->mu);
    pthread_mutex_unlock(&X->wmu);
    return rc;
}

int
server__experiment_feedback(struct experiments *X, const struct who *who, const char *id,
                            double score, struct exp_pick *out)
{
    pthread_mutex_lock(&X->wmu);
    flush_locked(X);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(X->db, "SELECT owner, experiment, variant, tenant FROM"
                                " exp_requests WHERE id = ?1", -1, &st, NULL) == SQLITE_OK
                 ? -ENOENT : -EIO;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    if (rc == -ENOENT && sqlite3_step(st) == SQLITE_ROW) {
        const char *owner = (const char *)sqlite3_column_text(st, 0);
        const char *asker = (const char *)sqlite3_column_text(st, 3);
        /* the tenant that sent the request scores it (or the admin) */
        rc = who->admin || strcmp(asker, who->id) == 0 ? 0 : -ENOENT;
        snprintf(out->owner, sizeof(out->owner), "%s", owner);
        snprintf(out->name, sizeof(out->name), "%s", (const char *)sqlite3_column_text(st, 1));
        snprintf(out->variant, sizeof(out->variant), "%s",
                 (const char *)sqlite3_column_text(st, 2));
    }
    sqlite3_finalize(st);
    if (rc == 0)
        rc = server__db_exec(X->db, "UPDATE exp_requests SET feedback = ?2 WHERE id = ?1", "td",
                             id, score);
    pthread_mutex_unlock(&X->wmu);
    return rc;
}

/* ---- Statistics (pool) ------------------------------------------------ */

/* The q-quantile (nearest rank) of column col of the variant's requests. */
static double
quantile(struct experiments *X, const struct exp_info *x, const char *variant,
         const char *col, long n, double q)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT %s FROM exp_requests WHERE owner = ?1 AND experiment = ?2"
             " AND variant = ?3 AND error = 0 ORDER BY %s LIMIT 1 OFFSET ?4", col, col);
    sqlite3_stmt *st = NULL;
    double v = 0;
    long rank = (long)ceil(q * (double)n) - 1;
    if (n > 0 && sqlite3_prepare_v2(X->db, sql, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, x->owner, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, x->name, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, variant, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, rank < 0 ? 0 : rank);
        if (sqlite3_step(st) == SQLITE_ROW)
            v = sqlite3_column_double(st, 0);
    }
    sqlite3_finalize(st);
    return v;
}

/* One variant's figures; the feedback scores go into acc. */
static int
variant_stats(struct experiments *X, const struct exp_info *x, const char *variant,
              struct exp_stats *o)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(X->db, "SELECT count(*), sum(error), sum(tokens),"
                                " avg(CASE WHEN error = 0 THEN latency END),"
                                " avg(CASE WHEN error = 0 THEN ttft END)"
                                " FROM exp_requests WHERE owner = ?1 AND experiment = ?2"
                                " AND variant = ?3", -1, &st, NULL) == SQLITE_OK ? 0 : -EIO;
    sqlite3_bind_text(st, 1, x->owner, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, x->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, variant, -1, SQLITE_STATIC);
    if (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        o->requests = sqlite3_column_int64(st, 0);
        o->errors = sqlite3_column_int64(st, 1);
        o->tokens = sqlite3_column_int64(st, 2);
        o->latency_mean = sqlite3_column_double(st, 3);
        o->ttft_mean = sqlite3_column_double(st, 4);
    }
    sqlite3_finalize(st);
    long ok = (long)(o->requests - o->errors);
    o->latency_p95 = quantile(X, x, variant, "latency", ok, 0.95);
    o->ttft_p95 = quantile(X, x, variant, "ttft", ok, 0.95);
    if (sqlite3_prepare_v2(X->db, "SELECT feedback FROM exp_requests WHERE owner = ?1 AND"
                           " experiment = ?2 AND variant = ?3 AND feedback IS NOT NULL", -1,
                           &st, NULL) != SQLITE_OK)
        return -EIO;
    sqlite3_bind_text(st, 1, x->owner, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, x->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, variant, -1, SQLITE_STATIC);
    while (sqlite3_step(st) == SQLITE_ROW) { /* Welford's running mean and squares */
        double x = sqlite3_column_double(st, 0), d = x - o->fb_mean;
        o->fb_mean += d / (double)++o->fb_n;
        o->fb_m2 += d * (x - o->fb_mean);
    }
    sqlite3_finalize(st);
    return rc;
}

int
server__experiment_stats(struct experiments *X, const struct exp_info *x, struct exp_stats *out)
{
    pthread_mutex_lock(&X->wmu);
    flush_locked(X);
    int rc = 0;
    for (int i = 0; i < x->n && rc == 0; i++) {
        out[i] = (struct exp_stats){ 0 };
        rc = variant_stats(X, x, x->variants[i].model, &out[i]);
    }
    pthread_mutex_unlock(&X->wmu);
    return rc;
}
