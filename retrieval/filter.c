/*
 * filter.c - OpenAI's attribute filters over a document's metadata.
 *
 * Comparison: {"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte", "key", "value"} with
 * a string, number or boolean value, or "in"/"nin" with an array of them;
 * compound: {"type": "and"|"or", "filters": [...]}. A key the metadata lacks
 * matches only ne and nin; order comparisons need two numbers or two
 * strings.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "retrieval_int.h"

#define FILTER_DEPTH 8

struct vs_filter {
    cJSON *root;
};

static const char *const COMPARE[] = { "eq", "ne", "gt", "gte", "lt", "lte", "in", "nin" };

static int
op_of(const char *type)
{
    for (int i = 0; i < (int)(sizeof(COMPARE) / sizeof(COMPARE[0])); i++)
        if (strcmp(type, COMPARE[i]) == 0)
            return i;
    return strcmp(type, "and") == 0 ? 100 : strcmp(type, "or") == 0 ? 101 : -1;
}

static bool
scalar(const cJSON *v)
{
    return cJSON_IsString(v) || cJSON_IsNumber(v) || cJSON_IsBool(v);
}

static int
check(const cJSON *f, int depth, char *err, size_t errlen)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(f, "type");
    int op = cJSON_IsObject(f) && cJSON_IsString(type) ? op_of(type->valuestring) : -1;
    if (op < 0 || depth > FILTER_DEPTH) {
        snprintf(err, errlen, "filters: %s", depth > FILTER_DEPTH ? "nested too deep"
                 : "each filter needs a type: eq, ne, gt, gte, lt, lte, in, nin, and, or");
        return -EINVAL;
    }
    if (op >= 100) {
        const cJSON *fs = cJSON_GetObjectItemCaseSensitive(f, "filters"), *c;
        if (!cJSON_IsArray(fs) || cJSON_GetArraySize(fs) == 0) {
            snprintf(err, errlen, "filters: %s needs a non-empty array \"filters\"",
                     type->valuestring);
            return -EINVAL;
        }
        cJSON_ArrayForEach(c, fs) if (check(c, depth + 1, err, errlen) < 0) return -EINVAL;
        return 0;
    }
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(f, "key");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(f, "value"), *c;
    bool ok = cJSON_IsString(key) && v != NULL;
    if (ok && op >= 6) {
        ok = cJSON_IsArray(v);
        cJSON_ArrayForEach(c, v) ok = ok && scalar(c);
    } else if (ok) {
        ok = scalar(v);
    }
    if (!ok) {
        snprintf(err, errlen, "filters: %s needs a string \"key\" and a %s \"value\"",
                 type->valuestring, op >= 6 ? "array of strings, numbers or booleans as"
                                            : "string, number or boolean");
        return -EINVAL;
    }
    return 0;
}

int
retrieval__filter_parse(const char *json, struct vs_filter **out, char *err, size_t errlen)
{
    *out = NULL;
    if (json == NULL)
        return 0;
    cJSON *root = cJSON_Parse(json);
    if (root == NULL || check(root, 0, err, errlen) < 0) {
        if (root == NULL)
            snprintf(err, errlen, "filters: not valid JSON");
        cJSON_Delete(root);
        return -EINVAL;
    }
    struct vs_filter *f = malloc(sizeof(*f));
    if (f == NULL) {
        cJSON_Delete(root);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    f->root = root;
    *out = f;
    return 0;
}

void
retrieval__filter_free(struct vs_filter *f)
{
    if (f == NULL)
        return;
    cJSON_Delete(f->root);
    free(f);
}

/* -1, 0, 1 for a < b, a == b, a > b; 2 if they do not compare. */
static int
order(const cJSON *a, const cJSON *b)
{
    if (cJSON_IsNumber(a) && cJSON_IsNumber(b))
        return a->valuedouble < b->valuedouble ? -1 : a->valuedouble > b->valuedouble;
    if (cJSON_IsString(a) && cJSON_IsString(b)) {
        int c = strcmp(a->valuestring, b->valuestring);
        return c < 0 ? -1 : c > 0;
    }
    if (cJSON_IsBool(a) && cJSON_IsBool(b))
        return cJSON_IsTrue(a) == cJSON_IsTrue(b) ? 0 : 2;
    return 2;
}

static bool
member(const cJSON *have, const cJSON *list)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, list) if (order(have, c) == 0) return true;
    return false;
}

static bool
match(const cJSON *f, const cJSON *meta)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(f, "type"), *c;
    int op = op_of(type->valuestring);
    if (op >= 100) {
        cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(f, "filters")) {
            bool m = match(c, meta);
            if (m == (op == 101))
                return m;
        }
        return op == 100;
    }
    const cJSON *key = cJSON_GetObjectItemCaseSensitive(f, "key");
    const cJSON *want = cJSON_GetObjectItemCaseSensitive(f, "value");
    const cJSON *have = cJSON_GetObjectItemCaseSensitive(meta, key->valuestring);
    if (have == NULL)
        return op == 1 || op == 7;
    if (op >= 6)
        return member(have, want) == (op == 6);
    int o = order(have, want);
    switch (op) {
    case 0: return o == 0;
    case 1: return o != 0;
    case 2: return o == 1;
    case 3: return o == 1 || o == 0;
    case 4: return o == -1;
    default: return o == -1 || o == 0;
    }
}

bool
retrieval__filter_match(const struct vs_filter *f, const char *metadata)
{
    if (f == NULL)
        return true;
    cJSON *meta = cJSON_Parse(metadata ? metadata : "{}");
    bool m = meta != NULL && match(f->root, meta);
    cJSON_Delete(meta);
    return m;
}
