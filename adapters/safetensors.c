/*
 * safetensors.c - the safetensors reader.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON (an object of
 * tensors and an optional "__metadata__" string map, padded with spaces),
 * then the data section, which the tensors' data_offsets tile exactly.
 * Everything in the header is untrusted: the length is checked against the
 * file and a cap, every number is checked to be an integer that fits before
 * it is used, sizes are multiplied with overflow checks, and the tensors are
 * sorted by offset to prove that they neither overlap nor leave gaps. The
 * parsed struct keeps the cJSON tree (tensor names point into it) and
 * borrows the buffer.
 */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adapters_int.h"

struct adapters_st {
    cJSON *root;
    int n;
    struct adapters_st_tensor *t;   /* sorted by name */
};

struct pctx {
    const char *name;
    const unsigned char *data;      /* the data section */
    uint64_t data_len;
    char *err;
    size_t errlen;
};

static int
fail(const struct pctx *c, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(c->err, c->errlen, "%s: %s", c->name, msg);
    adapters__one_line(c->err);
    return -EBADMSG;
}

/* A JSON number that is an integer in [0, 2^53]; false otherwise. */
static bool
json_u64(const cJSON *j, uint64_t *out)
{
    if (!cJSON_IsNumber(j))
        return false;
    double d = j->valuedouble;
    if (!(d >= 0.0 && d <= 9007199254740992.0) || d != floor(d))
        return false;
    *out = (uint64_t)d;
    return true;
}

/* Accepted dtypes, their GGUF type and element size; false for any other name. */
static bool
dtype_of(const char *s, enum gguf_ttype *t, size_t *size)
{
    static const struct {
        const char *name;
        enum gguf_ttype t;
        size_t size;
    } dtypes[] = { { "F32", GGUF_T_F32, 4 }, { "F16", GGUF_T_F16, 2 },
                   { "BF16", GGUF_T_BF16, 2 } };
    for (size_t i = 0; i < sizeof(dtypes) / sizeof(dtypes[0]); i++) {
        if (strcmp(s, dtypes[i].name) == 0) {
            *t = dtypes[i].t;
            *size = dtypes[i].size;
            return true;
        }
    }
    return false;
}

static int
parse_shape(const struct pctx *c, const cJSON *j, struct adapters_st_tensor *t, uint64_t *n_elem)
{
    if (!cJSON_IsArray(j))
        return fail(c, "tensor %s: shape is not an array", t->name);
    int n_dims = cJSON_GetArraySize(j);
    if (n_dims > ADAPTERS_ST_MAX_DIMS)
        return fail(c, "tensor %s: shape has %d dimensions (at most %d)", t->name, n_dims,
                    ADAPTERS_ST_MAX_DIMS);
    uint64_t n = 1;
    const cJSON *e;
    t->n_dims = 0;
    cJSON_ArrayForEach(e, j) {
        uint64_t d = 0;
        if (!json_u64(e, &d))
            return fail(c, "tensor %s: shape holds something other than a size", t->name);
        if (__builtin_mul_overflow(n, d, &n))
            return fail(c, "tensor %s: shape is too large", t->name);
        t->shape[t->n_dims++] = (int64_t)d;
    }
    *n_elem = n;
    return 0;
}

static int
parse_tensor(const struct pctx *c, const cJSON *j, struct adapters_st_tensor *t)
{
    t->name = j->string;
    if (!cJSON_IsObject(j))
        return fail(c, "tensor %s: not a JSON object", t->name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(j, "dtype");
    const cJSON *off = cJSON_GetObjectItemCaseSensitive(j, "data_offsets");
    size_t esize = 0;
    if (!cJSON_IsString(dt))
        return fail(c, "tensor %s: dtype is missing", t->name);
    if (!dtype_of(dt->valuestring, &t->type, &esize))
        return fail(c, "tensor %s: dtype %.32s is not supported (F32, F16, BF16)", t->name,
                    dt->valuestring);
    uint64_t n_elem = 0, bytes = 0;
    int rc = parse_shape(c, cJSON_GetObjectItemCaseSensitive(j, "shape"), t, &n_elem);
    if (rc < 0)
        return rc;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        !json_u64(cJSON_GetArrayItem(off, 0), &t->begin) ||
        !json_u64(cJSON_GetArrayItem(off, 1), &t->end))
        return fail(c, "tensor %s: data_offsets is not [begin, end]", t->name);
    if (t->begin > t->end || t->end > c->data_len)
        return fail(c, "tensor %s: data_offsets [%llu, %llu) are not within the data "
                    "(%llu bytes)", t->name, (unsigned long long)t->begin,
                    (unsigned long long)t->end, (unsigned long long)c->data_len);
    if (__builtin_mul_overflow(n_elem, (uint64_t)esize, &bytes) || bytes != t->end - t->begin)
        return fail(c, "tensor %s: data_offsets span %llu bytes but the shape and dtype need "
                    "%llu", t->name, (unsigned long long)(t->end - t->begin),
                    (unsigned long long)bytes);
    t->data = c->data + t->begin;
    t->nbytes = (size_t)bytes;
    return 0;
}

static int
parse_metadata(const struct pctx *c, const cJSON *j)
{
    if (!cJSON_IsObject(j))
        return fail(c, "__metadata__ is not an object");
    const cJSON *e;
    cJSON_ArrayForEach(e, j) {
        if (!cJSON_IsString(e))
            return fail(c, "__metadata__: %s is not a string", e->string);
    }
    return 0;
}

static int
cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct adapters_st_tensor *)a)->name,
                  ((const struct adapters_st_tensor *)b)->name);
}

static int
cmp_offset(const void *a, const void *b)
{
    const struct adapters_st_tensor *x = *(const struct adapters_st_tensor *const *)a;
    const struct adapters_st_tensor *y = *(const struct adapters_st_tensor *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

/* Names unique, and the tensors tile the data section exactly. */
static int
check_layout(const struct pctx *c, struct adapters_st *st)
{
    qsort(st->t, (size_t)st->n, sizeof(*st->t), cmp_name);
    for (int i = 1; i < st->n; i++)
        if (strcmp(st->t[i - 1].name, st->t[i].name) == 0)
            return fail(c, "tensor %s appears twice", st->t[i].name);
    const struct adapters_st_tensor **by = calloc((size_t)st->n + 1, sizeof(*by));
    if (by == NULL)
        return -ENOMEM;
    for (int i = 0; i < st->n; i++)
        by[i] = &st->t[i];
    qsort(by, (size_t)st->n, sizeof(*by), cmp_offset);
    int rc = 0;
    uint64_t at = 0;
    for (int i = 0; i < st->n && rc == 0; i++) {
        if (by[i]->begin < at)
            rc = fail(c, "tensor %s overlaps tensor %s", by[i]->name, by[i - 1]->name);
        else if (by[i]->begin > at)
            rc = fail(c, "data bytes [%llu, %llu) belong to no tensor", (unsigned long long)at,
                      (unsigned long long)by[i]->begin);
        at = by[i]->end;
    }
    if (rc == 0 && at != c->data_len)
        rc = fail(c, "%llu bytes after the last tensor's data",
                  (unsigned long long)(c->data_len - at));
    free(by);
    return rc;
}

static int
parse_header(const struct pctx *c, struct adapters_st *st)
{
    int n = cJSON_GetArraySize(st->root), rc = 0;
    st->t = calloc((size_t)n + 1, sizeof(*st->t));
    if (st->t == NULL)
        return -ENOMEM;
    const cJSON *e;
    cJSON_ArrayForEach(e, st->root) {
        if (strcmp(e->string, "__metadata__") == 0)
            rc = parse_metadata(c, e);
        else
            rc = parse_tensor(c, e, &st->t[st->n++]);
        if (rc < 0)
            return rc;
    }
    return check_layout(c, st);
}

/* Reads the header length and JSON; on success st->root is the header object. */
static int
parse_json(struct pctx *c, const unsigned char *b, size_t len, struct adapters_st *st)
{
    if (len < 8)
        return fail(c, "file is %zu bytes, too short for a safetensors header", len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | b[i];
    if (n > ADAPTERS_ST_MAX_HEADER)
        return fail(c, "header length %llu is above the limit of %u bytes",
                    (unsigned long long)n, ADAPTERS_ST_MAX_HEADER);
    if (n > len - 8)
        return fail(c, "header length %llu goes past the end of the file (%zu bytes)",
                    (unsigned long long)n, len);
    const char *h = (const char *)b + 8, *end = NULL;
    if (n < 2 || h[0] != '{')
        return fail(c, "header is not a JSON object");
    st->root = cJSON_ParseWithLengthOpts(h, (size_t)n, &end, 0);
    if (st->root == NULL || !cJSON_IsObject(st->root)) {
        /* On failure cJSON points end at the error (GetErrorPtr is a global). */
        long pos = st->root == NULL && end >= h && end <= h + n ? (long)(end - h) : 0;
        return fail(c, "header is not valid JSON (near byte %ld)", pos);
    }
    for (; end < h + n; end++)
        if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r')
            return fail(c, "header has bytes after its JSON object");
    c->data = b + 8 + n;
    c->data_len = len - 8 - n;
    return 0;
}

void
adapters__st_free(struct adapters_st *st)
{
    if (st == NULL)
        return;
    cJSON_Delete(st->root);
    free(st->t);
    free(st);
}

int
adapters__st_parse(const void *buf, size_t len, const char *name, struct adapters_st **out,
                   char *err, size_t errlen)
{
    *out = NULL;
    struct adapters_st *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return -ENOMEM;
    struct pctx c = { name, NULL, 0, err, errlen };
    int rc = parse_json(&c, buf, len, st);
    if (rc == 0)
        rc = parse_header(&c, st);
    if (rc == -ENOMEM)
        snprintf(err, errlen, "%s: out of memory", name);
    if (rc < 0) {
        adapters__st_free(st);
        return rc;
    }
    *out = st;
    return 0;
}

int
adapters__st_n_tensors(const struct adapters_st *st)
{
    return st->n;
}

const struct adapters_st_tensor *
adapters__st_tensor(const struct adapters_st *st, int i)
{
    return &st->t[i];
}

const struct adapters_st_tensor *
adapters__st_find(const struct adapters_st *st, const char *name)
{
    struct adapters_st_tensor key = { .name = name };
    return bsearch(&key, st->t, (size_t)st->n, sizeof(*st->t), cmp_name);
}

float *
adapters__st_to_f32(const struct adapters_st_tensor *t)
{
    size_t n = t->nbytes / (t->type == GGUF_T_F32 ? 4 : 2);
    float *v = malloc(n * sizeof(float) + 1);
    void *tmp = t->type == GGUF_T_F32 ? NULL : malloc(t->nbytes + 1);
    if (v == NULL || (t->type != GGUF_T_F32 && tmp == NULL)) {
        free(v), free(tmp);
        return NULL;
    }
    /* The data may be unaligned: copy it before reading it as numbers. */
    if (t->type == GGUF_T_F32) {
        memcpy(v, t->data, t->nbytes);
    } else {
        memcpy(tmp, t->data, t->nbytes);
        engine_tensor_to_f32(t->type, tmp, v, (int64_t)n);
    }
    free(tmp);
    return v;
}
