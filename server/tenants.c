/*
 * tenants.c - tenants, their API keys and their limits.
 *
 * With --admin-key the server has an admin (that key) and tenants, each with
 * keys of its own; without it everything runs as the admin (open mode). A key
 * is shown once, when made: "sk-" + its 12-hex id + "-" + 40 hex digits of
 * randomness. Only a salted SHA-256 of it is kept (in SQLite and in memory);
 * a presented key is found by the id inside it and compared in constant time
 * (CRYPTO_memcmp), as the admin key is (by its hash, so its length does not
 * show either).
 *
 * Tenants and keys live in the tenants and api_keys tables of loraserve.db
 * and in memory. Requests authenticate against memory on the loop thread;
 * changes (the admin API) run on the libuv pool, write SQLite first (one
 * transaction, serialised by wmu) and then memory. mu guards memory, which
 * also holds each tenant's limit state: requests running, and two token
 * buckets (requests and tokens per minute) that refill at limit / 60 a second
 * and hold at most a sixth of the limit (ten seconds' worth), so a burst is
 * cut into even pieces as OpenAI's limits are.
 */
#include <errno.h>
#include <math.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "server_int.h"

#define KEY_SALT 16
#define KEY_HASH 32
#define KEY_ID_HEX 12
#define KEY_SECRET_HEX 40

struct tenant {
    struct tenant_info info;
    int running;
    double req_bucket, tok_bucket;  /* what may still be spent now */
    double t_refill;                /* when the buckets were last refilled (monotonic s) */
};

struct tkey {
    char id[TENANT_ID_MAX];         /* "key_" + 12 hex */
    uint32_t tenant;
    unsigned char salt[KEY_SALT], hash[KEY_HASH];
    long long created_at;
};

struct tenants {
    sqlite3 *db;
    pthread_mutex_t mu;             /* memory */
    pthread_mutex_t wmu;            /* one change at a time */
    struct tenant **t;
    int n, cap;
    struct tkey *k;
    int nk, capk;
    uint32_t next_no;
    bool has_admin;
    unsigned char admin_hash[KEY_HASH];
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS tenants ("
    " no INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, name TEXT NOT NULL,"
    " max_concurrent INTEGER NOT NULL, rpm INTEGER NOT NULL, tpm INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS api_keys ("
    " id TEXT PRIMARY KEY, tenant_no INTEGER NOT NULL, salt BLOB NOT NULL,"
    " hash BLOB NOT NULL, created_at INTEGER NOT NULL);";

static void
sha256(const void *a, size_t na, const void *b, size_t nb, unsigned char out[KEY_HASH])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    unsigned n = KEY_HASH;
    if (c == NULL || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(c, a, na) != 1 || EVP_DigestUpdate(c, b, nb) != 1 ||
        EVP_DigestFinal_ex(c, out, &n) != 1)
        memset(out, 0, KEY_HASH); /* matches no key: every comparison fails */
    EVP_MD_CTX_free(c);
}

/* n random bytes as 2n lowercase hex digits + NUL. 0 or -EIO. */
static int
random_hex(char *out, int n)
{
    unsigned char b[32];
    if (n > (int)sizeof(b) || RAND_bytes(b, n) != 1)
        return -EIO;
    for (int i = 0; i < n; i++)
        snprintf(out + 2 * i, 3, "%02x", b[i]);
    return 0;
}

/* ---- Memory ----------------------------------------------------------- */

static struct tenant *
find_no(const struct tenants *T, uint32_t no)
{
    for (int i = 0; i < T->n; i++)
        if (T->t[i]->info.no == no)
            return T->t[i];
    return NULL;
}

static struct tenant *
find_id(const struct tenants *T, const char *id)
{
    for (int i = 0; i < T->n; i++)
        if (strcmp(T->t[i]->info.id, id) == 0)
            return T->t[i];
    return NULL;
}

static void
fill_buckets(struct tenant *t)
{
    const struct tenant_limits *l = &t->info.limits;
    t->req_bucket = fmax(1.0, l->requests_per_minute / 6.0);
    t->tok_bucket = fmax(1.0, l->tokens_per_minute / 6.0);
    t->t_refill = server__mono_s();
}

static int
mem_add_tenant(struct tenants *T, const struct tenant_info *info)
{
    if (T->n == T->cap) {
        int cap = T->cap ? 2 * T->cap : 8;
        struct tenant **v = realloc(T->t, (size_t)cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        T->t = v, T->cap = cap;
    }
    struct tenant *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    t->info = *info;
    fill_buckets(t);
    T->t[T->n++] = t;
    T->next_no = info->no >= T->next_no ? info->no + 1 : T->next_no;
    return 0;
}

static int
mem_add_key(struct tenants *T, const struct tkey *k)
{
    if (T->nk == T->capk) {
        int cap = T->capk ? 2 * T->capk : 8;
        struct tkey *v = realloc(T->k, (size_t)cap * sizeof(*v));
        if (v == NULL)
            return -ENOMEM;
        T->k = v, T->capk = cap;
    }
    T->k[T->nk++] = *k;
    return 0;
}

static int
n_keys(const struct tenants *T, uint32_t no)
{
    int n = 0;
    for (int i = 0; i < T->nk; i++)
        n += T->k[i].tenant == no;
    return n;
}

/* ---- SQLite ----------------------------------------------------------- */

static int
db_fail(struct tenants *T, char *err, size_t errlen)
{
    snprintf(err, errlen, "loraserve.db: tenants: %s", sqlite3_errmsg(T->db));
    return sqlite3_errcode(T->db) == SQLITE_NOMEM ? -ENOMEM : -EIO;
}

static int
load_tenants(struct tenants *T, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(T->db, "SELECT no, id, name, max_concurrent, rpm, tpm,"
                                " created_at FROM tenants ORDER BY no", -1, &st, NULL);
    while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        struct tenant_info in = { .no = (uint32_t)sqlite3_column_int64(st, 0) };
        snprintf(in.id, sizeof(in.id), "%s", (const char *)sqlite3_column_text(st, 1));
        snprintf(in.name, sizeof(in.name), "%s", (const char *)sqlite3_column_text(st, 2));
        in.limits = (struct tenant_limits){ sqlite3_column_int(st, 3), sqlite3_column_int(st, 4),
                                            sqlite3_column_int(st, 5) };
        in.created_at = sqlite3_column_int64(st, 6);
        if (mem_add_tenant(T, &in) < 0)
            rc = SQLITE_NOMEM;
    }
    int done = rc == SQLITE_OK ? sqlite3_finalize(st) : (sqlite3_finalize(st), rc);
    return done == SQLITE_OK ? 0 : db_fail(T, err, errlen);
}

static int
load_keys(struct tenants *T, char *err, size_t errlen)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(T->db, "SELECT id, tenant_no, salt, hash, created_at"
                                " FROM api_keys", -1, &st, NULL);
    while (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
        struct tkey k = { .tenant = (uint32_t)sqlite3_column_int64(st, 1) };
        snprintf(k.id, sizeof(k.id), "%s", (const char *)sqlite3_column_text(st, 0));
        if (sqlite3_column_bytes(st, 2) != KEY_SALT || sqlite3_column_bytes(st, 3) != KEY_HASH)
            continue; /* not one of ours: it can match nothing */
        memcpy(k.salt, sqlite3_column_blob(st, 2), KEY_SALT);
        memcpy(k.hash, sqlite3_column_blob(st, 3), KEY_HASH);
        k.created_at = sqlite3_column_int64(st, 4);
        if (mem_add_key(T, &k) < 0)
            rc = SQLITE_NOMEM;
    }
    int done = rc == SQLITE_OK ? sqlite3_finalize(st) : (sqlite3_finalize(st), rc);
    return done == SQLITE_OK ? 0 : db_fail(T, err, errlen);
}

/* ---- Lifecycle -------------------------------------------------------- */

int
server__tenants_open(const char *db, const char *admin_key, struct tenants **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    struct tenants *T = server__xcalloc(1, sizeof(*T));
    pthread_mutex_init(&T->mu, NULL);
    pthread_mutex_init(&T->wmu, NULL);
    T->next_no = 1;
    T->has_admin = admin_key != NULL && admin_key[0] != '\0';
    if (T->has_admin)
        sha256(admin_key, strlen(admin_key), "", 0, T->admin_hash);
    int r = server__db_open(db, schema, &T->db) == 0 ? 0 : db_fail(T, err, errlen);
    if (r == 0 && (r = load_tenants(T, err, errlen)) == 0)
        r = load_keys(T, err, errlen);
    if (r < 0) {
        server__tenants_close(T);
        return r;
    }
    *out = T;
    return 0;
}

void
server__tenants_close(struct tenants *T)
{
    if (T == NULL)
        return;
    for (int i = 0; i < T->n; i++)
        free(T->t[i]);
    free(T->t);
    OPENSSL_cleanse(T->k, (size_t)T->capk * sizeof(*T->k));
    free(T->k);
    sqlite3_close(T->db);
    pthread_mutex_destroy(&T->mu);
    pthread_mutex_destroy(&T->wmu);
    free(T);
}

bool
server__tenants_open_mode(const struct tenants *T)
{
    return !T->has_admin;
}

/* ---- Authentication (loop) -------------------------------------------- */

static bool
is_hex(const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* The key's tenant, if key is one of the keys made here. */
static bool
tenant_key(struct tenants *T, const char *key, size_t len, uint32_t *tenant)
{
    if (len != 3 + KEY_ID_HEX + 1 + KEY_SECRET_HEX || strncmp(key, "sk-", 3) != 0 ||
        !is_hex(key + 3, KEY_ID_HEX) || key[3 + KEY_ID_HEX] != '-')
        return false;
    char id[TENANT_ID_MAX];
    snprintf(id, sizeof(id), "key_%.*s", KEY_ID_HEX, key + 3);
    bool ok = false;
    for (int i = 0; i < T->nk && !ok; i++) {
        if (strcmp(T->k[i].id, id) != 0)
            continue;
        unsigned char h[KEY_HASH];
        sha256(T->k[i].salt, KEY_SALT, key, len, h);
        ok = CRYPTO_memcmp(h, T->k[i].hash, KEY_HASH) == 0;
        *tenant = T->k[i].tenant;
    }
    return ok;
}

int
server__tenants_auth(struct tenants *T, const char *authorization, struct who *out)
{
    *out = (struct who){ 0, true, "" };
    if (!T->has_admin)
        return 0;
    out->admin = false;
    if (authorization == NULL || strncasecmp(authorization, "Bearer ", 7) != 0)
        return -EACCES;
    const char *key = authorization + 7;
    while (*key == ' ')
        key++;
    size_t len = strlen(key);
    unsigned char h[KEY_HASH];
    sha256(key, len, "", 0, h);
    if (CRYPTO_memcmp(h, T->admin_hash, KEY_HASH) == 0) {
        out->admin = true;
        return 0;
    }
    pthread_mutex_lock(&T->mu);
    uint32_t no = 0;
    bool ok = tenant_key(T, key, len, &no);
    const struct tenant *t = ok ? find_no(T, no) : NULL;
    if (t != NULL) {
        out->tenant = no;
        snprintf(out->id, sizeof(out->id), "%s", t->info.id);
    }
    pthread_mutex_unlock(&T->mu);
    return t != NULL ? 0 : -EACCES;
}

/* ---- Limits (loop) ---------------------------------------------------- */

static void
refill(struct tenant *t, double now)
{
    const struct tenant_limits *l = &t->info.limits;
    double dt = now - t->t_refill;
    t->t_refill = now;
    t->req_bucket = fmin(fmax(1.0, l->requests_per_minute / 6.0),
                         t->req_bucket + dt * l->requests_per_minute / 60.0);
    t->tok_bucket = fmin(fmax(1.0, l->tokens_per_minute / 6.0),
                         t->tok_bucket + dt * l->tokens_per_minute / 60.0);
}

/* Seconds until the limit that refuses t (named in *what) allows a request again, or 0. */
static double
refusal(const struct tenant *t, const char **what)
{
    const struct tenant_limits *l = &t->info.limits;
    if (l->max_concurrent > 0 && t->running >= l->max_concurrent) {
        *what = "max_concurrent";
        return 1.0;
    }
    if (l->requests_per_minute > 0 && t->req_bucket < 1.0) {
        *what = "requests_per_minute";
        return (1.0 - t->req_bucket) * 60.0 / l->requests_per_minute;
    }
    if (l->tokens_per_minute > 0 && t->tok_bucket <= 0.0) {
        *what = "tokens_per_minute";
        return (1e-3 - t->tok_bucket) * 60.0 / l->tokens_per_minute;
    }
    return 0.0;
}

int
server__tenant_admit(struct tenants *T, uint32_t tenant, int tokens, int *retry_after,
                     char *what, size_t len)
{
    pthread_mutex_lock(&T->mu);
    struct tenant *t = find_no(T, tenant);
    int rc = 0;
    if (t != NULL) {
        refill(t, server__mono_s());
        const char *limit = "";
        double wait = refusal(t, &limit);
        if (wait > 0) {
            *retry_after = (int)ceil(wait);
            snprintf(what, len, "%s", limit);
            rc = -EAGAIN;
        } else {
            t->running++;
            t->req_bucket -= 1.0;
            t->tok_bucket -= tokens;
        }
    }
    pthread_mutex_unlock(&T->mu);
    return rc;
}

void
server__tenant_charge(struct tenants *T, uint32_t tenant, int tokens)
{
    pthread_mutex_lock(&T->mu);
    struct tenant *t = find_no(T, tenant);
    if (t != NULL)
        t->tok_bucket -= tokens;
    pthread_mutex_unlock(&T->mu);
}

void
server__tenant_done(struct tenants *T, uint32_t tenant, int tokens)
{
    pthread_mutex_lock(&T->mu);
    struct tenant *t = find_no(T, tenant);
    if (t != NULL) {
        t->running -= t->running > 0;
        t->tok_bucket -= tokens;
    }
    pthread_mutex_unlock(&T->mu);
}

/* ---- The admin's changes (pool) --------------------------------------- */

static void
info_of(const struct tenants *T, const struct tenant *t, struct tenant_info *out)
{
    *out = t->info;
    out->n_keys = n_keys(T, t->info.no);
}

int
server__tenant_create(struct tenants *T, const char *name, const struct tenant_limits *lim,
                      struct tenant_info *out)
{
    struct tenant_info in = { .limits = *lim, .created_at = (long long)time(NULL) };
    char hex[17];
    if (random_hex(hex, 8) < 0)
        return -EIO;
    snprintf(in.id, sizeof(in.id), "ten_%s", hex);
    snprintf(in.name, sizeof(in.name), "%s", name);
    pthread_mutex_lock(&T->wmu);
    pthread_mutex_lock(&T->mu);
    in.no = T->next_no;
    pthread_mutex_unlock(&T->mu);
    int rc = server__db_exec(T->db, "INSERT INTO tenants (no, id, name, max_concurrent, rpm, tpm,"
                             " created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)", "ittiiii",
                             (long long)in.no, in.id, in.name, (long long)lim->max_concurrent,
                             (long long)lim->requests_per_minute,
                             (long long)lim->tokens_per_minute, in.created_at);
    pthread_mutex_lock(&T->mu);
    if (rc == 0)
        rc = mem_add_tenant(T, &in);
    pthread_mutex_unlock(&T->mu);
    pthread_mutex_unlock(&T->wmu);
    *out = in;
    return rc;
}

int
server__tenant_get(struct tenants *T, const char *id, struct tenant_info *out)
{
    pthread_mutex_lock(&T->mu);
    const struct tenant *t = find_id(T, id);
    if (t != NULL)
        info_of(T, t, out);
    pthread_mutex_unlock(&T->mu);
    return t ? 0 : -ENOENT;
}

int
server__tenant_list(struct tenants *T, struct tenant_info **out, int *n)
{
    pthread_mutex_lock(&T->mu);
    *out = malloc((size_t)(T->n ? T->n : 1) * sizeof(**out));
    *n = *out ? T->n : 0;
    for (int i = 0; i < *n; i++)
        info_of(T, T->t[i], &(*out)[i]);
    pthread_mutex_unlock(&T->mu);
    return *out ? 0 : -ENOMEM;
}

int
server__tenant_update(struct tenants *T, const char *id, const struct tenant_limits *lim,
                      struct tenant_info *out)
{
    pthread_mutex_lock(&T->wmu);
    int rc = server__tenant_get(T, id, out);
    if (rc == 0)
        rc = server__db_exec(T->db, "UPDATE tenants SET max_concurrent = ?2, rpm = ?3, tpm = ?4"
                             " WHERE id = ?1", "tiii", id, (long long)lim->max_concurrent,
                             (long long)lim->requests_per_minute,
                             (long long)lim->tokens_per_minute);
    pthread_mutex_lock(&T->mu);
    struct tenant *t = rc == 0 ? find_id(T, id) : NULL;
    if (t != NULL) {
        t->info.limits = *lim;
        fill_buckets(t);
        info_of(T, t, out);
    }
    pthread_mutex_unlock(&T->mu);
    pthread_mutex_unlock(&T->wmu);
    return rc;
}

static void
mem_drop_keys(struct tenants *T, uint32_t no, const char *key_id)
{
    int j = 0;
    for (int i = 0; i < T->nk; i++) {
        bool drop = T->k[i].tenant == no && (key_id == NULL || strcmp(T->k[i].id, key_id) == 0);
        if (!drop)
            T->k[j++] = T->k[i];
    }
    OPENSSL_cleanse(T->k + j, (size_t)(T->nk - j) * sizeof(*T->k));
    T->nk = j;
}

int
server__tenant_delete(struct tenants *T, const char *id)
{
    struct tenant_info in;
    pthread_mutex_lock(&T->wmu);
    int rc = server__tenant_get(T, id, &in);
    if (rc == 0)
        rc = server__db_exec(T->db, "BEGIN IMMEDIATE", "");
    if (rc == 0 && (rc = server__db_exec(T->db, "DELETE FROM api_keys WHERE tenant_no = ?1",
                                         "i", (long long)in.no)) == 0)
        rc = server__db_exec(T->db, "DELETE FROM tenants WHERE id = ?1", "t", id);
    if (rc == 0)
        rc = server__db_exec(T->db, "COMMIT", "");
    else if (rc != -ENOENT)
        server__db_exec(T->db, "ROLLBACK", "");
    pthread_mutex_lock(&T->mu);
    for (int i = 0; rc == 0 && i < T->n; i++) {
        if (T->t[i]->info.no != in.no)
            continue;
        free(T->t[i]);
        T->t[i] = T->t[--T->n];
        mem_drop_keys(T, in.no, NULL);
    }
    pthread_mutex_unlock(&T->mu);
    pthread_mutex_unlock(&T->wmu);
    return rc;
}

int
server__tenant_key_create(struct tenants *T, const char *id, char *key_id, char *secret,
                          long long *created_at)
{
    struct tenant_info in;
    struct tkey k = { .created_at = (long long)time(NULL) };
    char idhex[KEY_ID_HEX + 1], sec[KEY_SECRET_HEX + 1];
    if (random_hex(idhex, KEY_ID_HEX / 2) < 0 || random_hex(sec, KEY_SECRET_HEX / 2) < 0 ||
        RAND_bytes(k.salt, KEY_SALT) != 1)
        return -EIO;
    snprintf(k.id, sizeof(k.id), "key_%s", idhex);
    snprintf(secret, TENANT_KEY_MAX, "sk-%s-%s", idhex, sec);
    sha256(k.salt, KEY_SALT, secret, strlen(secret), k.hash);
    OPENSSL_cleanse(sec, sizeof(sec));
    pthread_mutex_lock(&T->wmu);
    int rc = server__tenant_get(T, id, &in);
    k.tenant = in.no;
    if (rc == 0)
        rc = server__db_exec(T->db, "INSERT INTO api_keys (id, tenant_no, salt, hash, created_at)"
                             " VALUES (?1, ?2, ?3, ?4, ?5)", "tibbi", k.id, (long long)k.tenant,
                             k.salt, KEY_SALT, k.hash, KEY_HASH, k.created_at);
    pthread_mutex_lock(&T->mu);
    if (rc == 0)
        rc = mem_add_key(T, &k);
    pthread_mutex_unlock(&T->mu);
    pthread_mutex_unlock(&T->wmu);
    snprintf(key_id, TENANT_ID_MAX, "%s", k.id);
    *created_at = k.created_at;
    if (rc < 0)
        OPENSSL_cleanse(secret, TENANT_KEY_MAX);
    return rc;
}

int
server__tenant_key_delete(struct tenants *T, const char *id, const char *key_id)
{
    struct tenant_info in;
    pthread_mutex_lock(&T->wmu);
    int rc = server__tenant_get(T, id, &in);
    pthread_mutex_lock(&T->mu);
    bool found = false;
    for (int i = 0; rc == 0 && i < T->nk; i++)
        found |= T->k[i].tenant == in.no && strcmp(T->k[i].id, key_id) == 0;
    pthread_mutex_unlock(&T->mu);
    if (rc == 0 && !found)
        rc = -ENOENT;
    if (rc == 0)
        rc = server__db_exec(T->db, "DELETE FROM api_keys WHERE id = ?1", "t", key_id);
    pthread_mutex_lock(&T->mu);
    if (rc == 0)
        mem_drop_keys(T, in.no, key_id);
    pthread_mutex_unlock(&T->mu);
    pthread_mutex_unlock(&T->wmu);
    return rc;
}
