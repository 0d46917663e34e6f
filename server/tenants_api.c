/*
 * tenants_api.c - the admin API of tenants and their keys (tenants.c).
 *
 *   POST   /v1/tenants                     {name, limits: {max_concurrent,
 *                                           requests_per_minute, tokens_per_minute}}
 *   GET    /v1/tenants                     the list
 *   GET    /v1/tenants/{id}                one tenant
 *   PATCH  /v1/tenants/{id}                {limits} (and/or name is refused: ids are stable)
 *   DELETE /v1/tenants/{id}                the tenant and its keys
 *   POST   /v1/tenants/{id}/keys           a new key: {id, key} (the key is shown only here)
 *   DELETE /v1/tenants/{id}/keys/{key_id}  revokes it at once
 *
 * Only the admin key may call it (403 for a tenant's key); a server with no
 * --admin-key has no tenants (400). A limit of 0 or null means none. The
 * path and body are checked on the loop; the change runs on the libuv pool.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_int.h"

enum ten_kind { TEN_CREATE, TEN_LIST, TEN_GET, TEN_PATCH, TEN_DELETE, TEN_KEY, TEN_KEY_DELETE };

struct ten_req {
    struct server *s;
    enum ten_kind kind;
    char id[TENANT_ID_MAX], key[TENANT_ID_MAX];
    char name[TENANT_NAME_MAX + 1];
    struct tenant_limits limits;
};

/* ---- JSON out (pool) --------------------------------------------------- */

static cJSON *
limits_json(const struct tenant_limits *l)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "max_concurrent", l->max_concurrent);
    cJSON_AddNumberToObject(o, "requests_per_minute", l->requests_per_minute);
    cJSON_AddNumberToObject(o, "tokens_per_minute", l->tokens_per_minute);
    return o;
}

static cJSON *
tenant_json(const struct tenant_info *t)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", t->id);
    cJSON_AddStringToObject(o, "object", "tenant");
    cJSON_AddStringToObject(o, "name", t->name);
    cJSON_AddItemToObject(o, "limits", limits_json(&t->limits));
    cJSON_AddNumberToObject(o, "keys", t->n_keys);
    cJSON_AddNumberToObject(o, "created_at", (double)t->created_at);
    return o;
}

static void
answer_rc(struct op *o, const struct ten_req *r, int rc)
{
    struct oai_err e;
    if (rc == -ENOENT && r->kind == TEN_KEY_DELETE)
        server__fail(&e, rc, NULL, "key_not_found", "the key '%s' of tenant '%s' does not exist",
                     r->key, r->id);
    else if (rc == -ENOENT)
        server__fail(&e, rc, NULL, "tenant_not_found", "the tenant '%s' does not exist", r->id);
    else
        server__fail(&e, rc == -ENOMEM ? rc : -EIO, NULL, NULL, "the tenants' database "
                     "failed: %s", strerror(-rc));
    server__op_answer_error(o, &e);
}

static void
list_work(struct op *o, struct ten_req *r)
{
    struct tenant_info *all = NULL;
    int n = 0, rc = server__tenant_list(r->s->tenants, &all, &n);
    if (rc < 0) {
        answer_rc(o, r, rc);
        return;
    }
    cJSON *j = cJSON_CreateObject(), *data = cJSON_CreateArray();
    cJSON_AddStringToObject(j, "object", "list");
    for (int i = 0; i < n; i++)
        cJSON_AddItemToArray(data, tenant_json(&all[i]));
    cJSON_AddItemToObject(j, "data", data);
    free(all);
    server__op_answer_json(o, j);
}

static void
key_work(struct op *o, struct ten_req *r)
{
    char key_id[TENANT_ID_MAX], key[TENANT_KEY_MAX];
    long long created = 0;
    int rc = server__tenant_key_create(r->s->tenants, r->id, key_id, key, &created);
    if (rc < 0) {
        answer_rc(o, r, rc);
        return;
    }
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "id", key_id);
    cJSON_AddStringToObject(j, "object", "api_key");
    cJSON_AddStringToObject(j, "tenant_id", r->id);
    cJSON_AddStringToObject(j, "key", key);
    cJSON_AddNumberToObject(j, "created_at", (double)created);
    OPENSSL_cleanse(key, sizeof(key));
    server__op_answer_json(o, j);
}

static void
ten_work(struct op *o, void *arg)
{
    struct ten_req *r = arg;
    struct tenants *T = r->s->tenants;
    struct tenant_info t;
    int rc = 0;
    switch (r->kind) {
    case TEN_LIST: list_work(o, r); return;
    case TEN_KEY: key_work(o, r); return;
    case TEN_CREATE: rc = server__tenant_create(T, r->name, &r->limits, &t); break;
    case TEN_GET: rc = server__tenant_get(T, r->id, &t); break;
    case TEN_PATCH: rc = server__tenant_update(T, r->id, &r->limits, &t); break;
    case TEN_DELETE: rc = server__tenant_delete(T, r->id); break;
    case TEN_KEY_DELETE: rc = server__tenant_key_delete(T, r->id, r->key); break;
    }
    if (rc < 0)
        answer_rc(o, r, rc);
    else if (r->kind == TEN_DELETE)
        server__op_answer_json(o, server__deleted_json(r->id, "tenant.deleted"));
    else if (r->kind == TEN_KEY_DELETE)
        server__op_answer_json(o, server__deleted_json(r->key, "api_key.deleted"));
    else
        server__op_answer_json(o, tenant_json(&t));
}

/* ---- Limits (loop) ---------------------------------------------------- */

int
server__limits_admit(struct server *s, const struct who *who, struct oai_err *e)
{
    int wait = 0;
    char what[32] = "";
    if (who->tenant == 0 || server__tenant_admit(s->tenants, who->tenant, 0, &wait, what,
                                                 sizeof(what)) == 0)
        return 0;
    server__fail(e, -EAGAIN, NULL, "rate_limit_exceeded", "Rate limit reached for tenant "
                 "'%s' on %s; try again in %d s.", who->id, what, wait);
    e->retry_after = wait;
    return -EAGAIN;
}

/* ---- Checking the request (loop) ------------------------------------- */

/* One limit: absent or null keeps *v; else an integer >= 0. */
static int
limit(const cJSON *lim, const char *key, int *v, struct oai_err *e)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(lim, key);
    if (x == NULL || cJSON_IsNull(x))
        return 0;
    char param[64];
    snprintf(param, sizeof(param), "limits.%s", key);
    if (!cJSON_IsNumber(x) || x->valuedouble < 0 || x->valuedouble > 1e9 ||
        x->valuedouble != (double)(int)x->valuedouble)
        return server__bad_value(e, param, "an integer from 0 (no limit) to 1000000000");
    *v = x->valueint;
    return 0;
}

static int
parse_limits(const cJSON *root, struct tenant_limits *l, struct oai_err *e)
{
    const cJSON *lim = cJSON_GetObjectItemCaseSensitive(root, "limits");
    if (lim == NULL || cJSON_IsNull(lim))
        return 0;
    if (!cJSON_IsObject(lim))
        return server__bad_value(e, "limits", "an object");
    for (const cJSON *x = lim->child; x != NULL; x = x->next)
        if (strcmp(x->string, "max_concurrent") != 0 &&
            strcmp(x->string, "requests_per_minute") != 0 &&
            strcmp(x->string, "tokens_per_minute") != 0)
            return server__fail(e, -EINVAL, "limits", "unknown_parameter", "limits: unknown "
                                "limit '%.64s' (max_concurrent, requests_per_minute, "
                                "tokens_per_minute)", x->string);
    int rc = limit(lim, "max_concurrent", &l->max_concurrent, e);
    if (rc == 0)
        rc = limit(lim, "requests_per_minute", &l->requests_per_minute, e);
    return rc ? rc : limit(lim, "tokens_per_minute", &l->tokens_per_minute, e);
}

static int
parse_body(struct ten_req *r, const char *body, size_t len, struct oai_err *e)
{
    cJSON *root = NULL;
    int rc = server__parse_object(body, len, &root, e);
    const cJSON *name = rc == 0 ? cJSON_GetObjectItemCaseSensitive(root, "name") : NULL;
    if (rc == 0 && r->kind == TEN_CREATE &&
        (!cJSON_IsString(name) || name->valuestring[0] == '\0' ||
         strlen(name->valuestring) > TENANT_NAME_MAX))
        rc = server__bad_value(e, "name", "a string of 1 to 256 bytes");
    if (rc == 0 && r->kind == TEN_PATCH && name != NULL)
        rc = server__fail(e, -EINVAL, "name", "invalid_value", "name: a tenant keeps its name; "
                          "PATCH changes its limits");
    if (rc == 0 && r->kind == TEN_CREATE)
        snprintf(r->name, sizeof(r->name), "%s", name->valuestring);
    if (rc == 0 && r->kind == TEN_PATCH) {
        struct tenant_info cur;
        if (server__tenant_get(r->s->tenants, r->id, &cur) == 0)
            r->limits = cur.limits; /* fields not given keep their values */
    }
    if (rc == 0)
        rc = parse_limits(root, &r->limits, e);
    cJSON_Delete(root);
    return rc;
}

/* Copies the path segment at *p (up to '/' or the end) into out; false if empty or too long. */
static bool
segment(const char **p, char *out, size_t len)
{
    size_t n = strcspn(*p, "/");
    if (n == 0 || n >= len)
        return false;
    memcpy(out, *p, n);
    out[n] = '\0';
    *p += n;
    return true;
}

const char *
server__tenants_allow(const char *url)
{
    const char *p = url + strlen("/v1/tenants");
    if (*p == '\0')
        return "GET, POST";
    p = strchr(p + 1, '/');
    return p == NULL ? "GET, PATCH, DELETE" : strcmp(p, "/keys") == 0 ? "POST" : "DELETE";
}

/* The kind from method and path below /v1/tenants; fills ids. 0, or 404/405 in e. */
static int
parse_path(struct ten_req *r, const char *method, const char *url, struct oai_err *e)
{
    const char *p = url + strlen("/v1/tenants");
    bool post = strcmp(method, "POST") == 0, del = strcmp(method, "DELETE") == 0;
    bool get = strcmp(method, "GET") == 0, patch = strcmp(method, "PATCH") == 0;
    const char *allow = NULL;
    if (*p == '\0') {
        r->kind = post ? TEN_CREATE : TEN_LIST;
        allow = post || get ? NULL : "GET, POST";
    } else if (*p++ != '/' || !segment(&p, r->id, sizeof(r->id))) {
        allow = "";
    } else if (*p == '\0') {
        r->kind = get ? TEN_GET : patch ? TEN_PATCH : TEN_DELETE;
        allow = get || patch || del ? NULL : "GET, PATCH, DELETE";
    } else if (strcmp(p, "/keys") == 0) {
        r->kind = TEN_KEY;
        allow = post ? NULL : "POST";
    } else if (strncmp(p, "/keys/", 6) == 0 && (p += 6, segment(&p, r->key, sizeof(r->key))) &&
               *p == '\0') {
        r->kind = TEN_KEY_DELETE;
        allow = del ? NULL : "DELETE";
    } else {
        allow = "";
    }
    if (allow != NULL && allow[0] == '\0')
        return server__fail(e, -ENOENT, NULL, "not_found", "Invalid URL (%s %.200s)", method,
                            url);
    if (allow != NULL)
        return server__fail(e, -EOPNOTSUPP, NULL, "method_not_allowed", "%s is not allowed on "
                            "%.200s (use %s)", method, url, allow);
    return 0;
}

/* The checks of who, the method, path and body: 0 with r filled, or an error in e. */
static int
check_request(struct server *s, const struct who *who, const char *method, const char *url,
              const char *body, size_t len, struct ten_req *r, struct oai_err *e)
{
    if (server__tenants_open_mode(s->tenants))
        return server__fail(e, -EINVAL, NULL, "auth_disabled", "the server runs open (no "
                            "--admin-key): there are no tenants or keys");
    if (!who->admin)
        return server__fail(e, -EPERM, NULL, "permission_denied", "the tenants API needs the "
                            "admin key");
    int rc = parse_path(r, method, url, e);
    if (rc == 0 && (r->kind == TEN_CREATE || r->kind == TEN_PATCH))
        rc = parse_body(r, body, len, e);
    return rc;
}

int
server__tenants_check(struct server *s, const struct who *who, const char *method,
                      const char *url, const char *body, size_t len, struct oai_err *e)
{
    struct ten_req *r = server__xcalloc(1, sizeof(*r));
    r->s = s;
    int rc = check_request(s, who, method, url, body, len, r, e);
    free(r);
    return rc;
}

int
server__tenants_start(struct server *s, struct MHD_Connection *con, const struct who *who,
                      const char *method, const char *url, const char *body, size_t len,
                      struct op **out, struct oai_err *e)
{
    *out = NULL;
    struct ten_req *r = server__xcalloc(1, sizeof(*r));
    r->s = s;
    int rc = check_request(s, who, method, url, body, len, r, e);
    if (rc < 0) {
        free(r);
        return rc;
    }
    return server__op_call(s, con, ten_work, r, free, out, e);
}
