/*
 * registry_db.c - the adapter registry's SQLite table.
 *
 * One row per registered name, written in one transaction with every other
 * row the same change touches (the registry opens and commits it). The
 * database is in WAL mode and may be shared with other modules' tables; all
 * statements are prepared once at open and finalized at close. "targets" is
 * the comma-separated engine target names, "status" the adapters_status
 * name, times are unix seconds.
 */
#include <errno.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters_int.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS adapters ("
    " name TEXT PRIMARY KEY,"
    " version INTEGER NOT NULL,"
    " path TEXT NOT NULL,"
    " format TEXT NOT NULL,"
    " sha256 TEXT NOT NULL,"
    " rank INTEGER NOT NULL,"
    " alpha REAL NOT NULL,"
    " rslora INTEGER NOT NULL DEFAULT 0,"
    " targets TEXT NOT NULL,"
    " file_bytes INTEGER NOT NULL DEFAULT 0,"
    " bytes INTEGER NOT NULL DEFAULT 0,"
    " status TEXT NOT NULL,"
    " error TEXT NOT NULL DEFAULT '',"
    " pinned INTEGER NOT NULL DEFAULT 0,"
    " created_at INTEGER NOT NULL,"
    " updated_at INTEGER NOT NULL,"
    " last_used_at INTEGER NOT NULL DEFAULT 0);";

enum {
    ST_BEGIN, ST_COMMIT, ST_ROLLBACK, ST_PUT, ST_STATUS, ST_PIN, ST_USED, ST_DELETE, ST_SCAN,
    ST_RESET, N_ST
};

static const char *const sql[N_ST] = {
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_PUT] = "INSERT OR REPLACE INTO adapters (name, version, path, format, sha256, rank,"
               " alpha, rslora, targets, file_bytes, bytes, status, error, pinned, created_at,"
               " updated_at, last_used_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,"
               " ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
    [ST_STATUS] = "UPDATE adapters SET status = ?2, error = ?3, bytes = 0, updated_at = ?4"
                  " WHERE name = ?1",
    [ST_PIN] = "UPDATE adapters SET pinned = ?2, updated_at = ?3 WHERE name = ?1",
    [ST_USED] = "UPDATE adapters SET last_used_at = ?2 WHERE name = ?1",
    [ST_DELETE] = "DELETE FROM adapters WHERE name = ?1",
    [ST_SCAN] = "SELECT name, version, path, format, sha256, rank, alpha, rslora, targets,"
                " file_bytes, bytes, status, error, pinned, created_at, updated_at,"
                " last_used_at FROM adapters ORDER BY name",
    [ST_RESET] = "UPDATE adapters SET status = 'evicted', bytes = 0 WHERE status = 'loaded'",
};

struct adapters_db {
    sqlite3 *db;
    char name[128];             /* for messages */
    sqlite3_stmt *st[N_ST];
};

static int
fail(struct adapters_db *d, char *err, size_t errlen)
{
    int code = d->db ? sqlite3_errcode(d->db) : SQLITE_NOMEM;
    if (err != NULL)
        snprintf(err, errlen, "%s: %s", d->name, d->db ? sqlite3_errmsg(d->db) : "out of memory");
    return code == SQLITE_NOMEM ? -ENOMEM : -EIO;
}

/* Steps a bound statement to completion and resets it. */
static int
run(struct adapters_db *d, int which, char *err, size_t errlen)
{
    sqlite3_stmt *s = d->st[which];
    int rc = sqlite3_step(s);
    int ret = rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : fail(d, err, errlen);
    sqlite3_reset(s);
    sqlite3_clear_bindings(s);
    return ret;
}

int
adapters__db_open(const char *path, struct adapters_db **out, char *err, size_t errlen)
{
    *out = NULL;
    struct adapters_db *d = calloc(1, sizeof(*d));
    if (d == NULL) {
        snprintf(err, errlen, "%s: out of memory", path ? path : ":memory:");
        return -ENOMEM;
    }
    snprintf(d->name, sizeof(d->name), "%s", path ? path : ":memory:");
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path ? path : ":memory:", &d->db, flags, NULL) == SQLITE_OK ? 0 : -1;
    if (rc == 0) {
        sqlite3_busy_timeout(d->db, 5000);  /* other modules' connections share the file */
        rc = sqlite3_exec(d->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", NULL,
                          NULL, NULL) == SQLITE_OK &&
             sqlite3_exec(d->db, schema, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
    }
    for (int i = 0; i < N_ST && rc == 0; i++)
        rc = sqlite3_prepare_v3(d->db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &d->st[i],
                                NULL) == SQLITE_OK ? 0 : -1;
    if (rc < 0) {
        rc = fail(d, err, errlen);
        adapters__db_close(d);
        return rc;
    }
    *out = d;
    return 0;
}

void
adapters__db_close(struct adapters_db *d)
{
    if (d == NULL)
        return;
    for (int i = 0; i < N_ST; i++)
        sqlite3_finalize(d->st[i]);
    sqlite3_close(d->db);
    free(d);
}

int
adapters__db_reset_loaded(struct adapters_db *d, char *err, size_t errlen)
{
    return run(d, ST_RESET, err, errlen);
}

int
adapters__db_begin(struct adapters_db *d, char *err, size_t errlen)
{
    return run(d, ST_BEGIN, err, errlen);
}

int
adapters__db_commit(struct adapters_db *d, char *err, size_t errlen)
{
    return run(d, ST_COMMIT, err, errlen);
}

void
adapters__db_rollback(struct adapters_db *d)
{
    if (!sqlite3_get_autocommit(d->db))
        run(d, ST_ROLLBACK, NULL, 0);
}

/* "attn_q,attn_v" from a target bit set. */
static void
targets_text(unsigned targets, char *buf, size_t len)
{
    buf[0] = '\0';
    for (int t = 0; t < ENGINE_LORA_N_TARGETS; t++) {
        if (targets & 1u << t) {
            size_t n = strlen(buf);
            snprintf(buf + n, len - n, "%s%s", n ? "," : "",
                     engine_lora_target_name((enum engine_lora_target)t));
        }
    }
}

static unsigned
targets_bits(const char *text)
{
    unsigned bits = 0;
    for (int t = 0; t < ENGINE_LORA_N_TARGETS; t++) {
        const char *name = engine_lora_target_name((enum engine_lora_target)t);
        size_t n = strlen(name);
        for (const char *p = strstr(text, name); p != NULL; p = strstr(p + 1, name))
            if ((p == text || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
                bits |= 1u << t;
    }
    return bits;
}

int
adapters__db_put(struct adapters_db *d, const struct adapters_entry *row, char *err,
                 size_t errlen)
{
    sqlite3_stmt *s = d->st[ST_PUT];
    char targets[128];
    targets_text(row->info.targets, targets, sizeof(targets));
    sqlite3_bind_text(s, 1, row->name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, row->version);
    sqlite3_bind_text(s, 3, row->path, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 4, row->info.format, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 5, row->info.sha256, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 6, row->info.rank);
    sqlite3_bind_double(s, 7, row->info.alpha);
    sqlite3_bind_int(s, 8, row->info.rslora);
    sqlite3_bind_text(s, 9, targets, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 10, (sqlite3_int64)row->info.file_bytes);
    sqlite3_bind_int64(s, 11, (sqlite3_int64)row->bytes);
    sqlite3_bind_text(s, 12, adapters_status_name(row->status), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 13, row->error ? row->error : "", -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 14, row->pinned);
    sqlite3_bind_int64(s, 15, row->created_at);
    sqlite3_bind_int64(s, 16, row->updated_at);
    sqlite3_bind_int64(s, 17, row->last_used_at);
    return run(d, ST_PUT, err, errlen);
}

int
adapters__db_set_status(struct adapters_db *d, const char *name, enum adapters_status st,
                        const char *error, int64_t now, char *err, size_t errlen)
{
    sqlite3_stmt *s = d->st[ST_STATUS];
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 2, adapters_status_name(st), -1, SQLITE_STATIC);
    sqlite3_bind_text(s, 3, error ? error : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 4, now);
    return run(d, ST_STATUS, err, errlen);
}

int
adapters__db_set_pinned(struct adapters_db *d, const char *name, bool pinned, int64_t now,
                        char *err, size_t errlen)
{
    sqlite3_stmt *s = d->st[ST_PIN];
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int(s, 2, pinned);
    sqlite3_bind_int64(s, 3, now);
    return run(d, ST_PIN, err, errlen);
}

int
adapters__db_set_used(struct adapters_db *d, const char *name, int64_t last_used_at,
                      char *err, size_t errlen)
{
    sqlite3_stmt *s = d->st[ST_USED];
    sqlite3_bind_text(s, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s, 2, last_used_at);
    return run(d, ST_USED, err, errlen);
}

int
adapters__db_delete(struct adapters_db *d, const char *name, char *err, size_t errlen)
{
    sqlite3_bind_text(d->st[ST_DELETE], 1, name, -1, SQLITE_STATIC);
    return run(d, ST_DELETE, err, errlen);
}

static const char *
col_text(sqlite3_stmt *s, int i)
{
    const unsigned char *t = sqlite3_column_text(s, i);
    return t ? (const char *)t : "";
}

static enum adapters_status
status_of(const char *name)
{
    for (int i = ADAPTERS_LOADED; i <= ADAPTERS_FAILED; i++)
        if (strcmp(name, adapters_status_name((enum adapters_status)i)) == 0)
            return (enum adapters_status)i;
    return ADAPTERS_FAILED;
}

/* The current row of the scan statement. */
static void
read_row(sqlite3_stmt *s, struct adapters_entry *row)
{
    memset(row, 0, sizeof(*row));
    row->name = col_text(s, 0);
    row->version = sqlite3_column_int64(s, 1);
    row->path = col_text(s, 2);
    snprintf(row->info.format, sizeof(row->info.format), "%s", col_text(s, 3));
    snprintf(row->info.sha256, sizeof(row->info.sha256), "%s", col_text(s, 4));
    row->info.rank = sqlite3_column_int(s, 5);
    row->info.alpha = (float)sqlite3_column_double(s, 6);
    row->info.rslora = sqlite3_column_int(s, 7) != 0;
    row->info.targets = targets_bits(col_text(s, 8));
    row->info.file_bytes = (uint64_t)sqlite3_column_int64(s, 9);
    row->bytes = (uint64_t)sqlite3_column_int64(s, 10);
    row->status = status_of(col_text(s, 11));
    row->error = col_text(s, 12);
    row->pinned = sqlite3_column_int(s, 13) != 0;
    row->created_at = sqlite3_column_int64(s, 14);
    row->updated_at = sqlite3_column_int64(s, 15);
    row->last_used_at = sqlite3_column_int64(s, 16);
}

int
adapters__db_scan(struct adapters_db *d,
                  int (*row_cb)(const struct adapters_entry *row, void *arg), void *arg,
                  char *err, size_t errlen)
{
    sqlite3_stmt *s = d->st[ST_SCAN];
    int rc = 0, step = 0;
    while (rc == 0 && (step = sqlite3_step(s)) == SQLITE_ROW) {
        struct adapters_entry row;
        read_row(s, &row);
        rc = row_cb(&row, arg);
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = fail(d, err, errlen);
    sqlite3_reset(s);
    return rc;
}
