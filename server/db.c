/*
 * db.c - the SQLite calls the tenants and the experiments share: opening
 * loraserve.db as every module does (WAL, waiting up to 5 s for another
 * connection's write) and running one statement with bound parameters.
 */
#include <errno.h>
#include <stdarg.h>
#include <sqlite3.h>

#include "server_int.h"

int
server__db_open(const char *path, const char *schema, struct sqlite3 **db)
{
    int rc = sqlite3_open_v2(path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(*db, 5000);
        rc = sqlite3_exec(*db, "PRAGMA journal_mode=WAL;", NULL, NULL, NULL);
    }
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(*db, schema, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : -EIO;
}

static int
bind_one(sqlite3_stmt *st, int i, char type, va_list *ap)
{
    switch (type) {
    case 't':
        return sqlite3_bind_text(st, i, va_arg(*ap, const char *), -1, SQLITE_TRANSIENT);
    case 'i':
        return sqlite3_bind_int64(st, i, va_arg(*ap, long long));
    case 'd':
        return sqlite3_bind_double(st, i, va_arg(*ap, double));
    default: {
        const void *blob = va_arg(*ap, const void *);
        int n = va_arg(*ap, int);
        return sqlite3_bind_blob(st, i, blob, n, SQLITE_TRANSIENT);
    }
    }
}

int
server__db_exec(struct sqlite3 *db, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    va_list ap;
    va_start(ap, types);
    for (int i = 0; rc == SQLITE_OK && types[i] != '\0'; i++)
        rc = bind_one(st, i + 1, types[i], &ap);
    va_end(ap);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
    sqlite3_finalize(st);
    return rc == SQLITE_OK ? 0 : rc == SQLITE_NOMEM ? -ENOMEM : -EIO;
}
