/*
 * testutil.h - helpers the test programs share: where the fixtures are, and
 * reading a whole file.
 */
#ifndef LORASERVE_TESTUTIL_H
#define LORASERVE_TESTUTIL_H

#include <cjson/cJSON.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The shared fixtures folder: $LORASERVE_SHARED (the Makefile sets it), or ../shared. */
/* sum a[i] * b[i] in double, i < n */
static inline double
test_dot(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

static inline const char *
test_shared_dir(void)
{
    const char *d = getenv("LORASERVE_SHARED");
    return d && *d ? d : "../shared";
}

/* A whole file, NUL-terminated, malloc'd (caller frees); NULL if unreadable. */
static inline char *
test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf != NULL) {
        buf[n] = '\0';
        if (len != NULL)
            *len = (size_t)n;
    }
    return buf;
}

static inline int
test_rm_one_(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* Makes a fresh directory /tmp/loraserve-TAG-XXXXXX into dir (64 bytes); 0 or -1. */
static inline int
test_tmpdir_make(char dir[64], const char *tag)
{
    snprintf(dir, 64, "/tmp/loraserve-%s-XXXXXX", tag);
    return mkdtemp(dir) != NULL ? 0 : -1;
}

/* Removes dir and everything below it (links are not followed). */
static inline void
test_tmpdir_remove(const char *dir)
{
    nftw(dir, test_rm_one_, 16, FTW_DEPTH | FTW_PHYS);
}

/* The integers of array field of j into ids (at most max); returns how many. */
static inline int
test_json_ids(const cJSON *j, const char *field, int32_t *ids, int max)
{
    int n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(j, field)) {
        if (n < max)
            ids[n++] = (int32_t)e->valueint;
    }
    return n;
}

#endif
